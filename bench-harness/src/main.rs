//! `arsync-bench`: the instrument behind every performance claim of arsync.
//!
//! * `gen KIND|all DIR [--scale S] [--seed N]`: reproducible datasets (`datasets` module).
//! * `compare --data DIR [--datasets a,b] [--cache warm,cold] [--reps N] --arsync BIN
//!   [--arsync-args "-a"] [--tools arsync,cp-a,...] [--peers-bin DIR] [--install-peers DIR]
//!   [--out DIR] [--wait S] [--ceiling FILE] [--read-probe N]`: copies each dataset with arsync and every peer found, alternating
//!   tools in each repetition, warm (earlier destinations taken out of the cache, source re-read)
//!   and cold (page cache dropped), each run
//!   into a fresh destination on the same file system after the same memory preparation; checks
//!   the first copy of each tool (`verify`); writes `results.json`, `results.csv`, `report.md` and
//!   an SVG chart per dataset under `OUT/<date>-<host>/` (default `perf/runs`).
//! * `threads --data DIR --dataset NAME --max N [--reps R] --arsync BIN`: thread scaling of arsync
//!   (`--threads 1..N`, unpinned past the CPU count, i.e. oversubscribed), with the scheduler's
//!   steal counts from `--stats-json`.
//! * `sweep --data DIR --arsync BIN --variants "ARGS;ARGS" [--base "-a"] [--datasets a,b]
//!   [--cache warm,cold] [--reps N]`: arsync alone with each flag set (an empty one is the
//!   defaults), alternated and reported like `compare`: the figures behind the defaults.
//! * `concurrent --data DIR --arsync BIN [--dataset small] [--jobs 2] [--base "-a --threads 1"]
//!   [--variants ";--no-pin"] [--cache warm] [--reps 5]`: several arsync runs at once (parallel
//!   jobs on one host), each copying the whole set into its own destination, the flag sets
//!   alternated; a row is one repetition: wall = until the last job ended, CPU = all jobs'. The
//!   figures behind where concurrent runs' cores go (`engine::placement`).
//! * `sched [--tasks N] [--cost-us C] [--max M] [--reps R]`: the scheduler alone with synthetic
//!   tasks of known cost: throughput, efficiency, steals and termination overhead per thread count.
//! * `ranks --data DIR --dataset NAME --max N --arsync BIN`: the multi-node mode (`--mpi`, an
//!   arsync built with `--features mpi`) under `mpirun -np 1..N` on this host, with each rank's
//!   bytes and steals.
//! * `ceiling --data DIR [--dataset large] [--depths 1,4,16,32] [--streams 1,2,8] [--block 1M]
//!   [--reps R]`: the disk's read ceiling under a data set (`ceiling` module): every byte read
//!   cold with `O_DIRECT` at several queue depths and through the page cache on several
//!   streams; the best median is what a cold copy is measured against.
//! * `report RUN_DIR [--ceiling FILE]`: a run's `report.md` written again from its
//!   `results.json` (`report` module), e.g. with a ceiling measured later.
//! * `read-tree THREADS SRC DEST`: the source read alone (`ceiling::read_tree`), what `compare
//!   --read-probe N` times beside the tools (DEST ignored).
//! * `run --arsync BIN --src DIR [--reps N] [-- ARGS]`: quick repeated runs of arsync alone with
//!   wall, CPU and peak RSS (used for the memory-bound check).
//!
//! The commands that time copies pause DAMON's proactive page reclaim while they run, where the
//! machine runs it and the harness may (`runner::Damon`; `--keep-damon` leaves it running).

mod ceiling;
mod datasets;
mod report;
mod runner;
mod sched;
mod verify;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

struct Args(Vec<OsString>);

impl Args {
    fn opt(&self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(|v| v.to_string_lossy().into_owned())
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
    /// A whitespace-separated argument list, e.g. `--arsync-args "-a -H"`.
    fn words(&self, name: &str, default: &str) -> Vec<String> {
        self.opt(name)
            .unwrap_or_else(|| default.to_string())
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
    fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.opt(name)
            .unwrap_or_else(|| default.to_string())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(match self.opt(name) {
            Some(v) => v.parse().with_context(|| format!("{name} {v}"))?,
            None => default,
        })
    }
}

fn today_host() -> String {
    let mut t: libc::time_t = 0;
    // SAFETY: time() writes the current time into `t`.
    unsafe { libc::time(&mut t) };
    // SAFETY: an all-zero tm is a valid value; gmtime_r fills it from `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to `t` and `tm`.
    unsafe { libc::gmtime_r(&t, &mut tm) };
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    format!(
        "{:04}-{:02}-{:02}-{}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        host.trim()
    )
}

/// The type and source (device) of the file system holding `data`, from the mount table
/// (`None` where `findmnt` cannot say).
fn mount_of(data: &Path) -> Option<(String, String)> {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "--target"])
        .arg(data)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let line = String::from_utf8_lossy(&out.stdout);
    let mut words = line.split_whitespace();
    Some((
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    ))
}

/// How many DAMON daemons this run paused (for the report's environment line).
static DAMON_PAUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The file system holding `data` as the report names it: its type from the mount table
/// (`stat -f` says "ext2/ext3" for ext4, whose magic number is the same), and for ext4 whether
/// it keeps a journal (a journaled one has a jbd2 entry under /proc/fs/jbd2), which changes
/// what creating and deleting many files cost.
fn fs_description(data: &Path) -> String {
    let Some((fstype, source)) = mount_of(data) else {
        return Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(data)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
    };
    let (fstype, source) = (fstype.as_str(), source.as_str());
    if fstype != "ext4" {
        return fstype.to_string();
    }
    let dev = source.rsplit('/').next().unwrap_or("");
    let journaled = fs::read_dir("/proc/fs/jbd2").is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(dev)
                .is_some_and(|rest| rest.starts_with('-'))
        })
    });
    format!(
        "ext4 ({})",
        if journaled { "journal" } else { "no journal" }
    )
}

fn environment(data: &Path, arsync: &Path) -> String {
    // The version and the build's features: a build with the test hooks or MPI linked in (what
    // `scripts/test.sh` leaves in target/release) starts slower, and the report says which ran.
    let version = Command::new(arsync)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("").to_string();
            match lines.find(|l| l.starts_with("features:")) {
                Some(f) => format!("{first} ({f})"),
                None => first,
            }
        })
        .unwrap_or_default();
    let (machine, damon) = machine(data);
    format!("{machine}; {version}.{damon}")
}

/// "Machine: N CPUs, kernel K, data on FS", and what the run did to DAMON (empty if nothing).
fn machine(data: &Path) -> (String, String) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let fs_type = fs_description(data);
    let damon = match DAMON_PAUSED.load(std::sync::atomic::Ordering::Relaxed) {
        0 => String::new(),
        n => format!(" DAMON reclaim ({n} kdamond) paused during the runs."),
    };
    (
        format!(
            "Machine: {cpus} CPUs, kernel {}, data on {fs_type}",
            kernel.trim()
        ),
        damon,
    )
}

/// Steals summed over cores, from an arsync `--stats-json` file.
fn steals_from(stats: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(stats).ok()?).ok()?;
    Some(
        v.get("cores")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("steals").and_then(|s| s.as_u64()))
            .sum(),
    )
}

fn compare(a: &Args) -> Result<()> {
    let data = PathBuf::from(a.opt("--data").context("--data DIR")?);
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let arsync_args: Vec<String> = a.words("--arsync-args", "-a");
    let names = a.list("--datasets", "small,mixed");
    let caches = a.list("--cache", "warm");
    let reps: usize = a.num("--reps", 3)?;
    let mut peers_bin = vec![PathBuf::from("/opt/peers/bin")];
    if let Some(p) = a.opt("--peers-bin") {
        peers_bin.insert(0, PathBuf::from(p));
    }
    if let Some(root) = a.opt("--install-peers") {
        runner::install_peers(Path::new(&root))?;
        peers_bin.insert(0, Path::new(&root).join("bin"));
    }
    // Per-dataset arsync flags, e.g. "mixed:-aHAX;sparse:-aS" (the flags each dataset calls for).
    let per_dataset: Vec<(String, Vec<String>)> = a
        .opt("--arsync-args-for")
        .unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect();
    let mut tools = runner::tools(&arsync, &arsync_args, &peers_bin);
    if let Some(only) = a.opt("--tools") {
        let keep: Vec<&str> = only.split(',').collect();
        tools.retain(|t| keep.contains(&t.name.as_str()));
    }
    if let Some(n) = a.opt("--read-probe") {
        let threads: usize = n.parse().with_context(|| format!("--read-probe {n}"))?;
        anyhow::ensure!(threads >= 1, "--read-probe wants at least 1 thread");
        tools.push(runner::read_probe(threads)?);
    }
    let out =
        PathBuf::from(a.opt("--out").unwrap_or_else(|| "perf/runs".into())).join(today_host());
    let plan = Plan {
        data: &data,
        arsync: &arsync,
        names: &names,
        caches: &caches,
        reps,
        wait: Duration::from_secs(a.num("--wait", 370u64)?),
        out: &out,
        title: "arsync against its peers",
        ceiling: ceiling_of(a)?,
    };
    alternate(&plan, &tools, &per_dataset)
}

/// What [`alternate`] runs and where it reports.
struct Plan<'a> {
    data: &'a Path,
    arsync: &'a Path,
    names: &'a [String],
    caches: &'a [String],
    reps: usize,
    wait: Duration,
    out: &'a Path,
    title: &'a str,
    /// The storage's read ceiling (`--ceiling FILE`), set against the cold tables.
    ceiling: Option<report::Ceiling>,
}

/// The ceiling of `--ceiling FILE` (a `ceiling.json` of `arsync-bench ceiling`), read before any
/// run so that a wrong path fails at once.
fn ceiling_of(a: &Args) -> Result<Option<report::Ceiling>> {
    a.opt("--ceiling")
        .map(|p| ceiling::load(Path::new(&p)))
        .transpose()
}

/// Each dataset with each tool, alternating the tools in each repetition, warm or cold, each run
/// into a fresh destination; the first copy of each tool is checked; the report is rewritten
/// after every dataset. `per_dataset` replaces the first tool's arguments for a dataset.
fn alternate(
    plan: &Plan<'_>,
    tools: &[runner::Tool],
    per_dataset: &[(String, Vec<String>)],
) -> Result<()> {
    let (data, names, caches, reps, out) =
        (plan.data, plan.names, plan.caches, plan.reps, plan.out);
    let mut dests = runner::Dests::new(data.join(".bench-dst"), plan.wait)?;
    let mut rows = Vec::new();
    eprintln!(
        "[arsync-bench] tools: {}",
        tools
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for name in names {
        let src = data.join(name);
        if !src.is_dir() {
            bail!(
                "{} is missing: make it with `arsync-bench gen {name} {}`",
                src.display(),
                data.display()
            );
        }
        // (Rates are reckoned on the data; a sparse set's sizes only make room.)
        let (files, dirs, links, bytes, data_bytes) = runner::census(&src)?;
        let entries = files + dirs + links;
        let mut tools = tools.to_vec();
        if let Some((_, args)) = per_dataset.iter().find(|(k, _)| k == name) {
            tools[0].args = args.clone();
        }
        eprintln!("[arsync-bench] {name}: arsync {}", tools[0].args.join(" "));
        for cache in caches {
            for rep in 0..reps {
                for k in 0..tools.len() {
                    let tool = &tools[(rep + k) % tools.len()];
                    runner::prepare(cache, &src, &mut dests, bytes)?;
                    let dst = dests.next(&format!("{name}-{}-{cache}", tool.name));
                    let s = runner::measure(&mut runner::command(tool, &src, &dst))?;
                    let verdict = if tool.name == runner::READ_TREE {
                        "read only".to_string()
                    } else if rep == 0 && cache == &caches[0] {
                        verify::verdict(&src, &dst).unwrap_or_else(|e| format!("unverified: {e}"))
                    } else {
                        String::new()
                    };
                    dests.done(&dst, entries);
                    eprintln!(
                        "[arsync-bench] {name} {cache} rep{rep} {:<8} wall {:.3} s cpu {:.2} s rss {:.1} MiB exit {} {verdict}",
                        tool.name,
                        s.wall,
                        s.user + s.sys,
                        s.rss_kib as f64 / 1024.0,
                        s.code
                    );
                    rows.push(report::Row::new(
                        name,
                        cache,
                        &tool.name,
                        rep,
                        &s,
                        (files, data_bytes),
                        None,
                        None,
                        verdict,
                    ));
                }
            }
        }
        // Write what we have after every dataset, so an interrupted run still leaves a report.
        report::write(
            out,
            plan.title,
            &environment(data, plan.arsync),
            &rows,
            plan.ceiling.as_ref(),
        )?;
    }
    // The report is already complete: it was written after the last dataset.
    eprintln!("[arsync-bench] deleting destinations (outside the timed runs)");
    dests.delete_all();
    println!("{}", out.join("report.md").display());
    Ok(())
}

/// arsync with `base` and each `;`-separated flag set of `variants` added, named by its flags (an
/// empty set: "defaults").
fn variant_tools(arsync: &Path, base: &[String], variants: &str) -> Vec<runner::Tool> {
    variants
        .split(';')
        .map(|v| {
            let extra: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            runner::Tool {
                name: if extra.is_empty() {
                    "defaults".into()
                } else {
                    extra.join(" ")
                },
                program: arsync.to_path_buf(),
                args: base.iter().cloned().chain(extra).collect(),
                slash: true,
            }
        })
        .collect()
}

/// `arsync-bench sweep`: arsync alone with each of several flag sets on one dataset, alternating
/// them like `compare` alternates tools: the figures behind the engine's defaults.
fn sweep(a: &Args) -> Result<()> {
    let data = PathBuf::from(a.opt("--data").context("--data DIR")?);
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let base: Vec<String> = a.words("--base", "-a");
    let variants = a
        .opt("--variants")
        .context("--variants \"ARGS;ARGS;...\"")?;
    let tools = variant_tools(&arsync, &base, &variants);
    anyhow::ensure!(!tools.is_empty(), "--variants lists no flag set");
    let names = a.list("--datasets", "small");
    let caches = a.list("--cache", "warm");
    let out = PathBuf::from(a.opt("--out").unwrap_or_else(|| "perf/runs".into())).join(format!(
        "{}-sweep-{}-{}",
        today_host(),
        names.join("+"),
        caches.join("+")
    ));
    let plan = Plan {
        data: &data,
        arsync: &arsync,
        names: &names,
        caches: &caches,
        reps: a.num("--reps", 3)?,
        wait: Duration::from_secs(a.num("--wait", 370u64)?),
        out: &out,
        title: &format!("arsync {} with each flag set", base.join(" ")),
        ceiling: ceiling_of(a)?,
    };
    alternate(&plan, &tools, &[])
}

/// `arsync-bench concurrent`: `--jobs` arsync runs started together on one dataset, each into a
/// destination of its own, for each flag set in turn (alternating like `sweep`). Each repetition
/// is one row: wall time until the last job ended, the CPU time of all jobs, the largest RSS; the
/// first repetition's copies are checked.
fn concurrent(a: &Args) -> Result<()> {
    let data = PathBuf::from(a.opt("--data").context("--data DIR")?);
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let jobs: usize = a.num("--jobs", 2)?;
    anyhow::ensure!(jobs >= 1, "--jobs must be at least 1");
    let base: Vec<String> = a.words("--base", "-a --threads 1");
    let variants = a.opt("--variants").unwrap_or_else(|| ";--no-pin".into());
    let name = a.opt("--dataset").unwrap_or_else(|| "small".into());
    let caches = a.list("--cache", "warm");
    let reps: usize = a.num("--reps", 5)?;
    let tools = variant_tools(&arsync, &base, &variants);
    let src = data.join(&name);
    anyhow::ensure!(src.is_dir(), "{} is missing", src.display());
    // (Rates are reckoned on the data; a sparse set's sizes only make room.)
    let (files, _, _, bytes, data_bytes) = runner::census(&src)?;
    let (out, mut dests) = out_and_dests(a, &data, &format!("concurrent-{name}-{jobs}jobs"))?;
    let mut rows = Vec::new();
    for cache in &caches {
        for rep in 0..reps {
            for k in 0..tools.len() {
                let tool = &tools[(rep + k) % tools.len()];
                let label = &tool.name;
                runner::prepare(cache, &src, &mut dests, bytes * jobs as u64)?;
                let dsts: Vec<PathBuf> = (0..jobs)
                    .map(|j| dests.next(&format!("{name}-concurrent-{j}-{cache}")))
                    .collect();
                let samples: Vec<runner::Sample> = std::thread::scope(|sc| {
                    let handles: Vec<_> = dsts
                        .iter()
                        .map(|d| sc.spawn(|| runner::measure(&mut runner::command(tool, &src, d))))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a measuring thread panicked"))
                        .collect::<Result<Vec<_>>>()
                })?;
                let all = runner::Sample {
                    wall: samples.iter().map(|s| s.wall).fold(0.0, f64::max),
                    user: samples.iter().map(|s| s.user).sum(),
                    sys: samples.iter().map(|s| s.sys).sum(),
                    rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
                    code: samples.iter().map(|s| s.code).max().unwrap_or(0),
                };
                let verdict = if rep == 0 && cache == &caches[0] {
                    let v: Vec<String> = dsts
                        .iter()
                        .map(|d| {
                            verify::verdict(&src, d).unwrap_or_else(|e| format!("unverified: {e}"))
                        })
                        .collect();
                    v.iter()
                        .find(|v| *v != "OK")
                        .cloned()
                        .unwrap_or_else(|| "OK".into())
                } else {
                    String::new()
                };
                eprintln!(
                    "[arsync-bench] {name} {cache} rep{rep} {label:<10} {jobs} jobs: wall {} s, cpu {:.2} s, exit {} {verdict}",
                    samples
                        .iter()
                        .map(|s| format!("{:.3}", s.wall))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    all.user + all.sys,
                    all.code
                );
                rows.push(report::Row::new(
                    &name,
                    cache,
                    label,
                    rep,
                    &all,
                    (files * jobs as u64, data_bytes * jobs as u64),
                    None,
                    None,
                    verdict,
                ));
            }
        }
    }
    let title = format!(
        "{jobs} concurrent runs of arsync {} with each flag set",
        base.join(" ")
    );
    report::write(&out, &title, &environment(&data, &arsync), &rows, None)?;
    dests.delete_all();
    println!("{}", out.join("report.md").display());
    Ok(())
}

fn threads(a: &Args) -> Result<()> {
    scaling(a, false)
}

fn ranks(a: &Args) -> Result<()> {
    scaling(a, true)
}

/// Per-rank figures of a `--mpi` run's stats: (bytes, steals) of each rank.
fn ranks_from(stats: &Path) -> Option<Vec<(u64, u64)>> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(stats).ok()?).ok()?;
    Some(
        v.get("mpi")?
            .get("ranks")?
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r["bytes"].as_u64().unwrap_or(0),
                    r["steals"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}

/// Thread scaling (`threads`: `--threads 1..N`) or rank scaling (`ranks`: `mpirun -np 1..N
/// arsync --mpi`, each rank with `--rank-args`, default one unpinned thread).
fn scaling(a: &Args, mpi: bool) -> Result<()> {
    let data = PathBuf::from(a.opt("--data").context("--data DIR")?);
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let name = a.opt("--dataset").unwrap_or_else(|| "small".into());
    let max: usize = a.num("--max", if mpi { 4 } else { 8 })?;
    let rank_args = a.words("--rank-args", "-a --threads 1 --no-pin");
    let mut per_rank = String::new();
    let reps: usize = a.num("--reps", 3)?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let src = data.join(&name);
    // (Rates are reckoned on the data; a sparse set's sizes only make room.)
    let (files, _, _, bytes, data_bytes) = runner::census(&src)?;
    let (out, mut dests) = out_and_dests(a, &data, if mpi { "ranks" } else { "threads" })?;
    let stats =
        std::env::temp_dir().join(format!("arsync-bench-stats-{}.json", std::process::id()));
    let mut rows = Vec::new();
    for rep in 0..reps {
        for t in 1..=max {
            runner::prepare("warm", &src, &mut dests, bytes)?;
            let mut args = if mpi {
                let mut v: Vec<String> = ["--allow-run-as-root", "--oversubscribe", "-np"]
                    .map(String::from)
                    .to_vec();
                v.push(t.to_string());
                v.push(arsync.display().to_string());
                v.push("--mpi".into());
                v.extend(rank_args.iter().cloned());
                v
            } else {
                vec!["-a".to_string(), "--threads".into(), t.to_string()]
            };
            if t > cpus && !mpi {
                args.push("--no-pin".into());
            }
            args.push("--stats-json".into());
            args.push(stats.display().to_string());
            let tool = runner::Tool {
                name: if mpi { "arsync --mpi" } else { "arsync" }.into(),
                program: if mpi { "mpirun".into() } else { arsync.clone() },
                args,
                slash: true,
            };
            let dst = dests.next(&format!("{name}-t{t}"));
            let s = runner::measure(&mut runner::command(&tool, &src, &dst))?;
            let steals = if mpi {
                let r = ranks_from(&stats).unwrap_or_default();
                per_rank += &format!(
                    "| {t} | {rep} | {:.3} | {} | {} |\n",
                    s.wall,
                    r.iter()
                        .map(|x| x.0.to_string())
                        .collect::<Vec<_>>()
                        .join(" / "),
                    r.iter()
                        .map(|x| x.1.to_string())
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
                Some(r.iter().map(|x| x.1).sum())
            } else {
                steals_from(&stats)
            };
            eprintln!(
                "[arsync-bench] {} {t} rep{rep} wall {:.3} s steals {steals:?}",
                if mpi { "ranks" } else { "threads" },
                s.wall
            );
            rows.push(report::Row::new(
                &name,
                "warm",
                &tool.name,
                rep,
                &s,
                (files, data_bytes),
                Some(t),
                steals,
                String::new(),
            ));
        }
    }
    let _ = fs::remove_file(&stats);
    dests.delete_all();
    let title = if mpi {
        format!(
            "arsync --mpi rank scaling (mpirun -np 1..{max} on one host, {cpus} CPUs; each rank: {})",
            rank_args.join(" ")
        )
    } else {
        format!("arsync thread scaling ({cpus} CPUs; more threads are oversubscribed)")
    };
    report::write(&out, &title, &environment(&data, &arsync), &rows, None)?;
    if mpi {
        fs::write(
            out.join("ranks.md"),
            format!(
                "# Per-rank figures\n\n| ranks | rep | wall s | bytes per rank | steals per rank |\n|---|---|---|---|---|\n{per_rank}"
            ),
        )?;
    }
    println!("{}", out.join("report.md").display());
    Ok(())
}

/// The report directory (`--out`, default `perf/runs`, then `<date>-<host>-KIND`) and the
/// destinations under the data directory (waiting `--wait` seconds after a bulk delete).
fn out_and_dests(a: &Args, data: &Path, kind: &str) -> Result<(PathBuf, runner::Dests)> {
    let out = PathBuf::from(a.opt("--out").unwrap_or_else(|| "perf/runs".into()))
        .join(format!("{}-{kind}", today_host()));
    let dests = runner::Dests::new(
        data.join(".bench-dst"),
        Duration::from_secs(a.num("--wait", 370u64)?),
    )?;
    Ok((out, dests))
}

/// Regular files under `dir`, in a fixed order.
fn file_list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

/// Change `pct` percent of the files (a different set each `round`): new content of the same
/// size plus one byte, and a new mtime, as an edit would.
fn touch_some(files: &[PathBuf], pct: f64, round: usize) -> Result<usize> {
    let step = ((100.0 / pct).round() as usize).max(1);
    let mut n = 0;
    for f in files.iter().skip(round % step).step_by(step) {
        let mut data = fs::read(f)?;
        for b in data.iter_mut() {
            *b = b.wrapping_add(1);
        }
        data.push(round as u8);
        fs::write(f, &data)?;
        n += 1;
    }
    Ok(n)
}

/// `arsync-bench resync`: the catch-up pass of a migration. Both tools first make their own
/// copy of a tree; then, alternating, each re-syncs it with nothing changed, and with `--pct`
/// percent of the files changed before each round.
fn resync(a: &Args) -> Result<()> {
    let data = PathBuf::from(a.opt("--data").context("--data DIR")?);
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let want_files: u64 = a.num("--files", 100_000)?;
    let reps: usize = a.num("--reps", 5)?;
    let pct: f64 = a.num("--pct", 1.0)?;
    let src = data.join(format!("resync-{want_files}"));
    if !src.is_dir() {
        eprintln!(
            "[arsync-bench] generating {} ({want_files} files)",
            src.display()
        );
        datasets::generate("small", &src, want_files as f64 / 20_000.0, 42)?;
    }
    // (Rates are reckoned on the data; a sparse set's sizes only make room.)
    let (files, _, _, bytes, data_bytes) = runner::census(&src)?;
    let (out, mut dests) = out_and_dests(a, &data, "resync")?;
    let tools = [
        runner::Tool {
            name: "arsync".into(),
            program: arsync.clone(),
            args: vec!["-a".into()],
            slash: true,
        },
        runner::Tool {
            name: "rsync-a".into(),
            program: "rsync".into(),
            args: vec!["-a".into()],
            slash: true,
        },
    ];
    let dsts: Vec<PathBuf> = tools
        .iter()
        .map(|t| dests.next(&format!("resync-{}", t.name)))
        .collect();
    dests.ensure_room(2 * bytes)?;
    for (t, d) in tools.iter().zip(&dsts) {
        eprintln!("[arsync-bench] first copy with {}", t.name);
        let s = runner::measure(&mut runner::command(t, &src, d))?;
        anyhow::ensure!(
            s.code == 0,
            "{} failed the first copy (exit {})",
            t.name,
            s.code
        );
    }
    let list = file_list(&src)?;
    let mut rows = Vec::new();
    for scenario in ["no-change", "changed"] {
        let label = if scenario == "changed" {
            format!("resync-{pct}pct-changed")
        } else {
            "resync-no-change".to_string()
        };
        for rep in 0..reps {
            let changed = if scenario == "changed" {
                touch_some(&list, pct, rep)?
            } else {
                0
            };
            runner::warm(&src)?;
            for d in &dsts {
                runner::warm(d)?;
            }
            for k in 0..tools.len() {
                let i = (k + rep) % tools.len();
                runner::prefault(0);
                let s = runner::measure(&mut runner::command(&tools[i], &src, &dsts[i]))?;
                eprintln!(
                    "[arsync-bench] {label} rep{rep} {} ({changed} changed) wall {:.3} s exit {}",
                    tools[i].name, s.wall, s.code
                );
                let verdict = if rep + 1 == reps {
                    verify::verdict(&src, &dsts[i]).unwrap_or_else(|e| format!("unverified: {e}"))
                } else {
                    String::new()
                };
                rows.push(report::Row::new(
                    &label,
                    "warm",
                    &tools[i].name,
                    rep,
                    &s,
                    (files, data_bytes),
                    None,
                    None,
                    verdict,
                ));
            }
        }
    }
    dests.delete_all();
    report::write(
        &out,
        &format!(
            "re-sync of a {files}-file tree (the catch-up pass): no change, and {pct}% of the files changed"
        ),
        &environment(&data, &arsync),
        &rows,
        None,
    )?;
    println!("{}", out.join("report.md").display());
    Ok(())
}

fn quick_run(a: &Args) -> Result<()> {
    let arsync = PathBuf::from(a.opt("--arsync").context("--arsync BIN")?);
    let src = PathBuf::from(a.opt("--src").context("--src DIR")?);
    let reps: usize = a.num("--reps", 3)?;
    let extra: Vec<String> = match a.0.iter().position(|x| x == "--") {
        Some(i) => a.0[i + 1..]
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect(),
        None => vec!["-a".into()],
    };
    let (files, _, _, _, _) = runner::census(&src)?;
    let parent = src.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut dests = runner::Dests::new(parent.join(".bench-dst"), Duration::ZERO)?;
    let tool = runner::Tool {
        name: "arsync".into(),
        program: arsync,
        args: extra,
        slash: true,
    };
    let mut walls = Vec::new();
    let mut rss = Vec::new();
    println!("run  wall_s  user_s  sys_s  peak_rss_MiB  files/s  exit");
    for rep in 0..reps {
        let dst = dests.next("run");
        let s = runner::measure(&mut runner::command(&tool, &src, &dst))?;
        println!(
            "{rep:>3}  {:>6.3}  {:>6.3}  {:>5.3}  {:>12.1}  {:>7.0}  {}",
            s.wall,
            s.user,
            s.sys,
            s.rss_kib as f64 / 1024.0,
            files as f64 / s.wall,
            s.code
        );
        walls.push(s.wall);
        rss.push(s.rss_kib as f64 / 1024.0);
    }
    walls.sort_by(|a, b| a.total_cmp(b));
    rss.sort_by(|a, b| a.total_cmp(b));
    println!(
        "median wall {:.3} s, peak RSS {:.1} MiB ({files} files)",
        walls[walls.len() / 2],
        rss[rss.len() / 2]
    );
    dests.delete_all();
    Ok(())
}

fn usage() -> ! {
    let help = std::env::args().any(|a| a == "--help" || a == "-h");
    let text = format!(
        "usage:\n  arsync-bench gen KIND|all DIR [--scale S] [--seed N]      (kinds: {})\n  \
         arsync-bench compare --data DIR --arsync BIN [--datasets small,mixed] [--cache warm,cold] [--reps N]\n      \
         [--arsync-args \"-a\"] [--arsync-args-for \"mixed:-aHAX;sparse:-aS\"] [--tools arsync,cp-a,rsync-a,cpz,xcp,fcp] [--peers-bin DIR] [--install-peers DIR] [--out DIR] [--wait S]\n      \
         [--ceiling perf/runs/.../ceiling.json]   (cold tables: the copy's rate against the storage's read ceiling)\n      \
         [--read-probe N]   (a pseudo-tool `read-tree` in the rotation: the source read alone by N threads)\n  \
         arsync-bench report RUN_DIR [--ceiling FILE]   (write RUN_DIR/report.md again from its results.json)\n  \
         arsync-bench threads --data DIR --arsync BIN [--dataset small] [--max 8] [--reps 3]\n  \
         arsync-bench ranks --data DIR --arsync BIN_WITH_MPI [--dataset small] [--max 4] [--reps 3]\n  \
         arsync-bench sched [--tasks 262144] [--cost-us 5] [--max 8] [--reps 3] [--out DIR]\n  \
         arsync-bench resync --data DIR --arsync BIN [--files 100000] [--pct 1] [--reps 5]\n  \
         arsync-bench run --arsync BIN --src DIR [--reps N] [-- ARSYNC_ARGS...]\n  \
         arsync-bench sweep --data DIR --arsync BIN --variants \"ARGS;ARGS;...\" [--base \"-a\"] [--datasets small] [--cache warm,cold] [--reps 3] [--out DIR] [--wait S] [--ceiling FILE]\n\
         arsync-bench concurrent --data DIR --arsync BIN [--dataset small] [--jobs 2] [--base \"-a --threads 1\"] [--variants \";--no-pin\"] [--cache warm] [--reps 5] [--out DIR] [--wait S]\n  \
         arsync-bench ceiling --data DIR [--dataset large] [--depths 1,4,16,32] [--streams 1,2,8] [--block 1M] [--reps 3] [--out DIR]\n\
         (the timing commands pause DAMON's page reclaim while they run; --keep-damon leaves it)",
        datasets::KINDS.join(", ")
    );
    if help {
        println!("{text}");
        std::process::exit(0);
    }
    eprintln!("{text}");
    std::process::exit(1);
}

fn main() -> Result<()> {
    let args = Args(std::env::args_os().skip(1).collect());
    if args.flag("--help") || args.flag("-h") {
        usage()
    }
    let Some(cmd) = args.0.first().and_then(|a| a.to_str()).map(str::to_string) else {
        usage()
    };
    // The commands that time copies run with DAMON's reclaim paused (`runner::Damon`).
    let timed = [
        "compare",
        "threads",
        "ranks",
        "resync",
        "run",
        "sweep",
        "concurrent",
        "ceiling",
    ]
    .contains(&cmd.as_str());
    let damon = runner::Damon::pause(
        Path::new(runner::DAMON_ADMIN),
        !timed || args.flag("--keep-damon"),
        Path::new(runner::DAMON_RECORD),
    );
    DAMON_PAUSED.store(damon.paused(), std::sync::atomic::Ordering::Relaxed);
    match cmd.as_str() {
        "gen" => {
            let (Some(kind), Some(dir)) = (args.0.get(1), args.0.get(2)) else {
                usage()
            };
            let kind = kind.to_string_lossy().into_owned();
            let scale: f64 = args.num("--scale", 1.0)?;
            let seed: u64 = args.num("--seed", 42)?;
            let dir = PathBuf::from(dir);
            let kinds: Vec<&str> = if kind == "all" {
                datasets::KINDS.to_vec()
            } else {
                vec![kind.as_str()]
            };
            for k in kinds {
                let target = if args.flag("--into") || kinds_len_gt1(&kind) {
                    dir.join(k)
                } else {
                    dir.clone()
                };
                eprintln!("[arsync-bench] generating {k} in {}", target.display());
                datasets::generate(k, &target, scale, seed)?;
            }
            Ok(())
        }
        "compare" => compare(&args),
        "threads" => threads(&args),
        "ranks" => ranks(&args),
        "sched" => {
            let out = PathBuf::from(args.opt("--out").unwrap_or_else(|| "perf/runs".into()))
                .join(format!("{}-sched", today_host()));
            sched::bench(
                args.num("--tasks", 1u64 << 18)?,
                args.num("--cost-us", 5u64)?,
                args.num("--max", 8usize)?,
                args.num("--reps", 3usize)?,
                &out,
            )
        }
        "resync" => resync(&args),
        "report" => {
            let Some(dir) = args
                .0
                .get(1)
                .filter(|d| !d.to_string_lossy().starts_with("--"))
            else {
                usage()
            };
            let dir = PathBuf::from(dir);
            report::rewrite(&dir, ceiling_of(&args)?.as_ref())?;
            println!("{}", dir.join("report.md").display());
            Ok(())
        }
        "run" => quick_run(&args),
        "sweep" => sweep(&args),
        "concurrent" => concurrent(&args),
        "ceiling" => {
            let data = PathBuf::from(args.opt("--data").context("--data DIR")?);
            let set = data.join(args.opt("--dataset").unwrap_or_else(|| "large".into()));
            let nums = |name: &str, default: &str| -> Result<Vec<usize>> {
                args.list(name, default)
                    .iter()
                    .map(|v| v.parse().with_context(|| format!("{name} {v}")))
                    .collect()
            };
            let out = PathBuf::from(args.opt("--out").unwrap_or_else(|| "perf/runs".into()))
                .join(format!("{}-ceiling", today_host()));
            let (machine, damon) = machine(&set);
            let device = mount_of(&set).map(|m| m.1).unwrap_or_default();
            ceiling::bench(
                &set,
                &nums("--depths", "1,4,16,32")?,
                &nums("--streams", "1,2,8")?,
                ceiling::parse_size(&args.opt("--block").unwrap_or_else(|| "1M".into()))?,
                args.num("--reps", 3usize)?,
                &out,
                &format!("{machine} ({device}).{damon}"),
            )
        }
        "read-tree" => {
            // `read-tree THREADS SRC DEST` (DEST ignored), as `compare --read-probe` runs it.
            let (Some(threads), Some(src)) = (args.0.get(1), args.0.get(2)) else {
                usage()
            };
            let threads: usize = threads
                .to_string_lossy()
                .parse()
                .context("read-tree THREADS")?;
            let bytes = ceiling::read_tree(Path::new(src), threads, 1 << 20)
                .with_context(|| format!("reading {}", Path::new(src).display()))?;
            eprintln!("[arsync-bench] read-tree: {bytes} bytes");
            Ok(())
        }
        "measure-child" => {
            let Some(program) = args.0.get(1) else {
                usage()
            };
            runner::measure_here(program, &args.0[2..])
        }
        "prefault" => {
            runner::prefault_here(
                args.0
                    .get(1)
                    .and_then(|m| m.to_str()?.parse().ok())
                    .unwrap_or(1024),
            );
            Ok(())
        }
        _ => usage(),
    }
}

fn kinds_len_gt1(kind: &str) -> bool {
    kind == "all"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report names ext4 as ext4 (not `stat -f`'s "ext2/ext3") and says whether it keeps a
    /// journal: two loop-mounted images, one made with and one without (as root; skipped with
    /// the reason otherwise), and tmpfs by its name.
    #[test]
    fn the_report_names_the_file_system_and_an_ext4_journal() {
        assert_eq!(fs_description(Path::new("/dev/shm")), "tmpfs");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("mkfs.ext4").arg("-V").output().is_err()
        {
            eprintln!(
                "SKIP the_report_names_the_file_system_and_an_ext4_journal: ext4 images need root and mkfs.ext4"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (features, said) in [
            ("has_journal", "ext4 (journal)"),
            ("^has_journal", "ext4 (no journal)"),
        ] {
            let img = dir.path().join(format!("{features}.img"));
            let mnt = dir.path().join(format!("{features}.mnt"));
            fs::create_dir(&mnt).unwrap();
            let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
            ok(Command::new("truncate").arg("-s").arg("64M").arg(&img));
            ok(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-O", features])
                .arg(&img));
            ok(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt));
            let got = fs_description(&mnt);
            ok(Command::new("umount").arg(&mnt));
            assert_eq!(got, said);
        }
    }
}
