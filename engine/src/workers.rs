//! Metadata workers: a small pool of plain, unpinned threads that run blocking system calls for
//! the cores when the routing table sends an op class there (`--route CLASS=worker`). A core
//! hands a closure over, goes on with its other tasks, and is woken when the result is in.
//!
//! The threads are started by the run's main thread before the core threads pin themselves, so
//! they may run on any CPU (a thread spawned by a pinned core would inherit its one-CPU mask and
//! compete with it). They exist only when some op class is routed to them.
//!
//! The same pool type, started on first need by a core and unpinned by its threads, runs the
//! copies that would wait for the disk (`copy_file_range` of a source not in the page cache), so
//! a core keeps its other files going meanwhile: the counterpart, for a call io_uring has no
//! opcode for, of sending a cold open or read to the ring. There a cold file's own job is a
//! *primary* job (counted while it waits and while it runs); the helper jobs it may queue for
//! its other pieces take a thread only while it is the pool's one primary ([`Waiting::alone`]).
//! The counts are touched once per cold file, never per small file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it closes the queue and joins the threads.
pub(crate) struct Workers {
    tx: Option<crossbeam_channel::Sender<Job>>,
    /// Jobs submitted with [`Workers::submit_primary`]: waiting for a thread, and running.
    primaries: Arc<[AtomicUsize; 2]>,
    threads: Vec<JoinHandle<()>>,
}

/// Seen from a helper job: what the primary jobs are doing (`Workers::waiting`).
#[derive(Clone)]
pub(crate) struct Waiting(Arc<[AtomicUsize; 2]>);

/// A job's way to queue more jobs on its own pool (`Workers::spawner`). It holds a sending end:
/// kept only inside a job, never beyond the pool's life (the pool's threads end when the last
/// sending end is gone).
pub(crate) struct Spawner {
    tx: crossbeam_channel::Sender<Job>,
    waiting: Waiting,
}

impl Spawner {
    /// See [`Waiting::alone`].
    pub(crate) fn alone(&self) -> bool {
        self.waiting.alone()
    }

    pub(crate) fn waiting(&self) -> Waiting {
        self.waiting.clone()
    }

    /// Queue `f` (run here if the pool is gone).
    pub(crate) fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        send_or_run(Some(&self.tx), Box::new(f));
    }
}

impl Waiting {
    /// No primary job waits for a thread and at most one runs (the helper's own): the pool
    /// would otherwise idle, so a helper may take the thread.
    pub(crate) fn alone(&self) -> bool {
        self.0[0].load(Ordering::Acquire) == 0 && self.0[1].load(Ordering::Acquire) <= 1
    }
}

/// Where a result waits for its core.
struct Slot<T> {
    state: Mutex<(Option<T>, Option<Waker>)>,
}

impl Workers {
    /// Start `n` threads (at least one) named `arsync-{kind}-{i}`; with `cpus`, each first
    /// allows itself on those CPUs (a pool started from a pinned core would otherwise inherit
    /// that core's single CPU).
    pub(crate) fn start(
        n: usize,
        kind: &str,
        cpus: Option<fsops::sys::CpuMask>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("arsync-{kind}-{i}"))
                    .spawn(move || {
                        if let Some(m) = cpus {
                            let _ = m.apply();
                        }
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Some(tx),
            primaries: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
            threads,
        })
    }

    /// The pool's threads.
    pub(crate) fn size(&self) -> usize {
        self.threads.len()
    }

    /// A handle a helper job asks whether it may take the thread ([`Waiting::alone`]).
    pub(crate) fn waiting(&self) -> Waiting {
        Waiting(Arc::clone(&self.primaries))
    }

    /// A [`Spawner`] for a job to queue helpers with (`None` once the pool is closing).
    pub(crate) fn spawner(&self) -> Option<Spawner> {
        Some(Spawner {
            tx: self.tx.clone()?,
            waiting: self.waiting(),
        })
    }

    fn send(&self, job: Job) {
        send_or_run(self.tx.as_ref(), job);
    }

    /// [`Workers::submit`] counted as a primary job, waiting and then running: helpers give way
    /// to it.
    pub(crate) fn submit_primary<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = T> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let counts = Arc::clone(&self.primaries);
        counts[0].fetch_add(1, Ordering::AcqRel);
        self.submit(move || {
            counts[1].fetch_add(1, Ordering::AcqRel);
            counts[0].fetch_sub(1, Ordering::AcqRel);
            let r = f();
            counts[1].fetch_sub(1, Ordering::AcqRel);
            r
        })
    }

    /// Run `f` on a worker and wait for its result without blocking the core. The closure owns
    /// everything it touches (file descriptors included), so a caller that is dropped before
    /// the result arrives (a stop request) leaves nothing dangling.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.submit(f).await
    }

    /// [`Workers::call`], queued now (not at the first poll): the future only waits for the
    /// result.
    pub(crate) fn submit<T, F>(&self, f: F) -> impl std::future::Future<Output = T> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new((None, None)),
        });
        let theirs = Arc::clone(&slot);
        self.send(Box::new(move || {
            let value = f();
            let waker = {
                let mut s = theirs.state.lock().unwrap_or_else(|p| p.into_inner());
                s.0 = Some(value);
                s.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }));
        std::future::poll_fn(move |cx| {
            let mut s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            match s.0.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

/// Queue `job`, or run it on the calling thread when the pool is closing or gone.
fn send_or_run(tx: Option<&crossbeam_channel::Sender<Job>>, job: Job) {
    let unsent = match tx {
        Some(tx) => tx
            .send(job)
            .err()
            .map(|crossbeam_channel::SendError(job)| job),
        None => Some(job),
    };
    if let Some(job) = unsent {
        job();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
