//! The hard-link map for `-H`: which source inodes with `nlink > 1` have been copied, and where.
//!
//! Only entries whose source has more than one link ever touch it, so the common path (files with
//! one link) takes no shared lock. It is sharded by inode number (64 shards, each a mutex around a
//! small hash map, cache-padded), so two cores meet on a lock only when they handle inodes of the
//! same shard at the same moment.
//!
//! Protocol: the first name of an inode to arrive *claims* it and copies the data (the leader);
//! every later name either links to the leader's finished copy at once, or, while the leader is
//! still copying, waits for it as a future (registered wakers, woken across cores), never blocking
//! a core thread. If the leader fails, the next waiter becomes the leader and copies the data
//! itself. An entry is dropped once every link the source reported has been seen; groups with
//! names outside the tree keep theirs until the run ends. With `-L` (or `--copy-unsafe-links`) a
//! followed symlink is one more name of its target's inode, uncounted in its link count, so no
//! entry is dropped: every name that reaches the inode joins the group, as with rsync.
//!
//! On a re-sync a leader whose destination needs the data may *put its copy off*
//! ([`LinkMap::defer`]): the next name of the inode to arrive leads instead, and if that name's
//! destination is already up to date no data is written at all, the deferring name being linked
//! to it (rsync links further names to a name whose copy is up to date in the same way). A core
//! holds at most a few put-off groups and gives them back ([`LinkMap::release`]: the deferring
//! name copies after all) when it has nothing else to do, so a group whose other names are far
//! away or outside the tree costs a short delay, never a stall.
//!
//! A finished leader is remembered by its destination directory (`D`: for the engine a
//! `task::LeaderDir`, shared by the groups led from one directory, which holds the directory
//! open only while open directories are within their share of the open-file limit) and its
//! name.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crossbeam_utils::CachePadded;
use fsops::Stat;

const SHARDS: usize = 64;

/// Identity of a source inode.
pub(crate) type Key = (u64, u64);

enum State<D> {
    Copying(Vec<Waker>),
    /// The leader put its copy off ([`LinkMap::defer`]): the next name to claim leads; the
    /// deferring leader waits among the waiters.
    Deferred(Vec<Waker>),
    /// The name that took the lead from a put-off copy needs the data too: it gives the lead
    /// back to the name that put it off (which copies, as it would have), and waits for it.
    HandedBack(Vec<Waker>),
    Done {
        dir: D,
        name: CString,
        rel: Arc<PathBuf>,
        /// The leader's source attributes (what a further name of the inode reports).
        stat: Stat,
    },
    Failed,
}

struct Entry<D> {
    /// Names of this inode not seen yet.
    remaining: u64,
    /// Names waiting for the leader right now; the entry stays until they have read it.
    waiting: u64,
    /// The leader took the lead from a name that put its copy off.
    took_over: bool,
    state: State<D>,
}

impl<D> Entry<D> {
    /// Whether nobody will ever look at this entry again.
    fn spent(&self) -> bool {
        self.remaining == 0 && self.waiting == 0
    }
}

/// What a name of a multi-link inode should do.
pub(crate) enum Claim<D> {
    /// Copy the data, then call [`LinkMap::done`] or [`LinkMap::failed`].
    Leader,
    /// Link to this destination name (in this destination directory); the leader's path
    /// relative to the transfer root comes along for item events (empty when nobody asked).
    Link(D, CString, Arc<PathBuf>),
}

/// One shard: a lock around a small map, on its own cache line.
type Shard<D> = CachePadded<Mutex<HashMap<Key, Entry<D>>>>;

/// The map; `D` is how a leader's destination directory is held (the engine's
/// `task::LeaderDir`: open, or found again from the transfer's top).
pub(crate) struct LinkMap<D = Arc<OwnedFd>> {
    shards: Box<[Shard<D>]>,
    /// Keep every entry to the end of the run (symlinks are followed: more names than links).
    keep_all: bool,
    /// Some leader has put its copy off this run (set once, read by leaders that may not put
    /// theirs off, which then need not look for a lead to hand back).
    any_deferred: CachePadded<std::sync::atomic::AtomicBool>,
}

impl<D: Clone> LinkMap<D> {
    /// A map; with `keep_all`, entries stay when their link count has been seen.
    pub fn new(keep_all: bool) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            keep_all,
            any_deferred: CachePadded::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry<D>>> {
        let i = (key.1 ^ key.0.rotate_left(17)) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A further name of inode `key` arrived and its leader has finished: take the link at
    /// once (the leader's destination, its path for item events, its source attributes).
    /// `None` (and nothing recorded) when the group is unknown or its leader still copying; the
    /// caller then goes through [`LinkMap::claim`].
    pub fn link_if_done(&self, key: Key) -> Option<(D, CString, Arc<PathBuf>, Stat)> {
        let mut shard = self.shard(key);
        let e = shard.get_mut(&key)?;
        let State::Done {
            dir,
            name,
            rel,
            stat,
        } = &e.state
        else {
            return None;
        };
        let link = (dir.clone(), name.clone(), Arc::clone(rel), *stat);
        e.remaining = e.remaining.saturating_sub(1);
        if e.spent() && !self.keep_all {
            shard.remove(&key);
        }
        Some(link)
    }

    /// A name of inode `key` (which has `nlink` links) arrived: lead, link, or wait for the
    /// leader. Resolves without blocking the thread.
    pub async fn claim(&self, key: Key, nlink: u64) -> Claim<D> {
        {
            let mut shard = self.shard(key);
            match shard.get_mut(&key) {
                None => {
                    shard.insert(
                        key,
                        Entry {
                            remaining: nlink.saturating_sub(1),
                            waiting: 0,
                            took_over: false,
                            state: State::Copying(Vec::new()),
                        },
                    );
                    return Claim::Leader;
                }
                Some(e) => {
                    e.remaining = e.remaining.saturating_sub(1);
                    if let State::Deferred(w) = &mut e.state {
                        // The leader put its copy off: this name leads (its waiters, the
                        // deferring name among them, link to its copy).
                        let w = std::mem::take(w);
                        e.state = State::Copying(w);
                        e.took_over = true;
                        return Claim::Leader;
                    }
                    e.waiting += 1;
                }
            }
        }
        self.wait(key, false).await
    }

    /// A name counted among `key`'s waiters waits for the leader's copy (`Link`) or, the
    /// leader having failed or given the lead back, leads itself; the lead handed back
    /// ([`State::HandedBack`]) goes to the name that put its copy off (`deferring`) alone.
    async fn wait(&self, key: Key, deferring: bool) -> Claim<D> {
        std::future::poll_fn(|cx| {
            let mut shard = self.shard(key);
            let Some(e) = shard.get_mut(&key) else {
                // Dropped meanwhile (link count changed under us): copy on our own.
                return Poll::Ready(Claim::Leader);
            };
            match &mut e.state {
                State::Done { dir, name, rel, .. } => {
                    let claim = Claim::Link(dir.clone(), name.clone(), Arc::clone(rel));
                    e.waiting -= 1;
                    if e.spent() && !self.keep_all {
                        shard.remove(&key);
                    }
                    Poll::Ready(claim)
                }
                State::Failed => {
                    e.waiting -= 1;
                    e.state = State::Copying(Vec::new());
                    Poll::Ready(Claim::Leader)
                }
                State::HandedBack(w) if deferring => {
                    let w = std::mem::take(w);
                    e.waiting -= 1;
                    e.state = State::Copying(w);
                    Poll::Ready(Claim::Leader)
                }
                State::Copying(waiters) | State::Deferred(waiters) | State::HandedBack(waiters) => {
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The leader of `key`, whose copy needs the data, puts it off (with `may_defer`: while
    /// no name waits for it and names remain to come) until another name arrives, which then
    /// leads: if that name's copy is up to date this one links to it (`Claim::Link`), if it
    /// needs the data too it hands the lead back. `Claim::Leader`: copy now (nothing put off,
    /// the lead handed back, or given back by [`LinkMap::release`]). A leader that took the
    /// lead from a put-off copy and needs the data itself hands the lead back and waits for
    /// that copy (`Claim::Link`), so the name met first is the one copied, as without putting
    /// off.
    pub async fn defer(&self, key: Key, may_defer: bool) -> Claim<D> {
        use std::sync::atomic::Ordering::Relaxed;
        if !may_defer && !self.any_deferred.load(Relaxed) {
            // (Nothing was put off, so no lead was taken from a put-off copy: the common case
            // of a copy into a new destination costs no lock here.)
            return Claim::Leader;
        }
        let handed_back = {
            let mut shard = self.shard(key);
            let Some(e) = shard.get_mut(&key) else {
                return Claim::Leader;
            };
            match &mut e.state {
                State::Copying(w) if e.took_over => {
                    let w = std::mem::take(w);
                    e.took_over = false;
                    e.state = State::HandedBack(Vec::new());
                    e.waiting += 1;
                    Some(w)
                }
                State::Copying(w) if may_defer && e.remaining > 0 && e.waiting == 0 => {
                    let w = std::mem::take(w);
                    e.state = State::Deferred(w);
                    e.waiting += 1;
                    if !self.any_deferred.load(Relaxed) {
                        self.any_deferred.store(true, Relaxed);
                    }
                    None
                }
                _ => return Claim::Leader,
            }
        };
        if let Some(w) = handed_back {
            w.into_iter().for_each(Waker::wake);
            return self.wait(key, false).await;
        }
        // (The lead handed back comes to this name alone.)
        self.wait(key, true).await
    }

    /// Give the lead of `key` back to the name that put its copy off, if no other name took it
    /// meanwhile.
    pub fn release(&self, key: Key) {
        let waiters = {
            let mut shard = self.shard(key);
            let Some(e) = shard.get_mut(&key) else { return };
            match &mut e.state {
                State::Deferred(w) => {
                    let w = std::mem::take(w);
                    e.state = State::Failed;
                    w
                }
                _ => Vec::new(),
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The leader's copy of `key` (source attributes `stat`) is in place as `name` in `dir`.
    pub fn done(&self, key: Key, dir: D, name: CString, rel: PathBuf, stat: Stat) {
        let waiters = {
            let mut shard = self.shard(key);
            let Some(e) = shard.get_mut(&key) else { return };
            let old = std::mem::replace(
                &mut e.state,
                State::Done {
                    dir,
                    name,
                    rel: Arc::new(rel),
                    stat,
                },
            );
            if e.spent() && !self.keep_all {
                shard.remove(&key);
            }
            match old {
                State::Copying(w) | State::Deferred(w) | State::HandedBack(w) => w,
                _ => Vec::new(),
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The leader of `key` failed: the next name to look becomes the leader.
    pub fn failed(&self, key: Key) {
        let waiters = {
            let mut shard = self.shard(key);
            let Some(e) = shard.get_mut(&key) else { return };
            match std::mem::replace(&mut e.state, State::Failed) {
                State::Copying(w) | State::Deferred(w) | State::HandedBack(w) => w,
                _ => Vec::new(),
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(std::fs::File::open("/").expect("open /").into())
    }

    #[test]
    fn leader_then_links_then_entry_dropped() {
        let m = LinkMap::new(false);
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            assert!(matches!(m.claim((1, 7), 3).await, Claim::Leader));
            finish(&m, (1, 7), "a");
            for _ in 0..2 {
                match m.claim((1, 7), 3).await {
                    Claim::Link(_, n, _) => assert_eq!(n.as_bytes(), b"a"),
                    Claim::Leader => panic!("second name copied again"),
                }
            }
            // All three names seen: the entry is gone, so memory holds only open groups.
            assert!(m.shard((1, 7)).is_empty());
        });
    }

    /// Regression: the leader finished after every name had arrived while two were still
    /// waiting; the entry was dropped and the waiters copied the data again (broken groups).
    #[test]
    fn waiters_registered_before_done_still_link() {
        let m = Arc::new(LinkMap::new(false));
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            assert!(matches!(m.claim((3, 5), 3).await, Claim::Leader));
            let a = spawn_claim(&m, (3, 5), 3);
            let b = spawn_claim(&m, (3, 5), 3);
            // Let both register as waiters (all three names have now arrived).
            yield_a_few().await;
            finish(&m, (3, 5), "leader");
            for h in [a, b] {
                match h.await.expect("task") {
                    Claim::Link(_, n, _) => assert_eq!(n.as_bytes(), b"leader"),
                    Claim::Leader => panic!("a waiter copied the data again"),
                }
            }
            assert!(m.shard((3, 5)).is_empty());
        });
    }

    /// A leader that puts its copy off is linked to the copy of the next name to arrive, which
    /// leads; given back, it leads itself; with a name waiting for it, or none left to come, it
    /// cannot put it off.
    #[test]
    fn a_put_off_copy_goes_to_the_next_name_or_back_to_the_leader() {
        let m = Arc::new(LinkMap::new(false));
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            // Taken over: the next name leads, the deferring one links to its copy.
            assert!(matches!(m.claim((4, 1), 3).await, Claim::Leader));
            let put_off = spawn_defer(&m, (4, 1), true);
            yield_a_few().await;
            assert!(
                matches!(m.claim((4, 1), 3).await, Claim::Leader),
                "the next name must lead"
            );
            // (Given back now, after another name took the lead: nothing changes.)
            m.release((4, 1));
            finish(&m, (4, 1), "next");
            match put_off.await.expect("task") {
                Claim::Link(_, n, _) => assert_eq!(n.as_bytes(), b"next"),
                Claim::Leader => panic!("the put-off name copied though another led"),
            }
            // Given back: the deferring name leads after all, and a later name links to it.
            assert!(matches!(m.claim((4, 2), 3).await, Claim::Leader));
            let put_off = spawn_defer(&m, (4, 2), true);
            yield_a_few().await;
            m.release((4, 2));
            assert!(matches!(put_off.await.expect("task"), Claim::Leader));
            finish(&m, (4, 2), "first");
            match m.claim((4, 2), 3).await {
                Claim::Link(_, n, _) => assert_eq!(n.as_bytes(), b"first"),
                Claim::Leader => panic!("copied twice"),
            }
            // No name left to come: nothing to wait for.
            assert!(matches!(m.claim((4, 3), 1).await, Claim::Leader));
            assert!(matches!(m.defer((4, 3), true).await, Claim::Leader));
            // The next name needs the data too: it hands the lead back to the first, which
            // copies, and links to that copy.
            assert!(matches!(m.claim((4, 4), 3).await, Claim::Leader));
            let first = spawn_defer(&m, (4, 4), true);
            yield_a_few().await;
            assert!(matches!(m.claim((4, 4), 3).await, Claim::Leader));
            let next = spawn_defer(&m, (4, 4), true);
            assert!(
                matches!(first.await.expect("task"), Claim::Leader),
                "the lead must come back to the first name"
            );
            finish(&m, (4, 4), "first");
            match next.await.expect("task") {
                Claim::Link(_, n, _) => assert_eq!(n.as_bytes(), b"first"),
                Claim::Leader => panic!("both names copied"),
            }
        });
    }

    /// The leader of `key` finished as `name` (in a directory that does not matter here).
    fn finish(m: &LinkMap, key: Key, name: &str) {
        m.done(
            key,
            fd(),
            CString::new(name).unwrap(),
            PathBuf::new(),
            Stat::default(),
        );
    }

    /// A name of `key` (of `nlink` links) claiming it on a task of its own.
    fn spawn_claim(
        m: &Arc<LinkMap>,
        key: Key,
        nlink: u64,
    ) -> compio::runtime::JoinHandle<Claim<Arc<OwnedFd>>> {
        let m = Arc::clone(m);
        compio::runtime::spawn(async move { m.claim(key, nlink).await })
    }

    /// The leader of `key` putting its copy off (or not: `may_defer`) on a task of its own.
    fn spawn_defer(
        m: &Arc<LinkMap>,
        key: Key,
        may_defer: bool,
    ) -> compio::runtime::JoinHandle<Claim<Arc<OwnedFd>>> {
        let m = Arc::clone(m);
        compio::runtime::spawn(async move { m.defer(key, may_defer).await })
    }

    /// Let spawned tasks of this runtime run a few turns.
    async fn yield_a_few() {
        for _ in 0..3 {
            crate::core::yield_now().await;
        }
    }

    #[test]
    fn waiter_on_another_thread_is_woken_and_failure_hands_over() {
        let m = Arc::new(LinkMap::<Arc<OwnedFd>>::new(false));
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            assert!(matches!(m.claim((2, 9), 3).await, Claim::Leader));
        });
        let m2 = Arc::clone(&m);
        let follower = std::thread::spawn(move || {
            let rt = compio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async { matches!(m2.claim((2, 9), 3).await, Claim::Leader) })
        });
        // The follower either registered already or will find the failed state: both end with
        // it leading, which is what a failed leader must cause.
        m.failed((2, 9));
        assert!(
            follower.join().unwrap(),
            "the waiter must take over after a failure"
        );
    }
}
