//! Streaming directory reads with `getdents64`: one batch of entries per call, names as bytes, the
//! `d_type` the file system reports (`Unknown` when it does not, so the caller stats).
//!
//! io_uring has no getdents opcode, so this is an inline syscall; the engine reads one batch per
//! task so that a directory with a million entries never holds more than one batch in memory.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The type of a directory entry, from `d_type` or from a stat's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// The file system did not say (`DT_UNKNOWN`): stat the entry.
    Unknown,
}

impl FileType {
    /// From a `d_type` byte.
    pub fn from_dtype(d: u8) -> Self {
        match d {
            libc::DT_REG => Self::File,
            libc::DT_DIR => Self::Dir,
            libc::DT_LNK => Self::Symlink,
            libc::DT_CHR => Self::CharDev,
            libc::DT_BLK => Self::BlockDev,
            libc::DT_FIFO => Self::Fifo,
            libc::DT_SOCK => Self::Socket,
            _ => Self::Unknown,
        }
    }

    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Self::File,
            libc::S_IFDIR => Self::Dir,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFCHR => Self::CharDev,
            libc::S_IFBLK => Self::BlockDev,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            _ => Self::Unknown,
        }
    }

    /// A character or block device.
    pub fn is_device(self) -> bool {
        matches!(self, Self::CharDev | Self::BlockDev)
    }
}

/// One entry of a batch, borrowed from the reader's buffer.
#[derive(Debug)]
pub struct DirEntry<'a> {
    /// The name, without `.`/`..` (those are filtered out).
    pub name: &'a CStr,
    /// The inode number.
    pub ino: u64,
    /// The type reported by the file system.
    pub file_type: FileType,
}

/// A reusable `getdents64` buffer.
pub struct DirReader {
    buf: Vec<u8>,
    len: usize,
}

impl Default for DirReader {
    fn default() -> Self {
        Self::new(32 * 1024)
    }
}

impl DirReader {
    /// A reader whose batches hold up to `bytes` of dirents (about `bytes / 32` entries).
    pub fn new(bytes: usize) -> Self {
        Self {
            buf: vec![0u8; bytes.max(1024)],
            len: 0,
        }
    }

    /// Read the next batch from `dir` at its current offset. Returns `false` at the end of the
    /// directory. The entries are then available from [`DirReader::entries`].
    pub fn fill(&mut self, dir: BorrowedFd<'_>) -> io::Result<bool> {
        loop {
            // SAFETY: the buffer is valid for `buf.len()` writable bytes during the call.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    dir.as_raw_fd(),
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.len = 0;
                return Err(e);
            }
            self.len = n as usize;
            return Ok(n > 0);
        }
    }

    /// Whether the last batch left room for the longest entry there can be: a local file system
    /// fills a batch as far as the directory goes, so after such a batch one more read most
    /// likely returns the end (a network file system may stop short anywhere, and the next
    /// read then simply returns more).
    pub fn short(&self) -> bool {
        // struct linux_dirent64: 19 bytes and a name of up to 255 bytes and its NUL, 8-aligned.
        const LONGEST: usize = (19 + 256 + 7) & !7;
        self.buf.len() - self.len >= LONGEST
    }

    /// The entries of the last batch, `.` and `..` skipped.
    pub fn entries(&self) -> impl Iterator<Item = DirEntry<'_>> {
        let buf = &self.buf[..self.len];
        let mut off = 0usize;
        std::iter::from_fn(move || {
            loop {
                if off + 19 > buf.len() {
                    return None;
                }
                // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
                let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().ok()?);
                let reclen = u16::from_ne_bytes(buf[off + 16..off + 18].try_into().ok()?) as usize;
                let dtype = buf[off + 18];
                let name_area = &buf[off + 19..off + reclen];
                off += reclen;
                let name = CStr::from_bytes_until_nul(name_area).ok()?;
                let b = name.to_bytes();
                if b == b"." || b == b".." {
                    continue;
                }
                return Some(DirEntry {
                    name,
                    ino,
                    file_type: FileType::from_dtype(dtype),
                });
            }
        })
    }
}
