//! Task kinds and what each does: start a root, scan one batch of a directory, copy one entry
//! (file, directory, symlink, device, FIFO, socket), and finish a directory after its last child.
//!
//! A [`Task`] is plain `Send` data (an index, an `Arc` of a directory node holding `OwnedFd`s, a
//! name); compio objects never cross cores. Each directory being copied is a [`DirNode`] holding the
//! source and destination directory fds, so every entry below it is opened, created and renamed
//! relative to them (no path is resolved twice, none is limited by PATH_MAX, and nothing in the
//! destination is followed).
//!
//! # Directory completion
//!
//! `pending` counts the unfinished children of a node plus one for its scan. The scanner adds a
//! batch's count *before* pushing the batch (so no child can finish first and drive it to zero);
//! every finished child, and the scan at end of directory, subtracts one (`AcqRel`). Whoever takes
//! it to zero applies the directory's metadata (all children's writes happen-before it through the
//! `AcqRel` chain) and then finishes its parent the same way.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fsops::{FileType, Stat, sys};

use crate::core::{Core, bump};
use crate::{ErrorClass, Event, SkipReason};

/// A unit of work for a core.
pub(crate) enum Task {
    /// Start transfer root number `.0`.
    Root(usize),
    /// Read the next batch of a directory (carries the scan's reference on `pending`).
    Scan(Arc<DirNode>),
    /// Copy one entry of a directory.
    Entry {
        parent: Arc<DirNode>,
        name: CString,
        file_type: FileType,
    },
}

/// A directory being copied.
pub(crate) struct DirNode {
    src: OwnedFd,
    dst: OwnedFd,
    /// Source path for messages (the root as given, joined with the relative path).
    src_path: PathBuf,
    /// Path relative to the transfer root, for item events.
    rel: PathBuf,
    /// The source directory's attributes, applied at finish (`None`: a root's parent, untouched).
    stat: Option<Stat>,
    /// The gid new entries get in the destination directory (its gid if setgid, else the egid).
    created_gid: u32,
    /// For a file root: the destination name when it differs from the source name.
    dst_name: Option<CString>,
    pending: AtomicUsize,
    parent: Option<Arc<DirNode>>,
}

impl DirNode {
    fn child_src_path(&self, name: &CStr) -> PathBuf {
        self.src_path.join(OsStr::from_bytes(name.to_bytes()))
    }

    fn child_rel(&self, name: &CStr) -> PathBuf {
        self.rel.join(OsStr::from_bytes(name.to_bytes()))
    }
}

/// Run one task to completion.
pub(crate) async fn run(core: Rc<Core>, task: Task) {
    match task {
        Task::Root(i) => start_root(&core, i).await,
        Task::Scan(node) => scan(&core, node),
        Task::Entry {
            parent,
            name,
            file_type,
        } => {
            entry(&core, &parent, &name, file_type).await;
            child_done(&core, parent);
        }
    }
}

fn report(core: &Core, path: &Path, op: &'static str, error: &io::Error, class: ErrorClass) {
    let c = &core.counters;
    match class {
        ErrorClass::Partial => bump(&c.errors, 1),
        ErrorClass::Vanished => bump(&c.vanished, 1),
        ErrorClass::FileIo => bump(&c.file_io_errors, 1),
    }
    core.shared.observer.event(&Event::Error {
        path,
        op,
        error,
        class,
    });
}

/// A source-side error: ENOENT means the entry vanished after it was listed.
fn source_class(e: &io::Error) -> ErrorClass {
    if e.raw_os_error() == Some(libc::ENOENT) {
        ErrorClass::Vanished
    } else {
        ErrorClass::Partial
    }
}

fn item(core: &Core, rel: PathBuf, file_type: FileType, bytes: u64) {
    if core.shared.wants_items {
        core.shared.observer.event(&Event::Item {
            path: &rel,
            file_type,
            bytes,
        });
    }
}

fn skip(core: &Core, rel: &Path, reason: SkipReason) {
    bump(&core.counters.skipped, 1);
    core.shared
        .observer
        .event(&Event::Skipped { path: rel, reason });
}

fn temp_name(core: &Core) -> CString {
    let n = core.temp_seq.get();
    core.temp_seq.set(n + 1);
    CString::new(format!(
        ".~arsync-{:x}-{:x}-{:x}",
        core.shared.pid, core.index, n
    ))
    .expect("no NUL in a formatted name")
}

fn path_name(p: &Path) -> Option<CString> {
    p.file_name().and_then(|n| CString::new(n.as_bytes()).ok())
}

fn parent_or_dot(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

async fn start_root(core: &Rc<Core>, index: usize) {
    let root = core.shared.config.roots[index].clone();
    let st = match sys::lstat_path(&root.src) {
        Ok(st) => st,
        Err(e) => {
            report(core, &root.src, "link_stat", &e, ErrorClass::Partial);
            return;
        }
    };
    if st.file_type() == FileType::Dir {
        if !core.shared.config.recursive {
            let shown = if root.rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root.rel.clone()
            };
            skip(core, &shown, SkipReason::Directory);
            return;
        }
        let src = match sys::open_dir_path(&root.src) {
            Ok(fd) => fd,
            Err(e) => {
                report(core, &root.src, "opendir", &e, source_class(&e));
                return;
            }
        };
        let dst = match make_dest_dir_path(&root.dst) {
            Ok(fd) => fd,
            Err((op, e)) => {
                report(core, &root.dst, op, &e, ErrorClass::FileIo);
                return;
            }
        };
        let created_gid = created_gid_of(core, &dst);
        let node = Arc::new(DirNode {
            src,
            dst,
            src_path: root.src.clone(),
            rel: root.rel.clone(),
            stat: Some(st),
            created_gid,
            dst_name: None,
            pending: AtomicUsize::new(1),
            parent: None,
        });
        item(core, root.rel.clone(), FileType::Dir, 0);
        scan(core, node);
        return;
    }
    // A single non-directory entry: treat its two parents as a pseudo directory node whose own
    // metadata is left alone.
    let (Some(src_name), Some(dst_name)) = (path_name(&root.src), path_name(&root.dst)) else {
        let e = io::Error::from_raw_os_error(libc::EINVAL);
        report(core, &root.src, "name", &e, ErrorClass::Partial);
        return;
    };
    let src_dir = match sys::open_dir_path(&parent_or_dot(&root.src)) {
        Ok(fd) => fd,
        Err(e) => {
            report(core, &root.src, "opendir", &e, ErrorClass::Partial);
            return;
        }
    };
    let dst_dir = match sys::open_dir_path(&parent_or_dot(&root.dst)) {
        Ok(fd) => fd,
        Err(e) => {
            report(core, &root.dst, "opendir", &e, ErrorClass::FileIo);
            return;
        }
    };
    let created_gid = created_gid_of(core, &dst_dir);
    let node = Arc::new(DirNode {
        src: src_dir,
        dst: dst_dir,
        src_path: parent_or_dot(&root.src),
        rel: root.rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        stat: None,
        created_gid,
        dst_name: (src_name != dst_name).then_some(dst_name),
        pending: AtomicUsize::new(1),
        parent: None,
    });
    entry(core, &node, &src_name, st.file_type()).await;
    child_done(core, node);
}

fn created_gid_of(core: &Core, dir: &OwnedFd) -> u32 {
    match sys::fstat(dir.as_fd()) {
        Ok(st) if st.mode & libc::S_ISGID != 0 => st.gid,
        _ => core.shared.policy.egid,
    }
}

/// Create (0700) or open the destination directory at a user-given path.
fn make_dest_dir_path(path: &Path) -> Result<OwnedFd, (&'static str, io::Error)> {
    match sys::mkdir_path(path, 0o700) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(("mkdir", e)),
    }
    sys::open_dir_path(path).map_err(|e| ("opendir", e))
}

/// Read one batch of `node`'s entries and push a task for each, plus a continuation.
fn scan(core: &Rc<Core>, node: Arc<DirNode>) {
    let mut reader = core.dir_reader.borrow_mut();
    match reader.fill(node.src.as_fd()) {
        Ok(true) => {}
        Ok(false) => {
            drop(reader);
            child_done(core, node);
            return;
        }
        Err(e) => {
            drop(reader);
            report(core, &node.src_path, "getdents", &e, source_class(&e));
            child_done(core, node);
            return;
        }
    }
    let mut batch = core.batch.borrow_mut();
    batch.clear();
    for ent in reader.entries() {
        batch.push(Task::Entry {
            parent: Arc::clone(&node),
            name: ent.name.to_owned(),
            file_type: ent.file_type,
        });
    }
    drop(reader);
    node.pending.fetch_add(batch.len(), Ordering::AcqRel);
    // The continuation goes first: children pop before it (LIFO); an idle core steals it first.
    core.push(Task::Scan(node));
    let mut w = core.worker.borrow_mut();
    for t in batch.drain(..) {
        w.push(t);
    }
}

/// One child of `node` is finished: count it down, finishing directories that reach zero.
fn child_done(core: &Core, mut node: Arc<DirNode>) {
    loop {
        if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        finish_dir(core, &node);
        match node.parent.clone() {
            Some(p) => node = p,
            None => return,
        }
    }
}

fn finish_dir(core: &Core, node: &DirNode) {
    let Some(st) = &node.stat else { return };
    let created_gid = node
        .parent
        .as_ref()
        .map_or(core.shared.policy.egid, |p| p.created_gid);
    if let Err((op, e)) =
        fsops::meta::apply_fd(node.dst.as_fd(), st, &core.shared.policy, created_gid, true)
    {
        report(core, &node.src_path, op.name(), &e, ErrorClass::Partial);
        return;
    }
    bump(&core.counters.dirs, 1);
}

/// Copy one entry of `parent`.
async fn entry(core: &Rc<Core>, parent: &Arc<DirNode>, name: &CStr, mut file_type: FileType) {
    let cfg = &core.shared.config;
    if file_type == FileType::Unknown {
        match sys::lstat_at(parent.src.as_fd(), name) {
            Ok(st) => file_type = st.file_type(),
            Err(e) => {
                let p = parent.child_src_path(name);
                report(core, &p, "lstat", &e, source_class(&e));
                return;
            }
        }
    }
    let dst_name = parent.dst_name.as_deref().unwrap_or(name);
    match file_type {
        FileType::File => {
            if let Err((op, e, class)) = copy_file(core, parent, name, dst_name).await {
                let p = parent.child_src_path(name);
                report(core, &p, op, &e, class);
            }
        }
        FileType::Dir => {
            if !cfg.recursive {
                skip(core, &parent.child_rel(name), SkipReason::Directory);
                return;
            }
            if let Err((op, e, class)) = enter_dir(core, parent, name) {
                let p = parent.child_src_path(name);
                report(core, &p, op, &e, class);
            }
        }
        FileType::Symlink
        | FileType::CharDev
        | FileType::BlockDev
        | FileType::Fifo
        | FileType::Socket => {
            let wanted = match file_type {
                FileType::Symlink => cfg.links,
                FileType::CharDev | FileType::BlockDev => cfg.devices,
                _ => cfg.specials,
            };
            if !wanted {
                skip(core, &parent.child_rel(name), SkipReason::NonRegular);
                return;
            }
            if let Err((op, e, class)) = make_other(core, parent, name, dst_name, file_type) {
                let p = parent.child_src_path(name);
                report(core, &p, op, &e, class);
            }
        }
        FileType::Unknown => {}
    }
}

type EntryResult<T = ()> = Result<T, (&'static str, io::Error, ErrorClass)>;

fn src_err(op: &'static str) -> impl FnOnce(io::Error) -> (&'static str, io::Error, ErrorClass) {
    move |e| {
        let class = source_class(&e);
        (op, e, class)
    }
}

fn dst_err(op: &'static str) -> impl FnOnce(io::Error) -> (&'static str, io::Error, ErrorClass) {
    move |e| (op, e, ErrorClass::Partial)
}

/// Create a temporary name in `dir` with `make`, retrying on a name collision.
fn with_temp<T>(
    core: &Core,
    mut make: impl FnMut(&CStr) -> io::Result<T>,
) -> io::Result<(CString, T)> {
    loop {
        let tmp = temp_name(core);
        match make(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn copy_file(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    name: &CStr,
    dst_name: &CStr,
) -> EntryResult {
    let cfg = &core.shared.config;
    let policy = &core.shared.policy;
    let src =
        sys::open_source(parent.src.as_fd(), name, cfg.open_noatime).map_err(src_err("open"))?;
    let st = sys::fstat(src.as_fd()).map_err(src_err("fstat"))?;
    if st.file_type() != FileType::File {
        return Err((
            "open",
            io::Error::other("changed type while being copied (no longer a regular file)"),
            ErrorClass::Partial,
        ));
    }
    let needs_chown = policy.chown_ids(&st, parent.created_gid).is_some();
    let (create_mode, chmod_needed) = policy.create_mode(&st, needs_chown);
    let dir = parent.dst.as_fd();
    let (tmp, dst) =
        with_temp(core, |t| sys::create_excl(dir, t, create_mode)).map_err(dst_err("create"))?;
    let result = async {
        let (bytes, dst) = if st.size <= cfg.small_file_max {
            let mut buf = core.small_buf.borrow_mut();
            let n =
                fsops::copy::copy_inline(&src, &dst, st.size, &mut buf).map_err(src_err("read"))?;
            (n, dst)
        } else {
            if let Err(e) = sys::fallocate(dst.as_fd(), 0, st.size)
                && !matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
                )
            {
                return Err(("fallocate", e, ErrorClass::Partial));
            }
            let _ = sys::fadvise_sequential(src.as_fd());
            let _slot = core.ring_slots.acquire().await;
            let out = fsops::copy::copy_ring(src, dst, st.size, &core.pool, cfg.ring_depth)
                .await
                .map_err(dst_err("copy"))?;
            bump(&core.counters.ring_files, 1);
            (out.bytes, out.dst)
        };
        fsops::meta::apply_fd(dst.as_fd(), &st, policy, parent.created_gid, chmod_needed)
            .map_err(|(op, e)| (op.name(), e, ErrorClass::Partial))?;
        drop(dst);
        sys::rename_at(dir, &tmp, dir, dst_name, 0).map_err(dst_err("rename"))?;
        Ok(bytes)
    }
    .await;
    match result {
        Ok(bytes) => {
            bump(&core.counters.files, 1);
            bump(&core.counters.bytes, bytes);
            item(core, parent.child_rel(dst_name), FileType::File, bytes);
            Ok(())
        }
        Err(e) => {
            let _ = sys::unlink_at(dir, &tmp, 0);
            Err(e)
        }
    }
}

/// Create or reuse the destination directory `name` and start scanning the source one.
fn enter_dir(core: &Rc<Core>, parent: &Arc<DirNode>, name: &CStr) -> EntryResult {
    let src = sys::open_dir_at(parent.src.as_fd(), name).map_err(src_err("opendir"))?;
    let st = sys::fstat(src.as_fd()).map_err(src_err("fstat"))?;
    let ddir = parent.dst.as_fd();
    let dst = match sys::mkdir_at(ddir, name, 0o700) {
        Ok(()) => sys::open_dir_at(ddir, name).map_err(dst_err("opendir"))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match sys::open_dir_at(ddir, name) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    // A non-directory (or a symlink) is in the way: replace it, as rsync does.
                    sys::unlink_at(ddir, name, 0).map_err(dst_err("unlink"))?;
                    sys::mkdir_at(ddir, name, 0o700).map_err(dst_err("mkdir"))?;
                    sys::open_dir_at(ddir, name).map_err(dst_err("opendir"))?
                }
                Err(e) => return Err(("opendir", e, ErrorClass::Partial)),
            }
        }
        Err(e) => return Err(("mkdir", e, ErrorClass::Partial)),
    };
    let created_gid = created_gid_of(core, &dst);
    parent.pending.fetch_add(1, Ordering::AcqRel);
    let rel = parent.child_rel(name);
    item(core, rel.clone(), FileType::Dir, 0);
    let node = Arc::new(DirNode {
        src,
        dst,
        src_path: parent.child_src_path(name),
        rel,
        stat: Some(st),
        created_gid,
        dst_name: None,
        pending: AtomicUsize::new(1),
        parent: Some(Arc::clone(parent)),
    });
    scan(core, node);
    Ok(())
}

/// Symlinks, devices, FIFOs and sockets: create under a temporary name, apply metadata by name
/// without following, rename into place.
fn make_other(
    core: &Core,
    parent: &Arc<DirNode>,
    name: &CStr,
    dst_name: &CStr,
    file_type: FileType,
) -> EntryResult {
    let policy = &core.shared.policy;
    let st = sys::lstat_at(parent.src.as_fd(), name).map_err(src_err("lstat"))?;
    if st.file_type() != file_type {
        return Err((
            "lstat",
            io::Error::other("changed type while being copied"),
            ErrorClass::Partial,
        ));
    }
    let dir = parent.dst.as_fd();
    let is_link = file_type == FileType::Symlink;
    let (tmp, ()) = if is_link {
        let target = sys::readlink_at(parent.src.as_fd(), name).map_err(src_err("readlink"))?;
        with_temp(core, |t| sys::symlink_at(&target, dir, t)).map_err(dst_err("symlink"))?
    } else {
        let mode = (st.mode & libc::S_IFMT) | 0o600;
        with_temp(core, |t| sys::mknod_at(dir, t, mode, st.rdev)).map_err(dst_err("mknod"))?
    };
    let r = fsops::meta::apply_at(dir, &tmp, &st, policy, parent.created_gid, is_link)
        .map_err(|(op, e)| (op.name(), e, ErrorClass::Partial))
        .and_then(|()| sys::rename_at(dir, &tmp, dir, dst_name, 0).map_err(dst_err("rename")));
    if let Err(e) = r {
        let _ = sys::unlink_at(dir, &tmp, 0);
        return Err(e);
    }
    if is_link {
        bump(&core.counters.symlinks, 1);
    } else {
        bump(&core.counters.specials, 1);
    }
    item(core, parent.child_rel(dst_name), file_type, 0);
    Ok(())
}
