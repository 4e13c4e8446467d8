//! Sync decisions and deletion: whether an existing destination entry is up to date (the quick
//! check, `-c` checksums, `-u`, `--existing`, `--ignore-existing`, `--modify-window`), what
//! differs (for `--itemize-changes`), removing extraneous destination entries (`--delete`,
//! `--delete-after`, `--max-delete`, protect rules), and making way for an entry of another type.
//!
//! Deletion never leaves the destination tree and never follows a destination symlink: every step
//! is relative to an open directory fd, directories are opened with `O_NOFOLLOW|O_DIRECTORY`, and
//! a symlink is removed as a name (`unlinkat`), never entered.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fsops::{FileType, Stat, sys};
use xxhash_rust::xxh3::Xxh3;

use crate::core::{Core, Counters, RunShared, bump};
use crate::filter::DirRules;
use crate::{Change, ErrorClass, Event, How, QuickCheck};

/// Whether a destination entry's mtime `dst` equals its source's `src` under `--modify-window`
/// (`None`: to the nanosecond). A destination time of whole seconds equals a source time in the
/// same second: the destination's file system keeps no fraction (Lustre, HFS+, ext4 with
/// 128-byte inodes; or a tool that copied it before truncated it), and comparing nanoseconds
/// there would copy every file again on every run.
pub(crate) fn same_mtime(dst: (i64, i64), src: (i64, i64), window: Option<u32>) -> bool {
    match window {
        None => dst == src || (dst.1 == 0 && dst.0 == src.0),
        Some(w) => dst.0.abs_diff(src.0) <= u64::from(w),
    }
}

/// `-u`: whether the existing destination entry `d` is left alone for the source `st`: only a
/// regular file is (symlinks, devices and specials are updated whatever their times). To the
/// nanosecond (the default): when it is newer. Under `--modify-window=N` as rsync 3.5's
/// generator judges it (`file->modtime - st_mtime < modify_window`, whole seconds): unless the
/// source is newer by N seconds or more, so a destination within the window, or newer by any
/// amount, stays (with `N = 0`: unless the source's second is later).
pub(crate) fn kept_by_update(cfg: &crate::Config, d: &Stat, st: &Stat) -> bool {
    if !cfg.update || d.file_type() != FileType::File {
        return false;
    }
    let (dst, src) = (d.mtime, st.mtime);
    match cfg.modify_window {
        None => dst > src && !same_mtime(dst, src, None),
        Some(w) => src.0 - dst.0 < i64::from(w),
    }
}

/// What differs between an existing destination entry `d` and the source `st`, among the
/// attributes this run preserves.
pub(crate) fn attr_change(shared: &RunShared, d: &Stat, st: &Stat, is_link: bool) -> Change {
    let p = &shared.policy;
    Change {
        size: st.file_type() == FileType::File && d.size != st.size,
        time: p.keeps_mtime(st.file_type())
            && !same_mtime(d.mtime, st.mtime, shared.config.modify_window),
        perms: !is_link
            && if p.perms {
                d.perm() != p.perm_bits(st)
            } else {
                // (Without -p only -E changes an existing entry's bits.)
                p.executability && d.perm() != p.existing_perm(st, d.perm())
            },
        owner: p.owner && p.root && d.uid != p.ids(st).0,
        group: p.group && p.may_set_group(p.ids(st).1) && d.gid != p.ids(st).1,
        // (rsync compares and sets whole seconds, and leaves directories' alone.)
        atime: p.atimes && !is_link && st.file_type() != FileType::Dir && d.atime.0 != st.atime.0,
        ..Change::default()
    }
}

/// Whether an attribute this run preserves differs (extended attributes and ACLs only once
/// compared, which [`attr_change`] does not do).
pub(crate) fn attrs_differ(c: &Change) -> bool {
    c.time || c.perms || c.owner || c.group || c.atime || c.xattr || c.acl
}

/// The verdict on a regular file whose destination may exist.
pub(crate) enum Verdict {
    /// Leave it (`-u` found the destination newer, `--existing` found none, `--ignore-existing`
    /// found one).
    Skip,
    /// Same data; attributes may differ (listed in the change). With the destination file's
    /// link count.
    Same(Change, u64),
    /// Copy the data (the change says what differed, or `new`).
    Copy(Change),
    /// A non-empty directory is in the way and may not be removed: report this, copy nothing.
    Blocked(io::Error),
}

/// `--max-size`/`--min-size`: why a file of `size` bytes is left out, if it is.
pub(crate) fn size_limit(cfg: &crate::Config, size: u64) -> Option<crate::SkipReason> {
    if cfg.max_size.is_some_and(|m| size > m) {
        Some(crate::SkipReason::OverMaxSize)
    } else if cfg.min_size.is_some_and(|m| size < m) {
        Some(crate::SkipReason::UnderMinSize)
    } else {
        None
    }
}

/// Judge a regular file against what the destination has under `dst_name` in `dir`.
pub(crate) async fn judge_file(
    core: &Core,
    fresh: bool,
    node: &Arc<crate::task::DirNode>,
    mut src: Option<&mut crate::route::SourceFd>,
    st: &Stat,
    dst_name: &CStr,
) -> Verdict {
    let shared = &core.shared;
    let cfg = &shared.config;
    let new = || {
        if cfg.existing {
            Verdict::Skip
        } else {
            Verdict::Copy(Change::new_entry(How::Transfer))
        }
    };
    if let Some(reason) = size_limit(cfg, st.size) {
        let rel = node.child_rel(dst_name);
        shared.observer.event(&crate::Event::Skipped {
            path: &rel,
            reason,
            target: None,
        });
        return Verdict::Skip;
    }
    if fresh {
        return new();
    }
    let dir = node.dst_fd();
    let Ok(d) = crate::route::stat_at(core, node, crate::route::Side::Dst, dst_name, false).await
    else {
        return new();
    };
    if cfg.ignore_existing {
        return Verdict::Skip;
    }
    if d.file_type() == FileType::Dir
        // (Only once the source is open: judged twice, a file must not find on the second
        // look that the first removed what was in its way, and skip it under --existing.)
        && src.is_some()
        && !may_remove_dirs(cfg)
        && let Err(e) = make_way(core, dir, dst_name, Rel::Of(node))
        && e.kind() == io::ErrorKind::DirectoryNotEmpty
    {
        // A directory that may not go (not empty; no --delete or --force): the file is not
        // copied at all, as rsync's generator decides before any transfer, so no temporary,
        // partial or delayed copy of it is left behind (a dry run says so too). An empty one
        // was just removed by `make_way`.
        return Verdict::Blocked(e);
    }
    if d.file_type() != FileType::File && !(cfg.write_devices && d.file_type().is_device()) {
        // Another type in the way: replaced by a new file (a device, with --write-devices, is
        // written into).
        return Verdict::Copy(Change::new_entry(How::Transfer));
    }
    if kept_by_update(cfg, &d, st) {
        return Verdict::Skip;
    }
    let mut change = attr_change(shared, &d, st, false);
    // rsync's order (`quick_check_ok`): another size, then -c's checksum, then --size-only,
    // then -I, then the mtime; so -c decides over -I and --size-only, and --size-only over -I.
    let same = match cfg.quick_check {
        _ if d.size != st.size => {
            // With -c the data counts as compared (rsync reports `c` too): it differs.
            change.checksum = cfg.checksum;
            false
        }
        _ if cfg.checksum => {
            match same_content(core, dir, src.as_deref_mut(), dst_name, st.size).await {
                // (Without an open source there is nothing to hash: judged again once it is open.)
                Ok(true) => {
                    change.exact_time = !change.time
                        && shared.policy.keeps_mtime(FileType::File)
                        && d.mtime != st.mtime;
                    true
                }
                Ok(false) => {
                    change.checksum = true;
                    false
                }
                Err(_) => false,
            }
        }
        QuickCheck::SizeOnly => true,
        QuickCheck::Never => false,
        // The mtime counts without -t too (where it never matches once copied), as in rsync:
        // "a missing -t (or -a) will cause the next transfer to behave as if it used -I".
        QuickCheck::SizeAndTime => same_mtime(d.mtime, st.mtime, cfg.modify_window),
    };
    if same {
        change.how = How::Attrs;
        Verdict::Same(change, d.nlink)
    } else if cfg.append.is_some() && d.size >= st.size {
        // --append: only a shorter file grows; any other that differs is left as it is,
        // attributes too (one found up to date gets its attributes, as rsync gives them).
        Verdict::Skip
    } else {
        change.how = How::Transfer;
        if shared.wants_items
            && (cfg.xattrs || cfg.acls)
            && let Some(src) = src
            && let Ok(p) = fsops::meta::xattr_plan(
                fsops::xattr::Target::Fd(src.as_fd()),
                fsops::xattr::Target::At(dir, dst_name),
                &shared.policy,
                false,
            )
        {
            // rsync itemizes a transferred file's extended attributes and ACLs against the file
            // it replaces too (`>f........x`); only compared when items are shown.
            change.xattr = p.touches_xattr();
            change.acl = p.touches_acl();
        }
        Verdict::Copy(change)
    }
}

/// rsync's `%C` for a file this run wrote or compared: XXH3-128 of the content of `name` in `dir`
/// (read back, from the page cache as a rule; asked for only when a format shows `%C`). `None` if
/// it cannot be read.
pub(crate) fn file_sum(dir: BorrowedFd<'_>, name: &CStr) -> Option<u128> {
    use std::io::Read;
    let mut f = std::fs::File::from(sys::open_source(dir, name, false).ok()?);
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(h.digest128()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// `-c`: hash the source and the destination file (XXH3-128) through the ring, both read at once
/// chunk by chunk; many files are hashed at the same time on every core. The source's fd is
/// shared with the reads in flight, not duplicated (a `dup` and a `close` per file).
pub(crate) async fn same_content(
    core: &Core,
    dir: BorrowedFd<'_>,
    src: Option<&mut crate::route::SourceFd>,
    dst_name: &CStr,
    size: u64,
) -> io::Result<bool> {
    let Some(src) = src else {
        return Ok(false);
    };
    let dst = Rc::new(sys::open_source(dir, dst_name, false)?);
    let src = src.share();
    let (mut hs, mut hd) = (Xxh3::new(), Xxh3::new());
    let chunk = core.pool.buf_size();
    let mut off = 0u64;
    loop {
        let ((ra, ba), (rb, bb)) = read_both(core, (&src, &dst), off, chunk).await;
        hs.update(&ba);
        hd.update(&bb);
        core.pool.give(ba);
        core.pool.give(bb);
        let (na, nb) = (ra?, rb?);
        off += na as u64;
        if na != nb {
            // One file ended first: they differ (or changed while being read).
            return Ok(false);
        }
        if na < chunk {
            break;
        }
    }
    Ok(off == size && hs.digest128() == hd.digest128())
}

/// `len` bytes at `off` of `a` and of `b`, both read through the ring at once into pool buffers
/// (each result with its buffer, which the caller gives back).
async fn read_both(
    core: &Core,
    (a, b): (&Rc<OwnedFd>, &Rc<OwnedFd>),
    off: u64,
    len: usize,
) -> ((io::Result<usize>, Vec<u8>), (io::Result<usize>, Vec<u8>)) {
    futures_util::future::join(
        fsops::copy::read_at_full(Rc::clone(a), off, len, core.pool.take()),
        fsops::copy::read_at_full(Rc::clone(b), off, len, core.pool.take()),
    )
    .await
}

/// The offset of the first pool-sized chunk in which `a` and `b` differ within their first `len`
/// bytes (`len` if they agree throughout), comparing byte for byte with both files read through
/// the ring at once. A file shorter than `len` differs where it ends.
async fn first_difference(
    core: &Core,
    a: &mut crate::route::SourceFd,
    b: &OwnedFd,
    len: u64,
) -> io::Result<u64> {
    let (a, b) = (a.share(), Rc::new(b.try_clone()?));
    let chunk = core.pool.buf_size() as u64;
    let mut off = 0u64;
    while off < len {
        let want = chunk.min(len - off) as usize;
        let ((ra, ba), (rb, bb)) = read_both(core, (&a, &b), off, want).await;
        let same = ba == bb;
        core.pool.give(ba);
        core.pool.give(bb);
        let (na, nb) = (ra?, rb?);
        if !same || na != want || nb != want {
            return Ok(off);
        }
        off += want as u64;
    }
    Ok(len)
}

/// Where to resume an opened partial (or `--inplace`) destination file of `dsize` bytes for a
/// source of `ssize`: at the start of the first chunk of its prefix that differs from the source
/// (a chunk written out of order leaves zeros before it, which this finds), so only what is
/// missing or wrong is copied. A file not shorter than the source is rewritten from 0.
pub(crate) async fn resume_point(
    core: &Core,
    src: &mut crate::route::SourceFd,
    dst: &OwnedFd,
    dsize: u64,
    ssize: u64,
) -> u64 {
    if dsize == 0 || dsize >= ssize {
        return 0;
    }
    first_difference(core, src, dst, dsize).await.unwrap_or(0)
}

/// `--inplace --no-whole-file`: make the open destination file (`dsize` bytes) hold the source's
/// `ssize` bytes by writing only the pool-sized chunks that differ (both files read through the
/// ring at once, compared byte for byte; what lies past the old end is written whole), as
/// rsync's delta transfer into the file itself does. Returns the bytes written; the caller sets
/// the final size. `moved` is told each chunk looked at; with `--bwlimit` what is written is
/// charged to the run's clock. An error says whether a read (`Side::Src`: the source's, or the
/// destination's old content) or a write (`Side::Dst`) failed.
pub(crate) async fn rewrite_changed(
    core: &Core,
    (src, dst): (&mut crate::route::SourceFd, &OwnedFd),
    dsize: u64,
    ssize: u64,
    moved: &dyn Fn(u64),
) -> Result<u64, (crate::route::Side, io::Error)> {
    use crate::route::Side;
    let read = |e| (Side::Src, e);
    let (a, b) = (src.share(), Rc::new(dst.try_clone().map_err(read)?));
    let chunk = core.pool.buf_size() as u64;
    let (mut off, mut written) = (0u64, 0u64);
    while off < ssize {
        let want = chunk.min(ssize - off) as usize;
        let (ra, ba) = if off < dsize {
            let ((ra, ba), (rb, bb)) = read_both(core, (&a, &b), off, want).await;
            // (A destination chunk cut short by its old end differs.)
            let same = ba == bb && rb.as_ref().is_ok_and(|&n| n == want);
            core.pool.give(bb);
            if same {
                core.pool.give(ba);
                let n = ra.map_err(read)?;
                if n != want {
                    return Err(read(io::ErrorKind::UnexpectedEof.into()));
                }
                moved(want as u64);
                off += want as u64;
                continue;
            }
            (ra, ba)
        } else {
            fsops::copy::read_at_full(Rc::clone(&a), off, want, core.pool.take()).await
        };
        let n = match ra {
            Ok(n) if n == want => n,
            Ok(_) => {
                core.pool.give(ba);
                return Err(read(io::ErrorKind::UnexpectedEof.into()));
            }
            Err(e) => {
                core.pool.give(ba);
                return Err(read(e));
            }
        };
        let w = sys::write_all_at(dst.as_fd(), &ba[..n], off);
        core.pool.give(ba);
        w.map_err(|e| (Side::Dst, e))?;
        written += n as u64;
        moved(n as u64);
        off += n as u64;
        if let Some(t) = &core.shared.throttle {
            t.pace(n as u64).await;
        }
    }
    Ok(written)
}

/// `--verify`: whether the written destination holds exactly the source's `size` bytes.
pub(crate) async fn same_bytes(
    core: &Core,
    src: &mut crate::route::SourceFd,
    dst: &OwnedFd,
    size: u64,
) -> io::Result<bool> {
    Ok(first_difference(core, src, dst, size).await? == size)
}

/// Whether `name` is one of arsync's temporary names (`.~arsync-PID-…`) made by a process other
/// than this one that is no longer running.
fn left_by_dead_run(shared: &RunShared, name: &[u8]) -> bool {
    name.strip_prefix(b".~arsync-")
        .and_then(|rest| rest.split(|&c| c == b'-').next())
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| u32::from_str_radix(p, 16).ok())
        .is_some_and(|pid| pid != shared.pid && !sys::process_alive(pid))
}

/// The path, relative to its transfer root, of the directory an operation works in, for what
/// the operation may show (a message, a deletion's event, a backup's place): made only then.
#[derive(Clone, Copy)]
pub(crate) enum Rel<'a> {
    /// A path at hand.
    Given(&'a Path),
    /// A directory node's path, made from the names above it ([`crate::task::DirNode::rel`]).
    Of(&'a crate::task::DirNode),
}

impl<'a> Rel<'a> {
    /// The path.
    pub(crate) fn path(self) -> Cow<'a, Path> {
        match self {
            Rel::Given(p) => Cow::Borrowed(p),
            Rel::Of(node) => Cow::Owned(node.rel()),
        }
    }
}

/// Remove the `.~arsync-PID-CORE-N` temporary files that a killed run (of named staging:
/// `--temp-names`, or a file system without `O_TMPFILE`) left in `dir`; those of a live arsync
/// process other than this one are left alone.
pub(crate) fn remove_stale_temps(
    shared: &RunShared,
    counters: &Counters,
    dir: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    rel: &Path,
) {
    let Ok(fd) = sys::open_dir_at(dir, c".") else {
        return;
    };
    let mut reader = fsops::DirReader::default();
    let mut stale = Vec::new();
    while let Ok(true) = reader.fill(fd.as_fd()) {
        for ent in reader.entries() {
            // A name the source has too is the user's, copied like any other, never ours.
            if left_by_dead_run(shared, ent.name.to_bytes())
                && sys::lstat_at(src, ent.name).is_err()
            {
                stale.push((ent.name.to_owned(), ent.file_type));
            }
        }
    }
    for (name, mut ft) in stale {
        if ft == FileType::Unknown {
            ft = sys::lstat_at(fd.as_fd(), &name)
                .map(|s| s.file_type())
                .unwrap_or(FileType::Unknown);
        }
        // A killed run's new subtree (made under a temporary name) goes whole.
        let r = if ft == FileType::Dir {
            remove_tree(fd.as_fd(), &name)
        } else {
            sys::unlink_at(fd.as_fd(), &name, 0)
        };
        if let Err(e) = r
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            failed(
                shared,
                counters,
                &join(rel, &name),
                "unlink (stale temporary)",
                &e,
            );
        }
    }
}

/// What ends the temporary name of a directory root's destination made under one
/// (`.~arsync-PID-CORE-N-root-HASH`, the hash of the name it is for): how a later run tells its
/// own leftovers in the destination's parent, a directory that is not the transfer's, from
/// anything else there.
pub(crate) fn root_temp_tag(name: &CStr) -> String {
    format!("-root-{:016x}", xxhash_rust::xxh3::xxh3_64(name.to_bytes()))
}

/// Remove what a killed run left in `parent` for the same destination root: temporary
/// directories named with `tag` ([`root_temp_tag`]) of an arsync process no longer running.
/// `shown` is the root's destination path, for errors.
pub(crate) fn remove_stale_roots(
    shared: &RunShared,
    counters: &Counters,
    parent: BorrowedFd<'_>,
    tag: &str,
    shown: &Path,
) {
    let mut reader = fsops::DirReader::default();
    let mut stale = Vec::new();
    while let Ok(true) = reader.fill(parent) {
        for ent in reader.entries() {
            let name = ent.name.to_bytes();
            if name.ends_with(tag.as_bytes()) && left_by_dead_run(shared, name) {
                stale.push(ent.name.to_owned());
            }
        }
    }
    for name in stale {
        if let Err(e) = remove_tree(parent, &name)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            failed(
                shared,
                counters,
                &shown.with_file_name(OsStr::from_bytes(name.to_bytes())),
                "unlink (stale temporary)",
                &e,
            );
        }
    }
}

/// A directory opened to be emptied and removed. One this process (`euid`, not root) owns
/// without `rwx` for itself is given them, as rsync does (`DEL_NO_UID_WRITE`), and gets its mode
/// back when this is dropped, unless [`Emptying::removed`] says it is gone.
struct Emptying {
    fd: OwnedFd,
    mode_back: Option<u32>,
}

impl Emptying {
    /// Open `name` in `dir`; `euid`: the process's, or `None` to leave its mode alone.
    fn open(dir: BorrowedFd<'_>, name: &CStr, euid: Option<u32>) -> io::Result<Self> {
        let fd = sys::open_dir_at(dir, name)?;
        let mode_back = euid.and_then(|euid| {
            let st = sys::fstat(fd.as_fd()).ok()?;
            owner_rwx(fd.as_fd(), euid, &st)
        });
        Ok(Self { fd, mode_back })
    }

    /// The directory is gone: its mode stays as it was left.
    fn removed(mut self) {
        self.mode_back = None;
    }
}

impl Drop for Emptying {
    fn drop(&mut self) {
        if let Some(mode) = self.mode_back {
            let _ = sys::fchmod(self.fd.as_fd(), mode);
        }
    }
}

/// Remove directory `name` in `dir` and everything below it, without following symlinks. A
/// read-only directory this process owns is opened to it first, as for `--delete`.
fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let emptying = Emptying::open(dir, name, Some(sys::geteuid()))?;
    let fd = &emptying.fd;
    let mut reader = fsops::DirReader::default();
    let mut children = Vec::new();
    while reader.fill(fd.as_fd())? {
        children.extend(reader.entries().map(|e| (e.name.to_owned(), e.file_type)));
    }
    for (child, mut ft) in children {
        if ft == FileType::Unknown {
            ft = sys::lstat_at(fd.as_fd(), &child)
                .map(|s| s.file_type())
                .unwrap_or(FileType::Unknown);
        }
        if ft == FileType::Dir {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            sys::unlink_at(fd.as_fd(), &child, 0)?;
        }
    }
    sys::unlink_at(dir, name, libc::AT_REMOVEDIR)?;
    emptying.removed();
    Ok(())
}

/// Entries of one directory in the order rsync deletes them (its sorted list walked from the
/// end: the directories, then the rest, each by name from the last), so that `--max-delete`
/// spares what rsync spares there.
pub(crate) fn in_delete_order(entries: &mut [(CString, FileType)]) {
    entries.sort_unstable_by(|(a, at), (b, bt)| {
        (*bt == FileType::Dir)
            .cmp(&(*at == FileType::Dir))
            .then_with(|| b.as_bytes().cmp(a.as_bytes()))
    });
}

/// What `--delete` needs of a directory: the source's names, collected while it is scanned.
pub(crate) type Names = std::sync::Mutex<Vec<CString>>;

/// A directory's extraneous entries whose deletion waits for the end of the run
/// (`--delete-after`).
pub(crate) struct PendingDelete {
    /// The transfer root.
    pub root: usize,
    /// The directory's path below the root's destination.
    pub below_root: PathBuf,
    /// Its path relative to the transfer root (for messages and filter rules).
    pub rel: PathBuf,
    /// The entries to delete.
    pub victims: Vec<(CString, FileType)>,
    /// The source directory's attributes: its times are set again after the deletions.
    pub stat: Option<Stat>,
    /// Its per-directory rules (which protect entries from deletion).
    pub rules: Option<Arc<DirRules>>,
    /// `victims` are every name the source lacks, not judged by the rules yet: with
    /// per-directory merge files, what protects them is the destination's merge files as the
    /// whole copy has left them, read at the end (as rsync's `--delete-after` reads them), not
    /// the source's (a merge file the rules keep out of the transfer never gets there).
    pub judge_at_end: bool,
}

/// Whether the receiving side's rules keep `path` (relative to the transfer root) from deletion
/// (`emptying`: inside a directory being deleted, where perishable rules do not count), saying
/// which rule decided with `--debug=filter`.
fn protected(
    shared: &RunShared,
    path: &Path,
    is_dir: bool,
    emptying: bool,
    rules: Option<&DirRules>,
    abs: &dyn Fn() -> Vec<u8>,
) -> bool {
    let filters = &shared.config.filters;
    let bytes = path.as_os_str().as_bytes();
    if !shared.config.debug_filter {
        return if emptying {
            filters.protects_while_emptying(bytes, is_dir, rules, abs)
        } else {
            filters.protects_at(bytes, is_dir, rules, abs)
        };
    }
    let rule = filters.deleting_rule_at(bytes, is_dir, emptying, rules, abs);
    said_rule(shared, path, is_dir, true, rule)
}

/// `--debug=filter`: say which rule decided about `path` (none: nothing to say), on the
/// receiving side or the sending one; whether it excludes (sending) or protects (receiving).
pub(crate) fn said_rule(
    shared: &RunShared,
    path: &Path,
    is_dir: bool,
    receiving: bool,
    rule: Option<&crate::filter::Rule>,
) -> bool {
    let Some(rule) = rule else {
        return false;
    };
    shared.observer.event(&Event::Notice {
        path,
        notice: crate::Notice::Filter {
            receiving,
            is_dir,
            rule,
        },
    });
    rule.action == crate::filter::Action::Exclude
}

/// The destination entries of `dst` that the source (`names`) does not have and (`judge`) no
/// rule protects.
pub(crate) fn extraneous(
    shared: &RunShared,
    dst: BorrowedFd<'_>,
    rel: &Path,
    names: Vec<CString>,
    rules: Option<&DirRules>,
    judge: bool,
) -> io::Result<Vec<(CString, FileType)>> {
    let names: HashSet<CString> = names.into_iter().collect();
    let fd = sys::open_dir_at(dst, c".")?;
    let mut reader = fsops::DirReader::default();
    let mut out = Vec::new();
    let filters = &shared.config.filters;
    while reader.fill(fd.as_fd())? {
        for ent in reader.entries() {
            if names.contains(ent.name) {
                continue;
            }
            // (The list is kept only for backups beside their files: see `backup::Made`.)
            if let Some(b) = shared.config.backup.as_ref().filter(|b| b.made.is_kept())
                && b.made.contains(&join(rel, ent.name))
            {
                // A backup this run made (see `backup::Made`).
                continue;
            }
            let mut ft = ent.file_type;
            if ft == FileType::Unknown {
                ft = sys::lstat_at(fd.as_fd(), ent.name)
                    .map(|s| s.file_type())
                    .unwrap_or(FileType::Unknown);
            }
            if judge && filters.has_receiver_rules() {
                let path = join(rel, ent.name);
                let abs = || sys::abs_name(fd.as_fd(), ent.name.to_bytes());
                if protected(shared, &path, ft == FileType::Dir, false, rules, &abs) {
                    continue;
                }
            }
            out.push((ent.name.to_owned(), ft));
        }
    }
    Ok(out)
}

fn join(rel: &Path, name: &CStr) -> PathBuf {
    rel.join(OsStr::from_bytes(name.to_bytes()))
}

/// Delete `name` (of type `ft`) in `dir`, a directory with everything below it. Returns whether it
/// is gone (with `dry_run`: would be). Failures are reported with their path and counted; entries a
/// rule protects, and entries `--max-delete` spares, are kept (and so is every directory above
/// them).
pub(crate) fn remove(
    shared: &RunShared,
    counters: &Counters,
    dir: BorrowedFd<'_>,
    name: &CStr,
    ft: FileType,
    rel: &Path,
    rules: Option<&DirRules>,
) -> bool {
    remove_inner(shared, counters, dir, name, ft, rel, true, rules)
}

/// [`remove`]; `announce` says whether the entry itself is reported as deleted (its contents
/// always are): not when it only makes way for a new entry of another type. `rules`: the
/// per-directory rules of the directory the deletion started in, which protect inside the
/// removed subtree too.
#[allow(clippy::too_many_arguments)]
fn remove_inner(
    shared: &RunShared,
    counters: &Counters,
    dir: BorrowedFd<'_>,
    name: &CStr,
    ft: FileType,
    rel: &Path,
    announce: bool,
    rules: Option<&DirRules>,
) -> bool {
    let cfg = &shared.config;
    // (A deletion is work done, for --timeout: a large tree being removed is not an idle run.
    // One relaxed add per entry, next to its unlink.)
    shared.progress.tick();
    let path = join(rel, name);
    let mut complete = true;
    // A read-only directory of ours is opened to us to be emptied, and gets its mode back if it
    // stays (not in a dry run, which changes nothing).
    let mut emptying = None;
    if ft == FileType::Dir {
        let euid = (!cfg.dry_run).then_some(shared.policy.euid);
        match Emptying::open(dir, name, euid) {
            Ok(opened) => {
                let fd = &emptying.insert(opened).fd;
                // Its own per-directory merge files count while it is emptied, on top of what
                // it inherits, as rsync reads them (`push_local_filters` in
                // `delete_dir_contents`): a `.cvsignore` or `.rsync-filter` in it may keep
                // some of it. (A file with a bad rule stops the run, as in rsync.)
                let own;
                let rules = if cfg.filters.has_dir_merges() {
                    let errors;
                    (own, errors) =
                        cfg.filters
                            .dir_rules(rules, path.as_os_str().as_bytes(), &mut |n| {
                                crate::task::read_rules_file(fd.as_fd(), n)
                            });
                    if !errors.is_empty() {
                        crate::task::bad_rules(shared, &path, Some(fd.as_fd()), errors);
                        return false;
                    }
                    Some(&own)
                } else {
                    rules
                };
                let mut reader = fsops::DirReader::default();
                let mut children = Vec::new();
                loop {
                    match reader.fill(fd.as_fd()) {
                        Ok(true) => children
                            .extend(reader.entries().map(|e| (e.name.to_owned(), e.file_type))),
                        Ok(false) => break,
                        Err(e) => {
                            failed(shared, counters, &path, "opendir (delete)", &e);
                            return false;
                        }
                    }
                }
                for (child, cft) in &mut children {
                    if *cft == FileType::Unknown {
                        *cft = sys::lstat_at(fd.as_fd(), child)
                            .map(|s| s.file_type())
                            .unwrap_or(FileType::Unknown);
                    }
                }
                in_delete_order(&mut children);
                for (child, cft) in children {
                    if cfg.filters.has_receiver_rules() {
                        let cp = join(&path, &child);
                        let abs = || sys::abs_name(fd.as_fd(), child.to_bytes());
                        if protected(shared, &cp, cft == FileType::Dir, true, rules, &abs) {
                            complete = false;
                            continue;
                        }
                    }
                    complete &= remove_inner(
                        shared,
                        counters,
                        fd.as_fd(),
                        &child,
                        cft,
                        &path,
                        true,
                        rules,
                    );
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(e) => {
                failed(shared, counters, &path, "opendir (delete)", &e);
                return false;
            }
        }
    }
    if !complete {
        // Something in it stays (a protected or excluded entry, or one --max-delete spared):
        // said on standard output, as rsync says it.
        shared.observer.event(&Event::Skipped {
            path: &path,
            reason: crate::SkipReason::NonEmptyDirectory,
            target: None,
        });
        return false;
    }
    if announce
        && let Some(max) = cfg.max_delete
        && shared.deletes.fetch_add(1, Ordering::Relaxed) >= max
    {
        bump(&counters.delete_skipped, 1);
        return false;
    }
    if !cfg.dry_run {
        let flags = if ft == FileType::Dir {
            libc::AT_REMOVEDIR
        } else {
            0
        };
        // (A file that is a backup itself, named with the suffix beside its original, is
        // removed, not backed up again as `x~~`: rsync's `is_backup_file` check.)
        let removed = match &cfg.backup {
            Some(b)
                if ft != FileType::Dir
                    && (b.dir.is_some()
                        || b.suffix.is_empty()
                        || !name.to_bytes().ends_with(b.suffix.as_bytes())) =>
            {
                crate::backup::move_away(b, &*shared.observer, dir, name, rel)
            }
            _ => sys::unlink_at(dir, name, flags),
        };
        match removed {
            Ok(()) => {
                if let Some(e) = emptying.take() {
                    e.removed();
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(e)
                if ft == FileType::Dir
                    && e.raw_os_error() == Some(libc::ENOTEMPTY)
                    && cfg.backup.is_some() =>
            {
                // Backups are in it (its files' beside them, or a backup directory): it stays,
                // as rsync leaves it, with a word, not an error.
                shared.observer.event(&Event::Skipped {
                    path: &path,
                    reason: crate::SkipReason::NonEmptyDirectory,
                    target: None,
                });
                return false;
            }
            Err(e) => {
                let op = if ft == FileType::Dir {
                    "rmdir (delete)"
                } else {
                    "unlink (delete)"
                };
                failed(shared, counters, &path, op, &e);
                return false;
            }
        }
    }
    if announce {
        tracing::debug!(path = %path.display(), "deleted");
        bump(&counters.deleted_by[crate::kind_index(ft)], 1);
        shared.observer.event(&Event::Deleted {
            path: &path,
            file_type: ft,
        });
    }
    true
}

fn failed(shared: &RunShared, counters: &Counters, path: &Path, op: &'static str, e: &io::Error) {
    bump(&counters.errors, 1);
    shared.observer.event(&Event::Error {
        path,
        op,
        error: e,
        class: ErrorClass::Partial,
    });
}

/// Whether a non-empty directory in the way of a non-directory may be removed: with `--delete`
/// or `--force` (rsync's rule; an empty one always may).
fn may_remove_dirs(cfg: &crate::Config) -> bool {
    cfg.delete.is_some() || cfg.force
}

/// Whether `name` in `dir` is a directory with something in it: what a real run's `rmdir` would
/// find, asked in a dry run, which removes nothing.
fn non_empty_dir(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    let Ok(fd) = sys::open_dir_at(dir, name) else {
        return false;
    };
    let mut reader = fsops::DirReader::default();
    while let Ok(true) = reader.fill(fd.as_fd()) {
        if reader.entries().next().is_some() {
            return true;
        }
    }
    false
}

/// A non-directory cannot take the place of the non-empty directory at `path` (no `--delete`,
/// no `--force`): rsync's "cannot delete non-empty directory" notice, and the error.
fn cannot_make_way(shared: &RunShared, path: &Path) -> io::Error {
    shared.observer.event(&Event::Skipped {
        path,
        reason: crate::SkipReason::NonEmptyDirectory,
        target: None,
    });
    io::Error::new(
        io::Error::from_raw_os_error(libc::ENOTEMPTY).kind(),
        "cannot delete non-empty directory to make way (use --delete or --force)",
    )
}

/// Put the non-directory `name` of `dir` out of the way of a new entry: moved to its backup
/// name with `-b`, else unlinked (`parent_rel`: its directory below the transfer root).
pub(crate) fn put_away(
    shared: &RunShared,
    dir: BorrowedFd<'_>,
    name: &CStr,
    parent_rel: &Path,
) -> io::Result<()> {
    match &shared.config.backup {
        Some(b) => crate::backup::move_away(b, &*shared.observer, dir, name, parent_rel),
        None => sys::unlink_at(dir, name, 0),
    }
}

/// A directory (or anything else) sits where a non-directory must go: remove it. An empty
/// directory always goes; a non-empty one only with `--delete` or `--force` (rsync's rule), its
/// contents reported as deletions. In a dry run nothing is removed, only reported.
pub(crate) fn make_way(
    core: &Core,
    dir: BorrowedFd<'_>,
    name: &CStr,
    rel: Rel<'_>,
) -> io::Result<()> {
    let shared = &core.shared;
    let cfg = &shared.config;
    let may_delete = may_remove_dirs(cfg);
    // A directory in the way goes with its contents, not itself reported as deleted.
    let clear = || {
        remove_inner(
            shared,
            &core.counters,
            dir,
            name,
            FileType::Dir,
            &rel.path(),
            false,
            None,
        )
    };
    if cfg.dry_run {
        if sys::lstat_at(dir, name).is_ok_and(|d| d.file_type() == FileType::Dir) {
            if may_delete {
                clear();
            } else if non_empty_dir(dir, name) {
                // What the real run would meet: the same notice and error.
                return Err(cannot_make_way(shared, &join(&rel.path(), name)));
            }
        }
        return Ok(());
    }
    match sys::unlink_at(dir, name, libc::AT_REMOVEDIR) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            put_away(shared, dir, name, &rel.path())
        }
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
                && may_delete =>
        {
            if clear() {
                Ok(())
            } else {
                Err(e)
            }
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
            Err(cannot_make_way(shared, &join(&rel.path(), name)))
        }
        Err(e) => Err(e),
    }
}

/// `rename(from, to)` in `dir`; a directory in the way at `to` is removed first (see
/// [`make_way`]).
pub(crate) fn rename_over(
    core: &Core,
    dir: BorrowedFd<'_>,
    from: &CStr,
    to: &CStr,
    rel: Rel<'_>,
) -> io::Result<()> {
    rename_over_from(core, dir, from, dir, to, rel)
}

/// [`rename_over`] of `from` in another directory of the same mount (`-T`'s) to `to` in `dir`.
pub(crate) fn rename_over_from(
    core: &Core,
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    dir: BorrowedFd<'_>,
    to: &CStr,
    rel: Rel<'_>,
) -> io::Result<()> {
    if let Some(b) = &core.shared.config.backup {
        crate::backup::keep(b, &*core.shared.observer, dir, to, &rel.path())?;
    }
    rename_making_way(core, from_dir, from, dir, to, rel)
}

/// [`rename_over_from`] without a backup of what it replaces: for an entry that differs from
/// its replacement in attributes only (a symlink, device or special made anew to change them),
/// which rsync changes in place and so never backs up.
pub(crate) fn rename_making_way(
    core: &Core,
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    dir: BorrowedFd<'_>,
    to: &CStr,
    rel: Rel<'_>,
) -> io::Result<()> {
    match sys::rename_at(from_dir, from, dir, to, 0) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EISDIR) | Some(libc::ENOTEMPTY) | Some(libc::EEXIST)
            ) =>
        {
            make_way(core, dir, to, rel).map_err(|e2| {
                if e2.raw_os_error() == Some(libc::ENOTEMPTY) {
                    io::Error::new(
                        e2.kind(),
                        "cannot delete non-empty directory to make way (use --delete or --force)",
                    )
                } else {
                    e2
                }
            })?;
            sys::rename_at(from_dir, from, dir, to, 0)
        }
        r => r,
    }
}

/// A directory's files that `--delay-updates` keeps in its partial directory until the end of
/// the run.
pub(crate) struct PendingUpdates {
    /// The destination directory's path.
    pub dst: PathBuf,
    /// Its path relative to the transfer root (for messages).
    pub rel: PathBuf,
    /// The names in the partial directory, each to be renamed to the same name beside it.
    pub names: Vec<CString>,
    /// The source directory's attributes: its times are set again after the renames.
    pub stat: Option<Stat>,
}

/// `--delay-updates` at the end of the run: rename one directory's waiting files into place (in
/// rapid succession, as rsync), remove the emptied partial directory, and set the directory's
/// times again (the renames changed its mtime). A directory whose permissions keep its owner
/// out (a read-only source directory, copied without root) is opened to its owner for the
/// renames and given its mode back.
pub(crate) fn delayed_updates(shared: &RunShared, counters: &Counters, p: PendingUpdates) {
    let Some(pd) = shared.config.partial_dir.as_deref() else {
        return;
    };
    let dir = match sys::open_dir_path(&p.dst) {
        Ok(fd) => fd,
        Err(e) => return failed(shared, counters, &p.rel, "opendir (delayed updates)", &e),
    };
    let pdir = match sys::open_dir_at(dir.as_fd(), pd) {
        Ok(fd) => fd,
        Err(e) => {
            let shown = p.rel.join(OsStr::from_bytes(pd.to_bytes()));
            return failed(shared, counters, &shown, "opendir (delayed updates)", &e);
        }
    };
    // (Put back below, after the renames.)
    let opened = sys::fstat(dir.as_fd())
        .ok()
        .and_then(|st| open_to_owner(shared, dir.as_fd(), &st));
    for name in &p.names {
        shared.progress.tick();
        if let Some(b) = &shared.config.backup
            && let Err(e) = crate::backup::keep(b, &*shared.observer, dir.as_fd(), name, &p.rel)
        {
            // As rsync: no backup, no update (the new file stays waiting).
            let shown = p.rel.join(OsStr::from_bytes(name.to_bytes()));
            failed(shared, counters, &shown, "backup", &e);
            continue;
        }
        let r = sys::rename_at(pdir.as_fd(), name, dir.as_fd(), name, 0);
        if let Err(e) = r {
            let shown = p.rel.join(OsStr::from_bytes(name.to_bytes()));
            failed(shared, counters, &shown, "rename (delayed update)", &e);
        }
    }
    // Gone once empty (a file whose rename failed keeps it).
    let _ = sys::unlink_at(dir.as_fd(), pd, libc::AT_REMOVEDIR);
    if let Some(mode) = opened
        && let Err(e) = sys::fchmod(dir.as_fd(), mode)
    {
        failed(shared, counters, &p.rel, "chmod", &e);
    }
    if let Some(st) = p.stat {
        reset_dir_times(shared, counters, dir.as_fd(), &p.rel, &st);
    }
}

/// An existing destination directory that keeps its owner out (no write or search permission:
/// a read-only directory copied earlier) cannot take new or updated entries without root. Like
/// rsync (its "dir tweaking"), give the owner `rwx` for the run (when this process is the owner)
/// and return the mode to put back when it is done with.
pub(crate) fn open_to_owner(shared: &RunShared, dir: BorrowedFd<'_>, st: &Stat) -> Option<u32> {
    if shared.config.dry_run {
        return None;
    }
    owner_rwx(dir, shared.policy.euid, st)
}

/// Give the owner `rwx` on directory `dir` (of attributes `st`) when this process (`euid`, not
/// root) is its owner and lacks one of them; the mode to put back.
fn owner_rwx(dir: BorrowedFd<'_>, euid: u32, st: &Stat) -> Option<u32> {
    let mode = st.mode & 0o7777;
    if euid == 0 || st.uid != euid || mode & 0o700 == 0o700 {
        return None;
    }
    sys::fchmod(dir, mode | 0o700).ok().map(|()| mode)
}

/// Set a finished directory's times again after the end of the run changed it.
fn reset_dir_times(
    shared: &RunShared,
    counters: &Counters,
    fd: BorrowedFd<'_>,
    rel: &Path,
    st: &Stat,
) {
    if shared.config.dry_run || !shared.policy.keeps_mtime(FileType::Dir) {
        return;
    }
    let atime = if shared.policy.atimes {
        sys::Time::At(st.atime.0, st.atime.1)
    } else {
        sys::Time::Omit
    };
    if let Err(e) = sys::futimens(fd, atime, sys::Time::At(st.mtime.0, st.mtime.1)) {
        failed(shared, counters, rel, "utimes", &e);
    }
}

/// The per-directory rules of destination directories read at the end of the run, by root and
/// path below the transfer root (`--delete-after` with `dir-merge` rules): each directory's
/// merge files are read once, however many of its subdirectories have deletions.
pub(crate) type EndRules = std::collections::HashMap<(usize, PathBuf), Arc<DirRules>>;

/// Run the `--delete-after` deletions of one root's directory, then set its times again.
pub(crate) fn delete_after(
    shared: &RunShared,
    counters: &Counters,
    p: PendingDelete,
    end_rules: &mut EndRules,
) {
    let root = &shared.config.roots[p.root];
    let filters = &shared.config.filters;
    let mut fd = match sys::open_dir_path(&root.dst) {
        Ok(fd) => fd,
        Err(e) => return failed(shared, counters, &root.dst, "opendir (delete)", &e),
    };
    // The rules of each directory on the way, from the destination's merge files as they are
    // now (the directories above the transfer root prescanned as for the walk).
    let mut rel = root.rel.clone();
    let mut rules = p.rules.clone();
    let mut judge = |fd: BorrowedFd<'_>, rel: &Path, parent: Option<Arc<DirRules>>| {
        let key = (p.root, rel.to_path_buf());
        if let Some(r) = end_rules.get(&key) {
            return Some(Arc::clone(r));
        }
        let above;
        let parent = match &parent {
            Some(r) => Some(&**r),
            None => {
                let (acc, errors) =
                    filters.prescan_rules(&crate::task::dirs_above(root, crate::route::Side::Dst));
                crate::task::bad_rules(shared, rel, Some(fd), errors);
                above = acc;
                above.as_ref()
            }
        };
        let (r, errors) = filters.dir_rules(parent, rel.as_os_str().as_bytes(), &mut |n| {
            crate::task::read_rules_file(fd, n)
        });
        crate::task::bad_rules(shared, rel, Some(fd), errors);
        let r = Arc::new(r);
        end_rules.insert(key, Arc::clone(&r));
        Some(r)
    };
    if p.judge_at_end {
        rules = judge(fd.as_fd(), &rel, None);
    }
    for part in p.below_root.components() {
        let Ok(name) = CString::new(part.as_os_str().as_bytes()) else {
            return;
        };
        fd = match sys::open_dir_at(fd.as_fd(), &name) {
            Ok(fd) => fd,
            Err(e) => return failed(shared, counters, &p.rel, "opendir (delete)", &e),
        };
        if p.judge_at_end {
            rel.push(part);
            rules = judge(fd.as_fd(), &rel, rules);
        }
    }
    let mut any = false;
    for (name, ft) in &p.victims {
        if p.judge_at_end && filters.has_receiver_rules() {
            let path = join(&p.rel, name);
            let abs = || sys::abs_name(fd.as_fd(), name.to_bytes());
            if protected(
                shared,
                &path,
                *ft == FileType::Dir,
                false,
                rules.as_deref(),
                &abs,
            ) {
                continue;
            }
        }
        any |= remove(
            shared,
            counters,
            fd.as_fd(),
            name,
            *ft,
            &p.rel,
            rules.as_deref(),
        );
    }
    if any && let Some(st) = p.stat {
        reset_dir_times(shared, counters, fd.as_fd(), &p.rel, &st);
    }
}

#[cfg(test)]
mod tests {
    use super::same_mtime;

    #[test]
    fn modify_window() {
        assert!(same_mtime((10, 5), (10, 5), None));
        assert!(!same_mtime((10, 5), (10, 6), None));
        // A destination without fractions: the same second is the same time; not the other way.
        assert!(same_mtime((10, 0), (10, 6), None));
        assert!(!same_mtime((10, 6), (10, 0), None));
        assert!(!same_mtime((10, 0), (11, 0), None));
        assert!(same_mtime((10, 5), (10, 6), Some(0)));
        assert!(!same_mtime((10, 5), (11, 5), Some(0)));
        assert!(same_mtime((10, 5), (12, 0), Some(2)));
        assert!(!same_mtime((10, 5), (13, 0), Some(2)));
    }
}
