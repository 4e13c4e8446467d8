//! The engine's switches as a tuner uses them: every `--copy-method` gives an exact copy through
//! the path it names (checked in `--stats-json` and in `--stats`), the pipeline tunables work at their edges, the
//! io-wq cap reaches the kernel, every `--route` is exact and goes where it was sent, and
//! contradictory combinations are usage errors; a `copy_file_range` from a cold source runs off
//! the core; `-c` hashes on the descriptors it holds (no `dup` per file); `--partial` into a new
//! destination makes no look for partial files to resume.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use common::*;

/// Held by the tests that depend on what is in the page cache: one of them drops the whole cache,
/// which would turn another's warm copy cold.
static PAGE_CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn page_cache() -> std::sync::MutexGuard<'static, ()> {
    PAGE_CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).expect("stats file")).expect("stats JSON")
}

/// Regular files with content (size > 0) under `root`.
fn nonempty_files(root: &Path) -> u64 {
    let mut n = 0;
    for p in treediff::walk(root).unwrap() {
        let m = fs::symlink_metadata(root.join(&p)).unwrap();
        if m.is_file() && m.len() > 0 {
            n += 1;
        }
    }
    n
}

#[test]
fn each_copy_method_is_exact_and_takes_its_path() {
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 60,
            depth: 6,
        },
    );
    let with_data = nonempty_files(&src);
    let files = |v: &serde_json::Value| v["counts"]["files"].as_u64().unwrap();
    let method = |v: &serde_json::Value, m: &str| v["copy_methods"][m].as_u64().unwrap();
    for (name, flags) in [
        ("auto", vec!["--copy-method=auto", "--inline-max=4K"]),
        ("cfr", vec!["--copy-method=copy-file-range"]),
        // Many small pipeline buffers and an odd depth: files span several chunks.
        (
            "uring",
            vec![
                "--copy-method=uring",
                "--buffer-size=4K",
                "--queue-depth=3",
                "--large-files-in-flight=1",
                "--files-in-flight=1",
            ],
        ),
    ] {
        let dst = s.path().join(name);
        let json = s.path().join(format!("{name}.json"));
        let json_arg = json.display().to_string();
        let mut args = vec!["-a", "--stats", "--stats-json", &json_arg];
        args.extend(flags.iter().copied());
        let out = copy_contents(&args, &src, &dst);
        assert_eq!(
            code(&out),
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&src, &dst, treediff::Check::archive());
        let v = stats(&json);
        let total = files(&v);
        // Latency percentiles: one data step per file, ordered quantiles.
        let data = &v["latency"]["data"];
        assert_eq!(data["count"].as_u64(), Some(total), "{v}");
        let q = |k: &str| data[k].as_f64().unwrap();
        assert!(
            q("p50_us") <= q("p90_us") && q("p90_us") <= q("p99_us") && q("p99_us") <= q("max_us"),
            "{v}"
        );
        assert!(v["phases_s"]["copy"].as_f64().unwrap() > 0.0, "{v}");
        // --stats says the same in its text.
        let line = format!(
            "Files by copy method: clone {}, copy_file_range {} (split across cores {}), io_uring {}, inline {}",
            method(&v, "clone"),
            method(&v, "copy_file_range"),
            method(&v, "split_across_cores"),
            method(&v, "uring"),
            method(&v, "inline"),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&line), "{name}: want {line:?} in\n{text}");
        match name {
            "auto" => {
                // Files up to 4 KiB inline; larger ones copy_file_range (one file system).
                assert!(method(&v, "inline") > 0, "{v}");
                assert!(method(&v, "copy_file_range") > 0, "{v}");
                assert_eq!(method(&v, "uring"), 0, "{v}");
                assert_eq!(method(&v, "inline") + method(&v, "copy_file_range"), total);
            }
            "cfr" => {
                assert_eq!(method(&v, "copy_file_range"), with_data, "{v}");
                assert_eq!(method(&v, "inline"), total - with_data, "empty files: {v}");
            }
            _ => {
                assert_eq!(method(&v, "uring"), with_data, "{v}");
                assert_eq!(v["settings"]["buffer_size"], 4096, "{v}");
                assert_eq!(v["settings"]["queue_depth"], 3, "{v}");
            }
        }
    }
}

#[test]
fn trace_level_names_each_files_copy_method() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("small"), b"x").unwrap();
    fs::write(src.join("sub/big"), vec![7u8; 1 << 20]).unwrap();
    let out = copy_contents(
        &["-a", "-vvvv", "--inline-max=4K"],
        &src,
        &s.path().join("dst"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    let method_of = |path: &str| {
        log.lines()
            .find(|l| l.contains("data c") && l.contains(&format!("path={path} ")))
            .unwrap_or_else(|| panic!("no method line for {path} in\n{log}"))
            .to_string()
    };
    assert!(method_of("small").contains("inline"), "{log}");
    assert!(method_of("sub/big").contains("copy_file_range"), "{log}");
}

#[test]
fn each_route_is_exact_and_counted_where_it_was_sent() {
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 60,
            depth: 6,
        },
    );
    let classes = ["stat", "open", "create", "meta", "read"];
    let count =
        |v: &serde_json::Value, class: &str, via: &str| v["routes"][class][via].as_u64().unwrap();
    // Settings per class, and where the calls may be counted (auto: inline or ring, depending
    // on what the page cache holds).
    for (round, (name, spec, want)) in [
        (
            "defaults",
            "",
            ["inline", "auto", "inline", "inline", "auto"],
        ),
        ("inline", "all=inline", ["inline"; 5]),
        // meta has no ring op: all=ring leaves it as it was.
        (
            "ring",
            "all=ring",
            ["ring", "ring", "ring", "inline", "ring"],
        ),
        // read has no worker path: all=worker leaves it as it was.
        (
            "worker",
            "all=worker",
            ["worker", "worker", "worker", "worker", "auto"],
        ),
        (
            "mixed",
            "stat=worker,open=ring,create=worker,read=inline",
            ["worker", "ring", "worker", "inline", "inline"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dst = s.path().join(name);
        let json = s.path().join(format!("{name}.json"));
        let json_arg = json.display().to_string();
        let route = if spec.is_empty() {
            "--route=".to_string()
        } else {
            format!("--route={spec}")
        };
        // A first copy, then (after a change to one file) a re-sync whose quick check stats.
        let out = copy_contents(
            &["-a", &route, "--meta-workers=3", "--stats-json", &json_arg],
            &src,
            &dst,
        );
        assert_eq!(
            code(&out),
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&src, &dst, treediff::Check::archive());
        let v = stats(&json);
        for (class, via) in classes.iter().zip(want) {
            assert_eq!(v["settings"]["routes"][class], via, "{name}: {v}");
        }
        let counted = |class: &str, via: &str| -> u64 {
            if via == "auto" {
                count(&v, class, "inline") + count(&v, class, "ring")
            } else {
                count(&v, class, via)
            }
        };
        let others = |class: &str, via: &str| -> u64 {
            ["inline", "ring", "worker"]
                .iter()
                .filter(|o| **o != via && !(via == "auto" && **o != "worker"))
                .map(|o| count(&v, class, o))
                .sum()
        };
        // Every new file was opened, created, read and given its metadata on the path asked for.
        let files = v["copy_methods"]["inline"].as_u64().unwrap()
            + v["copy_methods"]["copy_file_range"].as_u64().unwrap();
        for (class, via) in classes[1..].iter().zip(&want[1..]) {
            let n = counted(class, via);
            if *class == "read" {
                // Small files with data (empty ones read nothing).
                assert!(n > 0 && n <= files, "{name} {class}: {v}");
            } else {
                assert!(n >= files, "{name} {class}: {v}");
            }
            assert_eq!(others(class, via), 0, "{name} {class}: {v}");
        }
        let changed = src.join("wide/f00007");
        fs::write(&changed, "x".repeat(100 + round)).unwrap();
        set_times(&changed, 1_700_000_000 + round as i64, 5);
        let out = copy_contents(&["-ai", &route, "--stats-json", &json_arg], &src, &dst);
        assert_eq!(
            code(&out),
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            listed.contains(">f.st...... wide/f00007"),
            "{name}: {listed}"
        );
        assert_same(&src, &dst, treediff::Check::archive());
        let v = stats(&json);
        // The quick check stats both sides of every file through the stat route.
        assert!(count(&v, "stat", want[0]) > 0, "{name}: {v}");
        // And a third run finds nothing to do.
        let out = copy_contents(&["-ai", &route], &src, &dst);
        assert!(
            out.stdout.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A class cannot take a path it has no implementation for: a usage error before anything.
    for bad in [
        "meta=ring",
        "read=worker",
        "stat=auto",
        "create=auto",
        "nope=inline",
    ] {
        let out = copy_contents(
            &["-a", &format!("--route={bad}")],
            &src,
            &s.path().join("never"),
        );
        assert_eq!(code(&out), 1, "{bad}");
        assert!(!s.path().join("never").exists());
    }
}

/// A cold source (page cache dropped, root only): the small files' opens and reads that would
/// wait for the disk go to the ring (auto), and the copy is exact.
#[test]
fn cold_small_files_go_to_the_ring_and_stay_exact() {
    let _cache = page_cache();
    if !is_root() {
        skip(
            "cold_small_files_go_to_the_ring_and_stay_exact",
            "dropping the page cache needs root",
        );
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    for d in 0..10 {
        for f in 0..50 {
            let p = src.join(format!("d{d}/f{f}"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            write(&p, &content((d * 50 + f) as u64, 100 + f * 37));
        }
    }
    let sync = std::process::Command::new("sync").status().unwrap();
    assert!(sync.success());
    // Evict the source's pages and inodes.
    fs::write("/proc/sys/vm/drop_caches", b"3\n").unwrap();
    let json = s.path().join("cold.json");
    let json_arg = json.display().to_string();
    let dst = s.path().join("dst");
    let out = copy_contents(&["-a", "--stats-json", &json_arg], &src, &dst);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &dst, treediff::Check::archive());
    let v = stats(&json);
    // (Nearly) every open and read would wait for the disk.
    for class in ["open", "read"] {
        assert!(
            v["routes"][class]["ring"].as_u64().unwrap() >= 450,
            "the cold {class}s stayed on the cores: {v}"
        );
    }
    // Warm now: a second copy reads everything inline.
    let json2 = s.path().join("warm.json");
    let json2_arg = json2.display().to_string();
    let out = copy_contents(
        &["-a", "--stats-json", &json2_arg],
        &src,
        &s.path().join("dst2"),
    );
    assert_eq!(code(&out), 0);
    let v = stats(&json2);
    // `RWF_NOWAIT` may still refuse a cached page the kernel holds locked for a moment (reclaim,
    // migration: a CI run saw 5 of 500), and such a read rightly goes to the ring; but a warm
    // copy reads (nearly) everything on its core.
    let (inline, ring) = (
        v["routes"]["read"]["inline"].as_u64().unwrap(),
        v["routes"]["read"]["ring"].as_u64().unwrap(),
    );
    assert_eq!(inline + ring, 500, "{v}");
    assert!(ring <= 25, "a warm copy sent {ring} reads to the ring: {v}");
    assert_eq!(v["routes"]["open"]["inline"].as_u64(), Some(500), "{v}");
}

#[test]
fn iowq_worker_cap_reaches_the_kernel() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"data");
    let json = s.path().join("s.json");
    let json_arg = json.display().to_string();
    let out = copy_contents(
        &[
            "-a",
            "--iowq-workers=3",
            "--threads=2",
            "--stats-json",
            &json_arg,
        ],
        &src,
        &s.path().join("dst"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v = stats(&json);
    for core in v["cores"].as_array().unwrap() {
        if core["iowq_workers"].is_null() {
            skip(
                "iowq_worker_cap_reaches_the_kernel",
                "the kernel does not report io-wq caps (before 5.15)",
            );
            return;
        }
        assert_eq!(core["iowq_workers"], serde_json::json!([3, 3]), "{v}");
    }
}

#[test]
fn contradictory_engine_flags_are_usage_errors() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    let dst = s.path().join("dst");
    for bad in [
        &["--reflink=always", "--copy-method=uring"][..],
        &["--reflink=always", "--copy-method=copy-file-range"],
        &["--reflink=never", "--copy-method=copy-file-range"],
        &["--buffer-size=1K"],
        &["--buffer-size=1G"],
        &["--buffer-size=12Q"],
        &["--queue-depth=0"],
        &["--files-in-flight=0"],
        &["--inline-max=1G"],
    ] {
        let mut args: Vec<&OsStr> = vec![OsStr::new("-a")];
        args.extend(bad.iter().map(OsStr::new));
        args.push(src.as_os_str());
        args.push(dst.as_os_str());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 1, "{bad:?}: {err}");
        assert!(err.starts_with("arsync: "), "{bad:?}: {err}");
        assert!(!dst.exists(), "{bad:?} wrote the destination");
    }
    // Sizes as rsync reads them: K = 1024, KB = 1000.
    let json = s.path().join("s.json");
    let json_arg = json.display().to_string();
    let out = copy_contents(
        &[
            "-a",
            "--buffer-size=8KB",
            "--inline-max=1K",
            "--stats-json",
            &json_arg,
        ],
        &src,
        &dst,
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v = stats(&json);
    assert_eq!(v["settings"]["buffer_size"], 8000, "{v}");
    assert_eq!(v["settings"]["inline_max"], 1024, "{v}");
}

/// Regression: with `--copy-method=uring`, a large file streaming while several small files of a
/// subdirectory waited for a pipeline slot lost a wake-up and the run never ended.
#[test]
fn uring_pipeline_slots_never_hang() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("big"), &content(3, 24 << 20));
    for i in 0..8 {
        write(
            &src.join(format!("sub/s{i}")),
            &content(i, 100 + i as usize),
        );
    }
    for threads in ["--threads=1", "--threads=2"] {
        let dst = s.path().join(threads);
        let mut child = arsync()
            .args(["-a", "--copy-method=uring", threads])
            .arg(format!("{}/", src.display()))
            .arg(&dst)
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child, 60, threads);
        assert!(status.success(), "{threads}: {status}");
        assert_same(&src, &dst, treediff::Check::archive());
    }
}

/// Pages of `p` in the page cache (mincore over a read-only mapping).
fn resident_pages(p: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped before return; mincore
    // writes one byte per page into `vec`, which has exactly that many.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        assert_eq!(libc::mincore(m, len, vec.as_mut_ptr()), 0);
        libc::munmap(m, len);
    }
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// Drop `p`'s pages from the page cache.
fn evict(p: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(p).unwrap();
    // SAFETY: fdatasync/posix_fadvise on a valid fd.
    unsafe {
        libc::fdatasync(f.as_raw_fd());
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Sum of one per-core counter of a stats JSON document.
fn per_core_sum(v: &serde_json::Value, key: &str) -> u64 {
    v["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[key].as_u64().unwrap())
        .sum()
}

#[test]
fn cold_kernel_copies_leave_the_core_and_stay_exact() {
    let _cache = page_cache();
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    // A sparse file of three data extents far apart, and a plain file past --inline-max: both
    // go to copy_file_range (-S: extent by extent).
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.write_all_at(&content(1, 256 << 10), 0).unwrap();
        f.write_all_at(&content(2, 256 << 10), 32 << 20).unwrap();
        f.write_all_at(&content(3, 256 << 10), (64 << 20) - (256 << 10))
            .unwrap();
    }
    write(&src.join("plain"), &content(4, 3 << 20));
    // Six --split-chunk pieces: cold, copied on the pool piece by piece (never split across
    // the cores, where each would block in its reads).
    write(&src.join("big"), &content(5, 6 << 20));
    for f in ["sparse", "plain", "big"] {
        evict(&src.join(f));
    }
    if resident_pages(&src.join("plain")) > 0 || resident_pages(&src.join("sparse")) > 0 {
        skip(
            "cold_kernel_copies_leave_the_core_and_stay_exact",
            "this file system keeps the pages in memory (tmpfs?)",
        );
        return;
    }
    let copy = |dst: &str| {
        let json = s.path().join(format!("{dst}.json"));
        let j = json.display().to_string();
        let out = copy_contents(
            &["-aS", "--split-chunk=1M", "--stats-json", &j],
            &src,
            &s.path().join(dst),
        );
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_same(&src, &s.path().join(dst), treediff::Check::archive());
        stats(&json)
    };
    let v = copy("cold");
    assert_eq!(per_core_sum(&v, "kernel_copied_files"), 3, "{v}");
    assert_eq!(
        per_core_sum(&v, "offloaded_files"),
        3,
        "the cold copies stayed on the cores: {v}"
    );
    // sparse: its 768 KiB of data in one piece; plain: 3; big: 6.
    assert_eq!(per_core_sum(&v, "offloaded_pieces"), 10, "{v}");
    assert_eq!(per_core_sum(&v, "split_files"), 0, "{v}");
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(s.path().join("cold/sparse")).unwrap();
    assert!(
        m.blocks() * 512 < 2 << 20,
        "sparse allocates {} bytes",
        m.blocks() * 512
    );
    // Warm now: every copy runs on its core, -S's in one pass (read, checked for zeros,
    // written: nothing read back).
    let v = copy("warm");
    assert_eq!(per_core_sum(&v, "kernel_copied_files"), 0, "{v}");
    assert_eq!(per_core_sum(&v, "inline_files"), 3, "{v}");
    assert_eq!(per_core_sum(&v, "offloaded_files"), 0, "{v}");
    assert_eq!(per_core_sum(&v, "offloaded_pieces"), 0, "{v}");
    // Whether a file is cached is asked once per file: a cold file's first ask starts the
    // kernel's readahead at that byte, so a second ask (the one-pass -S check, then the cold-copy
    // check) could find it read in and copy the cold file on the core (it did, now and then:
    // offloaded_files 2 of 3). Seen in the system calls: one one-byte RWF_NOWAIT read a file.
    if !have("strace") {
        skip(
            "cold_kernel_copies_leave_the_core_and_stay_exact",
            "strace is not installed: the probes a file are not counted",
        );
        return;
    }
    for f in ["sparse", "plain", "big"] {
        evict(&src.join(f));
    }
    let traced = s.path().join("traced");
    let calls = traced_run(
        "preadv2",
        s.path(),
        [
            "-aS".as_ref(),
            "--split-chunk=1M".as_ref(),
            format!("{}/", src.display()).as_ref(),
            traced.as_os_str(),
        ],
    );
    assert_same(&src, &traced, treediff::Check::archive());
    let probes = calls
        .lines()
        .filter(|l| l.contains("iov_len=1}") && l.contains("RWF_NOWAIT"))
        .count();
    assert_eq!(probes, 3, "{calls}");
}

/// A warm large file is not split across the cores by default where the destination's file
/// system takes one file's writes one at a time (ext4, XFS, btrfs, tmpfs, F2FS, bcachefs: the
/// other cores would wait on its lock; session 36 measured 1.6–1.8× the CPU for the same time);
/// an explicit `--split-chunk` still splits it there. Before, the default split it everywhere.
#[test]
fn a_warm_large_file_is_split_by_default_only_where_writes_to_it_can_run_at_once() {
    let _cache = page_cache();
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    // Twice the default --split-chunk (64M) and a byte.
    let data = content(36, (128 << 20) + 1);
    write(&src.join("huge"), &data);
    let serial = {
        let mut sf = std::mem::MaybeUninit::<libc::statfs>::uninit();
        let c = std::ffi::CString::new(s.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and an out-pointer of the right type.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), sf.as_mut_ptr()) }, 0);
        // SAFETY: statfs succeeded, so it filled the struct.
        #[allow(clippy::unnecessary_cast)]
        let t = unsafe { sf.assume_init() }.f_type as i64;
        [
            0xEF53,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0xF2F5_2010,
            0xCA45_1A4E,
        ]
        .contains(&t)
    };
    if !serial {
        skip(
            "a_warm_large_file_is_split_by_default_only_where_writes_to_it_can_run_at_once",
            "the scratch directory is on none of the file systems that write one file at a time",
        );
        return;
    }
    for (name, flags, splits) in [
        ("default", vec![], 0),
        ("forced", vec!["--split-chunk=64M"], 1),
    ] {
        if resident_pages(&src.join("huge")) < data.len().div_ceil(4096) {
            skip(
                "a_warm_large_file_is_split_by_default_only_where_writes_to_it_can_run_at_once",
                "the source left the page cache (memory pressure): a cold copy is never split",
            );
            return;
        }
        let json = s.path().join(format!("{name}.json"));
        let j = json.display().to_string();
        let mut args = vec!["-a", "--threads=2", "--stats-json", &j];
        args.extend(flags);
        let dst = s.path().join(name);
        let out = copy_contents(&args, &src, &dst);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read(dst.join("huge")).unwrap(), data, "{name}");
        let v = stats(&json);
        assert_eq!(
            per_core_sum(&v, "offloaded_files"),
            0,
            "{name}: not warm: {v}"
        );
        assert_eq!(per_core_sum(&v, "kernel_copied_files"), 1, "{name}: {v}");
        assert_eq!(per_core_sum(&v, "split_files"), splits, "{name}: {v}");
        fs::remove_dir_all(&dst).unwrap();
    }
}

/// While the cold-copy pool copies a cold large file, its core goes on to take other large
/// files (each to the pool too): before, a core held one large file at a time, so two cores kept
/// two of the pool's four threads busy.
#[test]
fn a_core_keeps_several_cold_large_files_on_the_pool() {
    let _cache = page_cache();
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..6u64 {
        write(&src.join(format!("f{i}")), &content(10 + i, 16 << 20));
    }
    for i in 0..6 {
        evict(&src.join(format!("f{i}")));
    }
    if resident_pages(&src.join("f0")) > 0 {
        skip(
            "a_core_keeps_several_cold_large_files_on_the_pool",
            "this file system keeps the pages in memory (tmpfs?)",
        );
        return;
    }
    let json = s.path().join("s.json");
    let j = json.display().to_string();
    let out = copy_contents(
        &["-a", "--threads=2", "--split-chunk=0", "--stats-json", &j],
        &src,
        &s.path().join("dst"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &s.path().join("dst"), treediff::Check::archive());
    let v = stats(&json);
    assert_eq!(per_core_sum(&v, "offloaded_files"), 6, "{v}");
    let peak = v["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offloaded_peak"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        peak >= 2,
        "no core had more than one cold file on the pool: {v}"
    );
}

#[test]
fn direct_io_bypasses_the_page_cache_and_is_exact() {
    let _cache = page_cache();
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for (name, len) in [
        ("big", 16usize << 20),
        ("odd", 300_001),
        ("exact", 1 << 20),
        ("small", 100),
        ("empty", 0),
    ] {
        write(&src.join(name), &content(len as u64, len));
    }
    for (i, flags) in [
        vec!["--direct"],
        vec!["--direct", "--buffer-size=64K", "--queue-depth=3"],
    ]
    .into_iter()
    .enumerate()
    {
        for f in ["big", "odd", "exact"] {
            evict(&src.join(f));
        }
        let before = resident_pages(&src.join("big"));
        let dst = s.path().join(format!("dst{i}"));
        let json = s.path().join(format!("d{i}.json"));
        let j = json.display().to_string();
        let mut args = vec!["-a", "--stats-json", &j];
        args.extend(flags.iter().copied());
        let out = copy_contents(&args, &src, &dst);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["copy_methods"]["uring"], 3, "{v}");
        // Neither side went through the page cache: the source stays out of it, and the
        // destination was never in it.
        if String::from_utf8_lossy(&out.stderr).contains("refuses O_DIRECT") {
            skip(
                "direct_io_bypasses_the_page_cache_and_is_exact",
                "this file system has no O_DIRECT",
            );
        } else {
            assert!(
                resident_pages(&src.join("big")) <= before + 16,
                "the source was read through the page cache"
            );
            assert!(
                resident_pages(&dst.join("big")) <= 16,
                "the destination was written through the page cache"
            );
        }
        assert_same(&src, &dst, treediff::Check::archive());
    }
    // Without --direct the same copy fills the page cache (so the check above can fail).
    evict(&src.join("big"));
    let dst = s.path().join("buffered");
    assert_eq!(
        code(&copy_contents(&["-a", "--copy-method=uring"], &src, &dst)),
        0
    );
    assert!(resident_pages(&src.join("big")) > 1000);
    let out = copy_contents(
        &["-a", "--direct", "--buffer-size=6000"],
        &src,
        &s.path().join("x"),
    );
    assert_eq!(
        code(&out),
        1,
        "an unaligned buffer with --direct is a usage error"
    );
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(r, 0, "sched_getaffinity");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: reads one bit of a live set, below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The CPU of each core thread, as `--stats-json` reports it.
fn core_cpus(json: &Path) -> Vec<Option<u64>> {
    stats(json)["cores"]
        .as_array()
        .expect("cores[]")
        .iter()
        .map(|c| c["cpu"].as_u64())
        .collect()
}

/// Concurrent runs on one host spread over the CPUs: a second one-thread run beside a running
/// one pins itself to another CPU (both used to take the first allowed CPU and share it while the
/// others idled), a run with a thread per CPU takes the free ones first, and a CPU is free again
/// once the run that held it has ended. (A test hook holds the first run mid-copy; the claims of
/// these runs are kept apart from other tests' runs by a namespace of their own.)
#[test]
fn concurrent_runs_pin_to_different_cpus() {
    use std::io::{BufRead, Read};
    let test = "concurrent_runs_pin_to_different_cpus";
    if !has_hooks() {
        skip(test, "binary built without --features arsync/test-hooks");
        return;
    }
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        skip(test, "this process may run on one CPU only");
        return;
    }
    let want = |ids: &[usize]| ids.iter().map(|&c| Some(c as u64)).collect::<Vec<_>>();
    let namespace = format!("arsync-test-{}", std::process::id());
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        write(&src.join(format!("f{i}")), &content(i, 3000));
    }
    write(&src.join("held"), b"held");
    let run = |name: &str, flags: &[&str]| {
        let json = s.path().join(format!("{name}.json"));
        let mut c = arsync();
        c.env("ARSYNC_TEST_CPU_CLAIMS", &namespace)
            .args(["-a", "--stats-json"])
            .arg(&json)
            .args(flags)
            .arg(format!("{}/", src.display()))
            .arg(s.path().join(name));
        (c, json)
    };

    // A: one thread, held mid-copy.
    let (mut a, a_json) = run("a", &["--threads=1"]);
    // (Killed if the test fails while it is held: no orphan outlives the test.)
    let mut a = Reap(
        a.env("ARSYNC_TEST_HOOK", "before-open=held:hold")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(a.0.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("held: hold") {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "A ended: {seen}");
        seen.push_str(&line);
    }
    // B: one thread beside A, on the next CPU.
    let (mut b, b_json) = run("b", &["--threads=1"]);
    assert_eq!(code(&b.output().unwrap()), 0);
    assert_eq!(core_cpus(&b_json), want(&cpus[1..2]));
    assert_same(&src, &s.path().join("b"), treediff::Check::archive());
    // C: a thread per CPU beside A: the free CPUs first, then A's.
    let (mut c, c_json) = run("c", &[&format!("--threads={}", cpus.len())]);
    assert_eq!(code(&c.output().unwrap()), 0);
    let mut order = cpus[1..].to_vec();
    order.push(cpus[0]);
    assert_eq!(core_cpus(&c_json), want(&order));
    // A stops; it held the first CPU.
    // SAFETY: a signal to the child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(a.0.id() as i32, libc::SIGINT) }, 0);
    stderr.read_to_string(&mut seen).unwrap();
    assert_eq!(a.0.wait().unwrap().code(), Some(20), "{seen}");
    assert_eq!(core_cpus(&a_json), want(&cpus[..1]));
    // D: with A gone, its CPU is free again.
    let (mut d, d_json) = run("d", &["--threads=1"]);
    assert_eq!(code(&d.output().unwrap()), 0);
    assert_eq!(core_cpus(&d_json), want(&cpus[..1]));
    // --no-pin: no CPU.
    let (mut e, e_json) = run("e", &["--threads=2", "--no-pin"]);
    assert_eq!(code(&e.output().unwrap()), 0);
    assert_eq!(core_cpus(&e_json), [None, None]);
}

/// `--bwlimit`: the copy is exact (a sparse file keeps its holes, with `-S`) and the data moves
/// no faster than the rate: N bytes at R bytes a second take at least (N - one chunk) / R (a
/// lower bound only: a loaded machine makes it slower, never faster). Before, `--bwlimit` was a
/// usage error. Bad rates are usage errors that write nothing, as in rsync.
#[test]
fn bwlimit_holds_the_rate_and_the_copy_is_exact() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("small")).unwrap();
    write(&src.join("big"), &content(3, 3 << 20));
    for i in 0..100 {
        write(&src.join(format!("small/f{i}")), &content(i, 4000));
    }
    let sparse = src.join("sparse");
    write(&sparse, &content(9, 4096));
    let f = fs::OpenOptions::new().write(true).open(&sparse).unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    let data: u64 = (3 << 20) + 100 * 4000 + 4096;
    let rate: u64 = 4 << 20;
    let dst = s.path().join("dst");
    let start = std::time::Instant::now();
    let out = copy_contents(&["-aS", "--bwlimit=4M"], &src, &dst);
    let took = start.elapsed();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &dst, treediff::Check::archive());
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata(dst.join("sparse")).unwrap().blocks() * 512 < 1 << 20,
        "the holes were written"
    );
    let chunk = rate / 10;
    let least = std::time::Duration::from_secs_f64((data - chunk) as f64 / rate as f64);
    assert!(
        took >= least,
        "{data} bytes at {rate} B/s took {took:?}, less than {least:?}"
    );
    for bad in ["--bwlimit=100b", "--bwlimit=fast", "--bwlimit=-1"] {
        let d = s.path().join("never");
        let out = copy_contents(&["-a", bad], &src, &d);
        assert_eq!(code(&out), 1, "{bad}");
        assert!(!d.exists(), "{bad} wrote");
    }
    // 0 is no limit.
    let out = copy_contents(&["-a", "--bwlimit=0"], &src, &s.path().join("free"));
    assert_eq!(code(&out), 0);
    assert_same(&src, &s.path().join("free"), treediff::Check::archive());
}

/// `-c` hashes each source file through the ring on the descriptor the copy holds, shared with
/// the reads in flight: no `dup` (and its `close`) per file compared; `--verify` likewise. Seen in the system calls of
/// a re-sync of an up-to-date tree, with one file whose content changed under the same size and
/// mtime, which only the hash finds.
#[test]
fn checksum_compares_files_without_a_dup_each() {
    let name = "checksum_compares_files_without_a_dup_each";
    if !have("strace") {
        skip(name, "strace is not installed");
        return;
    }
    let s = Scratch::new();
    let (src, dst) = (s.path().join("src"), s.path().join("dst"));
    let files = 200;
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
    }
    for i in 0..files {
        write(
            &src.join(format!("d{}/f{i}", i % 4)),
            &content(i, 100 + 37 * i as usize),
        );
    }
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let changed = dst.join("d1/f5");
    let mut data = fs::read(&changed).unwrap();
    data[0] ^= 0xff;
    let m = fs::metadata(&changed).unwrap();
    fs::write(&changed, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(m.modified().unwrap())
        .unwrap();
    let from = format!("{}/", src.display());
    let calls = traced_run(
        "fcntl",
        s.path(),
        ["-ac".as_ref(), from.as_ref(), dst.as_os_str()],
    );
    assert_same(&src, &dst, treediff::Check::archive());
    let dups = calls.lines().filter(|l| l.contains("F_DUPFD")).count();
    // (The descriptor table's reservation is one or two dups a run, not one a file.)
    assert!(dups <= 4, "{dups} dups for {files} files:\n{calls}");
    // --verify reads each written file back against its source the same way: the source's
    // descriptor shared, only the new file's duplicated (two dups a file before).
    let (json, verified) = (s.path().join("verify.json"), s.path().join("verified"));
    let calls = traced_run(
        "fcntl",
        s.path(),
        [
            "-a".as_ref(),
            "--verify".as_ref(),
            "--stats-json".as_ref(),
            json.as_os_str(),
            from.as_ref(),
            verified.as_os_str(),
        ],
    );
    assert_same(&src, &verified, treediff::Check::archive());
    assert_eq!(stats(&json)["verified"].as_u64(), Some(files));
    let dups = calls.lines().filter(|l| l.contains("F_DUPFD")).count();
    assert!(
        dups <= files as usize + 4,
        "{dups} dups for {files} files verified:\n{calls}"
    );
}

/// `--partial` into a new destination: each file is made under its partial name in its
/// directory and renamed into place, with no look for a partial file to resume first (a
/// directory this run made holds none) and no fd of the directory opened for each file. Seen in
/// the system calls; the copy is exact and leaves no partial name behind.
#[test]
fn partial_into_a_new_destination_looks_for_nothing_to_resume() {
    let name = "partial_into_a_new_destination_looks_for_nothing_to_resume";
    if !have("strace") {
        skip(name, "strace is not installed");
        return;
    }
    let s = Scratch::new();
    let (src, dst) = (s.path().join("src"), s.path().join("dst"));
    let files = 60;
    for d in 0..3 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
    }
    for i in 0..files {
        write(
            &src.join(format!("d{}/f{i}", i % 3)),
            &content(i, 10 + 101 * i as usize),
        );
    }
    let from = format!("{}/", src.display());
    let calls = traced_run(
        "openat,renameat,renameat2",
        s.path(),
        [
            "-a".as_ref(),
            "--partial".as_ref(),
            from.as_ref(),
            dst.as_os_str(),
        ],
    );
    assert_same(&src, &dst, treediff::Check::archive());
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    let lines: Vec<&str> = calls.lines().collect();
    let count = |f: &dyn Fn(&str) -> bool| lines.iter().filter(|l| f(l)).count();
    // Each file: created under its partial name, renamed to its own.
    let created = count(&|l| l.contains("~arsync-partial\"") && l.contains("O_CREAT"));
    let renamed = count(&|l| l.contains("renameat") && l.contains("~arsync-partial\""));
    assert_eq!(
        (created, renamed),
        (files as usize, files as usize),
        "{calls}"
    );
    let probed = count(&|l| {
        l.contains("openat(") && l.contains("~arsync-partial\"") && !l.contains("O_CREAT")
    });
    assert_eq!(probed, 0, "looked for partial files to resume:\n{calls}");
    let reopened = count(&|l| l.contains("\".\", O_RDONLY"));
    assert!(
        reopened < files as usize / 2,
        "{reopened} opens of \".\" for {files} files:\n{calls}"
    );
}
