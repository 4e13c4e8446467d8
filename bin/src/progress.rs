//! `--info=progress2`: the whole transfer's progress (bytes done, percent, rate, ETA, files done
//! and still to check), as a live bar on a terminal (indicatif) and as a plain line every second
//! otherwise, ending with a final line that has the true totals. The totals grow while the scan
//! is still listing directories; the line says `scanning` until they are final.
//!
//! `--progress` (per file, as rsync) is rendered by the printer in `output.rs`, with
//! [`file_line`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use engine::{Progress, ProgressSnapshot};

/// The `-h` level of every number printed ([`num`]): 0 plain digits, 1 (rsync's default) digits
/// grouped by commas, 2 units of 1000, 3 units of 1024. Set once, before anything is printed.
static HUMAN: AtomicU8 = AtomicU8::new(1);

/// Set the `-h` level ([`HUMAN`]).
pub fn set_human(level: u8) {
    HUMAN.store(level.min(3), Ordering::Relaxed);
}

/// The `-h` level ([`HUMAN`]).
pub fn human() -> u8 {
    HUMAN.load(Ordering::Relaxed)
}

/// A size or count as rsync prints it at the `-h` level (its `do_big_num`): below the unit, or at
/// levels 0 and 1, digits (grouped by commas from level 1); else two decimals and a suffix
/// (`1.24M`: K, M, G, T, P, E).
pub fn num(n: u64) -> String {
    num_with(n, HUMAN.load(Ordering::Relaxed), None)
}

/// A rate or other fraction as rsync prints it with two decimals at the `-h` level (its
/// `human_dnum`): `2,480,242.00` by default, `2.48M` with `-h`.
pub fn dnum(x: f64) -> String {
    // In hundredths, rounded: `1.999` carries into the whole part, as printf's `%.2f` does.
    let cents = (x.max(0.0) * 100.0).round() as u64;
    let fract = format!(".{:02}", cents % 100);
    num_with(cents / 100, HUMAN.load(Ordering::Relaxed), Some(&fract))
}

fn num_with(n: u64, level: u8, fract: Option<&str>) -> String {
    if level >= 2 {
        let unit = if level == 2 { 1000.0 } else { 1024.0 };
        if n as f64 >= unit {
            let mut v = n as f64 / unit;
            let mut suffix = b"KMGTPE".iter();
            let mut s = suffix.next().copied().unwrap_or(b'K');
            while v >= unit
                && let Some(&next) = suffix.next()
            {
                v /= unit;
                s = next;
            }
            return format!("{v:.2}{}", s as char);
        }
    }
    let digits = if level == 0 { n.to_string() } else { commas(n) };
    match fract {
        Some(f) => digits + f,
        None => digits,
    }
}

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
        num(s.bytes),
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
        num(size),
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
        let on_stderr = crate::output::out_is_stderr();
        let tty = if on_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("arsync-progress".into())
            .spawn(move || {
                if tty {
                    let bar = indicatif::ProgressBar::with_draw_target(
                        None,
                        if on_stderr {
                            indicatif::ProgressDrawTarget::stderr_with_hz(5)
                        } else {
                            indicatif::ProgressDrawTarget::stdout_with_hz(5)
                        },
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
                            let mut text = line(&s, start.elapsed(), finished);
                            text.push('\n');
                            crate::output::write_out(text.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::num_with;

    #[test]
    fn numbers_at_each_human_level_as_rsync_prints_them() {
        // (rsync 3.5.0's --stats and --list-only print these for the same values.)
        let at = |n, level| num_with(n, level, None);
        assert_eq!(at(1_239_567, 0), "1239567");
        assert_eq!(at(1_239_567, 1), "1,239,567");
        assert_eq!(at(1_239_567, 2), "1.24M");
        assert_eq!(at(1_239_567, 3), "1.18M");
        assert_eq!(at(4096, 2), "4.10K");
        assert_eq!(at(4096, 3), "4.00K");
        // Below the unit: digits (grouped from level 1), as rsync's do_big_num.
        assert_eq!(at(999, 2), "999");
        assert_eq!(at(1000, 3), "1,000");
        assert_eq!(at(0, 1), "0");
        assert_eq!(at(u64::MAX, 2), "18.45E");
        // A rate keeps its two decimals below the unit.
        assert_eq!(num_with(2_480_242, 1, Some(".00")), "2,480,242.00");
        assert_eq!(num_with(57, 2, Some(".50")), "57.50");
        assert_eq!(num_with(2_480_242, 2, Some(".00")), "2.48M");
    }

    #[test]
    fn a_rate_rounds_into_its_whole_part() {
        super::set_human(1);
        assert_eq!(super::dnum(1.999), "2.00");
        assert_eq!(super::dnum(1234.5), "1,234.50");
        assert_eq!(super::dnum(0.0), "0.00");
    }
}
