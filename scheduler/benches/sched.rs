//! Scheduler micro-benchmarks: local push/pop, stealing, and a whole run of a million tiny tasks
//! with oversubscribed threads (termination and parking included).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scheduler::{Pop, Scheduler, ThreadUnpark, Worker, drive, run_threads};

fn local_push_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("local");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("push+pop 1000", |b| {
        let unpark = ThreadUnpark::new(1);
        let mut w = Scheduler::<u64>::new(1, Box::new(unpark))
            .into_workers()
            .remove(0);
        // Keep the worker active (it popped), as an engine core is when it pushes.
        b.iter(|| {
            for i in 0..1000u64 {
                w.push(i);
            }
            for _ in 0..1000 {
                if let Pop::Task(t) = w.pop() {
                    black_box(t);
                }
            }
        });
    });
    g.finish();
}

fn steal(c: &mut Criterion) {
    let mut g = c.benchmark_group("steal");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("victim pushes 10k, thief steals all", |b| {
        b.iter(|| {
            let unpark = ThreadUnpark::new(2);
            let mut ws = Scheduler::<u64>::new(2, Box::new(unpark)).into_workers();
            let mut thief = ws.pop().unwrap();
            let mut victim = ws.pop().unwrap();
            for i in 0..10_000u64 {
                victim.push(i);
            }
            let mut n = 0;
            while let Pop::Task(t) = thief.pop() {
                black_box(t);
                n += 1;
            }
            assert_eq!(n, 10_000);
        });
    });
    g.finish();
}

fn whole_run(c: &mut Criterion) {
    let mut g = c.benchmark_group("run 1M tree tasks");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1 << 20));
    for threads in [1usize, 2, 4, 8, 16] {
        g.bench_function(format!("{threads} threads"), |b| {
            b.iter(|| {
                let n = 1u64 << 20;
                let sum = AtomicU64::new(0);
                let unpark = ThreadUnpark::new(threads);
                let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
                sched.inject(0u64);
                run_threads(sched, |_| {
                    let unpark = Arc::clone(&unpark);
                    let sum = &sum;
                    move |w: Worker<u64>| {
                        drive(w, &unpark, |i, w| {
                            sum.fetch_add(1, Ordering::Relaxed);
                            for c in [2 * i + 1, 2 * i + 2] {
                                if c < n {
                                    w.push(c);
                                }
                            }
                        })
                    }
                });
                assert_eq!(sum.load(Ordering::Relaxed), n);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, local_push_pop, steal, whole_run);
criterion_main!(benches);
