//! `arsync`: the command. It parses rsync-style arguments into an `engine::Config`, runs the
//! engine, prints what the engine reports (errors on stderr with path and OS error, rsync's
//! "skipping" notices, `-v` item lists) and exits with rsync's exit codes.

/// `println!` that never panics: when stdout is gone (`arsync -v … | head`) the output stops and
/// the run goes on to its end and its exit code, as rsync's does.
macro_rules! outln {
    () => {{
        crate::output::write_out(b"\n");
    }};
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        crate::output::write_out(line.as_bytes());
    }};
}

/// `eprintln!` that never panics: when stderr is gone (`arsync … 2>&1 | head`) the messages
/// stop, the run goes on, and it ends with rsync's code for a lost diagnostic, 13 (a panic on
/// the closed pipe made it 101): see [`output::write_err`].
macro_rules! errln {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        crate::output::write_err(line.as_bytes());
    }};
}

mod cli;
mod deadline;
mod info;
mod listing;
mod logfmt;
#[cfg(feature = "mpi")]
mod mpi_mode;
mod output;
mod progress;
mod signals;
mod trust;

use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let code = run();
    // (--outbuf=B: what is still held goes out before the exit.)
    output::flush_out();
    code
}

fn run() -> ExitCode {
    let mut parsed = match cli::parse(std::env::args_os()) {
        Ok(p) => p,
        Err(cli::Refused::Arg(e)) => {
            let quiet = std::env::args().any(|a| a == "-q" || a == "--quiet");
            if !quiet {
                for n in &e.notices {
                    outln!("{n}");
                }
            }
            errln!("arsync: {}", e.message);
            errln!(
                "arsync error: {} (code {})",
                output::code_text(e.code),
                e.code
            );
            return ExitCode::from(e.code as u8);
        }
        Err(cli::Refused::Clap(e)) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, rsync's usage exit code.
            let msg = e.kind().as_str().map(str::to_string).unwrap_or_default();
            let full = e.to_string();
            let line = full
                .lines()
                .find(|l| l.starts_with("error:"))
                .map(|l| l.trim_start_matches("error:").trim().to_string())
                .unwrap_or(msg);
            errln!("arsync: {line} (see arsync --help)");
            errln!("arsync error: syntax or usage error (code 1)");
            return ExitCode::from(1);
        }
    };
    if let Some(what) = &parsed.generate {
        return match cli::generate(what, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("arsync: {e}");
                ExitCode::from(1)
            }
        };
    }
    output::set_out(parsed.out_to_stderr, parsed.outbuf);
    progress::set_human(parsed.human);
    if parsed.version {
        outln!("arsync {}", env!("CARGO_PKG_VERSION"));
        match engine::io_uring_status() {
            Ok(()) => outln!("io_uring: available"),
            Err(e) => outln!("io_uring: unavailable ({e})"),
        }
        outln!(
            "features: thread-per-core, work stealing, compio 0.19 (io_uring, epoll fallback){}{}",
            if cfg!(feature = "mpi") { ", mpi" } else { "" },
            if engine::hooks::ENABLED {
                ", test-hooks"
            } else {
                ""
            }
        );
        return ExitCode::SUCCESS;
    }
    let log = match &parsed.log_file {
        None => None,
        Some((path, format)) => {
            match trust::check(path).and_then(|()| logfmt::LogFile::open(path, format.clone())) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    // As rsync 3.5: said, and the run goes on without it.
                    errln!(
                        "arsync: failed to open log-file {}: {}",
                        path.display(),
                        output::errno_text(&e)
                    );
                    errln!("Ignoring \"log file\" setting.");
                    None
                }
            }
        }
    };
    if parsed.list_only.is_none()
        && let Some(code) = check_operator_paths(&mut parsed)
    {
        return ExitCode::from(code);
    }
    output::init_logging(
        parsed.verbose,
        parsed.quiet,
        log.as_ref().and_then(|l| l.try_clone_file().ok()),
    );
    if let Some(l) = &log {
        let mut line = format!("arsync {} started: ", env!("CARGO_PKG_VERSION")).into_bytes();
        line.extend_from_slice(&logfmt::describe(&parsed.paths));
        l.message(&line);
    }
    if let Some(who) = &parsed.copy_as {
        // --copy-as: everything from here on (the destination made, every file read and
        // written) runs as that user, as rsync's copy does.
        if let Err((step, e)) = engine::become_user(who.uid, who.gid, who.groups_of.as_deref()) {
            errln!("arsync: {} failed: {}", step.name(), output::errno_text(&e));
            errln!("arsync error: {} (code 1)", output::code_text(1));
            return ExitCode::from(1);
        }
    }
    // Before any thread is started (the signal thread, a progress display, the cores), in every
    // mode: the descriptor table grows now, without the RCU grace period that growing it costs a
    // multi-threaded process (see engine::prepare_process).
    engine::prepare_process(&parsed.config);
    let live = engine::Progress::new();
    // One run, then the process exits (`--mpi` runs several and turns it off).
    parsed.config.exit_after_run = true;
    if let Some(targets) = parsed.list_only {
        let printer = output::Printer::new(info::Info::default(), parsed.quiet, None, None, None);
        let lister = Arc::new(listing::Lister::new(printer, targets));
        let stop = engine::Stop::new();
        signals::stop_on_signals(stop.clone());
        let report = engine::run_with_progress(&parsed.config, lister.clone(), &stop, &live);
        if !parsed.quiet {
            // (rsync's listing is its informational output: -q silences it.)
            lister.print();
        }
        let code = output::exit_code(&report);
        if let Some(f) = report
            .fatal
            .as_ref()
            .or(report.halted.as_ref().map(|h| &h.1))
        {
            errln!("arsync: {f}");
        }
        if code != 0 {
            errln!("arsync error: {} (code {code})", output::code_text(code));
        }
        return ExitCode::from(output::with_lost_messages(code) as u8);
    }
    let observer = Arc::new(
        output::Printer::new(
            parsed.info,
            parsed.quiet,
            parsed.listing.clone(),
            (parsed.info.level(info::Flag::Progress) == 1).then(|| live.clone()),
            log.clone(),
        )
        .with_roots(&parsed.config.roots, parsed.list_base.as_deref()),
    );
    let says_created = observer.says_created_dirs();
    if let Some(dir) = &parsed.make_path {
        // --mkpath: the missing directories above the destination (mode 0777 less the umask),
        // named as rsync names them, the destination directory included when it is made too.
        let top = parsed.config.create_dest_dir.as_ref().unwrap_or(dir);
        let missing = top
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
            .count();
        let shown = top.to_string_lossy();
        let line = format!(
            "created {missing} director{} for {}",
            if missing == 1 { "y" } else { "ies" },
            shown.trim_end_matches('/')
        );
        if says_created {
            outln!("{line}");
        }
        if let Some(l) = &log {
            l.message(line.as_bytes());
        }
        if !parsed.config.dry_run
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            errln!(
                "arsync: mkdir \"{}\" failed: {}",
                dir.display(),
                output::errno_text(&e)
            );
            errln!("arsync error: {} (code 11)", output::code_text(11));
            return ExitCode::from(11);
        }
    }
    #[cfg(feature = "mpi")]
    if parsed.mpi {
        parsed.config.exit_after_run = false;
        let stop = engine::Stop::new();
        signals::stop_on_signals(stop.clone());
        return ExitCode::from(mpi_mode::run(&parsed, observer, &stop) as u8);
    }
    let stop = engine::Stop::new();
    signals::stop_on_signals(stop.clone());
    let limit = parsed.stop_at.map(|at| deadline::arm(stop.clone(), at));
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle = parsed
        .idle_timeout
        .map(|t| deadline::watch_idle(stop.clone(), live.clone(), t, Arc::clone(&over)));
    let display = (parsed.info.level(info::Flag::Progress) > 1 && !parsed.quiet)
        .then(|| progress::Display::start(live.clone()));
    let report = engine::run_with_progress(&parsed.config, observer.clone(), &stop, &live);
    over.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(d) = display {
        d.finish();
    }
    let mut code = output::exit_code(&report);
    let fired = |f: Option<Arc<std::sync::atomic::AtomicBool>>| {
        f.is_some_and(|hit| hit.load(std::sync::atomic::Ordering::SeqCst))
    };
    if report.interrupted && (fired(limit) || fired(idle)) {
        // --stop-after/--stop-at, --timeout: rsync's "timeout" code.
        code = 30;
    }
    code = output::with_lost_messages(code);
    if let Some(path) = &parsed.stats_json
        && let Err(e) = std::fs::write(path, output::stats_json(&parsed.config, &report, code))
    {
        errln!("arsync: cannot write --stats-json {}: {e}", path.display());
    }
    output::end_of_run(&parsed, &report);
    if report.delete_skipped > 0 {
        errln!(
            "Deletions stopped due to --max-delete limit ({} skipped)",
            report.delete_skipped
        );
    }
    if let Some(f) = report
        .fatal
        .as_ref()
        .or(report.halted.as_ref().map(|h| &h.1))
    {
        errln!("arsync: {f}");
        if let Some(l) = &log {
            l.message(format!("arsync: {f}").as_bytes());
        }
    }
    if code != 0 {
        errln!("arsync error: {} (code {code})", output::code_text(code));
    }
    if let Some(l) = &log {
        let r = &report;
        l.message(
            format!(
                "copied {} bytes  total size {}  files {}  deleted {}  errors {}  in {:.3} s{}; exit code {code}",
                r.bytes,
                r.considered.bytes,
                r.files,
                r.deleted,
                r.errors + r.file_io_errors + r.vanished,
                r.elapsed.as_secs_f64(),
                if parsed.config.dry_run { " (DRY RUN)" } else { "" },
            )
            .as_bytes(),
        );
    }
    ExitCode::from(output::with_lost_messages(code) as u8)
}

/// The operator's paths, checked before the run as rsync 3.5 checks them. Its walk ([`trust`]):
/// a destination reached through another user's symlink is refused as rsync's `change_dir`
/// refuses it (exit 3), a backup directory so reached stops the run before anything is written
/// (rsync's file I/O error, 11, which rsync gives at the first backup), each file to be staged
/// in such a `-T` directory fails (rsync's `mkstemp` there: exit 23), and such a `--link-dest`,
/// `--compare-dest` or `--copy-dest` directory is not used. And what is not what it should be:
/// a `DEST/` that is a file (exit 3), a backup directory that is a file (exit 1), a reference
/// directory that is missing or not a directory (a warning). `Some(code)` when the run must not
/// start.
fn check_operator_paths(parsed: &mut cli::Parsed) -> Option<u8> {
    let dest = parsed.paths.last()?;
    let named = std::path::Path::new(dest);
    if dest.as_encoded_bytes().ends_with(b"/")
        && std::fs::metadata(named.components().as_path()).is_ok_and(|m| !m.is_dir())
    {
        // rsync's words and code for a DEST/ that is a file.
        errln!(
            "arsync: ERROR: cannot stat destination \"{}\": {}",
            named.display(),
            output::errno_text(&std::io::Error::from_raw_os_error(libc::ENOTDIR))
        );
        errln!("arsync error: {} (code 3)", output::code_text(3));
        return Some(3);
    }
    if let Err(e) = trust::check(named) {
        errln!(
            "arsync: change_dir \"{}\" failed: {}",
            named.display(),
            output::errno_text(&e)
        );
        errln!("arsync error: {} (code 3)", output::code_text(3));
        return Some(3);
    }
    // The destination directory, which relative option paths are taken from.
    let dest_dir = parsed.config.roots.first().map(|root| {
        let mut d = root.dst.clone();
        for _ in root.rel.components() {
            d.pop();
        }
        d
    })?;
    if let Some(dir) = parsed.config.backup.as_ref().and_then(|b| b.dir.as_ref()) {
        let at = dest_dir.join(dir);
        if std::fs::metadata(&at).is_ok_and(|m| !m.is_dir()) {
            errln!("The backup-dir is not a directory: {}", dir.display());
            errln!("arsync error: {} (code 1)", output::code_text(1));
            return Some(1);
        }
        if trust::check(&at).is_err() {
            errln!("arsync error: {} (code 11)", output::code_text(11));
            return Some(11);
        }
    }
    // (rsync refuses it at each file it would stage there: exit 23.)
    if let Some(dir) = &parsed.config.temp_dir
        && trust::check(&dest_dir.join(dir)).is_err()
    {
        parsed.config.temp_dir_refused = true;
    }
    parsed
        .config
        .alt_dest_dirs
        .retain(|d| trust::check(&dest_dir.join(d)).is_ok());
    // rsync's warnings for a reference directory that is not one (the run goes on; nothing is
    // found there).
    let kind = match parsed.config.alt_dest {
        engine::AltDest::Link => "--link-dest",
        engine::AltDest::Compare => "--compare-dest",
        engine::AltDest::Copy => "--copy-dest",
    };
    for d in &parsed.config.alt_dest_dirs {
        let at = std::path::absolute(dest_dir.join(d)).unwrap_or_else(|_| dest_dir.join(d));
        // A destination this run is about to make cannot be looked up yet, so `DEST/../ref` is
        // taken as what it will name then (rsync makes the destination before it looks; before,
        // every run into a new destination warned of a reference directory that was there).
        let looked = if std::fs::symlink_metadata(&dest_dir).is_err() {
            engine::without_dot_dots(&at)
        } else {
            at.clone()
        };
        match std::fs::metadata(&looked) {
            Err(_) => errln!("{kind} arg does not exist: {}", at.display()),
            Ok(m) if !m.is_dir() => errln!("{kind} arg is not a dir: {}", at.display()),
            Ok(_) => {}
        }
    }
    None
}
