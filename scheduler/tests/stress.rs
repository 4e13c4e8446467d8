//! Stress tests of the scheduler with plain integers as tasks: every task runs exactly once, the run
//! terminates, panics propagate, and parked workers are woken by late work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use scheduler::{
    Idle, Pop, Scheduler, ThreadUnpark, Worker, WorkerStats, drive, run_threads,
    run_threads_lingering,
};

/// Run a binary-tree task space: task `i` spawns `2i+1` and `2i+2` below `n`. Returns per-id run
/// counts and the worker stats.
fn run_tree(threads: usize, n: usize) -> (Vec<AtomicU8>, Vec<WorkerStats>) {
    let seen: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    if n > 0 {
        sched.inject(0usize);
    }
    let stats = run_threads(sched, |_| {
        let unpark = Arc::clone(&unpark);
        let seen = &seen;
        move |w: Worker<usize>| {
            drive(w, &unpark, |i, w| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                for c in [2 * i + 1, 2 * i + 2] {
                    if c < n {
                        w.push(c);
                    }
                }
            })
        }
    });
    (seen, stats)
}

fn assert_exactly_once(seen: &[AtomicU8]) {
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.load(Ordering::Relaxed),
            1,
            "task {i} ran a wrong number of times"
        );
    }
}

#[test]
fn million_tasks_sixteen_threads_hundred_reps() {
    let mut steals = 0;
    for _ in 0..100 {
        let (seen, stats) = run_tree(16, 1 << 20);
        assert_exactly_once(&seen);
        let executed: u64 = stats.iter().map(|s| s.local_pops + s.injector_pops).sum();
        assert!(executed <= 1 << 20);
        steals += stats.iter().map(|s| s.steals).sum::<u64>();
    }
    assert!(steals > 0, "16 workers on a million tasks never stole");
}

#[test]
fn zero_tasks_terminates() {
    for threads in [1, 2, 16] {
        let (seen, stats) = run_tree(threads, 0);
        assert!(seen.is_empty());
        assert_eq!(stats.len(), threads);
    }
}

#[test]
fn single_worker() {
    let (seen, _) = run_tree(1, 100_000);
    assert_exactly_once(&seen);
}

#[test]
fn one_huge_producer() {
    const N: usize = 1_000_000;
    let threads = 16;
    let seen: Vec<AtomicU8> = (0..=N).map(|_| AtomicU8::new(0)).collect();
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    sched.inject(N); // the producer root
    let stats = run_threads(sched, |_| {
        let unpark = Arc::clone(&unpark);
        let seen = &seen;
        move |w: Worker<usize>| {
            drive(w, &unpark, |i, w| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                if i == N {
                    for t in 0..N {
                        w.push(t);
                    }
                }
            })
        }
    });
    assert_exactly_once(&seen);
    assert!(stats.iter().map(|s| s.steals).sum::<u64>() > 0);
}

/// A long chain keeps one worker busy until every other worker has parked (observed, not assumed:
/// the test counts parks through its own loop), then fans out; every fan-out task must still run
/// exactly once and the parked workers must be woken to help.
#[test]
fn spawn_after_others_went_idle() {
    const FAN: usize = 200_000;
    let threads = 16;
    for _ in 0..20 {
        let parked = AtomicUsize::new(0);
        let ran_by_others = AtomicUsize::new(0);
        let seen: Vec<AtomicU8> = (0..=FAN).map(|_| AtomicU8::new(0)).collect();
        let unpark = ThreadUnpark::new(threads);
        let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
        sched.inject(FAN);
        let owner = AtomicUsize::new(usize::MAX);
        run_threads(sched, |_| {
            let unpark = Arc::clone(&unpark);
            let (parked, seen, owner, ran_by_others) = (&parked, &seen, &owner, &ran_by_others);
            move |mut w: Worker<usize>| {
                unpark.register(w.index());
                let mut has_parked = false;
                loop {
                    match w.pop() {
                        Pop::Task(i) => {
                            seen[i].fetch_add(1, Ordering::Relaxed);
                            if i == FAN {
                                owner.store(w.index(), Ordering::SeqCst);
                                while parked.load(Ordering::SeqCst) < threads - 1 {
                                    std::thread::yield_now();
                                }
                                for t in 0..FAN {
                                    w.push(t);
                                }
                            } else if owner.load(Ordering::SeqCst) != w.index() {
                                ran_by_others.fetch_add(1, Ordering::SeqCst);
                            } else {
                                // The owner waits until a formerly parked worker has taken a share:
                                // without a wake-up this run would never end.
                                while ran_by_others.load(Ordering::SeqCst) == 0 {
                                    std::thread::yield_now();
                                }
                            }
                        }
                        Pop::Done => break,
                        Pop::Empty => match w.go_idle() {
                            Idle::Park => {
                                if !has_parked {
                                    has_parked = true;
                                    parked.fetch_add(1, Ordering::SeqCst);
                                }
                                if !w.is_done() {
                                    unpark.park();
                                }
                                w.unparked();
                            }
                            Idle::Retry => {}
                            Idle::Done => break,
                        },
                    }
                }
            }
        });
        assert_exactly_once(&seen);
        assert!(ran_by_others.load(Ordering::SeqCst) > 0);
    }
}

/// Endless chains of tasks on 8 workers, one of which panics at the 5000th task: only the panic
/// can end the run. Returns what the run returned (its panic, if it was re-raised).
fn endless_run_with_a_panic(lingering: bool) -> std::thread::Result<Vec<WorkerStats>> {
    let threads = 8;
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    for t in 0..threads as u64 {
        sched.inject(t << 40);
    }
    let count = Arc::new(AtomicUsize::new(0));
    let make = |_| {
        let unpark = Arc::clone(&unpark);
        let count = Arc::clone(&count);
        move |w: Worker<u64>| {
            drive(w, &unpark, |i, w| {
                if count.fetch_add(1, Ordering::Relaxed) == 5000 {
                    panic!("task 5000 exploded");
                }
                w.push(i + 1);
            })
        }
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if lingering {
            run_threads_lingering(sched, make)
        } else {
            run_threads(sched, make)
        }
    }))
}

#[test]
fn panic_stops_everyone_and_is_reraised() {
    for lingering in [false, true] {
        let err = endless_run_with_a_panic(lingering).expect_err("the panic was swallowed");
        let msg = err
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.contains("task 5000 exploded"),
            "unexpected panic payload {msg:?} (lingering threads: {lingering})"
        );
    }
}

#[test]
fn cancel_stops_an_endless_run() {
    let threads = 4;
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    let canceller = sched.canceller();
    sched.inject(0u64);
    let count = AtomicUsize::new(0);
    run_threads(sched, |_| {
        let unpark = Arc::clone(&unpark);
        let (count, canceller) = (&count, canceller.clone());
        move |w: Worker<u64>| {
            drive(w, &unpark, |i, w| {
                if count.fetch_add(1, Ordering::Relaxed) == 100_000 {
                    canceller.cancel();
                }
                w.push(i + 1);
            })
        }
    });
    assert!(canceller.is_cancelled());
    assert!(count.load(Ordering::Relaxed) > 100_000);
}

/// The lingering variant (the command-line tool's): every task runs once, the results come back in
/// worker order, and the call returns while the worker threads are still alive (parked). (Its
/// panics: `panic_stops_everyone_and_is_reraised`.)
#[test]
fn lingering_threads_return_results_in_order_and_stay_parked() {
    let threads = 6;
    let n = 1 << 16;
    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    sched.inject(0usize);
    let out = run_threads_lingering(sched, |i| {
        let unpark = Arc::clone(&unpark);
        let seen = Arc::clone(&seen);
        move |w: Worker<usize>| {
            let index = w.index();
            // This thread's entry under /proc ("PID/task/TID"), if /proc is mounted.
            let me = std::fs::read_link("/proc/thread-self").ok();
            let stats = drive(w, &unpark, |t, w| {
                seen[t].fetch_add(1, Ordering::Relaxed);
                for c in [2 * t + 1, 2 * t + 2] {
                    if c < n {
                        w.push(c);
                    }
                }
            });
            (i, index, stats, me)
        }
    });
    assert_exactly_once(&seen);
    let order: Vec<usize> = out.iter().map(|(i, _, _, _)| *i).collect();
    assert_eq!(order, (0..threads).collect::<Vec<_>>());
    assert!(out.iter().all(|(i, index, _, _)| i == index));
    let executed: u64 = out
        .iter()
        .map(|(_, _, s, _)| s.local_pops + s.injector_pops)
        .sum();
    assert!(executed > 0);
    for (i, _, _, me) in &out {
        match me {
            Some(task) => assert!(
                std::path::Path::new("/proc").join(task).exists(),
                "worker {i}'s thread ({}) exited",
                task.display()
            ),
            None => println!("skipped the thread check: /proc/thread-self cannot be read"),
        }
    }
}
