//! Thin, fd-relative wrappers over the Linux system calls the engine issues inline on a core
//! thread (calls io_uring has no opcode for, or that complete in memory and are cheaper inline:
//! see DESIGN.md section 3).
//!
//! Every wrapper takes names as `&CStr` (one path component for destination-side calls), returns
//! `io::Result` with the errno intact, and opens everything `O_CLOEXEC`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::meta::Stat;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Run a call that returns a byte count or -1 with `errno`, again while it fails with `EINTR`.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn cvt_fd(r: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(r)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn path_cstr(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Open a directory by path (following symlinks, as a user-given path is meant), `O_DIRECTORY`.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    open_dir_path_as(path, libc::O_RDONLY)
}

/// `open(path, how | O_DIRECTORY | O_CLOEXEC)`.
fn open_dir_path_as(path: &Path, how: libc::c_int) -> io::Result<OwnedFd> {
    let c = path_cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    cvt_fd(unsafe { libc::open(c.as_ptr(), how | libc::O_DIRECTORY | libc::O_CLOEXEC) })
}

/// Open the sub-directory `name` of `dir` without following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// [`open_dir_at`] of a directory the caller owns but may not read (mode `000`, `0300`: a copy
/// of a source directory that was closed when it was copied): on `EACCES` the directory is
/// made readable to its owner just long enough to open it (through an `O_PATH` descriptor, never
/// following a symlink), and its mode is put back; the open descriptor then reads it whatever
/// its mode. Root, another owner, or any other error: the error as it was.
pub fn open_dir_at_as_owner(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let denied = match open_dir_at(dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => e,
        other => return other,
    };
    let euid = geteuid();
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    let Ok(path) = cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    }) else {
        return Err(denied);
    };
    let Ok(st) = fstat(path.as_fd()) else {
        return Err(denied);
    };
    let mode = st.mode & 0o7777;
    if euid == 0 || st.uid != euid || mode & 0o500 == 0o500 {
        return Err(denied);
    }
    // (`fchmod` refuses an `O_PATH` descriptor; its /proc name reaches the same inode.)
    let Ok(proc_name) = CString::new(format!("/proc/self/fd/{}", path.as_raw_fd())) else {
        return Err(denied);
    };
    let chmod = |m: u32| {
        // SAFETY: NUL-terminated path for the duration of the call.
        cvt(unsafe { libc::fchmodat(libc::AT_FDCWD, proc_name.as_ptr(), m, 0) })
    };
    if chmod(mode | 0o500).is_err() {
        return Err(denied);
    }
    let opened = open_dir_at(dir, name);
    let _ = chmod(mode);
    opened
}

/// Open a source entry for reading: `O_NOFOLLOW | O_NONBLOCK` (a FIFO swapped in cannot hang the
/// core), optionally `O_NOATIME` (retried without it on `EPERM`, as only the owner may use it).
pub fn open_source(dir: BorrowedFd<'_>, name: &CStr, noatime: bool) -> io::Result<OwnedFd> {
    open_read_at(dir, name, libc::O_NOFOLLOW, noatime)
}

fn open_read_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    extra: libc::c_int,
    noatime: bool,
) -> io::Result<OwnedFd> {
    let base = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | extra;
    if noatime {
        // SAFETY: valid fd and NUL-terminated name for the duration of the call.
        match cvt_fd(unsafe {
            libc::openat(dir.as_raw_fd(), name.as_ptr(), base | libc::O_NOATIME)
        }) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => return r,
        }
    }
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), base) })
}

/// Open a source file given by path (a root of the transfer), without following a final symlink.
pub fn open_source_path(path: &Path, noatime: bool) -> io::Result<OwnedFd> {
    let c = path_cstr(path)?;
    let base = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if noatime {
        // SAFETY: `c` is NUL-terminated and lives for the call.
        match cvt_fd(unsafe { libc::open(c.as_ptr(), base | libc::O_NOATIME) }) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => return r,
        }
    }
    // SAFETY: `c` is NUL-terminated and lives for the call.
    cvt_fd(unsafe { libc::open(c.as_ptr(), base) })
}

/// Create a new regular file `name` in `dir` exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`), open
/// for reading and writing (`--verify` reads it back), with `mode` (the process umask applies).
pub fn create_excl(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// `fstat` an open fd.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: `st` is a valid out-pointer of the right type.
    cvt(unsafe { libc::fstat64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat64 succeeded, so it filled the struct.
    Ok(Stat::from_stat(&unsafe { st.assume_init() }))
}

/// Whether the directory listing (`getdents64`) of the file system holding `fd` gives each
/// entry's inode number as `stat` does (`d_ino == st_ino`): ext2/3/4, XFS, btrfs, tmpfs, F2FS,
/// ZFS and bcachefs, which hand out the inode's own number. Others (FUSE, CIFS without server
/// inode numbers, network and stacked file systems) may list numbers `stat` never gives, or
/// give another file's: `false` for them, and when `fstatfs` fails.
pub fn listing_gives_inode(fd: BorrowedFd<'_>) -> bool {
    const KNOWN: [i64; 7] = [EXT4, XFS, BTRFS, TMPFS, F2FS, ZFS, BCACHEFS];
    fs_magic(fd).is_some_and(|t| KNOWN.contains(&t))
}

/// Whether the file system holding `fd` writes one file's buffered data one writer at a time:
/// ext2/3/4, XFS, btrfs, tmpfs, F2FS and bcachefs take the inode's lock exclusively for every
/// buffered write, so cores copying parts of one file into it wait on each other (measured in
/// session 36: a warm 512 MiB file split across two cores took 1.6–1.8× the CPU for the same
/// time within 2% on ext4 and XFS). `false` for others (ZFS's range locks, network and cluster
/// file systems), and when `fstatfs` fails.
pub fn writes_one_file_at_a_time(fd: BorrowedFd<'_>) -> bool {
    const SERIAL: [i64; 6] = [EXT4, XFS, BTRFS, TMPFS, F2FS, BCACHEFS];
    fs_magic(fd).is_some_and(|t| SERIAL.contains(&t))
}

// File system types (`statfs`'s `f_type`) named above.
const EXT4: i64 = 0xEF53; // ext2/3/4
const XFS: i64 = 0x5846_5342;
const BTRFS: i64 = 0x9123_683E;
const TMPFS: i64 = 0x0102_1994;
const F2FS: i64 = 0xF2F5_2010;
const ZFS: i64 = 0x2FC1_2FC1;
const BCACHEFS: i64 = 0xCA45_1A4E;

/// The file system type (`statfs`'s `f_type`) of the file system holding `fd`.
fn fs_magic(fd: BorrowedFd<'_>) -> Option<i64> {
    let mut sf = std::mem::MaybeUninit::<libc::statfs64>::uninit();
    // SAFETY: `sf` is a valid out-pointer of the right type.
    if unsafe { libc::fstatfs64(fd.as_raw_fd(), sf.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstatfs64 succeeded, so it filled the struct.
    let f_type = unsafe { sf.assume_init() }.f_type;
    // (`f_type`'s integer type differs between architectures.)
    #[allow(clippy::unnecessary_cast)]
    Some(f_type as i64)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a symlink's target.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    stat_at_raw(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
}

fn stat_at_raw(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: valid pointers for the duration of the call.
    cvt(unsafe { libc::fstatat64(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat64 succeeded, so it filled the struct.
    Ok(Stat::from_stat(&unsafe { st.assume_init() }))
}

/// `lstat` a path (a root of the transfer; a trailing `/` makes the kernel follow a final symlink,
/// which is rsync's meaning of `src/`).
pub fn lstat_path(path: &Path) -> io::Result<Stat> {
    let c = path_cstr(path)?;
    stat_at_raw(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW)
}

/// `stat` a path, following symlinks.
pub fn stat_path(path: &Path) -> io::Result<Stat> {
    let c = path_cstr(path)?;
    stat_at_raw(libc::AT_FDCWD, &c, 0)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `mkdir(path, mode)` for a user-given destination directory.
pub fn mkdir_path(path: &Path, mode: u32) -> io::Result<()> {
    let c = path_cstr(path)?;
    // SAFETY: `c` is NUL-terminated and lives for the call.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `symlinkat(target, dir, name)`; `target` is copied byte for byte.
pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid strings and fd for the duration of the call.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `readlinkat(dir, name)`: the exact bytes of a symlink's target (any length up to PATH_MAX and
/// beyond: the buffer grows until the target fits).
pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<std::ffi::CString> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        // SAFETY: `buf` has `cap` writable bytes; fd and name are valid for the call.
        let n = unsafe {
            libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), cap)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < cap {
            buf.truncate(n);
            return std::ffi::CString::new(buf)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
        }
        cap *= 4;
    }
}

/// `readlink` of a user-given path.
pub fn readlink_path(path: &Path) -> io::Result<std::ffi::CString> {
    let c = path_cstr(path)?;
    // SAFETY: AT_FDCWD is always a valid directory fd argument.
    readlink_at(unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }, &c)
}

/// `mknodat(dir, name, mode, dev)` for devices, FIFOs and sockets.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })
    .map(drop)
}

/// `renameat2(olddir, old, newdir, new, flags)`.
pub fn rename_at(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names for the duration of the call.
    cvt(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `unlinkat(dir, name, flags)` (`AT_REMOVEDIR` for a directory).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `fchown(fd, uid, gid)`; `u32::MAX` leaves that id unchanged.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `fchmodat(dir, name, mode, 0)`: for devices, FIFOs and sockets just created under a temporary
/// name by us (never for a name that could be a symlink).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
        .map(drop)
}

/// A timestamp for [`futimens`]/[`lutimens_at`]: seconds and nanoseconds, or "leave unchanged".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    /// Set to this (seconds, nanoseconds).
    At(i64, i64),
    /// Leave unchanged (`UTIME_OMIT`).
    Omit,
}

fn timespec(t: Time) -> libc::timespec {
    match t {
        Time::At(s, ns) => libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: ns as _,
        },
        Time::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    }
}

/// `futimens(fd, [atime, mtime])`.
pub fn futimens(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: `ts` is a valid array of two timespecs for the call.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// `utimensat(dir, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
pub fn lutimens_at(dir: BorrowedFd<'_>, name: &CStr, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid fd, name and timespec array for the call.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fallocate(fd, 0, offset, len)`: reserve the destination's blocks before writing.
pub fn fallocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::fallocate64(fd.as_raw_fd(), 0, offset as i64, len as i64) }).map(drop)
}

/// `fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, len)`: reserve blocks without changing the file
/// size, so the size keeps saying how far a write got (partial files).
pub fn fallocate_keep_size(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe {
        libc::fallocate64(
            fd.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    })
    .map(drop)
}

/// `fallocate(fd, PUNCH_HOLE | KEEP_SIZE, offset, len)`: the range reads as zeros and its
/// blocks are freed (a hole), the size unchanged.
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe {
        libc::fallocate64(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    })
    .map(drop)
}

/// The set of CPUs a thread may run on (`sched_getaffinity`/`sched_setaffinity`).
#[derive(Clone, Copy)]
pub struct CpuMask(libc::cpu_set_t);

impl CpuMask {
    /// The calling thread's mask.
    pub fn current() -> io::Result<Self> {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
        cvt(unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
        })?;
        Ok(Self(set))
    }

    /// The CPUs in the set, in ascending order.
    pub fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET reads one bit of a live set; `cpu` is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
            .collect()
    }

    /// Let the calling thread run on these CPUs.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from a live set.
        cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) })
            .map(drop)
    }
}

/// The size of the device open at `fd`, as rsync's `--copy-devices` takes it: the offset of its
/// end (`lseek(SEEK_END)`; a block device's capacity). A device that cannot seek (a terminal, a
/// pipe-like character device) has none: 0, so that nothing is read from it.
pub fn device_size(fd: BorrowedFd<'_>) -> u64 {
    // SAFETY: plain syscall on a valid fd; positional reads and writes ignore the offset moved.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), 0, libc::SEEK_END) };
    if r < 0 { 0 } else { r as u64 }
}

/// The id of the mount that `fd` is on (`statx` `STATX_MNT_ID`, Linux 5.8): two directories
/// with the same id are on one mount, where a file can be renamed or linked from one to the
/// other (the same `st_dev` is not enough: a bind mount of the same file system refuses it).
pub fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: statx is plain data; zeroed is a valid value for the kernel to fill.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, an empty NUL-terminated path with AT_EMPTY_PATH, and a pointer to a
    // statx buffer that outlives the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok(stx.stx_mnt_id)
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)`.
pub fn fadvise_sequential(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::posix_fadvise64(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// Whether the byte at `offset` of `fd` is in the page cache: a one-byte `preadv2` with
/// `RWF_NOWAIT`, which fails with `EAGAIN` instead of reading from the disk. `None` where the
/// kernel or file system cannot say.
pub fn is_cached(fd: BorrowedFd<'_>, offset: u64) -> Option<bool> {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a live local byte; the kernel writes at most 1 byte into it.
    let r = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset as i64, libc::RWF_NOWAIT) };
    if r >= 0 {
        return Some(true);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(false),
        _ => None,
    }
}

/// `read` at `offset` that returns `WouldBlock` instead of waiting for the disk (`preadv2`
/// with `RWF_NOWAIT`): data in the page cache is read, anything else is left to an asynchronous
/// path. Where the kernel or file system cannot do it, an ordinary [`read_at`].
///
/// Positional, as [`read_at`] and [`write_all_at`] are: a read or write at the file position
/// takes the open file's `f_pos_lock` mutex in a multi-threaded process (`fdget_pos`), one
/// lock and unlock per call on every small file's two calls.
pub fn read_nowait_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return read_at(fd, buf, offset);
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec describing `buf`, valid for `buf.len()` writable bytes.
    let r = retry_eintr(|| unsafe {
        libc::preadv2(
            fd.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    });
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
            ) =>
        {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            read_at(fd, buf, offset)
        }
        r => r,
    }
}

/// `pread(fd, buf, offset)`, retried on `EINTR`.
pub fn read_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes.
    retry_eintr(|| unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// Write all of `buf` at `offset` (`pwrite`), retried on `EINTR` and short writes.
pub fn write_all_at(fd: BorrowedFd<'_>, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let n = retry_eintr(|| unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        })?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Set the process umask, returning the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The uid of user `name` (`getpwnam_r`), `None` if there is none.
pub fn user_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call and `buf`'s length is passed with it.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(pw.pw_uid)
}

/// The gid of group `name` (`getgrnam_r`), `None` if there is none.
pub fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: an all-zero group is a valid out-parameter for getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 65536];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call and `buf`'s length is passed with it.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The primary gid of the user with uid `uid` (`getpwuid_r`), `None` if there is none.
pub fn user_primary_gid(uid: u32) -> Option<u32> {
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call and `buf`'s length is passed with it.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(pw.pw_gid)
}

/// Which of the calls of [`become_user`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BecomeStep {
    /// `setgid` (the group).
    Setgid,
    /// `setgroups` (the supplementary groups, cleared to the one group).
    Setgroups,
    /// `initgroups` (the user's supplementary groups).
    Initgroups,
    /// `setuid` (the user).
    Setuid,
}

impl BecomeStep {
    /// The call's name, as rsync names it in its message.
    pub fn name(self) -> &'static str {
        match self {
            BecomeStep::Setgid => "setgid",
            BecomeStep::Setgroups => "setgroups",
            BecomeStep::Initgroups => "initgroups",
            BecomeStep::Setuid => "setuid",
        }
    }
}

/// Turn the whole process into user `uid` with group `gid` for good (rsync's `--copy-as`):
/// `setgid`, the supplementary groups (`gid` alone, then, when `user` is given, that user's
/// groups by `initgroups`), then `setuid` (real, effective and saved ids; glibc applies each
/// call to every thread of the process). Needs the privilege to change ids (root).
pub fn become_user(uid: u32, gid: u32, user: Option<&CStr>) -> Result<(), (BecomeStep, io::Error)> {
    // SAFETY: plain id-changing calls with integer arguments.
    cvt(unsafe { libc::setgid(gid) }).map_err(|e| (BecomeStep::Setgid, e))?;
    // SAFETY: one gid, read from a live local.
    cvt(unsafe { libc::setgroups(1, &gid) }).map_err(|e| (BecomeStep::Setgroups, e))?;
    if let Some(user) = user {
        // SAFETY: a NUL-terminated name, live for the call.
        cvt(unsafe { libc::initgroups(user.as_ptr(), gid) })
            .map_err(|e| (BecomeStep::Initgroups, e))?;
    }
    // SAFETY: as above.
    cvt(unsafe { libc::setuid(uid) }).map_err(|e| (BecomeStep::Setuid, e))?;
    Ok(())
}

/// The effective uid of the process.
pub fn geteuid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective gid of the process.
pub fn getegid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::getegid() }
}

/// The groups this process is in: its effective group and its supplementary groups, sorted
/// (read once: a process's groups do not change under it).
pub fn groups() -> &'static [u32] {
    static GROUPS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut v = vec![getegid()];
        // SAFETY: with size 0 getgroups only counts.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n > 0 {
            let mut g = vec![0 as libc::gid_t; n as usize];
            // SAFETY: a buffer of n gid_t for at most n entries.
            let m = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
            if m > 0 {
                v.extend_from_slice(&g[..m as usize]);
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// `linkat(olddir, old, newdir, new, 0)`: a new name for an existing (non-directory) entry,
/// never following a symlink `old`.
pub fn link_at(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names for the duration of the call.
    cvt(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `ioctl(dst, FICLONE, src)`: share all of `src`'s extents (reflink). Fails with
/// `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the file system cannot.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are valid.
    cvt(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) }).map(drop)
}

/// `copy_file_range(src, &off, dst, &off, len, 0)` at explicit offsets; returns bytes copied
/// (0 at the end of the source).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut so = src_off as libc::loff_t;
    let mut dof = dst_off as libc::loff_t;
    // SAFETY: valid fds and offset pointers for the call.
    retry_eintr(|| unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut dof, len, 0)
    })
}

/// `lseek(fd, off, SEEK_DATA)`: the start of the next data region at or after `off`, or `None`
/// past the last one.
pub fn seek_data(fd: BorrowedFd<'_>, off: u64) -> io::Result<Option<u64>> {
    seek(fd, off, libc::SEEK_DATA)
}

/// `lseek(fd, off, SEEK_HOLE)`: the start of the next hole at or after `off` (end of file counts).
pub fn seek_hole(fd: BorrowedFd<'_>, off: u64) -> io::Result<Option<u64>> {
    seek(fd, off, libc::SEEK_HOLE)
}

fn seek(fd: BorrowedFd<'_>, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), off as i64, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// The data regions of a file of `size` bytes as `(offset, length)`, found with
/// SEEK_DATA/SEEK_HOLE. A file system without support reports the whole file as data.
pub fn data_extents(fd: BorrowedFd<'_>, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let start = match seek_data(fd, off) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = seek_hole(fd, start)?.unwrap_or(size).min(size);
        out.push((start, end - start));
        off = end;
    }
    Ok(out)
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate64(fd.as_raw_fd(), len as i64) }).map(drop)
}

/// Open the directory `name` in `dir` *following* a symlink (for `-K`/`-L`, where the user asked
/// for it).
pub fn open_dir_at_follow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Open directory `name` of `dir` to walk through it by name only (`O_PATH`: search permission
/// suffices, as for a `0711` home directory): the descriptor serves as the directory of `*at`
/// calls and `fstat`, not for listing it or reading its extended attributes. `follow`: a
/// symlink is followed (else refused).
pub fn open_dir_at_to_pass(dir: BorrowedFd<'_>, name: &CStr, follow: bool) -> io::Result<OwnedFd> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | nofollow | libc::O_CLOEXEC,
        )
    })
}

/// [`open_dir_at_to_pass`] of a path (followed as [`open_dir_path`] follows it).
pub fn open_dir_path_to_pass(path: &Path) -> io::Result<OwnedFd> {
    open_dir_path_as(path, libc::O_PATH)
}

/// Open a source entry following a symlink (`-L`), `O_NONBLOCK` as [`open_source`].
pub fn open_source_follow(dir: BorrowedFd<'_>, name: &CStr, noatime: bool) -> io::Result<OwnedFd> {
    open_read_at(dir, name, 0, noatime)
}

/// Open a source file for reading only if the whole lookup can be done from the kernel's caches
/// (`openat2` with `RESOLVE_CACHED`, Linux 5.12): `WouldBlock` when the inode would have to be
/// read from the disk, so the caller can open it asynchronously instead. Where `openat2` is
/// missing, an ordinary open. Same flags as [`open_source`] (or [`open_source_follow`]).
pub fn open_source_cached(
    dir: BorrowedFd<'_>,
    name: &CStr,
    noatime: bool,
    follow: bool,
) -> io::Result<OwnedFd> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    let plain = || {
        if follow {
            open_source_follow(dir, name, noatime)
        } else {
            open_source(dir, name, noatime)
        }
    };
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return plain();
    }
    let base = libc::O_RDONLY
        | libc::O_NONBLOCK
        | libc::O_CLOEXEC
        | if follow { 0 } else { libc::O_NOFOLLOW };
    let attempt = |flags: libc::c_int| {
        // SAFETY: open_how is plain data; zeroed is valid and the fields are set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_CACHED;
        // SAFETY: valid fd, NUL-terminated name and a pointer to `how` with its size, for the
        // duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        cvt_fd(r as libc::c_int)
    };
    let r = if noatime {
        match attempt(base | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => attempt(base),
            r => r,
        }
    } else {
        attempt(base)
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            plain()
        }
        r => r,
    }
}

/// `fstatat(dir, name, 0)`: what a symlink points to.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    stat_at_raw(dir.as_raw_fd(), name, 0)
}

/// Create an unnamed regular file in `dir` (`O_TMPFILE`), open for reading and writing, with
/// `mode`. It gets a
/// name only through [`link_fd`], once complete; closed without one, it simply disappears.
/// Fails with `EOPNOTSUPP`/`EISDIR` where the file system has no `O_TMPFILE`.
pub fn open_tmpfile(dir: BorrowedFd<'_>, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and a static NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// The path the kernel knows the open file `fd` by (`/proc/self/fd`: absolute, symlinks
/// resolved, as `getcwd` gives a directory's).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The absolute path of the entry `name` in the open directory `dir`, without its leading `/`:
/// the directory's path as the kernel knows it (`/proc/self/fd`, symlinks resolved, as
/// `getcwd` gives it), then the name. For filter rules with rsync's `/` modifier; where the
/// directory's path cannot be read, the name alone.
pub fn abs_name(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = fd_path(dir)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    if out.first() == Some(&b'/') {
        out.remove(0);
    }
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Give the open file `fd` the name `name` in `dir` (`linkat`), failing with `EEXIST` if the name
/// is taken. `AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH`; without it (`ENOENT`) the file is linked
/// through `/proc/self/fd`, which any user may do with a file of their own.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fds, a static empty name and a NUL-terminated name for the call.
    let r = unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOENT) {
        return Err(e);
    }
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("no NUL in a formatted path");
    // SAFETY: valid paths and fd for the call.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `IORING_REGISTER_IOWQ_MAX_WORKERS` on the ring `ring_fd`: cap its io-wq kernel worker threads
/// at `bounded` (regular-file and block work) and `unbounded` (everything else); 0 leaves a
/// value unchanged. Returns the previous `[bounded, unbounded]` caps.
pub fn iowq_max_workers(ring_fd: RawFd, bounded: u32, unbounded: u32) -> io::Result<[u32; 2]> {
    const IORING_REGISTER_IOWQ_MAX_WORKERS: libc::c_uint = 19;
    let mut v = [bounded, unbounded];
    // SAFETY: the register call reads and writes exactly two u32 at `v`, which lives across it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            IORING_REGISTER_IOWQ_MAX_WORKERS,
            v.as_mut_ptr(),
            2u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// An anonymous memory file (`memfd_create`). Not a directory: every `*at` call given it as the
/// directory fails with `ENOTDIR`, which makes it a safe stand-in for a destination directory
/// that does not exist (dry runs).
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string for the call.
    cvt_fd(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })
}

/// Open an existing `name` in `dir` for reading and writing, without following a symlink and
/// without blocking on a FIFO (`O_RDWR|O_NOFOLLOW|O_NONBLOCK`); the caller checks the type with
/// `fstat`.
pub fn open_write(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })
}

/// Whether a process with this pid exists (`kill(pid, 0)` succeeds or is refused for lack of
/// permission).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (as far as the kernel allows) and return the
/// soft limit now in effect.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max.min(1 << 20),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `want`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// The id of the file system holding `path` (`statvfs`'s `f_fsid`): unlike `st_dev`, the same on
/// every client of a network file system.
pub fn fs_id(path: &Path) -> io::Result<u64> {
    let c = path_cstr(path)?;
    let mut v = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and an out-pointer of the right type.
    cvt(unsafe { libc::statvfs(c.as_ptr(), v.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded, so it filled the struct.
    Ok(unsafe { v.assume_init() }.f_fsid)
}

/// Grow this process's file-descriptor table now to hold at least `n` descriptors (a dup to
/// descriptor `n - 1`, closed at once; the table never shrinks). Once a process has several
/// threads, every growth of the table waits for an RCU grace period (`expand_fdtable` calls
/// `synchronize_rcu` when the table is shared), which stalls every thread opening a file for
/// 10–25 ms on this VM; growing it while the process has one thread, or once instead of at
/// each doubling, avoids that.
pub fn reserve_fd_table(n: u32) -> io::Result<()> {
    if n < 2 {
        return Ok(());
    }
    // SAFETY: a constant C string; the result is checked and closed below.
    let probe = cvt_fd(unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd; the new fd (if any) is closed at once.
    let high = unsafe {
        libc::fcntl(
            probe.as_raw_fd(),
            libc::F_DUPFD_CLOEXEC,
            (n - 1) as libc::c_int,
        )
    };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `high` is a descriptor we just created and own.
    unsafe { libc::close(high) };
    Ok(())
}

/// Turn `O_DIRECT` on or off for an open file (`fcntl(F_SETFL)`; it applies to the open file
/// description, so to every dup of it). Fails with `EINVAL` where the file system has no direct
/// I/O.
pub fn set_direct(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL on a valid fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    if new == flags {
        return Ok(());
    }
    // SAFETY: fcntl F_SETFL on a valid fd with flags derived from its own.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) }).map(drop)
}

/// rsync 3.5's defence for the paths an operator names (the destination, `--backup-dir`,
/// `--link-dest`, filter files, ...): walk `path` (relative: from the working directory) a
/// component at a time and return the first symlink met whose owner is neither root nor the
/// effective user, `None` when there is none. Symlinks owned by root or by us are followed
/// (their targets walked in turn, at most 40 of them); the walk ends quietly where a component
/// is missing or cannot be looked at (what opens the path then reports its own error).
pub fn untrusted_symlink(path: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Component, PathBuf};
    let me = geteuid();
    let mut at = PathBuf::new();
    let mut left: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    // Put the components of `p` before what is left to walk (an absolute one from the root).
    fn push_front(
        left: &mut std::collections::VecDeque<std::ffi::OsString>,
        at: &mut PathBuf,
        p: &Path,
    ) {
        let mut parts = Vec::new();
        for c in p.components() {
            match c {
                Component::RootDir => {
                    *at = PathBuf::from("/");
                    parts.clear();
                }
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => parts.push(std::ffi::OsString::from("..")),
                Component::Normal(n) => parts.push(n.to_os_string()),
            }
        }
        for part in parts.into_iter().rev() {
            left.push_front(part);
        }
    }
    push_front(&mut left, &mut at, path);
    let mut hops = 0;
    while let Some(part) = left.pop_front() {
        if part == ".." {
            // Every component walked so far is a real directory: its parent is the one above.
            match at.components().next_back() {
                Some(Component::Normal(_)) => {
                    at.pop();
                }
                Some(Component::RootDir) => {}
                _ => at.push(".."),
            }
            continue;
        }
        let next = at.join(&part);
        let Ok(m) = std::fs::symlink_metadata(&next) else {
            return None;
        };
        if !m.file_type().is_symlink() {
            at = next;
            continue;
        }
        if m.uid() != 0 && m.uid() != me {
            return Some(next);
        }
        hops += 1;
        let Ok(target) = std::fs::read_link(&next) else {
            return None;
        };
        if hops > 40 {
            return None;
        }
        push_front(&mut left, &mut at, &target);
    }
    None
}
