//! Full fidelity against rsync as the oracle (`-aHAXS`): hard-link groups, xattrs of every
//! namespace, ACLs (access and default), sparse files; `-x` over a loop-mounted file system,
//! `--reflink` on an XFS loop image, `-L` on symlink loops.
//!
//! Tests that mount take a machine-wide lock so they run one at a time.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Build the `-HAXS` tree under `root`; `outside` receives the name of a hard-link group that
/// lies outside the tree.
fn build_full_tree(root: &Path, outside: &Path) {
    fs::create_dir_all(root).unwrap();
    // Hard links: 3 names in 3 directories; 100 names; a group with a name outside the tree.
    for d in ["h1", "h2", "h3", "many"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    write(&root.join("h1/a"), b"three names");
    fs::hard_link(root.join("h1/a"), root.join("h2/b")).unwrap();
    fs::hard_link(root.join("h1/a"), root.join("h3/c")).unwrap();
    write(&root.join("many/n000"), &content(5, 70_000));
    for i in 1..100 {
        fs::hard_link(root.join("many/n000"), root.join(format!("many/n{i:03}"))).unwrap();
    }
    write(&root.join("h1/half"), b"one name outside");
    fs::hard_link(root.join("h1/half"), outside).unwrap();
    fs::hard_link(root.join("h1/half"), root.join("h2/half2")).unwrap();
    // A hard-linked FIFO (rsync -H links non-regular files too).
    mkfifo(&root.join("h1/fifo"));
    fs::hard_link(root.join("h1/fifo"), root.join("h3/fifo2")).unwrap();
    // xattrs on a file and a directory, trusted.* on a symlink, security.capability on a file.
    fs::create_dir(root.join("x")).unwrap();
    write(&root.join("x/file"), b"with xattrs");
    setxattr(&root.join("x/file"), "user.comment", b"hello");
    setxattr(&root.join("x/file"), "user.binary", &[0, 1, 2, 255, 0]);
    setxattr(&root.join("x/file"), "trusted.tag", b"root only");
    setxattr(&root.join("x"), "user.dirattr", b"on a directory");
    std::os::unix::fs::symlink("file", root.join("x/link")).unwrap();
    setxattr(&root.join("x/link"), "trusted.linkattr", b"on a symlink");
    write(&root.join("x/capable"), b"#!/bin/true\n");
    chmod(&root.join("x/capable"), 0o755);
    lchown(&root.join("x/capable"), 1000, 1000);
    // vfs_cap_data v2: magic|effective, permitted = CAP_NET_BIND_SERVICE.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    setxattr(&root.join("x/capable"), "security.capability", &cap);
    // ACLs: an access ACL on a file, a default ACL on a directory whose children inherit it.
    write(&root.join("x/acl-file"), b"acl");
    sh(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:1000:rw-,g:7:r--"),
            root.join("x/acl-file").as_os_str(),
        ],
    );
    fs::create_dir(root.join("acldir")).unwrap();
    sh(
        "setfacl",
        &[
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("u:1000:rwx,g:100:r-x"),
            root.join("acldir").as_os_str(),
        ],
    );
    sh(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:2000:r-x"),
            root.join("acldir").as_os_str(),
        ],
    );
    fs::create_dir(root.join("acldir/inherits")).unwrap();
    write(&root.join("acldir/inherits/child"), b"inherited acl");
    write(&root.join("acldir/child2"), b"inherited acl too");
    // A 1 GiB sparse file with 3 data extents, and a small one ending in a hole.
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.write_all_at(&content(1, 64 * 1024), 0).unwrap();
    f.write_all_at(&content(2, 128 * 1024), 500 << 20).unwrap();
    f.write_all_at(&content(3, 64 * 1024), (1 << 30) - 64 * 1024)
        .unwrap();
    drop(f);
    let f = fs::File::create(root.join("tailhole")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.set_len(10 << 20).unwrap();
    drop(f);
    // Times last.
    let mut t = 1_700_000_000;
    for p in treediff::walk(root).unwrap().into_iter().rev() {
        t += 11;
        set_times(&root.join(&p), t, 123_456_789);
    }
}

/// `setfacl ARGS P`, which must succeed.
fn setfacl(args: &[&str], p: &Path) {
    let o = Command::new("setfacl").args(args).arg(p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn haxs_matches_rsync_attribute_by_attribute() {
    if !is_root() {
        skip(
            "haxs_matches_rsync",
            "needs root (trusted.* xattrs, owners, security.capability)",
        );
        return;
    }
    assert!(
        require_rsync("haxs") && have("setfacl"),
        "the test command installs rsync and acl"
    );
    let t = Scratch::new();
    let src = t.path().join("src");
    build_full_tree(&src, &t.path().join("outside-name"));
    let (dr, da) = (t.path().join("rsync"), t.path().join("arsync"));
    let s = format!("{}/", src.display());
    let r = Command::new("rsync")
        .args(["-aHAXS", &s])
        .arg(&dr)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    for threads in ["1", "2"] {
        let da = da.with_extension(threads);
        let a = run(&[
            OsStr::new("-aHAXS"),
            OsStr::new("--threads"),
            OsStr::new(threads),
            OsStr::new(&s),
            da.as_os_str(),
        ]);
        assert_eq!(
            code(&a),
            0,
            "arsync: {}",
            String::from_utf8_lossy(&a.stderr)
        );
        // Against rsync's copy: every attribute, xattrs and ACLs, link groups, allocation.
        assert_same(&dr, &da, treediff::Check::full());
        // And against the source itself.
        assert_same(&src, &da, treediff::Check::full());
        // The sparse file stayed sparse: 3 extents' worth of blocks, not 1 GiB.
        let m = fs::metadata(da.join("sparse.img")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            m.blocks() * 512 < 4 << 20,
            "sparse.img allocates {} bytes",
            m.blocks() * 512
        );
        // The 100-name group is one inode: its data was written once.
        let ino = fs::metadata(da.join("many/n000")).unwrap().ino();
        for i in 1..100 {
            assert_eq!(
                fs::metadata(da.join(format!("many/n{i:03}")))
                    .unwrap()
                    .ino(),
                ino
            );
        }
        // security.capability survived the chown.
        assert!(
            treediff::xattrs(&da.join("x/capable"))
                .iter()
                .any(|(n, _)| n == b"security.capability")
        );
    }
}

#[test]
fn without_h_and_s_names_are_copies_and_holes_are_zeros() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"data");
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let f = fs::File::create(src.join("sp")).unwrap();
    f.write_all_at(b"x", 4 << 20).unwrap();
    drop(f);
    let d = t.path().join("dst");
    let s = format!("{}/", src.display());
    let a = run(&[OsStr::new("-a"), OsStr::new(&s), d.as_os_str()]);
    assert_eq!(code(&a), 0);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        fs::metadata(d.join("a")).unwrap().ino(),
        fs::metadata(d.join("b")).unwrap().ino()
    );
    // Holes written as zeros: the copy allocates the whole file, as rsync without -S.
    assert!(fs::metadata(d.join("sp")).unwrap().blocks() * 512 >= 4 << 20);
    assert_eq!(
        fs::read(d.join("sp")).unwrap(),
        fs::read(src.join("sp")).unwrap()
    );
}

#[test]
fn user_xattrs_and_acls_as_the_owner() {
    // Also meaningful as non-root: user.* and ACLs are the caller's to copy.
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    setxattr(&src.join("f"), "user.k", b"v");
    let d = t.path().join("dst");
    let s = format!("{}/", src.display());
    let a = run(&[OsStr::new("-aX"), OsStr::new(&s), d.as_os_str()]);
    assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(
        treediff::xattrs(&d.join("f")),
        vec![(b"user.k".to_vec(), b"v".to_vec())]
    );
    // Without -X nothing is copied.
    let d2 = t.path().join("dst2");
    assert_eq!(
        code(&run(&[OsStr::new("-a"), OsStr::new(&s), d2.as_os_str()])),
        0
    );
    assert!(treediff::xattrs(&d2.join("f")).is_empty());
}

#[test]
fn acls_inherited_from_a_default_acl_are_replaced_by_the_sources() {
    if !have("setfacl") {
        assert!(
            !is_root(),
            "setfacl is missing: the test command installs acl"
        );
        return skip("inherited_acls", "setfacl is not installed");
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("plain"), b"no ACL");
    write(&src.join("sub/acl"), b"an ACL of its own");
    mkfifo(&src.join("fifo"));
    std::os::unix::fs::symlink("plain", src.join("link")).unwrap();
    setfacl(&["-m", "u:daemon:r"], &src.join("sub/acl"));
    // The destination's parent hands a default ACL to everything made in it.
    let top = t.path().join("top");
    fs::create_dir(&top).unwrap();
    setfacl(&["-d", "-m", "u:nobody:rwx"], &top);
    for (flags, exact) in [("-aA", true), ("-a", false)] {
        let d = top.join(format!("copy{flags}"));
        let a = run(&[
            OsStr::new(flags),
            OsStr::new(&format!("{}/", src.display())),
            d.as_os_str(),
        ]);
        assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
        for p in ["", "plain", "sub", "sub/acl", "fifo"] {
            let (want, got) = (treediff::xattrs(&src.join(p)), treediff::xattrs(&d.join(p)));
            if exact {
                // -A: exactly the source's ACLs (none where it has none), as rsync -A.
                assert_eq!(got, want, "{p:?}");
            } else {
                // Without -A the inherited ACL stays, as with rsync -a and cp -a.
                assert!(
                    got.iter().any(|(n, _)| n == b"system.posix_acl_access"),
                    "{p:?}: {got:?}"
                );
            }
        }
    }
}

/// A new entry takes from the directory it is made in what rsync's `dest_mode` and
/// `set_file_attrs` give it. Without `-p`: bits within the directory's default ACL where it has
/// one (rsync's `default_perms_for_dir`; before, within the umask, so a `rwx` mask came out
/// `r-x`), and a directory made in a setgid directory keeps the setgid bit the kernel gave it
/// (before, its chmod took it away: a shared group directory's copy stopped sharing). With `-p`
/// (`-a`) the source's bits exactly: under a default ACL a file created with its final bits had
/// them cut by the ACL (`0777` came out `0770`), so it is given them by `fchmod` there. rsync is
/// the oracle, entry by entry: mode and access ACL.
#[test]
fn new_entries_take_what_their_directory_gives_as_rsync() {
    if !have("setfacl") {
        assert!(
            !is_root(),
            "setfacl is missing: the test command installs acl"
        );
        return skip("new_entries_without_p", "setfacl is not installed");
    }
    if !require_rsync("new_entries_without_p") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    write(&src.join("f"), b"f");
    write(&src.join("d/g"), b"g");
    write(&src.join("d/sub/h"), b"h");
    for (p, m) in [("f", 0o777), ("d", 0o777), ("d/g", 0o666), ("d/sub", 0o750)] {
        chmod(&src.join(p), m);
    }
    // What the destination directory is: setgid, a default ACL whose mask is wider than the
    // umask allows, or both.
    let kinds: [(&str, bool, bool); 3] = [
        ("setgid", true, false),
        ("acl", false, true),
        ("both", true, true),
    ];
    let flag_sets: [&[&str]; 5] = [
        &["-rt"],
        &["-rlt", "--chmod=u+w"],
        &["-a", "--no-p"],
        &["-rlto"],
        &["-a"],
    ];
    let mut compared = 0;
    for (kind, setgid, acl) in kinds {
        for (i, flags) in flag_sets.iter().enumerate() {
            // Into the directory itself (`SRC/ DIR/`) and as a new directory in it (`SRC DIR/`).
            for contents in [true, false] {
                let mut tops = Vec::new();
                for tool in ["rsync", "arsync"] {
                    let top = t.path().join(format!("{tool}-{kind}-{i}-{contents}"));
                    fs::create_dir(&top).unwrap();
                    if setgid {
                        chmod(&top, 0o2777);
                    }
                    if acl {
                        setfacl(
                            &["-d", "-m", "u::rwx,g::r-x,o::---,u:daemon:rwx,m::rwx"],
                            &top,
                        );
                    }
                    let s = if contents {
                        format!("{}/", src.display())
                    } else {
                        src.display().to_string()
                    };
                    let out = if tool == "rsync" {
                        Command::new("rsync")
                            .args(*flags)
                            .arg(&s)
                            .arg(&top)
                            .output()
                            .unwrap()
                    } else {
                        let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
                        args.push(OsStr::new(&s));
                        args.push(top.as_os_str());
                        run(&args)
                    };
                    assert_eq!(
                        code(&out),
                        0,
                        "{tool} {flags:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    tops.push(top);
                }
                let base = if contents { "" } else { "src/" };
                for p in ["", "f", "d", "d/g", "d/sub", "d/sub/h"] {
                    let rel = format!("{base}{p}");
                    let look = |top: &Path| {
                        use std::os::unix::fs::PermissionsExt;
                        let q = top.join(&rel);
                        let mode = fs::symlink_metadata(&q).unwrap().permissions().mode() & 0o7777;
                        let acl: Vec<_> = treediff::xattrs(&q)
                            .into_iter()
                            .filter(|(n, _)| n.starts_with(b"system.posix_acl"))
                            .collect();
                        (format!("{mode:o}"), acl)
                    };
                    assert_eq!(
                        look(&tops[1]),
                        look(&tops[0]),
                        "{kind}, {flags:?}, {rel:?}: arsync (left) against rsync"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 5 * 2 * 6);
}

/// `--usermap`, `--groupmap` and `--chown` change the ids that ACL entries name as well as the
/// owners (rsync's `match_acl_ids`): a migration that moves user 65534 to 1234 moves its ACL
/// entries too, the entries sorted by their new ids. Before, the ACLs kept the old ids. rsync is
/// the oracle for access and default ACLs; a second run changes nothing.
#[test]
fn acl_entries_name_the_ids_the_maps_give_as_rsync() {
    if !have("setfacl") {
        assert!(
            !is_root(),
            "setfacl is missing: the test command installs acl"
        );
        return skip("acl_entries_name_the_ids", "setfacl is not installed");
    }
    if !require_rsync("acl_entries_name_the_ids") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("f"), b"f");
    setfacl(&["-m", "u:65534:r,g:100:rw,u:2:r"], &src.join("f"));
    setfacl(&["-d", "-m", "u:65534:rx,g:100:r"], &src.join("d"));
    // Entries whose new ids come in another order (the kernel wants them sorted by id).
    write(&src.join("g"), b"g");
    setfacl(&["-m", "u:100:r,u:200:rw"], &src.join("g"));
    let acls = |root: &Path| {
        ["f", "d", "g"]
            .iter()
            .map(|p| {
                treediff::xattrs(&root.join(p))
                    .into_iter()
                    .filter(|(n, _)| n.starts_with(b"system.posix_acl"))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let s = format!("{}/", src.display());
    for maps in [
        &["--usermap=65534:1234,100:300", "--groupmap=100:1234"][..],
        &["--chown=1234:1234"],
    ] {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let d = t.path().join(format!("{tool}{}", maps.concat()));
            let mut args: Vec<&str> = vec!["-aA"];
            args.extend_from_slice(maps);
            for round in 0..2 {
                let mut a = args.clone();
                a.push("-i");
                let out = if tool == "rsync" {
                    Command::new("rsync")
                        .args(&a)
                        .arg(&s)
                        .arg(&d)
                        .output()
                        .unwrap()
                } else {
                    let mut os: Vec<&OsStr> = a.iter().map(OsStr::new).collect();
                    os.push(OsStr::new(&s));
                    os.push(d.as_os_str());
                    run(&os)
                };
                assert_eq!(
                    code(&out),
                    0,
                    "{tool} {maps:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                // (rsync 3.5 finds a reordered ACL changed on every run: `.f.......a.`.)
                if round == 1 && tool == "arsync" {
                    let changed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| !l.starts_with(".d "))
                        .map(str::to_string)
                        .collect();
                    assert_eq!(changed, Vec::<String>::new(), "{tool} {maps:?}: second run");
                }
            }
            got.push(acls(&d));
        }
        assert_eq!(got[1], got[0], "{maps:?}: arsync (left) against rsync");
        assert_ne!(got[1], acls(&src), "{maps:?}: the ids were to change");
    }
}

#[test]
fn one_file_system_skips_a_mounted_file_system() {
    if !is_root() {
        skip("one_file_system", "needs root to loop-mount an ext4 image");
        return;
    }
    let _l = mount_lock();
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("top"), b"on the root fs");
    let m = Mount::new(
        &t.path().join("inner.img"),
        16,
        &["mkfs.ext4", "-q", "-F"],
        &src.join("mnt"),
    );
    write(&m.dir.join("inside"), b"on the mounted fs");
    let s = format!("{}/", src.display());
    for (flag, mnt_expected) in [("-ax", true), ("-axx", false)] {
        let d = t.path().join(format!("dst{flag}"));
        let r = t.path().join(format!("rsync{flag}"));
        let a = run(&[OsStr::new(flag), OsStr::new(&s), d.as_os_str()]);
        assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
        let o = Command::new("rsync")
            .args([flag, &s])
            .arg(&r)
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(d.join("top").exists());
        assert_eq!(
            d.join("mnt").exists(),
            mnt_expected,
            "{flag}: mount point presence"
        );
        assert!(
            !d.join("mnt/inside").exists(),
            "{flag} crossed into the mounted file system"
        );
        // rsync does not set the mount point's times; we copy them from the mounted root.
        let mut check = treediff::Check::archive();
        check.root_attrs = false;
        check.dir_mtime = false;
        assert_same(&r, &d, check);
        if mnt_expected {
            use std::os::unix::fs::MetadataExt;
            let (ms, md) = (
                fs::metadata(&m.dir).unwrap(),
                fs::metadata(d.join("mnt")).unwrap(),
            );
            assert_eq!((ms.mtime(), ms.mtime_nsec()), (md.mtime(), md.mtime_nsec()));
            assert_eq!(ms.mode(), md.mode());
        }
    }
    // Without -x the mounted file system is copied.
    let d = t.path().join("dst-all");
    assert_eq!(
        code(&run(&[OsStr::new("-a"), OsStr::new(&s), d.as_os_str()])),
        0
    );
    assert!(d.join("mnt/inside").exists());
    drop(m);
}

/// Whether any extent of `p` is shared (FIEMAP's shared flag, as `filefrag -v` prints it).
fn has_shared_extent(p: &Path) -> bool {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(p)
        .output()
        .expect("filefrag (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

#[test]
fn reflink_always_shares_and_never_does_not_on_xfs() {
    if !is_root() {
        skip("reflink", "needs root to loop-mount an XFS image");
        return;
    }
    assert!(have("mkfs.xfs"), "the test command installs xfsprogs");
    let _l = mount_lock();
    let t = Scratch::new();
    let m = Mount::new(
        &t.path().join("xfs.img"),
        320,
        &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
        &t.path().join("xfs"),
    );
    let src = m.dir.join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("big"), &content(9, 3 << 20));
    write(&src.join("small"), &content(10, 10_000));
    let s = format!("{}/", src.display());
    let always = m.dir.join("always");
    let a = run(&[
        OsStr::new("-a"),
        OsStr::new("--reflink=always"),
        OsStr::new(&s),
        always.as_os_str(),
    ]);
    assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
    let never = m.dir.join("never");
    let a = run(&[
        OsStr::new("-a"),
        OsStr::new("--reflink=never"),
        OsStr::new(&s),
        never.as_os_str(),
    ]);
    assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
    for f in ["big", "small"] {
        assert!(
            has_shared_extent(&always.join(f)),
            "--reflink=always: {f} shares no extent"
        );
        assert!(
            !has_shared_extent(&never.join(f)),
            "--reflink=never: {f} shares an extent"
        );
    }
    assert_same(&src, &always, treediff::Check::archive());
    assert_same(&src, &never, treediff::Check::archive());
    // Across file systems --reflink=always fails each file (exit 23); auto falls back.
    let off = t.path().join("off-fs");
    let a = run(&[
        OsStr::new("-a"),
        OsStr::new("--reflink=always"),
        OsStr::new(&s),
        off.as_os_str(),
    ]);
    assert_eq!(code(&a), 23);
    assert!(!off.join("big").exists());
    let auto = t.path().join("auto");
    assert_eq!(
        code(&run(&[OsStr::new("-a"), OsStr::new(&s), auto.as_os_str()])),
        0
    );
    assert_same(&src, &auto, treediff::Check::archive());
    drop(m);
}

#[test]
fn copy_links_and_loops() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("d/f"), b"target file");
    std::os::unix::fs::symlink("d/f", src.join("to-file")).unwrap();
    std::os::unix::fs::symlink("d", src.join("to-dir")).unwrap();
    std::os::unix::fs::symlink("self", src.join("self")).unwrap();
    std::os::unix::fs::symlink("..", src.join("d/up")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    let s = format!("{}/", src.display());
    let d = t.path().join("dst");
    let a = run(&[OsStr::new("-aL"), OsStr::new(&s), d.as_os_str()]);
    // The loops and the dangling link are reported, the rest copied: exit 23 as rsync.
    assert_eq!(code(&a), 23);
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(
        err.contains("self") && err.contains("dangling") && err.contains("up"),
        "{err}"
    );
    assert_eq!(fs::read(d.join("to-file")).unwrap(), b"target file");
    assert!(fs::symlink_metadata(d.join("to-file")).unwrap().is_file());
    assert!(fs::symlink_metadata(d.join("to-dir")).unwrap().is_dir());
    assert_eq!(fs::read(d.join("to-dir/f")).unwrap(), b"target file");
    // rsync gives the same exit code for the loops it can survive (with `d/up` pointing at an
    // ancestor it recurses until paths are too long, exponentially with `to-dir` beside it).
    if require_rsync("copy_links") {
        fs::remove_file(src.join("d/up")).unwrap();
        let r = Command::new("rsync")
            .args(["-aL", &s])
            .arg(t.path().join("r"))
            .output()
            .unwrap();
        assert_eq!(
            r.status.code(),
            Some(23),
            "rsync's exit code for the same tree"
        );
        let d2 = t.path().join("dst2");
        assert_eq!(
            code(&run(&[OsStr::new("-aL"), OsStr::new(&s), d2.as_os_str()])),
            23
        );
        // rsync leaves directory times unset after a sender error; we keep the source's.
        let mut check = treediff::Check::archive();
        check.root_attrs = false;
        check.dir_mtime = false;
        assert_same(&t.path().join("r"), &d2, check);
        let ms = fs::metadata(src.join("d")).unwrap();
        let md = fs::metadata(d2.join("d")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((ms.mtime(), ms.mtime_nsec()), (md.mtime(), md.mtime_nsec()));
    }
}

#[test]
fn safe_and_unsafe_links() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&t.path().join("outside"), b"outside the tree");
    write(&src.join("d/in"), b"inside");
    std::os::unix::fs::symlink("../../outside", src.join("d/escape")).unwrap();
    std::os::unix::fs::symlink(t.path().join("outside"), src.join("abs")).unwrap();
    std::os::unix::fs::symlink("in", src.join("d/safe")).unwrap();
    let s = format!("{}/", src.display());
    let d1 = t.path().join("safe");
    assert_eq!(
        code(&run(&[
            OsStr::new("-a"),
            OsStr::new("--safe-links"),
            OsStr::new(&s),
            d1.as_os_str()
        ])),
        0
    );
    assert!(
        fs::symlink_metadata(d1.join("d/safe"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::symlink_metadata(d1.join("d/escape")).is_err());
    assert!(fs::symlink_metadata(d1.join("abs")).is_err());
    let d2 = t.path().join("unsafe");
    assert_eq!(
        code(&run(&[
            OsStr::new("-a"),
            OsStr::new("--copy-unsafe-links"),
            OsStr::new(&s),
            d2.as_os_str()
        ])),
        0
    );
    assert!(
        fs::symlink_metadata(d2.join("d/safe"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(d2.join("d/escape")).unwrap(), b"outside the tree");
    assert!(fs::symlink_metadata(d2.join("abs")).unwrap().is_file());
    if require_rsync("safe_links") {
        for flag in ["--safe-links", "--copy-unsafe-links"] {
            let r = t.path().join(format!("r{flag}"));
            let o = Command::new("rsync")
                .args(["-a", flag, &s])
                .arg(&r)
                .output()
                .unwrap();
            assert!(o.status.success());
            let a = if flag == "--safe-links" { &d1 } else { &d2 };
            // rsync leaves directory and symlink times unset after skipping an unsafe link;
            // we keep the source's (checked against the source below).
            let mut check = treediff::Check::archive();
            check.root_attrs = false;
            check.dir_mtime = false;
            check.link_mtime = false;
            assert_same(&r, a, check);
        }
        for a in [&d1, &d2] {
            use std::os::unix::fs::MetadataExt;
            let (ms, md) = (
                fs::symlink_metadata(src.join("d/safe")).unwrap(),
                fs::symlink_metadata(a.join("d/safe")).unwrap(),
            );
            assert_eq!((ms.mtime(), ms.mtime_nsec()), (md.mtime(), md.mtime_nsec()));
        }
    }
}

#[test]
fn keep_dirlinks_uses_a_destination_symlink_to_a_directory() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("sub/f"), b"via the link");
    let real = t.path().join("real");
    fs::create_dir(&real).unwrap();
    let d = t.path().join("dst");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink(&real, d.join("sub")).unwrap();
    let s = format!("{}/", src.display());
    assert_eq!(
        code(&run(&[OsStr::new("-aK"), OsStr::new(&s), d.as_os_str()])),
        0
    );
    assert!(
        fs::symlink_metadata(d.join("sub"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(real.join("f")).unwrap(), b"via the link");
    // Without -K the symlink is replaced by a real directory and nothing goes to `real`.
    let real2 = t.path().join("real2");
    fs::create_dir(&real2).unwrap();
    let d2 = t.path().join("dst2");
    fs::create_dir(&d2).unwrap();
    std::os::unix::fs::symlink(&real2, d2.join("sub")).unwrap();
    assert_eq!(
        code(&run(&[OsStr::new("-a"), OsStr::new(&s), d2.as_os_str()])),
        0
    );
    assert!(fs::symlink_metadata(d2.join("sub")).unwrap().is_dir());
    assert!(!real2.join("f").exists());
}

#[test]
fn destination_without_xattr_support_warns_once() {
    if !is_root() {
        skip("xattr_unsupported", "needs root to mount ramfs");
        return;
    }
    let _l = mount_lock();
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..20 {
        let f = src.join(format!("f{i}"));
        write(&f, b"x");
        setxattr(&f, "user.k", b"v");
    }
    let mnt = t.path().join("ramfs");
    fs::create_dir(&mnt).unwrap();
    sh(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new("ramfs"),
            OsStr::new("none"),
            mnt.as_os_str(),
        ],
    );
    let s = format!("{}/", src.display());
    let a = run(&[OsStr::new("-aX"), OsStr::new(&s), mnt.join("d").as_os_str()]);
    let mut check = treediff::Check::archive();
    check.root_attrs = false;
    let diffs = treediff::diff(&src, &mnt.join("d"), check);
    let leftovers: Vec<_> = fs::read_dir(mnt.join("d"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with(".~arsync-"))
                .collect()
        })
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(diffs.is_empty(), "{diffs:?}");
    assert!(leftovers.is_empty(), "temporary names left: {leftovers:?}");
    assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
    let err = String::from_utf8_lossy(&a.stderr);
    assert_eq!(
        err.lines().count(),
        1,
        "one warning, not one per file:\n{err}"
    );
    assert!(
        err.contains("warning") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn non_root_rules_owner_skipped_group_only_if_member() {
    if !is_root() {
        skip(
            "non_root_rules",
            "needs root to set up files of other owners and switch user",
        );
        return;
    }
    if !have("setpriv") {
        panic!("setpriv (util-linux) is missing");
    }
    let t = Scratch::new();
    // The unprivileged user must reach the binary and the scratch directory.
    let bin = reachable_binary(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("mine"), b"owned by nobody");
    lchown(&src.join("mine"), 65534, 65534);
    write(&src.join("other-owner"), b"readable, owned by 1000");
    lchown(&src.join("other-owner"), 1000, 65534);
    write(&src.join("other-group"), b"group 7, not nobody's");
    lchown(&src.join("other-group"), 65534, 7);
    for f in ["mine", "other-owner", "other-group"] {
        chmod(&src.join(f), 0o644);
    }
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    lchown(&dst, 65534, 65534);
    let out = as_nobody(&bin, &["-a", "--numeric-ids"], &src, &dst);
    // -o is skipped silently and -g keeps only groups the user is in: no error, exit 0.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    for f in ["mine", "other-owner", "other-group"] {
        let m = fs::metadata(dst.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{f}");
        assert_eq!(
            fs::read(dst.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap()
        );
    }
}

/// Regression: with many 3-name groups spread over directories handled by different cores, a
/// leader that finished after all names had arrived left its waiters to copy the data again.
#[test]
fn many_hardlink_groups_across_directories_stay_linked() {
    let t = Scratch::new();
    let src = t.path().join("src");
    for d in 0..10 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
    }
    for i in 0..1500 {
        let a = src.join(format!("d{}/i{i}_a", i % 10));
        write(&a, &content(i as u64, (i * 37) % 5000));
        fs::hard_link(&a, src.join(format!("d{}/i{i}_b", (i + 3) % 10))).unwrap();
        fs::hard_link(&a, src.join(format!("d{}/i{i}_c", (i + 7) % 10))).unwrap();
    }
    let s = format!("{}/", src.display());
    for threads in ["1", "2", "8"] {
        let d = t.path().join(format!("dst{threads}"));
        let a = run(&[
            OsStr::new("-aH"),
            OsStr::new("--threads"),
            OsStr::new(threads),
            OsStr::new(&s),
            d.as_os_str(),
        ]);
        assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
        let mut check = treediff::Check::archive();
        check.hardlinks = true;
        assert_same(&src, &d, check);
    }
}

/// Regression: one core used to take every large file of a directory into its own in-flight set,
/// leaving the other cores nothing to steal (8 × 256 MiB copied on one core). Now a core already
/// streaming a large file hands the next ones back, and the other core copies some of them.
#[test]
fn large_files_are_shared_between_cores() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    // Enough work (16 × 32 MiB) that the second core, woken by the scan's pushes, surely gets
    // scheduled before the first core could have finished everything alone.
    for i in 0..16 {
        write(&src.join(format!("big{i}")), &content(100 + i, 32 << 20));
    }
    let d = t.path().join("dst");
    let stats = t.path().join("stats.json");
    let s = format!("{}/", src.display());
    let a = run(&[
        OsStr::new("-a"),
        OsStr::new("--threads"),
        OsStr::new("2"),
        OsStr::new("--no-pin"),
        OsStr::new("--stats-json"),
        stats.as_os_str(),
        OsStr::new(&s),
        d.as_os_str(),
    ]);
    assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
    assert_same(&src, &d, treediff::Check::archive());
    let doc = fs::read_to_string(&stats).unwrap();
    // Per core: files whose data went through copy_file_range, the ring or FICLONE.
    let by = |k: &str| per_core(&doc, k);
    let v: Vec<u64> = by("kernel_copied_files")
        .iter()
        .zip(by("ring_files"))
        .zip(by("cloned_files"))
        .map(|((a, b), c)| a + b + c)
        .collect();
    assert_eq!(v.iter().sum::<u64>(), 16, "stats: {doc}");
    assert!(
        v.iter().all(|&n| n > 0),
        "one core copied every large file: {v:?}"
    );
}

/// Per-core numbers from a `--stats-json` document: the value of `key` in each core's object.
fn per_core(doc: &str, key: &str) -> Vec<u64> {
    doc.split("\"core\":")
        .skip(1)
        .map(|c| {
            c.split(&format!("\"{key}\":"))
                .nth(1)
                .and_then(|x| x.trim_start().split(|ch: char| !ch.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn one_large_file_is_split_between_cores() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    // 48 chunks of 1 MiB plus a short last one. Whether the second core joins depends on what
    // else the machine runs, so the test hook `split=huge:wait-helper` holds the owner until
    // another core has claimed a chunk (without the hooks only the totals are checked).
    let data = content(77, (48 << 20) + 12345);
    write(&src.join("huge"), &data);
    write(&src.join("small"), b"next to it");
    let s = format!("{}/", src.display());
    let hooks = has_hooks();
    if !hooks {
        skip(
            "one_large_file_is_split_between_cores",
            "binary built without --features arsync/test-hooks: both cores taking chunks not checked",
        );
    }
    for (threads, chunk, split) in [("2", "1M", true), ("1", "1M", false), ("2", "0", false)] {
        let d = t.path().join(format!("dst-{threads}-{chunk}"));
        let stats = t.path().join(format!("stats-{threads}-{chunk}.json"));
        let chunk_flag = format!("--split-chunk={chunk}");
        let a = arsync()
            .env("ARSYNC_TEST_HOOK", "split=huge:wait-helper")
            .args([
                "-a",
                "--threads",
                threads,
                "--no-pin",
                &chunk_flag,
                "--stats-json",
            ])
            .arg(&stats)
            .arg(&s)
            .arg(&d)
            .output()
            .unwrap();
        assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
        assert_same(&src, &d, treediff::Check::archive());
        assert_eq!(fs::read(d.join("huge")).unwrap(), data);
        let doc = fs::read_to_string(&stats).unwrap();
        let chunks = per_core(&doc, "split_chunks");
        let files = per_core(&doc, "split_files");
        if split {
            assert_eq!(files.iter().sum::<u64>(), 1, "{doc}");
            assert_eq!(
                chunks.iter().sum::<u64>(),
                49,
                "every chunk copied once: {doc}"
            );
            if hooks {
                // The hook guarantees that another core claimed a chunk before the owner went
                // on; the owner itself may then find none left (a CI run: [0, 49], the owner's
                // vCPU descheduled while the helper copied them all).
                let owner = files.iter().position(|&f| f == 1).unwrap();
                assert!(
                    chunks.iter().enumerate().any(|(i, &n)| i != owner && n > 0),
                    "no core but the owner (core {owner}) copied a chunk: {chunks:?}"
                );
            }
        } else {
            assert_eq!(chunks.iter().sum::<u64>(), 0, "{doc}");
            assert_eq!(files.iter().sum::<u64>(), 0, "{doc}");
        }
    }
}

#[test]
fn followed_symlinks_join_their_targets_hard_link_group() {
    if !require_rsync("followed_symlinks_join_their_targets_hard_link_group") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"two links");
    fs::hard_link(src.join("f"), src.join("sub/g")).unwrap();
    for i in 0..10 {
        std::os::unix::fs::symlink("f", src.join(format!("l{i}"))).unwrap();
    }
    write(&src.join("h"), b"one link");
    std::os::unix::fs::symlink("h", src.join("m")).unwrap();
    // The names, grouped by the inode they got in `root`.
    let groups = |root: &Path| {
        use std::os::unix::fs::MetadataExt;
        let mut by_ino: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for p in treediff::walk(root).unwrap() {
            let m = fs::symlink_metadata(root.join(&p)).unwrap();
            if m.is_file() {
                by_ino
                    .entry(m.ino())
                    .or_default()
                    .push(p.display().to_string());
            }
        }
        let mut g: Vec<Vec<String>> = by_ino.into_values().collect();
        g.sort();
        g
    };
    let s = format!("{}/", src.display());
    let r = Command::new("rsync")
        .args(["-aHL", &s])
        .arg(t.path().join("rsync"))
        .output()
        .unwrap();
    assert!(r.status.success());
    let want = groups(&t.path().join("rsync"));
    assert_eq!(want.len(), 3, "{want:?}");
    for threads in ["1", "2"] {
        let dst = t.path().join(format!("arsync{threads}"));
        let a = run(&[
            OsStr::new("-aHL"),
            OsStr::new("--threads"),
            OsStr::new(threads),
            OsStr::new(&s),
            dst.as_os_str(),
        ]);
        assert_eq!(code(&a), 0, "{}", String::from_utf8_lossy(&a.stderr));
        assert_eq!(groups(&dst), want, "--threads {threads}");
    }
}

/// A read-only file or directory with `user.*` attributes, copied with `-X` by a user who is not
/// root: the kernel lets only a writer of the inode set them (root passes anyway), so the copy
/// is given its owner's write bit while they are set and its own mode after, as rsync does. The
/// new file used to be created read-only and then lost (its attributes refused, it was never
/// published); an existing read-only copy missing an attribute got it refused.
#[test]
fn read_only_entries_keep_their_user_xattrs_when_a_user_copies_them() {
    let name = "read_only_entries_keep_their_user_xattrs_when_a_user_copies_them";
    let t = Scratch::new();
    let bin = reachable_binary(t.path());
    let src = t.path().join("src");
    fs::create_dir_all(src.join("ro-dir")).unwrap();
    write(&src.join("ro-file"), b"read only, with an attribute");
    write(&src.join("ro-dir/inner"), b"inside a read-only directory");
    setxattr(&src.join("ro-file"), "user.k", b"file value");
    setxattr(&src.join("ro-dir"), "user.k", b"dir value");
    chmod(&src.join("ro-file"), 0o444);
    chmod(&src.join("ro-dir/inner"), 0o400);
    chmod(&src.join("ro-dir"), 0o555);
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    // As root, the copy runs as nobody (over files nobody owns); otherwise as the caller.
    if is_root() {
        if !have("setpriv") {
            panic!("setpriv (util-linux) is missing");
        }
        give_to_nobody(&src);
        give_to_nobody(&dst);
    } else {
        skip(name, "not root: runs as the calling user");
    }
    let copy = |extra: &[&str]| {
        let out = as_user(&bin)
            .arg("-aX")
            .args(extra)
            .arg(format!("{}/", src.display()))
            .arg(&dst)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let check = |what: &str| {
        use std::os::unix::fs::PermissionsExt;
        for (p, mode, value) in [
            ("ro-file", 0o444, &b"file value"[..]),
            ("ro-dir", 0o555, &b"dir value"[..]),
        ] {
            let d = dst.join(p);
            assert_eq!(
                fs::symlink_metadata(&d).unwrap().permissions().mode() & 0o7777,
                mode,
                "{what}: {p}"
            );
            assert_eq!(
                treediff::xattrs(&d),
                vec![(b"user.k".to_vec(), value.to_vec())],
                "{what}: {p}"
            );
        }
        assert_eq!(
            fs::read(dst.join("ro-dir/inner")).unwrap_or_default(),
            b"inside a read-only directory",
            "{what}"
        );
    };
    copy(&[]);
    check("new");
    // The copies lose the attribute (made writable for it, then read-only again); the next run
    // finds them up to date but for it.
    for p in ["ro-file", "ro-dir"] {
        let d = dst.join(p);
        let mode = if p == "ro-dir" { 0o555 } else { 0o444 };
        chmod(&d, 0o755);
        let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path and attribute name.
        let r = unsafe { libc::removexattr(c.as_ptr(), c"user.k".as_ptr()) };
        assert_eq!(r, 0, "removexattr {}", std::io::Error::last_os_error());
        chmod(&d, mode);
    }
    use std::os::unix::fs::MetadataExt;
    let ino = fs::symlink_metadata(dst.join("ro-file")).unwrap().ino();
    copy(&[]);
    check("existing");
    // Given the attribute in place, not copied again.
    assert_eq!(
        fs::symlink_metadata(dst.join("ro-file")).unwrap().ino(),
        ino
    );
}
