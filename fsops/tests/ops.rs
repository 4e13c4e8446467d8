//! fsops against a real file system (a temp dir on /var/tmp): each wrapper does what it says, with
//! errno intact, and the data paths copy exactly.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use fsops::sys::{self, Time};
use fsops::{DirReader, FileType, MetaPolicy};

fn tmp() -> tempfile::TempDir {
    let base = std::path::Path::new("/var/tmp");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn c(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn create_excl_is_exclusive_and_nofollow() {
    let t = tmp();
    let d = sys::open_dir_path(t.path()).unwrap();
    let fd = sys::create_excl(d.as_fd(), &c(b"f"), 0o600).unwrap();
    drop(fd);
    let e = sys::create_excl(d.as_fd(), &c(b"f"), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    // A dangling symlink in the way is not followed.
    std::os::unix::fs::symlink(t.path().join("target"), t.path().join("l")).unwrap();
    let e = sys::create_excl(d.as_fd(), &c(b"l"), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    assert!(!t.path().join("target").exists());
}

#[test]
fn open_source_refuses_symlinks_and_does_not_hang_on_fifos() {
    let t = tmp();
    std::fs::write(t.path().join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
    let fifo = c(t.path().join("p").as_os_str().as_bytes());
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let d = sys::open_dir_path(t.path()).unwrap();
    assert!(sys::open_source(d.as_fd(), &c(b"f"), true).is_ok());
    let e = sys::open_source(d.as_fd(), &c(b"l"), false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    // O_NONBLOCK: opening a FIFO with no writer returns at once.
    let fd = sys::open_source(d.as_fd(), &c(b"p"), false).unwrap();
    assert_eq!(sys::fstat(fd.as_fd()).unwrap().file_type(), FileType::Fifo);
}

#[test]
fn readlink_returns_exact_long_targets() {
    let t = tmp();
    let mut target = b"../".to_vec();
    target.extend(std::iter::repeat_n(b'x', 1500));
    target.extend_from_slice(b"\xff\n end");
    let d = sys::open_dir_path(t.path()).unwrap();
    sys::symlink_at(&c(&target), d.as_fd(), &c(b"l")).unwrap();
    let got = sys::readlink_at(d.as_fd(), &c(b"l")).unwrap();
    assert_eq!(got.as_bytes(), &target[..]);
}

#[test]
fn dir_reader_streams_every_name_in_small_batches() {
    let t = tmp();
    let mut names = Vec::new();
    for i in 0..500u32 {
        let mut n = format!("entry-{i}-").into_bytes();
        if i % 7 == 0 {
            n.push(0xe9); // not UTF-8
        }
        if i % 11 == 0 {
            n.push(b'\n');
        }
        std::fs::write(t.path().join(std::ffi::OsStr::from_bytes(&n)), b"").unwrap();
        names.push(n);
    }
    std::fs::create_dir(t.path().join("sub")).unwrap();
    names.push(b"sub".to_vec());
    let d = sys::open_dir_path(t.path()).unwrap();
    let mut r = DirReader::new(1024);
    let mut seen = Vec::new();
    let mut batches = 0;
    while r.fill(d.as_fd()).unwrap() {
        batches += 1;
        for e in r.entries() {
            if e.name.to_bytes() == b"sub" {
                assert!(matches!(e.file_type, FileType::Dir | FileType::Unknown));
            }
            seen.push(e.name.to_bytes().to_vec());
        }
    }
    assert!(
        batches > 5,
        "a 1 KiB buffer must take several batches, took {batches}"
    );
    seen.sort();
    names.sort();
    assert_eq!(seen, names);
}

#[test]
fn special_files_rename_and_times() {
    let t = tmp();
    let d = sys::open_dir_path(t.path()).unwrap();
    sys::mknod_at(d.as_fd(), &c(b"fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    sys::chmod_at(d.as_fd(), &c(b"fifo"), 0o640).unwrap();
    sys::lutimens_at(
        d.as_fd(),
        &c(b"fifo"),
        Time::Omit,
        Time::At(1_234_567_890, 987_654_321),
    )
    .unwrap();
    sys::rename_at(d.as_fd(), &c(b"fifo"), d.as_fd(), &c(b"p2"), 0).unwrap();
    let m = std::fs::symlink_metadata(t.path().join("p2")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 987_654_321));
    assert!(!t.path().join("fifo").exists());
    let e = sys::unlink_at(d.as_fd(), &c(b"fifo"), 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

fn policy(perms: bool, umask: u32) -> MetaPolicy {
    MetaPolicy {
        perms,
        times: true,
        omit_dir_times: false,
        omit_link_times: false,
        atimes: false,
        owner: true,
        group: true,
        umask,
        euid: sys::geteuid(),
        root: sys::geteuid() == 0,
        groups: sys::groups(),
        egid: sys::getegid(),
        xattrs: false,
        acls: false,
        chmod: Default::default(),
        uid_map: Default::default(),
        gid_map: Default::default(),
        executability: false,
        xattr_filter: Default::default(),
    }
}

#[test]
fn policy_modes_follow_rsync() {
    let st = fsops::Stat {
        mode: libc::S_IFREG | 0o4775,
        uid: sys::geteuid(),
        gid: sys::getegid(),
        ..Default::default()
    };
    // With -p the special bits stay and force the private create + chmod path.
    let p = policy(true, 0o022);
    let plain = fsops::meta::MadeIn::plain(p.egid, 0o022);
    assert_eq!(p.final_perm(&st, &plain), 0o4775);
    assert_eq!(p.create_mode(&st, false, &plain), (0o600, true));
    // Without -p: masked by the umask, special bits dropped, created with the final bits.
    let p = policy(false, 0o027);
    let plain = fsops::meta::MadeIn::plain(p.egid, 0o027);
    assert_eq!(p.final_perm(&st, &plain), 0o750);
    assert_eq!(p.create_mode(&st, false, &plain), (0o750, false));
    // ... or by the directory's default ACL where it has one (rsync's dflt_perms), not the umask.
    let acl = fsops::meta::MadeIn {
        perms: 0o775,
        ..plain
    };
    assert_eq!(p.final_perm(&st, &acl), 0o775);
    // A directory made in a setgid directory keeps the bit it was made with; a file does not.
    let shared = fsops::meta::MadeIn {
        setgid: true,
        ..plain
    };
    let dir = fsops::Stat {
        mode: libc::S_IFDIR | 0o755,
        ..st
    };
    assert_eq!(p.final_perm(&dir, &shared), 0o2750);
    assert_eq!(p.final_perm(&st, &shared), 0o750);
    // With -p the source's bits are the copy's wherever it is made.
    assert_eq!(policy(true, 0).final_perm(&dir, &shared), 0o755);
    // A needed chown forces the private create.
    assert_eq!(
        policy(true, 0).create_mode(&fsops::Stat { mode: 0o644, ..st }, true, &plain),
        (0o600, true)
    );
}

#[test]
fn acl_perms_read_owner_mask_and_others() {
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }
    let any = u32::MAX;
    // user::rwx group::r-x other::r-- : the owning group's entry without a mask.
    let minimal = acl(&[(0x01, 7, any), (0x04, 5, any), (0x20, 4, any)]);
    assert_eq!(fsops::xattr::acl_perms(&minimal), Some(0o754));
    // A named user and a mask of rwx: the mask stands for the group class.
    let masked = acl(&[
        (0x01, 7, any),
        (0x02, 7, 1234),
        (0x04, 5, any),
        (0x10, 7, any),
        (0x20, 5, any),
    ]);
    assert_eq!(fsops::xattr::acl_perms(&masked), Some(0o775));
    assert_eq!(fsops::xattr::acl_perms(&masked[..7]), None);
    assert_eq!(fsops::xattr::acl_perms(&acl(&[(0x01, 7, any)])), None);
    // Mapped ids: named users and groups only, sorted again by their new ids.
    let mut named = acl(&[
        (0x01, 7, any),
        (0x02, 4, 100),
        (0x02, 6, 200),
        (0x04, 5, any),
        (0x08, 4, 100),
        (0x10, 7, any),
        (0x20, 5, any),
    ]);
    fsops::xattr::map_acl_ids(&mut named, &|user, id| match (user, id) {
        (true, 100) => 300,
        (false, 100) => 7,
        (_, id) => id,
    });
    assert_eq!(
        named,
        acl(&[
            (0x01, 7, any),
            (0x02, 6, 200),
            (0x02, 4, 300),
            (0x04, 5, any),
            (0x08, 4, 7),
            (0x10, 7, any),
            (0x20, 5, any),
        ])
    );
}

#[test]
fn apply_fd_keeps_setuid_after_chown_and_sets_ns_times() {
    let t = tmp();
    let d = sys::open_dir_path(t.path()).unwrap();
    let fd = sys::create_excl(d.as_fd(), &c(b"f"), 0o600).unwrap();
    let root = sys::geteuid() == 0;
    let st = fsops::Stat {
        mode: libc::S_IFREG | 0o6755,
        uid: if root { 1234 } else { sys::geteuid() },
        gid: if root { 4321 } else { sys::getegid() },
        mtime: (1_000_000_000, 123_456_789),
        atime: (900_000_000, 1),
        ..Default::default()
    };
    let p = policy(true, 0);
    let made_in = fsops::meta::MadeIn::plain(p.egid, 0);
    let chmod_needed = p
        .create_mode(&st, p.chown_ids(&st, p.egid).is_some(), &made_in)
        .1;
    fsops::meta::apply_fd(
        fd.as_fd(),
        &st,
        &p,
        &made_in,
        chmod_needed,
        fsops::meta::Xattrs::None,
    )
    .unwrap();
    let m = std::fs::metadata(t.path().join("f")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o6755,
        "setuid/setgid lost"
    );
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert_ne!(
        m.atime(),
        900_000_000,
        "atime must not be copied without -U"
    );
    if root {
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
    }
}

#[test]
fn copy_inline_is_exact() {
    let t = tmp();
    for (i, n) in [0usize, 1, 4095, 4096, 70_000].iter().enumerate() {
        let src = t.path().join(format!("s{i}"));
        std::fs::write(&src, data(*n, i as u8)).unwrap();
        let d = sys::open_dir_path(t.path()).unwrap();
        let s = sys::open_source(d.as_fd(), &c(format!("s{i}").as_bytes()), false).unwrap();
        let o = sys::create_excl(d.as_fd(), &c(format!("d{i}").as_bytes()), 0o644).unwrap();
        let mut buf = Vec::with_capacity(8192);
        assert_eq!(
            fsops::copy::copy_inline(&s, &o, *n as u64, &mut buf, false).unwrap(),
            *n as u64
        );
        assert_eq!(
            std::fs::read(t.path().join(format!("d{i}"))).unwrap(),
            data(*n, i as u8)
        );
    }
    // Told a larger size than the file has: an error, not a short copy.
    let d = sys::open_dir_path(t.path()).unwrap();
    let s = sys::open_source(d.as_fd(), &c(b"s1"), false).unwrap();
    let o = sys::create_excl(d.as_fd(), &c(b"shrunk"), 0o644).unwrap();
    let e = fsops::copy::copy_inline(&s, &o, 10, &mut Vec::with_capacity(4096), false).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

/// The inline copies read and write at explicit offsets: a file larger than the buffer (several
/// reads, the cached first one included) comes out exact, and so does one whose source fd was
/// read from before (its file position is not where the copy starts).
#[test]
fn inline_copies_are_positional() {
    let t = tmp();
    let d = sys::open_dir_path(t.path()).unwrap();
    let bytes = data(70_000, 3);
    std::fs::write(t.path().join("s"), &bytes).unwrap();
    for (i, moved) in [0usize, 100].into_iter().enumerate() {
        let s = sys::open_source(d.as_fd(), &c(b"s"), false).unwrap();
        if moved > 0 {
            let mut skip = vec![0u8; moved];
            // SAFETY: `skip` is valid for `moved` writable bytes.
            let n = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    skip.as_mut_ptr().cast(),
                    moved,
                )
            };
            assert_eq!(n, moved as isize);
        }
        for cached in [false, true] {
            let name = format!("d{i}{cached}");
            let o = sys::create_excl(d.as_fd(), &c(name.as_bytes()), 0o644).unwrap();
            let mut buf = Vec::with_capacity(8192);
            let n = if cached {
                match fsops::copy::copy_inline_cached(&s, &o, 70_000, &mut buf, false).unwrap() {
                    fsops::copy::Inline::Copied(n) => n,
                    fsops::copy::Inline::NotCached => panic!("just written, yet not cached"),
                }
            } else {
                fsops::copy::copy_inline(&s, &o, 70_000, &mut buf, false).unwrap()
            };
            assert_eq!(n, 70_000);
            assert!(
                std::fs::read(t.path().join(&name)).unwrap() == bytes,
                "{name}"
            );
        }
    }
}

#[test]
fn copy_ring_is_exact_and_detects_a_shrunk_source() {
    let t = tmp();
    let rt = compio::runtime::Runtime::new().expect("io_uring runtime");
    let pool = fsops::BufPool::new(64 * 1024, 8);
    for (i, n) in [1usize, 65_536, 65_537, 1_000_003].iter().enumerate() {
        let bytes = data(*n, 7 + i as u8);
        std::fs::write(t.path().join(format!("s{i}")), &bytes).unwrap();
        let d = sys::open_dir_path(t.path()).unwrap();
        let s = sys::open_source(d.as_fd(), &c(format!("s{i}").as_bytes()), false).unwrap();
        let o = sys::create_excl(d.as_fd(), &c(format!("d{i}").as_bytes()), 0o644).unwrap();
        let out = rt
            .block_on(fsops::copy::copy_ring(s, o, *n as u64, &pool, 3))
            .unwrap();
        assert_eq!(out.bytes, *n as u64);
        assert_eq!(
            std::fs::read(t.path().join(format!("d{i}"))).unwrap(),
            bytes
        );
    }
    assert!(pool.cached() > 0, "buffers come back to the pool");
    // The size we were told is larger than the file: an error, never a short "success".
    std::fs::write(t.path().join("short"), data(1000, 1)).unwrap();
    let d = sys::open_dir_path(t.path()).unwrap();
    let s = sys::open_source(d.as_fd(), &c(b"short"), false).unwrap();
    let o = sys::create_excl(d.as_fd(), &c(b"short.out"), 0o644).unwrap();
    let e = rt
        .block_on(fsops::copy::copy_ring(s, o, 200_000, &pool, 3))
        .err()
        .expect("shrunk source must fail");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn xattrs_copy_between_files_and_sparse_extents() {
    use fsops::xattr::{self, Target};
    let t = tmp();
    std::fs::write(t.path().join("a"), b"a").unwrap();
    std::fs::write(t.path().join("b"), b"b").unwrap();
    let d = sys::open_dir_path(t.path()).unwrap();
    let a = sys::open_source(d.as_fd(), &c(b"a"), false).unwrap();
    // user.* xattrs need a file system that supports them (ext4 and xfs do).
    if let Err(e) = xattr::set(Target::Fd(a.as_fd()), &c(b"user.k1"), b"v1\0binary") {
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "unexpected: {e}");
        return;
    }
    xattr::set(Target::Fd(a.as_fd()), &c(b"user.k2"), &vec![7u8; 3000]).unwrap();
    let b = std::fs::OpenOptions::new()
        .write(true)
        .open(t.path().join("b"))
        .unwrap();
    let b: std::os::fd::OwnedFd = b.into();
    let acl = xattr::copy(
        Target::Fd(a.as_fd()),
        Target::Fd(b.as_fd()),
        |n| n.starts_with(b"user.k2"),
        None,
    )
    .unwrap();
    assert!(!acl);
    assert_eq!(
        xattr::get(Target::At(d.as_fd(), &c(b"b")), &c(b"user.k2")).unwrap(),
        vec![7u8; 3000]
    );
    assert!(
        xattr::get(Target::Fd(b.as_fd()), &c(b"user.k1")).is_err(),
        "the filter was ignored"
    );
    // Extents of a sparse file: data at 0 and at 8 MiB, a hole between and after.
    let f = std::fs::File::create(t.path().join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    f.write_all_at(&[2u8; 4096], 8 << 20).unwrap();
    f.set_len(16 << 20).unwrap();
    let ext = sys::data_extents(f.as_fd(), 16 << 20).unwrap();
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert_eq!(ext[0].0, 0);
    assert!(
        ext[1].0 <= 8 << 20 && ext[1].0 + ext[1].1 >= (8 << 20) + 4096,
        "{ext:?}"
    );
}

/// A file of `(1 << 20) + 1000` bytes for the `-S` tests, with blocks of zeros at 15..=49
/// (across the 64 KiB edge at block 16), 64 (the 256 KiB edge), 100..=180 and the partial last
/// block; every other block has a non-zero first byte. Returns the bytes and, per block,
/// whether it holds data.
fn zero_block_layout(seed: u8) -> (Vec<u8>, Vec<bool>) {
    const B: usize = fsops::copy::HOLE_BLOCK as usize;
    let size = (1 << 20) + 1000;
    let zero_block = |b: usize| {
        (15..=49).contains(&b) || b == 64 || (100..=180).contains(&b) || b * B >= 1 << 20
    };
    let mut bytes = data(size, seed);
    let blocks: Vec<bool> = (0..size.div_ceil(B)).map(|b| !zero_block(b)).collect();
    for (b, &has_data) in blocks.iter().enumerate() {
        let (lo, hi) = (b * B, ((b + 1) * B).min(size));
        if has_data {
            bytes[lo] = 1; // never a zero block by chance
        } else {
            bytes[lo..hi].fill(0);
        }
    }
    (bytes, blocks)
}

/// Per block of `f`'s first `size` bytes, whether it is data (not a hole).
fn data_blocks(f: &std::fs::File, size: u64) -> Vec<bool> {
    const B: u64 = fsops::copy::HOLE_BLOCK;
    let blocks = size.div_ceil(B) as usize;
    let mut got = vec![false; blocks];
    for (start, len) in sys::data_extents(f.as_fd(), size).unwrap() {
        let first = (start / B) as usize;
        let end = ((start + len).div_ceil(B) as usize).min(blocks);
        got.iter_mut().take(end).skip(first).for_each(|g| *g = true);
    }
    got
}

/// `-S`'s read-back punches exactly the all-zero blocks whatever buffer a core passes: none
/// (grown to the smallest step), one whose capacity is not a whole number of blocks, and a
/// large one; zero runs that cross the steps' edges, one zero block on an edge, a partial last
/// block of zeros; the content reads back the same.
#[test]
fn punch_zero_blocks_makes_holes_of_zero_blocks_with_any_buffer() {
    use std::os::unix::fs::FileExt;
    let (bytes, expect) = zero_block_layout(5);
    let size = bytes.len();
    let t = tmp();
    // (The last: a core's small-file buffer after a copy of a 300,000-byte file, initialised
    // past the largest step to a length that is no whole number of blocks.)
    for (i, cap) in [0usize, 70_000, 256 << 10, 1 << 20].into_iter().enumerate() {
        let path = t.path().join(format!("f{i}"));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&bytes, 0).unwrap();
        f.sync_all().unwrap();
        let mut buf = Vec::with_capacity(cap);
        if cap == 1 << 20 {
            buf.resize(300_001, 7);
        }
        let punched = match fsops::copy::punch_zero_blocks(f.as_fd(), size as u64, &mut buf) {
            Ok(n) => n,
            Err(e) => panic!("punch with a buffer of {cap}: {e}"),
        };
        if punched == 0 {
            eprintln!(
                "skipped: the file system of {} does not punch holes",
                t.path().display()
            );
            return;
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "content, buffer {cap}"
        );
        assert_eq!(f.metadata().unwrap().len(), size as u64);
        assert_eq!(
            data_blocks(&f, size as u64),
            expect,
            "data blocks after the punch, buffer {cap}"
        );
    }
}

/// `-S` in one pass: the same content and the same holes as a copy followed by the punch
/// above, with any buffer, from a range that starts in the middle of a block, and a source
/// that is shorter than the range is an error, never a short copy.
#[test]
fn copy_sparse_range_writes_only_the_blocks_with_data() {
    const B: usize = fsops::copy::HOLE_BLOCK as usize;
    let (bytes, expect) = zero_block_layout(9);
    let size = bytes.len();
    let t = tmp();
    std::fs::write(t.path().join("src"), &bytes).unwrap();
    let rt = compio::runtime::Runtime::new().expect("io_uring runtime");
    let d = sys::open_dir_path(t.path()).unwrap();
    let src = sys::open_source(d.as_fd(), &c(b"src"), false).unwrap();
    // (The last: a core's small-file buffer after a copy of a 300,000-byte file, initialised
    // past the largest step to a length that is no whole number of blocks.)
    for (i, cap) in [0usize, 70_000, 256 << 10, 1 << 20].into_iter().enumerate() {
        // Two ranges, the second from the middle of block 3 (the first ends there).
        let name = format!("d{i}");
        let dst = sys::create_excl(d.as_fd(), &c(name.as_bytes()), 0o644).unwrap();
        let mut buf = Vec::with_capacity(cap);
        if cap == 1 << 20 {
            buf.resize(300_001, 7);
        }
        let moved = std::cell::Cell::new(0u64);
        let mid = 3 * B as u64 + 100;
        for range in [(0, mid), (mid, size as u64 - mid)] {
            let end = rt
                .block_on(fsops::copy::copy_sparse_range(
                    &src,
                    &dst,
                    range,
                    &mut buf,
                    &|n| moved.set(moved.get() + n),
                ))
                .unwrap();
            assert_eq!(end, range.0 + range.1);
        }
        assert_eq!(moved.get(), size as u64, "buffer {cap}");
        sys::ftruncate(dst.as_fd(), size as u64).unwrap();
        let f = std::fs::File::open(t.path().join(&name)).unwrap();
        assert_eq!(
            std::fs::read(t.path().join(&name)).unwrap(),
            bytes,
            "buffer {cap}"
        );
        f.sync_all().unwrap();
        assert_eq!(
            data_blocks(&f, size as u64),
            expect,
            "data blocks of the copy, buffer {cap}"
        );
        assert!(
            f.metadata().unwrap().blocks() * 512 < size as u64,
            "buffer {cap}"
        );
    }
    // A source shorter than the range it was measured at: an error.
    let dst = sys::create_excl(d.as_fd(), &c(b"short"), 0o644).unwrap();
    let e = rt
        .block_on(fsops::copy::copy_sparse_range(
            &src,
            &dst,
            (0, size as u64 + 5000),
            &mut Vec::new(),
            &|_| {},
        ))
        .expect_err("a shrunk source must fail");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

/// `-S` on the inline path: a small file's blocks of zeros are not written (holes in the new
/// file), whether the data was cached or read through the ring; its content is exact.
#[test]
fn inline_copies_with_sparse_leave_blocks_of_zeros_unwritten() {
    const B: usize = fsops::copy::HOLE_BLOCK as usize;
    // Blocks: data, zeros, zeros, data (partial, at the end); then data and a tail of zeros,
    // which the copy leaves unwritten and gives the file its size for.
    let mut mid = data(3 * B + 100, 3);
    mid[B..3 * B].fill(0);
    mid[0] = 1;
    mid[3 * B] = 1;
    let mut tail = data(3 * B + 100, 4);
    tail[B..].fill(0);
    tail[0] = 1;
    let t = tmp();
    let rt = compio::runtime::Runtime::new().expect("io_uring runtime");
    let d = sys::open_dir_path(t.path()).unwrap();
    for (layout, bytes, blocks) in [
        ("mid", &mid, [true, false, false, true]),
        ("tail", &tail, [true, false, false, false]),
    ] {
        std::fs::write(t.path().join(layout), bytes).unwrap();
        for how in ["cached", "inline", "ring"] {
            let name = format!("{layout}-{how}");
            let src = sys::open_source(d.as_fd(), &c(layout.as_bytes()), false).unwrap();
            let dst = sys::create_excl(d.as_fd(), &c(name.as_bytes()), 0o644).unwrap();
            let mut buf = Vec::with_capacity(64 << 10);
            let n = match how {
                "cached" => match fsops::copy::copy_inline_cached(
                    &src,
                    &dst,
                    bytes.len() as u64,
                    &mut buf,
                    true,
                )
                .unwrap()
                {
                    fsops::copy::Inline::Copied(n) => n,
                    fsops::copy::Inline::NotCached => {
                        eprintln!("skipped (cached): the source left the page cache");
                        continue;
                    }
                },
                "inline" => {
                    fsops::copy::copy_inline(&src, &dst, bytes.len() as u64, &mut buf, true)
                        .unwrap()
                }
                _ => rt
                    .block_on(fsops::copy::copy_small_async(
                        &std::rc::Rc::new(src),
                        &dst,
                        bytes.len() as u64,
                        true,
                    ))
                    .unwrap(),
            };
            assert_eq!(n, bytes.len() as u64, "{name}");
            drop(dst);
            let f = std::fs::File::open(t.path().join(&name)).unwrap();
            f.sync_all().unwrap();
            assert_eq!(
                &std::fs::read(t.path().join(&name)).unwrap(),
                bytes,
                "{name}"
            );
            assert_eq!(data_blocks(&f, bytes.len() as u64), blocks, "{name}");
        }
    }
}

/// `listing_gives_inode` says yes for the temp dir's file system and tmpfs, where every listed
/// number is the one `stat` gives (checked entry by entry, hard links included), and no for procfs,
/// which is not on its list.
#[test]
fn listing_gives_inode_where_listed_numbers_are_the_inodes() {
    let d = tmp();
    let shm_dir = tempfile::tempdir_in("/dev/shm").ok();
    let mut dirs = vec![d.path()];
    match &shm_dir {
        Some(s) => dirs.push(s.path()),
        None => println!("SKIP part: no /dev/shm to test tmpfs"),
    }
    for root in dirs {
        for i in 0..40 {
            std::fs::write(root.join(format!("f{i}")), data(i * 10, i as u8)).unwrap();
            if i % 3 == 0 {
                std::fs::hard_link(root.join(format!("f{i}")), root.join(format!("l{i}"))).unwrap();
            }
        }
        std::fs::create_dir(root.join("sub")).unwrap();
        let dir = sys::open_dir_path(root).unwrap();
        if !sys::listing_gives_inode(dir.as_fd()) {
            println!(
                "SKIP part: {} is on a file system not on the list",
                root.display()
            );
            continue;
        }
        let mut r = DirReader::new(1024);
        let mut seen = 0;
        while r.fill(dir.as_fd()).unwrap() {
            for e in r.entries() {
                let st = sys::lstat_at(dir.as_fd(), e.name).unwrap();
                assert_eq!(e.ino, st.ino, "{:?} in {}", e.name, root.display());
                seen += 1;
            }
        }
        assert_eq!(seen, 40 + 14 + 1, "{}", root.display());
    }
    let proc_dir = sys::open_dir_path(std::path::Path::new("/proc")).unwrap();
    assert!(!sys::listing_gives_inode(proc_dir.as_fd()));
}
