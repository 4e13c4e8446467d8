//! `engine`: arsync's thread-per-core copy engine.
//!
//! It owns the core threads (one per core, each pinned and running its own compio runtime), the
//! per-core context (buffer pool, in-flight limit, counters), the task kinds, directory
//! completion (a directory's metadata is applied after its last child), the error policy (one bad
//! entry is reported and counted, never an early return), the [`Event`]s sent to an [`Observer`]
//! and the final [`Report`]. It never parses arguments, renders, prints or picks exit codes: that is
//! `bin`'s job.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use engine::{Config, Event, FileType, Observer, Root};
//!
//! /// Counts the files created and prints every error (path, operation, OS error).
//! #[derive(Default)]
//! struct Watch {
//!     files: AtomicU64,
//! }
//! impl Observer for Watch {
//!     fn event(&self, event: &Event<'_>) {
//!         match event {
//!             Event::Item { path, file_type: FileType::File, bytes, .. } => {
//!                 println!("copied {} ({bytes} bytes)", path.display());
//!                 self.files.fetch_add(1, Ordering::Relaxed);
//!             }
//!             Event::Error { path, op, error, .. } => eprintln!("{op} {}: {error}", path.display()),
//!             _ => {}
//!         }
//!     }
//!     // Ask for an event per item (costs a path join per entry; off by default).
//!     fn wants_items(&self) -> bool {
//!         true
//!     }
//! }
//!
//! let tmp = std::env::temp_dir().join(format!("engine-doc-{}", std::process::id()));
//! std::fs::create_dir_all(tmp.join("src/sub")).unwrap();
//! std::fs::write(tmp.join("src/a"), b"hello").unwrap();
//! std::fs::write(tmp.join("src/sub/b"), b"world").unwrap();
//!
//! // rsync -a SRC/ DST: the contents of src into dst (dst is made if missing).
//! let mut config = Config::archive();
//! config.create_dest_dir = Some(tmp.join("dst"));
//! config.roots.push(Root { src: tmp.join("src/"), dst: tmp.join("dst"), rel: "".into(), select: None });
//! let watch = Arc::new(Watch::default());
//! let report = engine::run(&config, watch.clone());
//! assert_eq!((report.files, report.bytes, report.errors), (2, 10, 0));
//! assert_eq!(watch.files.load(Ordering::Relaxed), 2);
//! assert_eq!(std::fs::read(tmp.join("dst/sub/b")).unwrap(), b"world");
//! std::fs::remove_dir_all(&tmp).unwrap();
//! ```

mod altdest;
pub mod backup;
mod core;
mod dirfds;
pub mod filter;
#[doc(hidden)]
pub mod hooks;
pub mod latency;
mod limit;
mod links;
mod name;
mod placement;
pub mod remote;
mod route;
pub mod select;
mod split;
mod sync;
mod task;
mod throttle;
mod workers;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use filter::Filters;
pub use fsops::FileType;

/// The place of an entry's kind in the per-kind counts of a [`Report`] (`created_by`,
/// `deleted_by`): regular files, directories, symlinks, devices, then FIFOs and sockets, the
/// order of rsync's `--stats` breakdown (`reg`, `dir`, `link`, `dev`, `special`).
pub fn kind_index(ft: FileType) -> usize {
    match ft {
        FileType::File => 0,
        FileType::Dir => 1,
        FileType::Symlink => 2,
        FileType::CharDev | FileType::BlockDev => 3,
        _ => 4,
    }
}
pub use fsops::meta::{Chmod, IdMap, name_or_id};
pub use fsops::sys::{
    BecomeStep, become_user, group_id, untrusted_symlink, user_id, user_primary_gid,
};
pub use select::Selection;
/// rsync 3.5's judgement of a symlink target (`--safe-links`, `--copy-unsafe-links`).
pub use task::unsafe_target as unsafe_symlink_target;

/// The core threads a run starts when `Config::threads` is 0: the CPUs this process may use
/// (`available_parallelism`, which reads the CPU mask and the cgroup quota files: read once).
pub fn default_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The process's umask (read by setting and restoring it: call it while the process has one
/// thread, as the command line does before a run).
pub fn process_umask() -> u32 {
    let m = fsops::sys::set_umask(0o022);
    fsops::sys::set_umask(m);
    m
}

/// `path` with each `NAME/..` taken away by its text alone: right for the part of a path that
/// does not exist yet (a directory this run makes is no symlink, so its `..` is its parent).
pub fn without_dot_dots(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub use fsops::Stat;
pub use route::{CLASSES as ROUTE_CLASSES, Routes, Via};
pub use scheduler::WorkerStats;

/// One transfer root: make `dst` a copy of `src` (a directory's contents go *into* `dst`).
#[derive(Clone, Debug)]
pub struct Root {
    /// The source path as given (a trailing `/` follows a symlink to a directory, as in rsync).
    pub src: PathBuf,
    /// The destination path of this entry.
    pub dst: PathBuf,
    /// The name this root has in item events (`-v`): e.g. `src` for `arsync src dst/`, empty for
    /// `arsync src/ dst/` (its children are then listed as `name`, the root itself as `./`).
    pub rel: PathBuf,
    /// `--files-from`/`-R`: only these paths below `src` (a directory) are transferred, made
    /// under `dst` with the directories on their way; `None`: all of `src`.
    pub select: Option<Arc<Selection>>,
}

/// What a reference tree (`--link-dest`, `--compare-dest`, `--copy-dest`) does for an entry
/// whose counterpart there is the same (rsync's rules: same data by the quick check, and the
/// same attributes, for "exact").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AltDest {
    /// An exact match is hard-linked into the destination (a file, symlink, device or special).
    Link,
    /// An exact match is left out of the destination (and an existing destination file equal to
    /// it is removed): the destination gets only what differs from the reference.
    Compare,
    /// A match is copied from the reference (a local copy instead of one from the source).
    Copy,
}

/// How to use reflinks (FICLONE) for file data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflink {
    /// Clone where source and destination share a file system that supports it, else copy
    /// (in-kernel `copy_file_range` on one file system, else the io_uring pipeline).
    Auto,
    /// Clone or fail the file.
    Always,
    /// Never share extents: neither FICLONE nor `copy_file_range` (which clones on XFS/btrfs).
    Never,
}

/// How a regular file's data moves when it is not cloned (see [`Reflink`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    /// Small files (up to [`Config::small_file_max`]) with inline `read`/`write` on the core;
    /// larger ones with `copy_file_range` where source and destination share a file system,
    /// else through the io_uring pipeline.
    Auto,
    /// Every file with `copy_file_range` in bounded steps (where the kernel refuses it, e.g.
    /// across file systems of different types, the file falls back to the io_uring pipeline and
    /// is counted there).
    CopyFileRange,
    /// Every file, small ones included, through the io_uring read/write pipeline.
    Uring,
}

/// When `--delete` removes extraneous destination entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delete {
    /// In each directory before any of its entries is copied (`--delete-before`): its source
    /// listing is read once more for it.
    Before,
    /// In each directory once all its children are done, before its metadata is applied
    /// (`--delete`, `--delete-during`).
    During,
    /// After the whole transfer (`--delete-after`): nothing is deleted while files are still being
    /// copied; what protects a destination entry is the per-directory merge files the copy has
    /// just put there.
    After,
    /// Found as with [`Delete::During`] (what protects a destination entry is its directory's
    /// merge files as they were before the copy), removed after the whole transfer as with
    /// [`Delete::After`] (`--delete-delay`).
    Delay,
}

/// How an existing destination file is judged up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickCheck {
    /// Same size and same mtime (to the nanosecond): skipped (rsync's default quick check).
    SizeAndTime,
    /// `--size-only`: same size is enough.
    SizeOnly,
    /// `-I/--ignore-times`: a regular file is always copied (unless `-c` finds the same data);
    /// symlinks and special files are still compared, as rsync does.
    Never,
}

/// `--append` (`Trust`) or `--append-verify` (`Verify`): how the part of a file already in the
/// destination is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    /// Taken as it is: only the bytes past its end are copied.
    Trust,
    /// Compared with the source first; rewritten from the first chunk that differs.
    Verify,
}

/// What to copy and how. Build it with [`Config::archive`] (= rsync `-a`) or field by field.
#[derive(Clone, Debug)]
pub struct Config {
    /// The transfer roots, in order.
    pub roots: Vec<Root>,
    /// A destination directory to create (one level, like rsync) before the roots are copied.
    pub create_dest_dir: Option<PathBuf>,
    /// `--mkpath` made `create_dest_dir` (empty, with the directories above it) just before the
    /// run: its entries need no look at what is there, as in a directory the run made, but it is
    /// itemized as a directory that existed (as rsync, whose `--mkpath` makes it before the
    /// transfer, itemizes it), and no "created directory" event is sent for it.
    pub dest_premade: bool,
    /// `-r`: descend into directories.
    pub recursive: bool,
    /// `-l`: copy symlinks as symlinks (otherwise they are skipped, with rsync's message).
    pub links: bool,
    /// `-p`: permissions.
    pub perms: bool,
    /// `-t`: modification times.
    pub times: bool,
    /// `--chmod`: permission modifiers applied to every source mode first.
    pub chmod: fsops::meta::Chmod,
    /// `--usermap`/`--chown`: source uids to destination uids.
    pub uid_map: fsops::meta::IdMap,
    /// `--groupmap`/`--chown`: source gids to destination gids.
    pub gid_map: fsops::meta::IdMap,
    /// `-O/--omit-dir-times`: `-t` leaves directories alone.
    pub omit_dir_times: bool,
    /// `-J/--omit-link-times`: `-t` leaves symlinks alone.
    pub omit_link_times: bool,
    /// `-U`: access times.
    pub atimes: bool,
    /// `-o`: owner (root only).
    pub owner: bool,
    /// `-g`: group.
    pub group: bool,
    /// `--devices`: character and block devices.
    pub devices: bool,
    /// `--specials`: FIFOs and sockets.
    pub specials: bool,
    /// `--super` (`Some(true)`) / `--no-super` (`Some(false)`): whether to do what only the
    /// super-user may (set owners, every group, make devices, every extended attribute
    /// namespace), reporting what is refused; `None`: as the process is root or not.
    pub super_user: Option<bool>,
    /// `--copy-devices`: a character or block device in the source is copied as a regular file
    /// holding the device's content (its size: the offset of its end; 0 for a device that cannot
    /// seek). As rsync, its modification time is the time of the copy (the seconds of now, the
    /// nanoseconds of the device's), so the next run copies it again: a device's content
    /// changes without its time changing.
    pub copy_devices: bool,
    /// `--write-devices`: a character or block device already at a file's destination name is
    /// written into (from its start, never truncated; holes written as zeros) instead of being
    /// replaced by a regular file; its mode, owner and times are set as a file's. Implies
    /// `inplace`.
    pub write_devices: bool,
    /// `--open-noatime`: open sources with `O_NOATIME`.
    pub open_noatime: bool,
    /// `--munge-links`: a source symlink whose target starts with rsync's munge prefix
    /// (`/rsyncd-munged/`, what an rsync daemon's `munge symlinks` puts before every target it
    /// receives) is read without it (copied, compared, checked by `--safe-links` and listed with
    /// the target it had before it was munged), as rsync 3.5's local copy does.
    pub munge_links: bool,
    /// `-H`: keep hard links (data copied once per inode, other names linked).
    pub hard_links: bool,
    /// `-X`: extended attributes.
    pub xattrs: bool,
    /// `-A`: POSIX ACLs (implies `perms`).
    pub acls: bool,
    /// `-S`: keep holes of sparse files.
    pub sparse: bool,
    /// `-x` count: 1 = do not descend into other file systems (the mount point directory is
    /// created empty), 2 = not even that.
    pub one_file_system: u8,
    /// `-L`: copy what symlinks point to.
    pub copy_links: bool,
    /// `--copy-unsafe-links`: copy what symlinks pointing outside the tree point to.
    pub copy_unsafe_links: bool,
    /// `--safe-links`: skip symlinks pointing outside the tree.
    pub safe_links: bool,
    /// `-K`: a symlink to a directory in the destination is used as that directory.
    pub keep_dirlinks: bool,
    /// `-ii`: item events for entries found up to date too (a [`Change`] with nothing set).
    pub itemize_unchanged: bool,
    /// rsync's `%C`: item events of regular files carry the checksum of their data
    /// ([`Event::Item`]'s `checksum`), which costs a read of each file written (or, with `-c`,
    /// compared) back from the page cache.
    pub item_checksums: bool,
    /// `-E/--executability`: without `-p`, a destination file's executability follows the
    /// source's (an `x` for each `r`, or none).
    pub executability: bool,
    /// The filter rules with rsync's `x` modifier, as a test of attribute names (set with
    /// [`Config::set_filters`]; none by default).
    pub xattr_filter: fsops::meta::XattrFilter,
    /// `-k/--copy-dirlinks`: a source symlink to a directory is copied as that directory (a
    /// symlink to anything else stays a symlink).
    pub copy_dirlinks: bool,
    /// `--reflink`.
    pub reflink: Reflink,
    /// `--copy-method`: the path for data that is not cloned.
    pub copy_method: CopyMethod,
    /// `--direct`: large files (above `small_file_max`) are read and written with `O_DIRECT`
    /// through the io_uring pipeline, bypassing the page cache (cold bulk moves). Where a file
    /// system refuses direct I/O the file is copied buffered (a warning says so once).
    pub direct: bool,
    /// Cap on each core's io_uring kernel worker threads (`IORING_REGISTER_IOWQ_MAX_WORKERS`,
    /// bounded and unbounded alike); 0 keeps the kernel's default.
    pub iowq_max_workers: u32,
    /// How existing destination files are judged up to date.
    pub quick_check: QuickCheck,
    /// `-c/--checksum`: a destination file of the same size is up to date only if its content
    /// hashes the same (XXH3-128) as the source's, whatever the mtimes say.
    pub checksum: bool,
    /// `--modify-window=N`: mtimes within N seconds (compared as whole seconds) count as equal.
    /// `None` (the default) compares to the nanosecond.
    pub modify_window: Option<u32>,
    /// `-u/--update`: leave destination entries that are newer than the source.
    pub update: bool,
    /// `--existing`: create nothing new, only update what the destination already has.
    pub existing: bool,
    /// `--ignore-existing`: leave every entry the destination already has (directories are
    /// still descended).
    pub ignore_existing: bool,
    /// `--min-size`/`--max-size`: regular files smaller / larger than this (bytes) are left
    /// alone, as rsync leaves them: not copied, their destination copies not updated, and not
    /// deleted as extraneous either.
    pub min_size: Option<u64>,
    /// See [`Config::min_size`].
    pub max_size: Option<u64>,
    /// `-b/--backup`, `--backup-dir`, `--suffix`: keep every destination non-directory that is
    /// replaced or deleted under a backup name (see [`backup`]).
    pub backup: Option<backup::Backup>,
    /// What a source argument that does not exist means (`--ignore-missing-args`,
    /// `--delete-missing-args`).
    pub missing_args: MissingArgs,
    /// `--remove-source-files`: once a non-directory is in sync in the destination (copied,
    /// linked, or found up to date), remove it from the source; a regular file whose size or
    /// mtime no longer matches its copy is kept and reported.
    pub remove_source_files: bool,
    /// Include/exclude/protect rules.
    pub filters: Filters,
    /// `--delete`/`--delete-after`: remove destination entries the source does not have.
    pub delete: Option<Delete>,
    /// `--max-delete=N`: delete at most N entries; the rest are reported and the run ends with
    /// exit code 25.
    pub max_delete: Option<u64>,
    /// `--force`: replace a non-empty directory by a non-directory even without `--delete`.
    pub force: bool,
    /// `-n/--dry-run`: decide and report everything, change nothing.
    pub dry_run: bool,
    /// `--link-dest`/`--compare-dest`/`--copy-dest=DIR` (up to 20, tried in order; a relative
    /// DIR is relative to the destination directory): reference trees for entries the
    /// destination lacks (what is done with a match: [`Config::alt_dest`]).
    pub alt_dest_dirs: Vec<PathBuf>,
    /// What a match in [`Config::alt_dest_dirs`] does.
    pub alt_dest: AltDest,
    /// `-m/--prune-empty-dirs`: a source directory that holds nothing but directories (at any
    /// depth) once the filter rules are applied is left out of the transfer, as if excluded (so
    /// `--delete` removes its destination counterpart, as rsync does).
    pub prune_empty_dirs: bool,
    /// `--ignore-errors`: delete in a destination directory even when its source directory could
    /// not be read (or was read only in part): its destination entries then count as extraneous.
    pub ignore_errors: bool,
    /// `--no-implied-dirs`: the directories on the way to a `--files-from`/`-R` path keep their
    /// destination attributes (made, they get the default permissions) instead of the source's.
    pub no_implied_dirs: bool,
    /// Time each operation into per-core latency histograms (reported in [`Report::latency`]).
    pub measure: bool,
    /// `--verify`: read every written file back and compare it with the source before it is
    /// published; a mismatch fails the file (exit 23).
    pub verify: bool,
    /// `--fsync`: every written file is flushed to its storage (`fsync`, through the core's
    /// ring, so the core goes on with other files meanwhile) before it is published.
    pub fsync: bool,
    /// `--inplace`: write into the destination file itself (no staging; an interrupted file is
    /// left partly written under its name, as the user asked).
    pub inplace: bool,
    /// `--partial`: stage each file under a fixed name (`.NAME.~arsync-partial`) that a failed or
    /// killed run leaves behind and the next run resumes from (after checking that the kept prefix
    /// equals the source's).
    pub partial: bool,
    /// `--partial-dir=DIR`: keep partial files as `DIR/NAME` in each destination directory
    /// instead (DIR is one name; implies `partial`).
    pub partial_dir: Option<std::ffi::CString>,
    /// `--delay-updates`: a written file stays in the partial directory (`partial_dir`,
    /// `.~tmp~` when unset; implies `partial`, overrides `inplace`) until the end of the run,
    /// when every such file is renamed into place; the further names of a hard-linked file wait
    /// with it. (The command line also excludes the partial directory from the transfer.)
    pub delay_updates: bool,
    /// `--bwlimit`: the most data the run writes per second, in bytes (`None`: no limit). With
    /// a limit every file's data moves in chunks read and written on the core (a clone, which
    /// moves no data, stays allowed), each charged to one clock for the run.
    pub bwlimit: Option<u64>,
    /// `--no-whole-file` with `--inplace`: an existing destination file is compared with the
    /// source chunk by chunk and only the chunks that differ are written (rsync's delta transfer
    /// into the file itself: a large image with a few changed blocks costs their writes only,
    /// not the whole file's). Without `inplace` a new file is written whole, as by rsync.
    pub changed_only: bool,
    /// `--append` / `--append-verify`: a destination file shorter than its source is extended
    /// in place (implies `inplace`); one at least as long is left alone (data and attributes,
    /// as rsync). `Verify` checks the kept part against the source first and rewrites it from
    /// where it differs; `Trust` takes it as it is.
    pub append: Option<Append>,
    /// `-T/--temp-dir=DIR`: where new files are staged (a relative DIR is relative to the
    /// destination directory, as rsync's). On the destination's mount a file is made there
    /// (unnamed, or under a temporary name with `temp_names`) and linked or renamed into place
    /// when complete. Elsewhere (rsync's use of it: a destination short of room for a second
    /// copy of a file) the file it replaces is removed (or with `-b` moved to its backup name)
    /// before the new one is written, so that the two never take room together; the new one is
    /// still staged unseen in its directory and published whole. `partial`, `inplace` and
    /// `delay_updates` stage files their own way and leave it unused, as rsync.
    pub temp_dir: Option<PathBuf>,
    /// `temp_dir` was reached through a symlink of another user and refused (rsync 3.5's walk
    /// of the operator's paths): every file to be staged there fails with `ELOOP`, as rsync's
    /// `mkstemp` there does, and nothing is written through it.
    pub temp_dir_refused: bool,
    /// `--debug=filter` (`-vv`): say which rule decided about each entry a rule matched
    /// ([`Notice::Filter`]).
    pub debug_filter: bool,
    /// `--temp-names`: stage new files under temporary names (then `rename`) instead of as
    /// unnamed `O_TMPFILE` files (then `linkat`), which is what file systems without `O_TMPFILE`
    /// get anyway.
    pub temp_names: bool,
    /// Core threads; 0 means one per available CPU.
    pub threads: usize,
    /// Pin each core thread to its CPU.
    pub pin: bool,
    /// The process exits right after this run (the command-line tool sets it): the core threads
    /// keep their threads, rings and buffers to the end and the kernel tears them down at exit,
    /// all at once (see `scheduler::run_threads_lingering`). Each run with it set leaves its
    /// threads behind: leave it off in a process that runs many runs.
    pub exit_after_run: bool,
    /// Tasks a core runs concurrently (bounds fds and buffers per core).
    pub inflight_per_core: usize,
    /// Files up to this size are copied with inline syscalls; larger ones through io_uring.
    pub small_file_max: u64,
    /// `--split-chunk`: a file copied with `copy_file_range` that is at least twice this size is
    /// cut into chunks of this size that several cores copy at once (0: never). A warm file is
    /// split only where the destination's file system writes one file's ranges at once (not
    /// ext4, XFS, btrfs, tmpfs, F2FS, bcachefs: [`fsops::sys::writes_one_file_at_a_time`])
    /// unless [`Config::split_forced`]; a cold file is cut into pieces for the cold-copy pool
    /// everywhere.
    pub split_chunk: u64,
    /// `--split-chunk` given: a warm file is split across the cores on every file system.
    pub split_forced: bool,
    /// `--route`: where each class of per-file system calls runs (inline on the core, on the
    /// ring, or on a metadata worker).
    pub routes: Routes,
    /// `--meta-workers`: metadata worker threads, started only when some class is routed to
    /// them (0: one per core thread).
    pub meta_workers: usize,
    /// Hands parts of the tree to another process (the MPI mode): asked before each directory
    /// is listed and before each file that needs its data copied. `None`: everything here.
    pub delegate: Option<Arc<dyn Delegate>>,
    /// Buffer size of the io_uring pipeline.
    pub chunk_size: usize,
    /// Chunks in flight per large file.
    pub ring_depth: usize,
    /// Large files a core streams at once (buffer memory per core is at most
    /// `ring_files_per_core × ring_depth × chunk_size`).
    pub ring_files_per_core: usize,
}

impl Config {
    /// Whether some option follows source symlinks (`-L`, `-k`, `--copy-unsafe-links`).
    pub fn follows_symlinks(&self) -> bool {
        self.copy_links || self.copy_dirlinks || self.copy_unsafe_links
    }

    /// Use `filters` as the run's rules: those for names (`filters`), and those with the `x`
    /// modifier as the test of extended attribute names (`xattr_filter`).
    pub fn set_filters(&mut self, filters: Filters) {
        self.xattr_filter = if filters.has_xattr_rules() {
            let f = filters.clone();
            fsops::meta::XattrFilter::new(move |n| f.xattr_excluded(n))
        } else {
            Default::default()
        };
        self.filters = filters;
    }

    /// The settings of rsync's `-a` (`-rlptgoD`), with no roots yet.
    pub fn archive() -> Self {
        Self {
            roots: Vec::new(),
            create_dest_dir: None,
            dest_premade: false,
            recursive: true,
            links: true,
            perms: true,
            times: true,
            omit_dir_times: false,
            omit_link_times: false,
            chmod: fsops::meta::Chmod::default(),
            uid_map: fsops::meta::IdMap::default(),
            gid_map: fsops::meta::IdMap::default(),
            atimes: false,
            owner: true,
            group: true,
            devices: true,
            specials: true,
            super_user: None,
            copy_devices: false,
            write_devices: false,
            open_noatime: false,
            munge_links: false,
            hard_links: false,
            xattrs: false,
            acls: false,
            sparse: false,
            one_file_system: 0,
            copy_links: false,
            copy_unsafe_links: false,
            safe_links: false,
            keep_dirlinks: false,
            copy_dirlinks: false,
            executability: false,
            xattr_filter: Default::default(),
            itemize_unchanged: false,
            item_checksums: false,
            reflink: Reflink::Auto,
            copy_method: CopyMethod::Auto,
            direct: false,
            checksum: false,
            modify_window: None,
            update: false,
            existing: false,
            ignore_existing: false,
            min_size: None,
            max_size: None,
            remove_source_files: false,
            missing_args: MissingArgs::Error,
            backup: None,
            filters: Filters::new(),
            delete: None,
            max_delete: None,
            force: false,
            dry_run: false,
            alt_dest_dirs: Vec::new(),
            alt_dest: AltDest::Link,
            prune_empty_dirs: false,
            ignore_errors: false,
            no_implied_dirs: false,
            verify: false,
            fsync: false,
            measure: false,
            inplace: false,
            partial: false,
            partial_dir: None,
            delay_updates: false,
            bwlimit: None,
            append: None,
            iowq_max_workers: 4,
            temp_names: false,
            temp_dir: None,
            temp_dir_refused: false,
            debug_filter: false,
            changed_only: false,
            quick_check: QuickCheck::SizeAndTime,
            threads: 0,
            pin: true,
            exit_after_run: false,
            inflight_per_core: 32,
            small_file_max: 256 * 1024,
            split_chunk: 64 << 20,
            split_forced: false,
            routes: Routes::default(),
            meta_workers: 0,
            delegate: None,
            chunk_size: 1024 * 1024,
            ring_depth: 4,
            ring_files_per_core: 2,
        }
    }

    /// Nothing preserved and nothing recursive: the state before any flag.
    pub fn none() -> Self {
        Self {
            recursive: false,
            links: false,
            perms: false,
            times: false,
            owner: false,
            group: false,
            devices: false,
            specials: false,
            ..Self::archive()
        }
    }
}

/// Takes parts of a run away from it, for a caller that spreads one tree over several processes
/// (arsync's MPI mode). Called from the core threads; keep it cheap (it is asked once per
/// directory and once per file whose data is about to be copied).
pub trait Delegate: Send + Sync + std::fmt::Debug {
    /// A source directory `rel` (relative to the transfer root's parent, as in item events) whose
    /// destination directory now exists, about to be listed. `true`: someone else copies its
    /// contents and applies its metadata; this run neither lists it nor touches it again.
    fn take_dir(&self, rel: &Path) -> bool;
    /// A regular file `rel` whose data is about to be copied (the quick check found it changed or
    /// missing), with its source stat. `true`: someone else copies it; this run counts it in
    /// [`Report::delegated`] and leaves its destination as it is.
    fn take_file(&self, rel: &Path, st: &Stat) -> bool;
}

/// How a failed entry counts toward the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Partial transfer (rsync exit 23).
    Partial,
    /// A source file vanished between scan and copy (rsync exit 24).
    Vanished,
    /// The destination could not be set up (rsync exit 11).
    FileIo,
}

/// What a source argument that does not exist means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingArgs {
    /// An error (rsync exit 23).
    #[default]
    Error,
    /// Nothing (`--ignore-missing-args`).
    Ignore,
    /// Delete the entry of that name in the destination (`--delete-missing-args`); a non-empty
    /// directory only with `--delete` or `--force`.
    Delete,
}

/// Why an entry was skipped on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A directory without `-r`.
    Directory,
    /// A symlink without `-l`, a device without `--devices`, a FIFO or socket without `--specials`.
    NonRegular,
    /// A symlink pointing outside the tree, with `--safe-links`.
    UnsafeSymlink,
    /// A directory on another file system, with `-xx`.
    OtherFileSystem,
    /// A regular file larger than `--max-size`.
    OverMaxSize,
    /// A regular file smaller than `--min-size`.
    UnderMinSize,
    /// A directory to delete that is not empty and may not be emptied (`--delete-missing-args`
    /// without `--delete`/`--force`), or that still holds backups (`-b`): rsync's "cannot delete
    /// non-empty directory", not an error.
    NonEmptyDirectory,
}

/// See [`Event::Notice`].
#[derive(Debug)]
pub enum Notice<'a> {
    /// `--copy-unsafe-links`: the referent of a symlink pointing out of the tree is copied
    /// (rsync's `--info=symsafe`).
    CopyingUnsafeSymlink {
        /// The link's target.
        target: &'a [u8],
    },
    /// `-b`: the destination entry was kept under `to` before it was replaced or deleted
    /// (rsync's `--info=backup`); `to` as rsync names it: the backup directory as given, then
    /// the relative path, or the name with its suffix beside it.
    BackedUp {
        /// The backup's name.
        to: &'a Path,
    },
    /// `--remove-source-files`: the source file was removed (rsync's `--info=remove`).
    SourceRemoved,
    /// [`Config::debug_filter`]: `rule` decided about the entry (rsync's `--debug=filter`):
    /// on the sending side whether it is sent (an exclude hides it, an include shows it), on
    /// the receiving side whether it may be deleted (an exclude protects it, an include risks
    /// it).
    Filter {
        /// The receiving side's decision (deletion), else the sending side's.
        receiving: bool,
        /// The entry is a directory.
        is_dir: bool,
        /// The rule that matched.
        rule: &'a filter::Rule,
    },
    /// `--backup-dir` (the `path`, as given) at the start of the run, and whether it is yet to
    /// be made (rsync's `--info=backup`).
    BackupDir {
        /// It does not exist yet.
        new: bool,
    },
}

/// What the engine tells its observer, from any core thread.
#[derive(Debug)]
pub enum Event<'a> {
    /// An entry failed; the run goes on.
    Error {
        /// The source path (or destination path for destination-side failures).
        path: &'a Path,
        /// The operation that failed (a syscall name or a short phrase).
        op: &'static str,
        /// The OS error.
        error: &'a io::Error,
        /// How it counts.
        class: ErrorClass,
    },
    /// An entry skipped on purpose (rsync prints these).
    Skipped {
        /// The name relative to the transfer root.
        path: &'a Path,
        /// Why.
        reason: SkipReason,
        /// The target of a symlink skipped as unsafe (rsync names it).
        target: Option<&'a [u8]>,
    },
    /// Something rsync mentions at one of its `--info` levels that is neither an item nor a
    /// failure.
    Notice {
        /// The name relative to the transfer root.
        path: &'a Path,
        /// What happened.
        notice: Notice<'a>,
    },
    /// Something the user should know once, that is not a failed entry (e.g. the destination
    /// does not support extended attributes).
    Warning {
        /// One line.
        message: &'a str,
    },
    /// An entry was created or updated (only sent when [`Observer::wants_items`]).
    Item {
        /// The name relative to the transfer root (directories end without `/`).
        path: &'a Path,
        /// Its type.
        file_type: FileType,
        /// Bytes of content written.
        bytes: u64,
        /// The source entry's attributes, when the engine has them (`--log-file-format`'s `%l`,
        /// `%M`, `%B`, `%U`, `%G`).
        stat: Option<&'a Stat>,
        /// What changed (rsync's `--itemize-changes` letters).
        change: &'a Change,
        /// A symlink's target, or for a hard link the path (relative to the transfer root) of
        /// the name it was linked to.
        link: Option<&'a [u8]>,
        /// With [`Config::item_checksums`], a regular file's full-file checksum as rsync's `%C`
        /// gives it (XXH3-128 of its content): of a file whose data was written (zero in a dry
        /// run, which writes none), or, with `-c`, of one whose content was compared; `None`
        /// where the run does not know it (rsync prints spaces there).
        checksum: Option<u128>,
        /// The transfer root it belongs to (an index into [`Config::roots`]).
        root: usize,
    },
    /// The destination directory to create ([`Config::create_dest_dir`]) was made by the run
    /// (or, with `dry_run`, would be): rsync's "created directory" notice. Sent once, before
    /// anything is copied into it, and only when the run made it: not when it existed already,
    /// nor when the root that was to make it failed first (an unreadable source directory).
    /// Sent whatever [`Observer::wants_items`] says.
    DestCreated {
        /// The directory as it was named.
        path: &'a Path,
    },
    /// A destination entry the source does not have was deleted (or, with `dry_run`, would be).
    /// Sent whatever [`Observer::wants_items`] says.
    Deleted {
        /// The name relative to the transfer root.
        path: &'a Path,
        /// Its type.
        file_type: FileType,
    },
}

/// How an item was brought up to date: the first letter of rsync's itemize string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum How {
    /// File content was written (`>`).
    Transfer,
    /// Created or changed locally: a directory, symlink, device or special (`c`).
    Local,
    /// Made a hard link to another name (`h`).
    HardLink,
    /// Only attributes changed (`.`).
    #[default]
    Attrs,
}

/// What differs between the source entry and what the destination had (rsync's itemize
/// letters `c s t p o g u a x`). `new` means the destination had nothing there (`+++++++++`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// How it was updated.
    pub how: How,
    /// The destination had no such entry.
    pub new: bool,
    /// Content differs by checksum (`-c`), or a symlink's target changed (`c`).
    pub checksum: bool,
    /// Size differs (`s`).
    pub size: bool,
    /// Modification time differs (`t`).
    pub time: bool,
    /// The entry was rewritten and keeps the time of the copy, times not being preserved for
    /// its kind (no `-t`): rsync's `T`.
    pub stamped: bool,
    /// Permissions differ (`p`).
    pub perms: bool,
    /// Owner differs (`o`).
    pub owner: bool,
    /// Group differs (`g`).
    pub group: bool,
    /// Access time differs, in whole seconds, with `-U` (`u`; not for directories and
    /// symlinks, as rsync).
    pub atime: bool,
    /// ACLs were set (`a`).
    pub acl: bool,
    /// Extended attributes were set (`x`).
    pub xattr: bool,
    /// Not an item letter: the mtime differs within `--modify-window` only and `-c` found the
    /// data the same, so it is set to the source's exactly and not itemized, as rsync sets the
    /// times of a file its checksum found up to date (`ATTRS_ACCURATE_TIME`).
    pub exact_time: bool,
}

impl Change {
    /// A new entry of this kind.
    pub fn new_entry(how: How) -> Self {
        Self {
            how,
            new: true,
            ..Self::default()
        }
    }

    /// Whether anything at all changed.
    pub fn any(&self) -> bool {
        self.new
            || self.how != How::Attrs
            || self.checksum
            || self.size
            || self.time
            || self.perms
            || self.owner
            || self.group
            || self.atime
            || self.acl
            || self.xattr
    }
}

/// Receives [`Event`]s. Called concurrently from every core thread: keep it cheap.
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, event: &Event<'_>);
    /// Whether to send [`Event::Item`] for every entry (costs a path join per entry).
    fn wants_items(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct NullObserver;

impl Observer for NullObserver {
    fn event(&self, _: &Event<'_>) {}
}

/// Counters of one core thread.
#[derive(Clone, Debug, Default)]
pub struct CoreReport {
    /// The scheduler's counters (pops, steals, parks).
    pub sched: WorkerStats,
    /// Tasks run.
    pub tasks: u64,
    /// Whether this core ran on io_uring (`false`: compio's epoll + thread-pool fallback).
    pub io_uring: bool,
    /// The io-wq worker caps of this core's ring, `[bounded, unbounded]` (`None`: the kernel
    /// cannot report them).
    pub iowq_workers: Option<[u32; 2]>,
    /// Files copied with inline `read`/`write` syscalls on the core.
    pub inline_files: u64,
    /// Files copied through the io_uring pipeline.
    pub ring_files: u64,
    /// Files cloned with FICLONE.
    pub cloned_files: u64,
    /// Files copied in the kernel with `copy_file_range`.
    pub kernel_copied_files: u64,
    /// Large files this core owned and copied with other cores' help (`--split-chunk`).
    pub split_files: u64,
    /// Chunks of split files this core copied (its own files' and other cores').
    pub split_chunks: u64,
    /// Directories whose open fds this core closed while only their subdirectories were left
    /// (open directories over the run's share of the open-file limit: a deep tree).
    pub parked_dirs: u64,
    /// Parked directories this core opened again (through a finished subdirectory's `..`) to
    /// apply their attributes.
    pub reopened_dirs: u64,
    /// Files copied with `copy_file_range` whose source was not in the page cache: the copy ran
    /// on a thread of the cold-copy pool, not on the core.
    pub offloaded_files: u64,
    /// Pool jobs of those copies (a large cold file is cut into `--split-chunk` pieces).
    pub offloaded_pieces: u64,
    /// The most cold files this core had on the pool at once (it takes another large file
    /// while the pool copies one).
    pub offloaded_peak: u64,
    /// Calls per routed class ([`ROUTE_CLASSES`]) and path (inline, ring, worker).
    pub routed: [[u64; 3]; 5],
    /// Names made as hard links to an already copied inode.
    pub hard_linked: u64,
    /// The CPU this core was pinned to (`None`: not pinned).
    pub cpu: Option<usize>,
}

/// Source entries a run looked at (what rsync's `--stats` calls "Number of files").
#[derive(Clone, Debug, Default)]
pub struct Considered {
    /// Regular files.
    pub files: u64,
    /// Directories (the transfer root included, unless it is only the base that `-R` or
    /// `--files-from` paths are relative to, which rsync's file list does not hold either).
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Devices, FIFOs and sockets.
    pub specials: u64,
    /// Of `specials`, the devices (rsync's `--stats` counts them apart: `dev`).
    pub devices: u64,
    /// Total size of the regular files.
    pub bytes: u64,
    /// Total length of the symlinks' targets (rsync counts them in its "Total file size").
    pub link_bytes: u64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Regular files copied.
    pub files: u64,
    /// Directories completed.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Devices, FIFOs and sockets created.
    pub specials: u64,
    /// Names created as hard links to an inode copied earlier in the run (`-H`).
    pub hard_links: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// The whole sizes of the regular files copied, whatever part of them was written
    /// (`--append`, a resumed partial file): rsync's "Total transferred file size".
    pub transferred_size: u64,
    /// Of `files`, those copied from a `--copy-dest`/`--link-dest`/`--compare-dest` reference
    /// on the destination's side, which rsync does not count as transferred (`cf`).
    pub from_reference: u64,
    /// Entries that failed (exit 23 class).
    pub errors: u64,
    /// Source entries that vanished (exit 24 class).
    pub vanished: u64,
    /// Destination set-up failures (exit 11 class).
    pub file_io_errors: u64,
    /// Entries skipped on purpose.
    pub skipped: u64,
    /// Destination entries found up to date and left untouched (the quick check).
    pub unchanged: u64,
    /// Extraneous destination entries deleted (`--delete`; with `dry_run`, that would be).
    pub deleted: u64,
    /// `deleted` by kind ([`kind_index`]: regular files, directories, symlinks, devices,
    /// FIFOs and sockets), as rsync's `--stats` breaks it down.
    pub deleted_by: [u64; 5],
    /// Deletions not done because `--max-delete` was reached (rsync exit 25).
    pub delete_skipped: u64,
    /// Entries that did not exist in the destination before (files, directories, links, ...).
    pub created: u64,
    /// `created` by kind ([`kind_index`]).
    pub created_by: [u64; 5],
    /// Files read back and found equal to the source (`--verify`).
    pub verified: u64,
    /// Files and directories handed to a [`Delegate`].
    pub delegated: u64,
    /// Source entries the run looked at (after filters), by type, and their file sizes.
    pub considered: Considered,
    /// A failure that stopped the whole run (runtime setup): its message.
    pub fatal: Option<String>,
    /// The run was stopped through [`Stop::request`] before it finished.
    pub interrupted: bool,
    /// The run stopped itself at a condition that ends rsync too (a bad rule in a
    /// per-directory merge file): rsync's exit code for it, and the message.
    pub halted: Option<(i32, String)>,
    /// Per-operation latencies, all cores merged (with [`Config::measure`]).
    pub latency: Option<latency::Latencies>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-core counters.
    pub cores: Vec<CoreReport>,
}

/// Ready the process for a run of `config`: raise the open-files soft limit to the hard one and
/// grow the descriptor table to what the run will use, returning the limit. [`run`] does it
/// itself; a program that starts threads of its own (a signal handler thread, a progress display)
/// should call it first, while it has one thread: growing the table of a multi-threaded process
/// waits for an RCU grace period (10–25 ms here) at each doubling, stalling every core that opens
/// a file at that moment.
pub fn prepare_process(config: &Config) -> u64 {
    let nofile = fsops::sys::raise_nofile_limit();
    let threads = if config.threads == 0 {
        default_threads()
    } else {
        config.threads
    } as u64;
    // Files in flight (about 4 descriptors each) plus the directories held open along the paths
    // being copied.
    let want = (threads * config.inflight_per_core as u64 * 4 + 512)
        .next_power_of_two()
        .min(nofile.saturating_sub(1))
        .min(1 << 16);
    let _ = fsops::sys::reserve_fd_table(want as u32);
    nofile
}

/// Copy according to `config`, telling `observer` about failures and (if it wants) every item.
///
/// The process umask is set to 0 for the duration of the run (the engine applies the caller's
/// umask itself where rsync would) and restored afterwards.
pub fn run(config: &Config, observer: Arc<dyn Observer>) -> Report {
    core::run(config, observer, &Stop::new(), &Progress::new())
}

/// [`run`], stoppable from another thread (e.g. a signal handler thread) through `stop`.
pub fn run_with_stop(config: &Config, observer: Arc<dyn Observer>, stop: &Stop) -> Report {
    core::run(config, observer, stop, &Progress::new())
}

/// [`run_with_stop`], publishing live counters to `progress` (read them from another thread with
/// [`Progress::snapshot`]).
pub fn run_with_progress(
    config: &Config,
    observer: Arc<dyn Observer>,
    stop: &Stop,
    progress: &Progress,
) -> Report {
    core::run(config, observer, stop, progress)
}

/// Live counters of a run, for a progress display. Each core writes only its own cache line
/// (plain stores after each file, no shared read-modify-write on the per-file path); readers add
/// the lines up. Directories still being listed are counted in one shared atomic, touched once
/// per directory.
#[derive(Clone, Default)]
pub struct Progress(Arc<ProgressInner>);

#[derive(Default)]
struct ProgressInner {
    cores: std::sync::OnceLock<Vec<crossbeam_utils::CachePadded<ProgressSlot>>>,
    scanning: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicBool,
    /// Bytes written so far of the large files still being copied (added a chunk at a time by
    /// whichever thread copies it; taken back when the file is counted whole on its core).
    moving: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>,
    /// Steps of work that may take long without copying anything: each entry deleted (during
    /// the walk or after it), each of `--delay-updates`' renames at the end.
    ticks: std::sync::atomic::AtomicU64,
}

/// One core's counters.
#[derive(Default)]
pub(crate) struct ProgressSlot {
    pub files: std::sync::atomic::AtomicU64,
    pub checked: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub seen_files: std::sync::atomic::AtomicU64,
    pub seen_bytes: std::sync::atomic::AtomicU64,
    /// Other work done: directories finished, entries deleted, files found unchanged.
    pub other: std::sync::atomic::AtomicU64,
}

/// What a run has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Regular files whose data was written so far (rsync's `xfr#`).
    pub files: u64,
    /// Regular files dealt with so far, whatever happened to them (copied, unchanged, linked,
    /// skipped, failed).
    pub checked: u64,
    /// Content bytes written: of the files done, and so far of the large files in progress.
    pub bytes: u64,
    /// Regular files found by the scan so far (a growing estimate of the total while `scanning`).
    pub seen_files: u64,
    /// Their total size.
    pub seen_bytes: u64,
    /// Some directory is still being listed: the totals are still growing.
    pub scanning: bool,
    /// Everything else done so far, in steps (directories finished, entries deleted, files
    /// found unchanged, the end of the run's renames): with the counts above, a number that grows while the run does
    /// anything at all (what `--timeout` watches).
    pub other: u64,
}

impl Progress {
    /// Counters for a run that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add up the cores' counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = ProgressSnapshot {
            scanning: self.0.scanning.load(Relaxed) > 0 || !self.0.started.load(Relaxed),
            ..ProgressSnapshot::default()
        };
        s.bytes = self.0.moving.load(Relaxed);
        s.other = self.0.ticks.load(Relaxed);
        if let Some(cores) = self.0.cores.get() {
            for c in cores {
                s.files += c.files.load(Relaxed);
                s.checked += c.checked.load(Relaxed);
                s.bytes += c.bytes.load(Relaxed);
                s.seen_files += c.seen_files.load(Relaxed);
                s.seen_bytes += c.seen_bytes.load(Relaxed);
                s.other += c.other.load(Relaxed);
            }
        }
        s
    }

    pub(crate) fn start(&self, cores: usize) {
        let _ = self.0.cores.set(
            (0..cores)
                .map(|_| crossbeam_utils::CachePadded::new(ProgressSlot::default()))
                .collect(),
        );
        self.0
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// One step of such work was done.
    pub(crate) fn tick(&self) {
        self.0
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `bytes` of a large file in progress were written.
    pub(crate) fn moved(&self, bytes: u64) {
        self.0
            .moving
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A file whose progress was shown a chunk at a time (`bytes` in all) is now counted whole.
    pub(crate) fn settled(&self, bytes: u64) {
        self.0
            .moving
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn slot(&self, core: usize) -> Option<&ProgressSlot> {
        self.0.cores.get().and_then(|c| c.get(core)).map(|c| &**c)
    }

    pub(crate) fn scan_started(&self) {
        self.0
            .scanning
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn scan_ended(&self) {
        self.0
            .scanning
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Stops a run from outside: every core drops what it is doing at its next wake-up (a file being
/// staged is discarded, never published half-written; `--partial` files are kept), pending
/// `--delete-after` deletions are skipped, and the report says `interrupted`.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Default)]
struct StopInner {
    requested: std::sync::atomic::AtomicBool,
    cancel: std::sync::Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl Stop {
    /// A handle not yet requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the run to stop (idempotent; callable from any thread).
    pub fn request(&self) {
        self.0
            .requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        hooks::stopping();
        if let Some(c) = self
            .0
            .cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            c();
        }
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn install(&self, cancel: Box<dyn Fn() + Send>) {
        let mut slot = self.0.cancel.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_requested() {
            cancel();
        }
        *slot = Some(cancel);
    }

    fn uninstall(&self) {
        *self.0.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Whether this process can set up an io_uring runtime (for `--version` and early diagnostics).
/// `Err` says why not; the engine then runs on compio's fallback driver (epoll and a thread
/// pool), slower but complete.
pub fn io_uring_status() -> Result<(), String> {
    match compio::runtime::RuntimeBuilder::new().build() {
        Ok(rt) if rt.driver_type().is_iouring() => Ok(()),
        Ok(_) => Err(
            "io_uring_setup is refused or the kernel lacks the needed opcodes; using epoll and a thread pool"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// The descriptor table's size, from `/proc/self/status` (`FDSize`).
    fn fd_table_size() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn prepare_process_grows_the_descriptor_table_once() {
        let mut cfg = crate::Config::archive();
        cfg.threads = 4;
        cfg.inflight_per_core = 32;
        let nofile = crate::prepare_process(&cfg);
        // 4 threads × 32 files × 4 descriptors + 512, to a power of two (unless the limit is lower).
        let want = (4 * 32 * 4 + 512u64).next_power_of_two().min(nofile - 1);
        assert!(
            fd_table_size() >= want,
            "FDSize {} < {want}",
            fd_table_size()
        );
    }
}
