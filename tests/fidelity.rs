//! `arsync -a` gives an exact copy: content, type, permission bits with setuid/setgid/sticky,
//! owner and group, nanosecond mtimes of files, directories and symlinks, symlink targets and
//! device numbers, on a tree with every awkward case, with one, two and oversubscribed threads.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;

fn opts() -> TreeOpts {
    TreeOpts {
        root_only: is_root(),
        wide: 2000,
        depth: 100,
    }
}

fn archive_copy(threads: &str, extra: &[&str]) {
    if !is_root() {
        skip(
            "archive_copy",
            "not root: owners, devices and other-uid files are left out of the tree",
        );
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    let dst = s.path().join("dst");
    build_tree(&src, &opts());
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("-a"),
        OsStr::new("--threads"),
        OsStr::new(threads),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let src_arg = format!("{}/", src.display());
    args.push(OsStr::new(&src_arg));
    args.push(dst.as_os_str());
    let out = run(&args);
    assert_eq!(
        code(&out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "unexpected stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&src, &dst, treediff::Check::archive());
    // No temporary file is left behind.
    for p in treediff::walk(&dst).unwrap() {
        assert!(
            !p.to_string_lossy().contains(".~arsync-"),
            "temporary file left: {}",
            p.display()
        );
    }
}

#[test]
fn archive_one_thread() {
    archive_copy("1", &[]);
}

#[test]
fn archive_two_threads() {
    archive_copy("2", &[]);
}

#[test]
fn archive_through_temporary_names() {
    archive_copy("2", &["--temp-names"]);
}

#[test]
fn archive_oversubscribed_unpinned() {
    archive_copy("8", &["--no-pin"]);
}

#[test]
fn archive_named_root_goes_inside_dest() {
    let s = Scratch::new();
    let src = s.path().join("tree");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 50,
            depth: 10,
        },
    );
    let dst = s.path().join("out");
    let dst_arg = format!("{}/", dst.display());
    let out = run(&[OsStr::new("-a"), src.as_os_str(), OsStr::new(&dst_arg)]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &dst.join("tree"), treediff::Check::archive());
}

#[test]
fn zero_mode_directory_keeps_its_children() {
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir_all(src.join("locked/inner")).unwrap();
    write(&src.join("locked/inner/f"), b"payload");
    write(&src.join("locked/g"), b"payload2");
    chmod(&src.join("locked/inner"), 0o000);
    chmod(&src.join("locked"), 0o500);
    let dst = s.path().join("dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
    if is_root() {
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_same(&src, &dst, treediff::Check::archive());
    } else {
        // Unreadable for a normal user: reported, the rest copied, exit 23.
        assert_eq!(code(&out), 23);
        assert!(dst.join("locked/g").exists());
    }
}

#[test]
fn rerun_over_existing_copy_is_still_exact() {
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 30,
            depth: 5,
        },
    );
    let dst = s.path().join("dst");
    let src_arg = format!("{}/", src.display());
    for _ in 0..2 {
        let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A changed source file replaces the copy atomically on the next run.
    chmod(&src.join("ro555"), 0o755);
    write(&src.join("ro555/child"), b"changed content");
    chmod(&src.join("ro555"), 0o555);
    let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(dst.join("ro555/child")).unwrap(),
        b"changed content"
    );
    let mut check = treediff::Check::archive();
    check.dir_mtime = false; // the edit above moved the source directory's mtime
    assert_same(&src, &dst, check);
}

#[test]
fn large_file_through_the_ring_is_exact() {
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Sizes around the chunk size and not a multiple of it, plus one of several chunks.
    for (i, len) in [
        256 * 1024 + 1,
        1024 * 1024,
        1024 * 1024 + 1,
        9 * 1024 * 1024 + 333,
    ]
    .iter()
    .enumerate()
    {
        write(&src.join(format!("big{i}")), &content(77 + i as u64, *len));
    }
    let dst = s.path().join("dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &dst, treediff::Check::archive());
}

/// Walk (and optionally create) `levels` directories named `name` below `base` with fd-relative
/// calls, then create or read `leaf`. Paths beyond PATH_MAX need this.
fn deep_leaf(
    base: &Path,
    name: &str,
    levels: usize,
    create: Option<&[u8]>,
) -> std::io::Result<Vec<u8>> {
    use std::ffi::CString;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open_dir = |dir: i32, n: &CString| -> std::io::Result<OwnedFd> {
        // SAFETY: valid fd and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir,
                n.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let cbase = CString::new(base.as_os_str().as_encoded_bytes()).unwrap();
    let cname = CString::new(name).unwrap();
    let mut cur = open_dir(libc::AT_FDCWD, &cbase)?;
    for _ in 0..levels {
        if create.is_some() {
            // SAFETY: valid fd and name.
            unsafe { libc::mkdirat(cur.as_raw_fd(), cname.as_ptr(), 0o755) };
        }
        cur = open_dir(cur.as_raw_fd(), &cname)?;
    }
    let leaf = CString::new("leaf").unwrap();
    let flags = if create.is_some() {
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
    } else {
        libc::O_RDONLY
    };
    // SAFETY: valid fd and name.
    let fd = unsafe {
        libc::openat(
            cur.as_raw_fd(),
            leaf.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut out = Vec::new();
    match create {
        Some(data) => f.write_all(data)?,
        None => {
            f.read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

#[test]
fn tree_deeper_than_path_max_in_total() {
    // 100 levels of 60-byte names: ~6 KiB paths, beyond PATH_MAX; copied through fd-relative calls.
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let name = "n".repeat(60);
    deep_leaf(&src, &name, 100, Some(b"very deep")).unwrap();
    let dst = s.path().join("dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(deep_leaf(&dst, &name, 100, None).unwrap(), b"very deep");
}

/// ctime (seconds, nanoseconds) of every entry of a tree, by path.
fn ctimes(root: &Path) -> Vec<(std::path::PathBuf, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    treediff::walk(root)
        .unwrap()
        .into_iter()
        .map(|p| {
            let full = if p.as_os_str().is_empty() {
                root.to_path_buf()
            } else {
                root.join(&p)
            };
            let m = std::fs::symlink_metadata(&full).unwrap();
            (p, m.ctime(), m.ctime_nsec())
        })
        .collect()
}

#[test]
fn second_run_changes_nothing() {
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 200,
            depth: 10,
        },
    );
    let dst = s.path().join("dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[OsStr::new("-a"), OsStr::new(&src_arg), dst.as_os_str()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let before = ctimes(&dst);
    let stats = s.path().join("stats.json");
    let out = run(&[
        OsStr::new("-a"),
        OsStr::new("--stats-json"),
        stats.as_os_str(),
        OsStr::new(&src_arg),
        dst.as_os_str(),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let after = ctimes(&dst);
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.display().to_string())
        .collect();
    assert!(
        changed.is_empty(),
        "the second run touched {} entries, e.g. {:?}",
        changed.len(),
        &changed[..changed.len().min(5)]
    );
    let doc = std::fs::read_to_string(&stats).unwrap();
    assert!(
        doc.contains("\"files\": 0"),
        "the second run copied files: {doc}"
    );
    assert_same(&src, &dst, treediff::Check::archive());
}

#[test]
fn quick_check_size_and_time_then_ignore_times_and_size_only() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"original");
    set_times(&src.join("f"), 1_600_000_000, 111_111_111);
    let dst = s.path().join("dst");
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    // Same size, same mtime, other content: the quick check cannot see it (as rsync).
    write(&src.join("f"), b"ORIGINAL");
    set_times(&src.join("f"), 1_600_000_000, 111_111_111);
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"original");
    // -I copies regardless.
    assert_eq!(code(&copy_contents(&["-aI"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"ORIGINAL");
    // A different mtime (even by one nanosecond) is a change...
    write(&src.join("f"), b"changed!");
    set_times(&src.join("f"), 1_600_000_000, 111_111_112);
    // ...but --size-only skips it and only sets the attributes that differ (the mtime), as rsync
    // does; after that size and mtime match, so a plain run skips it too, and -I copies it.
    assert_eq!(code(&copy_contents(&["-a", "--size-only"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"ORIGINAL");
    assert_eq!(
        std::fs::metadata(dst.join("f")).unwrap().mtime_nsec(),
        111_111_112
    );
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"ORIGINAL");
    assert_eq!(code(&copy_contents(&["-aI"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"changed!");
    // A different size is always a change.
    write(&src.join("f"), b"longer content");
    assert_eq!(code(&copy_contents(&["-a", "--size-only"], &src, &dst)), 0);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"longer content");
    // Metadata-only change: mode fixed in place, data untouched (same inode).
    let ino = std::fs::metadata(dst.join("f")).unwrap().ino();
    chmod(&src.join("f"), 0o640);
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    let m = std::fs::metadata(dst.join("f")).unwrap();
    assert_eq!((m.ino(), m.mode() & 0o7777), (ino, 0o640));
    assert_same(&src, &dst, treediff::Check::archive());
}
