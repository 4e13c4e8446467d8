//! Task kinds and what each does: start a root, scan one batch of a directory, copy one entry
//! (file, directory, symlink, device, FIFO, socket, hard link), and finish a directory after its
//! last child.
//!
//! A [`Task`] is plain `Send` data (an index, an `Arc` of a directory node holding `OwnedFd`s, a
//! name); compio objects never cross cores. Each directory being copied is a [`DirNode`] holding the
//! source and destination directory fds, so every entry below it is opened, created and renamed
//! relative to them (no path is resolved twice, none is limited by PATH_MAX, and nothing in the
//! destination is followed unless `-K` asks for it).
//!
//! # Directory completion
//!
//! `pending` counts the unfinished children of a node plus one for its scan, in two parts of one
//! `AtomicU64` ([`BUSY`] units for the scan, the listed entries that are not directories and a
//! listed directory being entered; 1 for each listed directory and each subdirectory node).
//! The scanner adds a batch's count *before* pushing the batch (so no child can finish first and
//! drive it to zero); every finished child, and the scan at end of directory, subtracts its unit
//! (`AcqRel`). Whoever takes it to zero applies the directory's metadata (all children's writes
//! happen-before it through the `AcqRel` chain) and then finishes its parent the same way. A node
//! whose busy part reaches zero while subdirectories are left may park its fds ([`count_down`]);
//! entering a listed subdirectory turns its unit into a busy one first ([`enter_listed`]).

use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use fsops::xattr::Target;
use fsops::{FileType, Stat, sys};

use crate::altdest::{self, Level};
use crate::core::{Core, RunShared, bump};
use crate::dirfds::{DirFds, Parkable};
use crate::filter::DirRules;
use crate::latency::Op;
use crate::links::Claim;
use crate::route::{self, Side};
use crate::select::Scope;
use crate::sync::{self, Verdict};
use crate::{AltDest, Change, CopyMethod, Delete, ErrorClass, Event, How, Reflink, SkipReason};

/// A unit of work for a core.
pub(crate) enum Task {
    /// Start transfer root number `.0`.
    Root(usize),
    /// Read the next batch of a directory (carries the scan's reference on `pending`).
    Scan(Arc<DirNode>),
    /// Copy one entry of a directory.
    Entry {
        parent: Arc<DirNode>,
        name: crate::name::Name,
        file_type: FileType,
        /// The inode number the directory listing gave (`d_ino`).
        ino: u64,
    },
    /// Help copy chunks of a large file another core owns (`split`).
    Chunk(Arc<crate::split::SplitCopy>),
}

impl DirNode {
    /// The source directory's fd.
    pub(crate) fn src_fd(&self) -> BorrowedFd<'_> {
        self.fds.get().src()
    }

    /// The destination directory's fd.
    pub(crate) fn dst_fd(&self) -> BorrowedFd<'_> {
        self.fds.get().dst()
    }

    /// The destination directory's fd, shared (with a hard-link group's leader, a staged
    /// subtree's top).
    fn dst_arc(&self) -> &Arc<OwnedFd> {
        &self.fds.get().dst
    }

    /// `--link-dest`/`--compare-dest`/`--copy-dest`: this directory's counterpart in each
    /// reference tree (where it exists).
    fn alt_dest(&self) -> Option<&Vec<Option<OwnedFd>>> {
        self.fds.get().alt.as_ref()
    }
}

/// A directory being copied.
pub(crate) struct DirNode {
    /// The source and destination directories (and reference directories), open while
    /// anything but its subdirectories is left to do; parked when open files run short
    /// ([`crate::dirfds`], [`child_done`]).
    fds: Parkable,
    /// The source's and the destination's identity (device, inode), by which a parked node
    /// knows its directories again when it reopens them (the destination's `None`: a dry run's
    /// stand-in for a directory it does not make); `None`: it never parks.
    ids: Option<Ids>,
    /// Where it stands: its paths (for messages, item events, filters) are made from it when
    /// asked for, never kept.
    place: Place,
    /// The source directory's attributes, applied at finish (`None`: a root's parent, untouched).
    stat: Option<Stat>,
    /// The source directory's listing gives each entry's inode number as `stat` does
    /// ([`sys::listing_gives_inode`]): `-H` links a further name of a copied inode by it alone.
    listed_ino_exact: bool,
    /// What new entries get from the destination directory: their group (its gid if setgid,
    /// else the egid), setgid for new directories, the permission bits allowed without `-p`.
    made_in: fsops::meta::MadeIn,
    /// Device of the destination directory (FICLONE and copy_file_range need the same one).
    dst_dev: u64,
    /// Device of the transfer root (`-x`).
    root_dev: u64,
    /// Depth below the transfer root (for `--safe-links`/`--copy-unsafe-links`).
    depth: usize,
    /// For a file root: the destination name when it differs from the source name.
    dst_name: Option<CString>,
    /// The destination directory was created by this run, so it held nothing before: no entry
    /// in it needs a look at what is already there.
    fresh: bool,
    /// Work left before it is finished: [`BUSY`] for its scan and for each listed entry that
    /// is not a directory and not done yet, and for each listed directory being entered; 1 for
    /// each listed directory not entered yet and for each subdirectory node not finished yet;
    /// [`PARKING`] while a thread parks its fds.
    pending: AtomicU64,
    /// Listed subdirectories not entered yet (a hint for parking: exact only while nothing is
    /// listed or entered meanwhile).
    queued_dirs: AtomicU32,
    /// `-H`: how the hard-link groups whose leaders were made here find this directory again,
    /// shared by all of them (made by the first).
    leader_dir: std::sync::OnceLock<Arc<LeaderDir>>,
    parent: Option<Arc<DirNode>>,
    /// The transfer root it belongs to.
    root: usize,
    /// `--delete`: the source names seen by the scan (what is not among them is extraneous).
    names: Option<sync::Names>,
    /// `--delay-updates`: the files of this directory waiting in its partial directory.
    delayed: Option<std::sync::Mutex<Vec<CString>>>,
    /// The existing destination directory's mode, when the run opened it to its owner to write
    /// in it ([`sync::open_to_owner`]): put back when it is finished, before its attributes are
    /// compared with the source's.
    tweaked: Option<u32>,
    /// Reading the source directory failed: its listing is incomplete, so nothing is deleted.
    scan_failed: AtomicBool,
    /// This directory is (or is inside) a new subtree made under a temporary name: nobody sees
    /// its entries until the subtree's top is renamed into place, so files in it are created
    /// under their final names (no unnamed file and `linkat`).
    hidden: bool,
    /// The top of such a subtree: it was made in its parent under this temporary name, and is
    /// renamed to its own name when finished.
    staged: Option<Arc<crate::core::StagedDir>>,
    /// The destination directory existed and may hold temporaries of a killed run (its mtime
    /// differs from the source's, or times are not kept): swept when finished.
    sweep: bool,
    /// `-A` and the destination directory has a default ACL: entries made in it inherit an
    /// access ACL, which their source's ACLs must replace (not merely be added to).
    inherits_acl: bool,
    /// `--files-from`/`-R`: what of the source directory belongs to the transfer.
    scope: Scope,
    /// `dir-merge` rules in force here (`None`: the run has none).
    dir_rules: Option<Arc<DirRules>>,
    /// `--delete`/`--delete-before` with `dir-merge` rules: the rules of the destination's own
    /// merge files, as they were before anything was copied into the directory (what protects
    /// destination entries, as rsync's receiver reads them).
    dest_rules: Option<Arc<DirRules>>,
}

/// A directory node's source and destination identities (device, inode; the destination's
/// `None` for a dry run's stand-in), see [`DirNode::ids`].
type Ids = ((u64, u64), Option<(u64, u64)>);

/// Where a directory node stands: the top of a transfer (a directory root, or a file root's
/// parent), whose two paths are given, or an entry of its parent's listing, known by its name
/// alone. A node keeps no path of its own: a path per node would make a chain of nested
/// directories (all alive until the deepest is done) hold memory by the square of its depth
/// (166 MB for 5,000 levels of 3-byte names).
enum Place {
    /// The source and destination paths as given, and the path relative to the transfer root.
    Top {
        src: PathBuf,
        dst: PathBuf,
        rel: PathBuf,
    },
    /// The name in the parent's listing.
    Child(crate::name::Name),
}

/// Which of a directory node's paths [`DirNode::path_of`] makes.
#[derive(Clone, Copy)]
enum PathOf {
    /// In the source tree, as the source was given.
    Src,
    /// In the destination tree, as the destination was given.
    Dst,
    /// Relative to the transfer root.
    Rel,
}

impl DirNode {
    /// One of the paths ([`PathOf`]) of this directory, or of its entry `child`: the top's path
    /// joined with the names down to here. (A directory's name is the same on both sides; only
    /// a file root can be renamed, and it is the `child` of its top.)
    fn path_of(&self, of: PathOf, child: Option<&CStr>) -> PathBuf {
        let (chain, top) = self.below_top();
        let Place::Top { src, dst, rel } = &top.place else {
            unreachable!("the walk up ends at a top")
        };
        let top = match of {
            PathOf::Src => src,
            PathOf::Dst => dst,
            PathOf::Rel => rel,
        };
        let names: Vec<&CStr> = chain.iter().map(|n| n.listed_name()).collect();
        let len = names
            .iter()
            .chain(&child)
            .map(|n| n.to_bytes().len() + 1)
            .sum::<usize>();
        let mut path = PathBuf::with_capacity(top.as_os_str().len() + len);
        path.push(top);
        for name in names.iter().rev().chain(&child) {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        path
    }

    /// The nodes from this one up to its transfer's top, nearest first, the top left out; and
    /// the top (the parent of the last, or this node itself).
    fn below_top(&self) -> (Vec<&DirNode>, &DirNode) {
        let mut chain = Vec::new();
        let mut n = self;
        while let Place::Child(_) = &n.place {
            chain.push(n);
            n = n
                .parent
                .as_deref()
                .expect("a listed directory has a parent");
        }
        (chain, n)
    }

    /// Its name in its parent's listing (a node below its transfer's top).
    fn listed_name(&self) -> &CStr {
        match &self.place {
            Place::Child(name) => name,
            Place::Top { .. } => unreachable!("a top is not listed"),
        }
    }

    /// The source path of this directory (the root as given, joined with the names below it).
    pub(crate) fn src_path(&self) -> PathBuf {
        self.path_of(PathOf::Src, None)
    }

    /// The destination path of this directory (the destination as given, joined with the
    /// names below it), for the messages of what failed there.
    fn dst_path(&self) -> PathBuf {
        self.path_of(PathOf::Dst, None)
    }

    /// The destination path of entry `dst_name`.
    fn child_dst_path(&self, dst_name: &CStr) -> PathBuf {
        self.path_of(PathOf::Dst, Some(dst_name))
    }

    /// The path of this directory relative to the transfer root.
    pub(crate) fn rel(&self) -> PathBuf {
        self.path_of(PathOf::Rel, None)
    }

    fn child_src_path(&self, name: &CStr) -> PathBuf {
        self.path_of(PathOf::Src, Some(name))
    }

    pub(crate) fn child_rel(&self, name: &CStr) -> PathBuf {
        self.path_of(PathOf::Rel, Some(name))
    }

    /// Whether a directory with this identity is this node or one of its ancestors (a loop
    /// reached through followed symlinks).
    fn has_ancestor(&self, id: (u64, u64)) -> bool {
        let mut n = Some(self);
        while let Some(d) = n {
            if d.stat.is_some_and(|s| (s.dev, s.ino) == id) {
                return true;
            }
            n = d.parent.as_deref();
        }
        false
    }
}

/// Run one task to completion.
pub(crate) async fn run(core: Rc<Core>, task: Task) {
    match task {
        Task::Root(i) => {
            start_root(&core, i).await;
            core.publish_progress();
        }
        Task::Scan(node) => scan(&core, node),
        Task::Chunk(job) => {
            let n = job.work().await;
            bump(&core.counters.split_chunks, n);
        }
        Task::Entry {
            parent,
            name,
            file_type,
            ino,
        } => {
            // A listed directory: the parent's fds (back if it parked them) while it is entered.
            if file_type == FileType::Dir && !enter_listed(&core, &parent) {
                child_done(&core, parent);
                return;
            }
            if entry(&core, &parent, &name, file_type, ino).await == Outcome::Deferred {
                debug_assert!(file_type != FileType::Dir, "only files are handed back");
                // Back on the deque, where another core can take it while this one is busy.
                core.deferred.set(true);
                core.push(Task::Entry {
                    parent,
                    name,
                    file_type,
                    ino,
                });
                return;
            }
            child_done(&core, parent);
            core.publish_progress();
        }
    }
}

/// Whether an entry was handled, or handed back because this core is already busy with a large
/// file (so that another core takes it instead of it waiting here).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Deferred,
}

/// Marks this core busy with a large file for as long as it lives.
struct Heavy<'a>(&'a Core);

impl<'a> Heavy<'a> {
    fn new(core: &'a Core) -> Self {
        core.heavy.set(core.heavy.get() + 1);
        Heavy(core)
    }
}

impl Drop for Heavy<'_> {
    fn drop(&mut self) {
        self.0.heavy.set(self.0.heavy.get() - 1);
    }
}

impl Heavy<'_> {
    /// The core is free while this file's data is copied elsewhere (on the cold-copy pool): it
    /// may take another large file meanwhile, until the returned guard drops.
    fn lighten(&self) -> Lightened<'_> {
        self.0.heavy.set(self.0.heavy.get() - 1);
        Lightened(self.0)
    }
}

/// See [`Heavy::lighten`].
struct Lightened<'a>(&'a Core);

impl Drop for Lightened<'_> {
    fn drop(&mut self) {
        self.0.heavy.set(self.0.heavy.get() + 1);
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

/// rsync's prefix before a munged symlink's target (`SYMLINK_PREFIX`).
const MUNGE_PREFIX: &[u8] = b"/rsyncd-munged/";

/// The target of a source symlink, unmunged under `--munge-links` (rsync strips the prefix
/// from a target longer than it).
fn source_link(cfg: &crate::Config, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let t = sys::readlink_at(dir, name)?;
    if cfg.munge_links
        && t.as_bytes().len() > MUNGE_PREFIX.len()
        && t.as_bytes().starts_with(MUNGE_PREFIX)
    {
        return Ok(
            CString::new(&t.as_bytes()[MUNGE_PREFIX.len()..]).expect("a link target holds no NUL")
        );
    }
    Ok(t)
}

/// The item event of an entry (`rel` builds its path, only when something listens).
fn item(
    core: &Core,
    (root, rel): (usize, impl FnOnce() -> PathBuf),
    what: (FileType, Option<&Stat>),
    bytes: u64,
    change: &Change,
    link: Option<&[u8]>,
) {
    item_summed(core, (root, rel), what, bytes, change, link, None);
}

/// [`item`] of a regular file with the checksum of its data (rsync's `%C`: `Config::item_checksums`).
fn item_summed(
    core: &Core,
    (root, rel): (usize, impl FnOnce() -> PathBuf),
    (file_type, stat): (FileType, Option<&Stat>),
    bytes: u64,
    change: &Change,
    link: Option<&[u8]>,
    checksum: Option<u128>,
) {
    if change.new {
        bump(&core.counters.created_by[crate::kind_index(file_type)], 1);
    }
    if core.shared.wants_items {
        let shown;
        let change = if stamps_time(&core.shared.policy, file_type, change) {
            // rsync's itemize: an entry rewritten whose kind keeps no time reports its time as
            // changed (`T` without -t; `t` with -t, for a symlink under -J).
            shown = if core.shared.config.times {
                Change {
                    time: true,
                    ..*change
                }
            } else {
                Change {
                    stamped: true,
                    ..*change
                }
            };
            &shown
        } else {
            change
        };
        // The counters the observer may read (`--progress`) include this item.
        core.publish_progress();
        core.shared.observer.event(&Event::Item {
            path: &rel(),
            file_type,
            bytes,
            stat,
            change,
            link,
            checksum,
            root,
        });
    }
}

/// `%C` of the regular file `name` in `dir` (its data as now in place), when a format asks.
fn sum_of(core: &Core, dir: BorrowedFd<'_>, name: &CStr) -> Option<u128> {
    if core.shared.config.item_checksums {
        sync::file_sum(dir, name)
    } else {
        None
    }
}

/// Whether rsync's itemize reports the time of an existing entry as changed because the copy
/// rewrote it and times are not kept for its kind (`-t` off; `-O` for a directory, `-J` for a
/// symlink): file data written, or a symlink, device or special made again.
fn stamps_time(policy: &fsops::MetaPolicy, file_type: FileType, change: &Change) -> bool {
    let rewritten = match change.how {
        How::Transfer => true,
        How::Local => !matches!(file_type, FileType::File | FileType::Dir),
        How::HardLink | How::Attrs => false,
    };
    !policy.keeps_mtime(file_type) && rewritten && !change.new && !change.time
}

/// `-ii`: the item event of an entry found up to date (`how`: `Attrs`, or how a reference tree
/// made it: a hard link, a local copy).
fn unchanged_item(
    core: &Core,
    rel: (usize, impl FnOnce() -> PathBuf),
    what: (FileType, Option<&Stat>),
    how: How,
    link: Option<&[u8]>,
) {
    if core.shared.config.itemize_unchanged {
        let change = Change {
            how,
            ..Change::default()
        };
        item(core, rel, what, 0, &change, link);
    }
}

/// Whether the filter rules keep `name` (of type `ft`) in `node` out of the transfer; `abs`
/// gives its absolute path (for rules with the `/` modifier: [`crate::filter::Filters::excludes_at`]).
fn filtered(
    core: &Core,
    rel: sync::Rel<'_>,
    name: &[u8],
    ft: FileType,
    dir: Option<&DirRules>,
    abs: &dyn Fn() -> Vec<u8>,
) -> bool {
    let filters = &core.shared.config.filters;
    if !filters.has_sender_rules() {
        return false;
    }
    let rel = rel.path();
    let mut path = Vec::with_capacity(rel.as_os_str().len() + 1 + name.len());
    if !rel.as_os_str().is_empty() {
        path.extend_from_slice(rel.as_os_str().as_bytes());
        path.push(b'/');
    }
    path.extend_from_slice(name);
    let is_dir = ft == FileType::Dir;
    if !core.shared.config.debug_filter {
        return filters.excludes_at(&path, is_dir, dir, abs);
    }
    let rule = filters.sending_rule_at(&path, is_dir, dir, abs);
    sync::said_rule(
        &core.shared,
        Path::new(OsStr::from_bytes(&path)),
        is_dir,
        false,
        rule,
    )
}

/// A per-directory merge file (`dir-merge`) in directory `dir`, if there is one.
pub(crate) fn read_rules_file(dir: BorrowedFd<'_>, name: &CStr) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = sys::open_source(dir, name, false).ok()?;
    let mut text = Vec::new();
    fs::File::from(fd).read_to_end(&mut text).ok()?;
    Some(text)
}

/// A per-directory merge file with a bad rule, found in `dir` (or in the open directory `fd`,
/// named then by its full path: a destination's path below the transfer root alone would not
/// say which tree it is in): the run stops as rsync's does ("syntax or usage error", exit 1),
/// rather than go on without the file's rules, which could copy what they exclude or, with
/// `--delete`, delete what they protect.
pub(crate) fn bad_rules(
    shared: &RunShared,
    dir: &Path,
    fd: Option<BorrowedFd<'_>>,
    errors: Vec<String>,
) {
    let Some(e) = errors.into_iter().next() else {
        return;
    };
    let named = fd.and_then(|fd| sys::fd_path(fd).ok());
    let dir = named.as_deref().unwrap_or(dir);
    shared.halt(
        1,
        format!("filter rules in {:?}: {e}", dir.display().to_string()),
    );
}

/// The `dir-merge` rules of source directory `src` (at `rel`) below a directory with `parent`'s
/// (`None` at a transfer root, which inherits from the directories above it where a rule asks
/// for that: `above` lists them with their path down to the transfer root). A merge file with a
/// bad rule is reported and left out. `own_files`: whether the directory's own merge files are
/// read (rsync's sender reads them only in directories it sends the contents of: with
/// `--files-from`/`-R`, not in the base directory unless `.` is named, and without `-r` in none
/// on the way to the named paths).
fn dir_rules_for(
    core: &Core,
    src: BorrowedFd<'_>,
    src_path: &Path,
    rel: &Path,
    parent: Option<&Arc<DirRules>>,
    (above, own_files): (&[(PathBuf, Vec<u8>)], bool),
) -> Option<Arc<DirRules>> {
    let filters = &core.shared.config.filters;
    if !filters.has_dir_merges() {
        return None;
    }
    let report_all = |errors: Vec<String>| bad_rules(&core.shared, src_path, None, errors);
    let prescanned;
    let parent = match parent {
        Some(p) => Some(&**p),
        None => {
            let (acc, errors) = filters.prescan_rules(above);
            report_all(errors);
            prescanned = acc;
            prescanned.as_ref()
        }
    };
    let (rules, errors) = filters.dir_rules(parent, rel.as_os_str().as_bytes(), &mut |name| {
        own_files.then(|| read_rules_file(src, name)).flatten()
    });
    report_all(errors);
    Some(Arc::new(rules))
}

/// [`DirNode::dest_rules`] of destination directory `dst` (at `rel`): read when deletion
/// happens before or during the copy and the directory existed (`fresh`: made by this run, so
/// nothing is deleted in it and the rules stay as inherited).
fn dest_rules_for(
    core: &Core,
    dst: BorrowedFd<'_>,
    fresh: bool,
    rel: &Path,
    parent: Option<&Arc<DirRules>>,
    above: impl FnOnce() -> Vec<(PathBuf, Vec<u8>)>,
) -> Option<Arc<DirRules>> {
    let cfg = &core.shared.config;
    if !cfg.filters.has_dir_merges()
        || !matches!(
            cfg.delete,
            Some(Delete::During | Delete::Before | Delete::Delay)
        )
    {
        return None;
    }
    let prescanned;
    let parent = match parent {
        Some(p) => Some(&**p),
        None => {
            let (acc, errors) = cfg.filters.prescan_rules(&above());
            bad_rules(&core.shared, rel, Some(dst), errors);
            prescanned = acc;
            prescanned.as_ref()
        }
    };
    if fresh {
        return Some(Arc::new(parent.cloned().unwrap_or_default()));
    }
    let (rules, errors) = cfg
        .filters
        .dir_rules(parent, rel.as_os_str().as_bytes(), &mut |name| {
            read_rules_file(dst, name)
        });
    bad_rules(&core.shared, rel, Some(dst), errors);
    Some(Arc::new(rules))
}

/// The directories above a transfer root (from `/` down) on one side, each with its path down
/// to the transfer root (`dir-merge /NAME` reads its files there too).
pub(crate) fn dirs_above(root: &crate::Root, side: Side) -> Vec<(PathBuf, Vec<u8>)> {
    let path = match side {
        Side::Src => &root.src,
        Side::Dst => &root.dst,
    };
    // (A destination root not made yet, or still under its temporary name: where it will be.)
    let top = fs::canonicalize(path).or_else(|e| match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) if side == Side::Dst => {
            let p = if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            };
            fs::canonicalize(p).map(|p| p.join(n))
        }
        _ => Err(e),
    });
    let Ok(top) = top else {
        return Vec::new();
    };
    // The transfer root: the root's directory itself for `src/`, its parent for `src`.
    let mut transfer_root = top.clone();
    for _ in root.rel.components() {
        transfer_root.pop();
    }
    let mut out = Vec::new();
    let mut dir = transfer_root.clone();
    loop {
        let down = transfer_root
            .strip_prefix(&dir)
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        if dir != top {
            out.push((dir.clone(), down));
        }
        if !dir.pop() {
            break;
        }
    }
    out.reverse();
    // (The root's own directory is read as a level of its own, not as a parent.)
    out.retain(|(d, _)| d != &top);
    out
}

/// [`holds_content`] of subdirectory `name` of `node`; with `report`, what could not be
/// followed below a directory found empty is reported (once: by the scan that prunes it).
fn child_holds_content(core: &Core, node: &DirNode, name: &CStr, report: bool) -> bool {
    let at = report.then(|| node.child_src_path(name));
    holds_content(
        core,
        node.src_fd(),
        name,
        node.child_rel(name),
        (node.dir_rules.as_ref(), at.as_deref()),
    )
}

/// `-m`: whether the source directory `name` in `dir` (`rel` in the transfer) holds, at any
/// depth, an entry other than a directory that the filter rules keep, or is, or holds at any
/// depth, a directory the receiving side's rules exclude (`P`, `-r`: rsync's receiver keeps "dirs
/// through" such a directory, since `--delete` could not remove it anyway). A directory that
/// cannot be read counts as holding something (its own scan then reports the error). A listing
/// is read whole before its subdirectories are, so a directory with a file costs one listing.
fn holds_content(
    core: &Core,
    dir: BorrowedFd<'_>,
    name: &CStr,
    rel: PathBuf,
    (parent_rules, report_at): (Option<&Arc<DirRules>>, Option<&Path>),
) -> bool {
    let filters = &core.shared.config.filters;
    let protected = |rel: &Path| filters.protects(rel.as_os_str().as_bytes(), true);
    if protected(&rel) {
        return true;
    }
    if !core.shared.config.recursive {
        // (`-d` without `-r`: nothing below a directory is sent, so it holds nothing, and rsync's
        // receiver prunes it.)
        return false;
    }
    let cfg = &core.shared.config;
    let follows = cfg.follows_symlinks();
    // (A symlink the caller found sent as a directory is looked into as one.)
    let opened = sys::open_dir_at(dir, name).or_else(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR | libc::ELOOP) if follows => sys::open_dir_at_follow(dir, name),
        _ => Err(e),
    });
    let Ok(fd) = opened else {
        return true;
    };
    // (Merge-file errors are reported when the directory itself is walked.)
    let rules_of = |fd: BorrowedFd<'_>, rel: &Path, parent: Option<&Arc<DirRules>>| {
        filters.has_dir_merges().then(|| {
            let read = &mut |n: &CStr| read_rules_file(fd, n);
            Arc::new(
                filters
                    .dir_rules(parent.map(|p| &**p), rel.as_os_str().as_bytes(), read)
                    .0,
            )
        })
    };
    let mut reader = fsops::dir::DirReader::new(16 * 1024);
    // Directories still to read, as (parent, name, path, parent's rules): opened when popped,
    // so a wide level of empty directories holds no descriptors.
    type Todo = (Rc<OwnedFd>, CString, PathBuf, Option<Arc<DirRules>>, bool);
    let mut todo: Vec<Todo> = Vec::new();
    // -L, -k, --copy-unsafe-links: a symlink counts as what it is sent as (see `link_sent_as`),
    // a followed one to a directory is walked, once per directory.
    let mut looked = std::collections::HashSet::new();
    // Symlinks that could not be followed, reported (with `report_at`, the directory's source
    // path) if the directory turns out to hold nothing and is pruned.
    let mut failed: Vec<(PathBuf, io::Error, &str)> = Vec::new();
    let top = report_at.map(|at| (at, rel.clone()));
    // The source path of `rel` (a directory at or below the one looked into), when reporting.
    let source_of = |rel: &Path| {
        top.as_ref()
            .map(|(at, top)| at.join(rel.strip_prefix(top).unwrap_or(Path::new(""))))
    };
    const LOOP: &str = "opendir (directory loop through a followed symlink)";
    if follows && let Ok(st) = sys::fstat(fd.as_fd()) {
        looked.insert((st.dev, st.ino));
    }
    let rules = rules_of(fd.as_fd(), &rel, parent_rules);
    let mut current = Some((Rc::new(fd), rel, rules));
    while let Some((fd, rel, rules)) = current.take() {
        loop {
            match reader.fill(fd.as_fd()) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return true,
            }
            for ent in reader.entries() {
                let mut ft = ent.file_type;
                if ft == FileType::Unknown {
                    match sys::lstat_at(fd.as_fd(), ent.name) {
                        Ok(st) => ft = st.file_type(),
                        Err(_) => return true,
                    }
                }
                let (ft, follow) = if ft == FileType::Symlink && follows {
                    let depth = rel.components().count();
                    match link_sent_as(cfg, fd.as_fd(), ent.name, depth) {
                        Ok(sent) => sent,
                        // rsync's sender reports it and leaves it out: reported below if
                        // this directory is pruned (otherwise its own walk reports it).
                        Err(e) => {
                            if let Some(dir) = source_of(&rel) {
                                let name = OsStr::from_bytes(ent.name.to_bytes());
                                let op = follow_failed(&e);
                                failed.push((dir.join(name), e, op));
                            }
                            continue;
                        }
                    }
                } else {
                    (ft, false)
                };
                if filtered(
                    core,
                    sync::Rel::Given(&rel),
                    ent.name.to_bytes(),
                    ft,
                    rules.as_deref(),
                    &|| sys::abs_name(fd.as_fd(), ent.name.to_bytes()),
                ) {
                    continue;
                }
                if ft != FileType::Dir {
                    return true;
                }
                let sub = rel.join(OsStr::from_bytes(ent.name.to_bytes()));
                if protected(&sub) {
                    return true;
                }
                todo.push((
                    Rc::clone(&fd),
                    ent.name.to_owned(),
                    sub,
                    rules.clone(),
                    follow,
                ));
            }
        }
        while let Some((parent, name, rel, parent_rules, follow)) = todo.pop() {
            let sub = if follow {
                sys::open_dir_at_follow(parent.as_fd(), &name)
            } else {
                sys::open_dir_at(parent.as_fd(), &name)
            };
            match sub {
                Ok(sub) => {
                    // A followed link back to a directory already looked at holds nothing new
                    // (its own walk reports the loop).
                    if follows
                        && !sys::fstat(sub.as_fd()).is_ok_and(|st| looked.insert((st.dev, st.ino)))
                    {
                        if let Some(path) = source_of(&rel) {
                            let e = io::Error::from_raw_os_error(libc::ELOOP);
                            failed.push((path, e, LOOP));
                        }
                        continue;
                    }
                    let rules = rules_of(sub.as_fd(), &rel, parent_rules.as_ref());
                    current = Some((Rc::new(sub), rel, rules));
                    break;
                }
                Err(_) => return true,
            }
        }
    }
    for (path, e, op) in failed {
        report(core, &path, op, &e, ErrorClass::Partial);
    }
    false
}

/// With `-L`, `-k` or `--copy-unsafe-links`, what a listed symlink (in a directory at `depth`) is
/// sent as, and whether it is followed: its target's type when followed, a symlink when not;
/// the error when following it fails (dangling, a loop): rsync's sender reports it and leaves it
/// out of the transfer, so for `-m` it is nothing.
fn link_sent_as(
    cfg: &crate::Config,
    dir: BorrowedFd<'_>,
    name: &CStr,
    depth: usize,
) -> io::Result<(FileType, bool)> {
    let target = || sys::stat_at(dir, name).map(|st| st.file_type());
    if cfg.copy_links
        || (cfg.copy_unsafe_links
            && source_link(cfg, dir, name).is_ok_and(|t| unsafe_target(t.as_bytes(), depth)))
    {
        return target().map(|t| (t, true));
    }
    Ok(match target() {
        Ok(FileType::Dir) if cfg.copy_dirlinks => (FileType::Dir, true),
        _ => (FileType::Symlink, false),
    })
}

/// The operation named in the report of a symlink that could not be followed (as `entry`).
fn follow_failed(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ELOOP) {
        "stat (symlink loop)"
    } else {
        "stat (symlink has no referent)"
    }
}

/// A destination directory for a node: opened, or (dry run, or `--existing`) absent.
enum DestDir {
    Existing(OwnedFd),
    Created(OwnedFd),
    /// Not there and not created (dry run): the placeholder stands in.
    Absent,
}

fn skip(core: &Core, rel: &Path, reason: SkipReason) {
    skip_link(core, rel, reason, None);
}

/// [`skip`], with the target of the symlink skipped (rsync names it in its notice).
fn skip_link(core: &Core, rel: &Path, reason: SkipReason, target: Option<&[u8]>) {
    bump(&core.counters.skipped, 1);
    core.shared.observer.event(&Event::Skipped {
        path: rel,
        reason,
        target,
    });
}

/// `--direct` refused by a file system: one warning per run; the files go buffered.
fn direct_refused(core: &Core, e: &io::Error) {
    if !core.shared.direct_warned.swap(true, Ordering::Relaxed) {
        let msg = format!(
            "--direct: a file system refuses O_DIRECT ({e}): those files are copied through the page cache"
        );
        core.shared
            .observer
            .event(&Event::Warning { message: &msg });
    }
}

/// Attributes the destination cannot hold: one warning per run, not a failure per file.
fn unsupported_xattrs(core: &Core, u: fsops::meta::Unsupported) {
    if let Some(e) = u
        && !core.shared.xattr_warned.swap(true, Ordering::Relaxed)
    {
        let what = if fsops::xattr::is_acl(&e.name) {
            "ACLs"
        } else {
            "extended attributes"
        };
        let msg = format!(
            "the destination file system does not support {what} ({}): they are not copied",
            e.error
        );
        core.shared
            .observer
            .event(&Event::Warning { message: &msg });
    }
}

fn temp_name(core: &Core, tag: &str) -> CString {
    let n = core.temp_seq.get();
    core.temp_seq.set(n + 1);
    CString::new(format!(
        ".~arsync-{:x}-{:x}-{:x}{tag}",
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
    let cfg = &core.shared.config;
    let root = cfg.roots[index].clone();
    let lst = match sys::lstat_path(&root.src) {
        Ok(st) => st,
        // (A source named with a trailing slash is a directory to enter: missing, an error.)
        Err(e) if e.kind() == io::ErrorKind::NotFound && !root.rel.as_os_str().is_empty() => {
            match cfg.missing_args {
                crate::MissingArgs::Error => {
                    report(core, &root.src, "link_stat", &e, ErrorClass::Partial)
                }
                crate::MissingArgs::Ignore => {}
                crate::MissingArgs::Delete => delete_missing(core, &root),
            }
            return;
        }
        Err(e) => {
            report(core, &root.src, "link_stat", &e, ErrorClass::Partial);
            return;
        }
    };
    // -L (and --copy-unsafe-links for an absolute root link) follow a symlink given as a root.
    let st = if lst.file_type() == FileType::Symlink && cfg.copy_links {
        match sys::stat_path(&root.src) {
            Ok(st) => st,
            Err(e) => {
                report(
                    core,
                    &root.src,
                    "stat (symlink has no referent)",
                    &e,
                    ErrorClass::Partial,
                );
                return;
            }
        }
    } else {
        lst
    };
    if !root.rel.as_os_str().is_empty() {
        let rel = root.rel.as_os_str().as_bytes();
        let (parent, name) = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => (Path::new(OsStr::from_bytes(&rel[..i])), &rel[i + 1..]),
            None => (Path::new(""), rel),
        };
        // The rules see the source's name: a file copied to another name (`SRC/f4 DEST/new`)
        // is `f4` to them, as to rsync's sender (before, `new`).
        let name = match root.src.file_name() {
            Some(n) if st.file_type() != FileType::Dir => n.as_bytes(),
            _ => name,
        };
        let abs = || {
            // The root's directory, symlinks resolved, then the root's own name.
            let dir = match Path::new(&root.src).parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut full = fs::canonicalize(dir)
                .map(|d| std::os::unix::ffi::OsStringExt::into_vec(d.into_os_string()))
                .unwrap_or_default();
            if !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(name);
            full.split_off(1)
        };
        if filtered(
            core,
            sync::Rel::Given(parent),
            name,
            st.file_type(),
            None,
            &abs,
        ) {
            return;
        }
    }
    if st.file_type() != FileType::Dir && earlier_root_has(&core.shared, index, &root.dst).is_some()
    {
        // An earlier source has this name (see `entry`).
        bump(&core.counters.skipped, 1);
        return;
    }
    if st.file_type() == FileType::Dir {
        if !cfg.recursive && root.select.is_none() {
            let shown = if root.rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root.rel.clone()
            };
            skip(core, &shown, SkipReason::Directory);
            return;
        }
        if cfg.existing
            && !root.rel.as_os_str().is_empty()
            && root.select.is_none()
            && sys::lstat_path(&root.dst).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            // `--existing`: a directory named on the command line that the destination lacks
            // is not made, as rsync's "not creating new directory" (before, it was made and
            // walked, empty).
            return;
        }
        // (The base of `--files-from`/`-R` names, a `0711` home directory: see `passed_by_name`.)
        let root_scope = root
            .select
            .as_ref()
            .map(|sel| Scope::root(sel, cfg.recursive));
        let mut passed = false;
        let src = match sys::open_dir_path(&root.src).or_else(|e| {
            match root_scope
                .as_ref()
                .is_some_and(|s| passed_by_name(cfg, s, &e))
            {
                true => sys::open_dir_path_to_pass(&root.src)
                    .inspect(|_| passed = true)
                    .map_err(|_| e),
                false => Err(e),
            }
        }) {
            Ok(fd) => fd,
            Err(e) => {
                report(core, &root.src, "opendir", &e, source_class(&e));
                if e.raw_os_error() == Some(libc::EACCES) && !root.rel.as_os_str().is_empty() {
                    // A named directory the user may not open (`SRC DEST/`): made empty with
                    // its attributes, as one inside the tree (rsync makes it too; `SRC/ DEST`
                    // makes nothing, as rsync).
                    if let (Some(s), Some(d), Some(name)) = (
                        sys::open_dir_path_to_pass(&parent_or_dot(&root.src)).ok(),
                        sys::open_dir_path(&parent_or_dot(&root.dst)).ok(),
                        path_name(&root.src).filter(|n| Some(n) == path_name(&root.dst).as_ref()),
                    ) {
                        let made_in = dest_dir_facts(core, &d, (None, None), None).made_in;
                        make_unlisted_dir_at(
                            core,
                            (s.as_fd(), d.as_fd(), &name),
                            (&root.rel, made_in, index),
                            true,
                            false,
                        );
                    }
                }
                return;
            }
        };
        // (A named path has a `rel`; `-R`/`--files-from` roots, whose named paths are walked
        // as entries, do not. With `-d` the root holds nothing: pruned but where protected.)
        if cfg.prune_empty_dirs
            && !root.rel.as_os_str().is_empty()
            && !holds_content(core, src.as_fd(), c".", root.rel.clone(), (None, None))
        {
            // `-m`: a directory named on the command line (`SRC`, not `SRC/`) that holds nothing
            // but directories once the rules are applied is left out as rsync leaves it out:
            // not made, and nothing in its destination counterpart deleted (before, it was
            // made and walked, and `--delete` emptied an existing one).
            return;
        }
        let Ok(absent_in_dry_run) = clear_root_entry(core, &root, &src) else {
            return;
        };
        let mut staged = None;
        let dir = if absent_in_dry_run {
            Ok(DestDir::Absent)
        } else if cfg.dry_run {
            match sys::open_dir_path(&root.dst) {
                Ok(fd) => Ok(DestDir::Existing(fd)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    Ok(DestDir::Absent)
                }
                Err(e) => Err(("opendir", e)),
            }
        } else if stages_dirs(cfg) {
            make_staged_root(core, &root.dst, (st.dev, st.ino)).map(|(d, s)| {
                staged = s;
                d
            })
        } else {
            make_dest_dir_path(&root.dst)
        };
        // (Not when another root writes there too: it may have run before this one.)
        let created_by_run = cfg.create_dest_dir.as_ref() == Some(&root.dst)
            && (cfg.dest_premade || core.shared.created_dest.load(Ordering::Relaxed))
            && core.shared.overlaps[index].is_empty();
        if matches!(dir, Ok(DestDir::Created(_)))
            || (cfg.dry_run && matches!(dir, Ok(DestDir::Absent)))
        {
            // The destination directory this root was to make (`SRC/ DEST`), made now (or, in
            // a dry run, that would be).
            if let Some(d) = cfg.create_dest_dir.as_ref().filter(|d| **d == root.dst) {
                core.shared.observer.event(&Event::DestCreated { path: d });
            }
        }
        let made = matches!(dir, Ok(DestDir::Created(_)));
        let (dst, fresh) = match dir {
            Ok(DestDir::Existing(fd)) if created_by_run => (Arc::new(fd), true),
            Ok(DestDir::Existing(fd)) => (Arc::new(fd), false),
            Ok(DestDir::Created(fd)) => (Arc::new(fd), true),
            Ok(DestDir::Absent) => (Arc::clone(&core.shared.placeholder), true),
            Err((op, e)) => {
                report(core, &root.dst, op, &e, ErrorClass::FileIo);
                return;
            }
        };
        // A selection's root is the directory the paths are relative to: unless it is selected
        // itself, its attributes are not the destination's business.
        let (scope, listed) = match &root.select {
            Some(sel) => (Scope::root(sel, cfg.recursive), sel.listed(0)),
            None => (Scope::All, true),
        };
        let DestFacts {
            made_in,
            dev: dst_dev,
            ino: dst_ino,
            sweep,
            inherits_acl,
            tweaked,
        } = dest_dir_facts(
            core,
            &dst,
            ((!fresh).then_some(&st), listed.then_some(&st)),
            None,
        );
        if made && !listed {
            // Not among the selected paths: it keeps the permissions a new destination directory
            // gets, not the 0700 it was made with (staged, or under its own name where the
            // destination is inside the source: `-R src/ DEST`), the setgid bit it inherited
            // included.
            let mode = made_in.default_dir_mode();
            if let Err(e) = sys::fchmod(dst.as_fd(), mode) {
                report(core, &root.dst, "chmod", &e, ErrorClass::FileIo);
            }
        }
        let dir_rules = dir_rules_for(
            core,
            src.as_fd(),
            &root.src,
            &root.rel,
            None,
            (
                &dirs_above(&root, Side::Src),
                root.select.is_none() || listed,
            ),
        );
        let dest_rules = dest_rules_for(core, dst.as_fd(), fresh, &root.rel, None, || {
            dirs_above(&root, Side::Dst)
        });
        let alt_dest = alt_dest_roots(cfg, &root, dst.as_fd());
        let listed_ino_exact = sys::listing_gives_inode(src.as_fd());
        let ids = (!passed)
            .then(|| parkable_ids(core, &st, &dst, (dst_dev, dst_ino)))
            .flatten();
        let node = Arc::new(DirNode {
            fds: Parkable::new(DirFds::new(src, dst, alt_dest, &core.shared.open_dirs)),
            ids,
            place: Place::Top {
                src: root.src.clone(),
                dst: root.dst.clone(),
                rel: root.rel.clone(),
            },
            stat: listed.then_some(merged_dir_stat(&core.shared, index, st, || {
                root.dst.clone()
            })),
            listed_ino_exact,
            made_in,
            dst_dev,
            root_dev: st.dev,
            // (rsync's names include the root's own: `SRC DEST/` lists `src/...`, so a link in
            // it may climb one level and stay in the destination; `-R` its whole path.)
            depth: root.rel.components().count(),
            dst_name: None,
            fresh,
            pending: AtomicU64::new(BUSY),
            queued_dirs: AtomicU32::new(0),
            leader_dir: std::sync::OnceLock::new(),
            parent: None,
            root: index,
            names: cfg
                .delete
                .filter(|d| *d != Delete::Before && scope.lists_all())
                .map(|_| sync::Names::default()),
            scan_failed: AtomicBool::new(false),
            delayed: cfg.delay_updates.then(Default::default),
            tweaked,
            hidden: staged.is_some(),
            staged,
            sweep,
            inherits_acl,
            scope,
            dir_rules,
            dest_rules,
        });
        if listed {
            // (A selection's root that is not itself named, the base of -R and --files-from
            // paths, is not in rsync's file list: not counted as a file either.)
            bump(&core.counters.seen[1], 1);
            dir_item(core, &node);
        }
        if cfg.delete == Some(Delete::Before) && !node.fresh && node.scope.lists_all() {
            delete_before(core, &node);
        }
        core.shared.progress.scan_started();
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
        Ok(fd) => Arc::new(fd),
        Err(e) if cfg.dry_run && e.raw_os_error() == Some(libc::ENOENT) => {
            Arc::clone(&core.shared.placeholder)
        }
        Err(e) => {
            report(core, &root.dst, "opendir", &e, ErrorClass::FileIo);
            return;
        }
    };
    let DestFacts {
        made_in,
        dev: dst_dev,
        inherits_acl,
        ..
    } = dest_dir_facts(core, &dst_dir, (None, None), None);
    // `--link-dest`/`--compare-dest`/`--copy-dest` serve a file named on the command line too
    // (before, it was always copied: rsync links it, or leaves it out, where the reference
    // matches).
    let alt = alt_dest_roots(
        cfg,
        &crate::Root {
            src: parent_or_dot(&root.src),
            dst: parent_or_dot(&root.dst),
            rel: root.rel.parent().map(Path::to_path_buf).unwrap_or_default(),
            select: None,
        },
        dst_dir.as_fd(),
    );
    let node = Arc::new(DirNode {
        fds: Parkable::new(DirFds::new(src_dir, dst_dir, alt, &core.shared.open_dirs)),
        ids: None,
        place: Place::Top {
            src: parent_or_dot(&root.src),
            dst: parent_or_dot(&root.dst),
            rel: root.rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        },
        stat: None,
        listed_ino_exact: false,
        made_in,
        dst_dev,
        root_dev: st.dev,
        depth: root.rel.parent().map_or(0, |p| p.components().count()),
        dst_name: (src_name != dst_name).then_some(dst_name),
        fresh: false,
        pending: AtomicU64::new(BUSY),
        queued_dirs: AtomicU32::new(0),
        leader_dir: std::sync::OnceLock::new(),
        parent: None,
        root: index,
        names: None,
        scan_failed: AtomicBool::new(false),
        delayed: cfg.delay_updates.then(Default::default),
        tweaked: None,
        hidden: false,
        staged: None,
        sweep: false,
        inherits_acl,
        scope: Scope::All,
        dir_rules: None,
        dest_rules: None,
    });
    entry(core, &node, &src_name, lst.file_type(), lst.ino).await;
    child_done(core, node);
}

/// `--link-dest`/`--compare-dest`/`--copy-dest`: the reference directories for a directory root (a relative one is relative to
/// the destination directory, i.e. the root's destination without the root's own name).
///
/// `dst` is the root's destination directory as opened: when the root is the destination
/// directory itself (`SRC/ DEST`), a relative reference is opened from it, so that it resolves
/// while the directory is still under its temporary name.
fn alt_dest_roots(
    cfg: &crate::Config,
    root: &crate::Root,
    dst: BorrowedFd<'_>,
) -> Option<Vec<Option<OwnedFd>>> {
    if cfg.alt_dest_dirs.is_empty() {
        return None;
    }
    let mut dest_dir = root.dst.clone();
    for _ in root.rel.components() {
        dest_dir.pop();
    }
    Some(
        cfg.alt_dest_dirs
            .iter()
            .map(|d| {
                if d.is_absolute() {
                    sys::open_dir_path(&d.join(&root.rel)).ok()
                } else if root.rel.as_os_str().is_empty() {
                    let c = CString::new(d.as_os_str().as_bytes()).ok()?;
                    sys::open_dir_at_follow(dst, &c).ok()
                } else {
                    sys::open_dir_path(&dest_dir.join(d).join(&root.rel)).ok()
                }
            })
            .collect(),
    )
}

/// A new entry `dst_name` whose counterpart `name` in a reference directory matches it exactly:
/// hard-linked to it (`--link-dest`) or left out of the destination (`--compare-dest`). Returns
/// whether it was (a link that failed leaves the entry to be made as usual, as rsync's "try a
/// copy"; `--copy-dest` makes it as usual).
fn take_exact_reference(
    core: &Core,
    parent: &DirNode,
    (reference, name): (BorrowedFd<'_>, &CStr),
    dst_name: &CStr,
    (ft, st, link): (FileType, &Stat, Option<&[u8]>),
) -> bool {
    let cfg = &core.shared.config;
    let how = match cfg.alt_dest {
        AltDest::Link
            if cfg.dry_run || sys::link_at(reference, name, parent.dst_fd(), dst_name).is_ok() =>
        {
            hardlink_done(core, parent, dst_name, st, true);
            bump(&core.counters.hard_links, 1);
            How::HardLink
        }
        AltDest::Compare => {
            // The reference has it: the destination does without.
            hardlink_done(core, parent, dst_name, st, false);
            bump(&core.counters.unchanged, 1);
            How::Attrs
        }
        _ => return false,
    };
    unchanged_item(
        core,
        (parent.root, || parent.child_rel(dst_name)),
        (ft, Some(st)),
        how,
        link,
    );
    true
}

/// `--link-dest`/`--compare-dest` for a destination file that exists: when a reference file
/// matches the source exactly, the destination file becomes a link to it (an atomic rename over
/// it) or, with `--compare-dest`, is removed, as rsync does. Returns whether it did either
/// (`Some(linked)`), or `None` to go on as without references.
async fn exact_reference_for_existing(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    name: &CStr,
    dst_name: &CStr,
    src: &mut route::SourceFd,
    st: &Stat,
    dirs: &[Option<OwnedFd>],
) -> Option<bool> {
    let cfg = &core.shared.config;
    let dir = parent.dst_fd();
    let d = sys::lstat_at(dir, dst_name).ok()?;
    if d.file_type() != FileType::File
        // What rsync's generator decides before it looks at the references: the file is left
        // as it is (`judge_file` says so), never linked or removed for a reference.
        || cfg.ignore_existing
        || sync::size_limit(cfg, st.size).is_some()
        || sync::kept_by_update(cfg, &d, st)
    {
        return None;
    }
    let m =
        altdest::file_match(core, dirs, parent.src_fd(), (name, dst_name), Some(src), st).await?;
    if m.level != Level::Exact {
        return None;
    }
    let reference = m.reference(dirs);
    if cfg.alt_dest == AltDest::Link {
        if (d.dev, d.ino) == (m.stat.dev, m.stat.ino) {
            // Already that file: up to date as it is.
            return None;
        }
        if !cfg.dry_run {
            let linked = with_temp(core, |t| sys::link_at(reference, dst_name, dir, t)).and_then(
                |(tmp, ())| {
                    sync::rename_over(core, dir, &tmp, dst_name, sync::Rel::Of(parent)).inspect_err(
                        |_| {
                            let _ = sys::unlink_at(dir, &tmp, 0);
                        },
                    )
                },
            );
            if let Err(e) = linked {
                // Copied as without references instead (rsync's "try a copy").
                tracing::debug!(path = %parent.child_rel(dst_name).display(), error = %e, "link to the reference failed");
                return None;
            }
        }
        bump(&core.counters.hard_links, 1);
        Some(true)
    } else {
        if !cfg.dry_run
            && let Err(e) = sys::unlink_at(dir, dst_name, 0)
        {
            report(
                core,
                &parent.child_rel(dst_name),
                "unlink",
                &e,
                ErrorClass::Partial,
            );
            return Some(false);
        }
        bump(&core.counters.unchanged, 1);
        Some(false)
    }
}

/// What one look at a destination directory tells: one `fstat` per directory, and one
/// `fgetxattr` (its default ACL) per directory that was there before the run.
struct DestFacts {
    /// What new entries get from it (group, setgid, permission bits allowed without `-p`).
    made_in: fsops::meta::MadeIn,
    /// The device it is on.
    dev: u64,
    /// Its inode number.
    ino: u64,
    /// For an existing one, given the source directory's stat: it may hold a killed run's
    /// temporaries.
    sweep: bool,
    /// `-A` and it has a default ACL (which new entries inherit).
    inherits_acl: bool,
    /// Its mode before this run opened it to its owner (see [`DirNode::tweaked`]).
    tweaked: Option<u32>,
}

/// `made_by_run`: the facts of the directory it was just made in, whose default ACL a directory
/// made there has too (none is read then). `copy_of`: the source directory whose attributes it
/// is to take: with `-p` its setgid bit is given now, before anything is made in it (as rsync
/// gives a directory its mode before filling it), so what is made there takes the group rsync
/// gives it; the rest of the mode comes when it is finished.
fn dest_dir_facts(
    core: &Core,
    dir: &OwnedFd,
    (existing_src, copy_of): (Option<&Stat>, Option<&Stat>),
    made_by_run: Option<&fsops::meta::MadeIn>,
) -> DestFacts {
    let policy = &core.shared.policy;
    let (default_acl, perms) = match made_by_run {
        Some(p) => (p.default_acl, p.perms),
        None => match fsops::xattr::get(Target::Fd(dir.as_fd()), c"system.posix_acl_default") {
            // Without -p, new entries get what the default ACL allows (rsync's
            // default_perms_for_dir).
            Ok(v) => (
                true,
                fsops::xattr::acl_perms(&v).unwrap_or(0o777 & !policy.umask),
            ),
            Err(_) => (false, 0o777 & !policy.umask),
        },
    };
    let inherits_acl = policy.acls && default_acl;
    let plain = fsops::meta::MadeIn {
        perms,
        default_acl,
        ..fsops::meta::MadeIn::plain(policy.egid, policy.umask)
    };
    match sys::fstat(dir.as_fd()) {
        Ok(before) => {
            let st = setgid_as_source(core, dir, before, copy_of);
            let opened =
                existing_src.and_then(|_| sync::open_to_owner(&core.shared, dir.as_fd(), &st));
            DestFacts {
                made_in: if st.mode & libc::S_ISGID != 0 {
                    fsops::meta::MadeIn {
                        gid: st.gid,
                        setgid: true,
                        ..plain
                    }
                } else {
                    plain
                },
                dev: st.dev,
                ino: st.ino,
                sweep: existing_src
                    .is_some_and(|src| may_hold_temps(&core.shared.config, &st, src)),
                inherits_acl,
                // (The mode it had before this run changed it: what its item is compared with,
                // and put back if its own attributes are not applied.)
                tweaked: if existing_src.is_some() && st.mode != before.mode {
                    Some(before.mode & 0o7777)
                } else {
                    opened
                },
            }
        }
        Err(_) => DestFacts {
            made_in: plain,
            dev: 0,
            ino: 0,
            sweep: false,
            inherits_acl,
            tweaked: None,
        },
    }
}

/// With `-p`, give destination directory `dir` (stat `st`) the setgid bit of the source
/// directory `src` now (see [`dest_dir_facts`]); its stat after.
fn setgid_as_source(core: &Core, dir: &OwnedFd, st: Stat, src: Option<&Stat>) -> Stat {
    let policy = &core.shared.policy;
    let Some(src) = src.filter(|_| policy.perms && !core.shared.config.dry_run) else {
        return st;
    };
    let want = policy.perm_bits(src) & libc::S_ISGID;
    if st.mode & libc::S_ISGID == want {
        return st;
    }
    let mode = (st.mode & 0o7777 & !libc::S_ISGID) | want;
    // (Refused or cut by the kernel, it is tried again when the directory is finished.)
    match sys::fchmod(dir.as_fd(), mode).and_then(|()| sys::fstat(dir.as_fd())) {
        Ok(now) => now,
        Err(_) => st,
    }
}

/// Whether new subtrees are made under a temporary name (the default staging: not with
/// `--inplace`, `--partial` or `--temp-names`, whose files have names of their own, nor when
/// another process takes directories over by their final names, the MPI mode).
pub(crate) fn stages_dirs(cfg: &crate::Config) -> bool {
    !cfg.inplace && !cfg.partial && !cfg.temp_names && cfg.delegate.is_none() && !cfg.dry_run
}

/// Whether an existing destination directory may hold what a killed run left (a temporary
/// file or subtree): making one changed its mtime after the run had set it from the source, so
/// with `-t` a directory whose mtime equals the source's holds none.
fn may_hold_temps(cfg: &crate::Config, dst: &Stat, src: &Stat) -> bool {
    !cfg.dry_run && (!cfg.times || cfg.omit_dir_times || dst.mtime != src.mtime)
}

/// Create (0700) or open the destination directory at a user-given path; whether it was created.
/// A directory named on the command line without a trailing slash (`SRC DEST/`) lands on the
/// destination's entry `DEST/SRC`, an entry like any other: a non-directory there (a file, a
/// special file, or a symlink, even one to a directory but with `-K`) is replaced by the
/// directory, as rsync replaces it (backed up with `-b`), never followed. Before, a file there
/// failed the root ("opendir ...: Not a directory", exit 11), and a symlink to a directory was
/// followed and the copy written into its target. Returns whether the entry is to be taken as
/// absent (a dry run, which changes nothing); `Err`: reported, the root is not copied.
fn clear_root_entry(core: &Core, root: &crate::Root, src: &OwnedFd) -> Result<bool, ()> {
    let cfg = &core.shared.config;
    if root.rel.as_os_str().is_empty() {
        // (`SRC/ DEST`, `-R`, `--files-from`: DEST is the operator's path, followed as rsync
        // follows it.)
        return Ok(false);
    }
    let (Some(name), Ok(parent)) = (
        path_name(&root.dst),
        sys::open_dir_path(&parent_or_dot(&root.dst)),
    ) else {
        return Ok(false);
    };
    let dir = parent.as_fd();
    match sys::lstat_at(dir, &name).map(|st| st.file_type()) {
        Err(_) | Ok(FileType::Dir) => return Ok(false),
        Ok(FileType::Symlink)
            if cfg.keep_dirlinks && sys::open_dir_at_follow(dir, &name).is_ok() =>
        {
            return Ok(false);
        }
        Ok(_) => {}
    }
    let in_the_way = kept_in_the_way(core, (src, &Scope::All), dir, &name).and_then(|kept| {
        if kept || cfg.dry_run {
            return Ok(kept);
        }
        let parent_rel = root.rel.parent().unwrap_or(Path::new(""));
        clear_for_dir(core, dir, &name, parent_rel).map(|()| false)
    });
    match in_the_way {
        Ok(true) => Err(()),
        Ok(false) => Ok(cfg.dry_run),
        Err((op, e, class, _)) => {
            report(core, &root.dst, op, &e, class);
            Err(())
        }
    }
}

fn make_dest_dir_path(path: &Path) -> Result<DestDir, (&'static str, io::Error)> {
    let fresh = match sys::mkdir_path(path, 0o700) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(("mkdir", e)),
    };
    let fd = match sys::open_dir_path(path) {
        // (One of ours the run may not read: see `sys::open_dir_at_as_owner`.)
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => path_name(path)
            .and_then(|name| {
                let parent = sys::open_dir_path(&parent_or_dot(path)).ok()?;
                sys::open_dir_at_as_owner(parent.as_fd(), &name).ok()
            })
            .ok_or(e),
        other => other,
    }
    .map_err(|e| ("opendir", e))?;
    Ok(if fresh {
        DestDir::Created(fd)
    } else {
        DestDir::Existing(fd)
    })
}

/// A directory made under a temporary name, to be renamed into place.
type Staged = Arc<crate::core::StagedDir>;

/// The largest parent (its `st_size`: 64 KiB, about 2,000 names on ext4) that a run into an
/// existing destination root lists for what earlier runs left beside that root.
const STALE_SWEEP_MAX_DIR_SIZE: u64 = 64 << 10;

/// Create or open a directory root's destination `path` with staging: when it does not exist,
/// it is made in its parent under a temporary name (and renamed into place when the root is
/// finished, as a new subdirectory is), so its files are created under their final names with
/// nobody seeing them half-written; a temporary that a killed run left for the same name is
/// removed first. Anything else (it exists, its parent cannot be read, or its parent is inside
/// the source directory `src`, whose scan would find the temporary) goes as
/// [`make_dest_dir_path`], which reports what is wrong. A temporary that an earlier run left
/// for the same name is removed also when the destination exists by now (that run was killed
/// before making it, or could not rename its copy into place because the name had been taken
/// meanwhile) and the parent is small enough to list cheaply ([`STALE_SWEEP_MAX_DIR_SIZE`]):
/// this run copies into the destination itself.
fn make_staged_root(
    core: &Core,
    path: &Path,
    src: (u64, u64),
) -> Result<(DestDir, Option<Staged>), (&'static str, io::Error)> {
    let unstaged = || make_dest_dir_path(path).map(|d| (d, None));
    let Some(name) = path_name(path) else {
        return unstaged();
    };
    let Ok(parent) = sys::open_dir_path(&parent_or_dot(path)) else {
        return unstaged();
    };
    let tag = sync::root_temp_tag(&name);
    let remove_stale =
        || sync::remove_stale_roots(&core.shared, &core.counters, parent.as_fd(), &tag, path);
    match sys::lstat_at(parent.as_fd(), &name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Ok(_) => {
            // (Only where that listing is cheap: a parent of up to a few thousand names. A
            // re-sync into a crowded parent keeps its cost; a later run that makes DEST anew
            // sweeps whatever its size.)
            if sys::fstat(parent.as_fd()).is_ok_and(|p| p.size <= STALE_SWEEP_MAX_DIR_SIZE) {
                remove_stale();
            }
            return unstaged();
        }
        Err(_) => return unstaged(),
    }
    if within(parent.as_fd(), src) {
        return unstaged();
    }
    remove_stale();
    let (tmp, ()) = with_temp_named(core, &tag, |t| sys::mkdir_at(parent.as_fd(), t, 0o700))
        .map_err(|e| ("mkdir", e))?;
    let fd = sys::open_dir_at(parent.as_fd(), &tmp).map_err(|e| {
        let _ = sys::unlink_at(parent.as_fd(), &tmp, libc::AT_REMOVEDIR);
        ("opendir", e)
    })?;
    let staged = core
        .shared
        .stage_dir(Arc::new(parent), tmp, name, path.to_path_buf());
    Ok((DestDir::Created(fd), Some(staged)))
}

/// Whether directory `dir` is directory `top` (device, inode) or below it: its `..` chain,
/// followed up to `/` (or to where it cannot be read, taken as inside, the cautious answer).
fn within(dir: BorrowedFd<'_>, top: (u64, u64)) -> bool {
    let mut here = match sys::fstat(dir) {
        Ok(st) => st,
        Err(_) => return true,
    };
    let mut fd = None::<OwnedFd>;
    loop {
        if (here.dev, here.ino) == top {
            return true;
        }
        let at = fd.as_ref().map_or(dir, |f| f.as_fd());
        let up = match sys::open_dir_at_follow(at, c"..") {
            Ok(up) => up,
            Err(_) => return true,
        };
        let above = match sys::fstat(up.as_fd()) {
            Ok(st) => st,
            Err(_) => return true,
        };
        if (above.dev, above.ino) == (here.dev, here.ino) {
            // `/`: its own parent.
            return false;
        }
        here = above;
        fd = Some(up);
    }
}

/// Read one batch of `node`'s entries and push a task for each, plus a continuation.
fn scan(core: &Rc<Core>, node: Arc<DirNode>) {
    match &node.scope {
        Scope::Names(sel, at) => {
            let (sel, at) = (Arc::clone(sel), *at);
            return scan_names(core, node, &sel, at);
        }
        Scope::Empty => {
            core.shared.progress.scan_ended();
            child_done(core, node);
            return;
        }
        Scope::All | Scope::AllWith(..) | Scope::Contents(..) => {}
    }
    let mut reader = core.dir_reader.borrow_mut();
    match getdents(core, &mut reader, &node) {
        Ok(true) => {}
        Ok(false) => {
            drop(reader);
            core.shared.progress.scan_ended();
            tracing::debug!(core = core.index, dir = %node.rel().display(), "directory listed");
            child_done(core, node);
            return;
        }
        Err(e) => {
            drop(reader);
            core.shared.progress.scan_ended();
            node.scan_failed.store(true, Ordering::Relaxed);
            report(core, &node.src_path(), "getdents", &e, source_class(&e));
            child_done(core, node);
            return;
        }
    }
    #[cfg(feature = "test-hooks")]
    {
        let base = node
            .rel()
            .file_name()
            .map_or(b".".to_vec(), |n| n.as_bytes().to_vec());
        let base = CString::new(base).expect("no NUL in a file name");
        crate::hooks::fire(crate::hooks::Point::AfterBatch, node.src_fd(), &base);
    }
    let mut batch = core.batch.borrow_mut();
    let mut dirs = core.batch_dirs.borrow_mut();
    batch.clear();
    dirs.clear();
    let filters = core.shared.config.filters.has_sender_rules();
    let prune = core.shared.config.prune_empty_dirs;
    // The directory's path, which the rules match entries by: made once for the batch.
    let rel = (filters || prune).then(|| node.rel());
    let mut names = node
        .names
        .as_ref()
        .map(|n| n.lock().unwrap_or_else(|p| p.into_inner()));
    // `None`: more to read later (a continuation task); `Some`: the listing ended here, with
    // the error that ended it if any.
    let mut ended: Option<Option<io::Error>> = None;
    let mut reads = 1;
    loop {
        for ent in reader.entries() {
            let mut file_type = ent.file_type;
            if filters || prune {
                match admitted(core, (&node, true), rel.as_deref(), ent.name, file_type) {
                    Some(ft) => file_type = ft,
                    None => continue,
                }
            }
            if let Some(names) = names.as_mut() {
                names.push(ent.name.to_owned());
            }
            let task = Task::Entry {
                parent: Arc::clone(&node),
                name: crate::name::Name::new(ent.name),
                file_type,
                ino: ent.ino,
            };
            if file_type == FileType::Dir {
                dirs.push(task);
            } else {
                batch.push(task);
            }
        }
        // A short batch is most likely the last: look now, so that a small directory needs no
        // continuation (whose scan unit would keep the directory busy, and its fds open, until
        // the continuation ran after its whole subtree). A few short batches at most per task.
        if !reader.short() || reads == 4 {
            break;
        }
        reads += 1;
        match getdents(core, &mut reader, &node) {
            Ok(true) => {}
            Ok(false) => {
                ended = Some(None);
                break;
            }
            Err(e) => {
                ended = Some(Some(e));
                break;
            }
        }
    }
    drop(names);
    drop(reader);
    tracing::trace!(
        core = core.index,
        dir = %node.rel().display(),
        entries = batch.len() + dirs.len(),
        "directory batch listed"
    );
    // (A listed directory counts 1 until it is entered: see `enter_listed`.)
    node.pending.fetch_add(
        batch.len() as u64 * BUSY + dirs.len() as u64,
        Ordering::AcqRel,
    );
    if !dirs.is_empty() {
        node.queued_dirs
            .fetch_add(dirs.len() as u32, Ordering::Relaxed);
    }
    if ended.is_none() {
        // The continuation goes first: children pop before it (LIFO); an idle core steals it
        // first.
        core.push(Task::Scan(Arc::clone(&node)));
    }
    {
        let mut w = core.worker.borrow_mut();
        for t in dirs.drain(..).chain(batch.drain(..)) {
            w.push(t);
        }
    }
    drop((batch, dirs));
    if let Some(error) = ended {
        core.shared.progress.scan_ended();
        match error {
            None => {
                tracing::debug!(core = core.index, dir = %node.rel().display(), "directory listed");
            }
            Some(e) => {
                node.scan_failed.store(true, Ordering::Relaxed);
                report(core, &node.src_path(), "getdents", &e, source_class(&e));
            }
        }
        child_done(core, node);
    }
}

/// Read `node`'s next batch into `reader` (timed); `false` at the end of the directory.
fn getdents(core: &Core, reader: &mut fsops::DirReader, node: &DirNode) -> io::Result<bool> {
    let t = core.lat.start();
    let filled = reader.fill(node.src_fd());
    core.lat.record(Op::Getdents, t);
    filled
}

/// Whether entry `name` (type `ft` as listed) of `node`'s listing belongs to the transfer under
/// the filter rules and `-m`; its type, looked up when the listing did not say. `rel`: the
/// directory's path, when the caller made it once for many entries. `report`: the scan's own
/// call, which reports what a directory pruned by `-m` could not follow (a second look, such as
/// `--delete-before`'s, does not report it again).
fn admitted(
    core: &Core,
    (node, report): (&DirNode, bool),
    rel: Option<&Path>,
    name: &CStr,
    mut ft: FileType,
) -> Option<FileType> {
    if ft == FileType::Unknown
        && let Ok(st) = sys::lstat_at(node.src_fd(), name)
    {
        ft = st.file_type();
    }
    let excluded_as = |ft: FileType| {
        filtered(
            core,
            rel.map_or(sync::Rel::Of(node), sync::Rel::Given),
            name.to_bytes(),
            ft,
            node.dir_rules.as_deref(),
            &|| sys::abs_name(node.src_fd(), name.to_bytes()),
        )
    };
    // With -L a symlink is matched as what it points to, as rsync matches it (`dir/` rules
    // take a symlink to a directory); one that leads nowhere is left out silently when the
    // rules exclude it as a file or as a directory, as rsync checks before it reports.
    let seen_as = if ft == FileType::Symlink && core.shared.config.copy_links {
        match sys::stat_at(node.src_fd(), name) {
            Ok(st) => st.file_type(),
            Err(_) if excluded_as(FileType::File) || excluded_as(FileType::Dir) => return None,
            Err(_) => ft,
        }
    } else {
        ft
    };
    if excluded_as(seen_as) {
        // An excluded directory with named paths below it (`--files-from` naming `d` and
        // `d/x/y` with `x` excluded): walked for those alone, as rsync sends each named path
        // on its own (`enter_dir` gives it their scope).
        let through = ft == FileType::Dir
            && matches!(node.scope, Scope::AllWith(..))
            && node
                .scope
                .named_below_at(name)
                .is_some_and(|(sel, i)| implied_way_leads_somewhere(core, node, &sel, (i, name)));
        return through.then_some(ft);
    }
    if core.shared.config.prune_empty_dirs
        && sent_as_dir(&core.shared.config, node.src_fd(), name, (ft, node.depth))
        && !child_holds_content(core, node, name, report)
    {
        // Left out as if excluded (and so extraneous to --delete), as rsync's -m.
        return None;
    }
    Some(ft)
}

/// `-m`: whether entry `name` (listed as `ft`, in a directory at `depth`) is sent as a
/// directory: one, or a symlink to one that `-L`, `-k` or `--copy-unsafe-links` follows.
fn sent_as_dir(
    cfg: &crate::Config,
    dir: BorrowedFd<'_>,
    name: &CStr,
    (ft, depth): (FileType, usize),
) -> bool {
    ft == FileType::Dir
        || (ft == FileType::Symlink
            && cfg.follows_symlinks()
            && link_sent_as(cfg, dir, name, depth)
                .is_ok_and(|(t, followed)| followed && t == FileType::Dir))
}

/// `--delete-before`: before any entry of `node` is copied, read its whole source listing
/// (as the scan will admit it) and delete what the destination has beyond it, as rsync deletes
/// before it transfers a directory. A listing that fails deletes nothing (but with
/// `--ignore-errors`: what was read counts).
fn delete_before(core: &Core, node: &DirNode) {
    let cfg = &core.shared.config;
    let mut names = Vec::new();
    let rel = node.rel();
    let listed = sys::open_dir_at(node.src_fd(), c".").and_then(|fd| {
        let mut reader = fsops::DirReader::default();
        while reader.fill(fd.as_fd())? {
            for ent in reader.entries() {
                if admitted(core, (node, false), Some(&rel), ent.name, ent.file_type).is_some() {
                    names.push(ent.name.to_owned());
                }
            }
        }
        Ok(())
    });
    if let Err(e) = &listed {
        report(
            core,
            &node.src_path(),
            "getdents (delete)",
            e,
            source_class(e),
        );
        if !cfg.ignore_errors {
            return;
        }
    }
    delete_extraneous(
        core,
        node.dst_fd(),
        (node.root, &node.rel()),
        (node.stat, deletion_rules(core, node)),
        names,
        &node.src_path(),
    );
}

/// A directory walked by names (`--files-from`, `-R`): one `lstat` per selected name below
/// node `at` of `sel`, a task for each that exists and no rule excludes. A selected name that
/// does not exist is reported as rsync reports it (or passed over, or deleted from the
/// destination, with `--ignore-missing-args`/`--delete-missing-args`).
///
/// A name only on the way to selected paths (an implied directory) is taken only when one of
/// those paths exists, as rsync's sender adds the implied directories of each path it finds:
/// otherwise each of them is reported as missing and nothing of the way is made. Before, `-R
/// src/a/b/c` with `src/a/b` a file copied that file and ended with 0 (rsync: `link_stat
/// "src/a/b/c" failed: Not a directory`, 23), and a missing `-R src/a/gone` made `src/a/`.
fn scan_names(core: &Rc<Core>, node: Arc<DirNode>, sel: &crate::Selection, at: usize) {
    let cfg = &core.shared.config;
    let mut tasks = Vec::new();
    let mut dirs = 0;
    for name in sel.children(at) {
        // Only on the way to listed paths (not listed itself).
        let implied = sel.child(at, name).filter(|&i| !sel.listed(i));
        if let Some(i) = implied
            && cfg.missing_args != crate::MissingArgs::Delete
            && !implied_way_leads_somewhere(core, &node, sel, (i, name))
        {
            continue;
        }
        let st = match sys::lstat_at(node.src_fd(), name) {
            Ok(st) => st,
            Err(e) => {
                let missing = e.kind() == io::ErrorKind::NotFound;
                match cfg.missing_args {
                    crate::MissingArgs::Ignore if missing => {}
                    crate::MissingArgs::Delete if missing => {
                        if !node.fresh && !node.hidden {
                            let shown = node.child_rel(name);
                            delete_missing_at(core, node.dst_fd(), name, &node.rel(), &shown);
                        }
                    }
                    _ => report(
                        core,
                        &node.child_src_path(name),
                        "link_stat",
                        &e,
                        ErrorClass::Partial,
                    ),
                }
                continue;
            }
        };
        // A directory only on the way to listed paths is not subject to the rules, as rsync's
        // sender adds implied directories unfiltered (before, `--exclude=a/` dropped every
        // listed `a/b/c/file` without a word).
        if implied.is_none()
            && filtered(
                core,
                sync::Rel::Of(&node),
                name.to_bytes(),
                st.file_type(),
                node.dir_rules.as_deref(),
                &|| sys::abs_name(node.src_fd(), name.to_bytes()),
            )
        {
            // A named directory the rules exclude, with named paths below it: rsync takes
            // each of those on its own, the directory then on their way as an implied one
            // (`enter_dir` gives it their scope; before, they were all left out).
            let through = st.file_type() == FileType::Dir
                && node.scope.named_below(name).is_some()
                && sel.child(at, name).is_some_and(|i| {
                    cfg.missing_args == crate::MissingArgs::Delete
                        || implied_way_leads_somewhere(core, &node, sel, (i, name))
                });
            if !through {
                continue;
            }
        }
        // (Without -r only what is named below a directory is sent: it holds something when
        // one of those leads somewhere.)
        if implied.is_none()
            && cfg.prune_empty_dirs
            && sent_as_dir(cfg, node.src_fd(), name, (st.file_type(), node.depth))
            && !child_holds_content(core, &node, name, true)
            && (cfg.recursive
                || sel.child(at, name).is_none_or(|i| {
                    sel.children(i).next().is_none()
                        || !implied_way_leads_somewhere(core, &node, sel, (i, name))
                }))
        {
            // `-m`: a named directory with nothing in it but directories is left out, as rsync
            // prunes it (and the directories on its way, which then lead nowhere).
            continue;
        }
        dirs += usize::from(st.file_type() == FileType::Dir);
        tasks.push(Task::Entry {
            parent: Arc::clone(&node),
            name: crate::name::Name::new(name),
            file_type: st.file_type(),
            ino: st.ino,
        });
    }
    node.pending.fetch_add(
        (tasks.len() - dirs) as u64 * BUSY + dirs as u64,
        Ordering::AcqRel,
    );
    node.queued_dirs.fetch_add(dirs as u32, Ordering::Relaxed);
    core.shared.progress.scan_ended();
    {
        let mut w = core.worker.borrow_mut();
        for t in tasks {
            w.push(t);
        }
    }
    child_done(core, node);
}

/// Whether any selected path below the implied name `name` (node `i` of `sel`) exists in the
/// source; when none does, each is reported as [`scan_names`] reports a missing name.
fn implied_way_leads_somewhere(
    core: &Core,
    node: &DirNode,
    sel: &crate::Selection,
    (i, name): (usize, &CStr),
) -> bool {
    let path_of = |rel: &[u8]| {
        let mut p = name.to_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(rel);
        CString::new(p).ok()
    };
    // The missing ones, reported if none leads somewhere (every one was looked at then).
    let mut missing = Vec::new();
    // (One the rules exclude leads nowhere either: rsync makes no implied directory for it; nor,
    // with -m, a directory that holds nothing but directories: rsync prunes it.)
    let mut live = |rel: &[u8]| {
        let Some(p) = path_of(rel) else { return false };
        // (With -L a symlink stands for what it points to: one that leads nowhere fails as rsync's
        // link_stat fails, and makes no implied directory.)
        let st = match sys::lstat_at(node.src_fd(), &p).and_then(|st| {
            if st.file_type() == FileType::Symlink && core.shared.config.copy_links {
                sys::stat_at(node.src_fd(), &p)
            } else {
                Ok(st)
            }
        }) {
            Ok(st) => st,
            Err(e) => {
                missing.push((rel.to_vec(), e));
                return false;
            }
        };
        let full = node.rel().join(std::ffi::OsStr::from_bytes(p.as_bytes()));
        let dir = full.parent().unwrap_or(Path::new(""));
        let leaf = full.file_name().map_or(&b""[..], |n| n.as_bytes());
        let cfg = &core.shared.config;
        // (As `scan_names` prunes a named directory; without -r what is named below it is
        // looked at on its own by this walk.)
        let depth = node.depth + p.to_bytes().split(|&b| b == b'/').count() - 1;
        let pruned = || {
            cfg.prune_empty_dirs
                && sent_as_dir(cfg, node.src_fd(), &p, (st.file_type(), depth))
                && !holds_content(core, node.src_fd(), &p, full.clone(), (None, None))
        };
        !filtered(
            core,
            sync::Rel::Given(dir),
            leaf,
            st.file_type(),
            None,
            &|| sys::abs_name(node.src_fd(), p.as_bytes()),
        ) && !pruned()
    };
    if sel.any_listed_below(i, &mut live) {
        return true;
    }
    let ignore = core.shared.config.missing_args == crate::MissingArgs::Ignore;
    for (rel, e) in missing {
        if !(ignore && e.kind() == io::ErrorKind::NotFound) {
            let shown = node
                .child_src_path(name)
                .join(std::ffi::OsStr::from_bytes(&rel));
            report(core, &shown, "link_stat", &e, ErrorClass::Partial);
        }
    }
    false
}

/// The item event of a directory, when it is entered: new, or what differs from the source
/// before any child is written into it.
fn dir_item(core: &Core, node: &DirNode) {
    let cfg = &core.shared.config;
    // (`--mkpath`'s destination is new to the run but was there when the transfer began.)
    let new = node.fresh
        && !(cfg.dest_premade
            && node.parent.is_none()
            && cfg.create_dest_dir.as_ref() == Some(&cfg.roots[node.root].dst));
    if !core.shared.wants_items && !new {
        return;
    }
    let change = if new {
        match (node.alt_dest(), &node.stat) {
            // Itemized against a reference directory, as rsync does.
            (Some(dirs), Some(st)) => match altdest::dir_match(core, dirs, node.src_fd(), st) {
                Some(b) => Change {
                    how: How::Local,
                    ..sync::attr_change(&core.shared, &b, st, false)
                },
                None => Change::new_entry(How::Local),
            },
            _ => Change::new_entry(How::Local),
        }
    } else {
        match (sys::fstat(node.dst_fd()), &node.stat) {
            (Ok(mut d), Some(st)) => {
                if let Some(mode) = node.tweaked {
                    // Opened to its owner by this run: what it was is what differs.
                    d.mode = (d.mode & !0o7777) | mode;
                }
                let mut c = sync::attr_change(&core.shared, &d, st, false);
                if let Ok(p) = fsops::meta::xattr_plan(
                    Target::Fd(node.src_fd()),
                    Target::Fd(node.dst_fd()),
                    &core.shared.policy,
                    false,
                ) {
                    c.xattr = p.touches_xattr();
                    c.acl = p.touches_acl();
                }
                c
            }
            _ => return,
        }
    };
    if change.new || sync::attrs_differ(&change) {
        item(
            core,
            (node.root, || node.rel()),
            (FileType::Dir, node.stat.as_ref()),
            0,
            &change,
            None,
        );
    } else {
        unchanged_item(
            core,
            (node.root, || node.rel()),
            (FileType::Dir, node.stat.as_ref()),
            change.how,
            None,
        );
    }
}

/// One unit of a directory's `pending` that keeps its fds in use: its scan, one listed entry
/// that is not a directory, or a listed directory being entered. A listed directory not entered
/// yet and a subdirectory's node count 1 each, so the count of busy units is `pending / BUSY`
/// and that of subdirectories (listed or entered) `pending % BUSY` (less [`PARKING`]).
const BUSY: u64 = 1 << 32;

/// Set in a directory's `pending` while a thread parks its fds ([`park`]): a thread about to
/// enter one of its listed subdirectories waits for it to go ([`enter_listed`]).
const PARKING: u64 = 1 << 31;

/// A busy unit of `node` is given back (its scan ended, or one of its entries is done): count
/// it down, finishing directories that reach zero.
fn child_done(core: &Core, node: Arc<DirNode>) {
    count_down(core, node, BUSY, None);
}

/// One subdirectory of `node` is finished (`from`, when its fds are at hand): count it down.
fn subdir_done(core: &Core, node: Arc<DirNode>, from: Option<Arc<DirNode>>) {
    count_down(core, node, 1, from);
}

/// Give back `unit` of `node`'s count; whoever takes it to zero finishes the directory and
/// then gives back the parent's unit for it, and so on up.
///
/// # Parking
///
/// When the last busy unit goes and subdirectories are left, nothing uses the node's fds until
/// one of its listed subdirectories is entered or it is finished: busy units are only added by
/// its scan (which has ended) and by a thread about to enter a listed subdirectory. If the run
/// holds more directories open than its share of the open-file limit, the node then parks
/// (closes) them ([`park`]). The thread that finishes a subdirectory of a parked node gets them
/// back through that subdirectory's `..` ([`reopen`]) when the node is finished with it, or when
/// listed subdirectories are still to be entered; a thread entering one finds them back, or
/// opens them from the transfer's top itself ([`enter_listed`]).
fn count_down(core: &Core, mut node: Arc<DirNode>, mut unit: u64, mut from: Option<Arc<DirNode>>) {
    loop {
        if unit == 1
            && node.fds.parked()
            && node.queued_dirs.load(Ordering::Relaxed) > 0
            && let Some(f) = from.as_deref()
        {
            // Listed subdirectories are still to be entered: get the fds back while the
            // finished one's `..` is at hand (failing that, the next one entered tries from the
            // top), holding a busy unit meanwhile. The subdirectory's unit goes first; giving
            // the busy one back below parks the node again if no listed subdirectory is left
            // by then (one was entered meanwhile) and another subdirectory is being copied.
            hold(&node, BUSY);
            if node.fds.parked() {
                let _ = reopen(core, &node, Some(f), true);
            }
            node.pending.fetch_sub(1, Ordering::AcqRel);
            unit = BUSY;
        }
        let before = node.pending.fetch_sub(unit, Ordering::AcqRel);
        if before != unit {
            let after = before - unit;
            if unit != BUSY || after >= BUSY || !park(core, &node) {
                return;
            }
            // Its last subdirectory finished while it parked: finish it here (its fds are back).
        }
        finish_dir(core, &node, from.as_deref());
        match node.parent.clone() {
            Some(p) => {
                from = Some(node);
                node = p;
                unit = 1;
            }
            None => return,
        }
    }
}

/// Park `node`'s fds if open directories are over the run's share and it can be reopened;
/// `node` has no busy unit left and some subdirectories. Returns whether `node` must be
/// finished by the caller (its last subdirectory finished meanwhile).
///
/// A node parks only while one of its subdirectories is being copied (whose finish can bring
/// the fds back cheaply); not with listed subdirectories alone, the next of which would reopen
/// them at once. A transfer's top never parks: reopening starts from it.
fn park(core: &Core, node: &DirNode) -> bool {
    if node.ids.is_none()
        || matches!(node.place, Place::Top { .. })
        || !core.shared.open_dirs.pressed()
    {
        return false;
    }
    let queued = u64::from(node.queued_dirs.load(Ordering::Relaxed));
    // Raise the flag: threads about to enter a listed subdirectory wait until it is down, and no
    // finisher runs meanwhile (none at all if its last subdirectory has finished it already).
    if node
        .pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v < BUSY && v & PARKING == 0 && v.saturating_sub(queued) > 0).then_some(v | PARKING)
        })
        .is_err()
    {
        return false;
    }
    // SAFETY: no busy unit was left when the flag went up; only holders of busy units use the
    // fds (`get`), and a thread that adds one to enter a listed subdirectory waits until the
    // flag is down (and, if a busy unit came meanwhile, the fds are back, below); the flag keeps
    // the finisher, the only other user, away.
    let mut fds = unsafe { node.fds.take() };
    let after = loop {
        let v = node.pending.load(Ordering::Acquire);
        if v >= BUSY
            && let Some(f) = fds.take()
        {
            // Someone is entering a listed subdirectory: it gets the fds back.
            node.fds.put(f);
        }
        if node
            .pending
            .compare_exchange(v, v - PARKING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break v - PARKING;
        }
    };
    if after == 0 {
        // Every subdirectory finished meanwhile: the caller finishes it, with its fds.
        if let Some(f) = fds {
            node.fds.put(f);
        }
        return true;
    }
    if fds.is_some() {
        bump(&core.counters.parked_dirs, 1);
    }
    false
}

/// A listed subdirectory of `node` is about to be entered: turn its unit into a busy one, so
/// that the node keeps its fds until it is entered, and get them back if the node parked them
/// (from its transfer's top). Returns `false`, reported, when they cannot be had.
fn enter_listed(core: &Core, node: &DirNode) -> bool {
    hold(node, BUSY - 1);
    node.queued_dirs.fetch_sub(1, Ordering::Relaxed);
    if !node.fds.parked() {
        return true;
    }
    match reopen(core, node, None, true) {
        Ok(()) => true,
        Err(e) => {
            report(
                core,
                &node.dst_path(),
                "reopen directory (to enter its subdirectories)",
                &e,
                ErrorClass::Partial,
            );
            false
        }
    }
}

/// Add `add` to `node`'s count, taking a busy unit, and wait until no thread is parking its
/// fds: that thread sees the busy unit and puts them back before the flag goes down. Then the
/// fds are either there or parked for good, until the busy unit is given back.
fn hold(node: &DirNode, add: u64) {
    let before = node.pending.fetch_add(add, Ordering::AcqRel);
    if before & PARKING != 0 {
        let mut spins = 0u32;
        while node.pending.load(Ordering::Acquire) & PARKING != 0 {
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Open a parked node's directories again: through the `..` of its just finished subdirectory
/// `from`, or else from its transfer's top ([`open_from_top`]), each checked to be the same
/// directory; and its reference directories (`--link-dest` and the like, from the top: where
/// one is missing, the entries have none there) if `for_entries` (listed subdirectories are
/// left to enter).
fn reopen(
    core: &Core,
    node: &DirNode,
    from: Option<&DirNode>,
    for_entries: bool,
) -> io::Result<()> {
    let (src_id, dst_id) = node.ids.expect("only a node with identities parks");
    let from = from.filter(|f| !f.fds.parked());
    let same = |fd: OwnedFd, id: (u64, u64)| {
        if sys::fstat(fd.as_fd()).is_ok_and(|s| (s.dev, s.ino) == id) {
            Ok(fd)
        } else {
            Err(io::Error::other(
                "the directory was moved or replaced during the copy",
            ))
        }
    };
    let again = |up: Option<BorrowedFd<'_>>, tree: Tree, id: (u64, u64)| {
        // Through `..` first; from the top only when that fails, and then `..`'s error is the
        // one told.
        let first = match up.map(|d| sys::open_dir_at(d, c"..").and_then(|fd| same(fd, id))) {
            Some(Ok(fd)) => return Ok(fd),
            Some(Err(e)) => Some(e),
            None => None,
        };
        open_from_top(node, tree)
            .and_then(|fd| same(fd, id))
            .map_err(|e| first.unwrap_or(e))
    };
    let src = again(from.map(|f| f.src_fd()), Tree::Src, src_id)?;
    let dst = match dst_id {
        Some(id) => Arc::new(again(from.map(|f| f.dst_fd()), Tree::Dst, id)?),
        None => Arc::clone(&core.shared.placeholder),
    };
    let alt = (for_entries && !core.shared.config.alt_dest_dirs.is_empty()).then(|| {
        (0..core.shared.config.alt_dest_dirs.len())
            .map(|i| open_from_top(node, Tree::Alt(i)).ok())
            .collect()
    });
    let fds = DirFds::new(src, dst, alt, &core.shared.open_dirs);
    if node.fds.put(Box::new(fds)) {
        bump(&core.counters.reopened_dirs, 1);
    }
    Ok(())
}

/// Open the directory `names` (in order) lead to below `base`, following symlinks, in relative
/// paths shorter than `PATH_MAX` (a chain may be far deeper).
fn open_names(base: BorrowedFd<'_>, names: &[&CStr]) -> io::Result<OwnedFd> {
    let mut at: Option<OwnedFd> = None;
    let mut path: Vec<u8> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        let full = names
            .get(i + 1)
            .is_none_or(|n| path.len() + 1 + n.to_bytes().len() >= libc::PATH_MAX as usize);
        if full {
            let c = CString::new(std::mem::take(&mut path)).expect("no NUL in a file name");
            let dir = at.as_ref().map_or(base, |d| d.as_fd());
            at = Some(sys::open_dir_at_follow(dir, &c)?);
        }
    }
    at.ok_or_else(|| io::Error::other("no directory below the top was named"))
}

/// Which of a node's directories [`open_from_top`] opens.
#[derive(Clone, Copy)]
enum Tree {
    Src,
    Dst,
    /// Its counterpart in reference directory `.0` (`--link-dest` and the like).
    Alt(usize),
}

/// Open `node`'s directory in `tree` from its transfer's top (which never parks), name by name
/// down the nodes in between, in relative paths shorter than `PATH_MAX` (a chain may be far
/// deeper). Symlinks are followed (a directory entered through one, `-L`/`-K`); the caller
/// checks the identity of what it opened. Below a new subtree's top, the destination names go
/// through the top's temporary name.
fn open_from_top(node: &DirNode, tree: Tree) -> io::Result<OwnedFd> {
    let (chain, top) = node.below_top();
    let mut names: Vec<&CStr> = chain
        .iter()
        .map(|n| match (&n.staged, tree) {
            (Some(staged), Tree::Dst) => staged.tmp(),
            _ => n.listed_name(),
        })
        .collect();
    let top = top.fds.get();
    let base = match tree {
        Tree::Src => top.src(),
        Tree::Dst => top.dst(),
        Tree::Alt(i) => top
            .alt
            .as_ref()
            .and_then(|a| a.get(i)?.as_ref())
            .map(|d| d.as_fd())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?,
    };
    names.reverse();
    open_names(base, &names)
}

/// The identities by which a node can be reopened after parking (see [`DirNode::ids`]), `None`
/// where the destination's is not known.
fn parkable_ids(
    core: &Core,
    src: &Stat,
    dst: &Arc<OwnedFd>,
    (dev, ino): (u64, u64),
) -> Option<Ids> {
    let stand_in = Arc::ptr_eq(dst, &core.shared.placeholder);
    (stand_in || ino != 0).then_some(((src.dev, src.ino), (!stand_in).then_some((dev, ino))))
}

/// [`reopen`] for a directory's last step, retried while the process is out of file
/// descriptors: the fds of the other cores' files in flight come back within moments, and the
/// directory's attributes must not be lost to a passing peak (seen under a 64-fd limit with two
/// cores: `reopen directory (to apply its attributes) ... Too many open files`). Bounded: about
/// two seconds, then the error stands.
fn reopen_to_finish(core: &Core, node: &DirNode, from: Option<&DirNode>) -> io::Result<()> {
    let mut tries = 0u32;
    if let Some(up) = node.parent.as_deref().filter(|p| !p.fds.parked()) {
        crate::hooks::fire(
            crate::hooks::Point::BeforeFinish,
            up.src_fd(),
            node.listed_name(),
        );
    }
    loop {
        match reopen(core, node, from, false) {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
                    && tries < 400 =>
            {
                tries += 1;
                crate::hooks::release_fds();
                std::thread::sleep(std::time::Duration::from_micros(if tries < 10 {
                    100
                } else {
                    5_000
                }));
            }
            r => return r,
        }
    }
}

fn finish_dir(core: &Core, node: &DirNode, from: Option<&DirNode>) {
    if node.fds.parked()
        && let Err(e) = reopen_to_finish(core, node, from)
    {
        report(
            core,
            &node.dst_path(),
            "reopen directory (to apply its attributes)",
            &e,
            ErrorClass::Partial,
        );
    } else {
        finish_dir_meta(core, node);
    }
    if let Some(staged) = &node.staged
        && let Err(e) = staged.publish()
    {
        report(
            core,
            &staged.shown,
            "rename (new directory)",
            &e,
            ErrorClass::Partial,
        );
    }
}

/// The per-directory rules that protect `node`'s destination entries: the destination's own
/// merge files as they were before the copy (`--delete`, `--delete-before`, `--delete-delay`),
/// or, with `--delete-after`, the source's (which the copy has just put there), as rsync's
/// receiver reads them.
fn deletion_rules<'a>(core: &Core, node: &'a DirNode) -> Option<&'a Arc<DirRules>> {
    match core.shared.config.delete {
        Some(Delete::After) => node.dir_rules.as_ref(),
        _ => node.dest_rules.as_ref(),
    }
}

/// `--delete`/`--delete-after`: remove (now, or at the end of the run) the entries of the
/// destination directory `dst` (`rel` in transfer root `root`) that the source listing `names`
/// lacks and no rule protects; `stat` is the source directory's, whose times are set again after
/// a later deletion.
/// For each of `roots`, the others whose destinations meet its own (the same directory, or
/// one inside the other), in ascending order. The destinations sorted (component by component), a destination's
/// ancestors among them come before it, each with all that lie between below it: a sweep with
/// a stack of open ancestors finds every pair in O(n log n + pairs) — a run of 50,000 files
/// given on the command line meets none.
pub(crate) fn root_overlaps(roots: &[crate::Root]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by(|&a, &b| roots[a].dst.cmp(&roots[b].dst));
    let mut out = vec![Vec::new(); roots.len()];
    let mut open: Vec<usize> = Vec::new();
    for i in order {
        while let Some(&top) = open.last() {
            if roots[i].dst.starts_with(&roots[top].dst) {
                break;
            }
            open.pop();
        }
        for &a in &open {
            out[a].push(i);
            out[i].push(a);
        }
        open.push(i);
    }
    for v in &mut out {
        v.sort_unstable();
    }
    out
}

/// The passes of a run: each root in the first pass after every earlier root it meets, so the
/// roots of a pass meet none of each other, and of two that meet the one given first runs first.
pub(crate) fn root_phases(overlaps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut pass = vec![0usize; overlaps.len()];
    let mut phases: Vec<Vec<usize>> = vec![Vec::new()];
    for i in 0..overlaps.len() {
        pass[i] = overlaps[i]
            .iter()
            .take_while(|&&k| k < i)
            .map(|&k| pass[k] + 1)
            .max()
            .unwrap_or(0);
        if phases.len() <= pass[i] {
            phases.push(Vec::new());
        }
        phases[pass[i]].push(i);
    }
    phases
}

/// The source entry at destination path `path` of root `k`, if `path` is in `k`'s destination
/// (its source joined with the path below its destination).
fn root_entry_at(cfg: &crate::Config, k: usize, path: &Path) -> Option<Stat> {
    let other = &cfg.roots[k];
    let below = path.strip_prefix(&other.dst).ok()?;
    let src = if below.as_os_str().is_empty() {
        other.src.clone()
    } else {
        other.src.join(below)
    };
    sys::lstat_path(&src).ok()
}

/// Whether a root other than `root` whose destination meets its own has a source entry at
/// destination path `path`: `--delete` of one root keeps what another one copies to the same
/// place, as rsync deletes only what none of its sources has. (A `-R`/`--files-from` root
/// counts any entry below its source, selected or not: what it keeps is never more than rsync
/// might.)
fn another_root_has(shared: &RunShared, root: usize, path: &Path) -> bool {
    shared.overlaps[root]
        .iter()
        .any(|&k| root_entry_at(&shared.config, k, path).is_some())
}

/// The source entry that a root given before `root`, whose destination meets its own, has at
/// destination path `path` (the first such root's), if any: that root, which runs first,
/// copied it.
fn earlier_root_has(shared: &RunShared, root: usize, path: &Path) -> Option<Stat> {
    shared.overlaps[root]
        .iter()
        .take_while(|&&k| k < root)
        .find_map(|&k| root_entry_at(&shared.config, k, path))
}

/// The attributes for destination directory `path` of root `root`, whose source directory has
/// `st`: those of an earlier root's source directory there, if one has it (the directory is
/// made by that root, which runs first; this one adds its own entries, and gives the directory
/// the first root's attributes again when it is finished, as rsync keeps the first of duplicate
/// names).
fn merged_dir_stat(
    shared: &RunShared,
    root: usize,
    st: Stat,
    path: impl FnOnce() -> PathBuf,
) -> Stat {
    if shared.overlaps[root].first().is_none_or(|&k| k > root) {
        return st;
    }
    match earlier_root_has(shared, root, &path()) {
        Some(first) if first.file_type() == FileType::Dir => first,
        _ => st,
    }
}

/// Whether a root given after `root`, whose destination meets its own, has a directory at
/// destination path `path` below its destination.
fn a_later_root_has_a_dir(shared: &RunShared, root: usize, path: &Path) -> bool {
    shared.overlaps[root]
        .iter()
        .filter(|&&k| k > root)
        .any(|&k| {
            path != shared.config.roots[k].dst
                && root_entry_at(&shared.config, k, path)
                    .is_some_and(|st| st.file_type() == FileType::Dir)
        })
}

fn delete_extraneous(
    core: &Core,
    dst: BorrowedFd<'_>,
    (root, rel): (usize, &Path),
    (stat, rules): (Option<Stat>, Option<&Arc<DirRules>>),
    names: Vec<CString>,
    src_path: &Path,
) {
    let cfg = &core.shared.config;
    let Some(mode) = cfg.delete else { return };
    // `--delete-after` with per-directory merge files: judged at the end, by the destination's
    // merge files as the copy has left them.
    let judge_at_end = mode == Delete::After && cfg.filters.has_dir_merges();
    let found = sync::extraneous(
        &core.shared,
        dst,
        rel,
        names,
        rules.map(|r| &**r),
        !judge_at_end,
    );
    let found = match found {
        Ok(mut victims) if !core.shared.overlaps[root].is_empty() && !victims.is_empty() => {
            // Another root may copy these names here (`A/ B/ DEST`).
            let root_rel = &cfg.roots[root].rel;
            let dir = cfg.roots[root]
                .dst
                .join(rel.strip_prefix(root_rel).unwrap_or(rel));
            victims.retain(|(name, _)| {
                !another_root_has(
                    &core.shared,
                    root,
                    &dir.join(OsStr::from_bytes(name.to_bytes())),
                )
            });
            Ok(victims)
        }
        other => other,
    };
    let found = found.map(|mut victims| {
        sync::in_delete_order(&mut victims);
        victims
    });
    match found {
        Ok(victims) if victims.is_empty() => {}
        Ok(victims) if !matches!(mode, Delete::After | Delete::Delay) => {
            for (name, ft) in victims {
                let t = core.lat.start();
                sync::remove(
                    &core.shared,
                    &core.counters,
                    dst,
                    &name,
                    ft,
                    rel,
                    rules.map(|r| &**r),
                );
                core.lat.record(Op::Delete, t);
            }
        }
        Ok(victims) => {
            let root_rel = &cfg.roots[root].rel;
            let below_root = rel.strip_prefix(root_rel).unwrap_or(rel);
            core.pending_deletes.borrow_mut().push(sync::PendingDelete {
                root,
                below_root: below_root.to_path_buf(),
                rel: rel.to_path_buf(),
                victims,
                stat,
                rules: rules.cloned(),
                judge_at_end,
            });
        }
        Err(e) => report(core, src_path, "opendir (delete)", &e, ErrorClass::Partial),
    }
}

fn finish_dir_meta(core: &Core, node: &DirNode) {
    // A directory opened to its owner for the run gets its mode back once nothing more is
    // written in it (the sweep, the partial directory's removal and --delete below included).
    struct PutBack<'a>(&'a Core, &'a DirNode);
    impl Drop for PutBack<'_> {
        fn drop(&mut self) {
            let PutBack(core, node) = *self;
            if let Some(mode) = node.tweaked
                && let Err(e) = sys::fchmod(node.dst_fd(), mode)
            {
                report(core, &node.dst_path(), "chmod", &e, ErrorClass::Partial);
            }
        }
    }
    let put_back = PutBack(core, node);
    let cfg = &core.shared.config;
    // (A top-level file's pseudo node, `stat` None: its directory is the operator's, not the
    // transfer's; only its partial directory and delayed files are its business. Before, those
    // were skipped too, and `--delay-updates SRC/FILE DEST/` left the file in
    // `DEST/.~tmp~/FILE` with exit 0.)
    if node.stat.is_some()
        && !node.fresh
        && !cfg.dry_run
        && cfg.delete.is_none()
        && (node.sweep
            || cfg.temp_names
            || cfg.delegate.is_some()
            || core.no_tmpfile.borrow().contains(&node.dst_dev))
    {
        // Named temporaries (`--temp-names`, file systems without O_TMPFILE, and the large
        // files of the MPI mode) that a killed run left behind.
        sync::remove_stale_temps(
            &core.shared,
            &core.counters,
            node.dst_fd(),
            node.src_fd(),
            &node.rel(),
        );
    }
    if let Some(pd) = &cfg.partial_dir
        && !cfg.dry_run
    {
        // Gone once empty, as rsync leaves it (a kept partial file keeps it).
        let _ = sys::unlink_at(node.dst_fd(), pd, libc::AT_REMOVEDIR);
    }
    if let Some(delayed) = &node.delayed {
        let names = std::mem::take(&mut *lock(delayed));
        if !names.is_empty() {
            core.pending_updates
                .borrow_mut()
                .push(sync::PendingUpdates {
                    dst: node.dst_path(),
                    rel: node.rel(),
                    names,
                    stat: node.stat,
                });
        }
    }
    if let Some(names) = &node.names
        && !node.fresh
        && (cfg.ignore_errors || !node.scan_failed.load(Ordering::Relaxed))
    {
        let names = std::mem::take(&mut *names.lock().unwrap_or_else(|p| p.into_inner()));
        delete_extraneous(
            core,
            node.dst_fd(),
            (node.root, &node.rel()),
            (node.stat, deletion_rules(core, node)),
            names,
            &node.src_path(),
        );
    }
    drop(put_back);
    let Some(st) = &node.stat else { return };
    // An existing directory: only what differs is written (its attributes compared, not copied).
    let mut existing = None;
    if !node.fresh {
        let Ok(d) = sys::fstat(node.dst_fd()) else {
            return;
        };
        let change = sync::attr_change(&core.shared, &d, st, false);
        let p = match fsops::meta::xattr_plan(
            Target::Fd(node.src_fd()),
            Target::Fd(node.dst_fd()),
            &core.shared.policy,
            false,
        ) {
            Ok(p) => p,
            Err((op, e)) => {
                let path = match op {
                    fsops::meta::MetaOp::ReadSrcXattrs => node.src_path(),
                    _ => node.dst_path(),
                };
                report(core, &path, op.name(), &e, ErrorClass::Partial);
                return;
            }
        };
        if !sync::attrs_differ(&change) && p.is_empty() {
            bump(&core.counters.unchanged, 1);
            return;
        }
        existing = Some((d, p));
    }
    if cfg.dry_run {
        bump(&core.counters.dirs, 1);
        return;
    }
    if let Some(Err(e)) = existing.as_ref().map(|(d, p)| {
        fsops::meta::with_owner_write(node.dst_fd(), d.perm(), &core.shared.policy, || {
            p.apply(Target::Fd(node.dst_fd()))
        })
    }) {
        if e.unsupported {
            unsupported_xattrs(core, Some(e));
        } else {
            report(
                core,
                &node.dst_path(),
                "set xattr",
                &e.error,
                ErrorClass::Partial,
            );
            return;
        }
    }
    // (A root made by this run inherited its setgid bit and default ACL from the directory it
    // was made in, so its own facts tell what that one gave it.)
    let made_in = node.parent.as_ref().map_or(node.made_in, |p| p.made_in);
    let t = core.lat.start();
    let applied = match &existing {
        // Its owner compared as it is (a fresh directory's as root made it).
        Some((d, _)) => fsops::meta::apply_fd_existing(
            node.dst_fd(),
            d,
            st,
            &core.shared.policy,
            fsops::meta::Xattrs::None,
        ),
        None => fsops::meta::apply_fd(
            node.dst_fd(),
            st,
            &core.shared.policy,
            &made_in,
            true,
            fsops::meta::Xattrs::from(Target::Fd(node.src_fd()), node.inherits_acl),
        ),
    };
    core.lat.record(Op::Meta, t);
    match applied {
        Ok(u) => unsupported_xattrs(core, u),
        Err((op, e)) => {
            report(core, &node.dst_path(), op.name(), &e, ErrorClass::Partial);
            return;
        }
    }
    bump(&core.counters.dirs, 1);
}

/// Whether a symlink target may climb out of the transfer root from a link at `depth`, by rsync
/// 3.5's `unsafe_symlink` (since 3.4's fix of the `--safe-links` bypass, CVE-2024-12088):
/// absolute or empty; a `..` after any other component (`a/../b`, `./../x`) or a last `..` after
/// anything (`../..`); or more leading `..` than directories between the link and the root.
pub fn unsafe_target(target: &[u8], depth: usize) -> bool {
    if target.is_empty() || target.starts_with(b"/") {
        return true;
    }
    if target.ends_with(b"/..") {
        return true;
    }
    let mut parts = target.split(|&b| b == b'/').filter(|p| !p.is_empty());
    let mut d = depth as isize;
    for part in parts.by_ref() {
        if part != b".." {
            // Past the leading `..`s: a later `..` makes the link unsafe.
            return parts.any(|p| p == b"..");
        }
        d -= 1;
        if d < 0 {
            return true;
        }
    }
    false
}

/// Copy one entry of `parent`.
async fn entry(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    name: &CStr,
    mut file_type: FileType,
    ino: u64,
) -> Outcome {
    let cfg = &core.shared.config;
    if file_type == FileType::Unknown {
        match sys::lstat_at(parent.src_fd(), name) {
            Ok(st) => file_type = st.file_type(),
            Err(e) => {
                let p = parent.child_src_path(name);
                report(core, &p, "lstat", &e, source_class(&e));
                return Outcome::Done;
            }
        }
    }
    if cfg.copy_devices && file_type.is_device() {
        // --copy-devices: the device's content, copied as a regular file.
        file_type = FileType::File;
    }
    let dst_name = parent.dst_name.as_deref().unwrap_or(name);
    if file_type != FileType::Dir
        && !(file_type == FileType::Symlink && (cfg.copy_links || cfg.copy_unsafe_links))
        && !core.shared.overlaps[parent.root].is_empty()
        && ({
            let path = parent.child_dst_path(dst_name);
            // A name an earlier source has (rsync keeps the first of duplicate names), or one a
            // later source has as a directory (rsync keeps the directory): copied by that one.
            earlier_root_has(&core.shared, parent.root, &path).is_some()
                || a_later_root_has_a_dir(&core.shared, parent.root, &path)
        })
    {
        bump(&core.counters.skipped, 1);
        return Outcome::Done;
    }
    let kind = crate::kind_index(file_type);
    if kind != 0 {
        // Files count once they are past a possible deferral (see `copy_file`).
        bump(&core.counters.seen[kind], 1);
    }
    let mut follow = false;
    // (Followed only to reach named paths below it: see `enter_dir`.)
    let mut through_named = false;
    if file_type == FileType::Symlink && !cfg.copy_links {
        // `-R`/`--files-from`: a symlink on the way to named paths (an implied directory, named
        // itself or not) is sent as the directory it leads to, as rsync (since 3.0) puts implied
        // directories in its list as real directories (and keeps the directory where a name is
        // also a symlink). Before, the symlink was copied and the named paths below it were
        // left out without a word. (An unsafe one that --copy-unsafe-links follows is a
        // directory of the list in its own right, followed below with its notice.)
        let on_the_way = || {
            (parent.scope.child(name, cfg.recursive).1 || parent.scope.named_below(name).is_some())
                && !(cfg.copy_unsafe_links
                    && source_link(cfg, parent.src_fd(), name)
                        .is_ok_and(|t| unsafe_target(t.as_bytes(), parent.depth)))
        };
        // -k: a symlink to a directory is copied as the directory, decided first as rsync's
        // `link_stat` does: an unsafe one too, under --safe-links (not skipped) and
        // --copy-unsafe-links (no notice).
        if (cfg.copy_dirlinks || on_the_way())
            && sys::stat_at(parent.src_fd(), name).is_ok_and(|st| st.file_type() == FileType::Dir)
        {
            follow = true;
            through_named = !cfg.copy_dirlinks;
            file_type = FileType::Dir;
        }
    }
    if file_type == FileType::Symlink && (cfg.copy_links || cfg.copy_unsafe_links || cfg.safe_links)
    {
        let mut target = None;
        let unsafe_link = if cfg.copy_links {
            false
        } else {
            match source_link(cfg, parent.src_fd(), name) {
                Ok(t) => {
                    let unsafe_link = unsafe_target(t.as_bytes(), parent.depth);
                    target = Some(t);
                    unsafe_link
                }
                Err(e) => {
                    report(
                        core,
                        &parent.child_src_path(name),
                        "readlink",
                        &e,
                        source_class(&e),
                    );
                    return Outcome::Done;
                }
            }
        };
        if cfg.copy_links || (cfg.copy_unsafe_links && unsafe_link) {
            match sys::stat_at(parent.src_fd(), name) {
                Ok(st) => {
                    follow = true;
                    file_type = st.file_type();
                    if let Some(t) = target.as_ref().filter(|_| unsafe_link) {
                        core.shared.observer.event(&Event::Notice {
                            path: &parent.child_rel(name),
                            notice: crate::Notice::CopyingUnsafeSymlink {
                                target: t.as_bytes(),
                            },
                        });
                    }
                }
                Err(e) => {
                    let op = if e.raw_os_error() == Some(libc::ELOOP) {
                        "stat (symlink loop)"
                    } else {
                        "stat (symlink has no referent)"
                    };
                    report(
                        core,
                        &parent.child_src_path(name),
                        op,
                        &e,
                        ErrorClass::Partial,
                    );
                    return Outcome::Done;
                }
            }
        } else if cfg.safe_links && cfg.links && unsafe_link {
            // (Without -l every symlink is a non-regular file to skip, unsafe or not: said
            // below as rsync says it; before, an unsafe one was passed over without a word.)
            if let Some(t) = &target {
                bump(&core.counters.seen_link_bytes, t.as_bytes().len() as u64);
            }
            skip_link(
                core,
                &parent.child_rel(name),
                SkipReason::UnsafeSymlink,
                target.as_ref().map(|t| t.as_bytes()),
            );
            return Outcome::Done;
        }
    }
    if cfg.copy_devices && file_type.is_device() {
        // (A followed symlink to a device.)
        file_type = FileType::File;
    }
    // `--remove-source-files`: the entry is in sync unless it failed or was left alone on
    // purpose (skipped, or handed to another process), which the copy marks in `left`.
    let left = Cell::new(false);
    let in_sync = |_: &Core| cfg.remove_source_files && !cfg.dry_run && !left.get();
    match file_type {
        FileType::File => match copy_file(core, parent, name, dst_name, follow, ino, &left).await {
            Ok(Outcome::Deferred) => return Outcome::Deferred,
            Ok(Outcome::Done) => {
                bump(&core.counters.checked, 1);
                if in_sync(core) {
                    remove_source(core, parent, name, dst_name, follow);
                }
            }
            Err(err) => {
                bump(&core.counters.checked, 1);
                entry_failed(core, parent, name, dst_name, err);
            }
        },
        FileType::Dir => {
            if !cfg.recursive && matches!(parent.scope, Scope::All | Scope::AllWith(..)) {
                skip(core, &parent.child_rel(name), SkipReason::Directory);
                return Outcome::Done;
            }
            if let Err(err) = enter_dir(core, parent, name, (follow, through_named)) {
                entry_failed(core, parent, name, dst_name, err);
            }
        }
        FileType::Symlink
        | FileType::CharDev
        | FileType::BlockDev
        | FileType::Fifo
        | FileType::Socket => {
            let wanted = match file_type {
                FileType::Symlink => cfg.links,
                // (As rsync: devices only with super-user activities; a user's copy skips them.)
                FileType::CharDev | FileType::BlockDev => cfg.devices && core.shared.policy.root,
                _ => cfg.specials,
            };
            if !wanted {
                if file_type == FileType::Symlink
                    && let Ok(st) = sys::lstat_at(parent.src_fd(), name)
                {
                    // (rsync's file list holds it: its target's length is in the total size.)
                    bump(&core.counters.seen_link_bytes, st.size);
                }
                // rsync's generator passes over a name missing here (`--existing`) or present
                // here (`--ignore-existing`) before it looks at the type: silently, as it does a
                // regular file.
                if cfg.existing || cfg.ignore_existing {
                    let present = !parent.fresh && sys::lstat_at(parent.dst_fd(), dst_name).is_ok();
                    if (cfg.existing && !present) || (cfg.ignore_existing && present) {
                        return Outcome::Done;
                    }
                }
                skip(core, &parent.child_rel(name), SkipReason::NonRegular);
                return Outcome::Done;
            }
            match make_other(core, parent, name, dst_name, file_type, follow, &left).await {
                Ok(()) if in_sync(core) => remove_source(core, parent, name, dst_name, follow),
                Ok(()) => {}
                Err(err) => entry_failed(core, parent, name, dst_name, err),
            }
        }
        FileType::Unknown => {}
    }
    Outcome::Done
}

/// Report what failed for entry `name` of `parent` (`dst_name` in the destination), with the
/// path of the side it failed on.
fn entry_failed(
    core: &Core,
    parent: &DirNode,
    name: &CStr,
    dst_name: &CStr,
    (op, e, class, side): EntryError,
) {
    let path = match side {
        Side::Src => parent.child_src_path(name),
        Side::Dst => parent.child_dst_path(dst_name),
    };
    report(core, &path, op, &e, class);
}

/// `--delete-missing-args`: the source argument `root` does not exist; delete what the
/// destination has under its name, as rsync does: a non-directory or an empty directory always,
/// a non-empty directory only with `--delete` or `--force` (else it stays, with a word).
fn delete_missing(core: &Core, root: &crate::Root) {
    let (Some(parent), Some(name)) = (root.dst.parent(), root.dst.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    let dir = match sys::open_dir_path(parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return report(core, parent, "opendir (delete)", &e, ErrorClass::Partial),
    };
    let rel_parent = root.rel.parent().unwrap_or(Path::new(""));
    delete_missing_at(core, dir.as_fd(), &name, rel_parent, &root.dst);
}

/// [`delete_missing`] of `name` in the destination directory `dir` (`rel` in the transfer;
/// `shown` names it in messages).
fn delete_missing_at(core: &Core, dir: BorrowedFd<'_>, name: &CStr, rel: &Path, shown: &Path) {
    let shared = &core.shared;
    let cfg = &shared.config;
    let ft = match sys::lstat_at(dir, name) {
        Ok(st) => st.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return report(core, shown, "lstat", &e, ErrorClass::Partial),
    };
    if ft == FileType::Dir && cfg.delete.is_none() && !cfg.force {
        let empty = sys::open_dir_at(dir, name).and_then(|d| {
            let mut reader = fsops::DirReader::default();
            Ok(!reader.fill(d.as_fd())? || reader.entries().next().is_none())
        });
        if !empty.unwrap_or(false) {
            shared.observer.event(&Event::Skipped {
                path: &rel.join(OsStr::from_bytes(name.to_bytes())),
                reason: SkipReason::NonEmptyDirectory,
                target: None,
            });
            return;
        }
    }
    sync::remove(shared, &core.counters, dir, name, ft, rel, None);
}

/// `--remove-source-files -H`: a multi-link source name to remove when the run is over, if it
/// still has the size and mtime it had when its copy was checked.
pub(crate) struct PendingRemoval {
    path: PathBuf,
    /// The name relative to the transfer root, for the notice.
    pub(crate) rel: PathBuf,
    size: u64,
    mtime: (i64, i64),
    /// The name is a symlink followed by `-L`: its target's size and mtime are compared.
    follow: bool,
    /// `--delay-updates`: the copy's final path, which must hold it (the same size, and mtime
    /// with `-t`) before the source goes: a copy whose rename failed keeps its source.
    dst: Option<(PathBuf, bool)>,
    /// `--modify-window`, for the copy's mtime: a destination file system that keeps whole
    /// seconds (or FAT's two) holds the source's time to that precision only.
    window: Option<u32>,
}

impl PendingRemoval {
    /// Remove the name (`false`: it was gone already); on failure the path, the operation and
    /// the error.
    pub(crate) fn remove(&self) -> Result<bool, (PathBuf, &'static str, io::Error)> {
        let fail = |op, e| Err((self.path.clone(), op, e));
        let now = if self.follow {
            fs::metadata(&self.path)
        } else {
            fs::symlink_metadata(&self.path)
        };
        match now {
            Ok(m) if m.size() == self.size && (m.mtime(), m.mtime_nsec()) == self.mtime => {}
            Ok(_) => return fail("remove source file", changed_since_copied()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return fail("lstat", e),
        }
        if let Some((dst, times)) = &self.dst {
            match fs::symlink_metadata(dst) {
                Ok(d)
                    if d.is_file()
                        && d.size() == self.size
                        && (!times
                            || sync::same_mtime(
                                (d.mtime(), d.mtime_nsec()),
                                self.mtime,
                                self.window,
                            )) => {}
                Ok(_) | Err(_) => {
                    return fail(
                        "remove source file",
                        io::Error::other(
                            "skipping sender-side removal: the copy did not take its place",
                        ),
                    );
                }
            }
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => fail("unlink", e),
        }
    }
}

fn changed_since_copied() -> io::Error {
    io::Error::other("skipping sender-side removal: the file changed since it was copied")
}

/// `--remove-source-files`: `name` of `parent` is in sync in the destination; remove it from the
/// source. A regular file is removed only if its size (and, with `-t`, its mtime, to the
/// precision the destination keeps: [`sync::same_mtime`]) still match the destination's copy,
/// as rsync 3.1+ checks, so a file written to meanwhile is kept and
/// reported. With `-H` a multi-link file's names wait for the end of the run.
fn remove_source(core: &Core, parent: &DirNode, name: &CStr, dst_name: &CStr, follow: bool) {
    let cfg = &core.shared.config;
    let src = parent.src_fd();
    crate::hooks::fire(crate::hooks::Point::BeforeRemove, src, name);
    let path = || parent.child_src_path(name);
    let st = match if follow {
        sys::stat_at(src, name)
    } else {
        sys::lstat_at(src, name)
    } {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return report(core, &path(), "lstat", &e, source_class(&e)),
    };
    if st.file_type() == FileType::File {
        let same_in = |dir: BorrowedFd<'_>, name: &CStr| {
            sys::lstat_at(dir, name).is_ok_and(|d| {
                d.file_type() == FileType::File
                    && d.size == st.size
                    && (!cfg.times || sync::same_mtime(d.mtime, st.mtime, cfg.modify_window))
            })
        };
        let same = |name: &CStr| same_in(parent.dst_fd(), name);
        // (With --compare-dest a file a reference holds is in sync where it is: the destination
        // does without it, and rsync removes its source as it removes a copied one's.)
        let in_place = same(dst_name)
            || (cfg.alt_dest == AltDest::Compare
                && parent.alt_dest().is_some_and(|dirs| {
                    dirs.iter().flatten().any(|d| same_in(d.as_fd(), dst_name))
                }));
        if parent.delayed.is_some()
            && !in_place
            && let Some(held) = in_partial_dir(cfg, dst_name)
            && same(&held)
        {
            // --delay-updates: the copy takes its place at the end of the run; the source goes
            // after that.
            core.pending_removals.borrow_mut().push(PendingRemoval {
                path: path(),
                rel: parent.child_rel(name),
                size: st.size,
                mtime: st.mtime,
                follow,
                dst: Some((parent.child_dst_path(dst_name), cfg.times)),
                window: cfg.modify_window,
            });
            return;
        }
        if !in_place {
            return report(
                core,
                &path(),
                "remove source file",
                &changed_since_copied(),
                ErrorClass::Partial,
            );
        }
        if cfg.hard_links && st.nlink > 1 {
            core.pending_removals.borrow_mut().push(PendingRemoval {
                path: path(),
                rel: parent.child_rel(name),
                size: st.size,
                mtime: st.mtime,
                follow,
                dst: None,
                window: cfg.modify_window,
            });
            return;
        }
    }
    match sys::unlink_at(src, name, 0) {
        Ok(()) => core.shared.observer.event(&Event::Notice {
            path: &parent.child_rel(name),
            notice: crate::Notice::SourceRemoved,
        }),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            report(core, &path(), "unlink", &e, source_class(&e))
        }
        Err(_) => {}
    }
}

/// Why an entry failed: the operation, the OS error, how it counts, and the side it failed on,
/// whose path the message names (a destination operation names the destination entry, as
/// rsync's receiver does).
type EntryError = (&'static str, io::Error, ErrorClass, Side);
type EntryResult<T = ()> = Result<T, EntryError>;

fn src_err(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
    move |e| {
        let class = source_class(&e);
        (op, e, class, Side::Src)
    }
}

fn dst_err(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
    move |e| {
        let class = if out_of_space(&e) {
            ErrorClass::FileIo
        } else {
            ErrorClass::Partial
        };
        (op, e, class, Side::Dst)
    }
}

/// A full destination (no space, quota, file too large): rsync's "error in file IO" (exit 11).
fn out_of_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}

/// An error of a data copy, which reads the source and writes the destination: a full
/// destination is a write error (exit 11), anything else is judged as a source error.
fn data_err(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
    move |e| {
        if out_of_space(&e) {
            ("write", e, ErrorClass::FileIo, Side::Dst)
        } else {
            let class = source_class(&e);
            (op, e, class, Side::Src)
        }
    }
}

fn meta_err((op, e): (fsops::meta::MetaOp, io::Error)) -> EntryError {
    (op.name(), e, ErrorClass::Partial, Side::Dst)
}

/// Create a temporary name in `dir` with `make`, retrying on a name collision.
fn with_temp<T>(core: &Core, make: impl FnMut(&CStr) -> io::Result<T>) -> io::Result<(CString, T)> {
    with_temp_named(core, "", make)
}

/// [`with_temp`] with a name that ends with `tag` (a root's destination: the name it is for,
/// see [`sync::root_temp_tag`]).
fn with_temp_named<T>(
    core: &Core,
    tag: &str,
    mut make: impl FnMut(&CStr) -> io::Result<T>,
) -> io::Result<(CString, T)> {
    loop {
        let tmp = temp_name(core, tag);
        match make(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `-H`: for a name of a multi-link inode, either link it to the copy made for an earlier name
/// (returns `Ok(true)`, after waiting for that copy if it is still being made), or become the one
/// that copies (`Ok(false)`; the caller must then report with [`hardlink_done`]).
async fn hardlink_follow(
    core: &Core,
    parent: &DirNode,
    dst_name: &CStr,
    st: &Stat,
    file_type: FileType,
    left: &Cell<bool>,
) -> EntryResult<bool> {
    if !core.shared.config.hard_links || st.nlink < 2 || file_type == FileType::Dir {
        return Ok(false);
    }
    let leader = match core.shared.links.claim((st.dev, st.ino), st.nlink).await {
        Claim::Link(dir, name, rel) => (dir, name, rel),
        Claim::Leader => return Ok(false),
    };
    hardlink_make(core, parent, dst_name, st, file_type, leader, left).map(|()| true)
}

/// `-H`: the leader of a multi-link inode whose destination needs the data puts its copy off
/// ([`crate::links::LinkMap::defer`]) while another name may still come, as rsync links further
/// names to a name whose copy is up to date rather than copying again: the leader to link to
/// when one arrived (`Some`), `None` to copy now. Only where a destination directory existed,
/// this one or one above it (in a tree made anew nothing is up to date; a new directory in an
/// old tree may hold new names of old files, as a new snapshot does), and for a few groups per
/// core at a time.
async fn hardlink_put_off(
    core: &Core,
    parent: &DirNode,
    st: &Stat,
) -> Option<(Arc<LeaderDir>, CString, Arc<PathBuf>)> {
    if !core.shared.config.hard_links || st.nlink < 2 {
        return None;
    }
    let mut node = parent;
    let mut old_tree = true;
    while node.fresh {
        match &node.parent {
            Some(p) => node = p,
            None => {
                old_tree = false;
                break;
            }
        }
    }
    let key = (st.dev, st.ino);
    if old_tree {
        let oldest = {
            let mut held = core.held_links.borrow_mut();
            held.push_back(key);
            (held.len() > crate::core::held_links_max(&core.shared.config))
                .then(|| held.pop_front())
                .flatten()
        };
        if let Some(k) = oldest {
            core.shared.links.release(k);
        }
    }
    // (Also where nothing is put off: a name that took the lead from a put-off copy and needs
    // the data too hands it back.)
    let claim = core.shared.links.defer(key, old_tree).await;
    if old_tree {
        core.held_links.borrow_mut().retain(|k| *k != key);
    }
    match claim {
        Claim::Link(dir, name, rel) => Some((dir, name, rel)),
        Claim::Leader => None,
    }
}

/// `-H`: make `dst_name` in `parent` a link to the `leader`'s copy (its destination directory,
/// name, and path for item events); `st` is what the item reports.
fn hardlink_make(
    core: &Core,
    parent: &DirNode,
    dst_name: &CStr,
    st: &Stat,
    file_type: FileType,
    (dir, leader, leader_rel): (Arc<LeaderDir>, CString, Arc<PathBuf>),
    left: &Cell<bool>,
) -> EntryResult<()> {
    let ddir = parent.dst_fd();
    let dir = dir.open().map_err(dst_err("opendir (hard-link leader)"))?;
    let cfg = &core.shared.config;
    let mut change = Change::new_entry(How::HardLink);
    if !parent.fresh
        && let Ok(d) = sys::lstat_at(ddir, dst_name)
    {
        if (d.dev, d.ino) == sys::lstat_at(dir.as_fd(), &leader).map_or((0, 0), |l| (l.dev, l.ino))
        {
            // Already this link (an earlier run made it).
            bump(&core.counters.unchanged, 1);
            return Ok(());
        }
        if cfg.ignore_existing
            // -u: a newer destination file is left as it is, whichever name of its group it
            // is (as rsync's generator judges every name before it links one).
            || sync::kept_by_update(cfg, &d, st)
        {
            bump(&core.counters.skipped, 1);
            left.set(true);
            return Ok(());
        }
        if d.file_type() == file_type {
            // Itemized against the entry it replaces, as rsync (`hf.stp.....`; the link is a
            // local change, so without -t its time is reported as rewritten, `T`); one of
            // another type is new to its name (`hf+++++++++`).
            change = Change {
                how: How::HardLink,
                ..sync::attr_change(&core.shared, &d, st, file_type == FileType::Symlink)
            };
            if !core.shared.policy.keeps_mtime(file_type) && !change.time {
                if cfg.times {
                    change.time = true;
                } else {
                    change.stamped = true;
                }
            }
        }
    } else if cfg.existing {
        bump(&core.counters.skipped, 1);
        left.set(true);
        return Ok(());
    }
    if !cfg.dry_run
        && let Some(delayed) = &parent.delayed
    {
        // --delay-updates: this name waits in the partial directory too, and takes its place
        // with the others at the end of the run.
        let held = in_partial_dir(cfg, dst_name).ok_or_else(|| {
            let e = io::Error::from_raw_os_error(libc::ENAMETOOLONG);
            ("link", e, ErrorClass::Partial, Side::Dst)
        })?;
        let pd = cfg
            .partial_dir
            .as_deref()
            .expect("a delayed run has a partial directory");
        match sys::mkdir_at(ddir, pd, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(("mkdir (partial dir)", e, ErrorClass::Partial, Side::Dst));
            }
            _ => {}
        }
        let link = || sys::link_at(dir.as_fd(), &leader, ddir, &held);
        match link() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Left by a stopped run.
                sys::unlink_at(ddir, &held, 0)
                    .and_then(|()| link())
                    .map_err(dst_err("link"))?;
            }
            r => r.map_err(dst_err("link"))?,
        }
        lock(delayed).push(dst_name.to_owned());
    } else if !cfg.dry_run {
        match sys::link_at(dir.as_fd(), &leader, ddir, dst_name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A name from an earlier run: replace it atomically.
                let (tmp, ()) = with_temp(core, |t| sys::link_at(dir.as_fd(), &leader, ddir, t))
                    .map_err(dst_err("link"))?;
                if let Err(e) = sync::rename_over(core, ddir, &tmp, dst_name, sync::Rel::Of(parent))
                {
                    let _ = sys::unlink_at(ddir, &tmp, 0);
                    return Err(("rename", e, ErrorClass::Partial, Side::Dst));
                }
            }
            Err(e) => return Err(("link", e, ErrorClass::Partial, Side::Dst)),
        }
    } else if !parent.fresh {
        // A dry run: what the real run's rename would meet (a non-empty directory that may not
        // go fails the name here too).
        sync::make_way(core, ddir, dst_name, sync::Rel::Of(parent))
            .map_err(dst_err("make way for new hard link"))?;
    }
    bump(&core.counters.hard_links, 1);
    let target = leader_rel.as_os_str().as_bytes();
    item(
        core,
        (parent.root, || parent.child_rel(dst_name)),
        (file_type, Some(st)),
        0,
        &change,
        Some(target),
    );
    Ok(())
}

/// Where the leaders of hard-link groups made in a destination directory are, for the further
/// names that link to them (`-H`). Such a group can wait a long time for its last name (in a
/// tree of snapshots linked to each other, every directory of the first snapshot has groups
/// waiting for the next): while open directories are within their share of the open-file limit
/// the directory is kept open (and counted); beyond it, it is found again from the transfer's
/// top when a name links to it, so that pending groups hold no fd.
pub(crate) enum LeaderDir {
    /// Held open, counted among the run's open directories while it is.
    Open {
        fd: Arc<OwnedFd>,
        _counted: crate::dirfds::Counted,
    },
    Far {
        /// The transfer's top node (which never parks).
        top: Arc<DirNode>,
        /// The names from the top down, with the new subtree whose top is one of them.
        names: Vec<(CString, Option<Arc<crate::core::StagedDir>>)>,
    },
}

impl LeaderDir {
    /// The directory, opened again if it is far (through a new subtree's top under its
    /// temporary name or its own, whichever exists).
    fn open(&self) -> io::Result<LeaderFd<'_>> {
        let (top, names) = match self {
            LeaderDir::Open { fd, .. } => return Ok(LeaderFd::Held(fd.as_fd())),
            LeaderDir::Far { top, names } => (top, names),
        };
        let base = top.fds.get().dst();
        // A new subtree's top is renamed from its temporary name to its own once (atomically:
        // one of the two names exists at any time, the temporary first). Its flag goes up just
        // before the rename, so with the flag up the own name is tried first, then the
        // temporary, then the own name again (renamed in between); with it down, the temporary,
        // then the own name.
        let path = |tmp: bool| -> Vec<&CStr> {
            names
                .iter()
                .map(|(name, staged)| match staged {
                    Some(s) if tmp => s.tmp(),
                    _ => name,
                })
                .collect()
        };
        let staged = names.iter().find_map(|(_, s)| s.as_ref());
        let order: &[bool] = match staged {
            None => &[false],
            Some(s) if s.published() => &[false, true, false],
            Some(_) => &[true, false],
        };
        let mut last = None;
        for &tmp in order {
            match open_names(base, &path(tmp)) {
                Ok(fd) => return Ok(LeaderFd::Opened(fd)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one try"))
    }
}

/// A [`LeaderDir`]'s directory: the one it holds, or one opened for the link.
enum LeaderFd<'a> {
    Held(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for LeaderFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            LeaderFd::Held(fd) => *fd,
            LeaderFd::Opened(fd) => fd.as_fd(),
        }
    }
}

/// `parent`'s [`LeaderDir`], made by its first leader (`parent`'s fds are open: the caller holds
/// one of its busy units).
fn leader_dir<'a>(core: &Core, parent: &'a DirNode) -> &'a Arc<LeaderDir> {
    parent.leader_dir.get_or_init(|| {
        let open = &core.shared.open_dirs;
        if matches!(parent.place, Place::Top { .. }) || !open.pressed() {
            return Arc::new(LeaderDir::Open {
                fd: Arc::clone(parent.dst_arc()),
                _counted: open.count(1),
            });
        }
        let (chain, _) = parent.below_top();
        let names = chain
            .iter()
            .rev()
            .map(|n| (n.listed_name().to_owned(), n.staged.clone()))
            .collect();
        // (The top's own `Arc`: the parent link of the highest node below it.)
        let highest = chain.last().expect("not a top");
        let top = Arc::clone(
            highest
                .parent
                .as_ref()
                .expect("a listed directory has a parent"),
        );
        Arc::new(LeaderDir::Far { top, names })
    })
}

/// Tell waiting names of a multi-link inode how its leader fared.
fn hardlink_done(core: &Core, parent: &DirNode, dst_name: &CStr, st: &Stat, ok: bool) {
    hardlink_done_at(core, parent, dst_name, st, ok, false);
}

/// [`hardlink_done`] for a leader whose data was just copied: with `--delay-updates` the copy
/// waits in the partial directory, and the further names link to it there.
fn hardlink_copied(core: &Core, parent: &DirNode, dst_name: &CStr, st: &Stat, ok: bool) {
    hardlink_done_at(core, parent, dst_name, st, ok, parent.delayed.is_some());
}

fn hardlink_done_at(
    core: &Core,
    parent: &DirNode,
    dst_name: &CStr,
    st: &Stat,
    ok: bool,
    held: bool,
) {
    if !core.shared.config.hard_links || st.nlink < 2 {
        return;
    }
    let key = (st.dev, st.ino);
    if ok {
        let rel = if core.shared.wants_items {
            parent.child_rel(dst_name)
        } else {
            PathBuf::new()
        };
        let name = match held.then(|| in_partial_dir(&core.shared.config, dst_name)) {
            Some(Some(p)) => p,
            _ => dst_name.to_owned(),
        };
        core.shared
            .links
            .done(key, Arc::clone(leader_dir(core, parent)), name, rel, *st);
    } else {
        core.shared.links.failed(key);
    }
}

/// Whether the data moved inline (which checks growth and shrinking itself).
enum PathKind {
    Inline,
    Other,
}

/// How a regular file's data gets to the destination.
enum DataPath {
    Inline,
    Clone,
    Kernel,
    /// `-S`: `copy_file_range` of each data extent (the holes are never written).
    KernelRanges(Vec<(u64, u64)>),
    Ring(Vec<(u64, u64)>),
    /// `--bwlimit`: these ranges in chunks on the core, each charged to the run's rate.
    Throttled(Vec<(u64, u64)>),
    /// `-S`, a warm source: these ranges read through a core buffer, only the blocks with data
    /// written (`fsops::copy::copy_sparse_range`): the zeros become holes without being written
    /// and read back.
    Sparse(Vec<(u64, u64)>),
}

async fn copy_file(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    name: &CStr,
    dst_name: &CStr,
    follow: bool,
    ino: u64,
    left: &Cell<bool>,
) -> EntryResult<Outcome> {
    let cfg = &core.shared.config;
    crate::hooks::fire(crate::hooks::Point::BeforeOpen, parent.src_fd(), name);
    // `-H`: a further name of an inode whose leader has finished (its number from the listing,
    // where the file system lists the numbers `stat` gives) is linked at once: no stat, open or
    // close. (Not when the leader is still copying: the name then waits for it below.)
    if cfg.hard_links
        && !follow
        && parent.listed_ino_exact
        && let Some(dev) = parent.stat.map(|s| s.dev)
        && let Some((dir, leader, rel, st)) = core.shared.links.link_if_done((dev, ino))
    {
        bump(&core.counters.seen[0], 1);
        bump(&core.counters.seen_bytes, st.size);
        let leader = (dir, leader, rel);
        hardlink_make(core, parent, dst_name, &st, FileType::File, leader, left)?;
        return Ok(Outcome::Done);
    }
    // The re-sync fast path: judge an existing destination file by a stat of the source, so an
    // unchanged file costs two stats and no open (a file that needs work is opened and judged
    // again by its open fd below, so a swap in between is still caught).
    let t = core.lat.start();
    // (With --existing a new directory's files are all passed over: judged here too, so that a
    // file the user may not read is not opened for nothing, as rsync opens none.)
    if (!parent.fresh || cfg.existing)
        && !cfg.checksum
        && cfg.quick_check != crate::QuickCheck::Never
        // (--link-dest and --compare-dest look at the reference tree even for an up-to-date
        // destination file.)
        && (parent.alt_dest().is_none() || cfg.alt_dest == AltDest::Copy)
        && let Ok(st) = route::stat_at(core, parent, Side::Src, name, follow).await
        && st.file_type() == FileType::File
        && !(cfg.hard_links && st.nlink > 1)
    {
        let verdict = sync::judge_file(core, false, parent, None, &st, dst_name).await;
        core.lat.record(Op::Stat, t);
        match verdict {
            Verdict::Same(change, _)
                if !sync::attrs_differ(&change)
                    && (!(cfg.xattrs || cfg.acls)
                        || fsops::meta::xattr_plan(
                            Target::At(parent.src_fd(), name),
                            Target::At(parent.dst_fd(), dst_name),
                            &core.shared.policy,
                            false,
                        )
                        .is_ok_and(|p| p.is_empty())) =>
            {
                bump(&core.counters.seen[0], 1);
                bump(&core.counters.seen_bytes, st.size);
                bump(&core.counters.unchanged, 1);
                drop_stale_partial(core, parent.dst_fd(), dst_name);
                let what = (FileType::File, Some(&st));
                unchanged_item(
                    core,
                    (parent.root, || parent.child_rel(name)),
                    what,
                    How::Attrs,
                    None,
                );
                return Ok(Outcome::Done);
            }
            Verdict::Skip => {
                bump(&core.counters.seen[0], 1);
                bump(&core.counters.seen_bytes, st.size);
                bump(&core.counters.skipped, 1);
                left.set(true);
                return Ok(Outcome::Done);
            }
            _ => {}
        }
    }
    let t = core.lat.start();
    let opened = match route::open_source(core, parent, name, follow).await {
        Ok(fd) => fd,
        Err(e) => {
            // A file the user may not read that `--max-size`/`--min-size` leave out anyway is
            // passed over as rsync passes it (it judges the size before it opens the file).
            let sized = cfg.max_size.is_some() || cfg.min_size.is_some();
            if sized
                && e.raw_os_error() == Some(libc::EACCES)
                && let Ok(st) = if follow {
                    sys::stat_at(parent.src_fd(), name)
                } else {
                    sys::lstat_at(parent.src_fd(), name)
                }
                && sync::size_limit(cfg, st.size).is_some()
            {
                let _ = sync::judge_file(core, parent.fresh, parent, None, &st, dst_name).await;
                bump(&core.counters.seen[0], 1);
                bump(&core.counters.seen_bytes, st.size);
                bump(&core.counters.skipped, 1);
                left.set(true);
                return Ok(Outcome::Done);
            }
            return Err(src_err("open")(e));
        }
    };
    let mut src = route::SourceFd::new(opened);
    core.lat.record(Op::Open, t);
    let t = core.lat.start();
    let mut st = sys::fstat(src.as_fd()).map_err(src_err("fstat"))?;
    core.lat.record(Op::Stat, t);
    if cfg.copy_devices && st.file_type().is_device() {
        st = device_as_file(src.as_fd(), &st);
    }
    if st.file_type() != FileType::File {
        return Err((
            "open",
            io::Error::other("changed type while being copied (no longer a regular file)"),
            ErrorClass::Partial,
            Side::Src,
        ));
    }
    // A large file while this core already streams one: hand it back for another core.
    let large = st.size > cfg.small_file_max;
    if large && core.heavy.get() > 0 && core.worker.borrow().count() > 1 {
        return Ok(Outcome::Deferred);
    }
    bump(&core.counters.seen[0], 1);
    bump(&core.counters.seen_bytes, st.size);
    crate::hooks::fire(crate::hooks::Point::AfterStat, parent.src_fd(), name);
    if hardlink_follow(core, parent, dst_name, &st, FileType::File, left).await? {
        return Ok(Outcome::Done);
    }
    // (Items are named as in the source, as rsync names them: a single file copied to another
    // name is listed under its own.)
    let rel = || parent.child_rel(name);
    let dir = parent.dst_fd();
    if !parent.fresh
        && cfg.alt_dest != AltDest::Copy
        && let Some(dirs) = parent.alt_dest()
        && let Some(done) =
            exact_reference_for_existing(core, parent, name, dst_name, &mut src, &st, dirs).await
    {
        hardlink_done(core, parent, dst_name, &st, done);
        return Ok(Outcome::Done);
    }
    let mut change =
        match sync::judge_file(core, parent.fresh, parent, Some(&mut src), &st, dst_name).await {
            Verdict::Skip => {
                hardlink_done(core, parent, dst_name, &st, false);
                bump(&core.counters.skipped, 1);
                left.set(true);
                return Ok(Outcome::Done);
            }
            Verdict::Same(change, links)
                if cfg.hard_links
                    && st.nlink > 1
                    && links > st.nlink
                    && sync::attrs_differ(&change) =>
            {
                // -H: the destination file is linked to more names than the source file has
                // (names of another group, or names the source no longer has): set in place,
                // its attributes would change theirs too, so it is copied anew, which breaks
                // those links (as rsync's manual says an update does; rsync itself sets them
                // in place, and the last group set wins for all).
                Change {
                    how: How::Transfer,
                    ..change
                }
            }
            Verdict::Same(mut change, _) => {
                if !fix_attrs(core, parent, &src, &st, dst_name, &mut change) {
                    // Could not set them in place: copy the file anew.
                    Change {
                        how: How::Transfer,
                        ..change
                    }
                } else {
                    hardlink_done(core, parent, dst_name, &st, true);
                    bump(&core.counters.unchanged, 1);
                    drop_stale_partial(core, dir, dst_name);
                    let differ = sync::attrs_differ(&change);
                    if differ || cfg.itemize_unchanged {
                        // (With -c its content was compared: rsync's %C shows its checksum.)
                        let sum = cfg.checksum.then(|| sum_of(core, dir, dst_name)).flatten();
                        let shown = if differ {
                            change
                        } else {
                            Change {
                                how: How::Attrs,
                                ..Change::default()
                            }
                        };
                        let what = (FileType::File, Some(&st));
                        item_summed(core, (parent.root, rel), what, 0, &shown, None, sum);
                    }
                    return Ok(Outcome::Done);
                }
            }
            Verdict::Copy(change) => change,
            Verdict::Blocked(e) => {
                hardlink_done(core, parent, dst_name, &st, false);
                return Err((
                    "make way for new regular file",
                    e,
                    ErrorClass::Partial,
                    Side::Dst,
                ));
            }
        };
    // -H on a re-sync: this name's copy needs the data; another name of the inode may find its
    // copy up to date, and then this one is linked to it with no data written.
    if let Some(leader) = hardlink_put_off(core, parent, &st).await {
        hardlink_make(core, parent, dst_name, &st, FileType::File, leader, left)?;
        return Ok(Outcome::Done);
    }
    if !cfg.dry_run
        && let Some(d) = &cfg.delegate
        && d.take_file(&parent.child_rel(dst_name), &st)
    {
        // Another process copies it (the MPI mode); a hard-link leader hands over its names too.
        hardlink_done(core, parent, dst_name, &st, false);
        bump(&core.counters.delegated, 1);
        left.set(true);
        return Ok(Outcome::Done);
    }
    if change.new
        && let Some(dirs) = parent.alt_dest()
        && let Some(m) = altdest::file_match(
            core,
            dirs,
            parent.src_fd(),
            (name, dst_name),
            Some(&mut src),
            &st,
        )
        .await
    {
        let reference = m.reference(dirs);
        if !parent.fresh
            && m.level == Level::Exact
            && matches!(cfg.alt_dest, AltDest::Link | AltDest::Compare)
            && let Err(e) = sync::make_way(core, dir, dst_name, sync::Rel::Of(parent))
            && e.kind() != io::ErrorKind::NotFound
        {
            // (A symlink or special where the file goes is removed first, as rsync's generator
            // removes it before it looks at the references: a link to the reference takes its
            // place, or with --compare-dest nothing does. Before, the link failed on the name
            // and the file was copied from the reference, or the symlink stayed.)
            return Err((
                "make way for new regular file",
                e,
                ErrorClass::Partial,
                Side::Dst,
            ));
        }
        match (cfg.alt_dest, m.level) {
            (AltDest::Link | AltDest::Compare, Level::Exact)
                if take_exact_reference(
                    core,
                    parent,
                    (reference, dst_name),
                    dst_name,
                    (FileType::File, &st, None),
                ) =>
            {
                return Ok(Outcome::Done);
            }
            (_, Level::Exact | Level::SameData) => {
                // A local copy from the reference (rsync's `cf`), then the source's attributes.
                let mut local = sync::attr_change(&core.shared, &m.stat, &st, false);
                local.how = How::Local;
                // (Without -t the copy keeps the time it was made: rsync's `T`.)
                local.stamped = !core.shared.policy.keeps_mtime(FileType::File);
                let moving = Moving::new(core);
                let r = if cfg.dry_run {
                    Ok(0)
                } else {
                    match sys::open_source(reference, dst_name, cfg.open_noatime) {
                        // (Its extended attributes and ACLs are the source's.)
                        Ok(from) => {
                            let mut from = route::SourceFd::new(from);
                            copy_file_data(
                                core,
                                parent,
                                (&mut from, Some(&src)),
                                &st,
                                dst_name,
                                (None, &moving),
                            )
                            .await
                        }
                        Err(e) => Err(src_err("open (reference)")(e)),
                    }
                };
                hardlink_copied(core, parent, dst_name, &st, r.is_ok());
                let bytes = r?;
                bump(&core.counters.files, 1);
                bump(&core.counters.bytes, bytes);
                bump(&core.counters.from_reference, 1);
                if sync::attrs_differ(&local) || local.stamped {
                    item(
                        core,
                        (parent.root, rel),
                        (FileType::File, Some(&st)),
                        0,
                        &local,
                        None,
                    );
                } else {
                    unchanged_item(
                        core,
                        (parent.root, rel),
                        (FileType::File, Some(&st)),
                        How::Local,
                        None,
                    );
                }
                return Ok(Outcome::Done);
            }
            (_, _) => {
                // Copied from the source, itemized against the reference (rsync's basis).
                change = sync::attr_change(&core.shared, &m.stat, &st, false);
                change.how = How::Transfer;
                // (With -c the data was compared, and differs.)
                change.checksum = cfg.checksum;
            }
        }
    }
    if cfg.dry_run {
        if !parent.fresh {
            // What a real run would remove to make way (reported, not done).
            let _ = sync::make_way(core, dir, dst_name, sync::Rel::Of(parent));
        }
        hardlink_done(core, parent, dst_name, &st, true);
        bump(&core.counters.files, 1);
        bump(&core.counters.bytes, st.size);
        bump(&core.counters.transferred_size, st.size);
        // (rsync's dry run gives a file it would send a checksum of zeros.)
        let sum = cfg.item_checksums.then_some(0);
        let what = (FileType::File, Some(&st));
        item_summed(core, (parent.root, rel), what, st.size, &change, None, sum);
        return Ok(Outcome::Done);
    }
    // (Declared first, dropped last: after the file's bytes are counted below.)
    let moving = Moving::new(core);
    let heavy = large.then(|| Heavy::new(core));
    let r = copy_file_data(
        core,
        parent,
        (&mut src, None),
        &st,
        dst_name,
        (heavy.as_ref(), &moving),
    )
    .await;
    hardlink_copied(core, parent, dst_name, &st, r.is_ok());
    let bytes = r?;
    bump(&core.counters.files, 1);
    bump(&core.counters.bytes, bytes);
    bump(&core.counters.transferred_size, st.size);
    change.how = How::Transfer;
    tracing::debug!(core = core.index, file = %rel().display(), bytes, "file copied");
    // (--delay-updates: the copy waits in the partial directory.)
    let sum = match parent
        .delayed
        .is_some()
        .then(|| in_partial_dir(cfg, dst_name))
    {
        Some(Some(held)) => sum_of(core, dir, &held),
        _ => sum_of(core, dir, dst_name),
    };
    item_summed(
        core,
        (parent.root, rel),
        (FileType::File, Some(&st)),
        bytes,
        &change,
        None,
        sum,
    );
    Ok(Outcome::Done)
}

/// Same data, other attributes: set them on the destination file in place. Returns whether that
/// worked.
fn fix_attrs(
    core: &Core,
    parent: &DirNode,
    src: &OwnedFd,
    st: &Stat,
    dst_name: &CStr,
    change: &mut Change,
) -> bool {
    let cfg = &core.shared.config;
    let with_xattrs = cfg.xattrs || cfg.acls;
    if !sync::attrs_differ(change) && !with_xattrs && !change.exact_time {
        return true;
    }
    let dir = parent.dst_fd();
    let policy = &core.shared.policy;
    let Ok(fd) = sys::open_source(dir, dst_name, false) else {
        return false;
    };
    let plan = if with_xattrs {
        match fsops::meta::xattr_plan(
            Target::Fd(src.as_fd()),
            Target::Fd(fd.as_fd()),
            policy,
            false,
        ) {
            Ok(p) => p,
            Err(_) => return false,
        }
    } else {
        fsops::xattr::Plan::default()
    };
    change.xattr = plan.touches_xattr();
    change.acl = plan.touches_acl();
    if cfg.dry_run || !(sync::attrs_differ(change) || change.exact_time) {
        return true;
    }
    let Ok(d) = sys::fstat(fd.as_fd()) else {
        return false;
    };
    // The file may belong to anyone: compare with what it has, not with what a new file gets.
    let chowned = match policy.chown_existing(&d, st) {
        Some((uid, gid)) if sys::fchown(fd.as_fd(), uid, gid).is_err() => return false,
        Some(_) => true,
        None => false,
    };
    if fsops::meta::with_owner_write(fd.as_fd(), d.perm(), policy, || {
        plan.apply(Target::Fd(fd.as_fd()))
    })
    .is_err()
    {
        return false;
    }
    // A chown clears setuid/setgid and an ACL moves the group bits: chmod after either.
    if (change.perms || chowned || change.acl)
        && sys::fchmod(fd.as_fd(), policy.existing_perm(st, d.perm())).is_err()
    {
        return false;
    }
    match policy.times(st) {
        Some((a, m)) if change.time || change.exact_time || cfg.atimes => {
            sys::futimens(fd.as_fd(), a, m).is_ok()
        }
        _ => true,
    }
}

/// `--copy-devices`: the attributes of the regular file a device's content is copied into (as
/// rsync: the size of the device, and the time of the copy, so the next run copies it again).
fn device_as_file(fd: BorrowedFd<'_>, st: &Stat) -> Stat {
    let size = sys::device_size(fd);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Stat {
        mode: libc::S_IFREG | (st.mode & 0o7777),
        rdev: 0,
        size,
        blocks: size.div_ceil(512),
        mtime: (now, st.mtime.1),
        ..*st
    }
}

/// Choose how the data moves: FICLONE, `copy_file_range`, inline, or the ring (with only the
/// data extents under `-S`). `device`: a device on either side (`--copy-devices`,
/// `--write-devices`), which only reads and writes can move (clones and `copy_file_range`
/// take regular files), with every byte written (a hole would leave a device's old content).
fn data_path(
    core: &Core,
    parent: &DirNode,
    src: &OwnedFd,
    st: &Stat,
    device: bool,
    probe: &CacheProbe,
) -> EntryResult<DataPath> {
    let cfg = &core.shared.config;
    if device {
        return Ok(if st.size <= cfg.small_file_max {
            DataPath::Inline
        } else {
            DataPath::Ring(vec![(0, st.size)])
        });
    }
    let pair = (st.dev, parent.dst_dev);
    if st.size > 0 && cfg.reflink != Reflink::Never {
        let try_clone = cfg.reflink == Reflink::Always || !core.no_clone.borrow().contains(&pair);
        if try_clone {
            return Ok(DataPath::Clone);
        }
    }
    let kernel_ok = cfg.reflink != Reflink::Never && !core.no_kernel_copy.borrow().contains(&pair);
    // -S with the data path left to arsync and the source in the page cache: read, check and
    // write in one pass, where a copy in the kernel would have to be read back for its zeros.
    let one_pass = |ranges: &[(u64, u64)]| {
        cfg.sparse
            && cfg.copy_method == CopyMethod::Auto
            && !cfg.direct
            && ranges
                .iter()
                .find(|r| r.1 > 0)
                .is_none_or(|&(off, _)| probe.is_cached(src, off) == Some(true))
    };
    let sparse = cfg.sparse && st.blocks.saturating_mul(512) < st.size;
    if sparse {
        let extents = sys::data_extents(src.as_fd(), st.size).map_err(src_err("lseek"))?;
        if one_pass(&extents) {
            return Ok(DataPath::Sparse(extents));
        }
        // Only the data extents, in the kernel where it can (`copy_file_range` range by range
        // leaves the holes between them unwritten), else through the ring.
        if kernel_ok && !cfg.direct && cfg.copy_method != CopyMethod::Uring {
            return Ok(DataPath::KernelRanges(extents));
        }
        return Ok(DataPath::Ring(extents));
    }
    if st.size == 0 {
        return Ok(DataPath::Inline);
    }
    match cfg.copy_method {
        CopyMethod::Uring => {}
        CopyMethod::CopyFileRange if kernel_ok => return Ok(DataPath::Kernel),
        CopyMethod::CopyFileRange => {}
        CopyMethod::Auto => {
            if st.size <= cfg.small_file_max {
                return Ok(DataPath::Inline);
            }
            if one_pass(&[(0, st.size)]) {
                return Ok(DataPath::Sparse(vec![(0, st.size)]));
            }
            if st.dev == parent.dst_dev && kernel_ok && !cfg.direct {
                return Ok(DataPath::Kernel);
            }
        }
    }
    Ok(DataPath::Ring(vec![(0, st.size)]))
}

/// Whether a source file's data is in the page cache, asked once per file (`sys::is_cached`, a
/// one-byte `preadv2(RWF_NOWAIT)` at its first data): the first ask of a cold file starts the
/// kernel's readahead there, so a second ask (the one-pass `-S` check, then the cold-copy check)
/// could find that byte read in by then and take the cold file for a warm one, copying it on
/// the core, which blocks on the rest of its reads.
#[derive(Default)]
struct CacheProbe(Cell<Option<(u64, Option<bool>)>>);

impl CacheProbe {
    /// [`sys::is_cached`] at `off`, or the answer already given for `off`.
    fn is_cached(&self, src: &OwnedFd, off: u64) -> Option<bool> {
        match self.0.get() {
            Some((at, answer)) if at == off => answer,
            _ => {
                let answer = sys::is_cached(src.as_fd(), off);
                self.0.set(Some((off, answer)));
                answer
            }
        }
    }
}

/// `copy_file_range` of `ranges` on a thread of the cold-copy pool when the source is not in the
/// page cache (`None`: it is, or the pool could not be started; copy on the core). A blocking
/// copy from the disk would hold the core, and every other file it has in flight, for as long as
/// the reads take; on the pool the core goes on and several cold files are read at once. A warm
/// source costs one `preadv2(RWF_NOWAIT)` of one byte, none if `probe` asked already. Returns
/// the end offset of the last range.
///
/// A large file is cut into `--split-chunk` pieces, each a job of its own, so one cold file is
/// read by as many pool threads at once as it has pieces (up to the pool's size): a cold read
/// is bound by the requests in flight, not by the CPU, so this beats splitting it across the
/// cores (where each core would block in its chunk's reads).
async fn copy_cold(
    core: &Core,
    (src, dst): (&OwnedFd, &OwnedFd),
    ranges: &[(u64, u64)],
    (heavy, moving): (Option<&Heavy<'_>>, &Moving<'_>),
    probe: &CacheProbe,
) -> Option<io::Result<u64>> {
    let &(first, _) = ranges.iter().find(|r| r.1 > 0)?;
    if probe.is_cached(src, first) != Some(false) {
        return None;
    }
    let pool = core.shared.copy_pool()?;
    let (src, dst) = match (src.try_clone(), dst.try_clone()) {
        (Ok(s), Ok(d)) => (s, d),
        _ => return None,
    };
    let end = ranges.last().map_or(0, |&(off, len)| off + len);
    let job = Arc::new(crate::split::ColdCopy::new(
        src,
        dst,
        cold_pieces(ranges, core.shared.config.split_chunk),
        core.shared.progress.clone(),
    ));
    bump(&core.counters.offloaded_files, 1);
    // Dropped with this future (a stop request): the threads stop at their next step.
    struct Abandon(Arc<crate::split::ColdCopy>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            self.0.abandon();
        }
    }
    let _abandon = Abandon(Arc::clone(&job));
    let mine = Arc::clone(&job);
    let helpers = (job.pieces() - 1).min(pool.size() - 1);
    let spawner = if helpers > 0 { pool.spawner() } else { None };
    let result = pool.submit_primary(move || {
        if let Some(spawner) = spawner {
            // The first piece alone: by the time it is copied, the cores have handed over the
            // other cold files they hold, so `alone` says whether this one has the pool to
            // itself. Only then do helpers take pieces, and each gives way before its next
            // piece as soon as another cold file's job waits or runs: two threads writing one
            // file contend for its inode lock (28-32% of the samples spinning when helpers
            // started with every file), while one lone large file gains from being read at
            // several offsets at once (3x faster than one thread).
            let first = std::cell::Cell::new(false);
            mine.work(|| first.replace(true));
            if spawner.alone() {
                for _ in 0..helpers {
                    let (job, waiting) = (Arc::clone(&mine), spawner.waiting());
                    spawner.spawn(move || job.work(|| !waiting.alone()));
                }
            }
        }
        mine.run()
    });
    // While the pool copies, this core takes other large files (each to the pool too when
    // cold): otherwise each core would have one cold file in flight, and two cores would keep
    // two of the pool's threads busy (measured: `large` cold 1.09 s against xcp's 0.97 s, whose
    // four threads each copy a file).
    let _light = heavy.map(Heavy::lighten);
    struct OnPool<'a>(&'a crate::core::Counters);
    impl Drop for OnPool<'_> {
        fn drop(&mut self) {
            self.0.offloaded_now.set(self.0.offloaded_now.get() - 1);
        }
    }
    let c = &core.counters;
    c.offloaded_now.set(c.offloaded_now.get() + 1);
    c.offloaded_peak
        .set(c.offloaded_peak.get().max(c.offloaded_now.get()));
    let _on_pool = OnPool(c);
    let r = result.await;
    moving.shown(job.moved());
    bump(&core.counters.offloaded_pieces, job.copied_pieces());
    Some(r.map(|()| end))
}

/// The jobs of a cold copy: `ranges` grouped into pieces of about `chunk` bytes (a range longer
/// than two chunks is cut; short ranges stay together). `chunk` 0: one piece.
fn cold_pieces(ranges: &[(u64, u64)], chunk: u64) -> Vec<Vec<(u64, u64)>> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if chunk == 0 || total < 2 * chunk {
        return vec![ranges.to_vec()];
    }
    let mut pieces = Vec::new();
    let mut cur = Vec::new();
    let mut cur_len = 0;
    for &(mut off, mut len) in ranges {
        while len > 0 {
            let take = len.min(chunk - cur_len);
            cur.push((off, take));
            cur_len += take;
            off += take;
            len -= take;
            if cur_len == chunk {
                pieces.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    pieces
}

fn not_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS)
    )
}

/// Where a file is written before it becomes visible.
enum Staging {
    /// An unnamed `O_TMPFILE` file: linked under its final name when complete.
    Unnamed,
    /// A temporary name in the destination directory: renamed over the final name.
    Named(CString),
    /// `-T`: a temporary name in the temp directory (on the destination's mount): renamed over
    /// the final name.
    NamedInTempDir(CString),
    /// `--partial`/`--partial-dir`: a fixed name (in the destination directory, or in the
    /// partial directory below it) that outlives a failed or killed run and is resumed from.
    Partial {
        /// The partial directory holding it, or `None`: the destination directory (no fd of its
        /// own opened for each file).
        dir: Option<OwnedFd>,
        /// Its name there.
        name: CString,
        /// It lives in the partial directory (removed when empty after the rename).
        in_partial_dir: bool,
    },
    /// `--inplace`: the destination file itself.
    InPlace,
    /// `--write-devices`: the device at the destination name, written into.
    Device,
    /// A file created under its final name inside a new subtree that nobody sees yet (removed
    /// if it fails or the run stops before it is complete).
    Direct,
}

impl Staging {
    /// The directory a `--partial` file is staged in: its partial directory, or `dest`.
    fn partial_dir<'a>(dir: &'a Option<OwnedFd>, dest: BorrowedFd<'a>) -> BorrowedFd<'a> {
        dir.as_ref().map_or(dest, |d| d.as_fd())
    }

    /// Whether the file was opened rather than created, so its owner and mode are whatever an
    /// earlier run or user left.
    fn reused(&self, resumed_from: Option<u64>) -> bool {
        matches!(self, Staging::Device)
            || (matches!(self, Staging::Partial { .. } | Staging::InPlace)
                && resumed_from.is_some())
    }
}

/// Whether a rename or removal failed because a directory that may not be removed holds the
/// name (not empty, and no more deletions allowed or something in it protected).
fn blocked_by_a_directory(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::DirectoryNotEmpty
        || matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EISDIR))
}

/// The fixed name of a partial file for `name` when it stays in the destination directory.
fn partial_name(name: &CStr) -> CString {
    let b = name.to_bytes();
    let mut v = Vec::with_capacity(b.len() + 18);
    if b.len() + 18 <= 255 {
        v.extend_from_slice(b".");
        v.extend_from_slice(b);
        v.extend_from_slice(b".~arsync-partial");
    } else {
        let h = xxhash_rust::xxh3::xxh3_128(b);
        v.extend_from_slice(format!(".~arsync-partial-{h:032x}").as_bytes());
    }
    CString::new(v).expect("no NUL in a file name")
}

/// A destination file to be written where it is (`--inplace`, `--append`, a partial file)
/// refused with EACCES (`e`): when this process, not root, owns it and it lacks its owner's
/// write bit (a read-only file copied before), the bit is added and the file opened again, as
/// rsync does; the final mode is set after the write. Otherwise `e`.
fn writable_as_owner(
    core: &Core,
    d: BorrowedFd<'_>,
    name: &CStr,
    e: io::Error,
) -> io::Result<OwnedFd> {
    let euid = core.shared.policy.euid;
    if e.raw_os_error() != Some(libc::EACCES) || euid == 0 {
        return Err(e);
    }
    let Ok(ro) = sys::open_source(d, name, false) else {
        return Err(e);
    };
    let Ok(st) = sys::fstat(ro.as_fd()) else {
        return Err(e);
    };
    if st.file_type() != FileType::File
        || st.uid != euid
        || st.perm() & 0o200 != 0
        || sys::fchmod(ro.as_fd(), st.perm() | 0o200).is_err()
    {
        return Err(e);
    }
    // The same file, or the mode goes back and the first error stands.
    match sys::open_write(d, name) {
        Ok(fd) if sys::fstat(fd.as_fd()).is_ok_and(|w| (w.dev, w.ino) == (st.dev, st.ino)) => {
            Ok(fd)
        }
        _ => {
            let _ = sys::fchmod(ro.as_fd(), st.perm());
            Err(e)
        }
    }
}

/// Create the destination file where nobody sees it yet: unnamed (`O_TMPFILE`) where the file
/// system supports it, else under a temporary name; with `--partial` under its fixed partial name
/// (an existing partial file is opened, the caller resumes it); with `--inplace` the destination
/// itself. Returns the staging, the fd, and for an opened existing file its size.
async fn stage(
    core: &Core,
    parent: &Arc<DirNode>,
    dst_name: &CStr,
    mode: u32,
) -> EntryResult<(Staging, OwnedFd, Option<u64>)> {
    let dir = parent.dst_fd();
    let cfg = &core.shared.config;
    // Open `name` in `d` if it is a regular file (or, with --write-devices, a device: the last
    // item says so), else create it (making way for anything else).
    let open_or_create = |d: BorrowedFd<'_>,
                          name: &CStr|
     -> EntryResult<(OwnedFd, Option<u64>, bool)> {
        match sys::open_write(d, name).or_else(|e| writable_as_owner(core, d, name, e)) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_fd()).map_err(dst_err("fstat"))?;
                if st.file_type() == FileType::File {
                    return Ok((fd, Some(st.size), false));
                }
                if cfg.write_devices && st.file_type().is_device() {
                    return Ok((fd, Some(st.size), true));
                }
                drop(fd);
                sync::make_way(core, d, name, sync::Rel::Of(parent)).map_err(dst_err("unlink"))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ELOOP) | Some(libc::EISDIR) | Some(libc::ENXIO)
                ) =>
            {
                sync::make_way(core, d, name, sync::Rel::Of(parent)).map_err(dst_err("unlink"))?;
            }
            Err(e) => return Err(("open", e, ErrorClass::Partial, Side::Dst)),
        }
        Ok((
            sys::create_excl(d, name, mode).map_err(dst_err("create"))?,
            None,
            false,
        ))
    };
    if cfg.temp_dir_refused && !cfg.inplace && !cfg.partial {
        // (A file rsync would make in the refused -T directory: its mkstemp fails there.)
        let e = io::Error::from_raw_os_error(libc::ELOOP);
        return Err(("mkstemp (temp-dir)", e, ErrorClass::Partial, Side::Dst));
    }
    if parent.hidden {
        let fd = route::create_named(core, parent, dst_name, mode)
            .await
            .map_err(dst_err("create"))?;
        return Ok((Staging::Direct, fd, None));
    }
    if cfg.inplace {
        let (fd, size, device) = open_or_create(dir, dst_name)?;
        if size.is_some()
            && let Some(b) = &cfg.backup
        {
            // The old content is about to be overwritten where it is: keep a copy.
            let observer = &*core.shared.observer;
            let policy = &core.shared.policy;
            crate::backup::copy(b, policy, observer, dir, dst_name, &parent.rel(), &fd)
                .map_err(dst_err("backup"))?;
        }
        if device {
            // (Nothing to resume or cut: written from its start, never truncated.)
            return Ok((Staging::Device, fd, None));
        }
        return Ok((Staging::InPlace, fd, size));
    }
    if cfg.partial {
        let (pdir, name, in_partial_dir) = match &cfg.partial_dir {
            Some(pd) => {
                let fd = match sys::open_dir_at(dir, pd) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        match sys::mkdir_at(dir, pd, 0o700) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => {
                                return Err((
                                    "mkdir (partial dir)",
                                    e,
                                    ErrorClass::Partial,
                                    Side::Dst,
                                ));
                            }
                        }
                        sys::open_dir_at(dir, pd).map_err(dst_err("opendir (partial dir)"))?
                    }
                    Err(e) => {
                        return Err(("opendir (partial dir)", e, ErrorClass::Partial, Side::Dst));
                    }
                };
                (Some(fd), dst_name.to_owned(), true)
            }
            None => (None, partial_name(dst_name), false),
        };
        let at = Staging::partial_dir(&pdir, dir);
        // (--write-devices implies --inplace: no device is met here.) In a directory this run
        // made (and its partial directory, one name inside it) there is no partial file to
        // resume.
        let (fd, size, _) = if parent.fresh {
            let fd = sys::create_excl(at, &name, mode).map_err(dst_err("create"))?;
            (fd, None, false)
        } else {
            open_or_create(at, &name)?
        };
        return Ok((
            Staging::Partial {
                dir: pdir,
                name,
                in_partial_dir,
            },
            fd,
            size,
        ));
    }
    if let Some(td) = &core.shared.temp_dir {
        if td.beside(dir, parent.dst_dev) {
            // -T on the destination's mount: the file is made there, then linked (unnamed) or
            // renamed into place.
            if !cfg.temp_names && !core.no_tmpfile.borrow().contains(&td.dev) {
                match sys::open_tmpfile(td.fd.as_fd(), mode) {
                    Ok(fd) => return Ok((Staging::Unnamed, fd, None)),
                    Err(e) if no_tmpfile_here(&e) => core.no_tmpfile.borrow_mut().push(td.dev),
                    Err(e) => return Err(("create (temp-dir)", e, ErrorClass::Partial, Side::Dst)),
                }
            }
            let (tmp, fd) = with_temp(core, |t| sys::create_excl(td.fd.as_fd(), t, mode))
                .map_err(|e| ("create (temp-dir)", e, ErrorClass::Partial, Side::Dst))?;
            return Ok((Staging::NamedInTempDir(tmp), fd, None));
        }
        // -T elsewhere (rsync's use of it: no room here for a second copy of a file): the old
        // file goes first (with -b, to its backup name), so that old and new never take room
        // together; the new one is staged unseen below and published whole.
        make_room(core, parent, dst_name)?;
    }
    if !cfg.temp_names && !core.no_tmpfile.borrow().contains(&parent.dst_dev) {
        match route::create_tmpfile(core, parent, mode).await {
            Ok(fd) => return Ok((Staging::Unnamed, fd, None)),
            Err(e) if no_tmpfile_here(&e) => core.no_tmpfile.borrow_mut().push(parent.dst_dev),
            Err(e) => return Err(dst_err("create")(e)),
        }
    }
    let (tmp, fd) =
        with_temp(core, |t| sys::create_excl(dir, t, mode)).map_err(dst_err("create"))?;
    Ok((Staging::Named(tmp), fd, None))
}

/// Whether an `O_TMPFILE` open failed because the file system has none (then files there are
/// made under temporary names).
fn no_tmpfile_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
    )
}

/// `-T` with the temp directory on another mount: remove the regular file (or symlink, device,
/// special) at `name` before its replacement is written (with `-b`, move it to its backup name).
/// A directory there is left to the publish, which removes it as it would without `-T`.
fn make_room(core: &Core, parent: &DirNode, name: &CStr) -> EntryResult {
    let dir = parent.dst_fd();
    match sys::lstat_at(dir, name) {
        Ok(st) if st.file_type() != FileType::Dir => {}
        _ => return Ok(()),
    }
    match sync::put_away(&core.shared, dir, name, &parent.rel()) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(dst_err("unlink")(e)),
        _ => Ok(()),
    }
}

/// Make a complete file visible under `name`, replacing what was there atomically.
fn publish(
    core: &Core,
    dir: BorrowedFd<'_>,
    staging: &Staging,
    fd: &OwnedFd,
    name: &CStr,
    rel: sync::Rel<'_>,
) -> EntryResult {
    match staging {
        Staging::InPlace | Staging::Direct | Staging::Device => Ok(()),
        Staging::Named(tmp) => {
            sync::rename_over(core, dir, tmp, name, rel).map_err(dst_err("rename"))
        }
        Staging::NamedInTempDir(tmp) => {
            let td = core
                .shared
                .temp_dir
                .as_ref()
                .expect("staged in the temp dir");
            sync::rename_over_from(core, td.fd.as_fd(), tmp, dir, name, rel)
                .map_err(dst_err("rename"))
        }
        Staging::Partial {
            dir: pdir,
            name: pname,
            in_partial_dir,
        } => {
            let r = if *in_partial_dir {
                if let Some(b) = &core.shared.config.backup {
                    // (rename_over does this for a file staged beside its name.)
                    crate::backup::keep(b, &*core.shared.observer, dir, name, &rel.path())
                        .map_err(dst_err("backup"))?;
                }
                let pdir = Staging::partial_dir(pdir, dir);
                match sys::rename_at(pdir, pname, dir, name, 0) {
                    Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                        sync::make_way(core, dir, name, rel)
                            .and_then(|()| sys::rename_at(pdir, pname, dir, name, 0))
                    }
                    r => r,
                }
            } else {
                sync::rename_over(core, dir, pname, name, rel)
            };
            if let Err(e) = &r
                && blocked_by_a_directory(e)
            {
                // Complete, but a directory that may not go holds its name (--max-delete spent,
                // protected entries): not kept as a partial file to resume, as rsync, which
                // decides that before the transfer, leaves none (before, `DIR/.pd/NAME` stayed).
                let _ = sys::unlink_at(Staging::partial_dir(pdir, dir), pname, 0);
            }
            // (An emptied partial directory is removed when its directory is finished, when no
            // other file of it can be using it any more.)
            r.map_err(dst_err("rename"))
        }
        Staging::Unnamed => match sys::link_fd(fd.as_fd(), dir, name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Replace an existing entry: a temporary name, then an atomic rename over it.
                let (tmp, ()) = with_temp(core, |t| sys::link_fd(fd.as_fd(), dir, t))
                    .map_err(dst_err("link"))?;
                sync::rename_over(core, dir, &tmp, name, rel).map_err(|e| {
                    let _ = sys::unlink_at(dir, &tmp, 0);
                    ("rename", e, ErrorClass::Partial, Side::Dst)
                })
            }
            Err(e) => Err(dst_err("link")(e)),
        },
    }
}

/// Stage the destination file, move the data from `src`, apply metadata (extended attributes
/// and ACLs read from `meta_src`: the source file, also when the data comes from a reference
/// directory's copy), make it visible. Returns the bytes written (less than the size when a
/// partial file was resumed).
async fn copy_file_data(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    (src, meta_src): (&mut route::SourceFd, Option<&OwnedFd>),
    st: &Stat,
    dst_name: &CStr,
    (heavy, moving): (Option<&Heavy<'_>>, &Moving<'_>),
) -> EntryResult<u64> {
    let cfg = &core.shared.config;
    let policy = &core.shared.policy;
    let needs_chown = policy.chown_ids(st, parent.made_in.gid).is_some();
    // Without -p a file that replaces another keeps that one's permissions (rsync's dest_mode).
    let replaced = if policy.perms || parent.fresh {
        None
    } else {
        sys::lstat_at(parent.dst_fd(), dst_name)
            .ok()
            .filter(|d| {
                d.file_type() == FileType::File || (cfg.write_devices && d.file_type().is_device())
            })
            .map(|d| d.perm())
    };
    let perm = policy.dest_perm(st, replaced, &parent.made_in);
    let (create_mode, chmod_needed) = match replaced {
        Some(_) => (0o600, true),
        None => policy.create_mode(st, needs_chown, &parent.made_in),
    };
    let dir = parent.dst_fd();
    let t = core.lat.start();
    let (staging, dst, existing) = stage(core, parent, dst_name, create_mode).await?;
    core.lat.record(Op::Create, t);
    // --copy-devices / --write-devices: a device on either side (its size is no file's, and it
    // is never truncated or preallocated).
    let src_device =
        cfg.copy_devices && sys::fstat(src.as_fd()).is_ok_and(|s| s.file_type().is_device());
    let dst_device = matches!(staging, Staging::Device);
    let device = src_device || dst_device;
    // Data from a reference (`meta_src`: the source gives the attributes) is checked for
    // changes against the reference's own size and mtime, not the source's (which may differ in
    // mtime: -c found the same data). Before, every such copy on a kernel path failed as
    // "changed while being copied".
    let measured = match meta_src {
        Some(_) => sys::fstat(src.as_fd())
            .map(|b| (b.size, b.mtime))
            .map_err(src_err("fstat"))?,
        None => (st.size, st.mtime),
    };
    let t_data = core.lat.start();
    // A named temporary is removed whatever happens, the future being dropped (a stop request)
    // included, unless it was published.
    let mut temp = match &staging {
        Staging::Named(tmp) => TempGuard {
            dir,
            name: Some(tmp.as_c_str()),
        },
        Staging::NamedInTempDir(tmp) => TempGuard {
            dir: core
                .shared
                .temp_dir
                .as_ref()
                .map_or(dir, |td| td.fd.as_fd()),
            name: Some(tmp.as_c_str()),
        },
        Staging::Direct => TempGuard {
            dir,
            name: Some(dst_name),
        },
        _ => TempGuard { dir, name: None },
    };
    let result = async {
        // --inplace --no-whole-file: only the chunks that differ are written.
        let mut rewritten = None;
        if let Some(size) = existing
            && cfg.changed_only
            && cfg.append.is_none()
            && matches!(staging, Staging::InPlace)
        {
            let n = sync::rewrite_changed(core, (src, &dst), size, st.size, &|n| moving.add(n))
                .await
                .map_err(|(side, e)| match side {
                    Side::Src => data_err("read")(e),
                    Side::Dst => dst_err("write")(e),
                })?;
            rewritten = Some(n);
        }
        // A partial (or in-place) file from an earlier run: keep the prefix that matches.
        let mut from = 0u64;
        if let Some(size) = existing
            && rewritten.is_none()
        {
            from = match cfg.append {
                // --append: the kept part is taken as it is.
                Some(crate::Append::Trust) if matches!(staging, Staging::InPlace) => {
                    size.min(st.size)
                }
                _ => sync::resume_point(core, src, &dst, size, st.size).await,
            };
            if size > st.size || (from == 0 && size > 0 && cfg.sparse) {
                sys::ftruncate(dst.as_fd(), from).map_err(dst_err("ftruncate"))?;
            }
        }
        let probe = CacheProbe::default();
        let mut path = if rewritten.is_some() {
            // (Written already.)
            DataPath::Ring(Vec::new())
        } else if from > 0 {
            DataPath::Ring(vec![(from, st.size - from)])
        } else {
            data_path(core, parent, src, st, device, &probe)?
        };
        if from > 0 && from == st.size {
            // The kept file is already complete.
            path = DataPath::Ring(Vec::new());
        }
        let pair = (st.dev, parent.dst_dev);
        // A file that outlives a killed run must keep a size that says how far it got.
        let keep_size = matches!(staging, Staging::Partial { .. } | Staging::InPlace);
        let prealloc = |fd: &OwnedFd, off: u64, len: u64| {
            if dst_device {
                Ok(())
            } else if keep_size {
                sys::fallocate_keep_size(fd.as_fd(), off, len)
            } else {
                sys::fallocate(fd.as_fd(), off, len)
            }
        };
        if let DataPath::Clone = path {
            match sys::ficlone(dst.as_fd(), src.as_fd()) {
                Ok(()) => {
                    bump(&core.counters.cloned_files, 1);
                    tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, "data cloned (FICLONE)");
                }
                Err(e) if cfg.reflink == Reflink::Always => {
                    return Err(("clone (--reflink=always)", e, ErrorClass::Partial, Side::Dst));
                }
                Err(e) if not_here(&e) => {
                    core.no_clone.borrow_mut().push(pair);
                    path = data_path(core, parent, src, st, device, &probe)?;
                }
                Err(e) => return Err(("clone", e, ErrorClass::Partial, Side::Dst)),
            }
        }
        if core.shared.throttle.is_some() {
            // --bwlimit: whatever would move the data does it in charged chunks (a clone moves
            // none).
            path = match path {
                DataPath::Clone => DataPath::Clone,
                DataPath::Inline | DataPath::Kernel => DataPath::Throttled(vec![(0, st.size)]),
                DataPath::KernelRanges(e)
                | DataPath::Ring(e)
                | DataPath::Throttled(e)
                | DataPath::Sparse(e) => DataPath::Throttled(e),
            };
        }
        if !matches!(path, DataPath::Inline) {
            // A file that may take a while: the display counts it as seen before its first
            // chunk shows.
            core.publish_progress();
        }
        if let DataPath::Kernel = path {
            let _ = prealloc(&dst, 0, st.size);
            let split = cfg.split_chunk > 0
                && st.size >= 2 * cfg.split_chunk
                && !keep_size
                && core.worker.borrow().count() > 1
                && (cfg.split_forced || splits_on(core, parent.dst_dev, &dst));
            // A cold source goes to the pool first (in pieces when large); a warm large one is
            // split across the cores.
            let copied = if let Some(r) =
                copy_cold(core, (src, &dst), &[(0, st.size)], (heavy, moving), &probe).await
            {
                r
            } else if split {
                copy_split(core, (src, &dst), st.size, dst_name, moving).await
            } else {
                fsops::copy::copy_kernel(src, &dst, st.size, 16 << 20, &|n| moving.add(n)).await
            };
            match copied {
                Ok(_) => {
                    bump(&core.counters.kernel_copied_files, 1);
                    tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, "data copied by copy_file_range");
                }
                Err(e) if not_here(&e) => {
                    core.no_kernel_copy.borrow_mut().push(pair);
                    sys::ftruncate(dst.as_fd(), 0).map_err(dst_err("ftruncate"))?;
                    path = DataPath::Ring(vec![(0, st.size)]);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(("read", e, ErrorClass::Partial, Side::Src));
                }
                Err(e) => return Err(data_err("copy_file_range")(e)),
            }
        }
        if let DataPath::KernelRanges(extents) = &path {
            for &(off, len) in extents {
                if let Err(e) = prealloc(&dst, off, len)
                    && !not_here(&e)
                {
                    return Err(dst_err("fallocate")(e));
                }
            }
            let mut copied = Ok(0);
            if let Some(r) = copy_cold(core, (src, &dst), extents, (heavy, moving), &probe).await {
                copied = r;
            } else {
                for &(off, len) in extents {
                    copied = fsops::copy::copy_kernel_range(
                        src,
                        &dst,
                        (off, len),
                        16 << 20,
                        &|n| moving.add(n),
                    )
                    .await;
                    if copied.is_err() {
                        break;
                    }
                }
            }
            match copied {
                Ok(_) => {
                    bump(&core.counters.kernel_copied_files, 1);
                    tracing::trace!(
                        path = %parent.child_rel(dst_name).display(),
                        size = st.size,
                        extents = extents.len(),
                        "data extents copied by copy_file_range"
                    );
                }
                Err(e) if not_here(&e) => {
                    core.no_kernel_copy.borrow_mut().push(pair);
                    sys::ftruncate(dst.as_fd(), 0).map_err(dst_err("ftruncate"))?;
                    path = DataPath::Ring(extents.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(("read", e, ErrorClass::Partial, Side::Src));
                }
                Err(e) => return Err(data_err("copy_file_range")(e)),
            }
        }
        let path_kind = if matches!(path, DataPath::Inline) {
            PathKind::Inline
        } else {
            PathKind::Other
        };
        // -S, a regular file on both sides: the inline and the one-pass copies leave the blocks
        // of zeros unwritten (the file is new or was emptied, not preallocated): nothing to read
        // back.
        let sparse_writes = cfg.sparse && !device;
        let zeros_left = sparse_writes && matches!(path, DataPath::Sparse(_) | DataPath::Inline);
        let dst = match path {
            DataPath::Inline => {
                route::copy_small(core, src, &dst, st.size, sparse_writes)
                    .await
                    .map_err(data_err("read"))?;
                bump(&core.counters.inline_files, 1);
                tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, "data copied inline (read/write on the core)");
                dst
            }
            DataPath::Ring(extents) => {
                for &(off, len) in &extents {
                    if let Err(e) = prealloc(&dst, off, len)
                        && !not_here(&e)
                    {
                        return Err(dst_err("fallocate")(e));
                    }
                }
                let _ = sys::fadvise_sequential(src.as_fd());
                let _slot = core.ring_slots.acquire().await;
                let s2 = src.share();
                // --direct: only for large files, only with aligned extents, only where both file
                // systems take it (else buffered, said once).
                let direct = cfg.direct
                    && st.size > cfg.small_file_max
                    && extents.iter().all(|&(o, _)| o.is_multiple_of(fsops::copy::DIRECT_ALIGN as u64))
                    && match sys::set_direct(s2.as_fd(), true)
                        .and_then(|()| sys::set_direct(dst.as_fd(), true))
                    {
                        Ok(()) => true,
                        Err(e) => {
                            let _ = sys::set_direct(s2.as_fd(), false);
                            let _ = sys::set_direct(dst.as_fd(), false);
                            direct_refused(core, &e);
                            false
                        }
                    };
                let out = fsops::copy::copy_ring_ranges_with(
                    s2,
                    dst,
                    &extents,
                    &core.pool,
                    (cfg.ring_depth, direct),
                    &|n| moving.add(n),
                )
                .await
                .map_err(data_err("copy"))?;
                bump(&core.counters.ring_files, 1);
                tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, direct, extents = extents.len(), "data copied through the ring");
                if direct {
                    // Back to buffered for what follows (read-back, metadata); the last block was
                    // written whole, so the size is set exactly.
                    let _ = sys::set_direct(src.as_fd(), false);
                    sys::set_direct(out.dst.as_fd(), false).map_err(dst_err("fcntl"))?;
                    sys::ftruncate(out.dst.as_fd(), st.size).map_err(dst_err("ftruncate"))?;
                }
                out.dst
            }
            DataPath::Throttled(ranges) => {
                for &(off, len) in &ranges {
                    if let Err(e) = prealloc(&dst, off, len)
                        && !not_here(&e)
                    {
                        return Err(dst_err("fallocate")(e));
                    }
                }
                let throttle = core.shared.throttle.as_ref().expect("a throttled path has a rate");
                copy_throttled(throttle, (src, &dst), &ranges, moving)
                    .await
                    .map_err(data_err("read"))?;
                bump(&core.counters.inline_files, 1);
                tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, "data copied at the --bwlimit rate");
                dst
            }
            DataPath::Sparse(ranges) => {
                // (Not preallocated: the blocks of zeros must stay holes.)
                let mut buf = core.pool.take();
                let mut copied = Ok(0);
                for &range in &ranges {
                    copied = fsops::copy::copy_sparse_range(src, &dst, range, &mut buf, &|n| {
                        moving.add(n)
                    })
                    .await;
                    if copied.is_err() {
                        break;
                    }
                }
                core.pool.give(buf);
                copied.map_err(data_err("read"))?;
                bump(&core.counters.inline_files, 1);
                tracing::trace!(path = %parent.child_rel(dst_name).display(), size = st.size, ranges = ranges.len(), "data copied in one pass, blocks of zeros left unwritten (-S)");
                dst
            }
            DataPath::Clone | DataPath::Kernel | DataPath::KernelRanges(_) => dst,
        };
        if !matches!(path_kind, PathKind::Inline) && !src_device {
            // Whatever moved the data (ring, copy_file_range, clone), the source must still be
            // what was measured, or the copy may be torn: never published.
            let now = sys::fstat(src.as_fd()).map_err(src_err("fstat"))?;
            if (now.size, now.mtime) != measured {
                return Err((
                    "read",
                    io::Error::other(
                        "file changed while being copied (size or mtime moved); not published",
                    ),
                    ErrorClass::Partial,
                    Side::Src,
                ));
            }
        }
        if cfg.sparse && !device && st.size > 0 && !zeros_left {
            // -S as rsync gives it: zeros the source holds as data become holes too.
            // (The core's small-file buffer: no await until it is given back.)
            let mut buf = core.small_buf.borrow_mut();
            fsops::copy::punch_zero_blocks(dst.as_fd(), st.size, &mut buf)
                .map_err(dst_err("fallocate (punch hole)"))?;
        }
        crate::hooks::fire_written(dst.as_fd(), dst_name);
        if cfg.verify {
            match sync::same_bytes(core, src, &dst, st.size).await {
                Ok(true) => bump(&core.counters.verified, 1),
                Ok(false) => {
                    return Err((
                        "verify",
                        io::Error::other(
                            "the written file differs from the source when read back; not published",
                        ),
                        ErrorClass::Partial,
                        Side::Dst,
                    ));
                }
                Err(e) => return Err(data_err("verify")(e)),
            }
        }
        // (A -S copy on the inline path gave the file its size already: a reused file was
        // emptied first, and a tail of zeros left unwritten was followed by an ftruncate.)
        let sized = zeros_left && matches!(path_kind, PathKind::Inline);
        if (existing.is_some() || cfg.sparse) && !dst_device && !sized {
            // Set the size exactly: a trailing hole, or a reused file that was longer.
            sys::ftruncate(dst.as_fd(), st.size).map_err(dst_err("ftruncate"))?;
        }
        let reused = staging.reused(existing);
        if reused {
            // Whoever made it, give it the source's owner (a chown clears setuid/setgid, so the
            // chmod below always runs).
            let d = sys::fstat(dst.as_fd()).map_err(dst_err("fstat"))?;
            if let Some((uid, gid)) = policy.chown_existing(&d, st) {
                match sys::fchown(dst.as_fd(), uid, gid) {
                    // A group the user is not in: rsync goes on silently when not root (as
                    // for a new file).
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && !policy.root => {}
                    r => r.map_err(dst_err("chown"))?,
                }
            }
        }
        core.lat.record(Op::Data, t_data);
        let t = core.lat.start();
        let (dst, u) = route::apply_meta(
            core,
            dst,
            st,
            if reused { st.gid } else { parent.made_in.gid },
            (perm, chmod_needed || reused),
            meta_src.unwrap_or(src),
            // A reused file (`--inplace`, `--partial`) may carry attributes of its own.
            parent.inherits_acl || reused,
        )
        .await;
        // An attribute that could not be given (a chown refused under --super, an attribute
        // the file system has no room for) fails the entry, but the complete copy still takes
        // its name, as rsync's finish_transfer renames it whatever set_file_attrs said.
        let meta_failed = match u {
            Ok(u) => {
                unsupported_xattrs(core, u);
                None
            }
            Err(e) => Some(meta_err(e)),
        };
        core.lat.record(Op::Meta, t);
        let dst = if cfg.fsync {
            // Data and attributes on the storage before the name points at them.
            route::fsync(dst).await.map_err(dst_err("fsync"))?
        } else {
            dst
        };
        let t = core.lat.start();
        if let (
            Some(delayed),
            Staging::Partial {
                in_partial_dir: true,
                ..
            },
        ) = (&parent.delayed, &staging)
        {
            // --delay-updates: complete, it waits in the partial directory for the end of the
            // run. A directory in the way of its name goes now (rsync's generator removes it
            // before the transfer).
            if !parent.fresh
                && sys::lstat_at(dir, dst_name).is_ok_and(|d| d.file_type() == FileType::Dir)
                && let Err(e) = sync::make_way(core, dir, dst_name, sync::Rel::Of(parent))
            {
                // (A directory that may not go: the waiting copy goes instead, as in publish.)
                if let Staging::Partial { dir: pdir, name, .. } = &staging
                    && blocked_by_a_directory(&e)
                {
                    let _ = sys::unlink_at(Staging::partial_dir(pdir, dir), name, 0);
                }
                return Err(dst_err("rmdir")(e));
            }
            lock(delayed).push(dst_name.to_owned());
        } else {
            publish(core, dir, &staging, &dst, dst_name, sync::Rel::Of(parent))?;
        }
        core.lat.record(Op::Publish, t);
        Ok((rewritten.unwrap_or(st.size - from), meta_failed))
    }
    .await;
    if result.is_ok() {
        temp.name = None;
    }
    result.and_then(|(bytes, meta_failed)| meta_failed.map_or(Ok(bytes), Err))
}

/// A lock of the run's few shared lists (one poisoned by a panicking thread is still usable:
/// each push is whole).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file found up to date leaves no partial copy of itself (`--partial-dir`, or
/// `--delay-updates`' `.~tmp~`): a regular file `PD/NAME` is removed, as rsync's generator
/// removes it when the quick check passes (the emptied directory goes when `dir` is finished).
fn drop_stale_partial(core: &Core, dir: BorrowedFd<'_>, dst_name: &CStr) {
    let cfg = &core.shared.config;
    if !cfg.dry_run
        && let Some(held) = in_partial_dir(cfg, dst_name)
        && sys::lstat_at(dir, &held).is_ok_and(|s| s.file_type() == FileType::File)
        && let Err(e) = sys::unlink_at(dir, &held, 0)
    {
        tracing::debug!(error = %e, "a stale partial file could not be removed");
    }
}

/// `--delay-updates`: `name` of `dir` in its partial directory (`PD/NAME`), where a file waits
/// for the end of the run.
fn in_partial_dir(cfg: &crate::Config, name: &CStr) -> Option<CString> {
    let pd = cfg.partial_dir.as_deref()?;
    let mut v = pd.to_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(name.to_bytes());
    CString::new(v).ok()
}

/// The bytes of one file shown by the progress display while it is copied, a chunk at a time
/// (only the paths that move large files in chunks report them: a small file is counted whole
/// when done, as before). Dropped when the file is counted: its core's counters are published
/// first, then what was shown is taken back, so the display never loses the file's bytes.
pub(crate) struct Moving<'a> {
    core: &'a Core,
    mine: Cell<u64>,
}

impl<'a> Moving<'a> {
    fn new(core: &'a Core) -> Self {
        Self {
            core,
            mine: Cell::new(0),
        }
    }

    /// `n` more bytes written on this core.
    fn add(&self, n: u64) {
        self.core.shared.progress.moved(n);
        self.mine.set(self.mine.get() + n);
    }

    /// `n` bytes a shared copy (pool threads, other cores) already showed.
    fn shown(&self, n: u64) {
        self.mine.set(self.mine.get() + n);
    }
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        let n = self.mine.get();
        if n > 0 {
            self.core.publish_progress();
            self.core.shared.progress.settled(n);
        }
    }
}

/// `--bwlimit`: copy `ranges` of `src` with reads and writes on the core, a chunk at a time,
/// waiting after each for the run's clock (other files of this core wait meanwhile; the cores
/// share one rate). A source that ends early is an error (it shrank while being copied); one
/// that grew is caught by the caller's check of its size and mtime.
async fn copy_throttled(
    throttle: &crate::throttle::Throttle,
    (src, dst): (&OwnedFd, &OwnedFd),
    ranges: &[(u64, u64)],
    moving: &Moving<'_>,
) -> io::Result<u64> {
    // (No larger than the largest range: a small file does not zero a whole chunk.)
    let longest = ranges.iter().map(|&(_, len)| len).max().unwrap_or(0);
    let mut buf = vec![0u8; (throttle.chunk() as u64).min(longest).max(1) as usize];
    let mut total = 0;
    for &(off, len) in ranges {
        let (mut pos, end) = (off, off + len);
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = sys::read_at(src.as_fd(), &mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being copied",
                ));
            }
            sys::write_all_at(dst.as_fd(), &buf[..n], pos)?;
            moving.add(n as u64);
            pos += n as u64;
            total += n as u64;
            throttle.pace(n as u64).await;
        }
    }
    Ok(total)
}

/// Unlinks a staged temporary name when dropped, unless disarmed (`name = None`).
struct TempGuard<'a> {
    dir: BorrowedFd<'a>,
    name: Option<&'a CStr>,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name {
            let _ = sys::unlink_at(self.dir, n, 0);
        }
    }
}

/// Whether a warm large file written on `dev` (through `dst`) is split across the cores by
/// default: where the file system takes one file's writes one at a time, the other cores would
/// wait on its lock (session 36, a warm 512 MiB file, two cores: ext4 0.1583 s split against
/// 0.1622 not, CPU 0.282 against 0.160; XFS 0.0988 against 0.0967, CPU 0.175 against 0.096).
fn splits_on(core: &Core, dev: u64, dst: &OwnedFd) -> bool {
    if let Some(&(_, yes)) = core.split_devs.borrow().iter().find(|(d, _)| *d == dev) {
        return yes;
    }
    let yes = !sys::writes_one_file_at_a_time(dst.as_fd());
    core.split_devs.borrow_mut().push((dev, yes));
    yes
}

/// Copy a large file with `copy_file_range` on several cores: offer helper tasks to the other
/// cores, copy chunks here too, and wait for the chunks the helpers took. While it runs this
/// core takes no new task (the others take the rest of the tree).
async fn copy_split(
    core: &Core,
    (src, dst): (&OwnedFd, &OwnedFd),
    size: u64,
    name: &CStr,
    moving: &Moving<'_>,
) -> io::Result<u64> {
    let job = Arc::new(crate::split::SplitCopy::new(
        src,
        dst,
        (size, core.shared.config.split_chunk),
        core.shared.progress.clone(),
    )?);
    // (What the chunks showed is taken back with the file, whoever copied them.)
    struct Shown<'a>(&'a crate::split::SplitCopy, &'a Moving<'a>);
    impl Drop for Shown<'_> {
        fn drop(&mut self) {
            self.1.shown(self.0.moved());
        }
    }
    let _shown = Shown(&job, moving);
    let helpers = (core.worker.borrow().count() as u64 - 1).min(job.chunks() - 1);
    for _ in 0..helpers {
        core.worker
            .borrow_mut()
            .share(Task::Chunk(Arc::clone(&job)));
    }
    // Blocked while this file is copied (the core loop stops taking tasks): the helper tasks
    // go to the other cores.
    core.deferred.set(true);
    struct Abandon<'a>(&'a crate::split::SplitCopy, bool);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.abandon();
            }
        }
    }
    let mut guard = Abandon(&job, false);
    if helpers > 0 && crate::hooks::split_waits(name) {
        // Test hook: hold this core (blocking it, as the hook means to) until another core has
        // taken a helper task and claimed a chunk, so a test can see the work shared whatever
        // else the machine is doing.
        while !job.claimed_any() {
            std::thread::yield_now();
        }
    }
    let mine = job.work().await;
    bump(&core.counters.split_chunks, mine);
    let r = job.wait().await;
    guard.1 = true;
    bump(&core.counters.split_files, 1);
    tracing::trace!(
        size,
        chunks = job.chunks(),
        by_owner = mine,
        "large file copied by several cores"
    );
    r.map(|()| size)
}

/// A source directory that may not be opened (`EACCES`: another user's private directory): its
/// destination is made, empty, with the source's owner, mode and times (read by `lstat` from the
/// parent, which needs no permission on the directory itself), as rsync and `cp -a` make it;
/// the caller reports the error. An entry already there is left as it is (its listing failed,
/// so nothing in it is judged or deleted). Before, the directory was missing from the copy.
fn make_unlisted_dir(core: &Core, parent: &DirNode, name: &CStr, follow: bool) {
    make_unlisted_dir_at(
        core,
        (parent.src_fd(), parent.dst_fd(), name),
        (&parent.child_rel(name), parent.made_in, parent.root),
        !parent.fresh,
        follow,
    );
}

/// [`make_unlisted_dir`] of `name` in source directory `sdir`, made in `ddir` (`rel` in the
/// transfer, new directories there getting what `made_in` says); `look`: whether `ddir` may
/// already hold the name.
fn make_unlisted_dir_at(
    core: &Core,
    (sdir, ddir, name): (BorrowedFd<'_>, BorrowedFd<'_>, &CStr),
    (rel, made_in, root): (&Path, fsops::meta::MadeIn, usize),
    look: bool,
    follow: bool,
) {
    let cfg = &core.shared.config;
    if cfg.existing {
        return;
    }
    let st = if follow {
        sys::stat_at(sdir, name)
    } else {
        sys::lstat_at(sdir, name)
    };
    let Ok(st) = st else { return };
    if st.file_type() != FileType::Dir {
        return;
    }
    if let Some(Ok(there)) = look.then(|| sys::lstat_at(ddir, name)) {
        if there.file_type() == FileType::Dir || cfg.ignore_existing {
            return;
        }
        // A non-directory in its place goes (backed up with -b), as rsync replaces it.
        if !cfg.dry_run
            && let Err(e) = sync::put_away(
                &core.shared,
                ddir,
                name,
                rel.parent().unwrap_or(Path::new("")),
            )
        {
            report(core, rel, "unlink", &e, ErrorClass::Partial);
            return;
        }
    }
    if !cfg.dry_run {
        if let Err(e) = sys::mkdir_at(ddir, name, 0o700) {
            report(core, rel, "mkdir", &e, ErrorClass::Partial);
            return;
        }
        // (Its extended attributes and ACLs are as unreadable as its listing.)
        if let Err((op, e)) = fsops::meta::apply_at(
            ddir,
            name,
            &st,
            &core.shared.policy,
            &made_in,
            false,
            fsops::meta::Xattrs::None,
        ) {
            report(core, rel, op.name(), &e, ErrorClass::Partial);
        }
    }
    bump(&core.counters.dirs, 1);
    item(
        core,
        (root, || rel.to_path_buf()),
        (FileType::Dir, Some(&st)),
        0,
        &Change::new_entry(How::Local),
        None,
    );
}

/// Whether a source directory that may not be read (`e`: `EACCES`) is walked through by name
/// alone: only named paths are taken from it (`--files-from`/`-R`, a `0711` directory on their
/// way), as rsync reaches them by path with search permission only; or nothing at all (`-d`
/// without `-r`: the directory is made, its contents are not sent, and rsync never opens it).
/// (Not with `-X`/`-A`, whose attributes of the directory itself need it read.)
fn passed_by_name(cfg: &crate::Config, scope: &Scope, e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EACCES)
        && matches!(scope, Scope::Names(..) | Scope::Empty)
        && !cfg.xattrs
        && !cfg.acls
}

/// Create or reuse the destination directory `name` and start scanning the source one.
fn enter_dir(
    core: &Rc<Core>,
    parent: &Arc<DirNode>,
    name: &CStr,
    (follow, through_named): (bool, bool),
) -> EntryResult {
    let cfg = &core.shared.config;
    let (mut scope, mut implied) = parent.scope.child(name, cfg.recursive);
    if through_named && let Some(below) = parent.scope.named_below(name) {
        // A symlink named itself and on the way to named paths: only those are sent below it
        // (rsync sends the link, which is not recursed, and the implied directory in its
        // place, with -r too; with --no-implied-dirs that directory is only made on the way).
        (scope, implied) = (below, true);
    }
    if let Some(below) = parent.scope.named_below(name)
        && cfg.filters.has_sender_rules()
        && cfg.filters.excludes_at(
            parent.child_rel(name).as_os_str().as_bytes(),
            true,
            parent.dir_rules.as_deref(),
            &|| sys::abs_name(parent.src_fd(), name.to_bytes()),
        )
    {
        // (Named, excluded, with named paths below: see `scan_names`.)
        (scope, implied) = (below, true);
    }
    // (Opened only to pass through: such a node never parks, as a reopen would need to read it.)
    let mut passed = false;
    let src = match if follow {
        sys::open_dir_at_follow(parent.src_fd(), name)
    } else {
        sys::open_dir_at(parent.src_fd(), name)
    }
    .or_else(|e| match passed_by_name(cfg, &scope, &e) {
        true => sys::open_dir_at_to_pass(parent.src_fd(), name, follow)
            .inspect(|_| passed = true)
            .map_err(|_| e),
        false => Err(e),
    }) {
        Ok(fd) => fd,
        Err(e) => {
            if cfg.ignore_errors
                && !parent.fresh
                && !parent.hidden
                && let Ok(dst) = sys::open_dir_at(parent.dst_fd(), name)
            {
                // --ignore-errors: an unreadable source directory lists nothing, so everything
                // in its destination counterpart is extraneous (as rsync deletes it).
                delete_extraneous(
                    core,
                    dst.as_fd(),
                    (parent.root, &parent.child_rel(name)),
                    (None, parent.dir_rules.as_ref()),
                    Vec::new(),
                    &parent.child_src_path(name),
                );
            }
            if e.raw_os_error() == Some(libc::EACCES) {
                make_unlisted_dir(core, parent, name, follow);
            }
            return Err(src_err("opendir")(e));
        }
    };
    let st = sys::fstat(src.as_fd()).map_err(src_err("fstat"))?;
    if follow && parent.has_ancestor((st.dev, st.ino)) {
        return Err((
            "opendir (directory loop through a followed symlink)",
            io::Error::from_raw_os_error(libc::ELOOP),
            ErrorClass::Partial,
            Side::Src,
        ));
    }
    let other_fs = cfg.one_file_system > 0 && st.dev != parent.root_dev;
    if other_fs && cfg.one_file_system > 1 {
        skip(core, &parent.child_rel(name), SkipReason::OtherFileSystem);
        return Ok(());
    }
    let ddir = parent.dst_fd();
    crate::hooks::fire(crate::hooks::Point::BeforeEnter, ddir, name);
    let t = core.lat.start();
    let mut staged = None;
    // --existing makes no new directory, but one whose name holds a non-directory replaces it
    // (the name exists), as rsync does.
    let in_the_way =
        || !parent.fresh && sys::lstat_at(ddir, name).is_ok_and(|d| d.file_type() != FileType::Dir);
    // --no-implied-dirs, a directory only on the way to named paths: rsync leaves such a path
    // element as it is, "even a symlink to a directory on the receiving side". A symlink to a
    // directory stands for that directory (as under -K); anything else that is no directory is
    // left, and what is below it fails ("Not a directory", exit 23; until session 34 it was
    // replaced by a directory: a file of the user's lost).
    let kept_as_it_is = implied && cfg.no_implied_dirs;
    let follow_dst_link = cfg.keep_dirlinks || kept_as_it_is;
    let left_as_it_is = || -> EntryResult<()> {
        if kept_as_it_is {
            let e = io::Error::from_raw_os_error(libc::ENOTDIR);
            return Err(("opendir", e, ErrorClass::Partial, Side::Dst));
        }
        Ok(())
    };
    let dst = if cfg.dry_run || (cfg.existing && !in_the_way()) {
        // Look, create nothing: a dry run pretends, --existing makes no new directories.
        let found = if parent.fresh {
            None
        } else {
            match sys::open_dir_at(ddir, name) {
                Ok(fd) => Some(fd),
                Err(e) if follow_dst_link && e.raw_os_error() == Some(libc::ENOTDIR) => {
                    sys::open_dir_at_follow(ddir, name).ok()
                }
                Err(_) => None,
            }
        };
        if kept_as_it_is && found.is_none() && in_the_way() {
            left_as_it_is()?;
        }
        match found {
            Some(fd) => DestDir::Existing(fd),
            None if cfg.existing && !(cfg.dry_run && in_the_way()) => {
                bump(&core.counters.skipped, 1);
                return Ok(());
            }
            None => DestDir::Absent,
        }
    } else {
        // On a re-sync most directories exist: try to open before trying to create (one of
        // ours the run may not read, made readable to open it: its mode is the source's, or
        // with -p kept, at the end).
        let existing = if parent.fresh {
            Err(None)
        } else {
            sys::open_dir_at_as_owner(ddir, name).map_err(|e| e.raw_os_error())
        };
        let absent = matches!(existing, Err(None) | Err(Some(libc::ENOENT)));
        if let Ok(fd) = existing {
            DestDir::Existing(fd)
        } else if absent && !parent.hidden && stages_dirs(cfg) {
            // A new subtree: made under a temporary name, renamed into place when finished.
            let (tmp, ()) =
                with_temp(core, |t| sys::mkdir_at(ddir, t, 0o700)).map_err(dst_err("mkdir"))?;
            let fd = sys::open_dir_at(ddir, &tmp).map_err(|e| {
                let _ = sys::unlink_at(ddir, &tmp, libc::AT_REMOVEDIR);
                dst_err("opendir")(e)
            })?;
            staged = Some(core.shared.stage_dir(
                Arc::clone(parent.dst_arc()),
                tmp,
                name.to_owned(),
                parent.child_rel(name),
            ));
            DestDir::Created(fd)
        } else {
            match sys::mkdir_at(ddir, name, 0o700) {
                Ok(()) => {
                    DestDir::Created(sys::open_dir_at(ddir, name).map_err(dst_err("opendir"))?)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match sys::open_dir_at_as_owner(ddir, name) {
                        Ok(fd) => DestDir::Existing(fd),
                        // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP).
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOTDIR) | Some(libc::ELOOP)
                            ) && follow_dst_link =>
                        {
                            // -K (or --no-implied-dirs on the way to named paths): a symlink
                            // to a directory in the destination stands for that directory.
                            match sys::open_dir_at_follow(ddir, name) {
                                Ok(fd) => DestDir::Existing(fd),
                                Err(_) => {
                                    if kept_in_the_way(core, (&src, &scope), ddir, name)? {
                                        return Ok(());
                                    }
                                    left_as_it_is()?;
                                    DestDir::Created(replace_with_dir(
                                        core,
                                        ddir,
                                        name,
                                        &parent.rel(),
                                    )?)
                                }
                            }
                        }
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOTDIR) | Some(libc::ELOOP)
                            ) =>
                        {
                            // A non-directory (or a symlink) is in the way: replace it, as rsync does.
                            if kept_in_the_way(core, (&src, &scope), ddir, name)? {
                                return Ok(());
                            }
                            left_as_it_is()?;
                            DestDir::Created(replace_with_dir(core, ddir, name, &parent.rel())?)
                        }
                        Err(e) => return Err(("opendir", e, ErrorClass::Partial, Side::Dst)),
                    }
                }
                Err(e) => return Err(("mkdir", e, ErrorClass::Partial, Side::Dst)),
            }
        }
    };
    core.lat.record(Op::Mkdir, t);
    let (dst, fresh) = match dst {
        DestDir::Existing(fd) => (Arc::new(fd), false),
        DestDir::Created(fd) => (Arc::new(fd), true),
        DestDir::Absent => (Arc::clone(&core.shared.placeholder), true),
    };
    // --no-implied-dirs: a directory only on the way to a selected path keeps what it has, or,
    // made now, the default permissions (as rsync makes it).
    let keep_attrs = implied && cfg.no_implied_dirs;
    let DestFacts {
        made_in,
        dev: dst_dev,
        ino: dst_ino,
        sweep,
        inherits_acl,
        tweaked,
    } = dest_dir_facts(
        core,
        &dst,
        ((!fresh).then_some(&st), (!keep_attrs).then_some(&st)),
        fresh.then_some(&parent.made_in),
    );
    // Its node is one of the parent's subdirectories until it is finished.
    parent.pending.fetch_add(1, Ordering::AcqRel);
    if keep_attrs && fresh && !cfg.dry_run {
        let mode = made_in.default_dir_mode();
        if let Err(e) = sys::fchmod(dst.as_fd(), mode) {
            report(
                core,
                &parent.child_rel(name),
                "chmod",
                &e,
                ErrorClass::Partial,
            );
        }
    }
    let dir_rules = parent.dir_rules.as_ref().and_then(|p| {
        dir_rules_for(
            core,
            src.as_fd(),
            &parent.child_src_path(name),
            &parent.child_rel(name),
            Some(p),
            (
                &[],
                cfg.recursive || cfg.roots[parent.root].select.is_none(),
            ),
        )
    });
    let dest_rules = parent.dest_rules.as_ref().and_then(|p| {
        let rel = parent.child_rel(name);
        dest_rules_for(core, dst.as_fd(), fresh, &rel, Some(p), Vec::new)
    });
    let listed_ino_exact = if parent.stat.is_some_and(|p| p.dev == st.dev) {
        parent.listed_ino_exact
    } else {
        sys::listing_gives_inode(src.as_fd())
    };
    let alt_dest = parent.alt_dest().map(|dirs| {
        dirs.iter()
            .map(|d| {
                d.as_ref()
                    .and_then(|fd| sys::open_dir_at(fd.as_fd(), name).ok())
            })
            .collect()
    });
    let ids = (!passed)
        .then(|| parkable_ids(core, &st, &dst, (dst_dev, dst_ino)))
        .flatten();
    let node = Arc::new(DirNode {
        fds: Parkable::new(DirFds::new(src, dst, alt_dest, &core.shared.open_dirs)),
        ids,
        place: Place::Child(crate::name::Name::new(name)),
        stat: (!keep_attrs).then_some(merged_dir_stat(&core.shared, parent.root, st, || {
            parent.child_dst_path(name)
        })),
        listed_ino_exact,
        made_in,
        dst_dev,
        root_dev: parent.root_dev,
        depth: parent.depth + 1,
        dst_name: None,
        fresh,
        pending: AtomicU64::new(BUSY),
        queued_dirs: AtomicU32::new(0),
        leader_dir: std::sync::OnceLock::new(),
        parent: Some(Arc::clone(parent)),
        root: parent.root,
        names: cfg
            .delete
            .filter(|d| *d != Delete::Before && scope.lists_all())
            .map(|_| sync::Names::default()),
        scan_failed: AtomicBool::new(false),
        delayed: cfg.delay_updates.then(Default::default),
        tweaked,
        hidden: parent.hidden || staged.is_some(),
        sweep,
        staged,
        inherits_acl,
        scope,
        dir_rules,
        dest_rules,
    });
    if !keep_attrs {
        dir_item(core, &node);
    }
    if !other_fs
        && !cfg.dry_run
        && let Some(d) = &cfg.delegate
        && d.take_dir(&node.rel())
    {
        // Another process lists it and applies its metadata (the MPI mode): only the parent's
        // count of open children goes down here.
        bump(&core.counters.delegated, 1);
        drop(node);
        subdir_done(core, Arc::clone(parent), None);
        return Ok(());
    }
    if other_fs {
        // -x: the mount point is created (with its metadata), its contents are not copied.
        child_done(core, node);
    } else {
        if cfg.delete == Some(Delete::Before) && !node.fresh && node.scope.lists_all() {
            delete_before(core, &node);
        }
        core.shared.progress.scan_started();
        scan(core, node);
    }
    Ok(())
}

/// `--ignore-existing`: a non-directory `name` of `ddir` where the source has a directory (open
/// as `src`) is kept, as rsync keeps it, and the directory is not entered. Its contents cannot
/// be copied there, so a source directory with entries is an error (`opendir` failing with
/// ENOTDIR), as rsync reports each of them, and so is an empty one with `--delete` unless a
/// symlink is in the way (rsync fails to list a file there, and a dangling symlink lists
/// nothing); any other is only skipped (`Ok(true)`). `Ok(false)` when the option is off:
/// replace it. A directory whose contents are not sent (its `scope` is empty: named by
/// `--files-from` without `-r`) is only skipped: nothing would go below it (until session 34 it
/// failed as one with entries). rsync also stamps the directory's mtime on the entry it kept;
/// arsync leaves it as it is.
fn kept_in_the_way(
    core: &Core,
    (src, scope): (&OwnedFd, &Scope),
    ddir: BorrowedFd<'_>,
    name: &CStr,
) -> EntryResult<bool> {
    let cfg = &core.shared.config;
    if !cfg.ignore_existing {
        return Ok(false);
    }
    if matches!(scope, Scope::Empty) {
        bump(&core.counters.skipped, 1);
        return Ok(true);
    }
    let has_entries = || {
        let mut reader = fsops::DirReader::default();
        reader
            .fill(src.as_fd())
            .map_or(true, |more| more && reader.entries().next().is_some())
    };
    let unlistable = || {
        cfg.delete.is_some()
            && sys::lstat_at(ddir, name).is_ok_and(|d| d.file_type() != FileType::Symlink)
    };
    if has_entries() || unlistable() {
        return Err((
            "opendir",
            io::Error::from_raw_os_error(libc::ENOTDIR),
            ErrorClass::Partial,
            Side::Dst,
        ));
    }
    bump(&core.counters.skipped, 1);
    Ok(true)
}

fn replace_with_dir(
    core: &Core,
    ddir: BorrowedFd<'_>,
    name: &CStr,
    parent_rel: &Path,
) -> EntryResult<OwnedFd> {
    clear_for_dir(core, ddir, name, parent_rel)?;
    sys::mkdir_at(ddir, name, 0o700).map_err(dst_err("mkdir"))?;
    sys::open_dir_at(ddir, name).map_err(dst_err("opendir"))
}

/// The non-directory `name` in `ddir` goes for a directory ([`sync::put_away`]), its failure
/// named by what was tried.
fn clear_for_dir(core: &Core, ddir: BorrowedFd<'_>, name: &CStr, parent_rel: &Path) -> EntryResult {
    let op = if core.shared.config.backup.is_some() {
        "backup"
    } else {
        "unlink"
    };
    sync::put_away(&core.shared, ddir, name, parent_rel).map_err(dst_err(op))
}

/// Symlinks, devices, FIFOs and sockets: create under a temporary name, apply metadata by name
/// without following, rename into place.
async fn make_other(
    core: &Core,
    parent: &Arc<DirNode>,
    name: &CStr,
    dst_name: &CStr,
    file_type: FileType,
    follow: bool,
    left: &Cell<bool>,
) -> EntryResult {
    let policy = &core.shared.policy;
    let sdir = parent.src_fd();
    let st = if follow {
        sys::stat_at(sdir, name)
    } else {
        sys::lstat_at(sdir, name)
    }
    .map_err(src_err("lstat"))?;
    if st.file_type() != file_type {
        return Err((
            "lstat",
            io::Error::other("changed type while being copied"),
            ErrorClass::Partial,
            Side::Src,
        ));
    }
    if hardlink_follow(core, parent, dst_name, &st, file_type, left).await? {
        return Ok(());
    }
    let dir = parent.dst_fd();
    let cfg = &core.shared.config;
    let is_link = file_type == FileType::Symlink;
    if is_link {
        bump(&core.counters.seen_link_bytes, st.size);
    }
    let target = if is_link {
        Some(source_link(cfg, sdir, name).map_err(src_err("readlink"))?)
    } else {
        None
    };
    let change = match judge_other(core, parent, &st, name, dst_name, target.as_deref(), follow) {
        None => {
            hardlink_done(core, parent, dst_name, &st, !cfg.existing);
            bump(&core.counters.skipped, 1);
            left.set(true);
            return Ok(());
        }
        Some((c, _)) if !c.any() => {
            hardlink_done(core, parent, dst_name, &st, true);
            bump(&core.counters.unchanged, 1);
            let link = target.as_ref().map(|t| t.as_bytes());
            let what = (file_type, Some(&st));
            unchanged_item(
                core,
                (parent.root, || parent.child_rel(name)),
                what,
                How::Attrs,
                link,
            );
            return Ok(());
        }
        Some(c) => c,
    };
    let (mut change, existing) = change;
    if change.new
        && !follow
        && let Some(dirs) = parent.alt_dest()
        // (Only where the name is free: rsync makes a symlink or special anew in place of
        // whatever else stands there, without looking at the references.)
        && (parent.fresh || sys::lstat_at(dir, dst_name).is_err())
        && let Some(m) =
            altdest::other_match(core, dirs, sdir, (name, dst_name), &st, target.as_deref())
    {
        let reference = m.reference(dirs);
        match (cfg.alt_dest, m.level) {
            (AltDest::Link | AltDest::Compare, Level::Exact)
                if take_exact_reference(
                    core,
                    parent,
                    (reference, dst_name),
                    dst_name,
                    (file_type, &st, target.as_ref().map(|t| t.as_bytes())),
                ) =>
            {
                return Ok(());
            }
            _ => {
                // Made here, itemized against the reference (rsync's `c` with what differs).
                change = sync::attr_change(&core.shared, &m.stat, &st, is_link);
                change.how = How::Local;
                change.checksum = m.level == Level::Exists;
            }
        }
    }
    let r = (|| {
        if cfg.dry_run {
            if !parent.fresh {
                // (A non-empty directory that the real run could not remove fails here too.)
                let op = if target.is_some() {
                    "make way for new symlink"
                } else {
                    "make way for new special file"
                };
                sync::make_way(core, dir, dst_name, sync::Rel::Of(parent)).map_err(dst_err(op))?;
            }
            return Ok(());
        }
        // In a new subtree nobody sees yet the entry is made under its final name (as files
        // are there: `Staging::Direct`); elsewhere under a temporary one, renamed into place.
        let direct = parent.hidden;
        let make = |t: &CStr| match &target {
            Some(target) => sys::symlink_at(target, dir, t),
            None => sys::mknod_at(dir, t, (st.mode & libc::S_IFMT) | 0o600, st.rdev),
        };
        let op = if target.is_some() { "symlink" } else { "mknod" };
        let (tmp, ()) = if direct {
            (dst_name.to_owned(), make(dst_name).map_err(dst_err(op))?)
        } else {
            with_temp(core, make).map_err(dst_err(op))?
        };
        // Attributes of the entry itself; a followed link's target has none we can reach safely.
        let xsrc = if follow {
            fsops::meta::Xattrs::None
        } else {
            fsops::meta::Xattrs::from(Target::At(sdir, name), parent.inherits_acl)
        };
        // Made anew only to change attributes: the owner and group it is not to change stay the
        // existing entry's, as rsync, which changes it in place, leaves them (after the
        // attributes, which give a new entry's; refused to a user who may not give them, the
        // entry stays the user's, as made); so do the times it is not to change.
        let remade = existing.filter(|_| change.how == How::Attrs);
        let keep_ids = remade.filter(|_| !policy.owner || !policy.group).map(|d| {
            (
                if policy.owner { u32::MAX } else { d.uid },
                if policy.group { u32::MAX } else { d.gid },
            )
        });
        let keep_times = remade
            .filter(|_| !policy.keeps_mtime(file_type) || !policy.atimes)
            .map(|d| {
                let (a, m) = policy
                    .times(&st)
                    .unwrap_or((sys::Time::Omit, sys::Time::Omit));
                let keep = |t: sys::Time, (s, ns): (i64, i64)| match t {
                    sys::Time::Omit => sys::Time::At(s, ns),
                    t => t,
                };
                (keep(a, d.atime), keep(m, d.mtime))
            });
        // Without -p an entry that takes the place of another non-directory keeps that one's
        // permission bits, as rsync's dest_mode gives them (a symlink's too).
        let old_perm = existing
            .filter(|_| !policy.perms && !is_link)
            .map(|d| d.perm())
            .filter(|&p| p != policy.final_perm(&st, &parent.made_in));
        let given = fsops::meta::apply_at(dir, &tmp, &st, policy, &parent.made_in, is_link, xsrc)
            .map_err(meta_err)
            .and_then(|u| {
                unsupported_xattrs(core, u);
                if let Some((uid, gid)) = keep_ids {
                    let _ = sys::lchown_at(dir, &tmp, uid, gid);
                }
                if let Some(p) = old_perm {
                    sys::chmod_at(dir, &tmp, p)
                        .map_err(|e| meta_err((fsops::meta::MetaOp::Chmod, e)))?;
                }
                if let Some((a, m)) = keep_times {
                    sys::lutimens_at(dir, &tmp, a, m)
                        .map_err(|e| meta_err((fsops::meta::MetaOp::Utimes, e)))?;
                }
                Ok(())
            });
        // An attribute that could not be given fails the entry; a new symlink or special file
        // still takes its name (rsync makes it in place, then sets what it can), but one made
        // anew only to change attributes leaves the entry as it was.
        let mut named = direct;
        let r = match given {
            Err(e) if change.how == How::Attrs => Err(e),
            given if direct => given,
            given => {
                let rel = sync::Rel::Of(parent);
                if change.how == How::Attrs {
                    // The same entry with other attributes: nothing to back up.
                    sync::rename_making_way(core, dir, &tmp, dir, dst_name, rel)
                } else {
                    sync::rename_over(core, dir, &tmp, dst_name, rel)
                }
                .map_err(dst_err("rename"))
                .and_then(|()| {
                    named = true;
                    given
                })
            }
        };
        if r.is_err() && !named {
            let _ = sys::unlink_at(dir, &tmp, 0);
        }
        r
    })();
    hardlink_done(core, parent, dst_name, &st, r.is_ok());
    r?;
    if is_link {
        bump(&core.counters.symlinks, 1);
    } else {
        bump(&core.counters.specials, 1);
    }
    let link = target.as_ref().map(|t| t.as_bytes());
    if change.new || change.checksum || sync::attrs_differ(&change) {
        item(
            core,
            (parent.root, || parent.child_rel(name)),
            (file_type, Some(&st)),
            0,
            &change,
            link,
        );
    } else {
        let what = (file_type, Some(&st));
        unchanged_item(
            core,
            (parent.root, || parent.child_rel(name)),
            what,
            change.how,
            link,
        );
    }
    Ok(())
}

/// What to do with a symlink, device, FIFO or socket, and the existing non-directory entry in
/// its place: `None` to leave it (`--existing`, `--ignore-existing`), else what differs from
/// the destination (nothing: up to date; any difference means the entry is made anew, which is
/// how rsync updates these too). An entry of the same kind in rsync's sense (a FIFO and a
/// socket are both specials, a character and a block device both devices) is compared as the
/// same entry with other contents (`cSc`, `cDc`), another kind as a new one (`+++`).
fn judge_other(
    core: &Core,
    parent: &DirNode,
    st: &Stat,
    name: &CStr,
    dst_name: &CStr,
    target: Option<&CStr>,
    follow: bool,
) -> Option<(Change, Option<Stat>)> {
    let cfg = &core.shared.config;
    let new = Change::new_entry(How::Local);
    let found = if parent.fresh {
        None
    } else {
        sys::lstat_at(parent.dst_fd(), dst_name).ok()
    };
    let Some(d) = found else {
        return (!cfg.existing).then_some((new, None));
    };
    if cfg.ignore_existing {
        return None;
    }
    let old = (d.file_type() != FileType::Dir).then_some(d);
    let kind = |t: FileType| match t {
        FileType::Fifo | FileType::Socket => FileType::Fifo,
        FileType::CharDev | FileType::BlockDev => FileType::CharDev,
        t => t,
    };
    if kind(d.file_type()) != kind(st.file_type()) {
        return Some((new, old));
    }
    // (-u leaves newer regular files only: "this does not affect the copying of dirs, symlinks,
    // or other special files", as rsync's manual says and its generator does.)
    let is_link = target.is_some();
    let mut change = sync::attr_change(&core.shared, &d, st, is_link);
    change.how = How::Local;
    change.checksum = match target {
        Some(t) => {
            sys::readlink_at(parent.dst_fd(), dst_name).map_or(true, |dt| dt.as_c_str() != t)
        }
        None => d.rdev != st.rdev || d.file_type() != st.file_type(),
    };
    if follow {
        // Made anew every time: a followed link's target has no attributes we can compare
        // safely. (-I concerns regular files only, as rsync's quick check: a symlink or special
        // file is judged as without it, its xattrs and ACLs included.)
        return Some((change, old));
    }
    if cfg.xattrs || cfg.acls {
        // Compared by name without following; any difference makes the entry anew (with them).
        match fsops::meta::xattr_plan(
            Target::At(parent.src_fd(), name),
            Target::At(parent.dst_fd(), dst_name),
            &core.shared.policy,
            is_link,
        ) {
            Ok(p) => {
                change.xattr = p.touches_xattr();
                change.acl = p.touches_acl();
            }
            Err(_) => return Some((change, old)),
        }
    }
    if !change.checksum && !sync::attrs_differ(&change) {
        return Some((Change::default(), old));
    }
    if !change.checksum {
        // Only attributes differ: remade, but listed as an attribute change (rsync's `.L`).
        change.how = How::Attrs;
    }
    Some((change, old))
}

#[cfg(test)]
mod tests {
    use super::{cold_pieces, root_overlaps, root_phases, unsafe_target};

    #[test]
    fn roots_that_meet_are_found_and_ordered_into_passes() {
        let root = |dst: &str| crate::Root {
            src: "s".into(),
            dst: dst.into(),
            rel: "".into(),
            select: None,
        };
        let dsts = [
            "d", "d/a", "d/b", "e", "d", "d/ab", "d/a/x", "f/a", "d/a", "dd", "e/x/y",
        ];
        let roots: Vec<crate::Root> = dsts.iter().map(|d| root(d)).collect();
        let got = root_overlaps(&roots);
        for (i, a) in roots.iter().enumerate() {
            let want: Vec<usize> = (0..roots.len())
                .filter(|&j| {
                    j != i && (a.dst.starts_with(&roots[j].dst) || roots[j].dst.starts_with(&a.dst))
                })
                .collect();
            assert_eq!(got[i], want, "root {i} ({})", dsts[i]);
        }
        let phases = root_phases(&got);
        let pass = |i: usize| phases.iter().position(|p| p.contains(&i)).unwrap();
        for (i, o) in got.iter().enumerate() {
            for &k in o {
                assert_ne!(pass(i), pass(k), "{i} and {k} meet");
                if k < i {
                    assert!(pass(k) < pass(i), "{k} before {i}");
                }
            }
        }
        assert_eq!(phases.iter().map(Vec::len).sum::<usize>(), roots.len());
        // Siblings only: one pass.
        let files: Vec<crate::Root> = (0..100).map(|i| root(&format!("d/f{i}"))).collect();
        assert!(root_overlaps(&files).iter().all(Vec::is_empty));
        assert_eq!(root_phases(&root_overlaps(&files)).len(), 1);
    }

    #[test]
    fn cold_copies_are_cut_into_pieces_covering_every_byte_once() {
        const M: u64 = 1 << 20;
        // Below two chunks, or no chunking: one piece, the ranges as given.
        assert_eq!(cold_pieces(&[(0, 3 * M)], 2 * M), vec![vec![(0, 3 * M)]]);
        assert_eq!(cold_pieces(&[(0, 9 * M)], 0), vec![vec![(0, 9 * M)]]);
        // A plain file: chunk-sized pieces and the rest.
        assert_eq!(
            cold_pieces(&[(0, 5 * M + 7)], 2 * M),
            vec![vec![(0, 2 * M)], vec![(2 * M, 2 * M)], vec![(4 * M, M + 7)]]
        );
        // Sparse extents: short ones share a piece, a long one is cut.
        let ranges = [(0, M), (10 * M, M), (20 * M, 3 * M), (40 * M, 1)];
        let pieces = cold_pieces(&ranges, 2 * M);
        assert_eq!(
            pieces,
            vec![
                vec![(0, M), (10 * M, M)],
                vec![(20 * M, 2 * M)],
                vec![(22 * M, M), (40 * M, 1)]
            ]
        );
        let flat: Vec<(u64, u64)> = pieces.concat();
        let covered: u64 = flat.iter().map(|r| r.1).sum();
        assert_eq!(covered, 5 * M + 1);
    }

    #[test]
    fn unsafe_symlinks_as_rsync() {
        assert!(unsafe_target(b"/etc/passwd", 3));
        assert!(unsafe_target(b"", 0));
        assert!(unsafe_target(b"..", 0));
        assert!(!unsafe_target(b"..", 1));
        assert!(unsafe_target(b"../../x", 1));
        // rsync 3.5: no `..` after another component, nor a last `..` after anything.
        assert!(unsafe_target(b"a/../../x", 1));
        assert!(unsafe_target(b"a/../b", 2));
        assert!(unsafe_target(b"./../x", 2));
        assert!(unsafe_target(b"../..", 2));
        assert!(unsafe_target(b"..//..", 3));
        assert!(!unsafe_target(b"../../", 2));
        assert!(!unsafe_target(b"..//../x", 2));
        assert!(!unsafe_target(b"../sub/x", 1));
        assert!(!unsafe_target(b"...", 0));
        assert!(!unsafe_target(b"a..b/..a", 0));
        assert!(!unsafe_target(b"sub/file", 0));
        assert!(!unsafe_target(b"./x/./y", 0));
    }
}
