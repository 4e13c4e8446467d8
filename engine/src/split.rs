//! One large file copied by several cores at once. The core that owns the file (it staged the
//! destination and will apply the metadata and publish it) cuts the data into chunks of
//! `--split-chunk` bytes and offers helper tasks to the other cores through the scheduler's
//! injector; every core that takes one, the owner included, claims chunks from a shared cursor
//! and copies each with `copy_file_range` at its own offset. The owner waits until every claimed
//! chunk is finished, then goes on as for any file (re-check of the source, metadata, publish).
//!
//! Shared per split file (never per small file): the cursor, the count of chunks being copied,
//! the first error and the owner's waker.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};

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
}

impl SplitCopy {
    /// A split copy of `size` bytes from `src` to `dst` (both duplicated: helpers may outlive
    /// the owner's handles by a moment).
    pub(crate) fn new(src: &OwnedFd, dst: &OwnedFd, size: u64, chunk: u64) -> io::Result<Self> {
        Ok(Self {
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
            off = fsops::copy::copy_step(&self.src, &self.dst, off, end, 16 << 20)?;
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
