//! Extended attributes and POSIX ACLs (which the kernel exposes as the `system.posix_acl_access`
//! and `system.posix_acl_default` xattrs, copied byte for byte on one host).
//!
//! Regular files and directories are reached through their open fd (`f*xattr`). Symlinks,
//! devices, FIFOs and sockets have no fd we may open safely, so they are reached by name without
//! following (`l*xattr`) through `/proc/self/fd/DIRFD/NAME`, which keeps the path short whatever
//! the depth and resolves relative to the already-open directory.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What to read or write attributes of.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// The entry `name` in directory `dir`, not followed if it is a symlink.
    At(BorrowedFd<'a>, &'a CStr),
}

/// The access ACL's xattr name.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's xattr name (directories).
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Whether `name` is one of the two POSIX ACL attributes.
pub fn is_acl(name: &[u8]) -> bool {
    name == ACL_ACCESS || name == ACL_DEFAULT
}

fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).expect("names hold no NUL")
}

/// Call `f(buf_ptr, len)` with a growing buffer until the value fits (`ERANGE` retried).
fn sized(mut f: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        let n = f(buf.as_mut_ptr().cast(), cap);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || cap > 1 << 24 {
            return Err(e);
        }
        cap *= 4;
    }
}

/// The attribute names of `t` (may include `system.posix_acl_*`).
pub fn list(t: Target<'_>) -> io::Result<Vec<CString>> {
    let raw = match t {
        Target::Fd(fd) => {
            // SAFETY: the closure passes a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::flistxattr(fd.as_raw_fd(), p.cast(), len) })
        }
        Target::At(dir, name) => {
            let path = proc_path(dir, name);
            // SAFETY: valid path and a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::llistxattr(path.as_ptr(), p.cast(), len) })
        }
    }?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| CString::new(n).expect("split at NUL"))
        .collect())
}

/// The value of attribute `attr` of `t`.
pub fn get(t: Target<'_>, attr: &CStr) -> io::Result<Vec<u8>> {
    match t {
        Target::Fd(fd) => {
            // SAFETY: valid fd, name, and a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::fgetxattr(fd.as_raw_fd(), attr.as_ptr(), p, len) })
        }
        Target::At(dir, name) => {
            let path = proc_path(dir, name);
            // SAFETY: valid path, name, and a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::lgetxattr(path.as_ptr(), attr.as_ptr(), p, len) })
        }
    }
}

/// Set attribute `attr` of `t` to `value`.
pub fn set(t: Target<'_>, attr: &CStr, value: &[u8]) -> io::Result<()> {
    let r = match t {
        // SAFETY: valid fd, name and value buffer for the call.
        Target::Fd(fd) => unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        },
        Target::At(dir, name) => {
            let path = proc_path(dir, name);
            // SAFETY: valid path, name and value buffer for the call.
            unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    attr.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Why copying attributes failed.
#[derive(Debug)]
pub struct XattrError {
    /// The attribute concerned (empty when listing failed).
    pub name: Vec<u8>,
    /// The OS error.
    pub error: io::Error,
    /// Whether the destination file system does not support this kind of attribute at all
    /// (`EOPNOTSUPP`): reported once per run, not per file.
    pub unsupported: bool,
}

/// Copy the attributes of `src` that `want` accepts onto `dst`, the ACLs last (so the caller's
/// following `chmod` makes the mode and the ACL mask agree, as in the source). `security.*`
/// attributes are best effort: a refusal is ignored. Returns whether an ACL was set.
pub fn copy(
    src: Target<'_>,
    dst: Target<'_>,
    want: impl Fn(&[u8]) -> bool,
) -> Result<bool, XattrError> {
    let names = match list(src) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => {
            return Ok(false);
        }
        Err(error) => {
            return Err(XattrError {
                name: Vec::new(),
                error,
                unsupported: false,
            });
        }
    };
    let (acls, plain): (Vec<_>, Vec<_>) = names
        .into_iter()
        .filter(|n| want(n.to_bytes()))
        .partition(|n| is_acl(n.to_bytes()));
    for n in plain.iter().chain(acls.iter()) {
        let value = match get(src, n) {
            Ok(v) => v,
            // Removed between list and get: nothing to copy.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(error) => {
                return Err(XattrError {
                    name: n.to_bytes().to_vec(),
                    error,
                    unsupported: false,
                });
            }
        };
        if let Err(error) = set(dst, n, &value) {
            let b = n.to_bytes();
            let code = error.raw_os_error();
            if b.starts_with(b"security.") && matches!(code, Some(libc::EPERM) | Some(libc::EACCES))
            {
                continue;
            }
            return Err(XattrError {
                name: b.to_vec(),
                unsupported: matches!(code, Some(libc::EOPNOTSUPP)),
                error,
            });
        }
    }
    Ok(!acls.is_empty())
}
