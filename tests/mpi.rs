//! The multi-node mode (`--mpi`) under Open MPI's `mpirun` on this one machine
//! (`--oversubscribe`): a copy by 2 and 3 ranks equals a single-process copy, hard links across
//! directories stay links, and a skewed tree is shared between the ranks. Skipped, with the
//! reason, when `mpirun` is missing or the binary was built without `--features mpi`.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn mpi_or_skip(test: &str) -> bool {
    if !have("mpirun") {
        skip(
            test,
            "mpirun not installed (apt-get install openmpi-bin libopenmpi-dev)",
        );
        return false;
    }
    let out = arsync().arg("--version").output().unwrap();
    if !String::from_utf8_lossy(&out.stdout).contains("mpi") {
        skip(test, "binary built without --features mpi");
        return false;
    }
    true
}

/// `mpirun -np N arsync --mpi FLAGS SRC/ DST`.
fn mpirun(np: usize, flags: &[&str], src: &Path, dst: &Path) -> Output {
    Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &np.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_arsync"))
        .arg("--mpi")
        .args(flags)
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .output()
        .expect("run mpirun")
}

fn ok(o: &Output) {
    assert_eq!(
        code(o),
        0,
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A tree with everything `-aH` keeps, hard links across directories, and files large enough to
/// be split (with `--split-chunk=1M`).
fn fidelity_tree(src: &Path) {
    build_tree(
        src,
        &TreeOpts {
            root_only: is_root(),
            wide: 300,
            depth: 12,
        },
    );
    for d in 0..6 {
        let dir = src.join(format!("spread{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            write(
                &dir.join(format!("f{f}")),
                &content(d * 100 + f, 100 + 97 * f as usize),
            );
        }
    }
    write(&src.join("spread0/big"), &content(9, (5 << 20) + 777));
    fs::create_dir_all(src.join("links/x")).unwrap();
    fs::create_dir_all(src.join("links/y")).unwrap();
    write(&src.join("links/x/one"), &content(1, 5000));
    fs::hard_link(src.join("links/x/one"), src.join("links/y/one-again")).unwrap();
    fs::hard_link(src.join("links/x/one"), src.join("spread3/one-more")).unwrap();
    write(&src.join("links/x/bigl"), &content(2, 3 << 20));
    fs::hard_link(src.join("links/x/bigl"), src.join("spread5/bigl")).unwrap();
    // Extended attributes on a small file, a large (split) one and a directory.
    setxattr(&src.join("spread1/f3"), "user.note", b"small");
    setxattr(&src.join("spread0/big"), "user.note", &[0, 1, 2, 255]);
    setxattr(&src.join("spread4"), "user.dir", b"d");
    // Directory times last: adding the links changed them.
    for (i, d) in [
        "links/x", "links/y", "links", "spread0", "spread3", "spread5", ".",
    ]
    .iter()
    .enumerate()
    {
        set_times(&src.join(d), 1_650_000_000 + i as i64, 123_456_789);
    }
}

#[test]
fn ranks_copy_exactly_what_one_process_copies() {
    if !mpi_or_skip("ranks_copy_exactly_what_one_process_copies") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fidelity_tree(&src);
    let single = t.path().join("single");
    ok(&copy_contents(&["-aHX"], &src, &single));
    let mut check = treediff::Check::archive();
    check.hardlinks = true;
    check.xattrs = true;
    for np in [2, 3] {
        let dst = t.path().join(format!("np{np}"));
        let out = mpirun(np, &["-aHX", "--split-chunk=1M"], &src, &dst);
        ok(&out);
        assert_same(&src, &dst, check);
        assert_same(&single, &dst, check);
        // A second run finds everything done and changes nothing.
        let again = mpirun(np, &["-aHX", "--split-chunk=1M", "--stats"], &src, &dst);
        ok(&again);
        let text = String::from_utf8_lossy(&again.stdout);
        assert!(
            text.contains("Number of regular files transferred: 0"),
            "{text}"
        );
        assert_same(&src, &dst, check);
    }
}

#[test]
fn a_skewed_tree_is_shared_between_ranks() {
    if !mpi_or_skip("a_skewed_tree_is_shared_between_ranks") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    // One directory holds 90% of the bytes (6 files of 5.5 MiB: five 1 MiB chunks and a short
    // one each); the rest is 20 directories of small files.
    fs::create_dir_all(src.join("heavy")).unwrap();
    for f in 0..6 {
        write(
            &src.join(format!("heavy/h{f}")),
            &content(f, (11 << 20) / 2),
        );
    }
    for d in 0..20 {
        let dir = src.join(format!("light{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..18 {
            write(
                &dir.join(format!("f{f}")),
                &content(1000 + d * 20 + f, 10_000),
            );
        }
    }
    for np in [2usize, 3] {
        let dst = t.path().join(format!("np{np}"));
        let json = t.path().join(format!("np{np}.json"));
        let json_arg = format!("--stats-json={}", json.display());
        let out = mpirun(
            np,
            &["-a", "--split-chunk=1M", "--info=progress2", &json_arg],
            &src,
            &dst,
        );
        ok(&out);
        // Rank 0 prints the merged progress; its last line has every rank's totals.
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .rfind(|l| l.contains("xfr#"))
            .unwrap_or_default();
        assert!(
            last.contains("100%") && last.contains("(xfr#366, to-chk=0/366)"),
            "{text}"
        );
        assert!(last.ends_with(&format!("[{np} ranks]")), "{text}");
        assert_same(&src, &dst, treediff::Check::archive());
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        let ranks = v["mpi"]["ranks"].as_array().unwrap();
        assert_eq!(ranks.len(), np, "{v}");
        let bytes: Vec<u64> = ranks.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
        assert!(
            bytes.iter().all(|&b| b > 0),
            "a rank copied nothing: {bytes:?}"
        );
        let (lo, hi) = (*bytes.iter().min().unwrap(), *bytes.iter().max().unwrap());
        assert!(hi <= 2 * lo, "per-rank bytes more than 2x apart: {bytes:?}");
        assert_eq!(
            bytes.iter().sum::<u64>(),
            v["bytes"].as_u64().unwrap(),
            "{v}"
        );
        assert!(v["mpi"]["steals"].as_u64().unwrap() > 0, "no steal: {v}");
        assert_eq!(v["counts"]["files"].as_u64().unwrap(), 6 + 360, "{v}");
        // The chunks are dealt by bytes: no two ranks differ by more than one chunk (dealt
        // round-robin, one rank got every short last chunk).
        let chunk_bytes: Vec<u64> = ranks
            .iter()
            .map(|r| r["chunk_bytes"].as_u64().unwrap())
            .collect();
        assert_eq!(chunk_bytes.iter().sum::<u64>(), 6 * (11 << 20) / 2, "{v}");
        let spread = chunk_bytes.iter().max().unwrap() - chunk_bytes.iter().min().unwrap();
        assert!(spread <= 1 << 20, "chunk bytes per rank: {chunk_bytes:?}");
    }
}

#[test]
fn a_rank_that_dies_fails_the_run_and_a_rerun_completes_it() {
    let test = "a_rank_that_dies_fails_the_run_and_a_rerun_completes_it";
    if !mpi_or_skip(test) {
        return;
    }
    if !has_hooks() {
        skip(test, "binary built without --features arsync/test-hooks");
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fidelity_tree(&src);
    let flags = ["-aH", "--split-chunk=1M"];
    // One rank dies after the walk; then every rank dies with the large files staged (named
    // temporaries in the destination, nothing copied into them).
    for (hook, says, temps) in [
        ("mpi-rank-dies=1", "rank 1 dies", false),
        ("mpi-dies-staged", "dies after staging", true),
    ] {
        let dst = t.path().join(hook);
        let out = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .env("ARSYNC_TEST_HOOK", hook)
            .arg(env!("CARGO_BIN_EXE_arsync"))
            .arg("--mpi")
            .args(flags)
            .arg(format!("{}/", src.display()))
            .arg(&dst)
            .output()
            .unwrap();
        assert_ne!(code(&out), 0, "{hook}: a dead rank went unnoticed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{hook}: {err}");
        // The large file waits for phase 2: the copy is incomplete.
        assert!(!dst.join("spread0/big").exists(), "{hook}");
        assert_eq!(
            !temporaries(&dst).is_empty(),
            temps,
            "{hook}: {:?}",
            temporaries(&dst)
        );
        // A temporary is kept while the process named in it lives (mpirun may return before the
        // dead ranks are reaped): wait, bounded, until they are gone.
        for tmp in temporaries(&dst) {
            let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
            let pid = u32::from_str_radix(name.split('-').nth(1).unwrap(), 16).unwrap();
            let start = std::time::Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(60),
                    "rank {pid} still there a minute after mpirun returned"
                );
                std::thread::yield_now();
            }
        }
        let again = mpirun(2, &flags, &src, &dst);
        ok(&again);
        let mut check = treediff::Check::archive();
        check.hardlinks = true;
        assert_same(&src, &dst, check);
        assert!(
            temporaries(&dst).is_empty(),
            "{hook}: {:?}",
            temporaries(&dst)
        );
    }
}

/// Regression: a directory the engine gave away for a waiting rank went to the giver's own
/// runner when the giver's piece had already ended, so on a tree whose root holds one directory
/// rank 1 could end up with nothing.
#[test]
fn a_tree_with_one_top_directory_reaches_the_waiting_rank() {
    if !mpi_or_skip("a_tree_with_one_top_directory_reaches_the_waiting_rank") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    for d in 0..8 {
        let dir = src.join(format!("only/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            write(&dir.join(format!("f{f}")), &content(d * 30 + f, 2000));
        }
    }
    for rep in 0..3 {
        let dst = t.path().join(format!("dst{rep}"));
        let json = t.path().join(format!("s{rep}.json"));
        let json_arg = format!("--stats-json={}", json.display());
        // With the test hooks, the directories the engine gives away reach the main thread
        // only once the piece has ended (the ordering that exposed the bug).
        let out = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .env("ARSYNC_TEST_HOOK", "mpi-outbox-after-piece")
            .arg(env!("CARGO_BIN_EXE_arsync"))
            .args(["--mpi", "-a", "--threads=1", "--no-pin", &json_arg])
            .arg(format!("{}/", src.display()))
            .arg(&dst)
            .output()
            .unwrap();
        ok(&out);
        assert_same(&src, &dst, treediff::Check::archive());
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        let ranks = v["mpi"]["ranks"].as_array().unwrap();
        let files: Vec<u64> = ranks.iter().map(|r| r["files"].as_u64().unwrap()).collect();
        // Rank 1's first request is held by rank 0 before the root starts, so the one top
        // directory is given to rank 1 whatever the timing: that is the regression. Whether
        // rank 0 then steals some of it back depends on how soon its next request reaches
        // rank 1's engine (before or after it has entered all eight directories), which is
        // scheduling, not correctness: CI once saw [0, 240] on a loaded host.
        assert!(
            files[1] > 0 && ranks[1]["steals"].as_u64().unwrap() >= 1,
            "rep {rep}: the waiting rank got nothing: {v}"
        );
        assert_eq!(files.iter().sum::<u64>(), 240, "rep {rep}: {v}");
    }
}

#[test]
fn delete_reaches_directories_that_other_ranks_copied() {
    if !mpi_or_skip("delete_reaches_directories_that_other_ranks_copied") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    for d in 0..6 {
        fs::create_dir_all(src.join(format!("d{d}/sub"))).unwrap();
        for f in 0..3 {
            write(&src.join(format!("d{d}/sub/f{f}")), b"x");
        }
    }
    let dst = t.path().join("dst");
    ok(&copy_contents(&["-a"], &src, &dst));
    for d in 0..6 {
        write(&dst.join(format!("d{d}/extra")), b"old");
        write(&dst.join(format!("d{d}/sub/extra")), b"old");
        fs::create_dir_all(dst.join(format!("d{d}/sub/gone/deeper"))).unwrap();
    }
    let json = t.path().join("s.json");
    let json_arg = format!("--stats-json={}", json.display());
    ok(&mpirun(3, &["-a", "--delete", &json_arg], &src, &dst));
    assert_same(&src, &dst, treediff::Check::archive());
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["deleted"].as_u64().unwrap(), 6 * 4, "{v}");
    assert!(v["mpi"]["steals"].as_u64().unwrap() > 0, "{v}");
}
