//! A core-local counting semaphore (no atomics, no locks: it lives on one core thread), used to cap
//! how many large files a core streams through io_uring at once, so buffer memory per core is
//! bounded by `ring_files_per_core × ring_depth × chunk_size` whatever the tree holds.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

/// A `!Send` semaphore for futures of one compio runtime.
pub(crate) struct LocalSemaphore {
    free: Cell<usize>,
    waiters: RefCell<VecDeque<Waker>>,
}

/// A held permit; dropping it frees the slot and wakes the next waiter.
pub(crate) struct Permit<'a>(&'a LocalSemaphore);

impl LocalSemaphore {
    pub fn new(n: usize) -> Self {
        Self {
            free: Cell::new(n.max(1)),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    pub async fn acquire(&self) -> Permit<'_> {
        std::future::poll_fn(|cx| {
            let n = self.free.get();
            if n > 0 {
                self.free.set(n - 1);
                Poll::Ready(Permit(self))
            } else {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.free.set(self.0.free.get() + 1);
        if let Some(w) = self.0.waiters.borrow_mut().pop_front() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_concurrency() {
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let sem = std::rc::Rc::new(LocalSemaphore::new(2));
            let active = std::rc::Rc::new(Cell::new(0usize));
            let peak = std::rc::Rc::new(Cell::new(0usize));
            let mut tasks = Vec::new();
            for _ in 0..10 {
                let (sem, active, peak) = (sem.clone(), active.clone(), peak.clone());
                tasks.push(compio::runtime::spawn(async move {
                    let _p = sem.acquire().await;
                    active.set(active.get() + 1);
                    peak.set(peak.get().max(active.get()));
                    // Yield a few times so the others get to run while we hold the permit.
                    for _ in 0..3 {
                        crate::core::yield_now().await;
                    }
                    active.set(active.get() - 1);
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            assert_eq!(peak.get(), 2);
            assert_eq!(active.get(), 0);
        });
    }
}
