//! The read ceiling of the storage under a data set (`arsync-bench ceiling`): how fast the set's
//! bytes come off the device at all, so that a cold copy can be put against what the disk gives
//! and not only against the other tools (issue 4's goal: a cold `large` copy at 90% of the
//! disk's read ceiling).
//!
//! Each probe reads every byte of the set's regular files once, from a cold cache:
//!
//! * **direct, depth N**: `N` threads take chunks of `--block` bytes in file order from one shared
//!   counter and read them with `O_DIRECT` (no page cache, no readahead): `N` requests in flight,
//!   sequential across the threads, as `fio --rw=read --direct=1 --numjobs=N` would see it;
//! * **buffered, N streams**: `N` threads each take whole files from a shared counter and read
//!   them through the page cache in `--block`-sized reads, the kernel's readahead running ahead
//!   of each stream: what a tool that reads (or `copy_file_range`s) files one after another on
//!   `N` threads can get.
//!
//! The ceiling is the best median over the probes. The probes are alternated across
//! repetitions (the first probe of each repetition rotates), as `compare` alternates tools.
//!
//! Also here: [`load`], the ceiling of a saved `ceiling.json` for `compare --ceiling`, and
//! [`read_tree`], a whole tree read by several threads with no file list made beforehand, which
//! `compare --read-probe` times in the same run as the copies.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// `O_DIRECT` wants the buffer, the offset and the length aligned to the device's logical block
/// size; a page covers every device in use.
const ALIGN: usize = 4096;

/// How a probe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `O_DIRECT` chunks from a shared counter.
    Direct,
    /// Whole files through the page cache, one stream per thread.
    Buffered,
}

/// One way of reading the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub mode: Mode,
    /// Requests in flight (direct) or streams (buffered): the number of threads.
    pub depth: usize,
}

impl Probe {
    fn label(&self) -> String {
        match self.mode {
            Mode::Direct => format!("direct, depth {}", self.depth),
            Mode::Buffered => format!("buffered, {} stream(s)", self.depth),
        }
    }
}

/// One measured probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub probe: Probe,
    pub rep: usize,
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
}

/// The regular files under `dir` (symlinks not followed), in a fixed order, with their sizes.
pub fn files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    crate::file_list(dir)?
        .into_iter()
        .map(|p| {
            let size = fs::symlink_metadata(&p)
                .with_context(|| format!("lstat {}", p.display()))?
                .len();
            Ok((p, size))
        })
        .collect()
}

/// A buffer of `len` bytes (a multiple of [`ALIGN`]) aligned for `O_DIRECT`, cut from a larger
/// vector.
fn aligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    storage.resize(len + ALIGN, 0);
    let off = storage.as_ptr().align_offset(ALIGN);
    &mut storage[off..off + len]
}

/// Read `len` bytes of `f` from `offset` (fewer at the end of the file); the bytes read.
fn read_range(f: &File, buf: &mut [u8], offset: u64, len: u64) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        // O_DIRECT reads whole aligned blocks; the last one of a file returns what is left.
        let ask = want.next_multiple_of(ALIGN).min(buf.len());
        let n = f.read_at(&mut buf[..ask], offset + done)?;
        if n == 0 {
            break;
        }
        done += (n as u64).min(len - done);
    }
    Ok(done)
}

/// Read every byte of `files` once with `probe`, `block` bytes per read (a multiple of
/// [`ALIGN`]): the bytes read and the time it took (the files are opened before the clock
/// starts).
pub fn read_all(
    files: &[(PathBuf, u64)],
    probe: Probe,
    block: usize,
) -> io::Result<(u64, Duration)> {
    assert!(block > 0 && block.is_multiple_of(ALIGN), "block {block}");
    let depth = probe.depth.max(1);
    let opened: Vec<File> = files
        .iter()
        .map(|(p, _)| {
            let mut o = OpenOptions::new();
            o.read(true);
            if probe.mode == Mode::Direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(p)
        })
        .collect::<io::Result<_>>()?;
    // Direct: the chunks in file order; buffered: whole files.
    let work: Vec<(usize, u64, u64)> = match probe.mode {
        Mode::Direct => files
            .iter()
            .enumerate()
            .flat_map(|(i, &(_, size))| {
                (0..size.div_ceil(block as u64)).map(move |k| {
                    let off = k * block as u64;
                    (i, off, (size - off).min(block as u64))
                })
            })
            .collect(),
        Mode::Buffered => files
            .iter()
            .enumerate()
            .map(|(i, &(_, size))| (i, 0, size))
            .collect(),
    };
    let next = AtomicUsize::new(0);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> io::Result<()> {
        let threads: Vec<_> = (0..depth)
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
                    let mut storage = Vec::new();
                    let buf = aligned(&mut storage, block);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, off, len)) = work.get(k) else {
                            return Ok(());
                        };
                        let n = read_range(&opened[i], buf, off, len)?;
                        total.fetch_add(n, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a probe thread panicked")?;
        }
        Ok(())
    })?;
    Ok((total.load(Ordering::Relaxed), start.elapsed()))
}

/// Read a whole tree the way the least a copier must do on the source side: `threads` threads
/// take directories from one shared stack, list each (`d_type`, no `stat`), push its
/// subdirectories and read each regular file to its end through the page cache, `block` bytes
/// per `read`; symlinks and special files are skipped. Returns the bytes read. The same-run
/// floor of a copy: `compare --read-probe N` times it beside the tools (`arsync-bench
/// read-tree`), from the same cache state, so that a copy's time is set against what reading
/// its source alone costs on the storage at that moment, which a `ceiling` measured at another
/// time cannot say on a host this noisy.
pub fn read_tree(root: &Path, threads: usize, block: usize) -> io::Result<u64> {
    use std::io::Read;
    use std::sync::{Condvar, Mutex};
    // The directories still to list, and how many threads are listing one right now (the walk
    // is over when the stack is empty and nobody is listing).
    let work = Mutex::new((vec![root.to_path_buf()], 0usize));
    let wake = Condvar::new();
    let total = AtomicU64::new(0);
    let failed: Mutex<Option<io::Error>> = Mutex::new(None);
    let one = |dir: &Path, buf: &mut [u8]| -> io::Result<Vec<PathBuf>> {
        let mut subdirs = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                subdirs.push(e.path());
            } else if t.is_file() {
                let mut f = File::open(e.path())?;
                loop {
                    let n = f.read(buf)?;
                    if n == 0 {
                        break;
                    }
                    total.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        Ok(subdirs)
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; block.max(1)];
                loop {
                    let dir = {
                        let mut w = work.lock().unwrap();
                        loop {
                            if let Some(d) = w.0.pop() {
                                w.1 += 1;
                                break Some(d);
                            }
                            if w.1 == 0 {
                                break None;
                            }
                            w = wake.wait(w).unwrap();
                        }
                    };
                    let Some(dir) = dir else {
                        wake.notify_all();
                        return;
                    };
                    let found = one(&dir, &mut buf);
                    let mut w = work.lock().unwrap();
                    w.1 -= 1;
                    match found {
                        Ok(subdirs) => w.0.extend(subdirs),
                        Err(e) => {
                            // Stop the walk: nothing more is handed out.
                            w.0.clear();
                            failed.lock().unwrap().get_or_insert(e);
                        }
                    }
                    wake.notify_all();
                }
            });
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(total.load(Ordering::Relaxed)),
    }
}

/// `1M`, `256K`, `4096`: a size in bytes.
pub fn parse_size(s: &str) -> Result<usize> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.parse().with_context(|| format!("size {s}"))?;
    Ok(n * mult)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The probes of `samples` in the order they first appear.
fn probes(samples: &[Sample]) -> Vec<Probe> {
    let mut probes: Vec<Probe> = Vec::new();
    for s in samples {
        if !probes.contains(&s.probe) {
            probes.push(s.probe);
        }
    }
    probes
}

/// The ceiling: the best of the probes' median MB/s, and its probe (`None` without samples).
pub fn best(samples: &[Sample]) -> Option<(f64, Probe)> {
    let mut best: Option<(f64, Probe)> = None;
    for p in probes(samples) {
        let m = median(
            samples
                .iter()
                .filter(|s| s.probe == p)
                .map(|s| s.mb_per_s)
                .collect(),
        );
        if best.is_none_or(|(b, _)| m > b) {
            best = Some((m, p));
        }
    }
    best
}

/// The ceiling of a `ceiling.json` written by [`bench()`], for the cold tables of a `compare`
/// report (`--ceiling FILE`).
pub fn load(path: &Path) -> Result<crate::report::Ceiling> {
    let samples: Vec<Sample> = serde_json::from_slice(
        &fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| {
        format!(
            "{}: not a ceiling.json of `arsync-bench ceiling`",
            path.display()
        )
    })?;
    let (mb_per_s, probe) =
        best(&samples).with_context(|| format!("{}: no samples", path.display()))?;
    Ok(crate::report::Ceiling {
        mb_per_s,
        probe: probe.label(),
        from: path.display().to_string(),
    })
}

/// The Markdown table of `samples`: per probe the median, lowest and highest MB/s, then the
/// ceiling (the best median) and what 90% of it means for the set.
pub fn report(set: &Path, bytes: u64, samples: &[Sample], env: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Read ceiling of `{}` ({:.1} MiB)\n\n{env}\n\nEvery probe reads every byte once from a cold cache (`sync`, `drop_caches`); MB = 10^6 bytes.\n",
        set.display(),
        bytes as f64 / (1u64 << 20) as f64
    );
    let _ = writeln!(md, "| probe | median MB/s | lowest | highest | runs |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for p in &probes(samples) {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.probe == *p)
            .map(|s| s.mb_per_s)
            .collect();
        let m = median(v.clone());
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| {} | {m:.0} | {lo:.0} | {hi:.0} | {} |",
            p.label(),
            v.len()
        );
    }
    if let Some((m, p)) = best(samples) {
        let secs = bytes as f64 / 1e6 / m;
        let _ = writeln!(
            md,
            "\nCeiling: **{m:.0} MB/s** ({}): the set in {secs:.3} s at best; 90% of it ({:.0} MB/s) is {:.3} s.",
            p.label(),
            0.9 * m,
            secs / 0.9
        );
    }
    md
}

/// `arsync-bench ceiling`: every probe (`Direct` at each of `depths`, `Buffered` at each of
/// `streams`) `reps` times, alternated, each from a cold cache; the samples as JSON and the
/// report as Markdown under `out`.
pub fn bench(
    set: &Path,
    depths: &[usize],
    streams: &[usize],
    block: usize,
    reps: usize,
    out: &Path,
    env: &str,
) -> Result<()> {
    if block == 0 || !block.is_multiple_of(ALIGN) {
        bail!("--block must be a multiple of {ALIGN} bytes");
    }
    let list = files(set)?;
    let bytes: u64 = list.iter().map(|f| f.1).sum();
    if bytes == 0 {
        bail!("{}: no data to read", set.display());
    }
    let probes: Vec<Probe> = depths
        .iter()
        .map(|&depth| Probe {
            mode: Mode::Direct,
            depth,
        })
        .chain(streams.iter().map(|&depth| Probe {
            mode: Mode::Buffered,
            depth,
        }))
        .collect();
    if probes.is_empty() {
        bail!("no probe: give --depths or --streams");
    }
    let mut samples = Vec::new();
    for rep in 0..reps {
        for k in 0..probes.len() {
            let probe = probes[(k + rep) % probes.len()];
            crate::runner::cold(Duration::from_secs(2))?;
            let (got, took) = read_all(&list, probe, block)
                .with_context(|| format!("{} of {}", probe.label(), set.display()))?;
            if got != bytes {
                bail!("{}: read {got} bytes of {bytes}", probe.label());
            }
            let secs = took.as_secs_f64();
            let mb_per_s = bytes as f64 / 1e6 / secs;
            eprintln!(
                "[arsync-bench] ceiling rep{rep} {:<24} {secs:.3} s  {mb_per_s:.0} MB/s",
                probe.label()
            );
            samples.push(Sample {
                probe,
                rep,
                bytes,
                secs,
                mb_per_s,
            });
        }
    }
    fs::create_dir_all(out)?;
    fs::write(
        out.join("ceiling.json"),
        serde_json::to_string_pretty(&samples)?,
    )?;
    let md = report(set, bytes, &samples, env);
    fs::write(out.join("ceiling.md"), &md)?;
    println!("{md}");
    println!("{}", out.join("ceiling.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every probe reads every byte of every file exactly once, whatever the file sizes against
    /// the block (empty, under one block, not a multiple of the alignment, several blocks) and
    /// the depth; direct only where the file system takes `O_DIRECT` (skipped with the reason
    /// otherwise).
    #[test]
    fn every_probe_reads_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0u64, 1, 4095, 4096, 70_001, 3 * 65536, 200_000];
        for (i, size) in sizes.iter().enumerate() {
            let sub = dir.path().join(format!("d{}", i % 3));
            fs::create_dir_all(&sub).unwrap();
            let data: Vec<u8> = (0..*size).map(|b| (b % 251) as u8).collect();
            fs::write(sub.join(format!("f{i}")), data).unwrap();
        }
        std::os::unix::fs::symlink("d0/f1", dir.path().join("link")).unwrap();
        let list = files(dir.path()).unwrap();
        assert_eq!(list.len(), sizes.len(), "{list:?}");
        let want: u64 = sizes.iter().sum();
        assert_eq!(list.iter().map(|f| f.1).sum::<u64>(), want);
        let direct_ok = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&list[1].0)
            .is_ok();
        if !direct_ok {
            eprintln!(
                "SKIP the direct probes of every_probe_reads_every_byte_once: {} refuses O_DIRECT",
                dir.path().display()
            );
        }
        for mode in [Mode::Buffered, Mode::Direct] {
            if mode == Mode::Direct && !direct_ok {
                continue;
            }
            for depth in [1, 2, 5] {
                for block in [4096, 65536] {
                    let (got, _) = read_all(&list, Probe { mode, depth }, block).unwrap();
                    assert_eq!(got, want, "{mode:?} depth {depth} block {block}");
                }
            }
        }
    }

    #[test]
    fn sizes_and_the_report() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("256k").unwrap(), 256 << 10);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("x").is_err());
        let p1 = Probe {
            mode: Mode::Direct,
            depth: 1,
        };
        let p8 = Probe {
            mode: Mode::Direct,
            depth: 8,
        };
        let s = |probe, rep, mb_per_s| Sample {
            probe,
            rep,
            bytes: 1_000_000_000,
            secs: 1000.0 / mb_per_s,
            mb_per_s,
        };
        let samples = [
            s(p1, 0, 100.0),
            s(p8, 0, 400.0),
            s(p1, 1, 300.0),
            s(p8, 1, 500.0),
            s(p8, 2, 900.0),
        ];
        let md = report(Path::new("/d"), 1_000_000_000, &samples, "env");
        assert!(
            md.contains("| direct, depth 1 | 200 | 100 | 300 | 2 |"),
            "{md}"
        );
        assert!(
            md.contains("| direct, depth 8 | 500 | 400 | 900 | 3 |"),
            "{md}"
        );
        assert!(
            md.contains("Ceiling: **500 MB/s** (direct, depth 8): the set in 2.000 s at best; 90% of it (450 MB/s) is 2.222 s."),
            "{md}"
        );

        // The ceiling a `compare` report reads back from the saved samples is the same one.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("ceiling.json");
        fs::write(&saved, serde_json::to_string_pretty(&samples[..]).unwrap()).unwrap();
        let c = load(&saved).unwrap();
        assert_eq!((c.mb_per_s, c.probe.as_str()), (500.0, "direct, depth 8"));
        assert_eq!(c.from, saved.display().to_string());
        fs::write(&saved, "[]").unwrap();
        assert!(load(&saved).is_err(), "no samples, no ceiling");
        fs::write(&saved, "{\"rows\": 1}").unwrap();
        let e = format!("{:#}", load(&saved).unwrap_err());
        assert!(e.contains("not a ceiling.json"), "{e}");
    }

    /// The tree read reads every byte of every regular file once, whatever the thread count, and
    /// nothing of symlinks; a directory it cannot list is an error, not a short count.
    #[test]
    fn the_tree_read_reads_every_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = 0u64;
        for d in 0..6 {
            let sub = dir.path().join(format!("d{d}/e{}", d % 2));
            fs::create_dir_all(&sub).unwrap();
            for (k, size) in [0usize, 1, 4095, 70_001].into_iter().enumerate() {
                fs::write(sub.join(format!("f{k}")), vec![d as u8; size + d]).unwrap();
                want += (size + d) as u64;
            }
        }
        std::os::unix::fs::symlink("d0/e0/f3", dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("empty")).unwrap();
        for threads in [1, 3, 8] {
            for block in [4096, 65536] {
                assert_eq!(read_tree(dir.path(), threads, block).unwrap(), want);
            }
        }
        assert!(read_tree(&dir.path().join("missing"), 2, 4096).is_err());
    }
}
