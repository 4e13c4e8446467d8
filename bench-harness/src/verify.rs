//! Checks a copy against its source and names what was lost: content, type, permission bits,
//! owner, nanosecond mtimes (files, directories, symlinks), symlink targets, hard-link groups,
//! xattrs (ACLs included) and holes. A tool that lost anything is marked so in the report.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

#[derive(PartialEq, Eq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    blocks: u64,
    hash: u64,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    ino: (u64, u64),
    nlink: u64,
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut names = vec![0u8; 65536];
    // SAFETY: valid path and buffer for the call.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cn) = CString::new(name) else { continue };
        let mut v = vec![0u8; 65536];
        // SAFETY: valid path, name and buffer for the call.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(m.max(0) as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

fn hash_file(p: &Path) -> u64 {
    let Ok(mut f) = fs::File::open(p) else {
        return 0;
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.digest()
}

fn manifest(root: &Path) -> Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let m = fs::symlink_metadata(&full)?;
        let kind = m.mode() & libc::S_IFMT;
        if kind == libc::S_IFDIR {
            for e in fs::read_dir(&full)? {
                stack.push(rel.join(e?.file_name()));
            }
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: m.size(),
                blocks: m.blocks(),
                hash: if kind == libc::S_IFREG {
                    hash_file(&full)
                } else {
                    0
                },
                link: (kind == libc::S_IFLNK).then(|| fs::read_link(&full).unwrap_or_default()),
                xattrs: xattrs(&full),
                ino: (m.dev(), m.ino()),
                nlink: m.nlink(),
            },
        );
    }
    Ok(out)
}

/// Names sharing an inode, per name (only for inodes with several names in the tree).
fn groups(m: &BTreeMap<PathBuf, Entry>) -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut by: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (p, e) in m {
        if e.kind != libc::S_IFDIR && e.nlink > 1 {
            by.entry(e.ino).or_default().push(p.clone());
        }
    }
    let mut out = HashMap::new();
    for mut v in by.into_values().filter(|v| v.len() > 1) {
        v.sort();
        for p in &v {
            out.insert(p.clone(), v.clone());
        }
    }
    out
}

/// "OK", or "LOSS(what=count, ...)" naming every attribute the copy lost.
pub fn verdict(src: &Path, dst: &Path) -> Result<String> {
    let (a, b) = (manifest(src)?, manifest(dst)?);
    let mut loss: BTreeMap<&str, u64> = BTreeMap::new();
    let mut add = |k: &'static str| *loss.entry(k).or_default() += 1;
    for (p, ea) in &a {
        let Some(eb) = b.get(p) else {
            add("missing");
            continue;
        };
        let root = p.as_os_str().is_empty();
        if ea.kind != eb.kind {
            add("type");
            continue;
        }
        if ea.kind != libc::S_IFLNK && ea.mode != eb.mode && !root {
            add("perms");
        }
        if (ea.uid, ea.gid) != (eb.uid, eb.gid) && !root {
            add("owner");
        }
        if ea.mtime != eb.mtime && !root {
            add(match ea.kind {
                libc::S_IFDIR => "mtime_dir",
                libc::S_IFLNK => "mtime_link",
                _ => "mtime_file",
            });
        }
        if ea.kind == libc::S_IFREG && (ea.size != eb.size || ea.hash != eb.hash) {
            add("content");
        }
        if ea.link != eb.link {
            add("symlink");
        }
        if ea.xattrs != eb.xattrs {
            add("xattr");
        }
        if ea.kind == libc::S_IFREG && ea.blocks < ea.size / 512 && eb.blocks > ea.blocks + 64 {
            add("sparse");
        }
    }
    let extra = b.keys().filter(|k| !a.contains_key(*k)).count() as u64;
    if extra > 0 {
        loss.insert("extra", extra);
    }
    let (ga, gb) = (groups(&a), groups(&b));
    let broken = ga.iter().filter(|(p, g)| gb.get(*p) != Some(g)).count() as u64;
    if broken > 0 {
        loss.insert("hardlinks", broken);
    }
    Ok(if loss.is_empty() {
        "OK".into()
    } else {
        let parts: Vec<String> = loss.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("LOSS({})", parts.join(","))
    })
}
