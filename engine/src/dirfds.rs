//! A directory node's open directories (source, destination, `--link-dest` references), which a
//! node whose files are done gives up while one of its subdirectories is copied, when open files
//! run short, and gets back (identity checked) from a finished subdirectory's `..` or from its
//! transfer's top when it needs them again.
//!
//! Every directory being copied keeps its source and destination open until its last child is
//! done, so that each entry is opened, created and renamed relative to them. In a chain of
//! nested directories every level is alive until the deepest is done: without parking, a chain
//! deeper than about a quarter of the open-file limit failed with `EMFILE` (500 levels under a
//! hard limit of 1,024, where rsync copies it). A node *parks* (closes its fds) when nothing but
//! its subdirectories (listed or being copied) is left to do and the run holds more directory
//! nodes open than its share of the limit ([`OpenDirs`]); see `task::count_down` for the
//! protocol that makes this safe.
//!
//! The fds sit behind an atomic pointer ([`Parkable`]): reading them is a plain load on the
//! per-file path, with no lock and no write to a shared line.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The open directories of one node.
pub(crate) struct DirFds {
    pub src: OwnedFd,
    pub dst: Arc<OwnedFd>,
    /// `--link-dest`/`--compare-dest`/`--copy-dest`: this directory's counterpart in each
    /// reference tree (where it exists). Only its entries need them: a node reopened for its
    /// finish alone gets none (`None`).
    pub alt: Option<Vec<Option<OwnedFd>>>,
    /// This node's place in the run's count of open nodes.
    _counted: Counted,
}

impl DirFds {
    pub fn new(
        src: OwnedFd,
        dst: Arc<OwnedFd>,
        alt: Option<Vec<Option<OwnedFd>>>,
        open: &OpenDirs,
    ) -> Self {
        let fds = 2 + alt.iter().flatten().filter(|d| d.is_some()).count();
        Self {
            src,
            dst,
            alt,
            _counted: open.count(fds),
        }
    }

    /// The source directory.
    pub fn src(&self) -> BorrowedFd<'_> {
        self.src.as_fd()
    }

    /// The destination directory.
    pub fn dst(&self) -> BorrowedFd<'_> {
        self.dst.as_fd()
    }
}

/// The run's count of fds held open by directory nodes (source, destination and reference
/// directories), and how many they may hold before nodes that wait only for their
/// subdirectories park theirs. One atomic per directory (never per file).
pub(crate) struct OpenDirs {
    open: Arc<AtomicUsize>,
    limit: usize,
}

impl OpenDirs {
    /// A count that asks for parking above `limit` fds (16 at least).
    pub fn new(limit: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(16),
        }
    }

    /// Count `fds` more open fds for as long as the returned guard lives.
    pub fn count(&self, fds: usize) -> Counted {
        self.open.fetch_add(fds, Ordering::Relaxed);
        Counted(Arc::clone(&self.open), fds)
    }

    /// Whether open fds are over the limit (nodes that can should park).
    pub fn pressed(&self) -> bool {
        self.open.load(Ordering::Relaxed) > self.limit
    }

    /// Fds open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Some fds in [`OpenDirs`] for as long as it lives.
pub(crate) struct Counted(Arc<AtomicUsize>, usize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// A [`DirFds`] that can be taken away (parked) and put back.
pub(crate) struct Parkable(AtomicPtr<DirFds>);

impl Parkable {
    pub fn new(fds: DirFds) -> Self {
        Self(AtomicPtr::new(Box::into_raw(Box::new(fds))))
    }

    /// The fds. Panics if they are parked: every user of a node's fds holds one of the units of
    /// work that keep it from parking (`task::child_done`), so that is a bug.
    pub fn get(&self) -> &DirFds {
        let p = self.0.load(Ordering::Acquire);
        assert!(!p.is_null(), "a parked directory's fds were used");
        // SAFETY: a non-null pointer came from `Box::into_raw` in `new` or `put` and is freed
        // only by `take` (whose caller guarantees that no reference from `get` is alive or will
        // be made until `put`) or by `drop` (which has `&mut self`).
        unsafe { &*p }
    }

    /// Whether the fds are parked.
    pub fn parked(&self) -> bool {
        self.0.load(Ordering::Acquire).is_null()
    }

    /// Take the fds away (`None` if already parked).
    ///
    /// # Safety
    /// No reference returned by [`Parkable::get`] may be alive, and none may be made by another
    /// thread until [`Parkable::put`] (the caller holds the node's last unit of work that is not
    /// a subdirectory's, see `task::child_done`).
    pub unsafe fn take(&self) -> Option<Box<DirFds>> {
        let p = self.0.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null pointer came from `Box::into_raw` and, swapped out, is owned here
        // alone; nobody reads through it any more (the caller's contract).
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }

    /// Put fds back into a parked slot (a slot that holds some keeps them; the new ones close).
    /// Returns whether they went in.
    pub fn put(&self, fds: Box<DirFds>) -> bool {
        let p = Box::into_raw(fds);
        if self
            .0
            .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `p` came from `Box::into_raw` just above and was not published.
            drop(unsafe { Box::from_raw(p) });
            return false;
        }
        true
    }
}

impl Drop for Parkable {
    fn drop(&mut self) {
        let p = *self.0.get_mut();
        if !p.is_null() {
            // SAFETY: `&mut self`: no reference from `get` is alive; the pointer came from
            // `Box::into_raw` and is freed once.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(open: &OpenDirs) -> DirFds {
        let f = |p: &str| OwnedFd::from(std::fs::File::open(p).unwrap());
        DirFds::new(f("/"), Arc::new(f("/")), None, open)
    }

    #[test]
    fn parking_closes_and_counts_and_put_restores() {
        let open = OpenDirs::new(0);
        let slot = Parkable::new(fds(&open));
        let others: Vec<_> = (0..8).map(|_| Parkable::new(fds(&open))).collect();
        assert_eq!(open.open(), 18);
        assert!(
            open.pressed(),
            "9 open nodes (18 fds) are over the least limit (16)"
        );
        assert!(!slot.parked());
        // SAFETY: no reference from `get` is alive, and this test is the only thread using it.
        let taken = unsafe { slot.take() }.expect("not parked yet");
        assert!(slot.parked());
        // SAFETY: as above.
        assert!(unsafe { slot.take() }.is_none());
        drop(taken);
        assert_eq!(open.open(), 16);
        assert!(!open.pressed());
        assert!(slot.put(Box::new(fds(&open))));
        assert!(!slot.parked());
        assert_eq!(open.open(), 18);
        // A put into a slot that holds fds drops the newcomer.
        assert!(!slot.put(Box::new(fds(&open))));
        assert_eq!(open.open(), 18);
        drop(others);
        drop(slot);
        assert_eq!(open.open(), 0);
    }
}
