//! `--info=progress2`: the whole transfer's progress (bytes done, percent, rate, ETA, files done
//! and still to check), as a live bar on a terminal (indicatif) and as a plain line every second
//! otherwise, ending with a final line that has the true totals. The totals grow while the scan
//! is still listing directories; the line says `scanning` until they are final.
//!
//! `--progress` (per file, as rsync) is rendered by the printer in `output.rs`, with
//! [`file_line`].

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engine::{Progress, ProgressSnapshot};

/// A number with thousands separators, as rsync prints them.
pub fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A rate as rsync shows it (`kB/s`, `MB/s`, `GB/s`, powers of 1024).
pub fn rate(bytes_per_s: f64) -> String {
    let (v, unit) = if bytes_per_s >= 1024.0 * 1024.0 * 1024.0 {
        (bytes_per_s / (1024.0 * 1024.0 * 1024.0), "GB/s")
    } else if bytes_per_s >= 1024.0 * 1024.0 {
        (bytes_per_s / (1024.0 * 1024.0), "MB/s")
    } else {
        (bytes_per_s / 1024.0, "kB/s")
    };
    format!("{v:.2}{unit}")
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One progress line: `BYTES  PCT%  RATE  TIME (xfr#N, to-chk=LEFT/TOTAL)`, where TIME is the
/// ETA while running and the elapsed time on the final line (as rsync).
pub fn line(s: &ProgressSnapshot, elapsed: Duration, done: bool) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let bps = s.bytes as f64 / secs;
    let pct = (s.bytes.min(s.seen_bytes) * 100)
        .checked_div(s.seen_bytes)
        .unwrap_or(if done { 100 } else { 0 }) as u32;
    let time = if done {
        hms(secs)
    } else if bps > 0.0 {
        hms(s.seen_bytes.saturating_sub(s.bytes) as f64 / bps)
    } else {
        "--:--:--".into()
    };
    let left = s.seen_files.saturating_sub(s.checked);
    format!(
        "{:>15} {:>3}% {:>11} {:>10} (xfr#{}, {}={}/{}){}",
        commas(s.bytes),
        pct,
        rate(bps),
        time,
        s.files,
        if s.scanning { "ir-chk" } else { "to-chk" },
        left,
        s.seen_files,
        if s.scanning && !done { " scanning" } else { "" }
    )
}

/// The per-file line of `--progress`, printed after a file's name once it is complete.
pub fn file_line(size: u64, s: &ProgressSnapshot, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "{:>15} 100% {:>11} {:>10} (xfr#{}, to-chk={}/{})",
        commas(size),
        rate(s.bytes as f64 / secs),
        hms(secs),
        s.files,
        s.seen_files.saturating_sub(s.checked),
        s.seen_files
    )
}

/// The running display; [`Display::finish`] prints the final line.
pub struct Display {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    /// Start showing `progress` on stdout: a bar when stdout is a terminal, else a line a second.
    pub fn start(progress: Progress) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let tty = std::io::stdout().is_terminal();
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("arsync-progress".into())
            .spawn(move || {
                if tty {
                    let bar = indicatif::ProgressBar::with_draw_target(
                        None,
                        indicatif::ProgressDrawTarget::stdout_with_hz(5),
                    );
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{msg} {bar:12}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    loop {
                        let finished = flag.load(Ordering::Acquire);
                        let s = progress.snapshot();
                        bar.set_length(s.seen_bytes.max(1));
                        bar.set_position(s.bytes.min(s.seen_bytes));
                        bar.set_message(line(&s, start.elapsed(), finished));
                        if finished {
                            bar.finish();
                            break;
                        }
                        std::thread::park_timeout(Duration::from_millis(200));
                    }
                } else {
                    let mut next = Instant::now() + Duration::from_secs(1);
                    loop {
                        let finished = flag.load(Ordering::Acquire);
                        if finished || Instant::now() >= next {
                            let s = progress.snapshot();
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "{}", line(&s, start.elapsed(), finished));
                            let _ = out.flush();
                            next += Duration::from_secs(1);
                        }
                        if finished {
                            break;
                        }
                        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                    }
                }
            })
            .ok();
        Self { done, thread }
    }

    /// Show the final line (the run is over) and stop.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
