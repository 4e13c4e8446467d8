//! rsync 3.5's defence for the paths the operator names: the destination, `--backup-dir`,
//! `-T`, `--link-dest`/`--compare-dest`/`--copy-dest`, `--log-file`, `--files-from`,
//! `--exclude-from`/`--include-from` and the merge files of filter rules. A symlink along such a
//! path is followed only when root or the running user owns it; one owned by anyone else is
//! refused (a user who can write in a directory on the path cannot redirect a privileged run
//! elsewhere), with rsync's message and `ELOOP`. `--insecure-links` turns the walk off. This
//! module owns the switch, the message and the readers; the walk is
//! [`engine::untrusted_symlink`]'s.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--insecure-links`: follow any symlink in the operator's paths, as rsync before 3.5 did.
static INSECURE: AtomicBool = AtomicBool::new(false);

/// rsync's words when it refuses a path.
pub const REFUSING: &str = "refusing to follow a symlink owned by an untrusted user; use --insecure-links locally or \"insecure links = yes\" in a daemon module ONLY if every path component is trusted";

/// Set by the command line, before any path is read.
pub fn set_insecure(insecure: bool) {
    INSECURE.store(insecure, Ordering::Relaxed);
}

/// `Err(ELOOP)` (after rsync's message on stderr) when the walk of `path` meets a symlink owned
/// by neither root nor us.
pub fn check(path: &Path) -> io::Result<()> {
    if trusted(path) {
        return Ok(());
    }
    errln!("{REFUSING}");
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// Whether `path` passes the walk (no message).
pub fn trusted(path: &Path) -> bool {
    INSECURE.load(Ordering::Relaxed) || engine::untrusted_symlink(path).is_none()
}

/// `std::fs::read` of an operator's file, after [`check`].
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    check(path)?;
    std::fs::read(path)
}

/// [`read`] for a rules file (`--exclude-from`, `--include-from`, a `merge` rule's file): a
/// directory reads as no rules, as rsync reads it (its `fgets` finds nothing).
pub fn read_rules(path: &Path) -> io::Result<Vec<u8>> {
    match read(path) {
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(Vec::new()),
        r => r,
    }
}
