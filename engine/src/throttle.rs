//! `--bwlimit`: one rate for the data the whole run writes, whichever core writes it.
//!
//! A virtual clock (rsync's approach, without its per-process state): each chunk written moves
//! the time at which the run may write again by `bytes / rate`; a core that gets ahead of it
//! waits (an async timer, so its other files wait with it while the ring keeps their reads in
//! flight). The clock never runs behind real time, so a pause (a scan, unchanged files) earns no
//! burst afterwards. One shared atomic, touched once per chunk and only when a limit is set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The run's bandwidth limit.
pub(crate) struct Throttle {
    /// Bytes per second.
    rate: u64,
    start: Instant,
    /// When the run may write again, in nanoseconds since `start`.
    due: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            start: Instant::now(),
            due: AtomicU64::new(0),
        }
    }

    /// The size of the chunks a throttled copy writes: about a tenth of a second's worth, from
    /// 4 KiB to 1 MiB (small enough for a steady rate, large enough to keep the calls few).
    pub(crate) fn chunk(&self) -> usize {
        (self.rate / 10).clamp(4096, 1 << 20) as usize
    }

    /// Account for `bytes` just written; how long the writer must wait before writing more.
    pub(crate) fn charge(&self, bytes: u64) -> Duration {
        let cost = (u128::from(bytes) * 1_000_000_000 / u128::from(self.rate)) as u64;
        let now = self.start.elapsed().as_nanos() as u64;
        let mut due = self.due.load(Ordering::Relaxed);
        loop {
            let next = due.max(now).saturating_add(cost);
            match self
                .due
                .compare_exchange_weak(due, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(next.saturating_sub(now + cost)),
                Err(seen) => due = seen,
            }
        }
    }

    /// [`charge`](Self::charge) `bytes` just written, then wait as long as it says (an async
    /// timer: the core's other files go on meanwhile).
    pub(crate) async fn pace(&self, bytes: u64) {
        let wait = self.charge(bytes);
        if !wait.is_zero() {
            compio::runtime::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[test]
    fn the_clock_advances_by_what_is_written_and_earns_no_credit() {
        let t = Throttle::new(1_000_000);
        // The first megabyte goes at once; the next waits for the first's second.
        assert_eq!(t.charge(1_000_000), Duration::ZERO);
        let w = t.charge(500_000);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // Two writers' bytes add up on one clock.
        let w2 = t.charge(500_000);
        assert!(w2 > w + Duration::from_millis(400), "{w:?} then {w2:?}");
        assert_eq!(Throttle::new(10).chunk(), 4096);
        assert_eq!(Throttle::new(100 << 20).chunk(), 1 << 20);
        assert_eq!(Throttle::new(1_000_000).chunk(), 100_000);
    }
}
