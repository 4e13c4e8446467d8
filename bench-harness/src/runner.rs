//! Running tools side by side: cache control, the memory state before each run, the measured
//! run itself (wall time and the child's own rusage from `wait4`), and the destinations, which are
//! deleted in bulk only after every timed run (on journal-less ext4 creating files right after a
//! mass delete is up to 15× slower).

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

/// One copy tool and how to call it.
#[derive(Clone, Debug)]
pub struct Tool {
    /// Short name in reports.
    pub name: String,
    /// Program.
    pub program: PathBuf,
    /// Arguments before SRC and DEST.
    pub args: Vec<String>,
    /// Whether SRC gets a trailing `/` and DEST is the copy itself (rsync style); otherwise
    /// `SRC DEST` with DEST not existing (cp style), which makes the same tree.
    pub slash: bool,
}

fn find(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    for d in extra {
        let p = d.join(program);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The name of the pseudo-tool that only reads the source (`compare --read-probe N`): it makes
/// no copy, so it gets no check.
pub const READ_TREE: &str = "read-tree";

/// The source read alone by `threads` threads ([`crate::ceiling::read_tree`], run as
/// `arsync-bench read-tree THREADS SRC DEST`, DEST ignored), timed like a tool.
pub fn read_probe(threads: usize) -> Result<Tool> {
    Ok(Tool {
        name: READ_TREE.into(),
        program: std::env::current_exe().context("current_exe")?,
        args: vec!["read-tree".into(), threads.to_string()],
        slash: false,
    })
}

/// arsync plus every peer found on PATH or in `peers_bin`.
pub fn tools(arsync: &Path, arsync_args: &[String], peers_bin: &[PathBuf]) -> Vec<Tool> {
    let mut v = vec![Tool {
        name: "arsync".into(),
        program: arsync.to_path_buf(),
        args: arsync_args.to_vec(),
        slash: true,
    }];
    let peers: [(&str, &str, &[&str], bool); 5] = [
        ("cp-a", "cp", &["-a"], false),
        ("rsync-a", "rsync", &["-a"], true),
        ("cpz", "cpz", &[], false),
        ("xcp", "xcp", &["-r", "--no-progress"], false),
        ("fcp", "fcp", &[], false),
    ];
    for (name, prog, args, slash) in peers {
        if let Some(program) = find(prog, peers_bin) {
            v.push(Tool {
                name: name.into(),
                program,
                args: args.iter().map(|s| s.to_string()).collect(),
                slash,
            });
        }
    }
    v
}

/// Install the crates.io peers (xcp, cpz, fcp) into `root` with `cargo install`.
pub fn install_peers(root: &Path) -> Result<()> {
    let st = Command::new("cargo")
        .args(["install", "--locked", "--root"])
        .arg(root)
        .args(["xcp", "cpz", "fcp"])
        .status()
        .context("cargo install")?;
    anyhow::ensure!(st.success(), "cargo install of the peers failed");
    Ok(())
}

/// One measured run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub wall: f64,
    pub user: f64,
    pub sys: f64,
    pub rss_kib: i64,
    pub code: i32,
}

/// Run `cmd` and measure it with `wait4`.
///
/// The command is started by a small helper process (`arsync-bench measure-child`) rather than by
/// the harness itself: Linux carries a process's peak RSS over fork and exec, so a tool started
/// directly by the harness would report at least the harness's own peak (its manifests and
/// buffers) instead of its own.
pub fn measure(cmd: &mut Command) -> Result<Sample> {
    let me = std::env::current_exe().context("current_exe")?;
    let out = Command::new(me)
        .arg("measure-child")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stderr(Stdio::null())
        .output()
        .context("spawn measure-child")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    anyhow::ensure!(f.len() == 5, "measure-child printed {text:?}");
    Ok(Sample {
        wall: f[0].parse()?,
        user: f[1].parse()?,
        sys: f[2].parse()?,
        rss_kib: f[3].parse()?,
        code: f[4].parse()?,
    })
}

/// The body of `arsync-bench measure-child PROGRAM ARGS...`: run it, print
/// `wall user sys peak_rss_kib exit` on one line.
pub fn measure_here(program: &OsString, args: &[OsString]) -> Result<()> {
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn")?;
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
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    println!(
        "{wall:.6} {:.6} {:.6} {} {code}",
        tv(ru.ru_utime),
        tv(ru.ru_stime),
        ru.ru_maxrss
    );
    Ok(())
}

/// Build the command that copies `src` to `dst` with `tool`.
pub fn command(tool: &Tool, src: &Path, dst: &Path) -> Command {
    let mut c = Command::new(&tool.program);
    c.args(&tool.args);
    if tool.slash {
        let mut s: OsString = src.as_os_str().to_owned();
        s.push("/");
        c.arg(s).arg(dst);
    } else {
        c.arg(src).arg(dst);
    }
    c
}

/// Everything before a timed run of `src` that copies `bytes`, in this order: room on the disk
/// ([`Dests::ensure_room`]), the cache state, the memory state ([`prefault`]). `cold` drops the
/// page cache; anything else is warm: the destinations made so far leave the cache
/// ([`Dests::forget`]), then `src` is read.
///
/// Room comes first: making it deletes kept destinations, which frees blocks (discarded on a
/// `discard` mount) and page cache, and after a bulk delete waits out the slow-create window;
/// until session 28 it ran after the cache step, so those deletes landed right before the timed
/// copy and the wait between reading a warm source and copying it.
pub fn prepare(cache: &str, src: &Path, dests: &mut Dests, bytes: u64) -> Result<()> {
    dests.ensure_room(bytes)?;
    if cache == "cold" {
        cold(Duration::from_secs(2))?;
        dests.forgotten();
    } else {
        // (`forget` has written everything back: `warm`'s `sync` would find nothing.)
        dests.forget();
        warm_read(src)?;
    }
    prefault(bytes);
    Ok(())
}

/// Every entry under `dir` (not `dir` itself), depth first, with its type (symlinks not
/// followed); stops at the first error.
fn walk(dir: &Path, mut f: impl FnMut(&fs::DirEntry, fs::FileType) -> Result<()>) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            }
            f(&e, t)?;
        }
    }
    Ok(())
}

/// Read every file of `dir` so it sits in the page cache ("warm"), then write back whatever the
/// previous runs left dirty: otherwise a run that starts with gigabytes of another run's dirty
/// pages is throttled by their writeback (measured: 8 × 256 MiB warm swung between 0.4 and 2.5 s).
pub fn warm(dir: &Path) -> Result<()> {
    warm_read(dir)?;
    Command::new("sync").status()?;
    Ok(())
}

fn warm_read(dir: &Path) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    walk(dir, |e, t| {
        if t.is_file() {
            if let Ok(mut f) = fs::File::open(e.path()) {
                while f.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            }
        } else if !t.is_dir() {
            // Symlinks, devices, FIFOs: their inodes too.
            let _ = fs::symlink_metadata(e.path());
        }
        Ok(())
    })
}

/// Drop the cached pages of `path`, a regular file, or of every regular file under it, a
/// directory (written back first by the caller: dirty pages are not dropped). A file that cannot
/// be opened is left as it is.
pub fn evict_tree(path: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let evict = |p: &Path| {
        if let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME)
            .open(p)
        {
            // SAFETY: posix_fadvise on an open descriptor owned by `f`; no memory is passed.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => evict(path),
        Ok(m) if m.is_dir() => {
            let _ = walk(path, |e, t| {
                if t.is_file() {
                    evict(&e.path());
                }
                Ok(())
            });
        }
        _ => {}
    }
}

/// Drop the page cache ("cold"; root only), then let freed memory settle.
pub fn cold(settle: Duration) -> Result<()> {
    Command::new("sync").status()?;
    fs::write("/proc/sys/vm/drop_caches", b"3\n").context("drop_caches (needs root)")?;
    std::thread::sleep(settle);
    Ok(())
}

/// Touch and free memory so every run starts from the same memory state: this VM hands freed
/// memory back to its host, and faulting it in again costs up to 2× on the next run. The amount
/// covers what a copy of `bytes` puts in the page cache (source and destination) plus 1 GiB, at
/// most half the available memory ([`prefault_bytes`]): with 1 GiB before each copy of the
/// 2 GiB `large` set, every tool spent 3.1–3.9 CPU-s faulting in the rest, against 0.9–1.1 with
/// 6 GiB (by hand, medians of 5).
///
/// It runs in a child process (`arsync-bench prefault`): a child inherits its parent's peak RSS
/// across fork and exec, so touching the memory here would inflate every measured tool's RSS.
pub fn prefault(bytes: u64) {
    let want = prefault_bytes(bytes, mem_available());
    if let Ok(me) = std::env::current_exe() {
        let _ = Command::new(me)
            .arg("prefault")
            .arg((want >> 20).to_string())
            .status();
    }
}

/// Bytes to touch before a copy of `bytes` with `available` bytes of memory available.
pub fn prefault_bytes(bytes: u64, available: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    (2 * bytes + GIB).min(available / 2).max(GIB)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (0 when unknown).
fn mem_available() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib << 10)
}

/// The body of `arsync-bench prefault [MiB]` (1 GiB by default).
pub fn prefault_here(mib: u64) {
    let mut v = vec![0u8; (mib as usize) << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&v);
}

/// DAMON's proactive reclaim paused for the length of a benchmark, restored when dropped.
///
/// This VM runs a `kdamond` with a `pageout` scheme (`/sys/kernel/mm/damon/admin`): page-cache
/// regions it sees idle are written out every few seconds, so a source read just before a "warm"
/// run can be partly evicted by the time the run starts (measured: 3,445 of the `small` set's
/// 18,559 non-empty files gone 10 s after reading them, and 879 of them read from the disk in one
/// of five warm arsync runs), and the daemon's own CPU lands on whichever tool is running. Every
/// `kdamond` that is `on` is turned `off` here and back `on` when the guard drops (a harness
/// killed by a signal leaves them off: `echo on > .../kdamonds/N/state`).
pub struct Damon {
    paused: Vec<PathBuf>,
    record: PathBuf,
}

/// The sysfs directory of DAMON's kernel daemons.
pub const DAMON_ADMIN: &str = "/sys/kernel/mm/damon/admin/kdamonds";

/// Where a run lists the kdamonds it paused, until it resumes them. A run that is killed never
/// resumes them (its guard is not dropped): the next run of the harness finds the list and
/// resumes them itself. (On tmpfs: gone with a reboot, as the paused state is.)
pub const DAMON_RECORD: &str = "/run/arsync-bench-damon-paused";

impl Damon {
    /// Pause every running kdamond under `admin` (a `kdamonds` directory), listing them in
    /// `record` first; none when `keep` (which also leaves `record` alone: the harness's own
    /// helper processes run with it), or where there is no DAMON or no right to write its state.
    /// Kdamonds that `record` lists and that are still paused (a killed run's) are taken over and
    /// resumed with this run's own.
    pub fn pause(admin: &Path, keep: bool, record: &Path) -> Self {
        if keep {
            return Self {
                paused: Vec::new(),
                record: record.to_path_buf(),
            };
        }
        // The record: the pid of the run that wrote it, then the paused `state` files. Taken
        // over only when that run is gone (a live one, waiting for the same data or not, resumes
        // its own).
        let me = std::process::id();
        let left: Vec<PathBuf> = fs::read_to_string(record)
            .ok()
            .filter(|t| {
                let pid = t.lines().next().and_then(|l| l.trim().parse::<u32>().ok());
                pid.is_some_and(|p| p == me || !process_alive(p))
            })
            .map(|t| {
                t.lines()
                    .skip(1)
                    .map(PathBuf::from)
                    .filter(|p| fs::read_to_string(p).is_ok_and(|s| s.trim() == "off"))
                    .collect()
            })
            .unwrap_or_default();
        if !left.is_empty() {
            eprintln!(
                "[arsync-bench] {} kdamond(s) left paused by a run that did not finish: resumed after this one",
                left.len()
            );
        }
        let mut guard = Self {
            paused: left,
            record: record.to_path_buf(),
        };
        let Ok(dir) = fs::read_dir(admin) else {
            return guard;
        };
        let mut states: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("state"))
            .filter(|p| fs::read_to_string(p).is_ok_and(|s| s.trim() == "on"))
            .collect();
        states.sort();
        let mut listed = guard.paused.clone();
        listed.extend(states.iter().cloned());
        if !states.is_empty() {
            let mut text = format!("{me}\n");
            text.extend(listed.iter().map(|p| format!("{}\n", p.display())));
            if let Err(e) = fs::write(record, text) {
                eprintln!(
                    "[arsync-bench] cannot record the paused DAMON ({}: {e}): a killed run would leave it paused",
                    record.display()
                );
            }
        }
        let before = guard.paused.len();
        for state in states {
            match fs::write(&state, "off\n") {
                Ok(()) => guard.paused.push(state),
                Err(e) => eprintln!(
                    "[arsync-bench] cannot pause DAMON ({}: {e}); warm runs may be partly cold",
                    state.display()
                ),
            }
        }
        if guard.paused.len() > before {
            eprintln!(
                "[arsync-bench] DAMON reclaim paused for the runs ({} kdamond(s))",
                guard.paused.len() - before
            );
        }
        guard
    }

    /// How many kdamonds this guard keeps paused.
    pub fn paused(&self) -> usize {
        self.paused.len()
    }
}

impl Drop for Damon {
    fn drop(&mut self) {
        for state in &self.paused {
            match fs::write(state, "on\n") {
                // (EBUSY: it is running already, turned on by someone else meanwhile.)
                Err(e) if e.raw_os_error() != Some(libc::EBUSY) => eprintln!(
                    "[arsync-bench] could not resume DAMON ({}: {e})",
                    state.display()
                ),
                _ => {}
            }
        }
        if !self.paused.is_empty() {
            let _ = fs::remove_file(&self.record);
        }
    }
}

/// Whether process `pid` runs (a zombie, killed but not yet reaped, does not).
fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        // `pid (comm) S ...`: the state follows the last `)`.
        st.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Where destinations go and when they can be deleted.
pub struct Dests {
    pub root: PathBuf,
    made: Vec<PathBuf>,
    /// Destinations made since the last [`Dests::forget`] (still in the cache).
    cached: Vec<PathBuf>,
    wait: Duration,
    /// The file whose mtime records the last bulk delete (shared by every run of the harness).
    marker: PathBuf,
    /// Held for as long as this run uses `root`: a second run on the same data waits for it
    /// (two runs would delete each other's destinations and time each other's copies).
    _lock: Option<fs::File>,
}

/// Take the lock on `root` (`ROOT.lock` beside it) without waiting: `None` if another process
/// (or another [`Dests`] of this one) holds it.
fn try_lock_dests(root: &Path) -> std::io::Result<Option<fs::File>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.with_extension("lock"))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// `statvfs` of the file system holding `p` (`None` if it fails).
fn statvfs(p: &Path) -> Option<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a live, writable statvfs.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st)
}

/// Free bytes on the file system holding `p` (0 if it cannot be asked).
pub fn free_bytes(p: &Path) -> u64 {
    statvfs(p).map_or(0, |st| st.f_bavail * st.f_frsize)
}

const STATE: &str = "/var/tmp/.arsync-bench-last-bulk-delete";

/// Inodes freed on the destinations' file system between two harness runs, above which the
/// next run takes it that someone deleted a tree outside it and waits out the slow-create window.
const OUTSIDE_DELETES: u64 = 10_000;

/// The device and free-inode count of the file system holding `p`.
fn free_inodes(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(p).ok()?.dev();
    Some((dev, statvfs(p)?.f_ffree))
}

/// The record of the free-inode count a run leaves beside the bulk-delete marker.
fn inode_record(marker: &Path) -> PathBuf {
    let mut p = marker.as_os_str().to_owned();
    p.push(".inodes");
    PathBuf::from(p)
}

/// How many more inodes are free on `root`'s file system than when the last run ended (as
/// `record` says: `DEV FREE`); `None` with no record, or one of another file system.
fn freed_since(record: &Path, root: &Path) -> Option<u64> {
    let text = fs::read_to_string(record).ok()?;
    let mut f = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (dev, then) = (f.next()??, f.next()??);
    let (dev_now, now) = free_inodes(root)?;
    (dev == dev_now).then(|| now.saturating_sub(then))
}

/// Destinations of fewer entries than this are deleted without the slow-create wait.
const FEW_ENTRIES: u64 = 1000;

/// Of `dests` (path, entries, bytes), the ones of fewer than [`FEW_ENTRIES`] entries, largest
/// first, that together free at least `short` bytes; `None` if they cannot.
fn few_entries_first(dests: &[(PathBuf, u64, u64)], short: u64) -> Option<Vec<PathBuf>> {
    let mut few: Vec<&(PathBuf, u64, u64)> = dests.iter().filter(|d| d.1 < FEW_ENTRIES).collect();
    few.sort_by_key(|d| std::cmp::Reverse(d.2));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for (p, _, b) in few {
        if freed >= short {
            break;
        }
        freed += b;
        out.push(p.clone());
    }
    (freed >= short).then_some(out)
}

impl Dests {
    /// Destinations beside the datasets (same file system). Deletes what an earlier run that
    /// did not finish (killed, failed) left there, since a copy into an existing directory nests
    /// inside it and is neither a fair time nor a fair check; then waits out the ext4
    /// slow-create window after an earlier bulk delete (`wait` seconds at most) unless told not
    /// to.
    pub fn new(root: PathBuf, wait: Duration) -> Result<Self> {
        Self::with_marker(root, wait, PathBuf::from(STATE))
    }

    /// [`Dests::new`] recording bulk deletes in `marker`.
    fn with_marker(root: PathBuf, wait: Duration, marker: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root)?;
        let record = inode_record(&marker);
        let lock = match try_lock_dests(&root)? {
            Some(f) => f,
            None => {
                eprintln!(
                    "[arsync-bench] another arsync-bench run is using {}: waiting for it to end",
                    root.display()
                );
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(root.with_extension("lock"))?;
                f.lock()?;
                f
            }
        };
        // A delete made outside the harness (by hand, a build, a test suite) puts the next
        // creates in ext4's slow window as much as the harness's own (session 28's first `small`
        // rows): more inodes free now than when the last run ended means one happened. When is
        // not known, so the whole window is waited from now. (A delete that creates made up
        // for in the meantime goes unseen.)
        if let Some(n) = freed_since(&record, &root).filter(|&n| n >= OUTSIDE_DELETES) {
            eprintln!(
                "[arsync-bench] {n} more inodes are free on this file system than when the last arsync-bench run ended (a delete made outside it): waiting as after a bulk delete (--wait 0 does not)"
            );
            fs::write(&marker, b"")?;
        }
        let left: Vec<PathBuf> = fs::read_dir(&root)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        if !left.is_empty() {
            eprintln!(
                "[arsync-bench] deleting {} destinations an earlier run left in {}",
                left.len(),
                root.display()
            );
            let mut leftovers = Self {
                root: root.clone(),
                made: left,
                cached: Vec::new(),
                wait,
                marker: marker.clone(),
                _lock: None,
            };
            leftovers.delete_all();
        }
        if let Ok(m) = fs::metadata(&marker)
            && let Ok(age) = SystemTime::now().duration_since(m.modified()?)
            && age < wait
        {
            eprintln!(
                "[arsync-bench] waiting {:.0} s after the last bulk delete (slow inode allocation)",
                (wait - age).as_secs_f64()
            );
            std::thread::sleep(wait - age);
        }
        Ok(Self {
            root,
            made: Vec::new(),
            cached: Vec::new(),
            wait,
            marker,
            _lock: Some(lock),
        })
    }

    /// Make sure a copy of `bytes` fits with room to spare. If not, first delete kept
    /// destinations of few entries (full-size copies of `large` or `sparse`), largest first:
    /// freeing a handful of inodes does not slow later creates, so there is no wait. Only if that
    /// is not enough, delete every kept destination (outside any timed run) and wait out the
    /// slow-create window before going on.
    pub fn ensure_room(&mut self, bytes: u64) -> Result<()> {
        let need = bytes + bytes / 5 + (2 << 30);
        let free = free_bytes(&self.root);
        if free >= need {
            return Ok(());
        }
        let sized: Vec<(PathBuf, u64, u64)> = self
            .made
            .iter()
            .map(|p| {
                let (f, d, l, b, _) = census(p).unwrap_or((u64::MAX, 0, 0, 0, 0));
                (p.clone(), f.saturating_add(d).saturating_add(l), b)
            })
            .collect();
        if let Some(few) = few_entries_first(&sized, need - free) {
            eprintln!(
                "[arsync-bench] {:.1} GB free, {:.1} GB needed: deleting {} kept destinations of few entries (no wait)",
                free as f64 / 1e9,
                need as f64 / 1e9,
                few.len()
            );
            for p in &few {
                remove(p);
            }
            self.made.retain(|p| !few.contains(p));
            if free_bytes(&self.root) >= need {
                return Ok(());
            }
        }
        eprintln!(
            "[arsync-bench] {:.1} GB free, {:.1} GB needed: deleting {} kept destinations",
            free_bytes(&self.root) as f64 / 1e9,
            need as f64 / 1e9,
            self.made.len()
        );
        self.delete_all();
        anyhow::ensure!(
            free_bytes(&self.root) >= need,
            "not enough space on {} for a copy of {:.1} GB",
            self.root.display(),
            bytes as f64 / 1e9
        );
        if !self.wait.is_zero() {
            eprintln!(
                "[arsync-bench] waiting {} s after the bulk delete",
                self.wait.as_secs()
            );
            std::thread::sleep(self.wait);
        }
        Ok(())
    }

    /// A copy of `entries` entries in `path` (from [`Dests::next`]) has been timed and checked.
    /// A copy of fewer than [`FEW_ENTRIES`] entries (a `large` or `sparse` set: a few big files)
    /// is deleted now, outside any timed run: a handful of freed inodes does not slow later
    /// creates, and keeping every such copy filled this disk to 98% over a full run (every tool
    /// slower on it). Copies of many entries are kept until a bulk delete, as before. Returns
    /// whether the copy was deleted.
    pub fn done(&mut self, path: &Path, entries: u64) -> bool {
        if entries >= FEW_ENTRIES {
            return false;
        }
        remove(path);
        self.made.retain(|p| p != path);
        self.cached.retain(|p| p != path);
        true
    }

    /// A fresh, non-existing destination path.
    pub fn next(&mut self, label: &str) -> PathBuf {
        let mut n = self.made.len();
        let mut p = self.root.join(format!("{label}-{n}"));
        while fs::symlink_metadata(&p).is_ok() {
            n += 1;
            p = self.root.join(format!("{label}-{n}"));
        }
        self.made.push(p.clone());
        self.cached.push(p.clone());
        p
    }

    /// Take the destinations made so far out of the cache before a warm run, so that every run
    /// starts with only its source cached. Kept destinations stay on disk (deleting them would
    /// slow the next creates), but their cached inodes would not go: a kernel keeps an inode with
    /// page-cache pages out of its shrinker, so they pile up run after run. This VM sized its
    /// inode hash at boot for 1 GiB (65,536 buckets); with 2.5 million cached inodes every
    /// create walked a chain of about 40 under the global `inode_hash_lock`
    /// (`insert_inode_locked`: 17% of arsync's samples on `flat`, with both cores waiting on
    /// the directory lock it was held under), and each tool's time depended on how many copies
    /// ran before it (`cp -a` on `flat`: 2.36 s, then 2.51, 2.66, 2.70 over five repetitions).
    ///
    /// So: write everything back, drop each file's pages (`POSIX_FADV_DONTNEED`), then drop
    /// unused dentries and inodes (`drop_caches` 2, root only; the metadata blocks stay
    /// cached). The source's files keep their pages and so their inodes; its directories and
    /// empty files are read back by [`warm`].
    pub fn forget(&mut self) {
        let _ = Command::new("sync").status();
        for p in self.cached.drain(..) {
            evict_tree(&p);
        }
        if let Err(e) = fs::write("/proc/sys/vm/drop_caches", b"2\n") {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                eprintln!(
                    "[arsync-bench] cannot drop cached inodes ({e}; needs root): earlier destinations stay cached"
                )
            });
        }
    }

    /// After a cold drop nothing made so far is cached.
    pub fn forgotten(&mut self) {
        self.cached.clear();
    }

    /// Delete every destination (outside the timed runs) and record when.
    pub fn delete_all(&mut self) {
        self.cached.clear();
        for p in self.made.drain(..) {
            remove(&p);
        }
        let _ = fs::write(&self.marker, b"");
    }
}

impl Drop for Dests {
    /// Leave the file system's free-inode count for the next run (see [`freed_since`]).
    fn drop(&mut self) {
        if let Some((dev, free)) = free_inodes(&self.root) {
            let _ = fs::write(inode_record(&self.marker), format!("{dev} {free}\n"));
        }
    }
}

/// Delete a destination (a tree or a single file), read-only directories in it included.
fn remove(p: &Path) {
    make_writable(p);
    let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
}

fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if fs::symlink_metadata(&d)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
}

/// Files, directories, symlinks and bytes of a tree, and the bytes of data its files hold: their
/// sizes less the holes of sparse files (measured with `SEEK_DATA`/`SEEK_HOLE`). The data is
/// what a copy that keeps holes moves, what rates and the read ceiling are reckoned on; the
/// sizes are the room a copy that fills the holes needs.
pub fn census(dir: &Path) -> Result<(u64, u64, u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut files, mut dirs, mut links, mut bytes, mut data) = (0, 1, 0, 0, 0);
    walk(dir, |e, t| {
        if t.is_dir() {
            dirs += 1;
        } else if t.is_symlink() {
            links += 1;
        } else {
            files += 1;
            let m = e.metadata()?;
            bytes += m.len();
            // (A file with fewer blocks than its size is measured for its holes.)
            data += if t.is_file() && m.blocks() * 512 < m.len() {
                data_of(&e.path(), m.len())?
            } else {
                m.len()
            };
        }
        Ok(())
    })?;
    Ok((files, dirs, links, bytes, data))
}

/// The bytes of `path` (of `len` bytes) outside its holes.
fn data_of(path: &Path, len: u64) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path)?;
    let (mut at, mut data) = (0u64, 0u64);
    while at < len {
        // SAFETY: lseek on an fd this function owns.
        let start = unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
        if start < 0 {
            // ENXIO: no data past `at`; anything else: the file system cannot say, all data.
            let e = std::io::Error::last_os_error();
            return Ok(if e.raw_os_error() == Some(libc::ENXIO) {
                data
            } else {
                len
            });
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(f.as_raw_fd(), start, libc::SEEK_HOLE) };
        let end = if end < 0 { len } else { (end as u64).min(len) };
        data += end.saturating_sub(start as u64);
        at = end;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file counts its data, not its size; a plain one (and a small one) its size.
    #[test]
    fn data_bytes_leave_out_the_holes() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::Builder::new()
            .prefix("arsync-bench-data-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let f = fs::File::create(d.path().join("sparse")).unwrap();
        f.write_all_at(&[7u8; 8192], 0).unwrap();
        f.write_all_at(&[9u8; 4096], 32 << 20).unwrap();
        f.set_len(64 << 20).unwrap();
        fs::write(d.path().join("plain"), vec![1u8; 10_000]).unwrap();
        fs::write(d.path().join("tiny"), b"x").unwrap();
        let (_, _, _, sizes, data) = census(d.path()).unwrap();
        assert_eq!(sizes, (64 << 20) + 10_001);
        assert_eq!(data, 8192 + 4096 + 10_001);
    }

    /// When the disk runs short, full-size copies of few files go first (largest first, no
    /// wait); trees of many files only when those cannot free enough.
    #[test]
    fn room_is_made_from_few_entry_destinations_first() {
        const G: u64 = 1 << 30;
        let d = |name: &str, entries: u64, bytes: u64| (PathBuf::from(name), entries, bytes);
        let dests = [
            d("small-0", 22_223, G / 10),
            d("sparse-cpz-1", 9, 2 * G),
            d("sparse-arsync-2", 9, 24 << 20),
            d("sparse-fcp-3", 9, 2 * G),
            d("large-xcp-4", 9, 2 * G + 1),
        ];
        assert_eq!(
            few_entries_first(&dests, 3 * G),
            Some(vec![
                PathBuf::from("large-xcp-4"),
                PathBuf::from("sparse-cpz-1")
            ])
        );
        assert_eq!(
            few_entries_first(&dests, G),
            Some(vec![PathBuf::from("large-xcp-4")])
        );
        // All the few-entry ones together are not enough: the caller deletes everything.
        assert_eq!(few_entries_first(&dests, 7 * G), None);
        assert_eq!(few_entries_first(&dests[..1], 1), None);
    }

    /// Enough memory is touched to cover the copy's page cache, within limits.
    #[test]
    fn prefault_covers_the_copy_within_half_the_memory() {
        const G: u64 = 1 << 30;
        assert_eq!(prefault_bytes(60 << 20, 20 * G), G + (120 << 20));
        assert_eq!(prefault_bytes(2 * G, 20 * G), 5 * G);
        assert_eq!(prefault_bytes(20 * G, 20 * G), 10 * G);
        assert_eq!(prefault_bytes(2 * G, 0), G);
        assert!(mem_available() > 0);
    }

    /// Running kdamonds are paused for the runs and resumed afterwards; stopped ones are left
    /// alone, and `keep` touches nothing.
    #[test]
    fn damon_is_paused_for_the_runs_and_resumed_after() {
        let tmp = tempfile::tempdir().unwrap();
        let admin = tmp.path();
        for (k, state) in [("0", "on\n"), ("1", "off\n"), ("2", "on\n")] {
            fs::create_dir(admin.join(k)).unwrap();
            fs::write(admin.join(k).join("state"), state).unwrap();
        }
        fs::write(admin.join("nr_kdamonds"), "3\n").unwrap();
        let read = |k: &str| fs::read_to_string(admin.join(k).join("state")).unwrap();
        let record = tmp.path().join("record");
        {
            let g = Damon::pause(admin, true, &record);
            assert_eq!(g.paused(), 0);
            assert_eq!(read("0"), "on\n");
        }
        {
            let g = Damon::pause(admin, false, &record);
            assert_eq!(g.paused(), 2);
            assert_eq!(
                [read("0"), read("1"), read("2")],
                ["off\n", "off\n", "off\n"]
            );
            assert!(record.exists(), "the paused ones are listed while paused");
        }
        assert_eq!([read("0"), read("1"), read("2")], ["on\n", "off\n", "on\n"]);
        assert!(!record.exists());
        assert_eq!(
            Damon::pause(&admin.join("none"), false, &record).paused(),
            0
        );
        // A run killed while they were paused (its guard never dropped): the next run takes
        // them over and resumes them when it ends; `1`, stopped by someone else, stays stopped.
        std::mem::forget(Damon::pause(admin, false, &record));
        assert_eq!(
            [read("0"), read("1"), read("2")],
            ["off\n", "off\n", "off\n"]
        );
        {
            let g = Damon::pause(admin, false, &record);
            assert_eq!(g.paused(), 2);
        }
        assert_eq!([read("0"), read("1"), read("2")], ["on\n", "off\n", "on\n"]);
        assert!(!record.exists());
        // `keep` (also what the harness's helper processes run with, during a run) touches
        // neither the kdamonds nor the record.
        std::mem::forget(Damon::pause(admin, false, &record));
        drop(Damon::pause(admin, true, &record));
        assert_eq!(
            [read("0"), read("1"), read("2")],
            ["off\n", "off\n", "off\n"]
        );
        assert!(record.exists());
        drop(Damon::pause(admin, false, &record));
        assert_eq!([read("0"), read("1"), read("2")], ["on\n", "off\n", "on\n"]);
        assert!(!record.exists());
    }

    /// Pages of `path` in the page cache (`mincore` over a mapping of it).
    fn resident(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of an open file, `len` bytes, unmapped below; not
        // dereferenced.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(m, libc::MAP_FAILED);
        // SAFETY: `m` maps `len` bytes; `vec` has one byte per page of them.
        let r = unsafe { libc::mincore(m, len, vec.as_mut_ptr()) };
        // SAFETY: the mapping made above, not used after.
        unsafe { libc::munmap(m, len) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// Before a warm run the destinations made so far leave the cache and the source stays.
    #[test]
    fn forget_takes_destinations_out_of_the_cache_and_leaves_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY: a zeroed statfs filled by the call; the path is a valid C string.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut sfs) }, 0);
        if sfs.f_type == libc::TMPFS_MAGIC {
            eprintln!(
                "SKIP forget_takes_destinations_out_of_the_cache_and_leaves_the_source: {} is tmpfs, whose pages cannot be dropped",
                tmp.path().display()
            );
            return;
        }
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("s"), vec![7u8; 1 << 20]).unwrap();
        let mut d = Dests::with_marker(
            tmp.path().join(".bench-dst"),
            Duration::ZERO,
            tmp.path().join("marker"),
        )
        .unwrap();
        let a = d.next("a");
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("sub/f"), vec![1u8; 1 << 20]).unwrap();
        fs::write(a.join("g"), vec![2u8; 256 << 10]).unwrap();
        let b = d.next("b");
        fs::write(&b, vec![3u8; 64 << 10]).unwrap();
        for p in [src.join("s"), a.join("sub/f"), a.join("g"), b.clone()] {
            assert!(
                resident(&p) > 0,
                "{} was not cached to begin with",
                p.display()
            );
        }
        d.forget();
        assert_eq!(resident(&a.join("sub/f")), 0);
        assert_eq!(resident(&a.join("g")), 0);
        assert_eq!(resident(&b), 0);
        assert_eq!(resident(&src.join("s")), 256, "the source left the cache");
        // Only what was made since: a destination read again stays cached.
        let c = d.next("c");
        fs::write(&c, vec![4u8; 64 << 10]).unwrap();
        fs::read(a.join("g")).unwrap();
        d.forget();
        assert_eq!(resident(&c), 0);
        assert_eq!(resident(&a.join("g")), 64);
    }

    /// A record's writer counts as gone once it has exited, even before it is reaped.
    #[test]
    fn a_zombie_is_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut c = Command::new("true").spawn().unwrap();
        // Not reaped until the end: once it exits it is a zombie.
        let start = Instant::now();
        while process_alive(c.id()) && start.elapsed() < Duration::from_secs(60) {
            std::thread::yield_now();
        }
        assert!(!process_alive(c.id()), "a zombie counted as running");
        c.wait().unwrap();
    }

    /// Two runs on the same data never overlap: the second waits for the first (they would
    /// delete each other's destinations); the lock goes with the run.
    #[test]
    fn one_run_at_a_time_uses_the_destinations() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(".bench-dst");
        let marker = tmp.path().join("marker");
        let d = Dests::with_marker(root.clone(), Duration::ZERO, marker).unwrap();
        assert!(
            try_lock_dests(&root).unwrap().is_none(),
            "free while a run uses the destinations"
        );
        drop(d);
        assert!(try_lock_dests(&root).unwrap().is_some());
    }

    /// A run that was killed leaves its destinations; the next run must not copy into them (a
    /// copy into an existing directory nests inside it: a wrong time and a wrong verdict).
    #[test]
    fn destinations_left_by_a_killed_run_are_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(".bench-dst");
        let marker = tmp.path().join("marker");
        // What a killed run leaves: its first destinations, one with content.
        fs::create_dir_all(root.join("deep-cp-a-warm-0/d/e")).unwrap();
        fs::write(root.join("deep-cp-a-warm-0/d/e/f"), b"x").unwrap();
        fs::create_dir_all(root.join("deep-arsync-warm-1")).unwrap();
        let mut d = Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "leftovers deleted");
        assert!(
            marker.exists(),
            "the bulk delete is recorded for the slow-create wait"
        );
        let a = d.next("deep-cp-a-warm");
        assert!(!a.exists());
        // A name that exists by the time it is handed out (another process, a stale mount) is
        // skipped, not reused.
        fs::create_dir_all(root.join("deep-arsync-warm-1")).unwrap();
        let b = d.next("deep-arsync-warm");
        assert!(!b.exists(), "{}", b.display());
        assert_ne!(a, b);
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        d.delete_all();
        assert!(!a.exists() && !b.exists());
        // What it did not make it leaves to the next run's start.
        assert!(root.join("deep-arsync-warm-1").exists());
    }

    /// A few-entry copy is deleted right after its run, without recording a bulk delete (no
    /// wait follows); a copy of many entries is kept for the next bulk delete.
    #[test]
    fn few_entry_copies_go_at_once_and_many_entry_copies_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(".bench-dst");
        let marker = tmp.path().join("marker");
        let mut d = Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap();
        let big = d.next("large-cp-a-warm");
        fs::create_dir_all(big.join("sub")).unwrap();
        fs::write(big.join("sub/f"), vec![7u8; 1 << 16]).unwrap();
        // A read-only directory inside, as `cp -a` copies one.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(big.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        let many = d.next("small-cp-a-warm");
        fs::create_dir_all(&many).unwrap();
        assert!(d.done(&big, 3));
        assert!(!big.exists(), "deleted at once");
        assert!(!marker.exists(), "no bulk delete recorded, so no wait");
        assert!(!d.done(&many, FEW_ENTRIES));
        assert!(many.exists(), "kept for the bulk delete");
        assert_eq!(d.made, vec![many.clone()]);
        assert_eq!(d.cached, vec![many.clone()]);
        d.delete_all();
        assert!(!many.exists());
    }

    /// Many inodes freed between two runs by someone else make the next run wait as after its
    /// own bulk delete; a run's own deletes, few outside ones, and no record do not. On a
    /// private tmpfs (root; skipped with the reason otherwise), so that nothing else frees or
    /// takes inodes there meanwhile.
    #[test]
    fn a_delete_made_outside_the_harness_is_waited_out() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIP a_delete_made_outside_the_harness_is_waited_out: mounting a tmpfs needs root"
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("fs");
        fs::create_dir(&mnt).unwrap();
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,nr_inodes=100000", "none"])
            .arg(&mnt));
        // Unmounted however the test ends.
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(mnt.clone());
        let root = mnt.join(".bench-dst");
        let marker = mnt.join("marker");
        let stamp = |m: &Path| fs::metadata(m).and_then(|m| m.modified()).ok();
        let outside = mnt.join("outside");
        let make = |n: u64| {
            fs::create_dir_all(&outside).unwrap();
            for i in 0..n {
                fs::write(outside.join(i.to_string()), b"").unwrap();
            }
        };
        // No record yet: no wait, and the run leaves one.
        make(OUTSIDE_DELETES + 100);
        drop(Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap());
        assert!(stamp(&marker).is_none(), "no record, no wait");
        assert!(inode_record(&marker).exists());
        // A run's own destinations, however many, are not someone else's delete.
        let mut d = Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap();
        let own = d.next("small-arsync-warm");
        fs::create_dir_all(&own).unwrap();
        for i in 0..OUTSIDE_DELETES + 100 {
            fs::write(own.join(i.to_string()), b"").unwrap();
        }
        d.delete_all();
        let after_own = stamp(&marker).expect("its own bulk delete is recorded");
        drop(d);
        drop(Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap());
        assert_eq!(
            stamp(&marker),
            Some(after_own),
            "its own delete is not counted again"
        );
        // Someone deletes a tree between two runs: the next run restarts the window.
        fs::remove_dir_all(&outside).unwrap();
        let _ = fs::remove_file(&marker);
        drop(Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap());
        assert!(
            stamp(&marker).is_some(),
            "the outside delete restarts the window"
        );
        // Fewer than the threshold: nothing.
        let _ = fs::remove_file(&marker);
        make(OUTSIDE_DELETES / 2);
        drop(Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap());
        fs::remove_dir_all(&outside).unwrap();
        drop(Dests::with_marker(root.clone(), Duration::ZERO, marker.clone()).unwrap());
        assert!(stamp(&marker).is_none(), "a small delete is not waited for");
    }
}
