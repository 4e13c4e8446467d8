//! Which CPU each core thread pins itself to, so that several arsync runs on one host (parallel
//! jobs, MPI ranks, a `--threads 4` run beside another) spread over the CPUs instead of all
//! starting at the first one.
//!
//! Pinning core thread `i` to the `i`-th allowed CPU put every concurrent run's first core on
//! the same CPU: two `--threads 1` runs shared one CPU while the other idled (each took 0.47 s
//! of wall time for 0.22 CPU-s on `small`; 0.27–0.30 s spread out). A run now *claims* a slot
//! for each core thread: a name `arsync-cpu-<cpu>-<level>` in the abstract Unix socket
//! namespace, bound by a datagram socket it holds until the run ends. The kernel keeps such a
//! name unique within the network namespace and frees it when its socket closes, also when the
//! process is killed, so no file is left behind and no cleanup is needed. Slots are taken in
//! order of level, then CPU: a run takes the free CPUs at level 0 first (the CPUs no other run
//! holds), then shares the least shared ones; on an otherwise idle host a run's threads land
//! where they always did (thread `i` on the `i`-th allowed CPU, oversubscribed runs wrapping
//! round). Other programs' load is not seen (use `taskset` or `--no-pin` for that); runs in other
//! network namespaces (containers) do not see each other's claims.
//!
//! When claiming is impossible (no socket: out of descriptors, a sandbox), or the host is so
//! crowded that a few levels above the run's own need are all taken, the remaining threads are
//! placed as before, by index, unclaimed.

use std::io;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Levels tried above those a run needs for itself before it stops claiming.
const EXTRA_LEVELS: usize = 8;

/// The outcome of one attempt to claim a slot.
pub(crate) enum Claimed {
    /// The slot is this run's until the value is dropped.
    Held(OwnedFd),
    /// Another run holds it.
    Taken,
    /// Claiming does not work here; stop trying.
    Unavailable,
}

/// Where the core threads run, and the claims that say so to other runs.
pub(crate) struct Placement {
    /// The CPU of each core thread (`None`: not pinned).
    pub cpus: Vec<Option<usize>>,
    /// Held for the whole run; closing them releases the slots.
    _claims: Vec<OwnedFd>,
}

impl Placement {
    /// No pinning (`--no-pin`, or the allowed CPUs could not be read).
    pub fn unpinned(threads: usize) -> Self {
        Self {
            cpus: vec![None; threads],
            _claims: Vec::new(),
        }
    }
}

/// Place `threads` core threads on the `allowed` CPUs, claiming each slot with `claim(cpu,
/// level)`.
pub(crate) fn place(
    threads: usize,
    allowed: &[usize],
    mut claim: impl FnMut(usize, usize) -> Claimed,
) -> Placement {
    if allowed.is_empty() {
        return Placement::unpinned(threads);
    }
    let mut cpus = Vec::with_capacity(threads);
    let mut claims = Vec::with_capacity(threads);
    let levels = threads.div_ceil(allowed.len()) + EXTRA_LEVELS;
    'claiming: for level in 0..levels {
        for &cpu in allowed {
            if cpus.len() == threads {
                break 'claiming;
            }
            match claim(cpu, level) {
                Claimed::Held(fd) => {
                    cpus.push(Some(cpu));
                    claims.push(fd);
                }
                Claimed::Taken => {}
                Claimed::Unavailable => break 'claiming,
            }
        }
    }
    // Whatever could not be claimed goes where it always went: by index.
    for i in cpus.len()..threads {
        cpus.push(Some(allowed[i % allowed.len()]));
    }
    Placement {
        cpus,
        _claims: claims,
    }
}

/// Claim slot (`cpu`, `level`) in the abstract socket namespace, under `prefix` (`arsync`; a
/// test build may set another through `ARSYNC_TEST_CPU_CLAIMS` to keep its runs apart from the
/// other tests').
pub(crate) fn claim_slot(prefix: &str, cpu: usize, level: usize) -> Claimed {
    let name = format!("{prefix}-cpu-{cpu}-{level}");
    let Ok(addr) = SocketAddr::from_abstract_name(name.as_bytes()) else {
        return Claimed::Unavailable;
    };
    match UnixDatagram::bind_addr(&addr) {
        Ok(sock) => Claimed::Held(sock.into()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Claimed::Taken,
        Err(_) => Claimed::Unavailable,
    }
}

/// The namespace prefix of the claims.
pub(crate) fn claim_prefix() -> String {
    #[cfg(feature = "test-hooks")]
    if let Ok(p) = std::env::var("ARSYNC_TEST_CPU_CLAIMS") {
        return p;
    }
    "arsync".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn fd() -> OwnedFd {
        std::fs::File::open("/").expect("open /").into()
    }

    /// Place a run on a host where other runs hold the `taken` slots.
    fn run(threads: usize, allowed: &[usize], taken: &[(usize, usize)]) -> Vec<Option<usize>> {
        let mut held: HashSet<(usize, usize)> = taken.iter().copied().collect();
        let p = place(threads, allowed, |cpu, level| {
            if held.insert((cpu, level)) {
                Claimed::Held(fd())
            } else {
                Claimed::Taken
            }
        });
        assert_eq!(
            p._claims.len(),
            p.cpus.len(),
            "every placed thread holds its claim"
        );
        p.cpus
    }

    #[test]
    fn an_idle_host_places_by_index() {
        assert_eq!(run(2, &[0, 1, 2, 3], &[]), [Some(0), Some(1)]);
        assert_eq!(
            run(4, &[2, 5, 7, 9], &[]),
            [Some(2), Some(5), Some(7), Some(9)]
        );
        // Oversubscribed: wraps round, as before.
        assert_eq!(
            run(5, &[0, 1], &[]),
            [Some(0), Some(1), Some(0), Some(1), Some(0)]
        );
    }

    #[test]
    fn a_second_run_takes_the_cpus_the_first_left_free() {
        // The first run holds CPUs 0 and 1.
        assert_eq!(run(2, &[0, 1, 2, 3], &[(0, 0), (1, 0)]), [Some(2), Some(3)]);
        // A one-thread run beside a one-thread run.
        assert_eq!(run(1, &[0, 1], &[(0, 0)]), [Some(1)]);
        // All CPUs held once: share the least shared, in order.
        assert_eq!(
            run(3, &[0, 1, 2], &[(0, 0), (1, 0), (2, 0), (0, 1)]),
            [Some(1), Some(2), Some(0)]
        );
        // A hole left by a run that ended is filled first.
        assert_eq!(run(1, &[0, 1, 2], &[(0, 0), (2, 0)]), [Some(1)]);
    }

    #[test]
    fn without_claims_threads_go_by_index() {
        let p = place(3, &[4, 6], |_, _| Claimed::Unavailable);
        assert_eq!(p.cpus, [Some(4), Some(6), Some(4)]);
        assert!(p._claims.is_empty());
        // Claiming breaks down midway: what was claimed stays, the rest goes by index.
        let mut n = 0;
        let p = place(3, &[4, 6, 8], |_, _| {
            n += 1;
            if n == 1 {
                Claimed::Held(fd())
            } else {
                Claimed::Unavailable
            }
        });
        assert_eq!(p.cpus, [Some(4), Some(6), Some(8)]);
        assert_eq!(p._claims.len(), 1);
    }

    #[test]
    fn a_crowded_host_stops_claiming_after_a_few_levels() {
        let mut tries = 0;
        let p = place(2, &[0, 1], |_, _| {
            tries += 1;
            Claimed::Taken
        });
        assert_eq!(p.cpus, [Some(0), Some(1)]);
        assert_eq!(tries, 2 * (1 + EXTRA_LEVELS));
    }

    #[test]
    fn no_allowed_cpus_means_unpinned() {
        let p = place(2, &[], |_, _| panic!("nothing to claim"));
        assert_eq!(p.cpus, [None, None]);
    }

    #[test]
    fn a_real_claim_is_exclusive_until_dropped() {
        let prefix = format!("arsync-unit-{}", std::process::id());
        let Claimed::Held(first) = claim_slot(&prefix, 3, 0) else {
            panic!("a fresh slot could not be claimed");
        };
        assert!(matches!(claim_slot(&prefix, 3, 0), Claimed::Taken));
        assert!(matches!(claim_slot(&prefix, 3, 1), Claimed::Held(_)));
        drop(first);
        assert!(matches!(claim_slot(&prefix, 3, 0), Claimed::Held(_)));
    }
}
