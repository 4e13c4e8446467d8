//! Per-operation latency histograms for `--stats-json` (hdrhistogram, one set per core, merged at
//! the end: nothing shared while the run goes). Measured only when asked
//! ([`crate::Config::measure`]); otherwise every timer is `None` and costs a branch.

use std::cell::RefCell;
use std::time::Instant;

use hdrhistogram::Histogram;

/// The operations timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// One `getdents64` batch of a source directory.
    Getdents,
    /// Opening a source file.
    Open,
    /// A stat: `fstat` of an open source, or the quick check's `lstat` pair.
    Stat,
    /// Staging a destination file (`O_TMPFILE`, temporary name, partial file).
    Create,
    /// Moving one file's data (inline, ring, `copy_file_range` or clone), start to end.
    Data,
    /// Setting metadata (owner, xattrs/ACLs, mode, times) on a file or directory.
    Meta,
    /// Making a file visible (`linkat`/`renameat`).
    Publish,
    /// Creating or opening a destination directory.
    Mkdir,
    /// Deleting one extraneous entry (`--delete`).
    Delete,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 9] = [
        Op::Getdents,
        Op::Open,
        Op::Stat,
        Op::Create,
        Op::Data,
        Op::Meta,
        Op::Publish,
        Op::Mkdir,
        Op::Delete,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Getdents => "getdents",
            Op::Open => "open",
            Op::Stat => "stat",
            Op::Create => "create",
            Op::Data => "data",
            Op::Meta => "metadata",
            Op::Publish => "publish",
            Op::Mkdir => "mkdir",
            Op::Delete => "delete",
        }
    }

    /// The phase it belongs to: scan, copy, metadata or delete.
    pub fn phase(self) -> &'static str {
        match self {
            Op::Getdents | Op::Stat => "scan",
            Op::Open | Op::Create | Op::Data | Op::Publish | Op::Mkdir => "copy",
            Op::Meta => "metadata",
            Op::Delete => "delete",
        }
    }
}

/// One histogram per operation, in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies(pub Vec<(Op, Histogram<u64>)>);

impl Latencies {
    fn new() -> Self {
        Self(
            Op::ALL
                .iter()
                .map(|&op| {
                    (
                        op,
                        Histogram::new_with_bounds(1, 3_600_000_000_000, 2)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
        )
    }

    /// Add another core's histograms.
    pub fn merge(&mut self, other: &Latencies) {
        for ((_, a), (_, b)) in self.0.iter_mut().zip(&other.0) {
            let _ = a.add(b);
        }
    }
}

/// A core's recorder.
pub(crate) struct Recorder(Option<RefCell<Latencies>>);

impl Recorder {
    pub fn new(on: bool) -> Self {
        Self(on.then(|| RefCell::new(Latencies::new())))
    }

    /// Start timing (`None` when not measuring).
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| Instant::now())
    }

    /// Record the time since `t` for `op`.
    #[inline]
    pub fn record(&self, op: Op, t: Option<Instant>) {
        if let (Some(l), Some(t)) = (&self.0, t) {
            let ns = t.elapsed().as_nanos().clamp(1, 3_600_000_000_000) as u64;
            let mut l = l.borrow_mut();
            let i = Op::ALL.iter().position(|&o| o == op).unwrap_or(0);
            let _ = l.0[i].1.record(ns);
        }
    }

    pub fn into_inner(self) -> Option<Latencies> {
        self.0.map(RefCell::into_inner)
    }
}
