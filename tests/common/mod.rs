//! Shared helpers of the black-box tests: run the built `arsync` (and rsync as an oracle), build
//! test trees with exact attributes, and the tree-diff helper.

#![allow(dead_code)]

pub mod treediff;

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn arsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arsync"))
}

/// Run arsync with `args`, returning its output.
pub fn run(args: &[&OsStr]) -> Output {
    arsync().args(args).output().expect("run arsync")
}

/// Whether the binary under test has the test-only fault-injection hooks (`--features
/// arsync/test-hooks`, which the test command builds with).
pub fn has_hooks() -> bool {
    let out = arsync()
        .arg("--version")
        .output()
        .expect("run arsync --version");
    String::from_utf8_lossy(&out.stdout).contains("test-hooks")
}

/// Run `arsync FLAGS... SRC/ DST` (the contents of `src` into `dst`).
pub fn copy_contents(flags: &[&str], src: &Path, dst: &Path) -> Output {
    let src_arg = format!("{}/", src.display());
    let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
    args.push(OsStr::new(&src_arg));
    args.push(dst.as_os_str());
    run(&args)
}

/// Set extended attribute `name` on `p` (not following a symlink).
pub fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid path, name and value buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Exit code of an output (signals become -1).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Record that a test skipped part of its work, with the reason: printed, and appended to the
/// file named by `ARSYNC_TEST_SKIPLOG` (the test command counts those lines).
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
    if let Some(p) = std::env::var_os("ARSYNC_TEST_SKIPLOG") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(p) {
            let _ = writeln!(f, "SKIP {test}: {reason}");
        }
    }
}

/// Run arsync with `args` in `cwd` under `strace -f`, tracing the system calls `calls` (strace's
/// `-e trace=` list); asserts that it succeeded and returns the trace, one call a line (a call
/// that other threads' calls interrupt is split over an `unfinished` and a `resumed` line).
pub fn traced_run<I, S>(calls: &str, cwd: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let trace = cwd.join("strace.out");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", &format!("trace={calls}"), "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_arsync"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run strace");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    fs::read_to_string(&trace).expect("the trace")
}

/// rsync must be there when root (the test command installs it); otherwise a test may skip.
pub fn require_rsync(test: &str) -> bool {
    if have("rsync") {
        return true;
    }
    assert!(
        !is_root(),
        "rsync is missing: the test command installs it (apt-get install rsync)"
    );
    skip(
        test,
        "rsync is not installed and we are not root to install it",
    );
    false
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

/// Set atime/mtime with nanoseconds, without following symlinks.
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let ts = [
        libc::timespec {
            tv_sec: sec - 1000,
            tv_nsec: (nsec + 7) % 1_000_000_000,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    let c = cpath(p);
    // SAFETY: valid path and timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let c = cpath(p);
    // SAFETY: valid path.
    let r = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    assert_eq!(
        r,
        0,
        "lchown {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mknod(p: &Path, mode: u32, dev: u64) {
    let c = cpath(p);
    // SAFETY: valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mkfifo(p: &Path) {
    mknod(p, libc::S_IFIFO | 0o644, 0);
}

pub fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).expect("write");
}

/// Deterministic content of `len` bytes.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Options for [`build_tree`].
pub struct TreeOpts {
    /// Add root-only entries (a char device, files owned by other uids).
    pub root_only: bool,
    /// Files in the wide directory.
    pub wide: usize,
    /// Depth of the deep chain.
    pub depth: usize,
}

/// Build the standard fidelity tree under `root` (which must not exist). Every entry gets an
/// mtime with a nanosecond part that is not a multiple of 1000; directory times are set last.
pub fn build_tree(root: &Path, o: &TreeOpts) {
    fs::create_dir_all(root).unwrap();
    let mut t = 1_600_000_000i64;
    let mut stamp = |p: &Path| {
        t += 3607;
        set_times(p, t, (t % 1_000_000) * 997 + 123);
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let d = |p: &Path, dirs: &mut Vec<PathBuf>| {
        fs::create_dir_all(p).unwrap();
        dirs.push(p.to_path_buf());
    };
    // Empty file and empty directory.
    write(&root.join("empty"), b"");
    stamp(&root.join("empty"));
    d(&root.join("emptydir"), &mut dirs);
    // Files of several sizes, including ones taking the io_uring path (> 256 KiB).
    for (i, len) in [
        1usize,
        100,
        4095,
        4096,
        65_537,
        300_000,
        3 * 1024 * 1024 + 17,
    ]
    .iter()
    .enumerate()
    {
        let p = root.join(format!("data{i}.bin"));
        write(&p, &content(i as u64 + 1, *len));
        stamp(&p);
    }
    // Modes: 0000, setuid, setgid, setuid+setgid exec, 0444, 0777.
    for (name, mode) in [
        ("mode0000", 0o000),
        ("setuid", 0o4755),
        ("setgid", 0o2755),
        ("suidsgid", 0o6711),
        ("ro", 0o444),
        ("all", 0o777),
        ("odd", 0o1604),
    ] {
        let p = root.join(name);
        write(&p, name.as_bytes());
        chmod(&p, mode);
        stamp(&p);
    }
    // Directories with restrictive modes and children.
    d(&root.join("ro555/sub"), &mut dirs);
    dirs.push(root.join("ro555"));
    write(&root.join("ro555/child"), b"in a 0555 dir");
    stamp(&root.join("ro555/child"));
    write(&root.join("ro555/sub/deeper"), b"deeper");
    stamp(&root.join("ro555/sub/deeper"));
    d(&root.join("private700"), &mut dirs);
    write(&root.join("private700/secret"), b"secret");
    chmod(&root.join("private700/secret"), 0o600);
    stamp(&root.join("private700/secret"));
    d(&root.join("sticky"), &mut dirs);
    write(&root.join("sticky/f"), b"sticky child");
    stamp(&root.join("sticky/f"));
    d(&root.join("setgiddir"), &mut dirs);
    write(&root.join("setgiddir/f"), b"x");
    stamp(&root.join("setgiddir/f"));
    // Symlinks: relative, absolute, dangling, to a directory, a self-loop.
    d(&root.join("links"), &mut dirs);
    for (name, target) in [
        ("rel", "../data0.bin"),
        ("abs", "/etc/hostname"),
        ("dangling", "does/not/exist"),
        ("todir", "../emptydir"),
        ("loop", "loop"),
    ] {
        let p = root.join("links").join(name);
        symlink(target, &p).unwrap();
        stamp(&p);
    }
    // A FIFO and a socket.
    d(&root.join("special"), &mut dirs);
    mkfifo(&root.join("special/fifo"));
    stamp(&root.join("special/fifo"));
    {
        let sock = root.join("special/sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind socket");
        drop(l);
        stamp(&sock);
    }
    // Names as bytes: non-UTF-8, newline, 255 bytes, spaces and unicode.
    d(&root.join("names"), &mut dirs);
    for name in [
        &b"caf\xe9-latin1"[..],
        b"new\nline",
        b"with space",
        "ünïcødé".as_bytes(),
        &[b'n'; 255][..],
    ] {
        let p = root.join("names").join(OsStr::from_bytes(name));
        write(&p, name);
        stamp(&p);
    }
    {
        let p = root.join("names").join(OsStr::from_bytes(b"dir\xff"));
        d(&p, &mut dirs);
        write(&p.join("inside"), b"inside a non-UTF-8 dir");
        stamp(&p.join("inside"));
    }
    // A deep chain and a wide directory.
    let mut deep = root.join("deep");
    for i in 0..o.depth {
        deep = deep.join(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write(&deep.join("leaf"), b"bottom");
    stamp(&deep.join("leaf"));
    let mut p = deep.clone();
    while p != *root {
        dirs.push(p.clone());
        p.pop();
    }
    d(&root.join("wide"), &mut dirs);
    for i in 0..o.wide {
        let p = root.join("wide").join(format!("f{i:05}"));
        write(&p, &content(i as u64 + 1000, i % 700));
        stamp(&p);
    }
    if o.root_only {
        mknod(
            &root.join("special/null"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        );
        stamp(&root.join("special/null"));
        mknod(
            &root.join("special/blk"),
            libc::S_IFBLK | 0o640,
            libc::makedev(7, 200),
        );
        stamp(&root.join("special/blk"));
        d(&root.join("owned"), &mut dirs);
        for (name, uid, gid) in [
            ("u1000", 1000, 1000),
            ("u12345", 12345, 54321),
            ("g7", 0, 7),
        ] {
            let p = root.join("owned").join(name);
            write(&p, name.as_bytes());
            lchown(&p, uid, gid);
            stamp(&p);
        }
        let sgid = root.join("owned/setuid-other");
        write(&sgid, b"setuid owned by 1000");
        lchown(&sgid, 1000, 1000);
        chmod(&sgid, 0o4750);
        stamp(&sgid);
        let l = root.join("owned/link-other");
        symlink("u1000", &l).unwrap();
        lchown(&l, 1000, 1001);
        stamp(&l);
        let od = root.join("owned/dir-other");
        d(&od, &mut dirs);
        lchown(&od, 2000, 2001);
        let f = root.join("special/fifo-other");
        mkfifo(&f);
        lchown(&f, 3000, 3001);
        stamp(&f);
    }
    // Directory modes and times last, deepest first (the set order does not touch parents).
    dirs.push(root.to_path_buf());
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    dirs.dedup();
    for p in &dirs {
        stamp(p);
    }
    chmod(&root.join("ro555/sub"), 0o555);
    chmod(&root.join("ro555"), 0o555);
    chmod(&root.join("private700"), 0o700);
    chmod(&root.join("sticky"), 0o1777);
    chmod(&root.join("setgiddir"), 0o2775);
    // chmod does not change mtime; re-stamp nothing.
}

/// Make every directory under `p` writable again so a temp dir can be removed.
pub fn make_removable(p: &Path) {
    if let Ok(list) = treediff::walk(p) {
        for r in list {
            let f = p.join(r);
            if let Ok(m) = fs::symlink_metadata(&f)
                && m.is_dir()
            {
                let _ = fs::set_permissions(&f, fs::Permissions::from_mode(0o755));
            }
        }
    }
}

/// A temp dir under /var/tmp (a real disk file system, not tmpfs) that cleans itself up.
pub struct Scratch(pub tempfile::TempDir);

impl Scratch {
    pub fn new() -> Self {
        let base = Path::new("/var/tmp");
        let dir = if base.is_dir() {
            tempfile::Builder::new()
                .prefix("arsync-test-")
                .tempdir_in(base)
        } else {
            tempfile::Builder::new().prefix("arsync-test-").tempdir()
        }
        .expect("tempdir");
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_removable(self.0.path());
    }
}

/// Assert that two trees are identical for `check`, printing the differences if not.
#[track_caller]
pub fn assert_same(a: &Path, b: &Path, check: treediff::Check) {
    let d = treediff::diff(a, b, check);
    assert!(
        d.is_empty(),
        "trees differ ({} differences):\n{}",
        d.len(),
        d.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Run a command that must succeed.
pub fn sh(cmd: &str, args: &[&OsStr]) -> std::process::Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loop-mounted file system; unmounted and detached on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(img: &Path, size_mb: u64, mkfs: &[&str], dir: &Path) -> Mount {
        let f = fs::File::create(img).unwrap();
        f.set_len(size_mb << 20).unwrap();
        drop(f);
        let mut args: Vec<&OsStr> = mkfs[1..].iter().map(OsStr::new).collect();
        args.push(img.as_os_str());
        sh(mkfs[0], &args);
        fs::create_dir_all(dir).unwrap();
        sh(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("loop"),
                img.as_os_str(),
                dir.as_os_str(),
            ],
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Serialises the tests that mount (a lock file held for the test's duration).
pub struct MountLock(#[allow(dead_code)] fs::File);

pub fn mount_lock() -> MountLock {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/var/tmp/arsync-test-mount.lock")
        .unwrap();
    // SAFETY: flock on a valid fd; blocks until the lock is ours.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    MountLock(f)
}

/// A child process killed and reaped when dropped: a test that fails while it runs leaves no
/// orphan behind.
pub struct Reap(pub std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `arsync ARGS SRC/ DST`, wait until `ready(pid)` says the copy is under way, then send
/// `sig` and return how it ended. Panics if the run ended first (the race was not hit); the child
/// is killed if the test fails while it runs, so no orphan outlives the test.
pub fn signal_mid_copy(
    args: &[&str],
    src: &Path,
    dst: &Path,
    sig: i32,
    ready: impl Fn(u32) -> bool,
) -> std::process::ExitStatus {
    let mut child = Reap(
        arsync()
            .args(args)
            .arg(format!("{}/", src.display()))
            .arg(dst)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn arsync"),
    );
    let pid = child.0.id();
    let start = std::time::Instant::now();
    while !ready(pid) {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the copy ended ({status}) before it could be interrupted");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the copy never got under way"
        );
        std::thread::yield_now();
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    child.0.wait().expect("wait for arsync")
}

/// Wait for `child` at most `secs` seconds; a run that takes longer is killed and the test fails
/// (a hang must not hang the test suite).
pub fn wait_bounded(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the copy hung (killed after {secs} s)");
        }
        std::thread::yield_now();
    }
}

/// arsync's temporaries and partial files under `root` (what a finished copy never has).
pub fn temporaries(root: &Path) -> Vec<PathBuf> {
    treediff::walk(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("~arsync"))
        .collect()
}

/// The scratch directory `base` opened to everyone and a copy of the binary in it, where
/// uid 65534 (the tests' unprivileged user, through setpriv) can run it.
pub fn reachable_binary(base: &Path) -> PathBuf {
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = base.join("arsync");
    fs::copy(env!("CARGO_BIN_EXE_arsync"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A command running `tool` as uid and gid 65534 (through setpriv) when this process is root,
/// else as the calling user: either way not root.
pub fn as_user(tool: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(tool);
        c
    } else {
        Command::new(tool)
    }
}

/// Run `tool FLAGS SRC/ DST` as uid and gid 65534 (through setpriv).
pub fn as_nobody(tool: &Path, flags: &[&str], src: &Path, dst: &Path) -> Output {
    assert!(is_root(), "as_nobody needs root");
    as_user(tool)
        .args(flags)
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .output()
        .unwrap()
}

/// [`give_to_nobody`], and `base` itself open to everyone (0777), so that the unprivileged
/// user can make its destinations there.
pub fn open_to_nobody(base: &Path) {
    give_to_nobody(base);
    chmod(base, 0o777);
}

/// Give `root` and everything below it to uid and gid 65534 (the tests' unprivileged user),
/// symlinks themselves rather than what they point to.
pub fn give_to_nobody(root: &Path) {
    lchown(root, 65534, 65534);
    if fs::symlink_metadata(root).unwrap().is_dir() {
        for e in fs::read_dir(root).unwrap() {
            give_to_nobody(&e.unwrap().path());
        }
    }
}
