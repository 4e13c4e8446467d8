//! The per-core buffer pool: fixed-size byte buffers taken for an io_uring read or write and
//! handed back when the op returns them, so the steady state allocates nothing per file.
//!
//! A pool belongs to one core (it is `!Sync`, interior mutability through `RefCell`); a miss
//! allocates, and at most `max_cached` buffers are kept, so memory is bounded by the in-flight
//! limit, not by the tree.

use std::cell::RefCell;

/// A pool of `Vec<u8>` buffers with a fixed capacity.
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    buf_size: usize,
    max_cached: usize,
    spare: usize,
}

impl BufPool {
    /// A pool of buffers of `buf_size` bytes, keeping at most `max_cached` free ones.
    pub fn new(buf_size: usize, max_cached: usize) -> Self {
        Self::new_aligned(buf_size, max_cached, 0)
    }

    /// A pool whose buffers hold `buf_size` bytes plus `align` spare ones, so that `buf_size`
    /// bytes starting at an `align`-aligned address fit in each (for `O_DIRECT`).
    pub fn new_aligned(buf_size: usize, max_cached: usize, align: usize) -> Self {
        Self {
            free: RefCell::new(Vec::with_capacity(max_cached)),
            buf_size,
            max_cached,
            spare: align,
        }
    }

    /// The capacity of every buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Take an empty buffer (length 0, capacity at least `buf_size` plus the alignment spare).
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_size + self.spare))
    }

    /// Leave the free buffers allocated for good (the process is about to exit and the kernel
    /// frees them with the rest of its memory, without unmapping each one first).
    pub fn leak(&self) {
        for buf in self.free.borrow_mut().drain(..) {
            std::mem::forget(buf);
        }
    }

    /// Give a buffer back; it is cleared, and dropped if the pool is full or it has the wrong size.
    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_cached && buf.capacity() >= self.buf_size + self.spare {
            free.push(buf);
        }
    }

    /// Number of free buffers held.
    pub fn cached(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let p = BufPool::new(4096, 2);
        let a = p.take();
        let b = p.take();
        let c = p.take();
        assert_eq!(a.capacity(), 4096);
        let pa = a.as_ptr();
        p.give(a);
        p.give(b);
        p.give(c);
        assert_eq!(p.cached(), 2);
        let b2 = p.take();
        assert!(b2.is_empty());
        assert_ne!(b2.as_ptr(), pa, "LIFO: the last given back comes first");
        p.give(Vec::with_capacity(10));
        assert_eq!(p.cached(), 1, "a buffer of the wrong size is not kept");
        p.give(b2);
        assert_eq!(p.cached(), 2);
    }
}
