//! One large file copied by several processes (the MPI mode's ranks, possibly on other hosts):
//! the file is staged under a named temporary in its destination directory (an unnamed
//! `O_TMPFILE` cannot be opened by another host), every process copies the byte ranges it was
//! given into that temporary, and the process that staged it finishes it: checks that the source
//! did not change, applies the metadata exactly as a run would (owner, mode, times, xattrs,
//! ACLs) and renames it over the final name. Nothing here moves work between processes; the
//! caller does.
//!
//! The temporary is named like the engine's own (`.~arsync-PID-m-N`), so a later run removes
//! one that a killed run left behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fsops::{FileType, Stat, sys};

use crate::Config;

/// A large file staged for a copy in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// The source file.
    pub src: PathBuf,
    /// Its final destination path.
    pub dst: PathBuf,
    /// The temporary the pieces are written into (in the destination's directory).
    pub tmp: PathBuf,
    /// The source's size when it was staged.
    pub size: u64,
    /// The source's mtime (seconds, nanoseconds) when it was staged.
    pub mtime: (i64, i64),
}

fn open_src(src: &Path) -> io::Result<(File, Stat)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)?;
    let st = sys::fstat(f.as_fd())?;
    if st.file_type() != FileType::File {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((f, st))
}

/// The file-system id of `path` (the key, with the inode, of a hard-link group over several
/// hosts: `st_dev` differs between the clients of a network file system).
pub fn fs_id(path: &Path) -> io::Result<u64> {
    sys::fs_id(path)
}

/// Temporary names of this process next to `dst` (`.~arsync-PID-m-N`), never the same twice.
fn temp_beside(dst: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = dst.parent().unwrap_or(Path::new("."));
    dir.join(format!(".~arsync-{:x}-m-{n:x}", std::process::id()))
}

/// Make `dst` another name of `leader` (a hard link made under a temporary name, then renamed
/// over whatever `dst` was). `Ok(false)`: it already was.
pub fn link_over(leader: &Path, dst: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let l = std::fs::symlink_metadata(leader)?;
    if std::fs::symlink_metadata(dst).is_ok_and(|m| m.dev() == l.dev() && m.ino() == l.ino()) {
        return Ok(false);
    }
    loop {
        let tmp = temp_beside(dst);
        match std::fs::hard_link(leader, &tmp) {
            Ok(()) => {
                return std::fs::rename(&tmp, dst).map(|()| true).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Create the temporary for `src` next to `dst`, as long as the source (its space reserved).
pub fn stage(src: &Path, dst: &Path) -> io::Result<Staged> {
    let (_, st) = open_src(src)?;
    loop {
        let tmp = temp_beside(dst);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => {
                if sys::fallocate(f.as_fd(), 0, st.size).is_err() {
                    f.set_len(st.size)?;
                }
                return Ok(Staged {
                    src: src.to_path_buf(),
                    dst: dst.to_path_buf(),
                    tmp,
                    size: st.size,
                    mtime: st.mtime,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Copy `len` bytes at `off` from the source into the temporary (`copy_file_range`, or
/// `pread`/`pwrite` where the kernel cannot). Returns the bytes copied.
pub fn copy_range(staged: &Staged, off: u64, len: u64) -> io::Result<u64> {
    let (src, _) = open_src(&staged.src)?;
    let dst = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&staged.tmp)?;
    let end = off + len;
    let mut at = off;
    let mut buf = Vec::new();
    while at < end {
        let want = (end - at).min(16 << 20) as usize;
        let n = match sys::copy_file_range(src.as_fd(), at, dst.as_fd(), at, want) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) =>
            {
                buf.resize(want.min(4 << 20), 0);
                let n = src.read_at(&mut buf, at)?;
                dst.write_all_at(&buf[..n], at)?;
                n
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being copied",
            ));
        }
        at += n as u64;
    }
    Ok(len)
}

/// Every range is copied: check the source is as staged, apply its metadata to the temporary
/// as `config` says, and rename it over the destination.
pub fn finish(config: &Config, staged: &Staged) -> io::Result<()> {
    let (src, st) = open_src(&staged.src)?;
    if st.size != staged.size || st.mtime != staged.mtime {
        return Err(io::Error::other(
            "changed while it was being copied (not published)",
        ));
    }
    let tmp = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&staged.tmp)?;
    let created_gid = sys::fstat(tmp.as_fd())?.gid;
    let umask = sys::set_umask(0);
    sys::set_umask(umask);
    let policy = crate::core::meta_policy(config, umask);
    // Made equal, not copied: the temporary may have inherited an ACL from its directory.
    let xsrc = if config.xattrs || config.acls {
        fsops::meta::Xattrs::Match(fsops::xattr::Target::Fd(src.as_fd()))
    } else {
        fsops::meta::Xattrs::None
    };
    // (Without -p the bits the umask allows: the directory's default ACL is not read here.)
    let made_in = fsops::meta::MadeIn::plain(created_gid, umask);
    fsops::meta::apply_fd(tmp.as_fd(), &st, &policy, &made_in, true, xsrc)
        .map_err(|(op, e)| io::Error::new(e.kind(), format!("{op:?}: {e}")))?;
    if config.fsync {
        // (Every rank's chunks were written through their own descriptors: one flush of the
        // file's data and attributes, here, before the name points at it.)
        tmp.sync_all()
            .map_err(|e| io::Error::new(e.kind(), format!("fsync: {e}")))?;
    }
    std::fs::rename(&staged.tmp, &staged.dst)
}

/// Give up a staged file: remove its temporary.
pub fn abandon(staged: &Staged) {
    let _ = std::fs::remove_file(&staged.tmp);
}

/// Set the times of destination directory `dst` again from source directory `src` (as
/// `config` says), after another process created entries in it once its metadata was applied.
pub fn restore_dir_times(config: &Config, src: &Path, dst: &Path) -> io::Result<()> {
    let st = sys::lstat_path(src)?;
    let policy = crate::core::meta_policy(config, 0);
    if let Some((a, m)) = policy.times(&st) {
        let fd = sys::open_dir_path(dst)?;
        sys::futimens(fd.as_fd(), a, m)?;
    }
    Ok(())
}
