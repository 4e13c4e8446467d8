//! The core threads: one per CPU, each pinned (unless `--no-pin`), each with its own compio
//! runtime and [`Core`] context, running the core loop over the scheduler's worker.
//!
//! The loop keeps up to `inflight_per_core` tasks running as local futures. When it holds none and
//! the scheduler has nothing to give, it parks on its [`Doorbell`], which the scheduler rings through
//! the [`scheduler::Unpark`] hook: a cross-thread wake that also wakes a runtime blocked in
//! `io_uring_enter`, coalesced to one pending wake per core (compio 0.19 spins past 64 queued
//! cross-thread wakes).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use scheduler::{Idle, Pop, Scheduler, Unpark, Worker};

use crate::task::{self, Task};
use crate::{Config, CoreReport, Observer, Report};

/// A per-core wake-up flag plus the waker of the future parked on it.
#[derive(Default)]
pub(crate) struct Doorbell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.rung.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.rung.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

struct Doorbells(Arc<Vec<Doorbell>>);

impl Unpark for Doorbells {
    fn unpark(&self, index: usize) {
        self.0[index].ring();
    }
}

/// Counters one core keeps without atomics; summed at the end.
#[derive(Default)]
pub(crate) struct Counters {
    pub files: Cell<u64>,
    pub dirs: Cell<u64>,
    pub symlinks: Cell<u64>,
    pub specials: Cell<u64>,
    pub bytes: Cell<u64>,
    pub errors: Cell<u64>,
    pub vanished: Cell<u64>,
    pub file_io_errors: Cell<u64>,
    pub skipped: Cell<u64>,
    pub unchanged: Cell<u64>,
    pub tasks: Cell<u64>,
    pub inline_files: Cell<u64>,
    pub ring_files: Cell<u64>,
    pub cloned_files: Cell<u64>,
    pub kernel_copied_files: Cell<u64>,
    pub split_files: Cell<u64>,
    pub split_chunks: Cell<u64>,
    /// Directories whose fds this core parked, and reopened (`dirfds`).
    pub parked_dirs: Cell<u64>,
    pub reopened_dirs: Cell<u64>,
    pub offloaded_files: Cell<u64>,
    pub offloaded_pieces: Cell<u64>,
    /// Cold files of this core on the pool now, and the most at once.
    pub offloaded_now: Cell<u64>,
    pub offloaded_peak: Cell<u64>,
    /// Calls per routed class and path (`route`).
    pub routed: [[Cell<u64>; 3]; 5],
    pub hard_links: Cell<u64>,
    /// Deletions and new entries by kind ([`crate::kind_index`]); their sums are the totals.
    pub deleted_by: [Cell<u64>; 5],
    pub created_by: [Cell<u64>; 5],
    pub delete_skipped: Cell<u64>,
    pub verified: Cell<u64>,
    pub delegated: Cell<u64>,
    pub checked: Cell<u64>,
    /// Source entries looked at, by kind ([`crate::kind_index`]).
    pub seen: [Cell<u64>; 5],
    pub seen_bytes: Cell<u64>,
    pub seen_link_bytes: Cell<u64>,
    pub transferred_size: Cell<u64>,
    pub from_reference: Cell<u64>,
}

/// What `config` preserves, for a process whose umask was `umask`.
pub(crate) fn meta_policy(config: &Config, umask: u32) -> fsops::MetaPolicy {
    fsops::MetaPolicy {
        perms: config.perms || config.acls,
        times: config.times,
        omit_dir_times: config.omit_dir_times,
        omit_link_times: config.omit_link_times,
        atimes: config.atimes,
        owner: config.owner,
        group: config.group,
        umask,
        euid: fsops::sys::geteuid(),
        root: config.super_user.unwrap_or(fsops::sys::geteuid() == 0),
        groups: fsops::sys::groups(),
        egid: fsops::sys::getegid(),
        xattrs: config.xattrs,
        acls: config.acls,
        chmod: config.chmod,
        uid_map: config.uid_map,
        gid_map: config.gid_map,
        executability: config.executability,
        xattr_filter: config.xattr_filter,
    }
}

/// The sum of per-kind counters.
fn total(cells: &[Cell<u64>]) -> u64 {
    cells.iter().map(Cell::get).sum()
}

/// Add per-kind counters into a report's.
fn add_kinds(into: &mut [u64; 5], cells: &[Cell<u64>; 5]) {
    for (r, c) in into.iter_mut().zip(cells) {
        *r += c.get();
    }
}

pub(crate) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// What every core shares, read-only during the run.
pub(crate) struct RunShared {
    pub config: Config,
    /// For each root, the other roots whose destinations meet its own (the same directory, or
    /// one inside the other), in ascending order: see [`crate::task::root_overlaps`].
    pub overlaps: Vec<Vec<usize>>,
    pub policy: fsops::MetaPolicy,
    pub observer: Arc<dyn Observer>,
    pub wants_items: bool,
    pub pid: u32,
    pub links: crate::links::LinkMap<Arc<crate::task::LeaderDir>>,
    /// `--bwlimit`: the run's rate (`None`: no limit).
    pub throttle: Option<crate::throttle::Throttle>,
    /// Set once the "destination does not support xattrs/ACLs" warning was given (touched only
    /// on that error path).
    pub xattr_warned: AtomicBool,
    /// Set once the "`--direct` refused" warning was given.
    pub direct_warned: AtomicBool,
    /// Deletions so far, counted only under `--max-delete` (deletion path only).
    pub deletes: AtomicU64,
    /// The run created the destination directory (`Config::create_dest_dir`) itself.
    pub created_dest: AtomicBool,
    /// Live counters for a progress display.
    pub progress: crate::Progress,
    /// Stands in for destination directories that a dry run does not create.
    pub placeholder: Arc<OwnedFd>,
    /// The metadata workers, when some op class is routed to them.
    pub workers: Option<crate::workers::Workers>,
    /// The threads that run cold `copy_file_range` copies, started on first need (`None` inside:
    /// they could not be started, and the copies stay on the cores).
    pub copy_pool: std::sync::OnceLock<Option<crate::workers::Workers>>,
    /// The CPUs the run's main thread may use (the copy pool's threads run on all of them).
    pub cpus: Option<fsops::sys::CpuMask>,
    /// Core threads, for sizing the copy pool.
    pub threads: usize,
    /// The tops of the new subtrees made under temporary names (one entry per such subtree,
    /// not per file): any still unpublished when the run ends (it was stopped) is renamed into
    /// place then, with the complete files it holds.
    pub staged: std::sync::Mutex<Vec<Arc<StagedDir>>>,
    /// Directory nodes holding their fds open, and the share of the open-file limit they may
    /// hold before nodes left with only subdirectories park theirs (`dirfds`).
    pub open_dirs: crate::dirfds::OpenDirs,
    /// `-T/--temp-dir`: the directory files are staged in.
    pub temp_dir: Option<TempDir>,
    /// A condition that ends the whole run with rsync's exit code for it (the first one found):
    /// its code and message ([`RunShared::halt`]).
    pub halted: std::sync::Mutex<Option<(i32, String)>>,
    /// Cancels the phase running now (set by [`run`] for each phase), for [`RunShared::halt`].
    pub canceller: std::sync::Mutex<Option<scheduler::Canceller<crate::task::Task>>>,
}

/// `-T/--temp-dir`: the directory, open, and where it is.
pub(crate) struct TempDir {
    pub fd: OwnedFd,
    pub dev: u64,
    /// Its mount (`None`: the kernel cannot say; the device number decides alone).
    pub mount: Option<u64>,
}

impl TempDir {
    /// Open `path`: a directory, or an error saying what it is not.
    fn open(path: &std::path::Path) -> Result<TempDir, String> {
        use std::os::fd::AsFd;
        let fd = fsops::sys::open_dir_path(path)
            .map_err(|e| format!("The temp-dir does not exist: {} ({e})", path.display()))?;
        let dev = fsops::sys::fstat(fd.as_fd())
            .map_err(|e| format!("fstat {}: {e}", path.display()))?
            .dev;
        let mount = fsops::sys::mount_id(fd.as_fd()).ok();
        Ok(TempDir { fd, dev, mount })
    }

    /// Whether a file made here can be linked or renamed into the destination directory `dir`
    /// (on device `dev`): the same mount.
    pub fn beside(&self, dir: std::os::fd::BorrowedFd<'_>, dev: u64) -> bool {
        dev == self.dev
            && match self.mount {
                Some(m) => fsops::sys::mount_id(dir).is_ok_and(|d| d == m),
                None => true,
            }
    }
}

/// The top of a new destination subtree, made in its parent under a temporary name so that its
/// files can be created under their final names without ever being visible half-written.
pub(crate) struct StagedDir {
    parent: Arc<OwnedFd>,
    tmp: std::ffi::CString,
    name: std::ffi::CString,
    /// Its destination path as errors show it.
    pub(crate) shown: std::path::PathBuf,
    done: AtomicBool,
}

impl StagedDir {
    /// The temporary name it was made under in its parent (until [`StagedDir::publish`]).
    pub(crate) fn tmp(&self) -> &std::ffi::CStr {
        &self.tmp
    }

    /// Whether it has been (or is being) renamed to its own name.
    pub(crate) fn published(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Rename it to its own name (once; never over an entry that appeared meanwhile).
    pub(crate) fn publish(&self) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let d = self.parent.as_fd();
        match fsops::sys::rename_at(d, &self.tmp, d, &self.name, libc::RENAME_NOREPLACE) {
            // A file system without RENAME_NOREPLACE: a plain rename, where nothing is in the way.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                match fsops::sys::lstat_at(d, &self.name) {
                    Err(n) if n.raw_os_error() == Some(libc::ENOENT) => {
                        fsops::sys::rename_at(d, &self.tmp, d, &self.name, 0)
                    }
                    _ => Err(e),
                }
            }
            r => r,
        }
    }
}

impl RunShared {
    /// Stop the whole run as rsync stops at a fatal condition (a bad rule in a per-directory
    /// merge file: "syntax or usage error", code 1): every core drops what it is doing, as
    /// when the run is interrupted (no file is left half-written under its final name), the
    /// work left for after the copy (`--delete-after`, `--delay-updates`) is not done, and the
    /// run ends with `code`. The first halt's message and code are kept.
    pub fn halt(&self, code: i32, message: String) {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert((code, message));
        if let Some(c) = self
            .canceller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            c.cancel();
        }
    }

    /// Whether [`RunShared::halt`] was called.
    pub fn is_halted(&self) -> bool {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The cold-copy pool, started on the first call: two threads per core, 4 to 64.
    pub(crate) fn copy_pool(&self) -> Option<&crate::workers::Workers> {
        self.copy_pool
            .get_or_init(|| {
                let n = (self.threads * 2).clamp(4, 64);
                crate::workers::Workers::start(n, "copy", self.cpus).ok()
            })
            .as_ref()
    }

    /// Record a subtree top made as `tmp` in `parent`, to become `name`.
    pub(crate) fn stage_dir(
        &self,
        parent: Arc<OwnedFd>,
        tmp: std::ffi::CString,
        name: std::ffi::CString,
        shown: std::path::PathBuf,
    ) -> Arc<StagedDir> {
        let d = Arc::new(StagedDir {
            parent,
            tmp,
            name,
            shown,
            done: AtomicBool::new(false),
        });
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&d));
        d
    }
}

/// The per-core context, owned by one core thread.
pub(crate) struct Core {
    pub index: usize,
    pub shared: Arc<RunShared>,
    pub worker: RefCell<Worker<Task>>,
    pub pool: fsops::BufPool,
    pub small_buf: RefCell<Vec<u8>>,
    pub dir_reader: RefCell<fsops::DirReader>,
    /// A directory batch being listed: its non-directories, and its directories (pushed first,
    /// so that this core finishes the files before it descends and an idle core steals whole
    /// subtrees).
    pub batch: RefCell<Vec<Task>>,
    pub batch_dirs: RefCell<Vec<Task>>,
    pub counters: Counters,
    pub temp_seq: Cell<u64>,
    pub ring_slots: crate::limit::LocalSemaphore,
    /// Device pairs (source dev, destination dev) where FICLONE / copy_file_range failed with
    /// "not supported here": not tried again on this core.
    pub no_clone: RefCell<Vec<(u64, u64)>>,
    pub no_kernel_copy: RefCell<Vec<(u64, u64)>>,
    /// Destination devices and whether a warm large file is split across the cores there (its
    /// file system writes one file's ranges at once), asked once per device.
    pub split_devs: RefCell<Vec<(u64, bool)>>,
    /// Destination devices without `O_TMPFILE`: files go through a temporary name there.
    pub no_tmpfile: RefCell<Vec<u64>>,
    /// Large files this core is copying right now.
    pub heavy: Cell<usize>,
    /// A large file was handed back because this core was busy: take no new task until the
    /// current large file is done (what waits in the deque is for the other cores to steal).
    pub deferred: Cell<bool>,
    /// `-H` groups whose copy a leader on this core put off ([`crate::links::LinkMap::defer`]),
    /// oldest first: given back when there are more than [`held_links_max`] or the core has
    /// nothing else to do.
    pub held_links: RefCell<std::collections::VecDeque<crate::links::Key>>,
    /// Latency histograms (with `Config::measure`).
    pub lat: crate::latency::Recorder,
    /// `--delete-after`: deletions decided on this core, done when the run ends.
    pub pending_deletes: RefCell<Vec<crate::sync::PendingDelete>>,
    /// `--remove-source-files` with `-H`: names of multi-link source files, removed once the
    /// run is over (removing one earlier would hide the link from names not yet copied).
    pub pending_removals: RefCell<Vec<crate::task::PendingRemoval>>,
    /// `--delay-updates`: directories with files waiting in their partial directory, renamed
    /// into place when the run ends.
    pub pending_updates: RefCell<Vec<crate::sync::PendingUpdates>>,
}

impl Core {
    pub fn push(&self, t: Task) {
        self.worker.borrow_mut().push(t);
    }

    /// Publish this core's counters for the progress display (plain stores to its own line).
    pub fn publish_progress(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(slot) = self.shared.progress.slot(self.index) {
            let c = &self.counters;
            slot.files.store(c.files.get(), Relaxed);
            slot.checked.store(c.checked.get(), Relaxed);
            slot.bytes.store(c.bytes.get(), Relaxed);
            slot.seen_files.store(c.seen[0].get(), Relaxed);
            slot.seen_bytes.store(c.seen_bytes.get(), Relaxed);
            slot.other.store(
                c.dirs.get() + total(&c.deleted_by) + c.unchanged.get(),
                Relaxed,
            );
        }
    }
}

struct CoreOut {
    counters: Counters,
    latency: Option<crate::latency::Latencies>,
    pending_deletes: Vec<crate::sync::PendingDelete>,
    pending_removals: Vec<crate::task::PendingRemoval>,
    pending_updates: Vec<crate::sync::PendingUpdates>,
    report: CoreReport,
    fatal: Option<String>,
}

/// Descriptors each core holds besides its files and directories: its ring, the runtime's
/// eventfd and its CPU claim (a socket), and up to three for a moment while it opens a parked
/// directory again from the top, name by name.
const FDS_PER_CORE: u64 = 6;

pub(crate) fn run(
    config: &Config,
    observer: Arc<dyn Observer>,
    stop: &crate::Stop,
    progress: &crate::Progress,
) -> Report {
    let start = Instant::now();
    let asked = if config.threads == 0 {
        crate::default_threads()
    } else {
        config.threads
    };
    // Open files: raise the soft limit to the hard one, then keep the tasks in flight within it
    // (about 4 fds per task: source, staged file, directory fds, and headroom for the
    // reference and leader directories a task may open).
    let nofile = crate::prepare_process(config);
    let mut config = config.clone();
    if config.append.is_some() || config.write_devices {
        config.inplace = true;
    }
    if config.delay_updates {
        // The waiting files live in the partial directory (rsync's default name).
        config.partial = true;
        config.inplace = false;
        if config.partial_dir.is_none() {
            config.partial_dir = Some(c".~tmp~".to_owned());
        }
    }
    // A relative --backup-dir is relative to the destination directory, as rsync has it.
    if let Some(root) = config.roots.first() {
        let mut dest_dir = root.dst.clone();
        for _ in root.rel.components() {
            dest_dir.pop();
        }
        if let Some(b) = config.backup.as_mut()
            && let Some(d) = b.dir.as_mut()
        {
            b.given = Some(d.clone());
            if d.is_relative() {
                *d = dest_dir.join(&*d);
            }
            if root.rel.as_os_str().is_empty() {
                // (Once a run: not again for each piece of a multi-node one.)
                let new = std::fs::symlink_metadata(&*d).is_err();
                let given = b.given.as_deref().unwrap_or(d);
                observer.event(&crate::Event::Notice {
                    path: given,
                    notice: crate::Notice::BackupDir { new },
                });
            }
        }
        if let Some(d) = config.temp_dir.as_mut()
            && d.is_relative()
        {
            *d = dest_dir.join(&*d);
        }
    }
    // A quarter of the limit for open directories (two fds per directory node and one per
    // reference directory: beyond it, nodes waiting only for their subdirectories close theirs),
    // the rest for the files in flight, less 24 for the process and `FDS_PER_CORE` for each core.
    let dir_share = nofile / 4;
    let room = |t: u64| (nofile - dir_share).saturating_sub(24 + FDS_PER_CORE * t) / (t * 4);
    // A limit too low for one file in flight on every core (a hard limit of 64 with 6 cores ran
    // out of fds and failed entries with EMFILE): as many cores as it has room for.
    let mut threads = asked;
    while threads > 1 && room(threads as u64) == 0 {
        threads -= 1;
    }
    if threads < asked {
        let message = format!(
            "the open-file limit ({nofile}) leaves room for {threads} of {asked} cores: running on {threads}"
        );
        observer.event(&crate::Event::Warning { message: &message });
    }
    config.threads = threads;
    config.inflight_per_core = config
        .inflight_per_core
        .min(room(threads as u64).max(1) as usize);
    config.ring_files_per_core = config.ring_files_per_core.min(config.inflight_per_core);
    // (A relative `-T` names a directory beside a destination this run may not have made yet:
    // `DEST/../tmp` is then looked through by its text, as the command line checked it.)
    let open_temp = |p: &std::path::Path| {
        TempDir::open(p).or_else(|e| TempDir::open(&crate::without_dot_dots(p)).map_err(|_| e))
    };
    let temp_dir = match config.temp_dir.as_deref().map(open_temp).transpose() {
        Ok(t) => t,
        Err(fatal) => {
            return Report {
                fatal: Some(fatal),
                elapsed: start.elapsed(),
                ..Report::default()
            };
        }
    };
    let config = &config;
    let umask = fsops::sys::set_umask(0);
    let policy = meta_policy(config, umask);
    let overlaps = crate::task::root_overlaps(&config.roots);
    let shared = Arc::new(RunShared {
        overlaps,
        config: config.clone(),
        policy,
        wants_items: observer.wants_items(),
        observer,
        pid: std::process::id(),
        links: crate::links::LinkMap::new(config.copy_links || config.copy_unsafe_links),
        throttle: config
            .bwlimit
            .filter(|&r| r > 0)
            .map(crate::throttle::Throttle::new),
        xattr_warned: AtomicBool::new(false),
        direct_warned: AtomicBool::new(false),
        deletes: AtomicU64::new(0),
        progress: progress.clone(),
        created_dest: AtomicBool::new(false),
        workers: if config.routes.needs_workers() {
            // Started here, on the unpinned main thread, so they may run on any CPU.
            let n = if config.meta_workers == 0 {
                threads
            } else {
                config.meta_workers
            };
            match crate::workers::Workers::start(n, "meta", None) {
                Ok(w) => Some(w),
                Err(e) => {
                    fsops::sys::set_umask(umask);
                    return Report {
                        fatal: Some(format!("cannot start the metadata workers: {e}")),
                        elapsed: start.elapsed(),
                        ..Report::default()
                    };
                }
            }
        } else {
            None
        },
        staged: std::sync::Mutex::new(Vec::new()),
        halted: std::sync::Mutex::new(None),
        canceller: std::sync::Mutex::new(None),
        open_dirs: crate::dirfds::OpenDirs::new(dir_share as usize),
        temp_dir,
        copy_pool: std::sync::OnceLock::new(),
        cpus: fsops::sys::CpuMask::current().ok(),
        threads,
        placeholder: Arc::new(match fsops::sys::memfd(c"arsync-dry-run") {
            Ok(fd) => fd,
            Err(e) => {
                fsops::sys::set_umask(umask);
                return Report {
                    fatal: Some(format!("memfd_create: {e}")),
                    elapsed: start.elapsed(),
                    ..Report::default()
                };
            }
        }),
    });
    let mut report = Report::default();

    // The destination directory, if it has to be created, comes before any core starts; unless
    // it is the one root's own destination (`SRC/ DEST`), which that root makes under a
    // temporary name and renames into place when finished (so its files need no staging of
    // their own), and which a root that fails or is skipped leaves unmade, as rsync does.
    // (A dry run's root says it would make it, when it finds no destination.)
    let root_makes_it = |dir: &std::path::PathBuf| {
        config.roots.len() == 1
            && config.roots[0].dst == *dir
            && (config.dry_run || crate::task::stages_dirs(config))
    };
    let created = |dir: &std::path::Path| {
        shared
            .observer
            .event(&crate::Event::DestCreated { path: dir })
    };
    let dest_dir = config
        .create_dest_dir
        .as_ref()
        .filter(|d| !root_makes_it(d));
    if let Some(dir) = dest_dir.filter(|_| config.dry_run) {
        created(dir);
    } else if let Some(dir) = dest_dir {
        match fsops::sys::mkdir_path(dir, 0o777 & !umask) {
            Ok(()) => {
                shared.created_dest.store(true, Ordering::Relaxed);
                created(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                shared.observer.event(&crate::Event::Error {
                    path: dir,
                    op: "mkdir",
                    error: &e,
                    class: crate::ErrorClass::FileIo,
                });
                report.file_io_errors += 1;
                fsops::sys::set_umask(umask);
                report.elapsed = start.elapsed();
                return report;
            }
        }
    }

    // Roots that write into one another's destination (`A/ B/ DEST`, `SRC/x SRC/ DEST`) run one
    // after another, in the order given: a later one leaves the names an earlier one has
    // (rsync keeps the first of duplicate names) and adds its own to the directories they
    // share; the others run together, in the first pass they can.
    let phases = crate::task::root_phases(&shared.overlaps);
    progress.start(threads);
    tracing::info!(
        threads,
        roots = config.roots.len(),
        files_in_flight_per_core = config.inflight_per_core,
        ring_files_per_core = config.ring_files_per_core,
        queue_depth = config.ring_depth,
        buffer_size = config.chunk_size,
        open_files_limit = nofile,
        dry_run = config.dry_run,
        "run started"
    );
    // Each core's CPU, claimed for the run so that concurrent runs spread (`placement`).
    let placement = match &shared.cpus {
        Some(mask) if config.pin => {
            let prefix = crate::placement::claim_prefix();
            crate::placement::place(threads, &mask.cpus(), |cpu, level| {
                crate::placement::claim_slot(&prefix, cpu, level)
            })
        }
        _ => crate::placement::Placement::unpinned(threads),
    };
    let last = phases.len() - 1;
    let mut outs = Vec::new();
    for (n, phase) in phases.into_iter().enumerate() {
        let bells: Arc<Vec<Doorbell>> =
            Arc::new((0..threads).map(|_| Doorbell::default()).collect());
        let sched = Scheduler::new(threads, Box::new(Doorbells(Arc::clone(&bells))));
        for i in phase {
            sched.inject(Task::Root(i));
        }
        let canceller = sched.canceller();
        *shared.canceller.lock().unwrap_or_else(|p| p.into_inner()) = Some(canceller.clone());
        if shared.is_halted() {
            break;
        }
        stop.install(Box::new(move || canceller.cancel()));
        let make = |i: usize| {
            let shared = Arc::clone(&shared);
            let bells = Arc::clone(&bells);
            let core_id = placement.cpus[i].map(|id| core_affinity::CoreId { id });
            move |worker: Worker<Task>| core_thread(i, worker, shared, bells, core_id)
        };
        outs.extend(if config.exit_after_run && n == last {
            scheduler::run_threads_lingering(sched, make)
        } else {
            scheduler::run_threads(sched, make)
        });
        stop.uninstall();
        *shared.canceller.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if stop.is_requested()
            || shared.is_halted()
            || outs.iter().any(|o: &CoreOut| o.fatal.is_some())
        {
            break;
        }
    }
    report.interrupted = stop.is_requested();
    report.halted = shared
        .halted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    // What is left for after the copy is not done once the run was stopped or halted.
    let stopped = report.interrupted || report.halted.is_some();
    // A stopped run leaves no subtree under a temporary name: what was completed in it becomes
    // visible, as rsync leaves the files it finished (directories not finished keep the
    // permissions they were made with, 0700, and no times, as a stopped rsync leaves them). One
    // that cannot be renamed (its name was taken meanwhile) stays under its temporary name, said.
    for d in shared
        .staged
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        if let Err(e) = d.publish() {
            report.errors += 1;
            shared.observer.event(&crate::Event::Error {
                path: &d.shown,
                op: "rename (new directory)",
                error: &e,
                class: crate::ErrorClass::Partial,
            });
        }
    }
    let mut pending = Vec::new();
    for out in &mut outs {
        pending.append(&mut out.pending_deletes);
    }
    if !stopped {
        // --delay-updates: every file is written; now into place, directory by directory (a
        // stopped run leaves them in the partial directories, to be resumed from).
        let main = Counters::default();
        for out in &mut outs {
            for p in std::mem::take(&mut out.pending_updates) {
                crate::sync::delayed_updates(&shared, &main, p);
            }
        }
        report.errors += main.errors.get();
    }
    if !pending.is_empty() && !stopped {
        // --delete-after: everything is copied; now the deletions, in the order they were found.
        let main = Counters::default();
        let mut end_rules = crate::sync::EndRules::new();
        for p in pending {
            crate::sync::delete_after(&shared, &main, p, &mut end_rules);
        }
        add_kinds(&mut report.deleted_by, &main.deleted_by);
        report.delete_skipped += main.delete_skipped.get();
        report.errors += main.errors.get();
    }
    if !stopped {
        // --remove-source-files -H: the multi-link names, now that every name is copied.
        for out in &outs {
            for r in &out.pending_removals {
                match r.remove() {
                    Ok(true) => shared.observer.event(&crate::Event::Notice {
                        path: &r.rel,
                        notice: crate::Notice::SourceRemoved,
                    }),
                    Ok(false) => {}
                    Err((path, op, e)) => {
                        report.errors += 1;
                        shared.observer.event(&crate::Event::Error {
                            path: &path,
                            op,
                            error: &e,
                            class: crate::ErrorClass::Partial,
                        });
                    }
                }
            }
        }
    }
    fsops::sys::set_umask(umask);
    for out in outs {
        let c = &out.counters;
        report.files += c.files.get();
        report.dirs += c.dirs.get();
        report.symlinks += c.symlinks.get();
        report.specials += c.specials.get();
        report.hard_links += c.hard_links.get();
        report.bytes += c.bytes.get();
        report.errors += c.errors.get();
        report.vanished += c.vanished.get();
        report.file_io_errors += c.file_io_errors.get();
        report.skipped += c.skipped.get();
        report.unchanged += c.unchanged.get();
        add_kinds(&mut report.deleted_by, &c.deleted_by);
        add_kinds(&mut report.created_by, &c.created_by);
        if let Some(l) = &out.latency {
            match &mut report.latency {
                Some(all) => all.merge(l),
                None => report.latency = Some(l.clone()),
            }
        }
        report.verified += c.verified.get();
        report.delegated += c.delegated.get();
        report.considered.files += c.seen[0].get();
        report.considered.dirs += c.seen[1].get();
        report.considered.symlinks += c.seen[2].get();
        report.considered.specials += c.seen[3].get() + c.seen[4].get();
        report.considered.devices += c.seen[3].get();
        report.considered.bytes += c.seen_bytes.get();
        report.considered.link_bytes += c.seen_link_bytes.get();
        report.transferred_size += c.transferred_size.get();
        report.from_reference += c.from_reference.get();
        report.delete_skipped += c.delete_skipped.get();
        if report.fatal.is_none() {
            report.fatal = out.fatal;
        }
        report.cores.push(out.report);
    }
    report.deleted = report.deleted_by.iter().sum();
    report.created = report.created_by.iter().sum();
    // The run's CPU claims end here.
    drop(placement);
    report.elapsed = start.elapsed();
    tracing::info!(
        files = report.files,
        bytes = report.bytes,
        unchanged = report.unchanged,
        deleted = report.deleted,
        errors = report.errors + report.file_io_errors,
        steals = report.cores.iter().map(|c| c.sched.steals).sum::<u64>(),
        seconds = report.elapsed.as_secs_f64(),
        "run finished"
    );
    report
}

fn core_thread(
    index: usize,
    worker: Worker<Task>,
    shared: Arc<RunShared>,
    bells: Arc<Vec<Doorbell>>,
    core_id: Option<core_affinity::CoreId>,
) -> CoreOut {
    let cpu = core_id
        .filter(|&id| core_affinity::set_for_current(id))
        .map(|id| id.id);
    // compio's default queue of wakes from other threads (64) is plenty: a core runs one compio
    // task (its tasks are futures in one `FuturesUnordered`), and a task sits in the queue once
    // at most. The 4,096 asked for before cost 64 KiB per core, every page touched at start.
    let rt = match compio::runtime::RuntimeBuilder::new().build() {
        Ok(rt) => rt,
        Err(e) => {
            worker.abort();
            return CoreOut {
                counters: Counters::default(),
                latency: None,
                pending_deletes: Vec::new(),
                pending_removals: Vec::new(),
                pending_updates: Vec::new(),
                report: CoreReport::default(),
                fatal: Some(format!("cannot set up io_uring on core {index}: {e}")),
            };
        }
    };
    let config = &shared.config;
    let io_uring = rt.driver_type().is_iouring();
    let iowq_workers = if io_uring {
        iowq_caps(&rt, config.iowq_max_workers)
    } else {
        if index == 0 {
            shared.observer.event(&crate::Event::Warning {
                message: "io_uring is not available to this process (refused or missing opcodes): copying with epoll and a thread pool instead (slower)",
            });
        }
        None
    };
    tracing::debug!(core = index, io_uring, iowq_workers = ?iowq_workers, cpu = ?cpu, "core started");
    let core = Rc::new(Core {
        index,
        pool: fsops::BufPool::new_aligned(
            config.chunk_size,
            config.ring_depth * config.ring_files_per_core,
            if config.direct {
                fsops::copy::DIRECT_ALIGN
            } else {
                0
            },
        ),
        small_buf: RefCell::new(Vec::with_capacity(
            (config.small_file_max as usize).clamp(4096, 1 << 20),
        )),
        dir_reader: RefCell::new(fsops::DirReader::default()),
        batch: RefCell::new(Vec::new()),
        batch_dirs: RefCell::new(Vec::new()),
        counters: Counters::default(),
        temp_seq: Cell::new(0),
        ring_slots: crate::limit::LocalSemaphore::new(config.ring_files_per_core),
        no_clone: RefCell::new(Vec::new()),
        no_kernel_copy: RefCell::new(Vec::new()),
        split_devs: RefCell::new(Vec::new()),
        no_tmpfile: RefCell::new(Vec::new()),
        heavy: Cell::new(0),
        deferred: Cell::new(false),
        held_links: RefCell::new(std::collections::VecDeque::new()),
        pending_deletes: RefCell::new(Vec::new()),
        pending_removals: RefCell::new(Vec::new()),
        pending_updates: RefCell::new(Vec::new()),
        lat: crate::latency::Recorder::new(config.measure),
        worker: RefCell::new(worker),
        shared: Arc::clone(&shared),
    });
    let bell = &bells[index];
    rt.block_on(core_loop(Rc::clone(&core), bell));
    let core = match Rc::try_unwrap(core) {
        // The process exits after the run: the ring's mappings and the buffers are left to the
        // kernel's teardown at exit (unmapping them here, with the other threads still running,
        // flushes every CPU's TLB once per mapping).
        Ok(core) if config.exit_after_run => {
            std::mem::forget(rt);
            core
        }
        done => {
            drop(rt);
            done.or_else(Rc::try_unwrap)
                .ok()
                .expect("core context still shared after the run")
        }
    };
    if config.exit_after_run {
        std::mem::forget(core.small_buf.take());
        core.pool.leak();
    }
    let worker = core.worker.into_inner();
    CoreOut {
        report: CoreReport {
            sched: worker.stats(),
            tasks: core.counters.tasks.get(),
            io_uring,
            iowq_workers,
            inline_files: core.counters.inline_files.get(),
            ring_files: core.counters.ring_files.get(),
            cloned_files: core.counters.cloned_files.get(),
            kernel_copied_files: core.counters.kernel_copied_files.get(),
            split_files: core.counters.split_files.get(),
            split_chunks: core.counters.split_chunks.get(),
            parked_dirs: core.counters.parked_dirs.get(),
            reopened_dirs: core.counters.reopened_dirs.get(),
            offloaded_files: core.counters.offloaded_files.get(),
            offloaded_pieces: core.counters.offloaded_pieces.get(),
            offloaded_peak: core.counters.offloaded_peak.get(),
            routed: std::array::from_fn(|c| {
                std::array::from_fn(|v| core.counters.routed[c][v].get())
            }),
            hard_linked: core.counters.hard_links.get(),
            cpu,
        },
        counters: core.counters,
        pending_deletes: core.pending_deletes.into_inner(),
        pending_removals: core.pending_removals.into_inner(),
        pending_updates: core.pending_updates.into_inner(),
        latency: core.lat.into_inner(),
        fatal: None,
    }
}

/// Cap this ring's io-wq workers at `max` (0: leave the kernel's default) and return the caps in
/// effect, `None` where the kernel cannot say (before 5.15).
fn iowq_caps(rt: &compio::runtime::Runtime, max: u32) -> Option<[u32; 2]> {
    use std::os::fd::AsRawFd;
    let fd = rt.as_raw_fd();
    if max > 0 {
        fsops::sys::iowq_max_workers(fd, max, max).ok()?;
    }
    // Setting [0, 0] changes nothing and reads the current caps back.
    fsops::sys::iowq_max_workers(fd, 0, 0).ok()
}

/// A task's future in a box that is used again for later tasks: the boxes of finished tasks wait
/// in a per-core free list, so a task costs no allocation (a core runs at most `limit` + 1 at
/// once). `F` is the one future type of [`task::run`].
struct Slot<F: Future<Output = ()>> {
    fut: Option<Pin<Box<Option<F>>>>,
    free: FreeSlots<F>,
}

/// A core's boxes of finished tasks, for the next tasks.
type FreeSlots<F> = Rc<RefCell<Vec<Pin<Box<Option<F>>>>>>;

impl<F: Future<Output = ()>> Slot<F> {
    fn new(free: &FreeSlots<F>, fut: F) -> Self {
        let reused = free.borrow_mut().pop();
        let boxed = match reused {
            Some(mut b) => {
                b.set(Some(fut));
                b
            }
            None => Box::pin(Some(fut)),
        };
        Slot {
            fut: Some(boxed),
            free: Rc::clone(free),
        }
    }

    /// Drop the future (finished or not) and put its box back in the free list.
    fn release(&mut self) {
        if let Some(mut b) = self.fut.take() {
            b.set(None);
            self.free.borrow_mut().push(b);
        }
    }
}

impl<F: Future<Output = ()>> Future for Slot<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let Some(b) = self.fut.as_mut() else {
            return Poll::Ready(());
        };
        let Some(f) = b.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let r = f.poll(cx);
        if r.is_ready() {
            self.release();
        }
        r
    }
}

impl<F: Future<Output = ()>> Drop for Slot<F> {
    fn drop(&mut self) {
        self.release();
    }
}

/// How many put-off hard-link groups a core holds at most: half its files in flight (each
/// keeps one of them, and its directory open), so the other half goes on with other work.
pub(crate) fn held_links_max(config: &crate::Config) -> usize {
    (config.inflight_per_core / 2).max(1)
}

impl Core {
    /// Give back every hard-link group this core put off: their names copy after all (the core
    /// is about to wait, so the group's other names are not coming from its own work).
    fn release_held_links(&self) {
        let held: Vec<_> = self.held_links.borrow_mut().drain(..).collect();
        for key in held {
            self.shared.links.release(key);
        }
    }
}

async fn core_loop(core: Rc<Core>, bell: &Doorbell) {
    core_loop_with(core, bell, task::run).await
}

/// The core loop, generic over the task future's type only so that the free list of [`Slot`]
/// boxes can name it (`task::run`'s future has no name of its own).
async fn core_loop_with<F: Future<Output = ()>>(
    core: Rc<Core>,
    bell: &Doorbell,
    run: impl Fn(Rc<Core>, task::Task) -> F,
) {
    let limit = core.shared.config.inflight_per_core.max(1);
    let free: FreeSlots<F> = Rc::new(RefCell::new(Vec::new()));
    let mut inflight: FuturesUnordered<Slot<F>> = FuturesUnordered::new();
    // A core busy with a large file that handed one back takes nothing new until it is done.
    let blocked = || core.deferred.get() && core.heavy.get() > 0;
    loop {
        // Take tasks one at a time and run each as far as it goes at once: most finish right
        // away (a small file, a directory batch), and what stays in the deque meanwhile is there
        // for the other cores to steal. Only tasks that really wait stay in flight.
        let mut budget = 64;
        while inflight.len() < limit && !blocked() && budget > 0 {
            budget -= 1;
            core.deferred.set(false);
            let popped = core.worker.borrow_mut().pop();
            match popped {
                Pop::Task(t) => {
                    bump(&core.counters.tasks, 1);
                    let mut fut = Slot::new(&free, run(Rc::clone(&core), t));
                    let first =
                        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await;
                    if first.is_pending() {
                        // FuturesUnordered polls a newly pushed future on its next turn, with
                        // its own waker, so nothing is lost by the poll above.
                        inflight.push(fut);
                    }
                }
                Pop::Empty => break,
                Pop::Done => {
                    if core.worker.borrow().is_cancelled() {
                        return;
                    }
                    break;
                }
            }
        }
        if budget == 0 {
            // Many tasks in a row: let the runtime reap completions and run woken tasks.
            std::future::poll_fn(|cx| {
                while let Poll::Ready(Some(())) = inflight.poll_next_unpin(cx) {}
                Poll::Ready(())
            })
            .await;
            yield_now().await;
            continue;
        }
        if inflight.is_empty() {
            let idle = core.worker.borrow_mut().go_idle();
            match idle {
                Idle::Park => {
                    bell.wait().await;
                    core.worker.borrow_mut().unparked();
                }
                Idle::Retry => {}
                Idle::Done => return,
            }
        } else if inflight.len() < limit && !blocked() && core.worker.borrow_mut().hungry() {
            core.release_held_links();
            // Room for more and nothing visible: wait for a task to finish *or* for work to
            // appear anywhere (a push rings our doorbell), so a core streaming a large file still
            // steals the moment another core has work to share.
            let bell_wait = std::pin::pin!(bell.wait());
            futures_util::future::select(inflight.next(), bell_wait).await;
            core.worker.borrow_mut().unparked();
        } else {
            core.release_held_links();
            // Also listen to the doorbell: a stop request must reach a core that is busy
            // streaming a large file.
            let bell_wait = std::pin::pin!(bell.wait());
            futures_util::future::select(inflight.next(), bell_wait).await;
        }
        if core.worker.borrow().is_cancelled() {
            // Stopped: the in-flight tasks are dropped here (staged files are discarded).
            return;
        }
    }
}

/// Let the other tasks of this runtime (and its ring) run once.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
