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
//! opcode for, of sending a cold open or read to the ring.

use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it closes the queue and joins the threads.
pub(crate) struct Workers {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
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
            threads,
        })
    }

    /// Run `f` on a worker and wait for its result without blocking the core. The closure owns
    /// everything it touches (file descriptors included), so a caller that is dropped before
    /// the result arrives (a stop request) leaves nothing dangling.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let slot = Arc::new(Slot {
            state: Mutex::new((None, None)),
        });
        let theirs = Arc::clone(&slot);
        let job: Job = Box::new(move || {
            let value = f();
            let waker = {
                let mut s = theirs.state.lock().unwrap_or_else(|p| p.into_inner());
                s.0 = Some(value);
                s.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        match &self.tx {
            Some(tx) => {
                if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
                    job();
                }
            }
            None => job(),
        }
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
        .await
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
