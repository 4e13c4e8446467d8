//! `--mpi`: one rank of a copy spread over several processes (and hosts) by Open MPI's
//! `mpirun`. Every rank runs the ordinary thread-per-core engine on its host; this module owns
//! only what crosses ranks, and every MPI call is made on the rank's main thread.
//!
//! Phase 1, the walk: rank 0 starts with the transfer root; every idle rank asks a random other
//! rank for work (as libcircle does). A busy rank answers from its queue of directories, or, when
//! the queue is empty, lets its engine give away the next directories it enters (the engine's
//! [`engine::Delegate`]: the destination directory is made by the giver, listed, copied and
//! finished — metadata after every child — by the taker). Completion is detected with weights
//! (credit recovery): the root carries weight 1, a directory given away takes half of its giver's
//! weight, every finished piece returns its weight to rank 0, and the walk is over when rank 0
//! holds weight 1 again (exact: weights are powers of two, summed as a binary number).
//!
//! Phase 2, what needs every rank: files of at least twice `--split-chunk` are staged by the rank
//! that found them (a named temporary) and copied in chunks dealt to all ranks (each chunk to the
//! rank with the fewest bytes so far), then
//! finished (metadata, rename) by their stager; with `-H`, multi-link files are grouped by
//! (file-system id, inode) over all ranks (`st_dev` differs between the clients of a network file
//! system; `statvfs`'s `f_fsid` does not), each group is copied once by one rank and its other
//! names linked to it. Directories that received entries in phase 2 get their times again.
//! Rank 0 prints the merged statistics and writes `--stats-json` with per-rank figures.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mpi::collective::CommunicatorCollectives;
use mpi::datatype::PartitionMut;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::Communicator;

use engine::{Config, Report, Root};

const REQ: i32 = 1;
const WORK: i32 = 2;
const NOWORK: i32 = 3;
const WEIGHT: i32 = 4;
const DONE: i32 = 5;
const PROGRESS: i32 = 6;

/// A directory to copy (relative name as in item events) and its weight, `2^-weight`.
#[derive(Clone, Debug)]
struct Item {
    rel: PathBuf,
    weight: u32,
    /// The transfer root itself (rank 0's first item).
    root: bool,
}

/// A name of a multi-link inode (`-H`), kept for phase 2.
#[derive(Clone, Debug)]
struct LinkName {
    rel: PathBuf,
    fsid: u64,
    ino: u64,
    size: u64,
}

/// What the engine of this rank hands over to the MPI layer (shared with the core threads).
struct Share {
    /// Requests from idle ranks that the next directories entered should satisfy.
    hungry: AtomicUsize,
    /// The weight of the piece being copied.
    weight: Mutex<u32>,
    /// Directories given away, for the main thread to send.
    outbox: Mutex<Vec<Item>>,
    /// Large files for phase 2 (relative name, size).
    big: Mutex<Vec<(PathBuf, u64)>>,
    links: Mutex<Vec<LinkName>>,
    fsids: Mutex<HashMap<u64, u64>>,
    split_min: u64,
    hard_links: bool,
    root: Root,
    /// The live counters of the piece being copied, and the sum of the finished pieces'.
    live: Mutex<Option<engine::Progress>>,
    finished: Mutex<[u64; 5]>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("hungry", &self.hungry)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// This rank's progress: files, checked, bytes, seen files, seen bytes.
    fn progress(&self) -> [u64; 5] {
        let mut v = *self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &*self.live.lock().unwrap_or_else(|p| p.into_inner()) {
            let s = p.snapshot();
            for (a, b) in
                v.iter_mut()
                    .zip([s.files, s.checked, s.bytes, s.seen_files, s.seen_bytes])
            {
                *a += b;
            }
        }
        v
    }
}

impl engine::Delegate for Share {
    fn take_dir(&self, rel: &Path) -> bool {
        let mut h = self.hungry.load(Ordering::Acquire);
        loop {
            if h == 0 {
                return false;
            }
            match self
                .hungry
                .compare_exchange(h, h - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        let mut w = self.weight.lock().unwrap_or_else(|p| p.into_inner());
        *w += 1;
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Item {
                rel: rel.to_path_buf(),
                weight: *w,
                root: false,
            });
        true
    }

    fn take_file(&self, rel: &Path, st: &engine::Stat) -> bool {
        if self.hard_links && st.nlink > 1 {
            let fsid = *self
                .fsids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(st.dev)
                .or_insert_with(|| {
                    engine::remote::fs_id(&paths(&self.root, rel).0).unwrap_or(st.dev)
                });
            self.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(LinkName {
                    rel: rel.to_path_buf(),
                    fsid,
                    ino: st.ino,
                    size: st.size,
                });
            return true;
        }
        if self.split_min > 0 && st.size >= self.split_min {
            self.big
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((rel.to_path_buf(), st.size));
            return true;
        }
        false
    }
}

/// Source and destination paths of the entry named `rel` (as in item events) under `root`.
fn paths(root: &Root, rel: &Path) -> (PathBuf, PathBuf) {
    let tail = rel.strip_prefix(&root.rel).unwrap_or(rel);
    if tail.as_os_str().is_empty() {
        (root.src.clone(), root.dst.clone())
    } else {
        (root.src.join(tail), root.dst.join(tail))
    }
}

/// This rank's figures, gathered to rank 0.
#[derive(Clone, Copy, Debug, Default)]
struct RankFigures {
    /// Pieces of the tree (directories) this rank ran its engine on.
    pieces: u64,
    /// Directories this rank received from other ranks (steals).
    stolen: u64,
    /// Directories this rank gave to other ranks.
    given: u64,
    /// Work requests this rank sent.
    requests: u64,
    /// Chunks of large files this rank copied, and their bytes.
    chunks: u64,
    chunk_bytes: u64,
    /// Large files this rank staged and finished.
    split_files: u64,
    /// Hard-link names this rank linked in phase 2.
    linked: u64,
}

const FIELDS: usize = 44;

/// A report and the rank's figures as numbers (the same layout on every rank).
fn pack(r: &Report, f: &RankFigures) -> [u64; FIELDS] {
    [
        r.files,
        r.dirs,
        r.symlinks,
        r.specials,
        r.hard_links,
        r.bytes,
        r.errors,
        r.vanished,
        r.file_io_errors,
        r.skipped,
        r.unchanged,
        r.deleted,
        r.delete_skipped,
        r.created,
        r.verified,
        r.considered.files,
        r.considered.dirs,
        r.considered.symlinks,
        r.considered.specials,
        r.considered.bytes,
        r.interrupted as u64,
        r.elapsed.as_micros() as u64,
        f.pieces,
        f.stolen,
        f.given,
        f.requests,
        f.chunks,
        f.chunk_bytes,
        f.split_files,
        f.linked,
        r.transferred_size,
        r.considered.link_bytes,
        r.from_reference,
        r.considered.devices,
        r.created_by[0],
        r.created_by[1],
        r.created_by[2],
        r.created_by[3],
        r.created_by[4],
        r.deleted_by[0],
        r.deleted_by[1],
        r.deleted_by[2],
        r.deleted_by[3],
        r.deleted_by[4],
    ]
}

fn unpack(v: &[u64]) -> (Report, RankFigures) {
    let mut r = Report {
        files: v[0],
        dirs: v[1],
        symlinks: v[2],
        specials: v[3],
        hard_links: v[4],
        bytes: v[5],
        errors: v[6],
        vanished: v[7],
        file_io_errors: v[8],
        skipped: v[9],
        unchanged: v[10],
        deleted: v[11],
        delete_skipped: v[12],
        created: v[13],
        verified: v[14],
        interrupted: v[20] != 0,
        elapsed: Duration::from_micros(v[21]),
        transferred_size: v[30],
        from_reference: v[32],
        created_by: [v[34], v[35], v[36], v[37], v[38]],
        deleted_by: [v[39], v[40], v[41], v[42], v[43]],
        ..Report::default()
    };
    r.considered.files = v[15];
    r.considered.dirs = v[16];
    r.considered.symlinks = v[17];
    r.considered.specials = v[18];
    r.considered.bytes = v[19];
    r.considered.link_bytes = v[31];
    r.considered.devices = v[33];
    let f = RankFigures {
        pieces: v[22],
        stolen: v[23],
        given: v[24],
        requests: v[25],
        chunks: v[26],
        chunk_bytes: v[27],
        split_files: v[28],
        linked: v[29],
    };
    (r, f)
}

/// Add `b` into `a` (counts summed, the longest wall time kept).
fn add(a: &mut Report, b: &Report) {
    let mut x = pack(a, &RankFigures::default());
    let y = pack(b, &RankFigures::default());
    for (i, (p, q)) in x.iter_mut().zip(y).enumerate() {
        *p = match i {
            20 => *p | q,
            21 => (*p).max(q),
            _ => *p + q,
        };
    }
    let (mut sum, _) = unpack(&x);
    sum.fatal = a.fatal.take().or_else(|| b.fatal.clone());
    sum.cores = std::mem::take(&mut a.cores);
    sum.cores.extend(b.cores.iter().cloned());
    sum.delegated = a.delegated + b.delegated;
    *a = sum;
}

fn encode_items(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in items {
        let b = it.rel.as_os_str().as_bytes();
        out.extend_from_slice(&it.weight.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn decode_items(mut b: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let weight = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
        let rel = PathBuf::from(OsStr::from_bytes(&b[8..8 + len]));
        out.push(Item {
            rel,
            weight,
            root: false,
        });
        b = &b[8 + len..];
    }
    out
}

/// Weights returned to rank 0, kept as a sum of powers of two (`2^-k` for each `k` held).
#[derive(Default)]
struct Credit(BTreeSet<u32>);

impl Credit {
    fn add(&mut self, mut k: u32) {
        while k > 0 && self.0.remove(&k) {
            k -= 1;
        }
        self.0.insert(k);
    }
    fn whole(&self) -> bool {
        self.0.contains(&0)
    }
}

/// Length-prefixed byte strings, for the lists every rank gathers.
fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(b: &mut &'a [u8]) -> &'a [u8] {
    let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize;
    let v = &b[8..8 + n];
    *b = &b[8 + n..];
    v
}

fn take_u64(b: &mut &[u8]) -> u64 {
    u64::from_le_bytes(take(b).try_into().expect("8 bytes"))
}

/// Every rank's bytes, concatenated in rank order, on every rank.
fn all_gather_bytes<C: CommunicatorCollectives>(comm: &C, mine: &[u8]) -> Vec<Vec<u8>> {
    let n = comm.size() as usize;
    let mut counts = vec![0i32; n];
    comm.all_gather_into(&(mine.len() as i32), &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect();
    let total: i32 = counts.iter().sum();
    if total == 0 {
        return vec![Vec::new(); n];
    }
    let mut buf = vec![0u8; total as usize];
    {
        let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
        comm.all_gather_varcount_into(mine, &mut part);
    }
    counts
        .iter()
        .zip(&displs)
        .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
        .collect()
}

/// Run this rank; returns the exit code every rank agrees on.
pub fn run(
    parsed: &crate::cli::Parsed,
    observer: Arc<dyn engine::Observer>,
    stop: &engine::Stop,
) -> i32 {
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        errln!("arsync: --mpi: MPI could not be initialised (run it under mpirun)");
        return 1;
    };
    let world = universe.world();
    let me = world.rank();
    let n = world.size();
    let started = Instant::now();
    let base = &parsed.config;
    let root = base.roots[0].clone();
    let share = Arc::new(Share {
        hungry: AtomicUsize::new(0),
        weight: Mutex::new(0),
        outbox: Mutex::new(Vec::new()),
        big: Mutex::new(Vec::new()),
        links: Mutex::new(Vec::new()),
        fsids: Mutex::new(HashMap::new()),
        split_min: if base.dry_run {
            0
        } else {
            2 * base.split_chunk
        },
        hard_links: base.hard_links && !base.dry_run,
        root: root.clone(),
        live: Mutex::new(None),
        finished: Mutex::new([0; 5]),
    });
    let mut report = Report::default();
    let mut figs = RankFigures::default();

    // Phase 1: the walk, with work stealing between ranks.
    let (to_runner, runner_rx) = mpsc::channel::<Item>();
    let (runner_tx, from_runner) = mpsc::channel::<(u32, Report)>();
    std::thread::scope(|s| {
        let runner_share = Arc::clone(&share);
        let observer = Arc::clone(&observer);
        let root = root.clone();
        s.spawn(move || {
            for item in runner_rx {
                let mut cfg = base.clone();
                if !item.root {
                    let (src, dst) = paths(&root, &item.rel);
                    cfg.roots = vec![Root {
                        src,
                        dst,
                        rel: item.rel.clone(),
                        select: None,
                    }];
                    cfg.create_dest_dir = None;
                }
                cfg.hard_links = false;
                cfg.delegate = Some(Arc::clone(&runner_share) as Arc<dyn engine::Delegate>);
                *runner_share
                    .weight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = item.weight;
                let live = engine::Progress::new();
                *runner_share.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
                let mut r = engine::run_with_progress(&cfg, Arc::clone(&observer), stop, &live);
                {
                    let s = live.snapshot();
                    let mut f = runner_share
                        .finished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for (a, b) in
                        f.iter_mut()
                            .zip([s.files, s.checked, s.bytes, s.seen_files, s.seen_bytes])
                    {
                        *a += b;
                    }
                    *runner_share.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                if !item.root {
                    // The giver counted this directory already.
                    r.considered.dirs = r.considered.dirs.saturating_sub(1);
                }
                let w = *runner_share
                    .weight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if runner_tx.send((w, r)).is_err() {
                    break;
                }
            }
        });
        walk(
            &world,
            &share,
            (&to_runner, &from_runner),
            parsed.info.level(crate::info::Flag::Progress) > 1 && !parsed.quiet,
            &mut report,
            &mut figs,
        );
        drop(to_runner);
    });
    if engine::hooks::ENABLED
        && std::env::var("ARSYNC_TEST_HOOK").is_ok_and(|h| h == format!("mpi-rank-dies={me}"))
    {
        // Test builds only: this rank dies between the walk and the large files.
        errln!("arsync: test hook: rank {me} dies");
        die();
    }
    world.barrier();

    // Phase 2: large files in chunks over every rank, hard-link groups, then times.
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    let big = std::mem::take(&mut *share.big.lock().unwrap_or_else(|p| p.into_inner()));
    split_files(
        &world,
        base,
        &root,
        big,
        &mut report,
        &mut figs,
        &mut touched,
    );
    let links = std::mem::take(&mut *share.links.lock().unwrap_or_else(|p| p.into_inner()));
    if base.hard_links {
        link_groups(
            &world,
            base,
            &root,
            links,
            &observer,
            stop,
            &mut report,
            &mut figs,
            &mut touched,
        );
    }
    world.barrier();
    if !base.dry_run {
        for rel in &touched {
            let (src, dst) = paths(&root, rel);
            if let Err(e) = engine::remote::restore_dir_times(base, &src, &dst) {
                errln!("arsync: set times {}: {e}", dst.display());
                report.errors += 1;
            }
        }
    }
    report.elapsed = started.elapsed();

    // Merged figures on every rank (all agree on the exit code); rank 0 prints them.
    let mine = pack(&report, &figs);
    let mut all = vec![0u64; FIELDS * n as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    let mut merged = Report::default();
    let mut per_rank = Vec::new();
    for chunk in all.chunks(FIELDS) {
        let (r, f) = unpack(chunk);
        add(&mut merged, &r);
        per_rank.push((r, f));
    }
    merged.elapsed = started.elapsed();
    merged.latency = None;
    // Per-core figures stay local: rank 0's own core threads, per piece it ran.
    merged.cores = std::mem::take(&mut report.cores);
    let code = crate::output::exit_code(&merged);
    if me == 0 {
        if parsed.info.level(crate::info::Flag::Progress) > 1 && !parsed.quiet {
            let sum = engine::ProgressSnapshot {
                files: merged.files,
                checked: merged.considered.files,
                bytes: merged.bytes,
                seen_files: merged.considered.files,
                seen_bytes: merged.considered.bytes,
                scanning: false,
                other: 0,
            };
            outln!(
                "{} [{n} ranks]",
                crate::progress::line(&sum, merged.elapsed, true)
            );
        }
        print_merged(parsed, &merged, &per_rank, code);
    }
    code
}

/// A crash for the test hooks: gone at once, without MPI's finalisation (and without the core
/// dump of an abort, which would keep the process, and its temporaries, alive a while longer).
fn die() -> ! {
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(86) }
}

/// Phase 1 on the main thread: feed the runner, answer and send work requests, return weights.
fn walk(
    world: &mpi::topology::SimpleCommunicator,
    share: &Share,
    (to_runner, from_runner): (&mpsc::Sender<Item>, &mpsc::Receiver<(u32, Report)>),
    show_progress: bool,
    report: &mut Report,
    figs: &mut RankFigures,
) {
    let me = world.rank();
    let n = world.size();
    // `--info=progress2`: every rank sends its counters to rank 0 once a second; rank 0 prints
    // the sum.
    let start = Instant::now();
    let mut next_progress = start + Duration::from_secs(1);
    let mut ranks_progress = vec![[0u64; 5]; n as usize];
    let hold_outbox = engine::hooks::ENABLED
        && std::env::var("ARSYNC_TEST_HOOK").is_ok_and(|h| h == "mpi-outbox-after-piece");
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut pending: VecDeque<i32> = VecDeque::new();
    let mut busy = false;
    let mut asked = false;
    let mut credit = Credit::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (me as u64 + 1);
    let mut backoff = Duration::from_micros(200);
    let mut next_ask = Instant::now();
    let send = |to: i32, tag: i32, body: &[u8]| world.process_at_rank(to).send_with_tag(body, tag);
    if me == 0 {
        // Every other rank's first request, before the root starts: the first directories the
        // engine enters go to them.
        for _ in 1..n {
            let (_, st) = world.any_process().receive_vec_with_tag::<u8>(REQ);
            pending.push_back(st.source_rank());
        }
        share.hungry.store(pending.len(), Ordering::Release);
        busy = true;
        to_runner
            .send(Item {
                rel: PathBuf::new(),
                weight: 0,
                root: true,
            })
            .expect("the runner lives");
    } else {
        send(0, REQ, &[]);
        figs.requests += 1;
        asked = true;
    }
    loop {
        let mut progressed = false;
        // A finished piece: its weight goes back to rank 0.
        loop {
            let (w, r) = match from_runner.try_recv() {
                Ok(x) => x,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("arsync: rank {me}: the engine thread failed")
                }
            };
            progressed = true;
            busy = false;
            figs.pieces += 1;
            add(report, &r);
            if me == 0 {
                credit.add(w);
            } else {
                send(0, WEIGHT, &w.to_le_bytes());
            }
        }
        // Directories the engine gave away (after the results: a finished piece gives no more).
        // The test hook holds them until the piece has ended, the ordering that once sent them
        // to this rank's own runner.
        let given = if hold_outbox && busy {
            Vec::new()
        } else {
            std::mem::take(&mut *share.outbox.lock().unwrap_or_else(|p| p.into_inner()))
        };
        if !given.is_empty() {
            progressed = true;
            queue.extend(given);
        }
        let mut done = false;
        while let Some((msg, st)) = world.any_process().immediate_matched_probe() {
            progressed = true;
            let (from, tag) = (st.source_rank(), st.tag());
            let (body, _) = (msg, st).matched_receive_vec::<u8>();
            match tag {
                REQ if !queue.is_empty() && (busy || queue.len() > 1) => {
                    // Half of what waits here; an idle rank keeps one for itself.
                    let k = queue
                        .len()
                        .div_ceil(2)
                        .min(queue.len() - usize::from(!busy));
                    let items: Vec<Item> = queue.drain(..k.max(1)).collect();
                    figs.given += items.len() as u64;
                    send(from, WORK, &encode_items(&items));
                }
                REQ if busy => {
                    pending.push_back(from);
                    share.hungry.fetch_add(1, Ordering::AcqRel);
                }
                REQ => send(from, NOWORK, &[]),
                WORK => {
                    asked = false;
                    backoff = Duration::from_micros(200);
                    let items = decode_items(&body);
                    figs.stolen += items.len() as u64;
                    queue.extend(items);
                }
                NOWORK => {
                    asked = false;
                    next_ask = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
                WEIGHT => credit.add(u32::from_le_bytes(body[..4].try_into().expect("4"))),
                DONE => done = true,
                PROGRESS => {
                    for (i, v) in ranks_progress[from as usize].iter_mut().enumerate() {
                        *v = u64::from_le_bytes(body[i * 8..i * 8 + 8].try_into().expect("8"));
                    }
                }
                t => errln!("arsync: rank {me}: unexpected message tag {t}"),
            }
        }
        if done {
            return;
        }
        // Requests waiting for a directory first (the engine gave these away for them), then
        // this rank's own runner.
        while !pending.is_empty() && !queue.is_empty() {
            let to = pending.pop_front().expect("not empty");
            let it = queue.pop_back().expect("not empty");
            send(to, WORK, &encode_items(std::slice::from_ref(&it)));
            figs.given += 1;
        }
        if !busy && let Some(it) = queue.pop_front() {
            busy = true;
            progressed = true;
            to_runner.send(it).expect("the runner lives");
        }
        if !busy && !pending.is_empty() {
            // Nothing more will be given from here.
            share.hungry.store(0, Ordering::Release);
            for to in pending.drain(..) {
                send(to, NOWORK, &[]);
            }
        }
        if show_progress && Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            let mine = share.progress();
            if me == 0 {
                ranks_progress[0] = mine;
                let mut sum = engine::ProgressSnapshot {
                    scanning: true,
                    ..Default::default()
                };
                for r in &ranks_progress {
                    sum.files += r[0];
                    sum.checked += r[1];
                    sum.bytes += r[2];
                    sum.seen_files += r[3];
                    sum.seen_bytes += r[4];
                }
                outln!(
                    "{} [{n} ranks]",
                    crate::progress::line(&sum, start.elapsed(), false)
                );
            } else {
                let body: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
                send(0, PROGRESS, &body);
            }
        }
        if me == 0 && credit.whole() && !busy && queue.is_empty() {
            for r in 1..n {
                send(r, DONE, &[]);
            }
            return;
        }
        if !busy && queue.is_empty() && !asked && n > 1 && Instant::now() >= next_ask {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut to = (rng % (n as u64 - 1)) as i32;
            if to >= me {
                to += 1;
            }
            send(to, REQ, &[]);
            figs.requests += 1;
            asked = true;
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Phase 2a: every large file staged by its finder, its chunks dealt round-robin to every rank,
/// then finished by its finder.
fn split_files(
    world: &mpi::topology::SimpleCommunicator,
    cfg: &Config,
    root: &Root,
    big: Vec<(PathBuf, u64)>,
    report: &mut Report,
    figs: &mut RankFigures,
    touched: &mut BTreeSet<PathBuf>,
) {
    let me = world.rank();
    let n = world.size() as usize;
    let mut mine = Vec::new();
    let mut out = Vec::new();
    for (rel, _) in big {
        let (src, dst) = paths(root, &rel);
        match engine::remote::stage(&src, &dst) {
            Ok(s) => {
                put(&mut out, rel.as_os_str().as_bytes());
                put(&mut out, s.tmp.as_os_str().as_bytes());
                put(&mut out, &s.size.to_le_bytes());
                put(&mut out, &(s.mtime.0 as u64).to_le_bytes());
                put(&mut out, &(s.mtime.1 as u64).to_le_bytes());
                mine.push((rel, s));
            }
            Err(e) => {
                errln!("arsync: stage {}: {e}", dst.display());
                report.errors += 1;
            }
        }
    }
    // (owner, relative name, staged) for every large file of the run, in rank order.
    let mut files = Vec::new();
    for (owner, bytes) in all_gather_bytes(world, &out).into_iter().enumerate() {
        let mut b = &bytes[..];
        while !b.is_empty() {
            let rel = PathBuf::from(OsStr::from_bytes(take(&mut b)));
            let tmp = PathBuf::from(OsStr::from_bytes(take(&mut b)));
            let size = take_u64(&mut b);
            let mtime = (take_u64(&mut b) as i64, take_u64(&mut b) as i64);
            let (src, dst) = paths(root, &rel);
            files.push((
                owner,
                rel,
                engine::remote::Staged {
                    src,
                    dst,
                    tmp,
                    size,
                    mtime,
                },
            ));
        }
    }
    if engine::hooks::ENABLED
        && std::env::var("ARSYNC_TEST_HOOK").is_ok_and(|h| h == "mpi-dies-staged")
    {
        // Test builds only: every rank dies with the large files staged, nothing copied.
        errln!("arsync: test hook: rank {me} dies after staging");
        die();
    }
    if files.is_empty() {
        return;
    }
    let chunk = cfg.split_chunk.max(1 << 20);
    let mut chunks = Vec::new();
    for (i, (_, _, s)) in files.iter().enumerate() {
        let mut off = 0;
        while off < s.size {
            chunks.push((i, off, chunk.min(s.size - off)));
            off += chunk;
        }
    }
    // Dealt to the rank with the fewest bytes so far (the same on every rank): round-robin
    // would give one rank every short last chunk.
    let mut load = vec![0u64; n];
    let mut my_chunks = Vec::new();
    for c in chunks {
        let r = (0..n).min_by_key(|&r| (load[r], r)).expect("n > 0");
        load[r] += c.2;
        if r == me as usize {
            my_chunks.push(c);
        }
    }
    // This rank's chunks on as many threads as it has cores.
    let threads = if cfg.threads == 0 {
        engine::default_threads()
    } else {
        cfg.threads
    };
    let next = AtomicUsize::new(0);
    let failed: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    let copied = Mutex::new((0u64, 0u64));
    std::thread::scope(|s| {
        for _ in 0..threads.min(my_chunks.len()) {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, off, len)) = my_chunks.get(j) else {
                        break;
                    };
                    match engine::remote::copy_range(&files[i].2, off, len) {
                        Ok(b) => {
                            let mut c = copied.lock().unwrap_or_else(|p| p.into_inner());
                            c.0 += 1;
                            c.1 += b;
                        }
                        Err(e) => {
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(i)
                                .or_insert_with(|| e.to_string());
                        }
                    }
                }
            });
        }
    });
    let (c, b) = copied.into_inner().unwrap_or_else(|p| p.into_inner());
    figs.chunks += c;
    figs.chunk_bytes += b;
    report.bytes += b;
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for (i, e) in &failed {
        put(&mut out, &(*i as u64).to_le_bytes());
        put(&mut out, e.as_bytes());
    }
    let mut errors: BTreeMap<usize, String> = BTreeMap::new();
    for bytes in all_gather_bytes(world, &out) {
        let mut b = &bytes[..];
        while !b.is_empty() {
            let i = take_u64(&mut b) as usize;
            let e = String::from_utf8_lossy(take(&mut b)).into_owned();
            errors.entry(i).or_insert(e);
        }
    }
    for (i, (owner, rel, s)) in files.iter().enumerate() {
        if *owner != me as usize {
            continue;
        }
        let r = match errors.get(&i) {
            Some(e) => Err(std::io::Error::other(e.clone())),
            None => engine::remote::finish(cfg, s),
        };
        match r {
            Ok(()) => {
                report.files += 1;
                figs.split_files += 1;
                if let Some(p) = rel.parent() {
                    touched.insert(p.to_path_buf());
                }
            }
            Err(e) => {
                engine::remote::abandon(s);
                errln!("arsync: copy {}: {e}", s.src.display());
                report.errors += 1;
            }
        }
    }
}

/// Phase 2b (`-H`): the names of every multi-link inode, from every rank, grouped by
/// (file-system id, inode); each group goes to one rank (the biggest groups first, to the rank
/// with the fewest bytes), which copies its first name and links the others to it.
#[allow(clippy::too_many_arguments)]
fn link_groups(
    world: &mpi::topology::SimpleCommunicator,
    cfg: &Config,
    root: &Root,
    names: Vec<LinkName>,
    observer: &Arc<dyn engine::Observer>,
    stop: &engine::Stop,
    report: &mut Report,
    figs: &mut RankFigures,
    touched: &mut BTreeSet<PathBuf>,
) {
    let me = world.rank() as usize;
    let n = world.size() as usize;
    let mut out = Vec::new();
    for l in &names {
        put(&mut out, l.rel.as_os_str().as_bytes());
        put(&mut out, &l.fsid.to_le_bytes());
        put(&mut out, &l.ino.to_le_bytes());
        put(&mut out, &l.size.to_le_bytes());
    }
    let mut groups: BTreeMap<(u64, u64), (u64, Vec<PathBuf>)> = BTreeMap::new();
    for bytes in all_gather_bytes(world, &out) {
        let mut b = &bytes[..];
        while !b.is_empty() {
            let rel = PathBuf::from(OsStr::from_bytes(take(&mut b)));
            let fsid = take_u64(&mut b);
            let ino = take_u64(&mut b);
            let size = take_u64(&mut b);
            let g = groups.entry((fsid, ino)).or_insert((size, Vec::new()));
            g.1.push(rel);
        }
    }
    let mut order: Vec<_> = groups.into_values().collect();
    for g in &mut order {
        g.1.sort();
    }
    order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut load = vec![0u64; n];
    let mut mine = Vec::new();
    for (size, names) in order {
        let r = (0..n).min_by_key(|&r| (load[r], r)).expect("n > 0");
        load[r] += size.max(1);
        if r == me {
            mine.push((size, names));
        }
    }
    if mine.is_empty() {
        return;
    }
    // The first name of each group: one engine run copies them all.
    let mut c = cfg.clone();
    c.hard_links = false;
    c.delegate = None;
    c.create_dest_dir = None;
    c.delete = None;
    c.roots = mine
        .iter()
        .map(|(_, names)| {
            let (src, dst) = paths(root, &names[0]);
            Root {
                src,
                dst,
                rel: names[0].clone(),
                select: None,
            }
        })
        .collect();
    let mut r = engine::run_with_stop(&c, Arc::clone(observer), stop);
    // Phase 1 counted these names when it handed them over.
    r.considered.files = r.considered.files.saturating_sub(mine.len() as u64);
    r.considered.bytes = r
        .considered
        .bytes
        .saturating_sub(mine.iter().map(|g| g.0).sum::<u64>());
    add(report, &r);
    for (_, names) in &mine {
        let (_, leader) = paths(root, &names[0]);
        if let Some(p) = names[0].parent() {
            touched.insert(p.to_path_buf());
        }
        for other in &names[1..] {
            let (_, dst) = paths(root, other);
            let r = engine::remote::link_over(&leader, &dst);
            match r {
                Ok(false) => {}
                Ok(true) => {
                    figs.linked += 1;
                    report.hard_links += 1;
                    if let Some(p) = other.parent() {
                        touched.insert(p.to_path_buf());
                    }
                }
                Err(e) => {
                    errln!(
                        "arsync: link {} => {}: {e}",
                        dst.display(),
                        leader.display()
                    );
                    report.errors += 1;
                }
            }
        }
    }
}

/// Rank 0: the merged statistics (`--stats`, `-v` summary, `--stats-json` with a `ranks` array).
fn print_merged(
    parsed: &crate::cli::Parsed,
    merged: &Report,
    per_rank: &[(Report, RankFigures)],
    code: i32,
) {
    if let Some(path) = &parsed.stats_json {
        let doc = crate::output::stats_json(&parsed.config, merged, code);
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("our own JSON");
        let ranks: Vec<serde_json::Value> = per_rank
            .iter()
            .enumerate()
            .map(|(i, (r, f))| {
                serde_json::json!({
                    "rank": i,
                    "files": r.files,
                    "bytes": r.bytes,
                    "dirs": r.dirs,
                    "errors": r.errors + r.vanished + r.file_io_errors,
                    "pieces": f.pieces,
                    "steals": f.stolen,
                    "given": f.given,
                    "requests": f.requests,
                    "chunks": f.chunks,
                    "chunk_bytes": f.chunk_bytes,
                    "split_files": f.split_files,
                    "linked": f.linked,
                    "seconds": r.elapsed.as_secs_f64(),
                })
            })
            .collect();
        v["mpi"] = serde_json::json!({
            "ranks": ranks,
            "steals": per_rank.iter().map(|(_, f)| f.stolen).sum::<u64>(),
        });
        let text = serde_json::to_string_pretty(&v).expect("serialisable");
        if let Err(e) = std::fs::write(path, text + "\n") {
            errln!("arsync: cannot write --stats-json {}: {e}", path.display());
        }
    }
    crate::output::end_of_run(parsed, merged);
    if parsed.info.level(crate::info::Flag::Stats) > 1 && !parsed.quiet {
        outln!("MPI ranks: {}", per_rank.len());
        for (i, (r, f)) in per_rank.iter().enumerate() {
            outln!(
                "  rank {i}: {} files, {} bytes, {} pieces, {} steals, {} chunks",
                r.files,
                r.bytes,
                f.pieces,
                f.stolen,
                f.chunks
            );
        }
    }
    if code != 0 {
        errln!(
            "arsync error: {} (code {code})",
            crate::output::code_text(code)
        );
    }
}
