//! `fsops`: one function per kernel action, for the arsync engine.
//!
//! This crate owns the system calls and nothing above them: fd-relative opens, stats, creates,
//! links, renames and metadata calls (`sys`), streaming `getdents64` (`dir`), file data movement
//! through io_uring with owned buffers or inline syscalls (`copy`), the per-core buffer pool type
//! (`bufpool`), extended attributes and ACLs (`xattr`), and the metadata model with the order in
//! which it is applied (`meta`).
//!
//! It never owns traversal order, threads, pinning, tasks, progress, CLI types, printing or exit
//! codes. Every function returns `io::Result` with the OS error intact, so the engine can report
//! the path and errno of a failed entry and go on.
//!
//! Names are bytes (`&CStr`): non-UTF-8 names, newlines and 255-byte names pass through untouched.
//! Destination-side calls take a directory fd and a single path component and never follow a
//! symlink that already sits in the destination (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).

pub mod bufpool;
pub mod copy;
pub mod dir;
pub mod meta;
pub mod sys;
pub mod xattr;

pub use bufpool::BufPool;
pub use dir::{DirEntry, DirReader, FileType};
pub use meta::{MetaPolicy, Stat};
