//! Extended attributes and POSIX ACLs (which the kernel exposes as the `system.posix_acl_access`
//! and `system.posix_acl_default` xattrs, copied byte for byte on one host).
//!
//! Regular files and directories are reached through their open fd (`f*xattr`). Symlinks,
//! devices, FIFOs and sockets have no fd we may open safely, so they are reached by name without
//! following (`l*xattr`) through `/proc/self/fd/DIRFD/NAME`, which keeps the path short whatever
//! the depth and resolves relative to the already-open directory; on Linux 6.13 and later the
//! `*xattrat` calls do the same without the `/proc` walk.

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

/// How the ids that ACL entries name are changed on the way (`--usermap`, `--groupmap`,
/// `--chown`, as rsync's `match_acl_ids` changes them): given whether the entry names a user
/// (else a group) and its id, the id to write. `None`: as they are.
pub type AclIds<'a> = Option<&'a dyn Fn(bool, u32) -> u32>;

/// Pass the id of each named user and group entry of an ACL in the kernel's xattr form through
/// `ids`, the entries then in the kernel's order again (by tag, then id; entries that came to
/// name the same id stay in their order, as rsync, through libacl, writes them). A value that
/// is no such ACL is left as it is.
pub fn map_acl_ids(value: &mut Vec<u8>, ids: &dyn Fn(bool, u32) -> u32) {
    const USER: u16 = 0x02;
    const GROUP: u16 = 0x08;
    if value.len() < 4
        || !(value.len() - 4).is_multiple_of(8)
        || u32::from_le_bytes([value[0], value[1], value[2], value[3]]) != 2
    {
        return;
    }
    let mut entries: Vec<(u16, u32, [u8; 8])> = value[4..]
        .chunks_exact(8)
        .map(|e| {
            let mut e: [u8; 8] = e.try_into().expect("8 bytes");
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let mut id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if tag == USER || tag == GROUP {
                id = ids(tag == USER, id);
                e[4..8].copy_from_slice(&id.to_le_bytes());
            }
            (tag, id, e)
        })
        .collect();
    entries.sort_by_key(|&(tag, id, _)| (tag, id));
    value.truncate(4);
    for (_, _, e) in entries {
        value.extend_from_slice(&e);
    }
}

/// The permission bits an ACL in the kernel's xattr form (`posix_acl_xattr`: a version word,
/// then entries of tag, permissions and id) gives: its owner's, its mask's (its owning group's
/// where it has no mask) and its others' entries, as rsync's `rsync_acl_get_perms`; `None`
/// when the value is not such an ACL or lacks one of them.
pub fn acl_perms(value: &[u8]) -> Option<u32> {
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let (head, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*head) != 2 || !entries.len().is_multiple_of(8) {
        return None;
    }
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    for e in entries.chunks_exact(8) {
        let perm = Some(u32::from(u16::from_le_bytes([e[2], e[3]]) & 7));
        match u16::from_le_bytes([e[0], e[1]]) {
            USER_OBJ => user = perm,
            GROUP_OBJ => group = perm,
            MASK => mask = perm,
            OTHER => other = perm,
            _ => {}
        }
    }
    Some(user? << 6 | mask.or(group)? << 3 | other?)
}

fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).expect("names hold no NUL")
}

/// Call `f(buf_ptr, len)` with a growing buffer until the value fits (`ERANGE` retried).
/// The first try uses a buffer on the stack, so an entry without attributes (the common case)
/// costs no allocation.
fn sized(mut f: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut first = [0u8; 256];
    let n = f(first.as_mut_ptr().cast(), first.len());
    if n >= 0 {
        return Ok(first[..n as usize].to_vec());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ERANGE) {
        return Err(e);
    }
    let mut cap = 1024usize;
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

/// The `*xattrat` system calls (Linux 6.13): attributes of an entry by name relative to an open
/// directory, without the `/proc/self/fd` path walk. Same numbers on every architecture that has
/// them; older kernels answer `ENOSYS` once and the `/proc` path is used from then on.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
mod at {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub const SYS_SETXATTRAT: libc::c_long = 463;
    pub const SYS_GETXATTRAT: libc::c_long = 464;
    pub const SYS_LISTXATTRAT: libc::c_long = 465;
    pub const SYS_REMOVEXATTRAT: libc::c_long = 466;

    /// `struct xattr_args` of the kernel's uapi.
    #[repr(C)]
    pub struct XattrArgs {
        pub value: u64,
        pub size: u32,
        pub flags: u32,
    }

    /// Set once when the kernel lacks the calls; read-only afterwards (no contention).
    static MISSING: AtomicBool = AtomicBool::new(false);

    pub fn available() -> bool {
        !MISSING.load(Ordering::Relaxed)
    }

    /// `Some(result)` when the call ran, `None` (and remembered) when the kernel lacks it.
    pub fn ran(r: isize) -> Option<isize> {
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            MISSING.store(true, Ordering::Relaxed);
            return None;
        }
        Some(r)
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
mod at {
    pub fn available() -> bool {
        false
    }
}

/// The attribute names of `t` (may include `system.posix_acl_*`).
pub fn list(t: Target<'_>) -> io::Result<Vec<CString>> {
    let raw = match t {
        Target::Fd(fd) => {
            // SAFETY: the closure passes a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::flistxattr(fd.as_raw_fd(), p.cast(), len) })
        }
        Target::At(dir, name) => list_at(dir, name),
    }?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| CString::new(n).expect("split at NUL"))
        .collect())
}

fn list_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    if let Some(r) = sized_at(|p, len| {
        // SAFETY: valid directory fd, NUL-terminated name, and a buffer of `len` writable
        // bytes; AT_SYMLINK_NOFOLLOW as for llistxattr.
        unsafe {
            libc::syscall(
                at::SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                p,
                len,
            ) as isize
        }
    }) {
        return r;
    }
    let path = proc_path(dir, name);
    // SAFETY: valid path and a buffer of `len` writable bytes.
    sized(|p, len| unsafe { libc::llistxattr(path.as_ptr(), p.cast(), len) })
}

/// [`sized`] for a reading `*xattrat` call; `None` when the kernel lacks the calls.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn sized_at(mut f: impl FnMut(*mut libc::c_void, usize) -> isize) -> Option<io::Result<Vec<u8>>> {
    if !at::available() {
        return None;
    }
    let mut missing = false;
    let r = sized(|p, len| {
        at::ran(f(p, len)).unwrap_or_else(|| {
            missing = true;
            0
        })
    });
    (!missing).then_some(r)
}

/// A system call's result as `Ok(())` or the OS error.
fn unit(r: isize) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The value of attribute `attr` of `t`.
pub fn get(t: Target<'_>, attr: &CStr) -> io::Result<Vec<u8>> {
    match t {
        Target::Fd(fd) => {
            // SAFETY: valid fd, name, and a buffer of `len` writable bytes.
            sized(|p, len| unsafe { libc::fgetxattr(fd.as_raw_fd(), attr.as_ptr(), p, len) })
        }
        Target::At(dir, name) => {
            #[cfg(any(
                target_arch = "x86_64",
                target_arch = "aarch64",
                target_arch = "riscv64"
            ))]
            if let Some(r) = sized_at(|p, len| {
                let mut args = at::XattrArgs {
                    value: p as u64,
                    size: u32::try_from(len).unwrap_or(u32::MAX),
                    flags: 0,
                };
                // SAFETY: valid directory fd and names; `args` points at a buffer of `len`
                // writable bytes and lives across the call.
                unsafe {
                    libc::syscall(
                        at::SYS_GETXATTRAT,
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        attr.as_ptr(),
                        &mut args as *mut at::XattrArgs,
                        std::mem::size_of::<at::XattrArgs>(),
                    ) as isize
                }
            }) {
                return r;
            }
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
            #[cfg(any(
                target_arch = "x86_64",
                target_arch = "aarch64",
                target_arch = "riscv64"
            ))]
            if at::available() {
                let args = at::XattrArgs {
                    value: value.as_ptr() as u64,
                    size: u32::try_from(value.len()).unwrap_or(u32::MAX),
                    flags: 0,
                };
                // SAFETY: valid directory fd and names; `args` points at `value`, which
                // outlives the call.
                let r = unsafe {
                    libc::syscall(
                        at::SYS_SETXATTRAT,
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        attr.as_ptr(),
                        &args as *const at::XattrArgs,
                        std::mem::size_of::<at::XattrArgs>(),
                    )
                } as isize;
                if let Some(r) = at::ran(r) {
                    return unit(r);
                }
            }
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
    unit(r as isize)
}

/// Remove attribute `attr` of `t`.
pub fn remove(t: Target<'_>, attr: &CStr) -> io::Result<()> {
    let r = match t {
        // SAFETY: valid fd and name.
        Target::Fd(fd) => unsafe { libc::fremovexattr(fd.as_raw_fd(), attr.as_ptr()) },
        Target::At(dir, name) => {
            #[cfg(any(
                target_arch = "x86_64",
                target_arch = "aarch64",
                target_arch = "riscv64"
            ))]
            if at::available() {
                // SAFETY: valid directory fd and NUL-terminated names.
                let r = unsafe {
                    libc::syscall(
                        at::SYS_REMOVEXATTRAT,
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        attr.as_ptr(),
                    )
                } as isize;
                if let Some(r) = at::ran(r) {
                    return unit(r);
                }
            }
            let path = proc_path(dir, name);
            // SAFETY: valid path and name.
            unsafe { libc::lremovexattr(path.as_ptr(), attr.as_ptr()) }
        }
    };
    unit(r as isize)
}

/// Why comparing the attributes of two entries ([`Plan::between`]) failed, and on which side.
#[derive(Debug)]
pub struct PlanError {
    /// What failed.
    pub error: XattrError,
    /// Reading the destination's failed (else the source's).
    pub in_dst: bool,
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

/// The names of `t` that `want` accepts; none where the file system has no attributes.
fn wanted_names(t: Target<'_>, want: &impl Fn(&[u8]) -> bool) -> Result<Vec<CString>, XattrError> {
    match list(t) {
        Ok(n) => Ok(n.into_iter().filter(|n| want(n.to_bytes())).collect()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        Err(error) => Err(XattrError {
            name: Vec::new(),
            error,
            unsupported: false,
        }),
    }
}

/// The names of `t` that `want` accepts, with their values (a name removed between the list
/// and the read is left out; the ids ACLs name through `ids`), plain attributes first and ACLs
/// last.
fn wanted_values(
    t: Target<'_>,
    want: &impl Fn(&[u8]) -> bool,
    ids: AclIds<'_>,
) -> Result<Vec<(CString, Vec<u8>)>, XattrError> {
    let mut out = Vec::new();
    for n in wanted_names(t, want)? {
        match get(t, &n) {
            Ok(mut v) => {
                if let Some(ids) = ids.filter(|_| is_acl(n.to_bytes())) {
                    map_acl_ids(&mut v, ids);
                }
                out.push((n, v));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(error) => {
                return Err(XattrError {
                    name: n.to_bytes().to_vec(),
                    error,
                    unsupported: false,
                });
            }
        }
    }
    out.sort_by_key(|(n, _)| is_acl(n.to_bytes()));
    Ok(out)
}

/// A failed write of attribute `n`: ignored for a refused `security.*` attribute (best effort),
/// else the error to report.
fn write_failed(n: &CStr, error: io::Error) -> Result<(), XattrError> {
    let b = n.to_bytes();
    let code = error.raw_os_error();
    if b.starts_with(b"security.") && matches!(code, Some(libc::EPERM) | Some(libc::EACCES)) {
        return Ok(());
    }
    Err(XattrError {
        name: b.to_vec(),
        unsupported: matches!(code, Some(libc::EOPNOTSUPP)),
        error,
    })
}

/// Copy the attributes of `src` that `want` accepts onto `dst`, the ACLs last (so the caller's
/// following `chmod` makes the mode and the ACL mask agree, as in the source). `security.*`
/// attributes are best effort: a refusal is ignored. Returns whether an ACL was set.
pub fn copy(
    src: Target<'_>,
    dst: Target<'_>,
    want: impl Fn(&[u8]) -> bool,
    ids: AclIds<'_>,
) -> Result<bool, XattrError> {
    let values = wanted_values(src, &want, ids)?;
    for (n, v) in &values {
        if let Err(e) = set(dst, n, v) {
            write_failed(n, e)?;
        }
    }
    Ok(values.iter().any(|(n, _)| is_acl(n.to_bytes())))
}

/// What it takes to give an existing entry the attributes of its source: values to set (new or
/// different) and names to remove (absent from the source), limited to the names a run copies.
#[derive(Debug, Default)]
pub struct Plan {
    set: Vec<(CString, Vec<u8>)>,
    remove: Vec<CString>,
}

impl Plan {
    /// Compare the attributes of `src` and `dst` that `want` accepts (the source's ACLs with
    /// the ids they name through `ids`). Reads only: two lists, and the values of the source's
    /// names and of the destination's names the source has too.
    pub fn between(
        src: Target<'_>,
        dst: Target<'_>,
        want: impl Fn(&[u8]) -> bool,
        ids: AclIds<'_>,
    ) -> Result<Self, PlanError> {
        let s = wanted_values(src, &want, ids).map_err(|error| PlanError {
            error,
            in_dst: false,
        })?;
        let d = wanted_names(dst, &want).map_err(|error| PlanError {
            error,
            in_dst: true,
        })?;
        let remove = d
            .iter()
            .filter(|n| !s.iter().any(|(m, _)| m == *n))
            .cloned()
            .collect();
        // (In wanted_values' order: plain attributes first, ACLs last.)
        let set = s
            .into_iter()
            .filter(|(n, v)| !(d.contains(n) && get(dst, n).is_ok_and(|dv| dv == *v)))
            .collect();
        Ok(Plan { set, remove })
    }

    /// Whether the destination already matches.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Whether an ACL is set or removed.
    pub fn touches_acl(&self) -> bool {
        self.names().any(|n| is_acl(n.to_bytes()))
    }

    /// Whether an attribute other than an ACL is set or removed.
    pub fn touches_xattr(&self) -> bool {
        self.names().any(|n| !is_acl(n.to_bytes()))
    }

    fn names(&self) -> impl Iterator<Item = &CString> {
        self.set.iter().map(|(n, _)| n).chain(self.remove.iter())
    }

    /// Make `dst` match: removals first, then the values, ACLs last. `security.*` refusals are
    /// ignored, as when copying.
    pub fn apply(&self, dst: Target<'_>) -> Result<(), XattrError> {
        for n in &self.remove {
            match remove(dst, n) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => write_failed(n, e)?,
            }
        }
        for (n, v) in &self.set {
            if let Err(e) = set(dst, n, v) {
                write_failed(n, e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn dir_and_files() -> Option<(tempfile::TempDir, std::fs::File)> {
        let t = tempfile::tempdir().ok()?;
        std::fs::write(t.path().join("a"), b"a").ok()?;
        std::fs::write(t.path().join("b"), b"b").ok()?;
        let d = std::fs::File::open(t.path()).ok()?;
        // user.* attributes need a file system that has them (tmpfs, ext4, xfs do).
        let probe = Target::At(d.as_fd(), c"a");
        if let Err(e) = set(probe, c"user.probe", b"1") {
            eprintln!("SKIP: no user xattrs in {}: {e}", t.path().display());
            return None;
        }
        remove(probe, c"user.probe").unwrap();
        Some((t, d))
    }

    #[test]
    fn a_plan_sets_what_differs_and_removes_what_is_gone() {
        let Some((_t, d)) = dir_and_files() else {
            return;
        };
        let (a, b) = (Target::At(d.as_fd(), c"a"), Target::At(d.as_fd(), c"b"));
        let all = |_: &[u8]| true;
        assert!(Plan::between(a, b, all, None).unwrap().is_empty());
        set(a, &c("user.same"), b"1").unwrap();
        set(b, &c("user.same"), b"1").unwrap();
        assert!(Plan::between(a, b, all, None).unwrap().is_empty());
        // Longer than the first (stack) buffer of a read.
        let long = vec![7u8; 3000];
        set(a, &c("user.changed"), &long).unwrap();
        set(b, &c("user.changed"), b"old").unwrap();
        set(b, &c("user.gone"), b"x").unwrap();
        set(a, &c("user.added"), b"").unwrap();
        let plan = Plan::between(a, b, all, None).unwrap();
        assert!(plan.touches_xattr() && !plan.touches_acl());
        // A filter leaves the names it rejects alone.
        let only_changed = Plan::between(a, b, |n: &[u8]| n == b"user.changed", None).unwrap();
        assert_eq!(only_changed.set.len(), 1);
        assert!(only_changed.remove.is_empty());
        plan.apply(b).unwrap();
        let mut names = list(b).unwrap();
        names.sort();
        assert_eq!(names, [c("user.added"), c("user.changed"), c("user.same")]);
        assert_eq!(get(b, c"user.changed").unwrap(), long);
        assert!(Plan::between(a, b, all, None).unwrap().is_empty());
    }

    #[test]
    fn a_failed_comparison_says_which_side_could_not_be_read() {
        // A message names the path of the side whose attributes could not be read (until
        // session 17 a directory's always named its source).
        let Some((_t, d)) = dir_and_files() else {
            return;
        };
        let (a, gone) = (Target::At(d.as_fd(), c"a"), Target::At(d.as_fd(), c"gone"));
        let all = |_: &[u8]| true;
        let e = Plan::between(a, gone, all, None).unwrap_err();
        assert!(e.in_dst);
        assert_eq!(e.error.error.raw_os_error(), Some(libc::ENOENT));
        let e = Plan::between(gone, a, all, None).unwrap_err();
        assert!(!e.in_dst);
        assert_eq!(e.error.error.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn by_name_and_by_fd_agree() {
        let Some((t, d)) = dir_and_files() else {
            return;
        };
        set(Target::At(d.as_fd(), c"a"), c"user.k", b"v").unwrap();
        let f = std::fs::File::open(t.path().join("a")).unwrap();
        assert_eq!(list(Target::Fd(f.as_fd())).unwrap(), [c("user.k")]);
        assert_eq!(list(Target::At(d.as_fd(), c"a")).unwrap(), [c("user.k")]);
        assert_eq!(get(Target::Fd(f.as_fd()), c"user.k").unwrap(), b"v");
        assert_eq!(get(Target::At(d.as_fd(), c"a"), c"user.k").unwrap(), b"v");
        let missing = get(Target::At(d.as_fd(), c"a"), c"user.none").unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENODATA));
    }
}
