//! Our own tree-diff helper (std and libc only, independent of the crates it checks): walks two
//! trees without following symlinks and lists every difference in type, content, permission bits
//! (with setuid/setgid/sticky), owner, group, nanosecond mtimes (files, directories, symlinks),
//! symlink targets and device numbers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which attributes to compare.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    pub content: bool,
    pub mode: bool,
    pub owner: bool,
    pub group: bool,
    pub file_mtime: bool,
    pub dir_mtime: bool,
    pub link_mtime: bool,
    /// Compare the root directories' own attributes too (false for `src dst/src` layouts where
    /// the roots are named differently but that is intended; the root's type is always compared).
    pub root_attrs: bool,
    /// Extended attributes of every namespace, ACLs included (`system.posix_acl_*`).
    pub xattrs: bool,
    /// Hard-link groups: which names share an inode.
    pub hardlinks: bool,
    /// Allocated blocks of regular files: the copy may hold at most `blocks_slack` 512-byte
    /// sectors more than the reference (holes must stay holes).
    pub blocks: bool,
}

/// Slack allowed by [`Check::blocks`]: one 4 KiB block per data extent of a small sparse file.
pub const BLOCKS_SLACK: u64 = 64;

impl Check {
    /// Everything `-a` preserves.
    pub fn archive() -> Self {
        Self {
            content: true,
            mode: true,
            owner: true,
            group: true,
            file_mtime: true,
            dir_mtime: true,
            link_mtime: true,
            root_attrs: true,
            xattrs: false,
            hardlinks: false,
            blocks: false,
        }
    }

    /// Everything `-aHAXS` preserves.
    pub fn full() -> Self {
        Self {
            xattrs: true,
            hardlinks: true,
            blocks: true,
            ..Self::archive()
        }
    }
}

/// Every extended attribute of `p` (not following a symlink), sorted.
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL");
    let mut names = vec![0u8; 65536];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).expect("split at NUL");
        let mut v = vec![0u8; 65536];
        // SAFETY: valid path, name and buffer.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(m.max(0) as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

/// For each path of a tree whose inode has other names in the tree: the sorted list of them.
fn link_groups(root: &Path, list: &[PathBuf]) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut by_ino: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for p in list {
        if p.as_os_str().is_empty() {
            continue;
        }
        if let Ok(m) = fs::symlink_metadata(root.join(p))
            && !m.is_dir()
            && m.nlink() > 1
        {
            by_ino
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for mut names in by_ino.into_values() {
        names.sort();
        for n in &names {
            out.insert(n.clone(), names.clone());
        }
    }
    out
}

#[derive(Debug)]
struct Entry {
    blocks: u64,
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    rdev: u64,
    size: u64,
    link: Option<OsString>,
}

fn entry(p: &Path) -> std::io::Result<Entry> {
    let m = fs::symlink_metadata(p)?;
    let kind = m.mode() & libc::S_IFMT;
    Ok(Entry {
        blocks: m.blocks(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        rdev: m.rdev(),
        size: m.size(),
        link: if kind == libc::S_IFLNK {
            Some(fs::read_link(p)?.into_os_string())
        } else {
            None
        },
    })
}

/// Every path below `root` (relative, sorted), the root itself as "".
pub fn walk(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        if !fs::symlink_metadata(&full)?.is_dir() {
            continue;
        }
        for e in fs::read_dir(&full)? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r.clone());
            }
            out.push(r);
        }
    }
    out.sort();
    Ok(out)
}

fn show(p: &Path) -> String {
    let s = String::from_utf8_lossy(p.as_os_str().as_bytes()).replace('\n', "\\n");
    if s.is_empty() { ".".into() } else { s }
}

/// All differences between `a` and `b` (empty = identical for the checked attributes).
pub fn diff(a: &Path, b: &Path, check: Check) -> Vec<String> {
    let mut out = Vec::new();
    let (la, lb) = match (walk(a), walk(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (ra, rb) => return vec![format!("walk failed: {:?} / {:?}", ra.err(), rb.err())],
    };
    let sa: BTreeMap<_, ()> = la.iter().map(|p| (p.clone(), ())).collect();
    let sb: BTreeMap<_, ()> = lb.iter().map(|p| (p.clone(), ())).collect();
    for p in sa.keys().filter(|p| !sb.contains_key(*p)) {
        out.push(format!("missing in copy: {}", show(p)));
    }
    for p in sb.keys().filter(|p| !sa.contains_key(*p)) {
        out.push(format!("extra in copy: {}", show(p)));
    }
    for p in sa.keys().filter(|p| sb.contains_key(*p)) {
        let at = |r: &Path, p: &Path| {
            if p.as_os_str().is_empty() {
                r.to_path_buf()
            } else {
                r.join(p)
            }
        };
        let (pa, pb) = (at(a, p), at(b, p));
        let (ea, eb) = match (entry(&pa), entry(&pb)) {
            (Ok(x), Ok(y)) => (x, y),
            (x, y) => {
                out.push(format!(
                    "{}: stat failed {:?} {:?}",
                    show(p),
                    x.err(),
                    y.err()
                ));
                continue;
            }
        };
        let n = show(p);
        if ea.kind != eb.kind {
            out.push(format!("{n}: type {:o} vs {:o}", ea.kind, eb.kind));
            continue;
        }
        let is_root = p.as_os_str().is_empty();
        if is_root && !check.root_attrs {
            continue;
        }
        let is_link = ea.kind == libc::S_IFLNK;
        let is_dir = ea.kind == libc::S_IFDIR;
        if check.mode && !is_link && ea.mode != eb.mode {
            out.push(format!("{n}: mode {:04o} vs {:04o}", ea.mode, eb.mode));
        }
        if check.owner && ea.uid != eb.uid {
            out.push(format!("{n}: uid {} vs {}", ea.uid, eb.uid));
        }
        if check.group && ea.gid != eb.gid {
            out.push(format!("{n}: gid {} vs {}", ea.gid, eb.gid));
        }
        let want_mtime = if is_link {
            check.link_mtime
        } else if is_dir {
            check.dir_mtime
        } else {
            check.file_mtime
        };
        if want_mtime && ea.mtime != eb.mtime {
            out.push(format!("{n}: mtime {:?} vs {:?}", ea.mtime, eb.mtime));
        }
        if ea.link != eb.link {
            out.push(format!(
                "{n}: symlink target {:?} vs {:?}",
                ea.link, eb.link
            ));
        }
        if matches!(ea.kind, libc::S_IFCHR | libc::S_IFBLK) && ea.rdev != eb.rdev {
            out.push(format!("{n}: rdev {:x} vs {:x}", ea.rdev, eb.rdev));
        }
        if check.xattrs {
            let (xa, xb) = (xattrs(&pa), xattrs(&pb));
            if xa != xb {
                let show_x = |v: &Vec<(Vec<u8>, Vec<u8>)>| {
                    v.iter()
                        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                        .collect::<Vec<_>>()
                };
                out.push(format!(
                    "{n}: xattrs {:?} vs {:?}",
                    show_x(&xa),
                    show_x(&xb)
                ));
            }
        }
        if check.blocks && ea.kind == libc::S_IFREG && eb.blocks > ea.blocks + BLOCKS_SLACK {
            out.push(format!(
                "{n}: allocated blocks {} vs {}",
                ea.blocks, eb.blocks
            ));
        }
        if check.content && ea.kind == libc::S_IFREG {
            if ea.size != eb.size {
                out.push(format!("{n}: size {} vs {}", ea.size, eb.size));
            } else {
                match (fs::read(&pa), fs::read(&pb)) {
                    (Ok(x), Ok(y)) if x == y => {}
                    (Ok(_), Ok(_)) => out.push(format!("{n}: content differs")),
                    (x, y) => out.push(format!("{n}: read failed {:?} {:?}", x.err(), y.err())),
                }
            }
        }
    }
    if check.hardlinks {
        let (ga, gb) = (link_groups(a, &la), link_groups(b, &lb));
        for p in sa.keys() {
            if ga.get(p) != gb.get(p) {
                out.push(format!(
                    "{}: hard-link group {:?} vs {:?}",
                    show(p),
                    ga.get(p)
                        .map(|v| v.iter().map(|x| show(x)).collect::<Vec<_>>()),
                    gb.get(p)
                        .map(|v| v.iter().map(|x| show(x)).collect::<Vec<_>>())
                ));
            }
        }
    }
    out
}
