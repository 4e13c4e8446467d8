//! `arsync-bench`: reproducible datasets and measured runs of the built `arsync` binary.
//!
//! This is the first slice of the benchmark harness (the performance issue grows it into the full
//! side-by-side runner with peers, cache control, reports and plots). It does two jobs today:
//!
//! * `arsync-bench gen KIND DIR [--files N] [--seed S]` writes a reproducible tree: `small`
//!   (files of 0–16 KiB, log-uniform, 100 per directory, fan-out 10), `flat` (all files in one
//!   directory) or `deep` (a chain of directories with a few files per level). Same seed and
//!   size, byte-identical tree (content, names, modes, nanosecond mtimes).
//! * `arsync-bench run --arsync BIN --src DIR [--reps N] [-- ARGS...]` copies DIR with
//!   `BIN ARGS DIR/ DEST/` into fresh destinations beside DIR, N times, and prints wall time, user
//!   and system CPU, peak RSS and files/s per run and their medians, read from `wait4`'s rusage.
//!   Destinations are deleted only after all runs (on journal-less ext4, creating files right after
//!   a mass delete is up to 15× slower).

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// A small deterministic generator (xorshift64*), so datasets need no external crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| p.display().to_string());
    }
    Ok(())
}

/// Log-uniform size in 0..=16 KiB (about 7% empty files, as the shared `small` dataset).
fn small_size(rng: &mut Rng) -> usize {
    if rng.below(14) == 0 {
        return 0;
    }
    let exp = rng.below(15) as u32; // 2^0 .. 2^14
    let base = 1usize << exp;
    base + rng.below(base as u64) as usize
}

fn generate(kind: &str, dir: &Path, files: usize, seed: u64) -> Result<()> {
    if dir.exists() {
        bail!("{} exists: choose a new directory", dir.display());
    }
    fs::create_dir_all(dir)?;
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 32 * 1024];
    let mut dirs = vec![dir.to_path_buf()];
    let mut t = 1_650_000_000i64;
    let mut write_file = |path: &Path, rng: &mut Rng, buf: &mut Vec<u8>| -> Result<()> {
        let n = small_size(rng);
        rng.fill(&mut buf[..n]);
        fs::write(path, &buf[..n])?;
        if rng.below(10) == 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        }
        t += 1 + rng.below(1000) as i64;
        set_mtime(path, t, (rng.below(1_000_000) * 1000 + 123) as i64)?;
        Ok(())
    };
    match kind {
        "small" => {
            // Fan-out 10 directories, files at depth 4, 100 per leaf directory.
            let leaves = files.div_ceil(100);
            for leaf in 0..leaves {
                let rel = format!(
                    "d{}/d{}/d{}/d{}",
                    leaf / 1000 % 10,
                    leaf / 100 % 10,
                    leaf / 10 % 10,
                    leaf % 10
                );
                let d = dir.join(&rel);
                fs::create_dir_all(&d)?;
                let mut p = d.clone();
                while p != dir {
                    dirs.push(p.clone());
                    p.pop();
                }
                for i in 0..100.min(files - leaf * 100) {
                    write_file(&d.join(format!("f{i:03}.dat")), &mut rng, &mut buf)?;
                }
            }
        }
        "flat" => {
            for i in 0..files {
                write_file(&dir.join(format!("f{i:07}")), &mut rng, &mut buf)?;
            }
        }
        "deep" => {
            let mut d = dir.to_path_buf();
            let per_level = 3;
            for level in 0..files.div_ceil(per_level) {
                d.push(format!("level{level:04}"));
                fs::create_dir(&d)?;
                dirs.push(d.clone());
                for i in 0..per_level {
                    write_file(&d.join(format!("f{i}")), &mut rng, &mut buf)?;
                }
            }
        }
        other => bail!("unknown dataset kind {other:?} (small, flat, deep)"),
    }
    dirs.sort();
    dirs.dedup();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in &dirs {
        t += 7;
        set_mtime(d, t, 456_789_123)?;
    }
    Ok(())
}

struct Sample {
    wall: f64,
    user: f64,
    sys: f64,
    rss_kib: i64,
    code: i32,
}

/// Run a command and measure it with `wait4` (the child's own rusage, peak RSS included).
fn measure(cmd: &mut Command) -> Result<Sample> {
    let start = Instant::now();
    let child = cmd.spawn().context("spawn arsync")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; `status` and `ru` are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    std::mem::forget(child); // reaped by wait4 above
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        wall,
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
        rss_kib: ru.ru_maxrss,
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    })
}

fn count_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn run(arsync: &Path, src: &Path, reps: usize, extra: &[OsString]) -> Result<()> {
    let files = count_files(src)?;
    let parent = src.parent().unwrap_or(Path::new("."));
    let stamp = std::process::id();
    let mut dests = Vec::new();
    let mut samples = Vec::new();
    println!("run  wall_s  user_s  sys_s  peak_rss_MiB  files/s  exit");
    for rep in 0..reps {
        let dst = parent.join(format!(".bench-{stamp}-{rep}"));
        let mut src_arg = src.as_os_str().to_os_string();
        src_arg.push("/");
        let s = measure(Command::new(arsync).args(extra).arg(&src_arg).arg(&dst))?;
        println!(
            "{rep:>3}  {:>6.3}  {:>6.3}  {:>5.3}  {:>12.1}  {:>7.0}  {}",
            s.wall,
            s.user,
            s.sys,
            s.rss_kib as f64 / 1024.0,
            files as f64 / s.wall,
            s.code
        );
        dests.push(dst);
        samples.push(s);
    }
    println!(
        "median  wall {:.3} s  user {:.3} s  sys {:.3} s  peak RSS {:.1} MiB  {:.0} files/s  ({files} files)",
        median(samples.iter().map(|s| s.wall).collect()),
        median(samples.iter().map(|s| s.user).collect()),
        median(samples.iter().map(|s| s.sys).collect()),
        median(samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect()),
        median(samples.iter().map(|s| files as f64 / s.wall).collect()),
    );
    std::io::stdout().flush()?;
    for d in dests {
        let _ = fs::remove_dir_all(d);
    }
    if samples.iter().any(|s| s.code != 0) {
        bail!("a run exited non-zero");
    }
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: arsync-bench gen small|flat|deep DIR [--files N] [--seed S]\n       \
         arsync-bench run --arsync BIN --src DIR [--reps N] [-- ARSYNC_ARGS...]"
    );
    std::process::exit(1);
}

fn main() -> Result<()> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(cmd) = args.first().and_then(|a| a.to_str()) else {
        usage()
    };
    let opt = |name: &str| -> Option<OsString> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).cloned()
    };
    match cmd {
        "gen" => {
            let (Some(kind), Some(dir)) = (args.get(1), args.get(2)) else {
                usage()
            };
            let files = opt("--files")
                .map(|v| v.to_string_lossy().parse())
                .transpose()?
                .unwrap_or(20_000usize);
            let seed = opt("--seed")
                .map(|v| v.to_string_lossy().parse())
                .transpose()?
                .unwrap_or(42u64);
            generate(&kind.to_string_lossy(), &PathBuf::from(dir), files, seed)
        }
        "run" => {
            let (Some(bin), Some(src)) = (opt("--arsync"), opt("--src")) else {
                usage()
            };
            let reps = opt("--reps")
                .map(|v| v.to_string_lossy().parse())
                .transpose()?
                .unwrap_or(3usize);
            let extra: Vec<OsString> = match args.iter().position(|a| a == "--") {
                Some(i) => args[i + 1..].to_vec(),
                None => vec![OsString::from("-a")],
            };
            run(&PathBuf::from(bin), &PathBuf::from(src), reps, &extra)
        }
        _ => usage(),
    }
}
