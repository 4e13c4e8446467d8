//! rsync's per-item format strings (`--out-format`, `--log-file-format`) and the log file
//! (`--log-file`): parsing a format once, rendering it for each item or deletion, and appending
//! rsync-style `YYYY/MM/DD HH:MM:SS [PID] ` lines to the log.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use engine::{Change, FileType, How};

/// rsync's default `--log-file-format` (and what `-i` prints).
pub const DEFAULT_LOG_FORMAT: &str = "%i %n%L";

/// One piece of a parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Escape {
        letter: u8,
        /// `%-10n`: pad on the right to this width (negative: `-`, on the left otherwise).
        width: Option<(bool, usize)>,
        /// `%'l`: digits grouped with commas.
        commas: bool,
    },
}

/// A parsed format string.
#[derive(Clone, Debug)]
pub struct Format {
    pieces: Vec<Piece>,
    /// Whether it shows `%i` (rsync then lists attribute-only changes too).
    pub itemizes: bool,
}

/// The escapes a local copy can fill in (`%m`, a daemon's module name, is empty here, as in
/// rsync's local copy).
const LETTERS: &[u8] = b"bBcCfGilLmMnopt%U";

impl Format {
    /// Parse `fmt` as rsync's local copy does: an escape it does not know (`%a`, `%h`, `%P`,
    /// `%u`, `%Z`, a lone `%` at the end) stays as written.
    pub fn parse(fmt: &str) -> Result<Self, String> {
        let b = fmt.as_bytes();
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                text.push(b[i]);
                i += 1;
                continue;
            }
            let escape_at = i;
            i += 1;
            let mut commas = false;
            let mut left = false;
            while i < b.len() && (b[i] == b'\'' || b[i] == b'-') {
                if b[i] == b'\'' {
                    commas = true;
                } else {
                    left = true;
                }
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let width = (i > start).then(|| {
                let n: usize = fmt[start..i].parse().unwrap_or(0);
                (left, n)
            });
            let Some(&letter) = b.get(i) else {
                text.extend_from_slice(&b[escape_at..]);
                break;
            };
            i += 1;
            if !LETTERS.contains(&letter) {
                // (As rsync: written out as it stands.)
                text.extend_from_slice(&b[escape_at..i]);
                continue;
            }
            if letter == b'%' {
                text.push(b'%');
                continue;
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Escape {
                letter,
                width,
                commas,
            });
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let itemizes = pieces
            .iter()
            .any(|p| matches!(p, Piece::Escape { letter: b'i', .. }));
        Ok(Self { pieces, itemizes })
    }

    /// Whether the format has the escape `%letter`.
    pub fn shows(&self, letter: u8) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Escape { letter: l, .. } if *l == letter))
    }

    /// One line (without the newline) for `what`.
    pub fn render(&self, what: &Line<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Escape {
                    letter,
                    width,
                    commas,
                } => {
                    let value = what.escape(*letter, *commas);
                    pad(&mut out, &value, *width);
                }
            }
        }
        out
    }
}

fn pad(out: &mut Vec<u8>, value: &[u8], width: Option<(bool, usize)>) {
    let fill = width.map_or(0, |(_, w)| w.saturating_sub(value.len()));
    let left = width.is_some_and(|(l, _)| l);
    if !left {
        out.extend(std::iter::repeat_n(b' ', fill));
    }
    out.extend_from_slice(value);
    if left {
        out.extend(std::iter::repeat_n(b' ', fill));
    }
}

/// What a line describes: an item brought up to date, or a deleted entry.
pub struct Line<'a> {
    pub path: &'a Path,
    pub file_type: FileType,
    /// `None` for a deletion.
    pub change: Option<&'a Change>,
    pub bytes: u64,
    pub stat: Option<&'a engine::Stat>,
    pub link: Option<&'a [u8]>,
    /// `%C`: the file's checksum, where the run knows it.
    pub checksum: Option<u128>,
    /// `%f`: the sending side's directory the item's path is relative to (`None`: a
    /// deletion, named as it stands).
    pub base: Option<&'a Path>,
}

/// The sending side's directory of a transfer root, which `%f` puts before an item's path as
/// rsync's sender does: `SRC/` for `SRC/` (its contents), the directory above for `SRC` (whose
/// items' paths begin with its name), the part before `/./` (or the current directory) for
/// `-R`.
pub fn sender_base(root: &engine::Root) -> std::path::PathBuf {
    let names = root.rel.components().count();
    let comps: Vec<_> = root.src.components().collect();
    let tail_is_rel = names > 0
        && comps.len() >= names
        && comps[comps.len() - names..]
            .iter()
            .map(|c| c.as_os_str())
            .eq(root.rel.components().map(|c| c.as_os_str()));
    if tail_is_rel {
        comps[..comps.len() - names].iter().collect()
    } else {
        root.src.clone()
    }
}

/// rsync's `%f`: `base/path` cleaned as its `clean_fname` leaves a name: no leading `/`, no
/// `./` and no empty components, a final `/.` kept (the root of a `SRC/` transfer).
fn long_name(base: &Path, path: &Path) -> Vec<u8> {
    let rel = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let joined = base.join(rel);
    let bytes = joined.as_os_str().as_bytes();
    let parts: Vec<&[u8]> = bytes.split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let kept: Vec<&[u8]> = parts
        .iter()
        .enumerate()
        .filter(|&(i, p)| !p.is_empty() && (*p != b"." || (i == last && i > 0)))
        .map(|(_, p)| *p)
        .collect();
    if kept.is_empty() {
        return b".".to_vec();
    }
    kept.join(&b'/')
}

impl Line<'_> {
    fn escape(&self, letter: u8, commas: bool) -> Vec<u8> {
        let num = |n: u64| {
            if commas {
                crate::progress::commas(n).into_bytes()
            } else {
                n.to_string().into_bytes()
            }
        };
        match letter {
            b'b' | b'c' => num(self.bytes),
            // As rsync: 32 hex digits (XXH3-128, its default checksum), spaces where unknown.
            b'C' => match self.checksum {
                Some(h) => format!("{h:032x}").into_bytes(),
                None => vec![b' '; 32],
            },
            b'l' => num(self.stat.map_or(0, |s| s.size)),
            b'i' => match self.change {
                Some(c) => crate::output::itemize_code(self.file_type, c).into_bytes(),
                None => b"*deleting  ".to_vec(),
            },
            // A local rsync prints its items from the sending side.
            b'o' => match self.change {
                None => b"del.".to_vec(),
                Some(_) => b"send".to_vec(),
            },
            b'n' => crate::output::listed(self.path, self.file_type),
            b'f' => match self.base {
                Some(base) => crate::output::escape(Path::new(std::ffi::OsStr::from_bytes(
                    &long_name(base, self.path),
                ))),
                None => {
                    let mut v = crate::output::escape(self.path);
                    if v.is_empty() {
                        v.push(b'.');
                    }
                    v
                }
            },
            b'L' => match (self.link, self.change.map(|c| c.how)) {
                (Some(l), Some(How::HardLink)) => [b" => ", l].concat(),
                (Some(l), _) => [b" -> ", l].concat(),
                _ => Vec::new(),
            },
            b'B' => self
                .stat
                .map_or_else(Vec::new, |s| perms(s.mode).into_bytes()),
            b'U' => self
                .stat
                .map_or_else(Vec::new, |s| s.uid.to_string().into_bytes()),
            b'G' => self
                .stat
                .map_or_else(Vec::new, |s| s.gid.to_string().into_bytes()),
            b'M' => self.stat.map_or_else(Vec::new, |s| {
                local_time(s.mtime.0, "%Y/%m/%d-%H:%M:%S").into_bytes()
            }),
            b'p' => std::process::id().to_string().into_bytes(),
            b't' => now("%Y/%m/%d %H:%M:%S").into_bytes(),
            _ => Vec::new(),
        }
    }
}

/// `rwxr-sr-t`, as `ls -l` and rsync's `%B` show permission bits.
pub fn perms(mode: u32) -> String {
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, s: u32, on: char, off: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => on,
        (false, true) => off,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// Seconds since the epoch in the local time zone, through `strftime`.
pub fn local_time(secs: i64, fmt: &str) -> String {
    let t: libc::time_t = secs;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above; localtime_r is the thread-safe variant.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return secs.to_string();
    }
    let cfmt = std::ffi::CString::new(fmt).unwrap_or_default();
    let mut buf = [0u8; 64];
    // SAFETY: buf is writable for its length, cfmt is NUL-terminated, tm was filled above.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    local_time(secs, fmt)
}

/// `--log-file`: every item and deletion in `--log-file-format`, the errors, and a start and an
/// end line, each prefixed with rsync's `YYYY/MM/DD HH:MM:SS [PID] `. The file is opened for
/// appending, and each line is one `write`, so lines from different cores never interleave.
pub struct LogFile {
    file: File,
    format: Format,
}

impl LogFile {
    /// Open (create or append to) `path`.
    pub fn open(path: &Path, format: Format) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { file, format })
    }

    /// A second handle on the same file (for the tracing layer).
    pub fn try_clone_file(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Append one message line.
    pub fn message(&self, text: &[u8]) {
        let mut line = prefix();
        line.extend_from_slice(text);
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let _ = (&self.file).write_all(&line);
    }

    /// Append the line of one item or deletion.
    pub fn item(&self, what: &Line<'_>) {
        self.message(&self.format.render(what));
    }
}

/// The log's time and PID prefix for the tracing events written to it.
pub struct LogTime;

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{} [{}]", now("%Y/%m/%d %H:%M:%S"), std::process::id())
    }
}

fn prefix() -> Vec<u8> {
    format!("{} [{}] ", now("%Y/%m/%d %H:%M:%S"), std::process::id()).into_bytes()
}

/// Names for the start line: the sources and the destination as the user gave them.
pub fn describe(paths: &[std::ffi::OsString]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            v.push(b' ');
        }
        v.extend_from_slice(p.as_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(path: &'a Path, change: Option<&'a Change>, st: &'a engine::Stat) -> Line<'a> {
        Line {
            path,
            file_type: FileType::File,
            change,
            bytes: 1234,
            stat: Some(st),
            link: None,
            checksum: None,
            base: None,
        }
    }

    #[test]
    fn formats_render_like_rsync() {
        let st = engine::Stat {
            mode: 0o104755,
            size: 1_234_567,
            uid: 1000,
            gid: 100,
            ..Default::default()
        };
        let new = Change::new_entry(How::Transfer);
        let p = Path::new("dir/file");
        let f = Format::parse("%i %n%L").unwrap();
        assert!(f.itemizes);
        assert_eq!(f.render(&line(p, Some(&new), &st)), b">f+++++++++ dir/file");
        assert_eq!(f.render(&line(p, None, &st)), b"*deleting   dir/file");
        let f = Format::parse("%o %'l %b %B %U:%G [%-6n] [%10b] 100%%").unwrap();
        assert!(!f.itemizes);
        assert_eq!(
            String::from_utf8(f.render(&line(Path::new("ab"), Some(&new), &st))).unwrap(),
            "send 1,234,567 1234 rwsr-xr-x 1000:100 [ab    ] [      1234] 100%"
        );
        // Escapes rsync's local copy does not fill in stay as written, %m is empty.
        let f = Format::parse("[%a|%5Z|%'h|%-3m|%n] 50%").unwrap();
        assert_eq!(
            String::from_utf8(f.render(&line(Path::new("ab"), Some(&new), &st))).unwrap(),
            "[%a|%5Z|%'h|   |ab] 50%"
        );
        // %C: rsync's 32 hex digits where the checksum is known, 32 spaces where not.
        let f = Format::parse("[%C] %n").unwrap();
        let mut summed = line(Path::new("ab"), Some(&new), &st);
        summed.checksum = Some(0x6bba86c7e069f56d5a10b435f1c8e49c);
        assert_eq!(
            String::from_utf8(f.render(&summed)).unwrap(),
            "[6bba86c7e069f56d5a10b435f1c8e49c] ab"
        );
        summed.checksum = Some(0);
        assert_eq!(
            String::from_utf8(f.render(&summed)).unwrap(),
            format!("[{}] ab", "0".repeat(32))
        );
        assert_eq!(
            String::from_utf8(f.render(&line(Path::new("ab"), Some(&new), &st))).unwrap(),
            format!("[{}] ab", " ".repeat(32))
        );
        assert_eq!(perms(0o1777), "rwxrwxrwt");
        assert_eq!(perms(0o2640), "rw-r-S---");
    }
}
