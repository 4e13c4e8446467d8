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
        // Wake every waiter: the ones that do not get the permit register again. Waking only the
        // first one lost wake-ups: a future polled twice while waiting is queued twice, and the
        // stale second entry "used up" the wake-up meant for the next waiter (a hang with
        // `--copy-method=uring`). Waiters are at most the core's tasks in flight.
        let waiters = std::mem::take(&mut *self.0.waiters.borrow_mut());
        for w in waiters {
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

    /// Regression: a waiter polled twice while waiting was queued twice; the release after its
    /// own then woke that stale entry instead of the next waiter, which was never woken.
    #[test]
    fn a_waiter_polled_twice_does_not_swallow_the_next_wake_up() {
        use std::future::Future;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Wake};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let sem = LocalSemaphore::new(1);
        let (wa, wb) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (waker_a, waker_b) = (Waker::from(wa.clone()), Waker::from(wb.clone()));
        let held = std::pin::pin!(sem.acquire());
        let Poll::Ready(p) = held.poll(&mut Context::from_waker(&waker_a)) else {
            panic!("first acquire must succeed");
        };
        let mut a = std::pin::pin!(sem.acquire());
        let mut b = std::pin::pin!(sem.acquire());
        assert!(
            a.as_mut()
                .poll(&mut Context::from_waker(&waker_a))
                .is_pending()
        );
        assert!(
            a.as_mut()
                .poll(&mut Context::from_waker(&waker_a))
                .is_pending()
        );
        assert!(
            b.as_mut()
                .poll(&mut Context::from_waker(&waker_b))
                .is_pending()
        );
        drop(p);
        let Poll::Ready(pa) = a.as_mut().poll(&mut Context::from_waker(&waker_a)) else {
            panic!("a was woken and the permit is free");
        };
        drop(pa);
        assert!(
            wb.0.load(Ordering::SeqCst) > 0,
            "b was never woken: a lost wake-up"
        );
        assert!(
            b.as_mut()
                .poll(&mut Context::from_waker(&waker_b))
                .is_ready()
        );
    }
}
