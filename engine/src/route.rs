//! The op routing table: where each class of per-file system call runs.
//!
//! | class | what | inline | ring | worker | auto |
//! |---|---|---|---|---|---|
//! | `stat` | the quick check's `lstat` of the source and of the destination | `fstatat` on the core (default) | `IORING_OP_STATX` | `fstatat` on a metadata worker | |
//! | `open` | opening a source file | `openat` on the core | `IORING_OP_OPENAT` | `openat` on a worker | `openat2(RESOLVE_CACHED)` on the core, the ring when the inode is not cached (default) |
//! | `create` | the unnamed staged file (`O_TMPFILE`) | `openat` on the core (default) | `IORING_OP_OPENAT` | `openat` on a worker | |
//! | `meta` | owner, xattrs/ACLs, mode and times of a written file | on the core (default) | | on a worker | |
//! | `read` | the data of a small file (up to `--inline-max`) | `read` on the core | one `IORING_OP_READ` of the whole file | | `preadv2(RWF_NOWAIT)` on the core, the ring when the data is not cached (default) |
//!
//! Inline is fastest for calls the kernel answers from its caches (`docs/tuning.md`): ext4 hands
//! a STATX, and an OPENAT that creates, to an io-wq kernel thread, so the ring adds a thread hop
//! to a call that takes a microsecond or two. But an inline call that has to wait for the disk
//! holds the core, and with it every other file the core could have had in flight: on a cold
//! source that makes the copy run at queue depth one per core. `auto` asks the kernel to answer
//! from its caches only (`RESOLVE_CACHED`, `RWF_NOWAIT`) and sends just the calls that would
//! wait to the ring, where dozens per core are in flight at once. The workers are for storage
//! whose metadata calls block for long (network and parallel file systems). `--route` forces a
//! path per class; `--stats-json` counts where each call went (an `auto` call is counted where it
//! ended up: inline or ring).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use compio::buf::BufResult;
use compio::driver::op::{OpenFile, PathStat};
use fsops::{Stat, sys};

use crate::core::{Core, bump};
use crate::task::DirNode;

/// Where a class of calls runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// A plain system call on the core thread.
    #[default]
    Inline,
    /// An io_uring operation on the core's ring.
    Ring,
    /// A plain system call on a metadata worker thread.
    Worker,
    /// On the core if the kernel can answer from its caches, else on the ring.
    Auto,
}

impl Via {
    /// The name used by `--route` and the stats JSON.
    pub fn name(self) -> &'static str {
        match self {
            Via::Inline => "inline",
            Via::Ring => "ring",
            Via::Worker => "worker",
            Via::Auto => "auto",
        }
    }
}

/// The classes of calls that can be routed, in the order of the [`Routes`] table.
pub const CLASSES: [&str; 5] = ["stat", "open", "create", "meta", "read"];

/// The paths each class can take, in [`CLASSES`] order.
const ALLOWED: [&[Via]; 5] = [
    &[Via::Inline, Via::Ring, Via::Worker],
    &[Via::Inline, Via::Ring, Via::Worker, Via::Auto],
    &[Via::Inline, Via::Ring, Via::Worker],
    &[Via::Inline, Via::Worker],
    &[Via::Inline, Via::Ring, Via::Auto],
];

/// The routing table: one [`Via`] per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routes(pub [Via; 5]);

impl Default for Routes {
    /// Inline, except `open` and `read`: `auto`.
    fn default() -> Self {
        Routes([Via::Inline, Via::Auto, Via::Inline, Via::Inline, Via::Auto])
    }
}

/// A class's index in [`CLASSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Stat = 0,
    Open = 1,
    Create = 2,
    Meta = 3,
    Read = 4,
}

impl Routes {
    /// Parse `--route` values: `CLASS=PATH[,CLASS=PATH...]` (later entries win); PATH is
    /// `inline`, `ring`, `worker` or `auto`; CLASS `all` sets every class that can take PATH and
    /// leaves the others as they are.
    pub fn parse(specs: &[&str]) -> Result<Routes, String> {
        let mut r = Routes::default();
        for spec in specs {
            for item in spec.split(',').filter(|s| !s.is_empty()) {
                let (class, path) = item
                    .split_once('=')
                    .ok_or_else(|| format!("--route {item:?}: expected CLASS=PATH"))?;
                let via = match path {
                    "inline" => Via::Inline,
                    "ring" => Via::Ring,
                    "worker" => Via::Worker,
                    "auto" => Via::Auto,
                    _ => {
                        return Err(format!(
                            "--route {item:?}: PATH is inline, ring, worker or auto"
                        ));
                    }
                };
                if class == "all" {
                    for (i, allowed) in ALLOWED.iter().enumerate() {
                        if allowed.contains(&via) {
                            r.0[i] = via;
                        }
                    }
                    continue;
                }
                let i = CLASSES.iter().position(|k| *k == class).ok_or_else(|| {
                    format!(
                        "--route {item:?}: CLASS is one of {}, or all",
                        CLASSES.join(", ")
                    )
                })?;
                if !ALLOWED[i].contains(&via) {
                    let ok: Vec<&str> = ALLOWED[i].iter().map(|v| v.name()).collect();
                    return Err(format!(
                        "--route {item:?}: {class} can go {}{}",
                        ok.join(", "),
                        if class == "meta" {
                            " (io_uring has no fchown, fchmod or futimens)"
                        } else {
                            ""
                        }
                    ));
                }
                r.0[i] = via;
            }
        }
        Ok(r)
    }

    /// Whether any class uses the metadata workers.
    pub fn needs_workers(&self) -> bool {
        self.0.contains(&Via::Worker)
    }

    pub(crate) fn get(&self, c: Class) -> Via {
        self.0[c as usize]
    }
}

/// Which of a directory's two fds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Src,
    Dst,
}

/// A directory fd that an io_uring op or a worker can own for as long as it needs it.
pub(crate) struct DirFd(pub Arc<DirNode>, pub Side);

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self.1 {
            Side::Src => self.0.src_fd(),
            Side::Dst => self.0.dst_fd(),
        }
    }
}

/// Count a call of class `c` where it ran (an `auto` call is counted as inline or ring).
pub(crate) fn count(core: &Core, c: Class, via: Via) {
    let i = match via {
        Via::Inline => 0,
        Via::Ring | Via::Auto => 1,
        Via::Worker => 2,
    };
    bump(&core.counters.routed[c as usize][i], 1);
}

fn workers(core: &Core) -> &crate::workers::Workers {
    core.shared
        .workers
        .as_ref()
        .expect("the metadata workers run when a class is routed to them")
}

/// `lstat` (or `stat` when `follow`) of `name` in one of `node`'s directories.
pub(crate) async fn stat_at(
    core: &Core,
    node: &Arc<DirNode>,
    side: Side,
    name: &CStr,
    follow: bool,
) -> io::Result<Stat> {
    let via = core.shared.config.routes.get(Class::Stat);
    count(core, Class::Stat, via);
    let plain = move |d: BorrowedFd<'_>, name: &CStr| {
        if follow {
            sys::stat_at(d, name)
        } else {
            sys::lstat_at(d, name)
        }
    };
    match via {
        Via::Inline | Via::Auto => plain(DirFd::borrow(node, side), name),
        Via::Ring => {
            let op = PathStat::new(DirFd(Arc::clone(node), side), name.to_owned(), follow);
            let BufResult(r, op) = compio::runtime::submit(op).await;
            r?;
            Ok(from_libc(&compio::buf::IntoInner::into_inner(op)))
        }
        Via::Worker => {
            let dir = DirFd(Arc::clone(node), side);
            let name = name.to_owned();
            workers(core).call(move || plain(dir.as_fd(), &name)).await
        }
    }
}

impl DirFd {
    fn borrow(node: &DirNode, side: Side) -> BorrowedFd<'_> {
        match side {
            Side::Src => node.src_fd(),
            Side::Dst => node.dst_fd(),
        }
    }
}

/// The attributes the engine uses, from compio's `stat` (built from `statx`; its ctime is the
/// birth time in compio 0.19, and the engine never reads ctime).
#[allow(clippy::unnecessary_cast)] // the field types differ between rustix's backends
fn from_libc(s: &rustix::fs::Stat) -> Stat {
    Stat {
        dev: s.st_dev as u64,
        ino: s.st_ino as u64,
        mode: s.st_mode as u32,
        nlink: s.st_nlink as u64,
        uid: s.st_uid as u32,
        gid: s.st_gid as u32,
        rdev: s.st_rdev as u64,
        size: s.st_size as u64,
        blocks: s.st_blocks as u64,
        atime: (s.st_atime as i64, s.st_atime_nsec as i64),
        mtime: (s.st_mtime as i64, s.st_mtime_nsec as i64),
        ctime: (0, 0),
    }
}

/// Open a source file for reading (`O_NOFOLLOW` unless `follow`; `O_NOATIME` when asked and
/// allowed), as [`sys::open_source`] does.
pub(crate) async fn open_source(
    core: &Core,
    node: &Arc<DirNode>,
    name: &CStr,
    follow: bool,
) -> io::Result<OwnedFd> {
    let noatime = core.shared.config.open_noatime;
    let mut via = core.shared.config.routes.get(Class::Open);
    if via == Via::Auto {
        match sys::open_source_cached(node.src_fd(), name, noatime, follow) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => {
                count(core, Class::Open, Via::Inline);
                return r;
            }
        }
        via = Via::Ring;
    }
    count(core, Class::Open, via);
    let plain = move |d: BorrowedFd<'_>, name: &CStr| {
        if follow {
            sys::open_source_follow(d, name, noatime)
        } else {
            sys::open_source(d, name, noatime)
        }
    };
    match via {
        Via::Inline | Via::Auto => plain(node.src_fd(), name),
        Via::Ring => {
            let base = libc::O_RDONLY
                | libc::O_NONBLOCK
                | libc::O_CLOEXEC
                | if follow { 0 } else { libc::O_NOFOLLOW };
            if noatime {
                match ring_open(node, Side::Src, name, base | libc::O_NOATIME, 0).await {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    r => return r,
                }
            }
            ring_open(node, Side::Src, name, base, 0).await
        }
        Via::Worker => {
            let dir = DirFd(Arc::clone(node), Side::Src);
            let name = name.to_owned();
            workers(core).call(move || plain(dir.as_fd(), &name)).await
        }
    }
}

async fn ring_open(
    node: &Arc<DirNode>,
    side: Side,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let op = OpenFile::new(
        DirFd(Arc::clone(node), side),
        name.to_owned(),
        rustix::fs::OFlags::from_bits_retain(flags as u32),
        rustix::fs::Mode::from_bits_retain(mode),
    );
    let BufResult(r, op) = compio::runtime::submit(op).await;
    r?;
    Ok(compio::buf::IntoInner::into_inner(op))
}

/// An unnamed file (`O_TMPFILE`, read-write) in `node`'s destination directory.
pub(crate) async fn create_tmpfile(
    core: &Core,
    node: &Arc<DirNode>,
    mode: u32,
) -> io::Result<OwnedFd> {
    let via = core.shared.config.routes.get(Class::Create);
    count(core, Class::Create, via);
    match via {
        Via::Inline | Via::Auto => sys::open_tmpfile(node.dst_fd(), mode),
        Via::Ring => {
            ring_open(
                node,
                Side::Dst,
                c".",
                libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC,
                mode,
            )
            .await
        }
        Via::Worker => {
            let dir = DirFd(Arc::clone(node), Side::Dst);
            workers(core)
                .call(move || sys::open_tmpfile(dir.as_fd(), mode))
                .await
        }
    }
}

/// Create `name` in a destination directory nobody sees yet (a new subtree made under a
/// temporary name), on the `create` route like [`create_tmpfile`].
pub(crate) async fn create_named(
    core: &Core,
    node: &Arc<DirNode>,
    name: &CStr,
    mode: u32,
) -> io::Result<OwnedFd> {
    let via = core.shared.config.routes.get(Class::Create);
    count(core, Class::Create, via);
    match via {
        Via::Inline | Via::Auto => sys::create_excl(node.dst_fd(), name, mode),
        Via::Ring => {
            ring_open(
                node,
                Side::Dst,
                name,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
            .await
        }
        Via::Worker => {
            let dir = DirFd(Arc::clone(node), Side::Dst);
            let name = name.to_owned();
            workers(core)
                .call(move || sys::create_excl(dir.as_fd(), &name, mode))
                .await
        }
    }
}

/// Apply a written file's metadata (owner, xattrs/ACLs, mode, times). Takes the destination fd
/// and gives it back, so a worker can own it while it works.
pub(crate) async fn apply_meta(
    core: &Core,
    dst: OwnedFd,
    st: &Stat,
    created_gid: u32,
    chmod: (u32, bool),
    src: &OwnedFd,
    inherits_acl: bool,
) -> (
    OwnedFd,
    Result<fsops::meta::Unsupported, (fsops::meta::MetaOp, io::Error)>,
) {
    let policy = &core.shared.policy;
    let via = core.shared.config.routes.get(Class::Meta);
    count(core, Class::Meta, via);
    if via != Via::Worker {
        let r = fsops::meta::apply_fd_perm(
            dst.as_fd(),
            st,
            policy,
            created_gid,
            chmod,
            fsops::meta::Xattrs::from(fsops::xattr::Target::Fd(src.as_fd()), inherits_acl),
        );
        return (dst, r);
    }
    // The source fd is read only for xattrs and ACLs: duplicated only when they are copied.
    let src = if policy.xattrs || policy.acls {
        match src.try_clone() {
            Ok(fd) => Some(fd),
            Err(e) => return (dst, Err((fsops::meta::MetaOp::Xattr, e))),
        }
    } else {
        None
    };
    let (policy, st) = (*policy, *st);
    workers(core)
        .call(move || {
            let r = fsops::meta::apply_fd_perm(
                dst.as_fd(),
                &st,
                &policy,
                created_gid,
                chmod,
                src.as_ref().map_or(fsops::meta::Xattrs::None, |s| {
                    fsops::meta::Xattrs::from(fsops::xattr::Target::Fd(s.as_fd()), inherits_acl)
                }),
            );
            (dst, r)
        })
        .await
}

/// `fsync(fd)` on the core's ring (the kernel runs it on an io-wq worker: the core goes on with
/// other files meanwhile); the fd is handed back. A flush still in flight when the copy is
/// dropped keeps the file open until it completes.
pub(crate) async fn fsync(fd: OwnedFd) -> io::Result<OwnedFd> {
    let fd = Rc::new(fd);
    let BufResult(r, _) =
        compio::runtime::submit(compio::driver::op::Sync::new(Rc::clone(&fd), false)).await;
    r?;
    Rc::try_unwrap(fd).map_err(|_| io::Error::other("fsync: the file is still shared"))
}

/// A source file's fd: owned by the copy, and shared (counted) from the first ring read on,
/// which then holds a handle of its own (so that a read still in flight when the copy is dropped
/// keeps the file open until it completes) without a `dup` and its `close`, and without an
/// allocation for the files that never go through the ring.
pub(crate) struct SourceFd {
    own: Option<OwnedFd>,
    shared: Option<Rc<OwnedFd>>,
}

impl SourceFd {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            own: Some(fd),
            shared: None,
        }
    }

    /// A counted handle of the fd, for a ring operation.
    pub(crate) fn share(&mut self) -> Rc<OwnedFd> {
        if let Some(fd) = self.own.take() {
            self.shared = Some(Rc::new(fd));
        }
        Rc::clone(
            self.shared
                .as_ref()
                .expect("a source fd is owned or shared"),
        )
    }
}

impl std::ops::Deref for SourceFd {
    type Target = OwnedFd;

    fn deref(&self) -> &OwnedFd {
        match (&self.own, &self.shared) {
            (Some(fd), _) => fd,
            (None, Some(fd)) => fd,
            (None, None) => unreachable!("a source fd is owned or shared"),
        }
    }
}

/// Copy the data of a small file (up to `--inline-max`) into the staged `dst`: inline `read`s,
/// one ring read of the whole file, or (`auto`) inline when the data is cached and the ring when
/// it is not. `src` is at offset 0. With `sparse` (`-S`, a new or emptied regular file) only the
/// blocks with data are written (`fsops::copy::write_data`).
pub(crate) async fn copy_small(
    core: &Core,
    src: &mut SourceFd,
    dst: &OwnedFd,
    size: u64,
    sparse: bool,
) -> io::Result<u64> {
    let via = core.shared.config.routes.get(Class::Read);
    let ring = |core: &Core, src: &mut SourceFd| {
        count(core, Class::Read, Via::Ring);
        let shared = src.share();
        async move { fsops::copy::copy_small_async(&shared, dst, size, sparse).await }
    };
    match via {
        Via::Ring => ring(core, src).await,
        Via::Auto => {
            let cached = {
                let mut buf = core.small_buf.borrow_mut();
                fsops::copy::copy_inline_cached(src, dst, size, &mut buf, sparse)?
            };
            match cached {
                fsops::copy::Inline::Copied(n) => {
                    count(core, Class::Read, Via::Inline);
                    Ok(n)
                }
                fsops::copy::Inline::NotCached => ring(core, src).await,
            }
        }
        Via::Inline | Via::Worker => {
            count(core, Class::Read, Via::Inline);
            let mut buf = core.small_buf.borrow_mut();
            fsops::copy::copy_inline(src, dst, size, &mut buf, sparse)
        }
    }
}
