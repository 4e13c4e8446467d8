//! `arsync-bench sched`: the scheduler alone, with synthetic tasks of known cost. A binary tree of
//! N tasks (each spawns its two children, as directory scans spawn entries) where every task
//! spins for C microseconds; run on 1..M threads (past the CPU count the threads are
//! oversubscribed). Reported per thread count: wall time, throughput, efficiency against the
//! ideal (N × C spread over min(threads, CPUs)), steals, parks, and the termination overhead (from
//! the end of the last task to the return of the last thread).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use scheduler::{Scheduler, ThreadUnpark, Worker, drive, run_threads};

/// One run's figures.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Figures {
    pub threads: usize,
    pub wall_s: f64,
    pub tasks_per_s: f64,
    pub efficiency: f64,
    pub steals: u64,
    pub parks: u64,
    pub termination_us: f64,
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Run `tasks` tasks of `cost` each on `threads` threads.
pub fn run_once(tasks: u64, cost: Duration, threads: usize, cpus: usize) -> Figures {
    let unpark = ThreadUnpark::new(threads);
    let sched = Scheduler::new(threads, Box::new(Arc::clone(&unpark)));
    sched.inject(0u64);
    // Nanoseconds since `start` at which each thread finished its last task.
    let last_end: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let stats = run_threads(sched, |i| {
        let unpark = Arc::clone(&unpark);
        let last_end = &last_end;
        move |w: Worker<u64>| {
            drive(w, &unpark, |t, w| {
                for c in [2 * t + 1, 2 * t + 2] {
                    if c < tasks {
                        w.push(c);
                    }
                }
                spin(cost);
                last_end[i].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            })
        }
    });
    let wall = start.elapsed();
    let end = last_end
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let ideal = cost.as_secs_f64() * tasks as f64 / threads.min(cpus) as f64;
    Figures {
        threads,
        wall_s: wall.as_secs_f64(),
        tasks_per_s: tasks as f64 / wall.as_secs_f64(),
        efficiency: ideal / wall.as_secs_f64(),
        steals: stats.iter().map(|s| s.steals).sum(),
        parks: stats.iter().map(|s| s.parks).sum(),
        termination_us: (wall.as_nanos() as f64 - end as f64) / 1000.0,
    }
}

/// Every thread count from 1 to `max`, `reps` times in alternation; medians written to `out`
/// (`sched.json`, `report.md`).
pub fn bench(tasks: u64, cost_us: u64, max: usize, reps: usize, out: &Path) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cost = Duration::from_micros(cost_us);
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); max];
    for rep in 0..reps {
        for t in 1..=max {
            let f = run_once(tasks, cost, t, cpus);
            eprintln!(
                "[arsync-bench] sched rep{rep} threads {t}: {:.3} s, efficiency {:.2}, steals {}, termination {:.0} us",
                f.wall_s, f.efficiency, f.steals, f.termination_us
            );
            runs[t - 1].push(f);
        }
    }
    let median = |v: &mut Vec<Figures>| {
        v.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
        v[v.len() / 2]
    };
    let medians: Vec<Figures> = runs.iter_mut().map(median).collect();
    fs::create_dir_all(out)?;
    fs::write(
        out.join("sched.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "tasks": tasks, "cost_us": cost_us, "cpus": cpus, "reps": reps, "medians": medians,
        }))? + "\n",
    )?;
    let mut md = format!(
        "# Scheduler with synthetic tasks\n\n`arsync-bench sched --tasks {tasks} --cost-us {cost_us} --max {max} --reps {reps}`: \
         a binary tree of {tasks} tasks, each spinning {cost_us} µs, on {cpus} CPUs (more threads are \
         oversubscribed). Medians of {reps} (by wall time); efficiency = ideal time (tasks × cost / \
         min(threads, CPUs)) / wall; termination = end of the last task to the return of the last thread.\n\n\
         | threads | wall s | tasks/s | efficiency | steals | parks | termination µs |\n|---|---|---|---|---|---|---|\n"
    );
    for f in &medians {
        md += &format!(
            "| {} | {:.3} | {:.0} | {:.2} | {} | {} | {:.0} |\n",
            f.threads, f.wall_s, f.tasks_per_s, f.efficiency, f.steals, f.parks, f.termination_us
        );
    }
    fs::write(out.join("report.md"), md)?;
    println!("{}", out.join("report.md").display());
    Ok(())
}
