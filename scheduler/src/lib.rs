//! Generic work stealing over `T: Send`, with termination detection and a park/unpark hook.
//!
//! This crate owns *only* the distribution of opaque tasks between workers: a crossbeam-deque
//! [`crossbeam_deque::Worker`] per worker (LIFO, so a tree walk stays depth-first and memory stays
//! bounded), the shared [`crossbeam_deque::Stealer`]s, an [`crossbeam_deque::Injector`] for the
//! roots, idle/active counting, termination, cancellation and panic propagation. It knows nothing of
//! paths, file descriptors, buffers or io_uring: it is tested with plain integers as tasks.
//!
//! # Model
//!
//! A worker is *active* while it holds work (tasks it popped and has not finished, possibly many at
//! once for an async engine) or is searching for work. Only an active worker may [`Worker::push`].
//! A worker goes idle with [`Worker::go_idle`] only when it holds no unfinished task and its own deque
//! is empty. The run is over when the number of active workers drops to zero: no one holds a task,
//! every deque is empty, and no one is left who could create a task.
//!
//! An idle worker *parks* through the [`Unpark`] hook that the embedding engine implements: the
//! scheduler calls [`Unpark::unpark`] with a worker index when work appears for a sleeper or the run
//! ends, and the engine wakes that worker however it sleeps (a thread park, a doorbell a compio
//! runtime awaits, ...). Parking itself is the caller's business, so the scheduler never blocks.
//!
//! # Memory ordering
//!
//! * `active` (number of active workers) is changed with `SeqCst` read-modify-writes. The thread whose
//!   decrement takes it from 1 to 0 is the unique one that declares termination; it then stores
//!   `done` (`Release`) and unparks everyone. Workers read `done` with `Acquire`.
//! * Lost wake-ups are prevented with a Dekker-style pair: a worker about to park marks itself
//!   sleeping (`sleeping[i] = true`, `sleepers += 1`, both `SeqCst`), then re-checks every queue
//!   before it parks. A pusher pushes, issues a `SeqCst` fence, then reads `sleepers`. Either the
//!   sleeper sees the task, or the pusher sees the sleeper and wakes it.
//! * On the per-task path a push costs one local deque operation, one fence and one relaxed load of
//!   `sleepers`, a cache line that is only written when a worker parks or wakes: nothing contended
//!   while every core is busy. Counters (executed, pushed, steals) live in the worker itself.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use crossbeam_deque::{Injector, Steal, Stealer};
use crossbeam_utils::CachePadded;

/// The hook through which the scheduler wakes a parked worker.
///
/// The engine implements it for its core threads (for example by ringing a doorbell that a compio
/// runtime awaits); tests implement it with `std::thread::Thread::unpark`. A call may come for a
/// worker that is not parked; it must then be harmless (the next park returns at once, or it is
/// ignored), never lost.
pub trait Unpark: Send + Sync {
    /// Wake worker `index` (0-based) from its park.
    fn unpark(&self, index: usize);
}

/// What [`Worker::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// A task to run.
    Task(T),
    /// Nothing to take right now; the worker stays active. A worker still holding unfinished tasks
    /// waits for them and tries again; one holding none calls [`Worker::go_idle`].
    Empty,
    /// The run is over (all work done, cancelled, or a worker panicked): stop.
    Done,
}

/// What [`Worker::go_idle`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Idle {
    /// Park until [`Unpark::unpark`] is called for this worker, then call [`Worker::pop`] again.
    Park,
    /// Work appeared while going idle: call [`Worker::pop`] again without parking.
    Retry,
    /// The run is over: stop.
    Done,
}

/// Counters of one worker, reported at the end of its run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks taken from this worker's own deque.
    pub local_pops: u64,
    /// Tasks taken from the injector (roots).
    pub injector_pops: u64,
    /// Successful steals from other workers' deques (a batch counts once).
    pub steals: u64,
    /// Tasks pushed by this worker.
    pub pushes: u64,
    /// Times this worker parked.
    pub parks: u64,
}

struct Shared<T> {
    injector: Injector<T>,
    stealers: Vec<Stealer<T>>,
    active: CachePadded<AtomicUsize>,
    sleepers: CachePadded<AtomicUsize>,
    sleeping: Vec<CachePadded<AtomicBool>>,
    done: CachePadded<AtomicBool>,
    cancelled: AtomicBool,
    panicked: AtomicBool,
    unpark: Box<dyn Unpark>,
}

impl<T> Shared<T> {
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        for i in 0..self.sleeping.len() {
            self.unpark.unpark(i);
        }
    }

    fn any_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn wake_one(&self) {
        for (i, flag) in self.sleeping.iter().enumerate() {
            if flag.load(Ordering::Relaxed)
                && flag
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                self.unpark.unpark(i);
                return;
            }
        }
    }
}

/// A handle that stops a run from outside the workers (for example on SIGINT).
pub struct Canceller<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Canceller<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Canceller<T> {
    /// Stop the run: every worker's next [`Worker::pop`] or [`Worker::go_idle`] returns `Done`;
    /// parked workers are woken. Tasks left in the deques are dropped with the scheduler.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.shared.finish();
    }

    /// Whether [`Canceller::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }
}

/// Builds the workers of one run.
pub struct Scheduler<T> {
    shared: Arc<Shared<T>>,
    workers: Vec<crossbeam_deque::Worker<T>>,
}

impl<T: Send> Scheduler<T> {
    /// A scheduler for `n` workers (at least 1) that wakes parked workers through `unpark`.
    pub fn new(n: usize, unpark: Box<dyn Unpark>) -> Self {
        let n = n.max(1);
        let workers: Vec<_> = (0..n)
            .map(|_| crossbeam_deque::Worker::new_lifo())
            .collect();
        let stealers = workers.iter().map(|w| w.stealer()).collect();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers,
            active: CachePadded::new(AtomicUsize::new(n)),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            sleeping: (0..n)
                .map(|_| CachePadded::new(AtomicBool::new(false)))
                .collect(),
            done: CachePadded::new(AtomicBool::new(false)),
            cancelled: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            unpark,
        });
        Self { shared, workers }
    }

    /// Add a root task before the workers start.
    pub fn inject(&self, task: T) {
        self.shared.injector.push(task);
    }

    /// A handle to cancel the run from anywhere.
    pub fn canceller(&self) -> Canceller<T> {
        Canceller {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Hand out the workers, one per thread, in index order.
    pub fn into_workers(self) -> Vec<Worker<T>> {
        let shared = self.shared;
        self.workers
            .into_iter()
            .enumerate()
            .map(|(index, local)| Worker {
                index,
                local,
                shared: Arc::clone(&shared),
                active: true,
                steal_from: (index + 1) % shared.stealers.len(),
                stats: WorkerStats::default(),
            })
            .collect()
    }
}

/// One worker's side of the scheduler; it lives on that worker's thread.
pub struct Worker<T> {
    index: usize,
    local: crossbeam_deque::Worker<T>,
    shared: Arc<Shared<T>>,
    active: bool,
    steal_from: usize,
    stats: WorkerStats,
}

impl<T: Send> Worker<T> {
    /// This worker's index (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of workers in the run.
    pub fn count(&self) -> usize {
        self.shared.stealers.len()
    }

    /// This worker's counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// Whether the run is over.
    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Whether the run was cancelled (or stopped by a panic).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Relaxed)
    }

    /// Push a task this worker created. Must be called while the worker is active (it holds a task
    /// or has just popped). The task goes to this worker's own deque; a parked worker, if any, is
    /// woken to steal it.
    pub fn push(&mut self, task: T) {
        debug_assert!(self.active, "push from an idle worker");
        self.local.push(task);
        self.stats.pushes += 1;
        fence(Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::Relaxed) > 0 {
            self.shared.wake_one();
        }
    }

    /// Offer a task to every worker: it goes to the shared injector, which any worker checks
    /// before stealing from another's deque, and one sleeping worker is woken to take it. For
    /// help that this worker must not take itself (it is busy with the same job).
    pub fn share(&mut self, task: T) {
        debug_assert!(self.active, "share from an idle worker");
        self.shared.injector.push(task);
        self.stats.pushes += 1;
        fence(Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::Relaxed) > 0 {
            self.shared.wake_one();
        }
    }

    /// Take the next task: own deque first (LIFO), then the injector, then the other workers'
    /// deques (FIFO end, in batches).
    pub fn pop(&mut self) -> Pop<T> {
        if self.shared.done.load(Ordering::Acquire) {
            return Pop::Done;
        }
        if !self.active {
            self.active = true;
            self.shared.active.fetch_add(1, Ordering::SeqCst);
            // Termination may have been declared between our park and this increment.
            if self.shared.done.load(Ordering::Acquire) {
                return Pop::Done;
            }
        }
        if let Some(t) = self.local.pop() {
            self.stats.local_pops += 1;
            return Pop::Task(t);
        }
        loop {
            let mut retry = false;
            match self.shared.injector.steal_batch_and_pop(&self.local) {
                Steal::Success(t) => {
                    self.stats.injector_pops += 1;
                    return Pop::Task(t);
                }
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            let n = self.shared.stealers.len();
            for k in 0..n {
                let victim = (self.steal_from + k) % n;
                if victim == self.index {
                    continue;
                }
                match self.shared.stealers[victim].steal_batch_and_pop(&self.local) {
                    Steal::Success(t) => {
                        self.stats.steals += 1;
                        self.steal_from = victim;
                        return Pop::Task(t);
                    }
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return Pop::Empty;
            }
        }
    }

    /// Declare that this worker holds no unfinished task and found nothing to take. Returns whether
    /// to park, retry at once, or stop.
    pub fn go_idle(&mut self) -> Idle {
        if self.shared.done.load(Ordering::Acquire) {
            return Idle::Done;
        }
        debug_assert!(self.local.is_empty(), "go_idle with a non-empty deque");
        // Announce ourselves as a sleeper first, then look once more (see "Memory ordering").
        self.shared.sleeping[self.index].store(true, Ordering::SeqCst);
        self.shared.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.shared.any_work() {
            self.cancel_sleep();
            return Idle::Retry;
        }
        if self.active {
            self.active = false;
            if self.shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.cancel_sleep();
                self.shared.finish();
                return Idle::Done;
            }
        }
        self.stats.parks += 1;
        Idle::Park
    }

    fn cancel_sleep(&self) {
        let flag = &self.shared.sleeping[self.index];
        if flag
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Stop every worker (used when this worker panicked or hit a fatal error).
    pub fn abort(&self) {
        self.shared.panicked.store(true, Ordering::SeqCst);
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.shared.finish();
    }

    /// Declare that this worker, still active and holding unfinished tasks, has room for more
    /// work: it is marked as a sleeper (so the next push anywhere wakes it through [`Unpark`])
    /// without leaving the active count. Returns `false` when work is already visible (pop
    /// instead). After waiting, call [`Worker::unparked`].
    pub fn hungry(&mut self) -> bool {
        if self.shared.done.load(Ordering::Acquire) {
            return false;
        }
        self.shared.sleeping[self.index].store(true, Ordering::SeqCst);
        self.shared.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.shared.any_work() {
            self.cancel_sleep();
            return false;
        }
        true
    }

    /// Called after waking from a park: clears the sleeping mark if nobody else did.
    pub fn unparked(&mut self) {
        self.cancel_sleep();
    }
}

/// Run one closure per worker on its own OS thread and wait for all of them.
///
/// Each closure gets its [`Worker`]; `make` builds the per-thread closure from the worker index, on
/// the calling thread, before the threads start (so per-thread setup that must happen before any
/// pinning can be done there). If any closure panics, every other worker is stopped (its next `pop`
/// returns `Done`) and the first panic is re-raised on the calling thread after all threads joined.
pub fn run_threads<T, R, F>(sched: Scheduler<T>, mut make: impl FnMut(usize) -> F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: FnOnce(Worker<T>) -> R + Send,
{
    let workers = sched.into_workers();
    let jobs: Vec<(Worker<T>, F)> = workers
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w, make(i)))
        .collect();
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(w, f)| {
                worker_thread(&w)
                    .spawn_scoped(scope, move || run_worker(w, f))
                    .expect("spawn worker thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(Err))
            .collect::<Vec<_>>()
    });
    results_or_first_panic(outcomes)
}

/// The thread a worker runs on.
fn worker_thread<T>(w: &Worker<T>) -> std::thread::Builder {
    std::thread::Builder::new().name(format!("arsync-core-{}", w.index))
}

/// Run a worker's closure; if it panics, every other worker is stopped.
fn run_worker<T: Send, R>(w: Worker<T>, f: impl FnOnce(Worker<T>) -> R) -> std::thread::Result<R> {
    let shared = Arc::clone(&w.shared);
    let r = panic::catch_unwind(AssertUnwindSafe(|| f(w)));
    if r.is_err() {
        shared.panicked.store(true, Ordering::SeqCst);
        shared.cancelled.store(true, Ordering::SeqCst);
        shared.finish();
    }
    r
}

/// The workers' results in worker order, or the first panic re-raised.
fn results_or_first_panic<R>(outcomes: Vec<std::thread::Result<R>>) -> Vec<R> {
    let mut results = Vec::with_capacity(outcomes.len());
    for r in outcomes {
        match r {
            Ok(r) => results.push(r),
            Err(p) => panic::resume_unwind(p),
        }
    }
    results
}

/// [`run_threads`] for a process that exits right after the run (the command-line tool): the
/// threads are not joined but outlive the call, each parked for good once it has handed its
/// result back, and die with the process.
///
/// A thread that exits unmaps its stack (and its closure drops whatever it mapped) while the
/// process's other threads still run, and each unmapping flushes the TLB of every CPU the process
/// ran on (an IPI per CPU, costly in a VM); at process exit the kernel tears the whole address
/// space down once, with no other thread left to flush. Each call leaves its threads behind, so
/// a process that runs many runs uses [`run_threads`]. Panics are handled as there: the first one
/// is re-raised here once every thread has reported.
pub fn run_threads_lingering<T, R, F>(
    sched: Scheduler<T>,
    mut make: impl FnMut(usize) -> F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(Worker<T>) -> R + Send + 'static,
{
    let workers = sched.into_workers();
    let n = workers.len();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, w) in workers.into_iter().enumerate() {
        let f = make(i);
        let tx = tx.clone();
        worker_thread(&w)
            .spawn(move || {
                let _ = tx.send((i, run_worker(w, f)));
                drop(tx);
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn worker thread");
    }
    drop(tx);
    let mut slots: Vec<Option<std::thread::Result<R>>> = (0..n).map(|_| None).collect();
    for (i, r) in rx.iter().take(n) {
        slots[i] = Some(r);
    }
    results_or_first_panic(
        slots
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Box::new("a worker thread ended without its result"))))
            .collect(),
    )
}

/// A ready-made [`Unpark`] for plain OS threads: each worker parks with `std::thread::park` and
/// is woken with `Thread::unpark`. Register each thread with [`ThreadUnpark::register`] before it
/// parks for the first time.
#[derive(Default)]
pub struct ThreadUnpark {
    threads: std::sync::OnceLock<Vec<std::sync::OnceLock<std::thread::Thread>>>,
    n: AtomicUsize,
}

impl ThreadUnpark {
    /// A hook for `n` workers.
    pub fn new(n: usize) -> Arc<Self> {
        let s = Self::default();
        let _ = s
            .threads
            .set((0..n.max(1)).map(|_| std::sync::OnceLock::new()).collect());
        s.n.store(n, Ordering::Relaxed);
        Arc::new(s)
    }

    /// Record the calling thread as worker `index`.
    pub fn register(&self, index: usize) {
        if let Some(v) = self.threads.get() {
            let _ = v[index].set(std::thread::current());
        }
    }

    /// Park the calling worker thread (returns on unpark, or spuriously).
    pub fn park(&self) {
        std::thread::park();
    }
}

impl Unpark for Arc<ThreadUnpark> {
    fn unpark(&self, index: usize) {
        if let Some(t) = self.threads.get().and_then(|v| v[index].get()) {
            t.unpark();
        }
    }
}

/// Drive a worker with plain synchronous tasks on the current thread until the run ends: `run`
/// is called for every task and may push more through the `&mut Worker` it gets.
///
/// This is the loop a synchronous user needs; the engine has its own asynchronous loop built on the
/// same [`Worker::pop`] / [`Worker::go_idle`] protocol.
pub fn drive<T: Send>(
    mut worker: Worker<T>,
    unpark: &ThreadUnpark,
    mut run: impl FnMut(T, &mut Worker<T>),
) -> WorkerStats {
    unpark.register(worker.index());
    loop {
        match worker.pop() {
            Pop::Task(t) => run(t, &mut worker),
            Pop::Done => break,
            Pop::Empty => match worker.go_idle() {
                Idle::Park => {
                    // Park until woken; spurious wake-ups just loop back to pop.
                    if !worker.is_done()
                        && worker.shared.sleeping[worker.index].load(Ordering::SeqCst)
                    {
                        unpark.park();
                    }
                    worker.unparked();
                }
                Idle::Retry => {}
                Idle::Done => break,
            },
        }
    }
    worker.stats()
}
