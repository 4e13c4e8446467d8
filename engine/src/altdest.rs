//! `--link-dest`, `--compare-dest`, `--copy-dest`: finding an entry's counterpart in the
//! reference trees and how well it matches, by rsync's three levels (a regular file of that
//! name exists; it has the same data by the quick check; and it has the same attributes too).
//! What each level does is decided where the entry is copied (`task`).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use fsops::xattr::Target;
use fsops::{FileType, Stat, sys};

use crate::core::Core;
use crate::sync;
use crate::{Change, QuickCheck};

/// How well a reference entry matches the source entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// An entry of the same type (a regular file; for others, also the same target or device).
    Exists,
    /// The same data by the quick check (or `-c`).
    SameData,
    /// The same data and the same attributes, among those the run preserves.
    Exact,
}

/// The best counterpart found: the reference tree's index, the level and its attributes.
pub(crate) struct Match {
    pub dir: usize,
    pub level: Level,
    pub stat: Stat,
}

impl Match {
    /// The open reference directory the match is in (`dirs`: those it was searched in).
    pub(crate) fn reference<'a>(&self, dirs: &'a [Option<OwnedFd>]) -> BorrowedFd<'a> {
        dirs[self.dir]
            .as_ref()
            .expect("a match is in an open reference")
            .as_fd()
    }
}

/// Keep `(dir, level, stat)` as the best match so far if it is better than `best` (the first of
/// each level wins, as rsync tries the references in order).
fn note(best: &mut Option<Match>, dir: usize, level: Level, stat: Stat) {
    if best.as_ref().is_none_or(|m| m.level < level) {
        *best = Some(Match { dir, level, stat });
    }
}

/// The best counterpart of regular file `name` (attributes `st`, open as `src` when `-c` must
/// hash it) in the reference directories `dirs`, tried in order as rsync tries them: the first
/// that exists, upgraded by the first with the same data, and the first exact match ends the
/// search. A reference is looked up by the destination's name `ref_name` (another than `name`
/// for a file copied to a new name: `SRC/FILE DEST/NEW` is matched with `REF/NEW`, as rsync).
pub(crate) async fn file_match(
    core: &Core,
    dirs: &[Option<OwnedFd>],
    src_dir: BorrowedFd<'_>,
    (name, ref_name): (&CStr, &CStr),
    mut src: Option<&mut crate::route::SourceFd>,
    st: &Stat,
) -> Option<Match> {
    let cfg = &core.shared.config;
    let mut best: Option<Match> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let Some(dir) = dir else { continue };
        let Ok(b) = sys::lstat_at(dir.as_fd(), ref_name) else {
            continue;
        };
        if b.file_type() != FileType::File {
            continue;
        }
        note(&mut best, i, Level::Exists, b);
        let same_data = b.size == st.size
            && match cfg.quick_check {
                // (rsync's order: -c, then --size-only, then -I.)
                _ if cfg.checksum => matches!(
                    sync::same_content(core, dir.as_fd(), src.as_deref_mut(), ref_name, st.size)
                        .await,
                    Ok(true)
                ),
                QuickCheck::SizeOnly => true,
                QuickCheck::Never => false,
                QuickCheck::SizeAndTime => sync::same_mtime(b.mtime, st.mtime, cfg.modify_window),
            };
        if !same_data {
            continue;
        }
        note(&mut best, i, Level::SameData, b);
        if same_attrs(
            core,
            (src_dir, name, ref_name),
            dir.as_fd(),
            (&b, st),
            false,
        ) {
            note(&mut best, i, Level::Exact, b);
            break;
        }
    }
    best
}

/// The counterpart of a symlink (with `target`), device or special `name`: the first of the
/// same type, upgraded by the first with the same target (or device number), and the first of
/// those with the same attributes ends the search. Looked up by `ref_name`, as
/// [`file_match`].
pub(crate) fn other_match(
    core: &Core,
    dirs: &[Option<OwnedFd>],
    src_dir: BorrowedFd<'_>,
    (name, ref_name): (&CStr, &CStr),
    st: &Stat,
    target: Option<&CStr>,
) -> Option<Match> {
    let mut best: Option<Match> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let Some(dir) = dir else { continue };
        let Ok(b) = sys::lstat_at(dir.as_fd(), ref_name) else {
            continue;
        };
        if b.file_type() != st.file_type() {
            continue;
        }
        note(&mut best, i, Level::Exists, b);
        let same = match target {
            Some(t) => sys::readlink_at(dir.as_fd(), ref_name).is_ok_and(|bt| bt.as_c_str() == t),
            None => b.rdev == st.rdev,
        };
        if !same {
            continue;
        }
        note(&mut best, i, Level::SameData, b);
        let is_link = target.is_some();
        if same_attrs(
            core,
            (src_dir, name, ref_name),
            dir.as_fd(),
            (&b, st),
            is_link,
        ) {
            note(&mut best, i, Level::Exact, b);
            break;
        }
    }
    best
}

/// The counterpart of a directory (its reference directories, opened): the first one whose
/// attributes are the source's, else the first there is.
pub(crate) fn dir_match(
    core: &Core,
    dirs: &[Option<OwnedFd>],
    src: BorrowedFd<'_>,
    st: &Stat,
) -> Option<Stat> {
    let mut first = None;
    for dir in dirs.iter().flatten() {
        let Ok(b) = sys::fstat(dir.as_fd()) else {
            continue;
        };
        if same_attrs_fd(
            core,
            Target::Fd(src),
            Target::Fd(dir.as_fd()),
            &b,
            st,
            false,
        ) {
            return Some(b);
        }
        first.get_or_insert(b);
    }
    first
}

/// rsync's `unchanged_attrs` for the source `name` in `src_dir` (stat `st`) against the
/// reference `ref_name` in `dir` (stat `b`).
fn same_attrs(
    core: &Core,
    (src_dir, name, ref_name): (BorrowedFd<'_>, &CStr, &CStr),
    dir: BorrowedFd<'_>,
    (b, st): (&Stat, &Stat),
    is_link: bool,
) -> bool {
    same_attrs_fd(
        core,
        Target::At(src_dir, name),
        Target::At(dir, ref_name),
        b,
        st,
        is_link,
    )
}

/// rsync's `unchanged_attrs`: the attributes this run preserves are equal (mtime, permissions,
/// owner, group; with `-X`/`-A` the extended attributes and ACLs too; not the access time, which
/// `-U` gives a copy but does not ask of a reference).
fn same_attrs_fd(
    core: &Core,
    src: Target<'_>,
    reference: Target<'_>,
    b: &Stat,
    st: &Stat,
    is_link: bool,
) -> bool {
    let shared = &core.shared;
    let change = Change {
        atime: false,
        ..sync::attr_change(shared, b, st, is_link)
    };
    if sync::attrs_differ(&change) {
        return false;
    }
    let cfg = &shared.config;
    !(cfg.xattrs || cfg.acls)
        || fsops::meta::xattr_plan(src, reference, &shared.policy, is_link)
            .is_ok_and(|p| p.is_empty())
}
