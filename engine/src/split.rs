//! One large file copied by several cores at once. The core that owns the file (it staged the
//! destination and will apply the metadata and publish it) cuts the data into chunks of
//! `--split-chunk` bytes and offers helper tasks to the other cores through the scheduler's
//! injector; every core that takes one, the owner included, claims chunks from a shared cursor
//! and copies each with `copy_file_range` at its own offset. The owner waits until every claimed
//! chunk is finished, then goes on as for any file (re-check of the source, metadata, publish).
//!
//! Shared per split file (never per small file): the cursor, the count of chunks being copied,
//! the first error and the owner's waker.
//!
//! A cold large file is not split across the cores (each would block in its reads); it goes to
//! the cold-copy pool as a [`ColdCopy`]: the same cursor over `--split-chunk` pieces, claimed by
//! the file's own pool job and, when after its first piece the file is the only cold one in the
//! pool, by helper jobs that give way as soon as another cold file arrives.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Poll, Waker};

/// The bytes one shared copy has written, added to the progress display as they are written
/// (by whichever thread writes them); the file's core takes them back when it counts the file.
struct Moved {
    progress: crate::Progress,
    total: AtomicU64,
}

impl Moved {
    fn new(progress: crate::Progress) -> Self {
        Self {
            progress,
            total: AtomicU64::new(0),
        }
    }

    fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        self.progress.moved(n);
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

/// The state shared by the cores copying one file.
pub(crate) struct SplitCopy {
    src: OwnedFd,
    dst: OwnedFd,
    size: u64,
    chunk: u64,
    /// Offset of the next chunk nobody has claimed.
    next: AtomicU64,
    /// Chunks claimed and not finished.
    busy: AtomicUsize,
    /// Set on the first error or when the owner gives up (stop request): nothing more is claimed.
    stop: AtomicBool,
    failed: Mutex<Option<io::Error>>,
    owner: Mutex<Option<Waker>>,
    /// Bytes copied so far, shown by the progress display as they go.
    moved: Moved,
}

impl SplitCopy {
    /// A split copy of `size` bytes from `src` to `dst` (both duplicated: helpers may outlive
    /// the owner's handles by a moment).
    pub(crate) fn new(
        src: &OwnedFd,
        dst: &OwnedFd,
        (size, chunk): (u64, u64),
        progress: crate::Progress,
    ) -> io::Result<Self> {
        Ok(Self {
            moved: Moved::new(progress),
            src: src.try_clone()?,
            dst: dst.try_clone()?,
            size,
            chunk: chunk.max(1 << 20),
            next: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
            owner: Mutex::new(None),
        })
    }

    /// Bytes copied so far (all of them once the copy is done).
    pub(crate) fn moved(&self) -> u64 {
        self.moved.total()
    }

    /// How many chunks the file has.
    pub(crate) fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk)
    }

    /// Whether any chunk has been claimed yet.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn claimed_any(&self) -> bool {
        self.next.load(Ordering::Acquire) > 0
    }

    fn claim(&self) -> Option<(u64, u64)> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        // Counted busy before the cursor moves, so the owner never sees "all claimed, none
        // busy" while a chunk is being taken.
        self.busy.fetch_add(1, Ordering::AcqRel);
        let off = self.next.fetch_add(self.chunk, Ordering::AcqRel);
        if off >= self.size {
            self.finish_one();
            return None;
        }
        Some((off, self.chunk.min(self.size - off)))
    }

    fn finish_one(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let w = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    fn fail(&self, e: io::Error) {
        self.stop.store(true, Ordering::Release);
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// Claim and copy chunks until none is left; returns how many this caller copied.
    pub(crate) async fn work(&self) -> u64 {
        let mut copied = 0;
        while let Some((off, len)) = self.claim() {
            // Finishes the chunk even if this future is dropped mid-way (a stop request), so the
            // owner's wait cannot hang.
            let guard = Claimed(self);
            if let Err(e) = self.copy_range(off, len).await {
                self.fail(e);
            } else {
                copied += 1;
            }
            drop(guard);
        }
        copied
    }

    async fn copy_range(&self, mut off: u64, len: u64) -> io::Result<()> {
        let end = off + len;
        while off < end {
            let next = fsops::copy::copy_step(&self.src, &self.dst, off, end, 16 << 20)?;
            self.moved.add(next - off);
            off = next;
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            // Let the core's other tasks run between steps.
            fsops::copy::yield_now().await;
        }
        Ok(())
    }

    /// Wait until every chunk is claimed and finished (or the copy stopped), then return the
    /// first error.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let settled = |s: &Self| {
                s.busy.load(Ordering::Acquire) == 0
                    && (s.next.load(Ordering::Acquire) >= s.size || s.stop.load(Ordering::Acquire))
            };
            if settled(self) {
                return Poll::Ready(());
            }
            *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            // Re-check after registering: the last chunk may have finished in between.
            if settled(self) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The owner gives up (its future is dropped): helpers stop claiming.
    pub(crate) fn abandon(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Claimed<'a>(&'a SplitCopy);

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.0.finish_one();
    }
}

/// A cold file copied on the cold-copy pool (`task::copy_cold`): its pieces are claimed from a
/// cursor by the file's own job and by helper jobs that run only when no other file's job waits
/// for a thread. The own job copies pieces until none is left, then waits for the helpers'
/// pieces in progress and returns the first error.
pub(crate) struct ColdCopy {
    src: OwnedFd,
    dst: OwnedFd,
    pieces: Vec<Vec<(u64, u64)>>,
    /// Index of the next piece nobody has claimed.
    next: AtomicUsize,
    /// Pieces copied completely.
    copied: AtomicU64,
    /// Threads inside [`ColdCopy::work`] (counted before they claim).
    busy: Mutex<usize>,
    settled: Condvar,
    /// Cleared on the first error or when the core gives up (stop request).
    wanted: AtomicBool,
    failed: Mutex<Option<io::Error>>,
    /// Bytes copied so far, shown by the progress display as they go.
    moved: Moved,
}

impl ColdCopy {
    pub(crate) fn new(
        src: OwnedFd,
        dst: OwnedFd,
        pieces: Vec<Vec<(u64, u64)>>,
        progress: crate::Progress,
    ) -> Self {
        Self {
            moved: Moved::new(progress),
            src,
            dst,
            pieces,
            next: AtomicUsize::new(0),
            copied: AtomicU64::new(0),
            busy: Mutex::new(0),
            settled: Condvar::new(),
            wanted: AtomicBool::new(true),
            failed: Mutex::new(None),
        }
    }

    pub(crate) fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Bytes copied so far (all of them once [`ColdCopy::run`] returned `Ok`).
    pub(crate) fn moved(&self) -> u64 {
        self.moved.total()
    }

    /// Pieces copied so far (all of them once [`ColdCopy::run`] returned `Ok`).
    pub(crate) fn copied_pieces(&self) -> u64 {
        self.copied.load(Ordering::Acquire)
    }

    /// The core went away: every thread stops at its next step.
    pub(crate) fn abandon(&self) {
        self.wanted.store(false, Ordering::Release);
    }

    /// Claim and copy pieces until none is left (or the copy stopped), or, before each piece,
    /// until `give_way` says another job needs this thread (a helper's check: two writers on
    /// one file contend for its inode lock, so a helper only takes pieces while the pool has
    /// nothing else to do).
    pub(crate) fn work(&self, give_way: impl Fn() -> bool) {
        loop {
            if give_way() {
                return;
            }
            *self.busy.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.pieces.len() || !self.wanted.load(Ordering::Acquire) {
                self.release();
                return;
            }
            let r = self.pieces[i].iter().try_for_each(|&(off, len)| {
                fsops::copy::copy_kernel_range_blocking(
                    &self.src,
                    &self.dst,
                    (off, len),
                    &self.wanted,
                    &|n| self.moved.add(n),
                )
                .map(drop)
            });
            match r {
                Ok(()) => {
                    self.copied.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => {
                    self.wanted.store(false, Ordering::Release);
                    let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                    // The error that stopped the copy, before the `Interrupted` it caused.
                    if f.as_ref().is_none_or(|f| {
                        f.kind() == io::ErrorKind::Interrupted
                            && e.kind() != io::ErrorKind::Interrupted
                    }) {
                        *f = Some(e);
                    }
                }
            }
            self.release();
        }
    }

    fn release(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        *b -= 1;
        if *b == 0 {
            self.settled.notify_all();
        }
    }

    /// The file's own job: copy pieces, wait for the helpers' pieces in progress, return the
    /// first error (`Interrupted` when the core gave up).
    pub(crate) fn run(&self) -> io::Result<()> {
        self.work(|| false);
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *b > 0 {
            b = self.settled.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        drop(b);
        if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        if self.copied_pieces() < self.pieces.len() as u64 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ColdCopy;
    use std::fs;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    fn files(len: usize) -> (tempfile::TempDir, Vec<u8>, OwnedFd, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        fs::write(dir.path().join("src"), &data).unwrap();
        let src = fs::File::open(dir.path().join("src")).unwrap().into();
        let dst = fs::File::create(dir.path().join("dst")).unwrap().into();
        (dir, data, src, dst)
    }

    fn pieces(len: u64, chunk: u64) -> Vec<Vec<(u64, u64)>> {
        (0..len.div_ceil(chunk))
            .map(|i| vec![(i * chunk, chunk.min(len - i * chunk))])
            .collect()
    }

    #[test]
    fn helpers_and_the_own_job_copy_every_piece_once() {
        let len = (5 << 20) + 123;
        let (dir, data, src, dst) = files(len);
        let job = Arc::new(ColdCopy::new(
            src,
            dst,
            pieces(len as u64, 1 << 20),
            crate::Progress::new(),
        ));
        // A helper that gives way at once takes nothing; two that help race the own job.
        job.work(|| true);
        assert_eq!(job.copied_pieces(), 0);
        let helpers: Vec<_> = (0..2)
            .map(|_| {
                let j = Arc::clone(&job);
                std::thread::spawn(move || j.work(|| false))
            })
            .collect();
        job.run().unwrap();
        assert_eq!(job.copied_pieces(), 6);
        for h in helpers {
            h.join().unwrap();
        }
        assert_eq!(fs::read(dir.path().join("dst")).unwrap(), data);
    }

    #[test]
    fn the_first_error_is_returned_and_an_abandoned_copy_stops() {
        let len = 3 << 20;
        let (dir, _, src, _) = files(len);
        // A destination open read-only: every write fails with EBADF.
        let ro: OwnedFd = fs::File::open(dir.path().join("src")).unwrap().into();
        let job = ColdCopy::new(src, ro, pieces(len as u64, 1 << 20), crate::Progress::new());
        let e = job.run().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        let (_dir, _, src, dst) = files(len);
        let job = ColdCopy::new(
            src,
            dst,
            pieces(len as u64, 1 << 20),
            crate::Progress::new(),
        );
        job.abandon();
        let e = job.run().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert_eq!(job.copied_pieces(), 0);
    }
}
