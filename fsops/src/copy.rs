//! File data movement: inline `read`/`write` for small files (they complete in memory on a warm
//! cache and the ring would only add a worker-thread hand-off per op on ext4), and an io_uring
//! pipeline with several owned buffers in flight for large files.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::driver::op::{ReadAt, WriteAt};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::bufpool::BufPool;
use crate::sys;

/// Copy `size` bytes (the size `fstat` gave) of a small file with inline syscalls through
/// `buf`. An empty file costs no read at all, and no read is spent confirming the end of a file
/// whose size was read in full. A source that ends early is an error (`UnexpectedEof`: the file
/// shrank while it was copied), never a silently short copy. Returns the bytes copied. With
/// `sparse` (`-S`), only the blocks with data are written ([`write_data`]) and the file is
/// given its size when blocks of zeros at its end were left unwritten, so it has its size in
/// every case (as it has without `-S`).
pub fn copy_inline(
    src: &OwnedFd,
    dst: &OwnedFd,
    size: u64,
    buf: &mut Vec<u8>,
    sparse: bool,
) -> io::Result<u64> {
    if size == 0 {
        return Ok(0);
    }
    let buf = work_area(buf, size);
    copy_inline_from(src, dst, size, 0, buf, sparse)
}

/// The part of `buf` a copy of `size` bytes reads through: the whole file and the one byte
/// past its end that detects growth, or the buffer's capacity (at least a page) when the file
/// is larger. Only that part is zeroed, the first time it is needed: a core's buffer is sized
/// for the largest small file, and zeroing all of it up front would fault in pages that the
/// files of most trees never reach.
fn work_area(buf: &mut Vec<u8>, size: u64) -> &mut [u8] {
    let cap = buf.capacity().max(4096);
    let need = size.saturating_add(1).min(cap as u64) as usize;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    &mut buf[..need]
}

/// What [`copy_inline_cached`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Inline {
    /// Copied: this many bytes.
    Copied(u64),
    /// The file's data is not in the page cache: nothing was read or written (copy it with
    /// [`copy_small_async`], which does not hold the core while the disk works).
    NotCached,
}

/// [`copy_inline`], except that the first read does not wait for the disk: a file whose data
/// is not in the page cache is reported as [`Inline::NotCached`] before anything is written.
pub fn copy_inline_cached(
    src: &OwnedFd,
    dst: &OwnedFd,
    size: u64,
    buf: &mut Vec<u8>,
    sparse: bool,
) -> io::Result<Inline> {
    if size == 0 {
        return Ok(Inline::Copied(0));
    }
    let buf = work_area(buf, size);
    let cap = buf.len();
    let want = size.min(cap as u64) as usize;
    let ask = if size < cap as u64 { want + 1 } else { want };
    let n = match sys::read_nowait_at(src.as_fd(), &mut buf[..ask], 0) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Inline::NotCached),
        Err(e) => return Err(e),
    };
    let end = write_read(dst, &buf[..n], want, 0, sparse)?;
    if n as u64 == size {
        sized(dst, size, end)?;
        return Ok(Inline::Copied(size));
    }
    // Partly cached (or a large inline file): the rest with ordinary reads.
    let rest = copy_inline_from(src, dst, size, n as u64, buf, sparse)?;
    Ok(Inline::Copied(rest))
}

/// After a copy that may have left blocks of zeros at its end unwritten (`-S`: the data written
/// ends at `end`), give the file its `size`.
fn sized(dst: &OwnedFd, size: u64, end: u64) -> io::Result<()> {
    if end < size {
        sys::ftruncate(dst.as_fd(), size)?;
    }
    Ok(())
}

/// The loop of [`copy_inline`] from offset `total` on (positional reads and writes). The last
/// read asks for one byte more than is left (same syscall): getting it means the file grew
/// while it was being copied.
fn copy_inline_from(
    src: &OwnedFd,
    dst: &OwnedFd,
    size: u64,
    mut total: u64,
    buf: &mut [u8],
    sparse: bool,
) -> io::Result<u64> {
    let cap = buf.len();
    let mut end = total;
    while total < size {
        let left = size - total;
        let want = left.min(cap as u64) as usize;
        let ask = if left < cap as u64 { want + 1 } else { want };
        let n = sys::read_at(src.as_fd(), &mut buf[..ask], total)?;
        let written = write_read(dst, &buf[..n], want, total, sparse)?;
        if written > total {
            end = written;
        }
        total += n as u64;
    }
    sized(dst, size, end)?;
    Ok(total)
}

/// Write what one read returned, after checking it against the `want` bytes that were left of
/// the measured size: nothing means the file shrank, more means it grew (never a torn copy).
fn write_read(
    dst: &OwnedFd,
    got: &[u8],
    want: usize,
    offset: u64,
    sparse: bool,
) -> io::Result<u64> {
    if got.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was being copied",
        ));
    }
    if got.len() > want {
        return Err(io::Error::other("file grew while it was being copied"));
    }
    write_data(dst, got, offset, sparse)
}

/// Write `data` at `offset`: all of it, or with `sparse` (`-S`) only its [`HOLE_BLOCK`]s
/// (counted from offset 0) that hold a non-zero byte, each run of them with one call, into a
/// destination that reads as zeros there already and holds no blocks (a new or truncated file,
/// not preallocated): the blocks of zeros stay holes, the holes [`punch_zero_blocks`] would
/// make after a full write, and the caller sets the size at the end. Returns the end of the
/// last byte written (`offset` if none was).
pub fn write_data(dst: &OwnedFd, data: &[u8], offset: u64, sparse: bool) -> io::Result<u64> {
    if !sparse {
        sys::write_all_at(dst.as_fd(), data, offset)?;
        return Ok(offset + data.len() as u64);
    }
    let mut end = offset;
    let mut data_from = None;
    let mut i = 0;
    while i < data.len() {
        let at = offset + i as u64;
        let block_end =
            ((at / HOLE_BLOCK + 1) * HOLE_BLOCK - offset).min(data.len() as u64) as usize;
        if !all_zero(&data[i..block_end]) {
            data_from.get_or_insert(i);
        } else if let Some(from) = data_from.take() {
            sys::write_all_at(dst.as_fd(), &data[from..i], offset + from as u64)?;
            end = offset + i as u64;
        }
        i = block_end;
    }
    if let Some(from) = data_from {
        sys::write_all_at(dst.as_fd(), &data[from..], offset + from as u64)?;
        end = offset + data.len() as u64;
    }
    Ok(end)
}

/// Copy a small file whose data is not in the page cache: one io_uring read of the whole file
/// (plus a byte, to catch growth) into a buffer of its own, so the core goes on with other files
/// while the disk works and many such reads are queued at once; then an inline write (the
/// destination is in the page cache). `src` is read from offset 0.
///
/// The ring op holds `src` by a count of its own (no `dup`: the caller's handle is shared), so a
/// read still in flight when the future is dropped keeps the file open until it completes.
pub async fn copy_small_async(
    src: &Rc<OwnedFd>,
    dst: &OwnedFd,
    size: u64,
    sparse: bool,
) -> io::Result<u64> {
    let mut data: Vec<u8> = Vec::new();
    loop {
        let want = size as usize + 1 - data.len();
        let op = ReadAt::new(Rc::clone(src), data.len() as u64, Vec::with_capacity(want));
        let res = compio::runtime::submit(op).await.into_inner();
        // SAFETY: the kernel wrote `n` bytes at the start of the buffer; map_advanced sets its
        // length to that, as compio's own `read_at` does.
        let BufResult(r, buf) = unsafe { compio::driver::op::BufResultExt::map_advanced(res) };
        let n = r?;
        if n == 0 {
            break;
        }
        if data.is_empty() {
            data = buf;
        } else {
            data.extend_from_slice(&buf[..n]);
        }
        if data.len() as u64 > size {
            break;
        }
    }
    match (data.len() as u64).cmp(&size) {
        std::cmp::Ordering::Less => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was being copied",
        )),
        std::cmp::Ordering::Greater => Err(io::Error::other("file grew while it was being copied")),
        std::cmp::Ordering::Equal => {
            let end = write_data(dst, &data, 0, sparse)?;
            sized(dst, size, end)?;
            Ok(size)
        }
    }
}

/// The outcome of a ring copy.
pub struct RingCopy {
    /// Bytes written.
    pub bytes: u64,
    /// The destination fd, handed back for the metadata steps.
    pub dst: OwnedFd,
}

/// Copy `size` bytes from `src` to `dst` through the current compio runtime's ring, with up to
/// `depth` chunks of `pool.buf_size()` in flight (each chunk is read, then written, at its own
/// offset). A source that ends before `size` is an error (`UnexpectedEof`): the file shrank while
/// it was copied. Must run inside a compio runtime.
pub async fn copy_ring(
    src: impl Into<Rc<OwnedFd>>,
    dst: OwnedFd,
    size: u64,
    pool: &BufPool,
    depth: usize,
) -> io::Result<RingCopy> {
    copy_ring_ranges(src, dst, &[(0, size)], pool, depth).await
}

/// [`copy_ring`] over the given `(offset, length)` ranges only (the data extents of a sparse
/// file: what lies between them is left unwritten, i.e. a hole).
pub async fn copy_ring_ranges(
    src: impl Into<Rc<OwnedFd>>,
    dst: OwnedFd,
    ranges: &[(u64, u64)],
    pool: &BufPool,
    depth: usize,
) -> io::Result<RingCopy> {
    copy_ring_ranges_with(src, dst, ranges, pool, (depth, false), &|_| {}).await
}

/// The alignment `O_DIRECT` transfers use here: buffer addresses, file offsets and lengths are
/// multiples of it (4 KiB covers every common logical block size).
pub const DIRECT_ALIGN: usize = 4096;

/// [`copy_ring_ranges`]; with `direct`, `src` and `dst` are open with `O_DIRECT` and the pool's
/// buffers have [`DIRECT_ALIGN`] spare bytes ([`BufPool::new_aligned`]): every read and write is
/// aligned, the last chunk of a file is written rounded up to the alignment with zeros, and the
/// caller sets the exact size afterwards (`ftruncate`).
///
/// `moved` is told the size of each chunk once it is written (for a progress display).
pub async fn copy_ring_ranges_with(
    src: impl Into<Rc<OwnedFd>>,
    dst: OwnedFd,
    ranges: &[(u64, u64)],
    pool: &BufPool,
    (depth, direct): (usize, bool),
    moved: &dyn Fn(u64),
) -> io::Result<RingCopy> {
    let src = src.into();
    let dst = Rc::new(dst);
    let chunk = pool.buf_size() as u64;
    let mut pieces = ranges.iter().flat_map(|&(off, len)| {
        (0..len.div_ceil(chunk)).map(move |i| {
            let o = off + i * chunk;
            (o, chunk.min(off + len - o) as usize)
        })
    });
    let mut inflight = FuturesUnordered::new();
    let mut result: io::Result<u64> = Ok(0);
    loop {
        while inflight.len() < depth.max(1) && result.is_ok() {
            let Some((off, len)) = pieces.next() else {
                break;
            };
            let buf = pool.take();
            inflight.push(copy_chunk(
                Rc::clone(&src),
                Rc::clone(&dst),
                off,
                len,
                buf,
                direct,
            ));
        }
        match inflight.next().await {
            None => break,
            Some((r, buf)) => {
                pool.give(buf);
                match (r, &mut result) {
                    (Ok(n), Ok(total)) => {
                        moved(n);
                        *total += n
                    }
                    (Err(e), Ok(_)) => result = Err(e),
                    (_, Err(_)) => {}
                }
            }
        }
    }
    drop(inflight);
    let bytes = result?;
    let dst = Rc::try_unwrap(dst).map_err(|_| io::Error::other("destination fd still shared"))?;
    Ok(RingCopy { bytes, dst })
}

/// Copy `size` bytes inside the kernel with `copy_file_range` (same file system: no user-space
/// copy; a clone where the file system does that), in bounded steps, yielding to the runtime
/// between steps so one big file does not hold the core. A source that ends early is an error.
pub async fn copy_kernel(
    src: &OwnedFd,
    dst: &OwnedFd,
    size: u64,
    step: usize,
    moved: &dyn Fn(u64),
) -> io::Result<u64> {
    copy_kernel_range(src, dst, (0, size), step, moved).await
}

/// [`copy_kernel`] of the `len` bytes at `start` (one data extent of a sparse file), to the same
/// offset. Returns the end offset reached. `moved` is told each step's size once it is copied.
pub async fn copy_kernel_range(
    src: &OwnedFd,
    dst: &OwnedFd,
    (start, len): (u64, u64),
    step: usize,
    moved: &dyn Fn(u64),
) -> io::Result<u64> {
    let size = start + len;
    let mut off = start;
    while off < size {
        let next = copy_step(src, dst, off, size, step)?;
        moved(next - off);
        off = next;
        if off < size {
            yield_now().await;
        }
    }
    Ok(off)
}

/// One `copy_file_range` of at most `step` bytes at `off` (same offset on both sides), not
/// past `end`; returns the offset reached. A source that ends early is an error: the file
/// shrank while it was being copied.
pub fn copy_step(src: &OwnedFd, dst: &OwnedFd, off: u64, end: u64, step: usize) -> io::Result<u64> {
    let want = (end - off).min(step as u64) as usize;
    let n = sys::copy_file_range(src.as_fd(), off, dst.as_fd(), off, want)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was being copied",
        ));
    }
    Ok(off + n as u64)
}

/// [`copy_kernel_range`] for a thread that may block, in steps of 16 MiB; between steps it
/// gives up (`ErrorKind::Interrupted`) once `wanted` is false (its caller went away).
pub fn copy_kernel_range_blocking(
    src: &OwnedFd,
    dst: &OwnedFd,
    (start, len): (u64, u64),
    wanted: &std::sync::atomic::AtomicBool,
    moved: &dyn Fn(u64),
) -> io::Result<u64> {
    let size = start + len;
    let mut off = start;
    while off < size {
        if !wanted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let next = copy_step(src, dst, off, size, 16 << 20)?;
        moved(next - off);
        off = next;
    }
    Ok(off)
}

/// Let the other tasks of this runtime run once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

async fn copy_chunk(
    src: Rc<OwnedFd>,
    dst: Rc<OwnedFd>,
    off: u64,
    len: usize,
    mut buf: Vec<u8>,
    direct: bool,
) -> (io::Result<u64>, Vec<u8>) {
    // With O_DIRECT the data starts at the first aligned address of the buffer (`pad` bytes in);
    // reads ask for the chunk rounded up to the alignment (only the end of the file is short).
    buf.clear();
    let ask = if direct {
        len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
    } else {
        len
    };
    // Reserve first: the padding depends on where the allocation is.
    buf.reserve(if direct { DIRECT_ALIGN + ask } else { ask });
    let pad = if direct {
        (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN
    } else {
        0
    };
    buf.resize(pad, 0);
    // Read until the chunk is full (short reads are legal) or the file ends. Each read targets the
    // window right after the bytes already read, so nothing stale is ever written.
    while buf.len() - pad < len {
        let filled = buf.len() - pad;
        if direct && !filled.is_multiple_of(DIRECT_ALIGN) {
            // A short O_DIRECT read that is not aligned is the end of the file.
            break;
        }
        let op = ReadAt::new(Rc::clone(&src), off + filled as u64, Window(buf, pad + ask));
        let BufResult(r, op) = compio::runtime::submit(op).await.into_inner();
        buf = op.0;
        match r {
            Ok(0) => break,
            // SAFETY: the kernel initialised `n` bytes right after the ones already there.
            Ok(n) => unsafe { buf.set_len(pad + filled + n) },
            Err(e) => return (Err(e), buf),
        }
    }
    if buf.len() - pad < len {
        return (
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being copied",
            )),
            buf,
        );
    }
    // Bytes beyond the chunk (a file that grew) are not ours to write; the caller's check after
    // the copy reports the growth.
    buf.truncate(pad + len);
    let filled = len;
    let end = if direct {
        buf.resize(pad + ask, 0);
        pad + ask
    } else {
        pad + len
    };
    // Write it all at its offset.
    let mut written = pad;
    while written < end {
        let op = WriteAt::new(
            Rc::clone(&dst),
            off + (written - pad) as u64,
            buf.slice(written..end),
        );
        let BufResult(r, slice) = compio::runtime::submit(op).await.into_inner();
        buf = slice.into_inner();
        match r {
            Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), buf),
            Ok(n) => written += n,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(filled as u64), buf)
}

/// A read target: the spare capacity of a `Vec<u8>` after its initialised bytes, up to a total
/// length of `.1`. The length is only changed by the caller, from the op's result.
struct Window(Vec<u8>, usize);

impl compio::buf::IoBufMut for Window {
    fn as_uninit(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let limit = self.1.saturating_sub(self.0.len());
        let spare = self.0.spare_capacity_mut();
        let n = limit.min(spare.len());
        &mut spare[..n]
    }
}

impl IoBuf for Window {
    fn as_init(&self) -> &[u8] {
        &self.0
    }
}

impl compio::buf::SetLen for Window {
    unsafe fn set_len(&mut self, _len: usize) {
        // The caller sets the Vec's length itself from the op result (see `copy_chunk`).
    }
}

/// Read from `fd` at `off` into `buf` (cleared first) until it holds `len` bytes or the file
/// ends, through the current compio runtime's ring. Returns the buffer with what was read.
pub async fn read_at_full(
    fd: Rc<OwnedFd>,
    off: u64,
    len: usize,
    mut buf: Vec<u8>,
) -> (io::Result<usize>, Vec<u8>) {
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let filled = buf.len();
        let op = ReadAt::new(Rc::clone(&fd), off + filled as u64, Window(buf, len));
        let BufResult(r, op) = compio::runtime::submit(op).await.into_inner();
        buf = op.0;
        match r {
            Ok(0) => break,
            // SAFETY: the kernel initialised `n` bytes right after the `filled` ones already there.
            Ok(n) => unsafe { buf.set_len(filled + n) },
            Err(e) => return (Err(e), buf),
        }
    }
    let n = buf.len();
    (Ok(n), buf)
}

/// The smallest step [`punch_zero_blocks`] reads back in (a smaller buffer is grown to it).
pub const PUNCH_STEP_MIN: usize = 64 * 1024;

/// The block size [`punch_zero_blocks`] makes holes of (ext4's and XFS's default; on a file
/// system of larger blocks a punched range inside a block is only zeroed again).
pub const HOLE_BLOCK: u64 = 4096;

/// `-S` as rsync's receiver gives it: each block of the first `size` bytes of `fd` (aligned to
/// [`HOLE_BLOCK`], the last one partial) that holds only zeros becomes a hole, whether or not
/// the source had one there; rsync skips writing runs of zeros and sets the size at the end,
/// which leaves the same holes. The data extents (`SEEK_DATA`: existing holes are skipped) are
/// read back from the page cache where the copy just put them, in steps of `buf`'s capacity
/// (at least [`PUNCH_STEP_MIN`], at most [`SPARSE_STEP`]; a core passes the buffer it keeps for small files, so a
/// read-back allocates nothing and its steps stay in the CPU's cache while they are scanned).
/// Only as much of `buf` as a step needs is initialised, once. Returns the bytes punched; a
/// file system that cannot punch holes (`EOPNOTSUPP`) keeps its zeros.
pub fn punch_zero_blocks(
    fd: std::os::fd::BorrowedFd<'_>,
    size: u64,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let step = sparse_step(buf, size) as u64;
    // (Each read at most a step: what the buffer holds past it, from an earlier use, is not
    // read into, so every step starts on a block.)
    let buf = &mut buf[..size.min(step) as usize];
    let mut punched = 0;
    // The zero blocks met and not yet punched: (start, end).
    let mut run: Option<(u64, u64)> = None;
    let flush = |run: &mut Option<(u64, u64)>, punched: &mut u64| -> io::Result<bool> {
        if let Some((start, end)) = run.take() {
            match sys::punch_hole(fd, start, end - start) {
                Ok(()) => *punched += end - start,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    };
    // (A file of one step is read whole: a hole in it reads as zeros and is punched again, which
    // changes nothing, where asking for its extents would cost two `lseek`s.)
    let extents = if size <= step {
        vec![(0, size)]
    } else {
        sys::data_extents(fd, size)?
    };
    for (start, len) in extents {
        // Whole blocks: an extent starts on a block boundary on the file systems that punch.
        let mut off = start - start % HOLE_BLOCK;
        let end = (start + len).min(size);
        while off < end {
            let want = (end - off).min(buf.len() as u64) as usize;
            let got = read_fill(fd, &mut buf[..want], off)?;
            if got == 0 {
                break;
            }
            for (i, block) in buf[..got].chunks(HOLE_BLOCK as usize).enumerate() {
                let at = off + i as u64 * HOLE_BLOCK;
                let zero = all_zero(block);
                if let (true, Some((_, end))) = (zero, &mut run)
                    && *end == at
                {
                    // (The last block, partial, is punched to its block's end: past the end
                    // of the file, which KEEP_SIZE leaves where it is, so its block is freed.)
                    *end = at + HOLE_BLOCK;
                    continue;
                }
                if !flush(&mut run, &mut punched)? {
                    return Ok(punched);
                }
                if zero {
                    run = Some((at, at + HOLE_BLOCK));
                }
            }
            off += got as u64;
        }
    }
    flush(&mut run, &mut punched)?;
    Ok(punched)
}

/// Read at `offset` until `buf` is full or the file ends; returns the bytes read.
fn read_fill(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match sys::read_at(fd, &mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The step, in whole [`HOLE_BLOCK`]s, that [`punch_zero_blocks`] and [`copy_sparse_range`]
/// read `len` bytes in through `buf`: its capacity (grown to [`PUNCH_STEP_MIN`] if smaller), at
/// most [`SPARSE_STEP`]. The first `min(len, step)` bytes of `buf` are initialised, once (a small
/// file zeroes no more of the buffer than it reads).
fn sparse_step(buf: &mut Vec<u8>, len: u64) -> usize {
    if buf.capacity() < PUNCH_STEP_MIN {
        buf.reserve(PUNCH_STEP_MIN - buf.len());
    }
    let step = buf.capacity().min(SPARSE_STEP) / HOLE_BLOCK as usize * HOLE_BLOCK as usize;
    let need = len.min(step as u64) as usize;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    step
}

/// `-S` in one pass, as `cp --sparse=always` copies: the `len` bytes of `src` at `start` are
/// read through `buf` and only the [`HOLE_BLOCK`]s (counted from offset 0) that hold a non-zero
/// byte are written, at the same offsets, so the all-zero ones stay holes: the holes
/// [`punch_zero_blocks`] makes after a copy, without writing the zeros and reading the copy back.
/// The destination's range must read as zeros already and hold no blocks (a new or truncated
/// file, not preallocated); the caller sets the size at the end. Reads in steps of `buf`'s
/// capacity, at least [`PUNCH_STEP_MIN`] and at most [`SPARSE_STEP`] (only as much of it as a
/// step needs is initialised, once), yielding to the core's other tasks every
/// [`YIELD_EVERY`] bytes; `moved` is told each step's bytes.
/// Returns the end offset; a source that ends early is an error (the file shrank).
pub async fn copy_sparse_range(
    src: &OwnedFd,
    dst: &OwnedFd,
    (start, len): (u64, u64),
    buf: &mut Vec<u8>,
    moved: &dyn Fn(u64),
) -> io::Result<u64> {
    let step = sparse_step(buf, len);
    let end = start + len;
    let mut off = start;
    let mut since_yield = 0;
    while off < end {
        let want = (end - off).min(step as u64) as usize;
        let got = read_fill(src.as_fd(), &mut buf[..want], off)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being copied",
            ));
        }
        write_data(dst, &buf[..got], off, true)?;
        moved(got as u64);
        off += got as u64;
        since_yield += got;
        if off < end && since_yield >= YIELD_EVERY {
            since_yield = 0;
            yield_now().await;
        }
    }
    Ok(off)
}

/// The largest step of [`copy_sparse_range`]: what is read is written from a buffer still in
/// the CPU's cache (a warm 512 MiB file of random data, `-aS`, 9 alternating runs: 1 MiB steps
/// 0.153 s and bimodal, 256 KiB 0.130, 128 KiB 0.134; `cp -a --sparse=always` 0.137).
pub const SPARSE_STEP: usize = 256 << 10;

/// Bytes [`copy_sparse_range`] moves between two yields to the core's other tasks (as
/// [`copy_kernel`]'s steps: a yield costs a pass of the core's loop, a ring entry among them).
pub const YIELD_EVERY: usize = 16 << 20;

/// Whether `b` holds only zeros (64 bytes at a time, OR-folded: a loop the compiler vectorizes).
fn all_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}
