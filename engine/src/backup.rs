//! `-b/--backup`, `--backup-dir=DIR`, `--suffix=SUF`: a destination non-directory that the run
//! replaces (new content, another type, a new symlink target) or deletes is kept under a backup
//! name first, as rsync keeps it: `NAME~` beside it, or `DIR/PATH` (the same relative path, plus
//! the suffix if one is given) in the backup directory.
//!
//! Three ways to keep one, by what happens to the original next:
//! - `keep` before a rename puts the new entry over the old name: a hard link to the backup
//!   name, so the old entry stays visible under its name until the rename replaces it (a file
//!   system without hard links, or a backup directory on another file system, gets a rename
//!   instead, and the name is briefly absent);
//! - `move_away` when the entry is deleted: a rename to the backup name;
//! - `copy` before `--inplace` writes into the old file: its data and attributes are copied to
//!   the backup name (a link would share the inode being rewritten).
//!
//! An older backup under the same name is replaced. Directories are never backed up themselves:
//! a deleted directory's files are, one by one (with `--backup-dir` they all leave, so the
//! directory can go; beside them, they stay, and so does the directory, as with rsync).
//! Directories made inside the backup directory get mode 0755.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fsops::FileType;
use fsops::sys;

/// Where backups go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// `--backup-dir`: the directory the relative paths are kept under (absolute, or relative to
    /// the working directory); `None`: beside the original.
    pub dir: Option<PathBuf>,
    /// Appended to the name (`~` by default without a backup directory, nothing with one).
    pub suffix: OsString,
    /// `--backup-dir` as given (before a relative one is taken from the destination): how the
    /// notices name it, as rsync does. Set by the run.
    pub given: Option<PathBuf>,
    /// The backups this run has made beside their originals (no `--backup-dir`).
    pub made: Made,
}

/// The paths (below the transfer root) of the backups a run has made beside their originals:
/// `--delete` passes over them (they are not the source's, but this run made them: rsync, which
/// deletes in a directory before it writes there, never meets them; arsync deletes after, and
/// with `--delete-excluded`, where no `P *~` rule protects them, it backed `x~` up again as
/// `x~~`). Kept only where it is needed ([`Made::kept`]: `--delete-excluded`; with `--delete`
/// alone the `P *SUFFIX` rule protects backups), so a run without it holds no list; a lock
/// taken only when a backup is made or a deletion is judged.
#[derive(Clone, Debug, Default)]
pub struct Made(Option<std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>>);

impl Made {
    /// A list that is kept.
    pub fn kept() -> Self {
        Self(Some(Default::default()))
    }

    /// Whether the list is kept (else [`Made::contains`] is always `false`).
    pub fn is_kept(&self) -> bool {
        self.0.is_some()
    }

    /// Whether this run made the backup at `path` (never, for a list not kept).
    pub fn contains(&self, path: &Path) -> bool {
        self.0
            .as_ref()
            .is_some_and(|m| m.lock().unwrap_or_else(|p| p.into_inner()).contains(path))
    }

    fn insert(&self, path: PathBuf) {
        if let Some(m) = &self.0 {
            m.lock().unwrap_or_else(|p| p.into_inner()).insert(path);
        }
    }
}

impl PartialEq for Made {
    fn eq(&self, _: &Self) -> bool {
        // (What the run has made is not part of what the configuration says.)
        true
    }
}
impl Eq for Made {}

/// The backup name of `name` (whose parent is `parent_rel` below the transfer root): the
/// directory it goes in (`None`: `dir`, the original's own) and the name there.
fn target(b: &Backup, name: &CStr, parent_rel: &Path) -> io::Result<(Option<OwnedFd>, CString)> {
    let mut bname = name.to_bytes().to_vec();
    bname.extend_from_slice(b.suffix.as_bytes());
    let bname = CString::new(bname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let Some(root) = &b.dir else {
        return Ok((None, bname));
    };
    let d = root.join(parent_rel);
    let fd = match sys::open_dir_path(&d) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&d)?;
            sys::open_dir_path(&d)?
        }
        Err(e) => return Err(e),
    };
    Ok((Some(fd), bname))
}

/// Tell the observer that `name` (in `parent_rel`) was kept as its backup, named as rsync
/// names it: the backup directory as given and the relative path, or the name with its suffix.
fn said(b: &Backup, observer: &dyn crate::Observer, name: &CStr, parent_rel: &Path) {
    let name = OsStr::from_bytes(name.to_bytes());
    let path = parent_rel.join(name);
    let mut to = match b.given.as_ref().or(b.dir.as_ref()) {
        // (rsync drops a leading "./" from the directory's name.)
        Some(dir) => dir
            .components()
            .skip_while(|c| *c == std::path::Component::CurDir)
            .collect::<PathBuf>()
            .join(&path)
            .into_os_string(),
        None => path.clone().into_os_string(),
    };
    to.push(&b.suffix);
    if b.dir.is_none() {
        b.made.insert(PathBuf::from(&to));
    }
    observer.event(&crate::Event::Notice {
        path: &path,
        notice: crate::Notice::BackedUp { to: Path::new(&to) },
    });
}

/// Clear the backup name of an older backup (a directory there is left: the new backup then
/// fails with the error that says so).
fn clear(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match sys::unlink_at(dir, name, 0) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Before `name` in `dir` is replaced by a rename over it: keep the entry there (if any, and not
/// a directory) under its backup name, leaving it in place.
pub(crate) fn keep(
    b: &Backup,
    observer: &dyn crate::Observer,
    dir: BorrowedFd<'_>,
    name: &CStr,
    parent_rel: &Path,
) -> io::Result<()> {
    match sys::lstat_at(dir, name) {
        Ok(st) if st.file_type() != FileType::Dir => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let (bdir, bname) = target(b, name, parent_rel)?;
    let bd = bdir.as_ref().map_or(dir, |f| f.as_fd());
    clear(bd, &bname)?;
    match sys::link_at(dir, name, bd, &bname) {
        Ok(()) => {}
        // No hard links here (or across to the backup directory): move it instead.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
            ) =>
        {
            sys::rename_at(dir, name, bd, &bname, 0).map_err(cross_device)?
        }
        Err(e) => return Err(e),
    }
    said(b, observer, name, parent_rel);
    Ok(())
}

/// Before `name` in `dir` (a non-directory) is deleted: move it to its backup name instead.
pub(crate) fn move_away(
    b: &Backup,
    observer: &dyn crate::Observer,
    dir: BorrowedFd<'_>,
    name: &CStr,
    parent_rel: &Path,
) -> io::Result<()> {
    let (bdir, bname) = target(b, name, parent_rel)?;
    let bd = bdir.as_ref().map_or(dir, |f| f.as_fd());
    sys::rename_at(dir, name, bd, &bname, 0).map_err(cross_device)?;
    said(b, observer, name, parent_rel);
    Ok(())
}

/// Before `--inplace` rewrites the regular file `old` (open, named `name` in `dir`; with
/// `--write-devices` a device, whose backup is a regular file of its content): copy its
/// data and mode to its backup name, and what `policy` preserves of its owner, group and
/// times, as rsync's backup copy gives them (`-a` kept the owner; without `-t` the backup has
/// the time it was made).
pub(crate) fn copy(
    b: &Backup,
    policy: &fsops::MetaPolicy,
    observer: &dyn crate::Observer,
    dir: BorrowedFd<'_>,
    name: &CStr,
    parent_rel: &Path,
    old: &OwnedFd,
) -> io::Result<()> {
    let st = sys::fstat(old.as_fd())?;
    // (--write-devices: a device's backup is a regular file of its content, as rsync's.)
    let size = if st.file_type().is_device() {
        sys::device_size(old.as_fd())
    } else {
        st.size
    };
    let (bdir, bname) = target(b, name, parent_rel)?;
    let bd = bdir.as_ref().map_or(dir, |f| f.as_fd());
    clear(bd, &bname)?;
    let new = sys::create_excl(bd, &bname, 0o600)?;
    let keep_going = std::sync::atomic::AtomicBool::new(true);
    let copied =
        fsops::copy::copy_kernel_range_blocking(old, &new, (0, size), &keep_going, &|_| {})
            .or_else(|_| {
                // copy_file_range refused (another file system kind): plain reads and writes.
                sys::ftruncate(new.as_fd(), 0)?;
                let mut from = std::fs::File::from(old.try_clone()?);
                let mut to = std::fs::File::from(new.try_clone()?);
                use std::io::Seek;
                from.seek(io::SeekFrom::Start(0))?;
                std::io::copy(&mut from, &mut to)
            });
    if let Err(e) = copied {
        let _ = sys::unlink_at(bd, &bname, 0);
        return Err(e);
    }
    let file = fsops::Stat {
        mode: libc::S_IFREG | (st.mode & 0o7777),
        ..st
    };
    // The old file's own owner and group (no --usermap: it is no copy of a source); a chown
    // clears setuid/setgid, so the mode comes after it.
    let uid = if policy.owner && policy.root && st.uid != policy.euid {
        st.uid
    } else {
        u32::MAX
    };
    let gid = if policy.group && st.gid != policy.egid && policy.may_set_group(st.gid) {
        st.gid
    } else {
        u32::MAX
    };
    if (uid, gid) != (u32::MAX, u32::MAX) {
        match sys::fchown(new.as_fd(), uid, gid) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !policy.root => {}
            r => r?,
        }
    }
    sys::fchmod(new.as_fd(), st.mode & 0o7777)?;
    if let Some((a, m)) = policy.times(&file) {
        sys::futimens(new.as_fd(), a, m)?;
    }
    said(b, observer, name, parent_rel);
    Ok(())
}

fn cross_device(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EXDEV) {
        io::Error::new(
            e.kind(),
            "the backup directory is on another file system than the destination (a backup is moved there, not copied)",
        )
    } else {
        e
    }
}

/// The suffix rsync uses when none is given.
pub fn default_suffix(with_dir: bool) -> OsString {
    if with_dir {
        OsString::new()
    } else {
        OsString::from("~")
    }
}

/// Whether `suffix` can be used: not empty without a backup directory (the backup would be the
/// file itself), no `/`.
pub fn check_suffix(suffix: &OsStr, with_dir: bool) -> Result<(), String> {
    if suffix.as_bytes().contains(&b'/') {
        return Err(format!(
            "--suffix cannot contain slashes: {}",
            suffix.to_string_lossy()
        ));
    }
    if suffix.is_empty() && !with_dir {
        return Err("--suffix cannot be empty without --backup-dir".into());
    }
    Ok(())
}
