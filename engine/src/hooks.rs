//! Test-only fault injection (cargo feature `test-hooks`, off in normal builds): makes the races
//! of the reliability tests deterministic. Without the feature every hook is an empty inline
//! function.
//!
//! `ARSYNC_TEST_HOOK="POINT=NAME:ACTION[;...]"` fires ACTION once, the first time the engine
//! reaches POINT for an entry called NAME:
//!
//! | point | where | entry |
//! |---|---|---|
//! | `before-open` | a source file is about to be looked at (stat/open) | the file |
//! | `after-stat` | a source file is open and measured, before its data moves | the file |
//! | `after-batch` | a source directory's first batch of names was read | the directory |
//! | `before-enter` | a destination directory is about to be opened or made | the directory |
//! | `after-write` | a file's data is written, before `--verify` reads it back | the file (the only action is `flip`: its first byte is inverted) |
//! | `before-remove` | `--remove-source-files`: a source entry in sync is about to be checked and removed | the entry |
//! | `split` | a large file's helper tasks were offered to the other cores | the file (the only action is `wait-helper`: the owner claims no chunk until another core has claimed one) |
//! | `before-finish` | a parked directory is about to be opened again to get its attributes | the directory (the only action is `exhaust-fds`: every free file descriptor is taken, and given back at the first retry: the fds of the other cores' files coming back) |
//!
//! Actions (all relative to the directory holding NAME): `unlink` (the file vanishes), `append`
//! (the file grows by 64 KiB), `truncate` (the file shrinks to half), `empty-dir` (at `after-batch`:
//! every file of the directory being scanned is removed), `swap-symlink=TARGET` (NAME is renamed to `NAME.moved` and a
//! symlink to TARGET takes its place), `hold` (the core waits there until the run is asked to
//! stop: a run that cannot end by itself, for the time-limit tests).

/// Where a hook can fire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(dead_code)]
pub(crate) enum Point {
    BeforeOpen,
    AfterStat,
    AfterBatch,
    BeforeEnter,
    AfterWrite,
    BeforeRemove,
    Split,
    BeforeFinish,
}

/// Corrupt the first byte of a written destination file (`after-write=NAME:flip`), for the
/// `--verify` test (test builds only).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn fire_written(_fd: std::os::fd::BorrowedFd<'_>, _name: &std::ffi::CStr) {}

/// Whether `split=NAME:wait-helper` is registered for this file (fires once; test builds only).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn split_waits(_name: &std::ffi::CStr) -> bool {
    false
}

/// Run the hook registered for `point` and `name`, if any (test builds only).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn fire(_point: Point, _dir: std::os::fd::BorrowedFd<'_>, _name: &std::ffi::CStr) {}

/// Whether this build has the hooks (for `--version`).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// A stop was requested (what `hold` waits for; test builds only).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn stopping() {}

/// Give back the descriptors `exhaust-fds` took (test builds only).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn release_fds() {}

#[cfg(feature = "test-hooks")]
pub(crate) use imp::{fire, fire_written, release_fds, split_waits, stopping};

#[cfg(feature = "test-hooks")]
mod imp {
    use super::Point;
    use std::ffi::{CStr, CString};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use fsops::sys;

    struct Hook {
        point: Point,
        name: Vec<u8>,
        action: String,
        fired: AtomicBool,
    }

    fn hooks() -> &'static [Hook] {
        static HOOKS: OnceLock<Vec<Hook>> = OnceLock::new();
        HOOKS.get_or_init(|| {
            let spec = std::env::var("ARSYNC_TEST_HOOK").unwrap_or_default();
            spec.split(';')
                .filter_map(|h| {
                    let (point, rest) = h.split_once('=')?;
                    let (name, action) = rest.split_once(':')?;
                    let point = match point {
                        "before-open" => Point::BeforeOpen,
                        "after-stat" => Point::AfterStat,
                        "after-batch" => Point::AfterBatch,
                        "before-enter" => Point::BeforeEnter,
                        "after-write" => Point::AfterWrite,
                        "before-remove" => Point::BeforeRemove,
                        "split" => Point::Split,
                        "before-finish" => Point::BeforeFinish,
                        _ => return None,
                    };
                    Some(Hook {
                        point,
                        name: name.as_bytes().to_vec(),
                        action: action.to_string(),
                        fired: AtomicBool::new(false),
                    })
                })
                .collect()
        })
    }

    static STOPPING: AtomicBool = AtomicBool::new(false);
    /// What `exhaust-fds` took.
    static TAKEN: std::sync::Mutex<Vec<std::os::fd::OwnedFd>> = std::sync::Mutex::new(Vec::new());

    pub(crate) fn release_fds() {
        TAKEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub(crate) fn stopping() {
        STOPPING.store(true, Ordering::SeqCst);
    }

    pub(crate) fn fire_written(fd: BorrowedFd<'_>, name: &CStr) {
        for h in hooks() {
            if h.point == Point::AfterWrite
                && h.name == name.to_bytes()
                && !h.fired.swap(true, Ordering::SeqCst)
            {
                eprintln!(
                    "arsync: test hook AfterWrite {}: {}",
                    name.to_string_lossy(),
                    h.action
                );
                let mut b = [0u8; 1];
                // SAFETY: pread/pwrite of one byte at offset 0 on a valid fd.
                unsafe {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
                    assert_eq!(libc::pread(fd, b.as_mut_ptr().cast(), 1, 0), 1);
                    b[0] ^= 0xff;
                    assert_eq!(libc::pwrite(fd, b.as_ptr().cast(), 1, 0), 1);
                }
            }
        }
    }

    pub(crate) fn split_waits(name: &CStr) -> bool {
        hooks().iter().any(|h| {
            h.point == Point::Split
                && h.action == "wait-helper"
                && h.name == name.to_bytes()
                && !h.fired.swap(true, Ordering::SeqCst)
        })
    }

    pub(crate) fn fire(point: Point, dir: BorrowedFd<'_>, name: &CStr) {
        for h in hooks() {
            if h.point == point
                && h.name == name.to_bytes()
                && !h.fired.swap(true, Ordering::SeqCst)
            {
                eprintln!(
                    "arsync: test hook {point:?} {}: {}",
                    name.to_string_lossy(),
                    h.action
                );
                act(&h.action, dir, name);
            }
        }
    }

    fn act(action: &str, dir: BorrowedFd<'_>, name: &CStr) {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let open = |flags: libc::c_int| {
            // SAFETY: valid fd and name; the result is checked and owned below.
            let fd = unsafe {
                libc::openat(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_ptr(), flags)
            };
            assert!(fd >= 0, "test hook: open {name:?} failed");
            // SAFETY: a new fd we own.
            unsafe { std::fs::File::from_raw_fd(fd) }
        };
        match action {
            "unlink" => sys::unlink_at(dir, name, 0).expect("test hook: unlink"),
            "exhaust-fds" => {
                let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
                while let Ok(fd) = dir.try_clone_to_owned() {
                    taken.push(fd);
                }
            }
            "hold" => {
                // Polled: the hook runs on a core thread, which has nothing else to wait on.
                while !STOPPING.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            "append" => {
                let mut f = open(libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC);
                f.write_all(&[0x5a; 64 * 1024]).expect("test hook: append");
            }
            "truncate" => {
                let f = open(libc::O_WRONLY | libc::O_CLOEXEC);
                let len = f.metadata().expect("test hook: stat").len();
                f.set_len(len / 2).expect("test hook: truncate");
            }
            "empty-dir" => {
                // At `after-batch`, `dir` is the directory being scanned itself.
                let d = sys::open_dir_at(dir, c".").expect("test hook: opendir");
                let mut r = fsops::DirReader::default();
                let mut names = Vec::new();
                while r.fill(d.as_fd()).expect("test hook: getdents") {
                    names.extend(r.entries().map(|e| e.name.to_owned()));
                }
                for n in names {
                    let _ = sys::unlink_at(d.as_fd(), &n, 0);
                }
                // Then the directory itself goes (found through its fd's path).
                if let Ok(p) = sys::fd_path(dir) {
                    let _ = std::fs::remove_dir(p);
                }
            }
            "swap-fifo" => {
                sys::unlink_at(dir, name, 0).expect("test hook: unlink");
                // SAFETY: mkfifoat on a valid fd and C string.
                let r = unsafe {
                    libc::mkfifoat(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_ptr(), 0o644)
                };
                assert_eq!(r, 0, "test hook: mkfifo");
            }
            a if a.starts_with("swap-symlink=") => {
                let target = CString::new(&a["swap-symlink=".len()..]).expect("no NUL");
                let mut moved = name.to_bytes().to_vec();
                moved.extend_from_slice(b".moved");
                let moved = CString::new(moved).expect("no NUL");
                sys::rename_at(dir, name, dir, &moved, 0).expect("test hook: rename");
                sys::symlink_at(&target, dir, name).expect("test hook: symlink");
            }
            other => panic!("unknown test hook action {other:?}"),
        }
    }
}
