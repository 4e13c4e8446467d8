//! `--list-only` (and a lone SRC, as rsync): the sources listed as rsync lists them (type and
//! permissions, size, mtime, name) instead of copied. The engine walks them as a dry run into a
//! destination that does not exist, so every entry comes as a new item; the items are collected
//! and printed at the end in rsync's order (in each directory its files, then its directories,
//! by name, each directory followed by its own listing).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use engine::{Event, FileType, Observer, Stat};

/// Where a listing run "copies" to: never there, never made (the run is a dry run).
pub const NOWHERE: &str = "/nonexistent/arsync-list-only/";

struct Entry {
    path: PathBuf,
    file_type: FileType,
    stat: Option<Stat>,
    link: Option<Vec<u8>>,
}

/// Collects the items of a listing run; every other event goes to the printer (errors on
/// stderr, as any run prints them).
pub struct Lister {
    printer: crate::output::Printer,
    entries: Mutex<Vec<Entry>>,
    /// Show a symlink's target (`-l`, as rsync).
    targets: bool,
}

impl Lister {
    pub fn new(printer: crate::output::Printer, targets: bool) -> Self {
        Self {
            printer,
            entries: Mutex::new(Vec::new()),
            targets,
        }
    }

    /// Print the listing.
    pub fn print(&self) {
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()));
        for e in order(entries) {
            crate::output::write_out(&line(&e, self.targets));
        }
    }
}

impl Observer for Lister {
    fn wants_items(&self) -> bool {
        true
    }

    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Item {
                path,
                file_type,
                stat,
                link,
                ..
            } => self
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Entry {
                    path: path.to_path_buf(),
                    file_type: *file_type,
                    stat: stat.copied(),
                    link: link.map(<[u8]>::to_vec),
                }),
            other => self.printer.event(other),
        }
    }
}

/// rsync's order: the top (`.` for a directory given with a trailing slash) first; then, in each
/// directory, its non-directories by name, then its directories by name, each followed at once
/// by its own listing.
fn order(entries: Vec<Entry>) -> Vec<Entry> {
    let mut top = Vec::new();
    let mut by_parent: BTreeMap<PathBuf, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        if e.path.as_os_str().is_empty() {
            top.push(e);
        } else {
            let parent = e.path.parent().unwrap_or(Path::new("")).to_path_buf();
            by_parent.entry(parent).or_default().push(e);
        }
    }
    let mut out = top;
    emit(Path::new(""), &mut by_parent, &mut out);
    out
}

fn emit(dir: &Path, by_parent: &mut BTreeMap<PathBuf, Vec<Entry>>, out: &mut Vec<Entry>) {
    let Some(mut children) = by_parent.remove(dir) else {
        return;
    };
    children.sort_by(|a, b| {
        let dir_a = a.file_type == FileType::Dir;
        let dir_b = b.file_type == FileType::Dir;
        (dir_a, a.path.as_os_str().as_bytes()).cmp(&(dir_b, b.path.as_os_str().as_bytes()))
    });
    for e in children {
        let sub = (e.file_type == FileType::Dir).then(|| e.path.clone());
        out.push(e);
        if let Some(d) = sub {
            emit(&d, by_parent, out);
        }
    }
}

/// One line: `drwxr-xr-x          4,096 2026/11/24 22:24:08 name[ -> target]`.
fn line(e: &Entry, targets: bool) -> Vec<u8> {
    let (mode, size, mtime) = e.stat.map_or((0, 0, 0), |s| (s.mode, s.size, s.mtime.0));
    let kind = match e.file_type {
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        FileType::CharDev => 'c',
        FileType::BlockDev => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        _ => '-',
    };
    // (rsync's widths: 14 for the size when it is human-readable at all, 11 with --no-h.)
    let width = if crate::progress::human() == 0 {
        11
    } else {
        14
    };
    let mut v = format!(
        "{kind}{} {:>width$} {} ",
        crate::logfmt::perms(mode),
        crate::progress::num(size),
        crate::logfmt::local_time(mtime, "%Y/%m/%d %H:%M:%S"),
    )
    .into_bytes();
    let name = crate::output::escape(&e.path);
    if name.is_empty() {
        v.push(b'.');
    } else {
        v.extend_from_slice(&name);
    }
    if let (FileType::Symlink, Some(t), true) = (e.file_type, &e.link, targets) {
        v.extend_from_slice(b" -> ");
        v.extend_from_slice(t);
    }
    v.push(b'\n');
    v
}
