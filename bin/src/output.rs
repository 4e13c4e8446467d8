//! What the command prints: the observer that renders engine events (errors, skips, `-v` items)
//! the way rsync does, the end-of-run summary, logging setup, and the report → exit code mapping.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use engine::{Change, ErrorClass, Event, FileType, How, Observer, Report, SkipReason};

use crate::info::{Flag, Info};
use crate::logfmt::{Format, Line, LogFile};

/// Renders events; shared by every core thread (each line is written under the stream's lock).
pub struct Printer {
    /// The `--info` levels (with what `-v`, `--stats` and `--progress` imply).
    info: Info,
    quiet: bool,
    /// The format of the item lines on stdout: `--out-format`, else `%i %n%L` with `-i`, else
    /// `%n%L` at `--info=name`; none lists nothing.
    listing: Option<Format>,
    /// `--progress` (`--info=progress1`): the run's live counters and its start, for the line
    /// after each file.
    progress: Option<(engine::Progress, std::time::Instant)>,
    /// `--log-file`.
    log: Option<Arc<LogFile>>,
    /// Each transfer root's sending-side directory, as `%f` names an item from it.
    bases: Vec<std::path::PathBuf>,
}

impl Printer {
    pub fn new(
        info: Info,
        quiet: bool,
        listing: Option<Format>,
        progress: Option<engine::Progress>,
        log: Option<Arc<LogFile>>,
    ) -> Self {
        Self {
            info,
            quiet,
            listing,
            progress: progress.map(|p| (p, std::time::Instant::now())),
            log,
            bases: Vec::new(),
        }
    }

    /// The roots of the run, for `%f` (see [`crate::logfmt::sender_base`]); with
    /// `--files-from`, relative to its SRC (`list_base`), as rsync names the listed paths.
    pub fn with_roots(mut self, roots: &[engine::Root], list_base: Option<&Path>) -> Self {
        self.bases = roots
            .iter()
            .map(|r| {
                let base = crate::logfmt::sender_base(r);
                match list_base.and_then(|l| base.strip_prefix(l).ok()) {
                    Some(rest) => rest.to_path_buf(),
                    None => base,
                }
            })
            .collect();
        self
    }

    /// Whether rsync prints this kind of message at the levels given (never with `-q`).
    fn says(&self, flag: Flag, level: u8) -> bool {
        !self.quiet && self.info.level(flag) >= level
    }

    /// Whether a "created directory" line (and `--mkpath`'s "created N directories") is printed:
    /// as rsync, at `--info=name` (`-v`, `--progress`) or with an `%i` in the format, never
    /// with `-q`.
    pub fn says_created_dirs(&self) -> bool {
        (self.info.level(Flag::Name) > 0 || self.listing.as_ref().is_some_and(|f| f.itemizes))
            && !self.quiet
    }
}

/// rsync's 11-letter `--itemize-changes` code (`YXcstpoguax`).
pub fn itemize_code(file_type: FileType, c: &Change) -> String {
    let y = match c.how {
        How::Transfer => '>',
        How::Local => 'c',
        How::HardLink => 'h',
        How::Attrs => '.',
    };
    let x = match file_type {
        FileType::File => 'f',
        FileType::Dir => 'd',
        FileType::Symlink => 'L',
        FileType::CharDev | FileType::BlockDev => 'D',
        FileType::Fifo | FileType::Socket => 'S',
        FileType::Unknown => '?',
    };
    if c.new {
        return format!("{y}{x}+++++++++");
    }
    if c.how != How::Transfer
        && !(c.checksum
            || c.size
            || c.time
            || c.stamped
            || c.perms
            || c.owner
            || c.group
            || c.atime
            || c.acl
            || c.xattr)
    {
        // Nothing differs (`-ii`, or a reference tree's match): spaces, as rsync prints them.
        return format!("{y}{x}         ");
    }
    let f = |on: bool, l: char| if on { l } else { '.' };
    [
        y,
        x,
        f(c.checksum, 'c'),
        f(c.size, 's'),
        if c.stamped { 'T' } else { f(c.time, 't') },
        f(c.perms, 'p'),
        f(c.owner, 'o'),
        f(c.group, 'g'),
        f(c.atime, 'u'),
        f(c.acl, 'a'),
        f(c.xattr, 'x'),
    ]
    .iter()
    .collect()
}

/// A name as rsync lists it: directories end with `/`, the transfer root is `./`.
pub fn listed(path: &Path, file_type: FileType) -> Vec<u8> {
    let mut line = escape(path);
    if file_type == FileType::Dir {
        if line.is_empty() {
            line.extend_from_slice(b".");
        }
        line.push(b'/');
    }
    line
}

/// A path as rsync prints it in a UTF-8 locale: valid UTF-8 as it is (tab and DEL too),
/// other control characters and bytes that are not valid UTF-8 as `\#ooo` (octal; with `-8`
/// such bytes as they are).
pub fn escape(p: &Path) -> Vec<u8> {
    let bytes = p.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let octal = |out: &mut Vec<u8>, b: u8| out.extend_from_slice(format!("\\#{b:03o}").as_bytes());
    let raw_high = EIGHT_BIT.load(std::sync::atomic::Ordering::Relaxed);
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if (ch as u32) < 0x20 && ch != '\t' {
                octal(&mut out, ch as u8);
            } else {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
        for &b in chunk.invalid() {
            if raw_high {
                out.push(b);
            } else {
                octal(&mut out, b);
            }
        }
    }
    out
}

/// `-8/--8-bit-output`: bytes that are not UTF-8 are printed as they are, not as `\#ooo`.
pub static EIGHT_BIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let s = e.to_string();
            let text = s.split(" (os error").next().unwrap_or(&s).to_string();
            format!("{text} ({code})")
        }
        None => e.to_string(),
    }
}

impl Observer for Printer {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Error {
                path,
                op,
                error,
                class,
            } => {
                let mut line = Vec::new();
                let what = if *class == ErrorClass::Vanished {
                    "file has vanished: ".to_string()
                } else {
                    format!("{op} ")
                };
                line.extend_from_slice(format!("arsync: {what}\"").as_bytes());
                line.extend_from_slice(&escape(path));
                if *class == ErrorClass::Vanished {
                    line.extend_from_slice(b"\"\n");
                } else {
                    line.extend_from_slice(
                        format!("\" failed: {}\n", errno_text(error)).as_bytes(),
                    );
                }
                write_err(&line);
                if let Some(log) = &self.log {
                    log.message(&line);
                }
                tracing::debug!(op = *op, ?class, "entry failed");
            }
            Event::Warning { message } => {
                if let Some(log) = &self.log {
                    log.message(format!("arsync: warning: {message}").as_bytes());
                }
                if !self.quiet {
                    errln!("arsync: warning: {message}");
                }
            }
            Event::Skipped {
                path,
                reason,
                target,
            } => {
                // As rsync: each kind at its --info word (a directory without -r and a
                // directory that cannot be deleted are always said).
                let shown = match reason {
                    SkipReason::NonRegular => self.says(Flag::Nonreg, 1),
                    SkipReason::UnsafeSymlink => self.says(Flag::Name, 1),
                    SkipReason::OtherFileSystem => self.says(Flag::Mount, 1),
                    SkipReason::OverMaxSize | SkipReason::UnderMinSize => self.says(Flag::Skip, 1),
                    SkipReason::Directory | SkipReason::NonEmptyDirectory => !self.quiet,
                };
                if !shown {
                    return;
                }
                let mut line = Vec::new();
                match reason {
                    SkipReason::Directory => {
                        line.extend_from_slice(b"skipping directory ");
                        line.extend_from_slice(&escape(path));
                    }
                    SkipReason::NonRegular => {
                        line.extend_from_slice(b"skipping non-regular file \"");
                        line.extend_from_slice(&escape(path));
                        line.push(b'"');
                    }
                    SkipReason::UnsafeSymlink => {
                        line.extend_from_slice(b"ignoring unsafe symlink \"");
                        line.extend_from_slice(&escape(path));
                        line.push(b'"');
                        if let Some(t) = target {
                            line.extend_from_slice(b" -> \"");
                            line.extend_from_slice(&escape(Path::new(OsStr::from_bytes(t))));
                            line.push(b'"');
                        }
                    }
                    SkipReason::OtherFileSystem => {
                        line.extend_from_slice(b"skipping mount-point dir ");
                        line.extend_from_slice(&escape(path));
                    }
                    SkipReason::OverMaxSize => {
                        line.extend_from_slice(&escape(path));
                        line.extend_from_slice(b" is over max-size");
                    }
                    SkipReason::UnderMinSize => {
                        line.extend_from_slice(&escape(path));
                        line.extend_from_slice(b" is under min-size");
                    }
                    SkipReason::NonEmptyDirectory => {
                        line.extend_from_slice(b"cannot delete non-empty directory: ");
                        line.extend_from_slice(&escape(path));
                    }
                }
                line.push(b'\n');
                write_out(&line);
            }
            Event::Notice { path, notice } => {
                let mut line = Vec::new();
                match notice {
                    engine::Notice::CopyingUnsafeSymlink { target } => {
                        if !self.says(Flag::Symsafe, 1) {
                            return;
                        }
                        line.extend_from_slice(b"copying unsafe symlink \"");
                        line.extend_from_slice(&escape(path));
                        line.extend_from_slice(b"\" -> \"");
                        line.extend_from_slice(&escape(Path::new(OsStr::from_bytes(target))));
                        line.push(b'"');
                    }
                    engine::Notice::BackedUp { to } => {
                        if !self.says(Flag::Backup, 1) {
                            return;
                        }
                        line.extend_from_slice(b"backed up ");
                        line.extend_from_slice(&escape(path));
                        line.extend_from_slice(b" to ");
                        line.extend_from_slice(&escape(to));
                    }
                    engine::Notice::BackupDir { new } => {
                        if !self.says(Flag::Backup, 1) {
                            return;
                        }
                        if *new {
                            line.extend_from_slice(b"(new) ");
                        }
                        line.extend_from_slice(b"backup_dir is ");
                        // (Without a trailing slash, as rsync prints it.)
                        line.extend_from_slice(&escape(&path.components().collect::<PathBuf>()));
                    }
                    engine::Notice::Filter {
                        receiving,
                        is_dir,
                        rule,
                    } => {
                        if self.quiet {
                            return;
                        }
                        // rsync's report_filter_result.
                        let (who, verb) = match (receiving, rule.action) {
                            (false, engine::filter::Action::Include) => ("sender", "showing"),
                            (false, engine::filter::Action::Exclude) => ("sender", "hiding"),
                            (true, engine::filter::Action::Include) => ("generator", "risking"),
                            (true, engine::filter::Action::Exclude) => ("generator", "protecting"),
                        };
                        let kind = if *is_dir { "directory" } else { "file" };
                        line.extend_from_slice(format!("[{who}] {verb} {kind} ").as_bytes());
                        line.extend_from_slice(&escape(path));
                        line.extend_from_slice(b" because of pattern ");
                        line.extend_from_slice(rule.shown().as_bytes());
                    }
                    engine::Notice::SourceRemoved => {
                        if !self.says(Flag::Remove, 1) {
                            return;
                        }
                        line.extend_from_slice(b"sender removed ");
                        line.extend_from_slice(&escape(path));
                    }
                }
                line.push(b'\n');
                write_out(&line);
            }
            Event::Item {
                path,
                file_type,
                change,
                link,
                bytes,
                stat,
                checksum,
                root,
            } => {
                let what = Line {
                    path,
                    file_type: *file_type,
                    change: Some(change),
                    bytes: *bytes,
                    stat: *stat,
                    link: *link,
                    checksum: *checksum,
                    base: self.bases.get(*root).map(|b| b.as_path()),
                };
                // An unchanged entry (listed at -ii or --info=name2) goes to the log file only
                // when the item lines show %i, as rsync's log_item is reached.
                let unchanged_unshown =
                    !change.any() && !self.listing.as_ref().is_some_and(|f| f.itemizes);
                if let Some(log) = &self.log
                    && !unchanged_unshown
                {
                    log.item(&what);
                }
                if self.quiet {
                    return;
                }
                let mut line = Vec::new();
                if let Some(f) = &self.listing {
                    let touched_dir = *file_type == FileType::Dir && change.any();
                    if f.itemizes
                        || change.new
                        || change.how != How::Attrs
                        || touched_dir
                        || (self.info.level(Flag::Name) > 1 && *file_type != FileType::Dir)
                    {
                        // Without %i (plain -v, an --out-format), rsync lists what was
                        // transferred or created, and a directory whose attributes it touched;
                        // a file's attribute fixes only at --info=name2 (-vv), with the others
                        // "is uptodate".
                        line = if !f.itemizes && !change.any() {
                            // (rsync's own line, whatever the format.)
                            [&escape(path)[..], b" is uptodate"].concat()
                        } else {
                            f.render(&what)
                        };
                        line.push(b'\n');
                    }
                }
                if let Some((p, start)) = &self.progress
                    && *file_type == FileType::File
                    && change.how == How::Transfer
                {
                    line.extend_from_slice(
                        crate::progress::file_line(*bytes, &p.snapshot(), start.elapsed())
                            .as_bytes(),
                    );
                    line.push(b'\n');
                }
                if !line.is_empty() {
                    write_out(&line);
                }
            }
            Event::DestCreated { path } => {
                // (Never for a destination `--mkpath` made: the run finds it there.)
                // As rsync names it: without a trailing slash, the root as "/".
                let shown = path.to_string_lossy();
                let shown = shown.trim_end_matches('/');
                let line = format!(
                    "created directory {}",
                    if shown.is_empty() { "/" } else { shown }
                );
                if let Some(log) = &self.log {
                    log.message(line.as_bytes());
                }
                if self.says_created_dirs() {
                    outln!("{line}");
                }
            }
            Event::Deleted { path, file_type } => {
                let what = Line {
                    path,
                    file_type: *file_type,
                    change: None,
                    bytes: 0,
                    stat: None,
                    link: None,
                    checksum: None,
                    base: None,
                };
                if let Some(log) = &self.log {
                    log.item(&what);
                }
                // As rsync's log_delete: at --info=del (-v), or whenever item lines are
                // written.
                if self.quiet || (self.info.level(Flag::Del) == 0 && self.listing.is_none()) {
                    return;
                }
                let mut line = match &self.listing {
                    Some(f) if f.itemizes => f.render(&what),
                    // rsync lists a deletion this way whatever the format.
                    _ => [b"deleting ".as_slice(), &listed(path, *file_type)].concat(),
                };
                line.push(b'\n');
                write_out(&line);
            }
        }
    }

    fn wants_items(&self) -> bool {
        ((self.listing.is_some() || self.progress.is_some()) && !self.quiet) || self.log.is_some()
    }
}

/// What the run prints at its end: rsync's statistics at `--info=stats2` (`--stats`), the
/// summary at `--info=stats1` (`-v`), nothing with `-q`.
pub fn end_of_run(parsed: &crate::cli::Parsed, r: &Report) {
    if parsed.quiet {
        return;
    }
    match parsed.info.level(Flag::Stats) {
        0 => {}
        1 => summary(r, parsed.config.dry_run),
        _ => rsync_stats(r, parsed.config.dry_run),
    }
}

/// The `-v` end-of-run lines.
pub fn summary(r: &Report, dry_run: bool) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    outln!(
        "\n{} files, {} dirs, {} symlinks, {} specials; {} bytes in {:.3} s ({} bytes/sec){}",
        num(r.files),
        num(r.dirs),
        num(r.symlinks),
        num(r.specials),
        num(r.bytes),
        secs,
        dnum(r.bytes as f64 / secs),
        if dry_run { " (DRY RUN)" } else { "" }
    );
}

use crate::progress::{dnum, num};

/// `--stats`: rsync's end-of-run statistics, with the lines that mean something for a local
/// copy (no file list is sent, so those lines are left out).
pub fn rsync_stats(r: &Report, dry_run: bool) {
    let c = &r.considered;
    let total = c.files + c.dirs + c.symlinks + c.specials;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    // rsync's breakdown by kind, of the kinds there are: " (reg: 2, dir: 1)".
    let by_kind = |counts: [u64; 5]| {
        let parts: Vec<String> = ["reg", "dir", "link", "dev", "special"]
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what}: {}", num(n)))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let considered = [
        c.files,
        c.dirs,
        c.symlinks,
        c.devices,
        c.specials.saturating_sub(c.devices),
    ];
    outln!();
    outln!("Number of files: {}{}", num(total), by_kind(considered));
    outln!(
        "Number of created files: {}{}",
        num(r.created),
        by_kind(r.created_by)
    );
    outln!(
        "Number of deleted files: {}{}",
        num(r.deleted),
        by_kind(r.deleted_by)
    );
    // (A file copied from a reference on the destination's side is not transferred, for rsync.)
    outln!(
        "Number of regular files transferred: {}",
        num(r.files - r.from_reference)
    );
    outln!("Number of unchanged entries: {}", num(r.unchanged));
    outln!("Number of skipped entries: {}", num(r.skipped));
    // (rsync counts symlinks' target lengths in the total, and whole files in the transferred
    // size, however little of them `--append` or a resumed partial file wrote.)
    outln!("Total file size: {} bytes", num(c.bytes + c.link_bytes));
    outln!(
        "Total transferred file size: {} bytes",
        num(r.transferred_size)
    );
    // arsync's own line: how the transferred files' data moved (rsync has no such line).
    let sum = |f: fn(&engine::CoreReport) -> u64| num(r.cores.iter().map(f).sum::<u64>());
    outln!(
        "Files by copy method: clone {}, copy_file_range {} (split across cores {}), io_uring {}, inline {}",
        sum(|c| c.cloned_files),
        sum(|c| c.kernel_copied_files),
        sum(|c| c.split_files),
        sum(|c| c.ring_files),
        sum(|c| c.inline_files),
    );
    outln!(
        "\ncopied {} bytes in {:.3} seconds  {} bytes/sec{}",
        num(r.bytes),
        secs,
        dnum(r.bytes as f64 / secs),
        if dry_run { " (DRY RUN)" } else { "" }
    );
}

/// rsync's exit code for a finished run: 20 when a signal stopped it, 11 for a destination that
/// could not be set up, then 23 for any failed entry, 24 when source files vanished (23 wins over
/// 24), 25 when `--max-delete` stopped deletions, else 0.
pub fn exit_code(r: &Report) -> i32 {
    if r.interrupted {
        20
    } else if let Some((code, _)) = &r.halted {
        *code
    } else if r.fatal.is_some() || r.file_io_errors > 0 {
        11
    } else if r.errors > 0 {
        23
    } else if r.vanished > 0 {
        24
    } else if r.delete_skipped > 0 {
        25
    } else {
        0
    }
}

/// How the output that is not an error (item lines, notices, progress, statistics) is written:
/// rsync's `--outbuf`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutBuf {
    /// Every piece written at once (`N`).
    None,
    /// Line by line (`L`, the default).
    #[default]
    Line,
    /// In blocks of 64 KiB, and at the end (`B`): fewer writes when the output is a file or pipe.
    Block,
}

/// `--stderr=all`: the output goes to stderr with the errors.
static OUT_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--outbuf`: 0 none, 1 line, 2 block.
static OUT_BUF: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
/// `--outbuf=B`: what is written but not yet out.
static PENDING: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Set where and how the output goes (`--stderr`, `--outbuf`), before anything is printed.
pub fn set_out(to_stderr: bool, buf: OutBuf) {
    use std::sync::atomic::Ordering::Relaxed;
    OUT_TO_STDERR.store(to_stderr, Relaxed);
    OUT_BUF.store(
        match buf {
            OutBuf::None => 0,
            OutBuf::Line => 1,
            OutBuf::Block => 2,
        },
        Relaxed,
    );
}

/// Whether the output goes to stderr (`--stderr=all`).
pub fn out_is_stderr() -> bool {
    OUT_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Write output that is not an error: to stdout (or with `--stderr=all` to stderr), buffered as
/// `--outbuf` says. A closed stdout (`arsync -v … | head`) stops the output, not the run.
pub fn write_out(bytes: &[u8]) {
    use std::sync::atomic::Ordering::Relaxed;
    if OUT_TO_STDERR.load(Relaxed) {
        return write_err(bytes);
    }
    match OUT_BUF.load(Relaxed) {
        0 => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        }
        2 => {
            let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(bytes);
            if pending.len() >= 64 << 10 {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&pending).and_then(|()| out.flush());
                pending.clear();
            }
        }
        _ => {
            let _ = std::io::stdout().lock().write_all(bytes);
        }
    }
}

/// Write out what `--outbuf=B` still holds (at the end of the run).
pub fn flush_out() {
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    if !pending.is_empty() {
        let _ = out.write_all(&pending);
        pending.clear();
    }
    let _ = out.flush();
}

/// A diagnostic could not be written to stderr (closed, e.g. `2>&1 | head`).
static MESSAGE_LOST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write a diagnostic to stderr; if it cannot be written, the run goes on and ends with 13.
pub fn write_err(line: &[u8]) {
    if std::io::stderr().lock().write_all(line).is_err() {
        MESSAGE_LOST.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The exit code, given that diagnostics may have been lost: rsync ends with 13 ("errors with
/// program diagnostics") when it cannot write one, whatever else happened (a usage error, 1,
/// stays: arsync reports it before anything runs).
pub fn with_lost_messages(code: i32) -> i32 {
    if code != 1 && MESSAGE_LOST.load(std::sync::atomic::Ordering::Relaxed) {
        13
    } else {
        code
    }
}

/// rsync's text for an exit code.
pub fn code_text(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        3 => "errors selecting input/output files, dirs",
        11 => "error in file IO",
        13 => "errors with program diagnostics",
        20 => "received SIGINT, SIGTERM, or SIGHUP",
        23 => "some files/attrs were not transferred (see previous errors)",
        24 => "some files vanished before they could be transferred",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        _ => "error",
    }
}

/// Logging through tracing: `RUST_LOG` wins; otherwise warnings, more with `-vv`/`-vvv`, errors
/// only with `-q`. The events go to stderr and, with `--log-file`, to the log file too (there at
/// `info` or the `-vv`/`-vvv` level, whichever is more, and without colours).
pub fn init_logging(verbose: u8, quiet: bool, log: Option<std::fs::File>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 | 1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        }
    };
    let from_env = || EnvFilter::try_from_default_env().ok();
    use std::io::IsTerminal;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(from_env().unwrap_or_else(|| EnvFilter::new(default)));
    let file = log.map(|f| {
        let level = if verbose >= 3 { default } else { "info" };
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(f))
            .with_timer(crate::logfmt::LogTime)
            .with_ansi(false)
            .with_target(false)
            .with_filter(from_env().unwrap_or_else(|| EnvFilter::new(level)))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// Calls per routed class and path, summed over `cores`:
/// `{"stat": {"inline": n, "ring": n, "worker": n}, ...}`.
fn routes_json(cores: &[[[u64; 3]; 5]]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (ci, class) in engine::ROUTE_CLASSES.iter().enumerate() {
        let mut by = serde_json::Map::new();
        for (vi, via) in [engine::Via::Inline, engine::Via::Ring, engine::Via::Worker]
            .iter()
            .enumerate()
        {
            let n: u64 = cores.iter().map(|c| c[ci][vi]).sum();
            by.insert(via.name().to_string(), n.into());
        }
        out.insert(class.to_string(), by.into());
    }
    out.into()
}

/// The `--stats-json` document (schema in `docs/stats-json.md`).
pub fn stats_json(cfg: &engine::Config, r: &Report, exit_code: i32) -> String {
    let kinds = |k: [u64; 5]| serde_json::json!({"reg": k[0], "dir": k[1], "link": k[2], "dev": k[3], "special": k[4]});
    let cores: Vec<serde_json::Value> = r
        .cores
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "core": i,
                "cpu": c.cpu,
                "tasks": c.tasks,
                "local_pops": c.sched.local_pops,
                "injector_pops": c.sched.injector_pops,
                "steals": c.sched.steals,
                "pushes": c.sched.pushes,
                "parks": c.sched.parks,
                "io_uring": c.io_uring,
                "iowq_workers": c.iowq_workers,
                "inline_files": c.inline_files,
                "ring_files": c.ring_files,
                "cloned_files": c.cloned_files,
                "kernel_copied_files": c.kernel_copied_files,
                "split_files": c.split_files,
                "split_chunks": c.split_chunks,
                "parked_dirs": c.parked_dirs,
                "reopened_dirs": c.reopened_dirs,
                "offloaded_files": c.offloaded_files,
                "offloaded_pieces": c.offloaded_pieces,
                "offloaded_peak": c.offloaded_peak,
                "routes": routes_json(&[c.routed]),
                "hard_linked": c.hard_linked,
            })
        })
        .collect();
    let mut latency = serde_json::Map::new();
    let mut phases: std::collections::BTreeMap<&str, f64> = ["scan", "copy", "metadata", "delete"]
        .into_iter()
        .map(|p| (p, 0.0))
        .collect();
    if let Some(l) = &r.latency {
        for (op, h) in &l.0 {
            let sum_ns: f64 = h.iter_recorded().fold(0.0, |acc, v| {
                acc + v.value_iterated_to() as f64 * v.count_at_value() as f64
            });
            *phases.entry(op.phase()).or_default() += sum_ns / 1e9;
            latency.insert(
                op.name().into(),
                serde_json::json!({
                    "count": h.len(),
                    "p50_us": h.value_at_quantile(0.5) as f64 / 1e3,
                    "p90_us": h.value_at_quantile(0.9) as f64 / 1e3,
                    "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
                    "max_us": h.max() as f64 / 1e3,
                    "total_s": sum_ns / 1e9,
                }),
            );
        }
    }
    let doc = serde_json::json!({
        "schema": 1,
        "latency": latency,
        "phases_s": phases,
        "version": env!("CARGO_PKG_VERSION"),
        "exit_code": exit_code,
        "wall_s": r.elapsed.as_secs_f64(),
        "threads": r.cores.len(),
        "pinned": cfg.pin,
        "counts": {
            "files": r.files,
            "dirs": r.dirs,
            "symlinks": r.symlinks,
            "specials": r.specials,
            "hard_links": r.hard_links,
            "skipped": r.skipped,
            "unchanged": r.unchanged,
            "errors": r.errors,
            "vanished": r.vanished,
            "file_io_errors": r.file_io_errors,
        },
        "bytes": r.bytes,
        "transferred_size": r.transferred_size,
        "from_reference": r.from_reference,
        "deleted": r.deleted,
        "deleted_by": kinds(r.deleted_by),
        "created_by": kinds(r.created_by),
        "delete_skipped": r.delete_skipped,
        "created": r.created,
        "verified": r.verified,
        "considered": {
            "files": r.considered.files,
            "dirs": r.considered.dirs,
            "symlinks": r.considered.symlinks,
            "specials": r.considered.specials,
            "devices": r.considered.devices,
            "bytes": r.considered.bytes,
            "link_bytes": r.considered.link_bytes,
        },
        "dry_run": cfg.dry_run,
        "copy_methods": {
            "inline": r.cores.iter().map(|c| c.inline_files).sum::<u64>(),
            "uring": r.cores.iter().map(|c| c.ring_files).sum::<u64>(),
            "copy_file_range": r.cores.iter().map(|c| c.kernel_copied_files).sum::<u64>(),
            "clone": r.cores.iter().map(|c| c.cloned_files).sum::<u64>(),
            "split_across_cores": r.cores.iter().map(|c| c.split_files).sum::<u64>(),
        },
        "routes": routes_json(&r.cores.iter().map(|c| c.routed).collect::<Vec<_>>()),
        "settings": {
            "copy_method": match cfg.copy_method {
                engine::CopyMethod::Auto => "auto",
                engine::CopyMethod::CopyFileRange => "copy-file-range",
                engine::CopyMethod::Uring => "uring",
            },
            "reflink": match cfg.reflink {
                engine::Reflink::Auto => "auto",
                engine::Reflink::Always => "always",
                engine::Reflink::Never => "never",
            },
            "direct": cfg.direct,
            "queue_depth": cfg.ring_depth,
            "buffer_size": cfg.chunk_size,
            "files_in_flight": cfg.inflight_per_core,
            "large_files_in_flight": cfg.ring_files_per_core,
            "inline_max": cfg.small_file_max,
            "split_chunk": cfg.split_chunk,
            "split_forced": cfg.split_forced,
            "routes": engine::ROUTE_CLASSES
                .iter()
                .zip(cfg.routes.0)
                .map(|(c, v)| (c.to_string(), serde_json::Value::from(v.name())))
                .collect::<serde_json::Map<_, _>>(),
            "meta_workers": cfg.meta_workers,
            "iowq_workers": cfg.iowq_max_workers,
        },
        "cores": cores,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
