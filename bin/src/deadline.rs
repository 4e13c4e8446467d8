//! `--stop-after=MINS` and `--stop-at=WHEN`: when a run must stop (rsync's time limits, for the
//! copies that must fit a window), and the timer that asks the engine to stop then. A run stopped
//! this way ends as a signal-stopped one does (nothing half-written is published; a re-run goes
//! on from there) but with rsync's exit code 30 and its message `stopping at requested limit`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--stop-after=MINS`: minutes from now (rsync takes whole minutes; a fraction is kept here, so
/// `0.5` is 30 seconds). Zero, negative or not a number is refused, as rsync refuses it.
pub fn parse_stop_after(arg: &str) -> Result<Duration, String> {
    let bad = || format!("invalid --stop-after value: {arg}");
    let mins: f64 = arg.trim().parse().map_err(|_| bad())?;
    if !mins.is_finite() || mins <= 0.0 || mins > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(mins * 60.0))
}

/// `--stop-at=WHEN`, read as rsync reads it: `[[[YY]YY-]MM-]DD][T][HH:]MM` in local time, with
/// `/` allowed for `-`; what is left out is the next point in time that matches (`14:00` is the
/// next 2 pm, `1-30` the next January 30th at midnight, `:59` the next 59th minute). Returns
/// the time in seconds since the epoch, which must be in the future.
pub fn parse_stop_at(arg: &str) -> Result<i64, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match stop_at(arg.as_bytes(), now) {
        None => Err(format!("invalid --stop-at format: {arg}")),
        Some(t) if t <= now => Err(format!("--stop-at time is not in the future: {arg}")),
        Some(t) => Ok(t),
    }
}

/// Which fields the text left out (the next matching time is searched along the largest).
#[derive(Clone, Copy, PartialEq)]
enum Free {
    None,
    Year,
    Month,
    Day,
}

fn stop_at(arg: &[u8], now: i64) -> Option<i64> {
    let today = local(now)?;
    // Fields as given (-1: not given).
    let (mut year, mut mon, mut mday, mut hour, mut min) = (-1i64, -1i64, -1i64, -1i64, -1i64);
    let mut i = 0;
    // 1: reading the date; 0: the time; -1: after a `T` (a time must follow).
    let mut in_date = match arg.first() {
        Some(b'T' | b't') => {
            i = 1;
            -1
        }
        Some(b':') => {
            i = 1;
            0
        }
        _ => 1,
    };
    loop {
        let start = i;
        let mut n = 0i64;
        while i < arg.len() && arg[i].is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add(i64::from(arg[i] - b'0'))?;
            i += 1;
        }
        if i == start {
            return None;
        }
        let next = arg.get(i).copied();
        if next == Some(b':') {
            in_date = 0;
        }
        if in_date > 0 {
            // A date part: the numbers shift left (year-month-day, the last given is the day).
            if year != -1 {
                return None;
            }
            (year, mon, mday) = (mon, mday, n);
            match next {
                None => break,
                Some(b'T' | b't') => {
                    if i + 1 == arg.len() {
                        break;
                    }
                    in_date = -1;
                }
                Some(b'-' | b'/') => {}
                _ => return None,
            }
            i += 1;
            continue;
        }
        if hour != -1 {
            return None;
        }
        (hour, min) = (min, n);
        match next {
            None if in_date < 0 => return None,
            None => break,
            Some(b':') => in_date = 0,
            _ => return None,
        }
        i += 1;
    }
    let mut free = Free::None;
    let mut tm = today;
    if year < 0 {
        free = Free::Year;
    } else if year < 100 {
        let mut y = year;
        while y < i64::from(today.tm_year) {
            y += 100;
        }
        tm.tm_year = y as i32;
    } else {
        tm.tm_year = (year - 1900) as i32;
    }
    if mon < 0 {
        free = Free::Month;
    } else {
        tm.tm_mon = (mon - 1) as i32;
    }
    if mday < 0 {
        free = Free::Day;
    } else {
        tm.tm_mday = mday as i32;
    }
    // A time of minutes only (`:MM`) repeats every hour from the current one.
    let mut step = 0;
    if min < 0 {
        tm.tm_hour = 0;
        tm.tm_min = 0;
    } else if hour < 0 {
        if free != Free::Day {
            return None;
        }
        free = Free::None;
        tm.tm_hour = today.tm_hour;
        tm.tm_min = min as i32;
        step = 3600;
    } else {
        tm.tm_hour = hour as i32;
        tm.tm_min = min as i32;
    }
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    if tm.tm_hour > 23
        || tm.tm_min > 59
        || !(0..12).contains(&tm.tm_mon)
        || !(1..=31).contains(&tm.tm_mday)
    {
        return None;
    }
    // The next matching time: step the largest free field until it is in the future (mktime
    // normalises in place, rolling a day like the 31st of a short month into the next month,
    // which for a free month or year does not count as a match).
    let want = tm.tm_mday;
    let mut val = mktime(&mut tm)?;
    let mut tries = 0;
    while free != Free::None && (val <= now || (free != Free::Day && tm.tm_mday < want)) {
        tries += 1;
        if tries > 10_000 {
            return None;
        }
        match free {
            Free::Day => tm.tm_mday += 1,
            Free::Month if tm.tm_mday < want => {
                // Rolled into the next month already: that month, on the wanted day.
                tm.tm_mday = want;
            }
            Free::Month => {
                tm.tm_mon += 1;
            }
            Free::Year => {
                if tm.tm_mday < want {
                    // Only February 29th rolls over (into March 1st): the next leap year.
                    if want != 29 {
                        return None;
                    }
                    tm.tm_mon = 1;
                    tm.tm_mday = 29;
                }
                tm.tm_year += 1;
            }
            Free::None => unreachable!("loop condition"),
        }
        tm.tm_isdst = -1;
        val = mktime(&mut tm)?;
    }
    if step > 0 {
        while val <= now {
            val += step;
        }
    }
    Some(val)
}

fn local(t: i64) -> Option<libc::tm> {
    // SAFETY: a zeroed tm is a valid output buffer for localtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = t as libc::time_t;
    // SAFETY: valid pointers to a time_t and a tm for the call.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

fn mktime(tm: &mut libc::tm) -> Option<i64> {
    // SAFETY: `tm` is a valid, initialised tm that mktime may normalise in place.
    let t = unsafe { libc::mktime(tm) };
    (t != -1).then_some(t as i64)
}

/// Ask `stop` to stop the run at `at` (seconds since the epoch). Returns the flag that says the
/// limit was reached. The timer thread ends with the process.
pub fn arm(stop: engine::Stop, at: i64) -> Arc<AtomicBool> {
    let wait = move || {
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let left = at as f64 - now;
            if left <= 0.0 {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64(left.min(60.0)));
        }
        Some("stopping at requested limit".to_string())
    };
    watch(
        stop,
        (
            "arsync-deadline",
            "the --stop-after/--stop-at timer; the run has no time limit",
        ),
        wait,
    )
}

/// `--timeout=SECONDS`: watch `live` and ask `stop` to stop the run once nothing in it has
/// moved for `idle` (rsync's I/O timeout: "io timeout after N seconds -- exiting", exit code
/// 30). Returns the flag that says it fired; `over`, set by the caller when the run has ended,
/// keeps it from firing while the process prints its summary. The thread ends with the process.
pub fn watch_idle(
    stop: engine::Stop,
    live: engine::Progress,
    idle: Duration,
    over: Arc<AtomicBool>,
) -> Arc<AtomicBool> {
    let wait = move || {
        let tick = idle.min(Duration::from_secs(1));
        let mut last = live.snapshot();
        let mut since = std::time::Instant::now();
        loop {
            std::thread::sleep(tick);
            if over.load(Ordering::SeqCst) {
                return None;
            }
            let now = live.snapshot();
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            } else if since.elapsed() >= idle {
                return Some(format!(
                    "io timeout after {} seconds -- exiting",
                    idle.as_secs()
                ));
            }
        }
    };
    watch(
        stop,
        (
            "arsync-timeout",
            "the --timeout watch; the run has no I/O timeout",
        ),
        wait,
    )
}

/// A thread (`name`) that runs `wait` and, when it returns a message, says it, raises the flag
/// it returns and asks `stop` to stop the run. `what` names it when it cannot be started.
fn watch(
    stop: engine::Stop,
    (name, what): (&str, &str),
    wait: impl FnOnce() -> Option<String> + Send + 'static,
) -> Arc<AtomicBool> {
    let hit = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&hit);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(message) = wait() {
                flag.store(true, Ordering::SeqCst);
                let _ = writeln!(std::io::stderr(), "{message}");
                stop.request();
            }
        });
    if spawned.is_err() {
        let _ = writeln!(std::io::stderr(), "arsync: cannot start {what}");
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of a local date and time.
    fn at(y: i32, mo: i32, d: i32, h: i32, mi: i32) -> i64 {
        // SAFETY: zeroed tm, every field used set below.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_isdst = -1;
        mktime(&mut tm).unwrap()
    }

    #[test]
    fn stop_at_finds_the_next_matching_time() {
        let now = at(2026, 11, 24, 22, 40);
        let p = |s: &str| stop_at(s.as_bytes(), now);
        assert_eq!(p("2030-12-31T23:59"), Some(at(2030, 12, 31, 23, 59)));
        assert_eq!(p("2030/12/31T23:59"), Some(at(2030, 12, 31, 23, 59)));
        assert_eq!(p("30-12-31T23:59"), Some(at(2030, 12, 31, 23, 59)));
        assert_eq!(p("14:00"), Some(at(2026, 11, 25, 14, 0)));
        assert_eq!(p("T23:05"), Some(at(2026, 11, 24, 23, 5)));
        assert_eq!(p(":59"), Some(at(2026, 11, 24, 22, 59)));
        assert_eq!(p(":10"), Some(at(2026, 11, 24, 23, 10)));
        assert_eq!(p("1-30"), Some(at(2027, 1, 30, 0, 0)));
        assert_eq!(p("1"), Some(at(2026, 12, 1, 0, 0)));
        assert_eq!(p("31"), Some(at(2026, 12, 31, 0, 0)));
        assert_eq!(p("2-29"), Some(at(2028, 2, 29, 0, 0)));
        assert_eq!(p("12-25T06:30"), Some(at(2026, 12, 25, 6, 30)));
        for bad in [
            "25:00", "12:60", "13-01", "x", "", "1-2-3-4", "T", "14:00x", "T5",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        // In the past (as given in full): found, and refused by the caller.
        assert!(p("2020-01-01T00:00").unwrap() < now);
    }

    #[test]
    fn stop_after_takes_positive_minutes() {
        assert_eq!(parse_stop_after("2"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_stop_after("0.5"), Ok(Duration::from_secs(30)));
        for bad in ["0", "-1", "x", "", "inf"] {
            assert!(parse_stop_after(bad).is_err(), "{bad}");
        }
    }
}
