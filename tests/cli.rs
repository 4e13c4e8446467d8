//! The command line as a user meets it: help and version, usage errors (exit 1, nothing
//! written), rsync's path forms (`--mkpath` included), errors with path and OS error and rsync's
//! exit codes, `-v`/`-q`.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::process::Output;

use common::*;

fn s(x: &str) -> &OsStr {
    OsStr::new(x)
}

#[test]
fn help_lists_flags_with_defaults() {
    let out = run(&[s("--help")]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--archive",
        "--recursive",
        "--links",
        "--perms",
        "--times",
        "--group",
        "--owner",
        "--atimes",
        "--open-noatime",
        "--threads",
        "--no-pin",
        "--verbose",
        "--quiet",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    assert!(text.contains("[default:"), "--help gives no defaults");
}

#[test]
fn version_reports_io_uring() {
    let out = run(&[s("--version")]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("arsync {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("io_uring:"), "{text}");
}

/// `arsync … | head`: stdout closed before arsync writes to it. The output stops, the run does
/// not (rsync goes on too): the copy is complete and the exit code is the run's. Before, the first
/// line `--version` or `--stats` printed panicked (exit 101), after a `-v` copy had finished.
/// The writing end of a pipe whose reading end is closed (`… | head` after head has quit).
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer
}

#[test]
fn a_closed_stdout_stops_the_output_not_the_run() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..200 {
        write(&src.join(format!("f{i}")), format!("file {i}").as_bytes());
    }
    let status = arsync()
        .arg("--version")
        .stdout(closed_pipe())
        .status()
        .expect("run arsync");
    assert_eq!(status.code(), Some(0), "--version into a closed pipe");
    for (i, flags) in [&["-av"][..], &["-a", "--stats"], &["-av", "--stats", "-i"]]
        .iter()
        .enumerate()
    {
        let dst = t.path().join(format!("dst{i}"));
        let out = arsync()
            .args(*flags)
            .arg(format!("{}/", src.display()))
            .arg(&dst)
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run arsync");
        assert_eq!(
            code(&out),
            0,
            "{flags:?} into a closed pipe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&src, &dst, treediff::Check::archive());
    }
}

#[test]
fn a_closed_stderr_ends_the_run_with_rsyncs_code_13_not_a_panic() {
    // A run whose error messages cannot be written (stderr a closed pipe, `2>&1 | head`)
    // panicked on the last line ("arsync error: … (code 23)") and exited 101. rsync ends with 13
    // ("errors with program diagnostics"); arsync does too, after copying what it can.
    if !require_rsync("a_closed_stderr_ends_the_run_with_rsyncs_code_13_not_a_panic") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"file");
    let missing = t.path().join("missing");
    for tool in ["arsync", "rsync"] {
        let dst = t.path().join(format!("dst-{tool}"));
        let status = tool_command(tool)
            .arg("-a")
            .arg(&src)
            .arg(&missing)
            .arg(&dst)
            .stderr(closed_pipe())
            .status()
            .expect("run");
        assert_eq!(status.code(), Some(13), "{tool}");
    }
    // (arsync goes on: the source that exists is copied.)
    assert_eq!(
        fs::read(t.path().join("dst-arsync/src/f")).unwrap(),
        b"file"
    );
    // Nothing to report: 0, as before.
    let dst = t.path().join("dst-ok");
    let status = arsync()
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .stderr(closed_pipe())
        .status()
        .expect("run arsync");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn usage_errors_exit_1_and_write_nothing() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    let dst = t.path().join("dst");
    for args in [
        vec![s("--bogus-flag"), src.as_os_str(), dst.as_os_str()],
        // (One path alone is a listing, as in rsync: `list_only_prints_what_rsync_prints`.)
        vec![s("-a")],
        vec![s("--threads"), s("lots"), src.as_os_str(), dst.as_os_str()],
        vec![
            s("-a"),
            s("--threads"),
            s("999999"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        // As rsync: a file written in place cannot wait for the end of the run.
        vec![
            s("-a"),
            s("--inplace"),
            s("--delay-updates"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        // As rsync: an appended file is written in place, never staged.
        vec![
            s("-a"),
            s("--append"),
            s("--partial-dir=.p"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        vec![
            s("-a"),
            s("--append-verify"),
            s("--delay-updates"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        // Each rank of an MPI run ends on its own.
        vec![
            s("-a"),
            s("--mpi"),
            s("--delay-updates"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        vec![
            s("-a"),
            s("--mpi"),
            s("--append"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
    ] {
        let out = run(&args);
        assert_eq!(
            code(&out),
            1,
            "args {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines()
                .next()
                .is_some_and(|l| l.starts_with("arsync: ")),
            "{err}"
        );
        assert!(!dst.exists(), "a usage error wrote {}", dst.display());
    }
}

#[test]
fn missing_source_is_reported_others_copied_exit_23() {
    let t = Scratch::new();
    let a = t.path().join("a");
    write(&a, b"alpha");
    let b = t.path().join("b");
    write(&b, b"beta");
    let missing = t.path().join("nope");
    let dst = t.path().join("dst");
    let out = run(&[
        s("-a"),
        missing.as_os_str(),
        a.as_os_str(),
        b.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code(&out), 23);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing.display().to_string())
            && err.contains("No such file or directory (2)"),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("a")).unwrap(), b"alpha");
    assert_eq!(fs::read(dst.join("b")).unwrap(), b"beta");
    // With only one source left, rsync makes DEST that file; so do we.
    let dst2 = t.path().join("dst2");
    let out = run(&[
        s("-a"),
        missing.as_os_str(),
        a.as_os_str(),
        dst2.as_os_str(),
    ]);
    assert_eq!(code(&out), 23);
    assert_eq!(fs::read(&dst2).unwrap(), b"alpha");
}

#[test]
fn destination_parent_missing_exit_11() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    let dst = t.path().join("no/such/parent/dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[s("-a"), s(&src_arg), dst.as_os_str()]);
    assert_eq!(code(&out), 11, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mkdir"));
}

#[test]
fn file_to_missing_parent_exit_3() {
    let t = Scratch::new();
    let f = t.path().join("f");
    write(&f, b"x");
    let dst = t.path().join("nodir/x");
    let out = run(&[s("-a"), f.as_os_str(), dst.as_os_str()]);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unreadable_file_reported_rest_copied_exit_23() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("ok1"), b"1");
    write(&src.join("ok2"), b"2");
    write(&src.join("locked"), b"secret");
    chmod(&src.join("locked"), 0o000);
    let dst = t.path().join("dst");
    let src_arg = format!("{}/", src.display());
    let out = run(&[s("-a"), s(&src_arg), dst.as_os_str()]);
    if is_root() {
        // Root reads everything: the failing-entry case as root is the next test.
        assert_eq!(code(&out), 0);
    } else {
        assert_eq!(code(&out), 23);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("locked") && err.contains("Permission denied (13)"),
            "{err}"
        );
    }
    assert_eq!(fs::read(dst.join("ok1")).unwrap(), b"1");
    assert_eq!(fs::read(dst.join("ok2")).unwrap(), b"2");
}

#[test]
fn failing_entry_as_root_is_reported_and_counted() {
    for extra in [&[][..], &["--temp-names"][..]] {
        failing_entry_case(extra);
    }
}

fn failing_entry_case(extra: &[&str]) {
    // As root, make one destination entry impossible: a non-empty directory in the way of a
    // file (no --delete, no --force), which is then not copied, while its siblings are.
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"1");
    write(&src.join("blocked"), b"2");
    write(&src.join("c"), b"3");
    let dst = t.path().join("dst");
    fs::create_dir_all(dst.join("blocked/inside")).unwrap();
    let src_arg = format!("{}/", src.display());
    let mut args = vec![s("-a")];
    args.extend(extra.iter().map(|x| s(x)));
    args.push(s(&src_arg));
    args.push(dst.as_os_str());
    let out = run(&args);
    assert_eq!(code(&out), 23, "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("blocked") && err.contains("make way"), "{err}");
    assert_eq!(fs::read(dst.join("a")).unwrap(), b"1");
    assert_eq!(fs::read(dst.join("c")).unwrap(), b"3");
    // Nothing half-written is left under a temporary name.
    for e in fs::read_dir(&dst).unwrap() {
        let n = e.unwrap().file_name();
        assert!(
            !n.to_string_lossy().starts_with(".~arsync-"),
            "temp left: {n:?}"
        );
    }
}

#[test]
fn path_forms() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"file");
    write(&src.join("sub/g"), b"gee");
    // src copies the directory itself into DEST; DEST is created.
    let d1 = t.path().join("d1");
    assert_eq!(code(&run(&[s("-a"), src.as_os_str(), d1.as_os_str()])), 0);
    assert_eq!(fs::read(d1.join("src/sub/g")).unwrap(), b"gee");
    // src/ copies its contents.
    let d2 = t.path().join("d2");
    let src_slash = format!("{}/", src.display());
    assert_eq!(code(&run(&[s("-a"), s(&src_slash), d2.as_os_str()])), 0);
    assert_eq!(fs::read(d2.join("sub/g")).unwrap(), b"gee");
    // A file to a new file name.
    let d3 = t.path().join("renamed");
    assert_eq!(
        code(&run(&[s("-a"), src.join("f").as_os_str(), d3.as_os_str()])),
        0
    );
    assert_eq!(fs::read(&d3).unwrap(), b"file");
    // A file into an existing directory.
    assert_eq!(
        code(&run(&[
            s("-a"),
            src.join("f").as_os_str(),
            d2.join("sub").as_os_str()
        ])),
        0
    );
    assert_eq!(fs::read(d2.join("sub/f")).unwrap(), b"file");
    // A file to DEST/ (created as a directory).
    let d4 = t.path().join("d4");
    let d4_slash = format!("{}/", d4.display());
    assert_eq!(
        code(&run(&[s("-a"), src.join("f").as_os_str(), s(&d4_slash)])),
        0
    );
    assert_eq!(fs::read(d4.join("f")).unwrap(), b"file");
    // Several sources into a new directory.
    let d5 = t.path().join("d5");
    assert_eq!(
        code(&run(&[
            s("-a"),
            src.join("f").as_os_str(),
            src.join("sub").as_os_str(),
            d5.as_os_str()
        ])),
        0
    );
    assert_eq!(fs::read(d5.join("f")).unwrap(), b"file");
    assert_eq!(fs::read(d5.join("sub/g")).unwrap(), b"gee");
    // Overwriting an existing file.
    write(&src.join("f"), b"new content");
    assert_eq!(
        code(&run(&[s("-a"), src.join("f").as_os_str(), d3.as_os_str()])),
        0
    );
    assert_eq!(fs::read(&d3).unwrap(), b"new content");
}

#[test]
fn verbose_lists_items_and_quiet_silences_skips() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("sub/g"), b"gee");
    std::os::unix::fs::symlink("sub/g", src.join("lnk")).unwrap();
    let dst = t.path().join("dst");
    let out = run(&[s("-av"), src.as_os_str(), dst.as_os_str()]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for l in ["src/", "src/sub/", "src/sub/g", "src/lnk -> sub/g"] {
        assert!(text.lines().any(|x| x == l), "-v lacks {l}:\n{text}");
    }
    // Without -l the symlink is skipped with rsync's message; -q silences it.
    let dst2 = t.path().join("dst2");
    let out = run(&[s("-r"), src.as_os_str(), dst2.as_os_str()]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipping non-regular file \"src/lnk\""));
    let dst3 = t.path().join("dst3");
    let out = run(&[s("-rq"), src.as_os_str(), dst3.as_os_str()]);
    assert_eq!(code(&out), 0);
    assert!(
        out.stdout.is_empty(),
        "-q printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!dst3.join("src/lnk").exists());
}

#[test]
fn flag_order_decides_like_rsync() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    chmod(&src.join("f"), 0o4711);
    // -a --no-p: perms off, so setuid is dropped and the umask applies.
    let d1 = t.path().join("d1");
    assert_eq!(
        code(&run(&[
            s("-a"),
            s("--no-p"),
            src.as_os_str(),
            d1.as_os_str()
        ])),
        0
    );
    let m1 = fs::metadata(d1.join("src/f")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(m1.permissions().mode() & 0o7000, 0);
    // --no-p -a: -a comes later and turns perms back on.
    let d2 = t.path().join("d2");
    assert_eq!(
        code(&run(&[
            s("--no-p"),
            s("-a"),
            src.as_os_str(),
            d2.as_os_str()
        ])),
        0
    );
    assert_eq!(
        fs::metadata(d2.join("src/f")).unwrap().permissions().mode() & 0o7777,
        0o4711
    );
}

#[test]
fn open_noatime_and_atimes() {
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("f");
    write(&f, b"x");
    set_times(&f, 1_500_000_000, 123_456_789);
    let dst = t.path().join("dst");
    let out = run(&[
        s("-a"),
        s("-U"),
        s("--open-noatime"),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::MetadataExt;
    let ms = fs::metadata(&f).unwrap();
    let md = fs::metadata(dst.join("src/f")).unwrap();
    // -U copies the atime; --open-noatime left the source's atime as it was.
    assert_eq!((md.atime(), md.atime_nsec()), (ms.atime(), ms.atime_nsec()));
    assert_eq!(
        (ms.atime(), ms.atime_nsec()),
        (1_500_000_000 - 1000, 123_456_796)
    );
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 123_456_789));
}

/// `--append`/`--append-verify` with an explicit `-W` (the last of `-W`/`--no-W`) is a usage
/// error in rsync's words, whatever the order; before, arsync ran the copy.
#[test]
fn append_with_an_explicit_whole_file_is_refused_as_rsync() {
    if !require_rsync("append_with_an_explicit_whole_file_is_refused_as_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"f");
    for flags in [
        &["-r", "-W", "--append"][..],
        &["-r", "--append", "-W"],
        &["-r", "--append-verify", "--whole-file"],
        &["-r", "--no-W", "-W", "--append"],
        &["-r", "-W", "--no-W", "--append"],
        &["-r", "--append"],
    ] {
        let (ours, theirs) = (
            t.path().join(format!("a{}", flags.concat())),
            t.path().join(format!("r{}", flags.concat())),
        );
        let a = both("arsync", flags, &src, &ours);
        let r = both("rsync", flags, &src, &theirs);
        assert_eq!(
            code(&a),
            code(&r),
            "{flags:?}: {}",
            String::from_utf8_lossy(&a.stderr)
        );
        if code(&r) != 0 {
            assert_eq!(code(&a), 1);
            assert!(
                String::from_utf8_lossy(&a.stderr)
                    .contains("--append cannot be used with --whole-file"),
                "{flags:?}"
            );
            assert!(!ours.exists(), "{flags:?}: wrote");
        }
    }
}

/// `-U` on a file that is otherwise up to date (same size and mtime) whose copy has another
/// access time: rsync sets the source's (whole seconds) and itemizes it `.f......u..`; arsync
/// left it as it was and said nothing, so a re-sync never brought access times over. Without
/// `-t` the same (the mtime then matches as copied by an earlier `-t` run).
#[test]
fn atimes_bring_an_up_to_date_files_access_time_as_rsync() {
    if !require_rsync("atimes_bring_an_up_to_date_files_access_time_as_rsync") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for flags in [
        &["-rtU", "-i"][..],
        &["-rU", "-i"],
        &["-aU", "-i"],
        &["-aU", "-i", "-n"],
    ] {
        let mut atimes = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = t.path().join(format!("{tool}{}", flags.concat()));
            fs::create_dir(&dst).unwrap();
            for d in [&src, &dst] {
                write(&d.join("f"), b"same");
            }
            // (set_times gives the atime 1000 s before the mtime; the source's read must not
            // move it, so the destination's is set last, and the source's is read back.)
            set_times(&src.join("f"), 1_600_000_000, 0);
            set_times(&dst.join("f"), 1_600_000_000, 0);
            let later = fs::File::options().write(true).open(dst.join("f")).unwrap();
            later
                .set_times(fs::FileTimes::new().set_accessed(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
                ))
                .unwrap();
            let out = both(tool, flags, &src, &dst);
            assert_eq!(
                code(&out),
                0,
                "{tool} {flags:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with(".d"))
                .map(str::to_string)
                .collect();
            let m = fs::metadata(dst.join("f")).unwrap();
            atimes.push((lines, m.atime(), m.mtime()));
        }
        assert_eq!(
            atimes[1], atimes[0],
            "{flags:?}: arsync (left) against rsync"
        );
        let dry = flags.contains(&"-n");
        assert_eq!(
            atimes[1].1,
            if dry {
                1_700_000_000
            } else {
                1_600_000_000 - 1000
            },
            "{flags:?}"
        );
        assert_eq!(atimes[1].0, vec![".f......u.. f".to_string()], "{flags:?}");
    }
}

#[test]
fn source_onto_itself_changes_nothing_and_destination_inside_source_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"data");
    write(&src.join("sub/g"), b"more");
    let before: Vec<i64> = ["f", "sub/g", "sub"]
        .iter()
        .map(|p| fs::metadata(src.join(p)).unwrap().ctime_nsec())
        .collect();
    let src_slash = format!("{}/", src.display());
    for flags in [&["-a"][..], &["-aI"][..]] {
        let mut args: Vec<&OsStr> = flags.iter().map(|f| s(f)).collect();
        args.push(s(&src_slash));
        args.push(s(&src_slash));
        let out = run(&args);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    let after: Vec<i64> = ["f", "sub/g", "sub"]
        .iter()
        .map(|p| fs::metadata(src.join(p)).unwrap().ctime_nsec())
        .collect();
    assert_eq!(before, after, "copying a tree onto itself changed it");
    assert_eq!(fs::read_dir(&src).unwrap().count(), 2);
    // DEST inside SRC: refused with a one-line error, nothing written.
    let inside = src.join("sub/copy");
    let out = run(&[s("-a"), s(&src_slash), inside.as_os_str()]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the source"));
    assert!(!inside.exists());
    // `arsync -a src src/sub/` would put src/sub/src inside src: refused too.
    let out = run(&[s("-a"), src.as_os_str(), src.join("sub").as_os_str()]);
    assert_eq!(code(&out), 1);
    assert!(!src.join("sub/src").exists());
}

#[test]
fn progress_lines_and_bar_end_with_true_totals() {
    let t = Scratch::new();
    let src = t.path().join("src");
    for d in 0..5 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..40 {
            write(
                &src.join(format!("d{d}/f{f}")),
                &content(f, 1000 + f as usize),
            );
        }
    }
    let total_bytes: u64 = (0..5u64)
        .map(|_| (0..40u64).map(|f| 1000 + f).sum::<u64>())
        .sum();
    let with_commas = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };
    // Not a terminal: plain lines, the last one with the totals.
    let src_arg = format!("{}/", src.display());
    let out = run(&[
        s("-a"),
        s("--info=progress2"),
        s(&src_arg),
        t.path().join("a").as_os_str(),
    ]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default().to_string();
    assert!(last.contains(&with_commas(total_bytes)), "{text}");
    assert!(
        last.contains("100%") && last.contains("(xfr#200, to-chk=0/200)"),
        "{text}"
    );
    assert!(!last.contains("scanning"), "{text}");
    // --progress: a line per file after its name.
    let out = run(&[
        s("-a"),
        s("--progress"),
        s(&src_arg),
        t.path().join("b").as_os_str(),
    ]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" 100% ") && l.contains("xfr#"))
            .count(),
        200,
        "{text}"
    );
    // The transfer count reaches the number of files (the per-file lines are snapshots taken
    // while other cores work, so "to-chk" may lag by a file or two; the totals line above is
    // exact).
    let max_xfr = text
        .split("(xfr#")
        .skip(1)
        .filter_map(|r| r.split(',').next()?.parse::<u64>().ok())
        .max();
    assert_eq!(max_xfr, Some(200), "{text}");
    // A terminal (a pty through script(1)): the bar is drawn and its final state has the totals.
    if !have("script") {
        skip(
            "progress_lines_and_bar_end_with_true_totals",
            "script(1) is missing: no pty test",
        );
        return;
    }
    let cmd = format!(
        "{} -a --info=progress2 {} {}",
        env!("CARGO_BIN_EXE_arsync"),
        src_arg,
        t.path().join("c").display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let tty = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(tty.contains('\u{2588}'), "no bar drawn: {tty:?}");
    let final_state = tty.rsplit('\r').next().unwrap_or_default().to_string();
    let end = tty.rfind("(xfr#").map(|i| &tty[i..]).unwrap_or_default();
    assert!(
        end.starts_with("(xfr#200, to-chk=0/200)"),
        "{final_state:?} / {tty:?}"
    );
    assert!(tty.contains(&with_commas(total_bytes)), "{tty:?}");
}

#[test]
fn man_page_and_completions_are_generated_from_the_flags() {
    let man = run(&[s("--gen-man")]);
    assert_eq!(code(&man), 0);
    let text = String::from_utf8_lossy(&man.stdout).into_owned();
    assert!(text.contains(".TH arsync 1"), "{text}");
    for flag in [
        "archive",
        "delete",
        "exclude",
        "partial",
        "copy\\-method",
        "stats\\-json",
    ] {
        assert!(
            text.contains(&format!("\\-\\-{flag}")),
            "man page lacks --{flag}"
        );
    }
    if have("man") {
        let t = Scratch::new();
        let p = t.path().join("arsync.1");
        fs::write(&p, &man.stdout).unwrap();
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(&p)
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man cannot render it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&[s("--gen-completions"), s(shell)]);
        assert_eq!(code(&out), 0, "{shell}");
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            script.contains("delete-after") && script.contains("itemize-changes"),
            "{shell}"
        );
        if have(shell) {
            let t = Scratch::new();
            let p = t.path().join("completion");
            fs::write(&p, &out.stdout).unwrap();
            let check = std::process::Command::new(shell)
                .arg("-n")
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

/// A tree with a file, a subdirectory, a symlink and a hard link, for the format tests.
fn format_tree(root: &std::path::Path) {
    fs::create_dir_all(root.join("d")).unwrap();
    write(&root.join("d/a"), &content(7, 3000));
    write(&root.join("b"), b"bee");
    std::os::unix::fs::symlink("a", root.join("d/l")).unwrap();
    fs::hard_link(root.join("d/a"), root.join("h")).unwrap();
    chmod(&root.join("b"), 0o4751);
    set_times(&root.join("b"), 1_600_000_000, 0);
}

/// The command for `tool`: rsync, or the arsync under test.
fn tool_command(tool: &str) -> std::process::Command {
    if tool == "rsync" {
        std::process::Command::new("rsync")
    } else {
        arsync()
    }
}

/// Sorted lines, for output whose order depends on the scheduling.
fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(b)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn out_format_matches_rsync() {
    if !require_rsync("out_format_matches_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    format_tree(&src);
    // Every escape both programs fill in alike for a local copy (rsync's %b counts its
    // protocol bytes, which a local copy without a protocol has no equivalent of).
    let fmt = "%i %n%L|%l|%B|%U|%G|%M|%o";
    let ours = t.path().join("ours");
    let theirs = t.path().join("theirs");
    // One core: the order of the lines (sorted below) and of the hard-link pair do not depend
    // on which core gets where first.
    let o = copy_contents(
        &["-aH", "--threads=1", &format!("--out-format={fmt}")],
        &src,
        &ours,
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let r = sh(
        "rsync",
        &[
            s("-aH"),
            s(&format!("--out-format={fmt}")),
            s(&format!("{}/", src.display())),
            theirs.as_os_str(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Which name of the hard-linked pair (`d/a`, `h`) gets the data and which is linked to it
    // is each program's own order (rsync: `d/a`; one core of arsync: a directory's files
    // before its subdirectories, so `h`): the two lines are compared with the names in a fixed
    // role.
    let pair = |l: String| {
        if let Some(rest) = l.strip_prefix(">f+++++++++ h|") {
            format!(">f+++++++++ d/a|{rest}")
        } else if let Some(rest) = l.strip_prefix("hf+++++++++ d/a => h|") {
            format!("hf+++++++++ h => d/a|{rest}")
        } else {
            l
        }
    };
    let listed = |b: &[u8], dir: &std::path::Path| {
        let created = format!("created directory {}", dir.display());
        let lines = sorted_lines(b);
        assert!(lines.contains(&created), "{lines:?}");
        let mut lines = lines
            .into_iter()
            .filter(|l| *l != created)
            .map(pair)
            .collect::<Vec<_>>();
        lines.sort();
        lines
    };
    assert_eq!(listed(&o.stdout, &ours), listed(&r.stdout, &theirs));
    // Without %i, a file's attribute-only changes are not listed (as -v); a changed file is,
    // and so is a directory whose attributes were touched (as rsync lists them).
    fs::write(src.join("b"), b"bzz").unwrap();
    set_times(&src.join("b"), 1_600_000_000, 0);
    set_times(&src.join("d"), 1_600_000_000, 0);
    let o = copy_contents(&["-aHc", "--out-format=%n (%l)"], &src, &ours);
    assert_eq!(code(&o), 0);
    let r = sh(
        "rsync",
        &[
            s("-aHc"),
            s("--out-format=%n (%l)"),
            s(&format!("{}/", src.display())),
            theirs.as_os_str(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(sorted_lines(&o.stdout), sorted_lines(&r.stdout));
    let ours_listed = sorted_lines(&o.stdout);
    assert!(
        ours_listed.len() == 2 && ours_listed[0] == "b (3)" && ours_listed[1].starts_with("d/ ("),
        "{ours_listed:?}"
    );
    // Escapes rsync's local copy does not fill in (a daemon's %h, %a, %P, %u; an unknown %Z;
    // a lone % at the end) stay as written and %m is empty, as rsync prints them (they were a
    // usage error).
    let fmt = "--out-format=[%h|%5Z|%'a|%-3m|%P|%u] %n 50%";
    let (a, b) = (t.path().join("esc-ours"), t.path().join("esc-theirs"));
    let o = copy_contents(&["-a", fmt], &src, &a);
    assert_eq!(code(&o), 0, "{o:?}");
    let r = sh(
        "rsync",
        &[
            s("-a"),
            s(fmt),
            s(&format!("{}/", src.display())),
            b.as_os_str(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(sorted_lines(&o.stdout), sorted_lines(&r.stdout));
    assert!(
        sorted_lines(&o.stdout)
            .iter()
            .any(|l| l.starts_with("[%h|%5Z|%'a|   |%P|%u] "))
    );
}

/// `%f`, the long name, as rsync prints it from the sending side: the item's path after the
/// source's directory as given (`SRC/.` for the root of `SRC/`, the directory above for `SRC`
/// and for a file, the part before `/./` for `-R`, no leading `/`, no `./`), and for
/// `--files-from` the path below its SRC (with and without `--no-relative`). Before, `%f` was
/// the path relative to the transfer, as `%n` without the `/`. Run from a directory of its
/// own, with relative and absolute sources.
#[test]
fn long_name_escape_matches_rsync() {
    if !require_rsync("long_name_escape_matches_rsync") {
        return;
    }
    let t = Scratch::new();
    let top = t.path();
    format_tree(&top.join("of/src"));
    fs::write(top.join("list"), "d/a\nb\n").unwrap();
    let abs = top.join("of/src").display().to_string();
    let forms: [&[&str]; 9] = [
        &["of/src/"],
        &["of/src"],
        &["./of//src/"],
        &[&abs],
        &["of/src/b"],
        &["-R", "of/./src/d"],
        &["-R", "of/src/d/a"],
        &["--files-from=list", "of/src"],
        &["--files-from=list", "--no-relative", "of/src/"],
    ];
    for (i, form) in forms.iter().enumerate() {
        let got: Vec<Vec<String>> = ["rsync", "arsync"]
            .iter()
            .map(|tool| {
                let out = tool_command(tool)
                    .current_dir(top)
                    .args(["-a", "--out-format=%f|%n"])
                    .args(*form)
                    .arg(format!("{tool}{i}/"))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{tool} {form:?}: {out:?}");
                sorted_lines(&out.stdout)
                    .into_iter()
                    .filter(|l| !l.starts_with("created directory"))
                    .collect()
            })
            .collect();
        assert_eq!(got[1], got[0], "{form:?}: arsync (left) against rsync");
        assert!(!got[1].is_empty(), "{form:?}");
    }
}

/// `%C`, the file's checksum, as rsync 3.5 prints it (XXH3-128 in 32 hex digits): for a file
/// whose data was written (a new copy, a changed file, one held by `--delay-updates`, a large
/// one copied in the kernel), zeros in a dry run, with `-c` for a file only compared, and 32
/// spaces where the run does not know it (an attribute-only change without `-c`, a directory,
/// a symlink, a hard link). Before, `%C` was a usage error (exit 1).
#[test]
fn checksum_escape_matches_rsync() {
    if !require_rsync("checksum_escape_matches_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    format_tree(&src);
    write(&src.join("big"), &content(9, 3 << 20));
    let fmt = "--out-format=%C|%i|%n%L";
    // (The directory lines are left out: rsync compares directory times to the second.)
    let run = |tool: &str, flags: &[&str], dst: &std::path::Path| {
        let out = tool_command(tool)
            .args(["-aH", "--threads=1"].iter().filter(|_| tool != "rsync"))
            .args(["-aH"].iter().filter(|_| tool == "rsync"))
            .args(flags)
            .arg(fmt)
            .arg(format!("{}/", src.display()))
            .arg(dst)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} {flags:?}: {out:?}");
        sorted_lines(&out.stdout)
            .into_iter()
            .filter(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|i| !i.starts_with(".d") && !i.starts_with("cd"))
            })
            .collect::<Vec<_>>()
    };
    for (i, flags) in [&[][..], &["--delay-updates"], &["-n"]]
        .into_iter()
        .enumerate()
    {
        let got: Vec<Vec<String>> = ["rsync", "arsync"]
            .iter()
            .map(|tool| run(tool, flags, &t.path().join(format!("{tool}-new{i}"))))
            .collect();
        // (Which name of the hard-linked pair is copied is each program's order: compared
        // without it.)
        let unpaired = |v: &Vec<String>| -> Vec<String> {
            v.iter()
                .filter(|l| !l.contains("|d/a") && !l.contains("|h"))
                .cloned()
                .collect()
        };
        assert_eq!(unpaired(&got[1]), unpaired(&got[0]), "new copy, {flags:?}");
        let sums = |v: &Vec<String>| -> Vec<String> {
            let mut s: Vec<String> = v.iter().map(|l| l[..32].to_string()).collect();
            s.sort();
            s
        };
        assert_eq!(sums(&got[1]), sums(&got[0]), "new copy, {flags:?}");
    }
    // A re-sync: b's data changed, big's mode only.
    for tool in ["rsync", "arsync"] {
        for flags in [&[][..], &["-c"]] {
            let d = t.path().join(format!("{tool}-re{}", flags.concat()));
            run(tool, &[], &d);
        }
    }
    fs::write(src.join("b"), b"bzz").unwrap();
    chmod(&src.join("big"), 0o600);
    for flags in [&[][..], &["-c"]] {
        let got: Vec<Vec<String>> = ["rsync", "arsync"]
            .iter()
            .map(|tool| {
                run(
                    tool,
                    flags,
                    &t.path().join(format!("{tool}-re{}", flags.concat())),
                )
            })
            .collect();
        assert_eq!(got[1], got[0], "re-sync, {flags:?}");
        assert_eq!(got[1].len(), 2, "{:?}", got[1]);
    }
}

#[test]
fn log_file_records_items_errors_and_the_end() {
    let t = Scratch::new();
    let src = t.path().join("src");
    format_tree(&src);
    let dst = t.path().join("dst");
    let log = t.path().join("run.log");
    let log_arg = format!("--log-file={}", log.display());
    // -q: nothing on stdout, everything in the log. One core in both runs compared below: which
    // name of a hard-link pair is copied and which linked depends on which core gets there
    // first.
    let o = copy_contents(&["-aHq", "--threads=1", &log_arg], &src, &dst);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let text = fs::read_to_string(&log).unwrap();
    let prefix = |l: &str| -> Option<String> {
        // "YYYY/MM/DD HH:MM:SS [PID] rest"
        let b = l.as_bytes();
        let shape = b.len() > 22
            && b[4] == b'/'
            && b[7] == b'/'
            && b[10] == b' '
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b' '
            && b[20] == b'[';
        let close = l.find("] ")?;
        (shape && l[21..close].parse::<u32>().is_ok()).then(|| l[close + 2..].to_string())
    };
    let items: Vec<String> = text.lines().filter_map(prefix).collect();
    assert_eq!(
        items.len(),
        text.lines().count(),
        "every line has the time and PID prefix:\n{text}"
    );
    assert!(items[0].starts_with("arsync ") && items[0].contains("started"));
    assert!(items.last().unwrap().ends_with("exit code 0"), "{text}");
    // The engine's info events (settings, totals) are there too, with the same prefix.
    let events = |l: &&String| l.starts_with(" INFO ");
    assert!(
        items
            .iter()
            .filter(events)
            .any(|l| l.contains("run started threads="))
    );
    assert!(
        items
            .iter()
            .filter(events)
            .any(|l| l.contains("run finished files=2"))
    );
    // The item lines are what -i prints.
    let dst_i = t.path().join("dst_i");
    let i = copy_contents(&["-aHi", "--threads=1"], &src, &dst_i);
    let shown: Vec<String> = sorted_lines(&i.stdout)
        .into_iter()
        .filter(|l| !l.starts_with("created directory"))
        .collect();
    let created = format!("created directory {}", dst.display());
    assert!(items.contains(&created), "{text}");
    let mut logged: Vec<String> = items[1..items.len() - 1]
        .iter()
        .filter(|l| !events(l) && **l != created)
        .cloned()
        .collect();
    logged.sort();
    assert_eq!(logged, shown);
    assert!(
        logged.contains(&"hf+++++++++ h => d/a".to_string())
            || logged.contains(&"hf+++++++++ d/a => h".to_string())
    );
    // A second run appends: a deletion and an error (a missing source) are logged too.
    fs::remove_file(src.join("b")).unwrap();
    let missing = t.path().join("missing");
    let o = run(&[
        s("-aHq"),
        s("--delete"),
        s(&log_arg),
        missing.as_os_str(),
        s(&format!("{}/", src.display())),
        dst.as_os_str(),
    ]);
    assert_eq!(code(&o), 23);
    let text = fs::read_to_string(&log).unwrap();
    let second: Vec<String> = text.lines().filter_map(prefix).skip(items.len()).collect();
    assert!(second.iter().any(|l| l == "*deleting   b"), "{text}");
    assert!(
        second
            .iter()
            .any(|l| l.contains("missing") && l.contains("No such file or directory")),
        "{text}"
    );
    assert!(second.last().unwrap().ends_with("exit code 23"), "{text}");
    // A log that cannot be opened: as rsync 3.5, said ("Ignoring ...") and the run goes on
    // without it (this was rsync's file I/O error, 11, before anything was copied).
    let o = copy_contents(
        &["-a", "--log-file=/nonexistent-dir/x.log"],
        &src,
        &t.path().join("copied"),
    );
    assert_eq!(code(&o), 0, "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "failed to open log-file /nonexistent-dir/x.log: No such file or directory (2)"
        ) && err.contains("Ignoring \"log file\" setting."),
        "{err}"
    );
    assert_same(&src, &t.path().join("copied"), treediff::Check::archive());
}

#[test]
fn verbosity_levels_reach_tracing() {
    let t = Scratch::new();
    let src = t.path().join("src");
    format_tree(&src);
    let levels = |flags: &[&str], env: Option<&str>, dst: &str| {
        let mut c = arsync();
        c.env_remove("RUST_LOG");
        if let Some(e) = env {
            c.env("RUST_LOG", e);
        }
        let o = c
            .args(flags)
            .arg(format!("{}/", src.display()))
            .arg(t.path().join(dst))
            .output()
            .unwrap();
        assert_eq!(code(&o), 0);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        (e.contains("run started"), e.contains("file copied"))
    };
    assert_eq!(levels(&["-a"], None, "d0"), (false, false));
    assert_eq!(levels(&["-av"], None, "d1"), (false, false));
    assert_eq!(levels(&["-avv"], None, "d2"), (true, false));
    assert_eq!(levels(&["-avvv"], None, "d3"), (true, true));
    assert_eq!(levels(&["-a"], Some("debug"), "d4"), (true, true));
    assert_eq!(levels(&["-aq"], None, "d5"), (false, false));
}

#[test]
fn mkpath_makes_the_missing_parents_as_rsync_does() {
    if !require_rsync("mkpath_makes_the_missing_parents_as_rsync_does") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"file");
    write(&src.join("sub/g"), b"g");
    let s = |p: &str| t.path().join(p).into_os_string();
    // (source, destination below the tool's top directory)
    let cases = [
        (format!("{}/", src.display()), "a/b/"),
        (src.join("f").display().to_string(), "x/y"),
        (src.join("f").display().to_string(), "x2/y/"),
        (src.display().to_string(), "z/w"),
    ];
    for tool in ["rsync", "arsync"] {
        for (from, to) in &cases {
            let dest = s(&format!("{tool}/{to}"));
            let out = if tool == "rsync" {
                std::process::Command::new("rsync")
                    .args(["-a", "--mkpath"])
                    .arg(from)
                    .arg(&dest)
                    .output()
                    .unwrap()
            } else {
                run(&[
                    OsStr::new("-a"),
                    OsStr::new("--mkpath"),
                    OsStr::new(from),
                    &dest,
                ])
            };
            assert_eq!(code(&out), 0, "{tool} {from} {to}");
        }
    }
    let tree = |root: &str| {
        let r = t.path().join(root);
        treediff::walk(&r)
            .unwrap()
            .into_iter()
            .map(|p| {
                let m = fs::symlink_metadata(r.join(&p)).unwrap();
                format!("{} {}", m.is_dir(), p.display())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(tree("arsync"), tree("rsync"));
    assert_eq!(fs::read(t.path().join("arsync/x/y")).unwrap(), b"file");
    // -i names them; -n makes none; without --mkpath a missing parent is rsync's exit 3.
    let out = run(&[
        OsStr::new("-a"),
        OsStr::new("-i"),
        OsStr::new("--mkpath"),
        OsStr::new(&format!("{}/", src.display())),
        &s("new/p/q/"),
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!(
            "created 3 directories for {}\n",
            t.path().join("new/p/q").display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&[
        OsStr::new("-a"),
        OsStr::new("-n"),
        OsStr::new("--mkpath"),
        OsStr::new(&format!("{}/", src.display())),
        &s("dry/p/q/"),
    ]);
    assert_eq!(code(&out), 0);
    assert!(!t.path().join("dry").exists());
    let out = run(&[OsStr::new("-a"), src.join("f").as_os_str(), &s("none/p/q")]);
    assert_eq!(code(&out), 3);
    assert!(!t.path().join("none").exists());
}

/// The "created directory DEST" notice: printed when the run makes the destination directory,
/// with `-v`, `--progress` or an `%i` format (`-i`), not with an `--out-format` without `%i` (a
/// dry run: when it would), not when it exists already or `--mkpath` made it; rsync run the same
/// way is the oracle for each case.
#[test]
fn created_directory_is_said_as_rsync_says_it() {
    if !require_rsync("created_directory_is_said_as_rsync_says_it") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), b"file");
    let contents = format!("{}/", src.display());
    let cases: [(&[&str], &str, Vec<&str>); 10] = [
        (&["-av"], "new", vec![&contents]),
        (&["-ai"], "new", vec![&contents]),
        (&["-a", "--out-format=%n"], "new", vec![&contents]),
        (&["-a", "--progress"], "new", vec![&contents]),
        (&["-a"], "new", vec![&contents]),
        (&["-avn"], "new", vec![&contents]),
        (&["-av"], "several/", vec![&contents, &contents]),
        (&["-av"], "existing", vec![&contents]),
        (&["-av", "--mkpath"], "p/q/r", vec![&contents]),
        (&["-avq"], "new", vec![&contents]),
    ];
    let said = |tool: &str, i: usize| {
        let (flags, to, from) = &cases[i];
        let top = t.path().join(format!("{tool}-{i}"));
        fs::create_dir_all(top.join("existing")).unwrap();
        let dest = top.join(to);
        let mut cmd = tool_command(tool);
        let out = cmd.args(*flags).args(from).arg(&dest).output().unwrap();
        assert_eq!(code(&out), 0, "{tool} {flags:?} {to}");
        let made = dest.display().to_string();
        let made = made.trim_end_matches('/');
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("created "))
            .map(|l| l.replace(made, "DEST"))
            .collect::<Vec<_>>()
    };
    let ours: Vec<_> = (0..cases.len()).map(|i| said("arsync", i)).collect();
    for (i, lines) in ours.iter().enumerate() {
        assert_eq!(*lines, said("rsync", i), "{:?}", cases[i]);
    }
    // (The cases say something where they should: the comparison is not between two silences.)
    assert_eq!(ours[0], ["created directory DEST"]);
    assert_eq!(ours[1], ["created directory DEST"]);
    assert_eq!(ours[3], ["created directory DEST"]);
    assert_eq!(ours[8], ["created 3 directories for DEST"]);
}

/// What a run prints on stdout, without rsync's transfer chatter (its file list, delta and
/// byte-count lines), arsync's summary and engine log (`-vv`), progress lines and the order (the
/// cores finish entries in their own order).
fn listed_lines(out: &std::process::Output, dest: &std::path::Path) -> Vec<String> {
    let made = dest.display().to_string();
    let made = made.trim_end_matches('/');
    let mut v: Vec<String> = sorted_lines(&out.stdout)
        .into_iter()
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("sending incremental")
                && !l.starts_with("delta-transmission disabled")
                && !l.starts_with("total: matches=")
                && !l.starts_with("sent ")
                && !l.starts_with("total size")
                && !l.contains("xfr#")
                && !l.contains(" specials; ")
                && !l.contains("Z  INFO ")
        })
        .map(|l| l.replace(made, "DEST"))
        .collect();
    v.sort();
    v
}

/// `--mkpath` makes every missing directory before the transfer, the destination directory too,
/// and says so as rsync does: "created N directories for DEST" (1 directory: "created 1
/// directory", not "created directory"), at `-v`, `--progress` or with `%i`, not with an
/// `--out-format` without `%i`; the destination is then itemized as a directory that was there
/// (`.d..t......`, not `cd+++++++++`).
#[test]
fn mkpath_is_said_and_itemized_as_rsync_does() {
    if !require_rsync("mkpath_is_said_and_itemized_as_rsync_does") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"file");
    write(&src.join("sub/g"), b"g");
    for p in ["sub/g", "sub", "f", ""] {
        set_times(&src.join(p), 1_600_000_000, 0);
    }
    let contents = format!("{}/", src.display());
    let cases: [(&[&str], &str); 8] = [
        (&["-ai"], "p/q/r/"),
        (&["-ai"], "existing/r"),
        (&["-av"], "p/q/r"),
        (&["-a", "--progress"], "p/q/r"),
        (&["-a", "--out-format=%n"], "p/q/r"),
        (&["-a", "--out-format=%i %n"], "p/q"),
        (&["-aq"], "p/q/r"),
        (&["-ai"], "existing"),
    ];
    let said = |tool: &str, i: usize| {
        let (flags, to) = &cases[i];
        let top = t.path().join(format!("{tool}-{i}"));
        fs::create_dir_all(top.join("existing")).unwrap();
        let dest = top.join(to);
        let mut cmd = tool_command(tool);
        let out = cmd
            .args(*flags)
            .arg("--mkpath")
            .arg(&contents)
            .arg(&dest)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{tool} {flags:?} {to}");
        assert_same(&src, &dest, treediff::Check::archive());
        listed_lines(&out, &dest)
    };
    let ours: Vec<_> = (0..cases.len()).map(|i| said("arsync", i)).collect();
    for (i, lines) in ours.iter().enumerate() {
        assert_eq!(*lines, said("rsync", i), "{:?}", cases[i]);
    }
    // (Not a comparison of two silences.)
    assert!(ours[0].contains(&"created 3 directories for DEST".to_string()));
    assert!(ours[0].contains(&".d..t...... ./".to_string()));
    assert!(ours[1].contains(&"created 1 directory for DEST".to_string()));
}

/// Without `%i` (plain `-v`, an `--out-format`), rsync lists a directory whose attributes it
/// touched (`./`, `sub/`), not a file whose attributes alone it fixed; arsync lists the same.
#[test]
fn verbose_lists_touched_directories_as_rsync_does() {
    if !require_rsync("verbose_lists_touched_directories_as_rsync_does") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    for d in ["sub", "same", "deep/er"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    write(&src.join("f"), b"file");
    write(&src.join("deep/er/g"), b"g");
    for p in ["deep/er/g", "deep/er", "deep", "same", "sub", "f", ""] {
        set_times(&src.join(p), 1_600_000_000, 0);
    }
    for (i, flags) in [&["-av"][..], &["-a", "--out-format=%n"]]
        .iter()
        .enumerate()
    {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dest = t.path().join(format!("{tool}-{i}"));
            let made = std::process::Command::new("rsync")
                .arg("-a")
                .arg(format!("{}/", src.display()))
                .arg(&dest)
                .output()
                .unwrap();
            assert_eq!(code(&made), 0);
            // Times of two directories and the mode of a file differ now.
            set_times(&dest, 1_700_000_000, 0);
            set_times(&dest.join("deep/er"), 1_700_000_000, 0);
            chmod(&dest.join("f"), 0o600);
            let mut cmd = tool_command(tool);
            let out = cmd
                .args(*flags)
                .arg(format!("{}/", src.display()))
                .arg(&dest)
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool} {flags:?}");
            assert_same(&src, &dest, treediff::Check::archive());
            seen.push(listed_lines(&out, &dest));
        }
        assert_eq!(seen[1], seen[0], "{flags:?}");
        assert_eq!(seen[1], ["./", "deep/er/"], "{flags:?}");
    }
}

/// `--list-only` and a lone SRC list the sources exactly as rsync lists them (mode, size with
/// separators, local mtime, name, symlink target with -l, rsync's order, its errors).
#[test]
fn list_only_prints_what_rsync_prints() {
    if !have("rsync") {
        skip(
            "list_only_prints_what_rsync_prints",
            "rsync is not installed",
        );
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    for (f, len) in [
        ("b", 10),
        ("a", 12_345),
        ("x/w", 0),
        ("x/y/z", 7),
        ("sub/deep", 1),
    ] {
        fs::create_dir_all(src.join(f).parent().unwrap()).unwrap();
        write(&src.join(f), &content(3, len));
    }
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
    mkfifo(&src.join("fifo"));
    chmod(&src.join("a"), 0o4751);
    for (i, p) in treediff::walk(&src).unwrap().iter().enumerate() {
        set_times(&src.join(p), 1_500_000_000 + 3600 * i as i64, 0);
    }
    for args in [
        &["-a", "--list-only", "src/"][..],
        &["--list-only", "src/"],
        &["-r", "--list-only", "src/"],
        &["-rl", "--list-only", "src/"],
        &["-a", "src/"],
        &["-a", "--list-only", "src/x", "src/a", "dest-not-listed"],
        &["-a", "--list-only", "--exclude=x", "src"],
        &["-a", "--list-only", "src/nonexistent"],
        // (-q silences the listing, as rsync's: it was printed.)
        &["-a", "-q", "--list-only", "src/"],
        &["-q", "src/x"],
    ] {
        let run = |cmd: &mut std::process::Command| {
            cmd.args(args).current_dir(s.path()).output().unwrap()
        };
        let want = run(&mut std::process::Command::new("rsync"));
        let got = run(&mut arsync());
        assert_eq!(code(&got), code(&want), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&want.stdout),
            "{args:?}"
        );
    }
}

/// The descriptor table is grown while the process has one thread, in every mode that starts
/// threads: growing it later waits for an RCU grace period (10–30 ms here) that a listing or a
/// short copy would spend idle. Seen in the system calls: the first `F_DUPFD_CLOEXEC` (the
/// reservation) comes before the first thread is cloned.
#[test]
fn the_descriptor_table_grows_before_any_thread_starts() {
    let name = "the_descriptor_table_grows_before_any_thread_starts";
    if !have("strace") {
        skip(name, "strace is not installed");
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("d/f"), &content(1, 5000));
    for args in [
        &["-a", "--list-only", "src/"][..],
        &["-a", "src/"],
        &["-a", "src/", "dst0"],
        &["-a", "--info=progress2", "src/", "dst1"],
        &["-a", "--timeout=600", "src/", "dst2"],
    ] {
        let calls = traced_run("clone,clone3,fcntl", s.path(), args);
        // The reservation: a dup to a descriptor far above any the run has open yet.
        let reserved = calls
            .lines()
            .position(|l| {
                l.split_once("F_DUPFD_CLOEXEC, ")
                    .and_then(|(_, rest)| rest.split(')').next()?.parse::<u32>().ok())
                    .is_some_and(|low| low >= 255)
            })
            .unwrap_or_else(|| panic!("{args:?}: no reservation in\n{calls}"));
        let cloned = calls
            .lines()
            .position(|l| l.contains("clone"))
            .unwrap_or_else(|| panic!("{args:?}: no thread in\n{calls}"));
        assert!(
            reserved < cloned,
            "{args:?}: grown after a thread started:\n{calls}"
        );
    }
}

/// Names are printed as rsync prints them: control characters other than tab as `\#ooo`, tab
/// and DEL as they are, valid UTF-8 as it is, other bytes as `\#ooo`, or raw with `-8`.
#[test]
fn odd_names_are_printed_as_rsync_prints_them() {
    use std::os::unix::ffi::OsStrExt;
    if !have("rsync") {
        skip(
            "odd_names_are_printed_as_rsync_prints_them",
            "rsync is not installed",
        );
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for name in [
        &b"a\x01b"[..],
        b"nl\nx",
        b"tab\there",
        b"del\x7fx",
        b"esc\x1bx",
        b"caf\xe9",
        b"ok\xc3\xa9",
        b"back\\slash",
    ] {
        write(&src.join(OsStr::from_bytes(name)), b"x");
    }
    for flags in [
        &["-a", "-i"][..],
        &["-a", "-i", "-8"],
        &["-a", "--list-only"],
    ] {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let mut c = tool_command(tool);
            let out = c
                .args(flags)
                .arg("src/")
                .arg(format!("{tool}-{}/", flags.len()))
                .current_dir(s.path())
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool} {flags:?}");
            let mut lines: Vec<Vec<u8>> = out
                .stdout
                .split(|&b| b == b'\n')
                .filter(|l| !l.starts_with(b"created directory") && !l.ends_with(b" ."))
                .map(|l| l.splitn(5, |&b| b == b' ').last().unwrap_or(l).to_vec())
                .collect();
            lines.sort();
            outs.push(lines);
        }
        assert_eq!(
            outs[1]
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>(),
            outs[0]
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>(),
            "{flags:?}"
        );
        assert_eq!(outs[1], outs[0], "{flags:?} (bytes)");
    }
}

/// `tool FLAGS... SRC/ DST` for `tool` arsync or rsync; the output.
fn both(name: &str, flags: &[&str], src: &std::path::Path, dst: &std::path::Path) -> Output {
    tool_command(name)
        .args(flags)
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .output()
        .expect("run")
}

/// `both` for arsync into `BASE.a` and rsync into `BASE.r`, each of which must succeed; the two
/// destinations (ours, rsync's).
fn both_succeed(
    flags: &[&str],
    src: &std::path::Path,
    base: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (ours, theirs) = (base.with_extension("a"), base.with_extension("r"));
    let a = both("arsync", flags, src, &ours);
    let r = both("rsync", flags, src, &theirs);
    assert_eq!(
        (code(&a), code(&r)),
        (0, 0),
        "{flags:?}: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    (ours, theirs)
}

#[test]
fn h_is_human_readable_numbers_as_in_rsync_and_help_only_alone() {
    // `arsync -avh SRC/ DST/` (rsync's most common form) printed the help and exited 0 without
    // copying anything: -h was clap's help. In rsync it is --human-readable (help only when it is
    // the one argument), and numbers are printed at its level: digits grouped by commas by
    // default, units of 1000 with -h, of 1024 with -hh, plain digits with --no-h.
    if !require_rsync("h_is_human_readable_numbers_as_in_rsync_and_help_only_alone") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("big"), &content(1, 1_234_567));
    write(&src.join("small"), &content(2, 5_000));
    let out = both("arsync", &["-avh"], &src, &t.path().join("avh"));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&src, &t.path().join("avh"), treediff::Check::archive());
    let total = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("Total file size:"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no total: {}", String::from_utf8_lossy(&out.stdout)))
    };
    for (i, flags) in [
        &[][..],
        &["-h"],
        &["-hh"],
        &["-h", "-h", "-h"],
        &["--no-h"],
        &["-h", "--no-human-readable"],
        &["--no-h", "-h"],
    ]
    .iter()
    .enumerate()
    {
        let mut args = vec!["-a", "--stats"];
        args.extend_from_slice(flags);
        let ours = both("arsync", &args, &src, &t.path().join(format!("a{i}")));
        let theirs = both("rsync", &args, &src, &t.path().join(format!("r{i}")));
        assert_eq!((code(&ours), code(&theirs)), (0, 0), "{flags:?}");
        assert_eq!(total(&ours), total(&theirs), "--stats {flags:?}");
        // --list-only: every line (mode, size, time, name) as rsync's.
        let mut list = vec!["--list-only"];
        list.extend_from_slice(flags);
        let listed = |name: &str| {
            let out = tool_command(name)
                .args(&list)
                .arg(format!("{}/", src.display()))
                .output()
                .expect("run");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(listed("arsync"), listed("rsync"), "--list-only {flags:?}");
    }
    // The levels themselves (not only agreement): 1,234,567 + 5,000 bytes.
    let level = |flags: &[&str], dst: &str| {
        let mut args = vec!["-a", "--stats"];
        args.extend_from_slice(flags);
        total(&both("arsync", &args, &src, &t.path().join(dst)))
    };
    assert_eq!(level(&[], "l1"), "Total file size: 1,239,567 bytes");
    assert_eq!(level(&["-h"], "l2"), "Total file size: 1.24M bytes");
    assert_eq!(level(&["-hh"], "l3"), "Total file size: 1.18M bytes");
    assert_eq!(level(&["--no-h"], "l0"), "Total file size: 1239567 bytes");
    // -h alone: the help, as rsync.
    let out = run(&[s("-h")]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: arsync"));
}

#[test]
fn an_options_value_is_never_read_as_flags() {
    // The walk that recovers the order of toggling flags read every letter of a short cluster:
    // in `-f'- *.log'` the l and o of "log" turned on -l and -o (a symlink was copied where
    // rsync skips it); and a value given as the next argument that begins with a dash
    // (`-f '- *.log'`, `--filter '- *.log'`, rsync's own examples) was refused as an unknown
    // option. rsync takes both.
    if !require_rsync("an_options_value_is_never_read_as_flags") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"a");
    write(&src.join("b.log"), b"log");
    std::os::unix::fs::symlink("a", src.join("lnk")).unwrap();
    let names = |dst: &std::path::Path| {
        let mut v: Vec<String> = fs::read_dir(dst)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for (i, flags) in [
        &["-r", "-f- *.log"][..],
        &["-r", "-f", "- *.log"],
        &["-r", "--filter", "- *.log"],
        &["-r", "--exclude", "*.log"],
        &["-rt", "--exclude=-lx"],
        &["-r", "--exclude", "-lx"],
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = both_succeed(flags, &src, &t.path().join(format!("{i}")));
        assert_eq!(names(&ours), names(&theirs), "{flags:?}");
        assert!(
            !names(&ours).contains(&"lnk".to_string()),
            "{flags:?}: -l turned on"
        );
    }
}

#[test]
fn incremental_recursion_flags_are_accepted_and_copy_what_rsync_copies() {
    // Scripts written for rsync pass --no-i-r (often with -H or --delete-after, where older
    // rsyncs needed it) or --i-r; arsync refused both as unknown options (exit 1, nothing
    // copied). Its scan is always incremental and the copy is the same either way.
    if !require_rsync("incremental_recursion_flags_are_accepted_and_copy_what_rsync_copies") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    write(&src.join("a"), b"a");
    write(&src.join("d/e/f"), b"f");
    fs::hard_link(src.join("a"), src.join("d/e/a2")).unwrap();
    // Times in the past: rsync leaves a directory's time alone when it is the same second as
    // the source's (a tree made just now), which is not what this test is about.
    for (k, p) in ["a", "d/e/f", "d/e", "d", ""].iter().enumerate() {
        set_times(&src.join(p), 1_600_000_000 + k as i64, 123_456_789);
    }
    for (i, flags) in [
        &["-a", "--no-i-r"][..],
        &["-aH", "--no-inc-recursive"],
        &["-a", "--i-r"],
        &["-aH", "--inc-recursive"],
        &["-aH", "--no-i-r", "--i-r"],
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = both_succeed(flags, &src, &t.path().join(format!("{i}")));
        assert_same(&theirs, &ours, treediff::Check::archive());
        let linked = |d: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(d.join("a")).unwrap().ino()
                == fs::metadata(d.join("d/e/a2")).unwrap().ino()
        };
        assert_eq!(linked(&ours), linked(&theirs), "{flags:?}: hard link");
    }
}

#[test]
fn progress2_counts_a_large_files_bytes_while_it_is_copied() {
    // --info=progress2 counted a file's bytes only once it was done: a large file showed 0 bytes
    // for as long as it took (minutes for a big one). A 24 MiB file at --bwlimit=8M takes at
    // least 2.9 s, and a line is printed each second (stdout is not a terminal): some line
    // before the end shows part of the file.
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let size: u64 = 24 << 20;
    write(&src.join("big"), &content(1, size as usize));
    let out = copy_contents(
        &["-a", "--bwlimit=8M", "--info=progress2"],
        &src,
        &t.path().join("dst"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> = text
        .split(['\r', '\n'])
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.replace(',', "").parse().ok())
        .collect();
    assert!(
        counts.iter().any(|&n| n > 0 && n < size),
        "no line shows part of the file: {text:?}"
    );
    assert_eq!(counts.last(), Some(&size), "{text:?}");
}

#[test]
fn compression_and_fuzzy_flags_are_accepted_as_rsync_accepts_them() {
    // `rsync -avz SRC/ DST/` is the most common rsync command line; arsync refused -z (and the
    // other compression flags, and -y) as unknown options: exit 1, nothing copied. A local copy
    // has nothing to compress and writes whole files, so the copy is the same; rsync's own
    // refusals (an unknown compression name, -N on Linux) stay refusals with its codes.
    if !require_rsync("compression_and_fuzzy_flags_are_accepted_as_rsync_accepts_them") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("a"), &content(3, 100_000));
    write(&src.join("d/b"), b"b");
    for (k, p) in ["a", "d/b", "d", ""].iter().enumerate() {
        set_times(&src.join(p), 1_600_000_000 + k as i64, 0);
    }
    for (i, flags) in [
        &["-avz"][..],
        &[
            "-az",
            "--zc=zstd",
            "--zl=3",
            "--zt=2",
            "--skip-compress=gz/jpg",
        ],
        &["-a", "--compress-choice", "none", "--compress-level", "-1"],
        &["-a", "-zz", "--no-z"],
        &["-a", "--old-compress"],
        &["-a", "-y"],
        &["-a", "--fuzzy", "--fuzzy", "--delete-after"],
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = both_succeed(flags, &src, &t.path().join(format!("{i}")));
        assert_same(&theirs, &ours, treediff::Check::archive());
    }
    for (flags, want) in [
        (&["-a", "--zc=bogus"][..], 4),
        (&["-a", "-N"], 1),
        (&["-a", "--crtimes"], 1),
    ] {
        let (a, r) = (t.path().join("no.a"), t.path().join("no.r"));
        let ours = both("arsync", flags, &src, &a);
        let theirs = both("rsync", flags, &src, &r);
        assert_eq!((code(&ours), code(&theirs)), (want, want), "{flags:?}");
        assert!(!a.exists() && !r.exists(), "{flags:?}: nothing is written");
    }
}

#[test]
fn stderr_and_outbuf_route_the_output_as_rsync_does() {
    // Before: --stderr, --msgs2stderr and --outbuf were unknown options (exit 1, nothing
    // copied).
    if !require_rsync("stderr_and_outbuf_route_the_output_as_rsync_does") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        write(&src.join(format!("f{i:04}")), b"x");
    }
    let line = ">f+++++++++ f0000";
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    for (i, flags) in [
        &["--stderr=all"][..],
        &["--stderr=a"],
        &["--msgs2stderr"],
        &["--stderr=errors"],
        &["--stderr=c"],
        &["--no-msgs2stderr"],
        &["--msgs2stderr", "--stderr=e"],
        &["--stderr=all", "--no-msgs2stderr"],
    ]
    .iter()
    .enumerate()
    {
        let mut seen = Vec::new();
        for tool in ["arsync", "rsync"] {
            let mut args = vec!["-a", "-i"];
            args.extend_from_slice(flags);
            let o = both(tool, &args, &src, &t.path().join(format!("e{i}.{tool}")));
            assert_eq!(code(&o), 0, "{tool} {flags:?}: {}", err(&o));
            let out = String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == line);
            seen.push((out, err(&o).lines().any(|l| l == line)));
        }
        assert_eq!(
            seen[0], seen[1],
            "{flags:?}: (on stdout, on stderr), arsync then rsync"
        );
    }
    // Every buffering gives every line (B: in blocks, the rest at the end).
    for (i, mode) in ["N", "L", "B", "u", "f", "Block"].iter().enumerate() {
        let flag = format!("--outbuf={mode}");
        let lines = ["arsync", "rsync"].map(|tool| {
            let o = both(
                tool,
                &["-a", "-i", &flag],
                &src,
                &t.path().join(format!("b{i}.{tool}")),
            );
            assert_eq!(code(&o), 0, "{tool} {flag}: {}", err(&o));
            let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with(">f"))
                .map(str::to_string)
                .collect();
            v.sort();
            v
        });
        assert_eq!(lines[0].len(), 3000, "{flag}");
        assert_eq!(lines[0], lines[1], "{flag}");
    }
    for flags in [&["-a", "--stderr=x"][..], &["-a", "--outbuf=Q"]] {
        for tool in ["arsync", "rsync"] {
            let dst = t.path().join(format!("bad.{tool}"));
            let o = both(tool, flags, &src, &dst);
            assert_eq!(code(&o), 1, "{tool} {flags:?}");
            assert!(!dst.exists(), "{tool} {flags:?}: nothing is written");
        }
    }
}

#[test]
fn max_alloc_is_read_and_checked_as_rsync_reads_it() {
    // Before: --max-alloc was an unknown option, so an rsync command line that raises the
    // limit for a big tree (`rsync -a --max-alloc=4G ...`) failed with exit 1 and copied
    // nothing. rsync's rules for the value (and RSYNC_MAX_ALLOC) are kept, with its messages;
    // arsync's own largest allocations (--buffer-size, --inline-max) must fit under it.
    if !require_rsync("max_alloc_is_read_and_checked_as_rsync_reads_it") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("a"), &content(5, 300_000));
    write(&src.join("d/b"), b"b");
    for (k, p) in ["a", "d/b", "d", ""].iter().enumerate() {
        set_times(&src.join(p), 1_600_000_000 + k as i64, 0);
    }
    for (i, flags) in [
        &["-a", "--max-alloc=4G"][..],
        &["-a", "--max-alloc=0"],
        &["-a", "--max-alloc", "1.5M"],
        &["-a", "--max-alloc=1048576"],
    ]
    .into_iter()
    .enumerate()
    {
        let (ours, theirs) = both_succeed(flags, &src, &t.path().join(format!("ok{i}")));
        assert_same(&ours, &theirs, treediff::Check::archive());
    }
    let refused = |tool: &str, flags: &[&str], env: Option<&str>, want: &str| {
        let dst = t.path().join("never");
        let mut c = tool_command(tool);
        c.args(flags).arg(format!("{}/", src.display())).arg(&dst);
        if let Some(v) = env {
            c.env("RSYNC_MAX_ALLOC", v);
        }
        let o = c.output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(code(&o), 1, "{tool} {flags:?}: {e}");
        assert!(e.contains(want), "{tool} {flags:?}: {e}");
        assert!(!dst.exists(), "{tool} {flags:?}");
    };
    for tool in ["arsync", "rsync"] {
        refused(
            tool,
            &["-a", "--max-alloc=1K"],
            None,
            "--max-alloc=1K is too small (min: 1.00M or 0 for unlimited)",
        );
        refused(
            tool,
            &["-a", "--max-alloc=1048575"],
            None,
            "--max-alloc=1048575 is too small",
        );
        refused(
            tool,
            &["-a", "--max-alloc=lots"],
            None,
            "--max-alloc=lots is invalid",
        );
        refused(tool, &["-a"], Some("abc"), "--max-alloc=abc is invalid");
    }
    // The option wins over the environment, as in rsync.
    let (ours, theirs) = {
        let (a, r) = (t.path().join("env.a"), t.path().join("env.r"));
        for (tool, dst) in [("arsync", &a), ("rsync", &r)] {
            let o = tool_command(tool)
                .args(["-a", "--max-alloc=2M"])
                .env("RSYNC_MAX_ALLOC", "abc")
                .arg(format!("{}/", src.display()))
                .arg(dst)
                .output()
                .unwrap();
            assert_eq!(
                code(&o),
                0,
                "{tool}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        (a, r)
    };
    assert_same(&ours, &theirs, treediff::Check::archive());
    // arsync's own: a buffer larger than the limit allows.
    refused(
        "arsync",
        &["-a", "--max-alloc=2M", "--buffer-size=4M"],
        None,
        "--buffer-size needs allocations of 4194304 bytes, more than --max-alloc=2M allows",
    );
    refused(
        "arsync",
        &["-a", "--inline-max=2M"],
        Some("2M"),
        "--inline-max needs allocations of 2097153 bytes",
    );
}

/// `TOOL ARGS SRC/ DST` with rsync or arsync, by name.
fn rsync_or_arsync(
    tool: &str,
    args: &[&str],
    src: &std::path::Path,
    dst: &std::path::Path,
) -> Output {
    if tool == "rsync" {
        std::process::Command::new("rsync")
            .args(args)
            .arg(format!("{}/", src.display()))
            .arg(dst)
            .output()
            .unwrap()
    } else {
        copy_contents(args, src, dst)
    }
}

/// Every path under `root`, sorted (for two tools' results to be compared).
fn sorted_tree(root: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = treediff::walk(root)
        .unwrap()
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

/// What `run` gives for rsync and then for arsync, which must agree (`what` names the case);
/// arsync's.
fn rsync_and_arsync_agree<T: PartialEq + std::fmt::Debug>(
    what: &str,
    mut run: impl FnMut(&str) -> T,
) -> T {
    let theirs = run("rsync");
    let ours = run("arsync");
    assert_eq!(theirs, ours, "{what}: rsync's, then arsync's");
    ours
}

/// `--info=WORDS` (and what `-v`, `-vv`, `--stats`, `--progress` and `-q` imply) prints what
/// rsync 3.5 prints: item names, "is uptodate" lines, deletions, skipped and unsafe entries,
/// backups (with the backup directory named as given), source removals; an unknown word is a
/// usage error and `--info=help` is rsync's text. Before, any word but `progress0..2` was a
/// usage error, and a `--backup-dir=./bak` inside the destination was not protected from
/// `--delete` (its backups were deleted and backed up again).
#[test]
fn info_words_print_what_rsync_prints() {
    if !require_rsync("info_words_print_what_rsync_prints") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    write(&src.join("f1"), b"one\n");
    write(&src.join("a/f2"), b"two\n");
    write(&src.join("big"), &content(1, 5000));
    std::os::unix::fs::symlink("../f1", src.join("a/l")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("unsafe")).unwrap();
    mkfifo(&src.join("fifo"));
    for p in ["f1", "a/f2", "big", "a", "a/b", "fifo", ""] {
        set_times(&src.join(p), 1_600_000_000, 0);
    }
    // The destination before each run: a copy of the source with one file changed, one new
    // file missing, an extra file, and a file whose mode differs.
    let prepare = |dst: &std::path::Path| {
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(dst)
            .status()
            .unwrap();
        assert!(cp.success());
        write(&dst.join("a/f2"), b"changed\n");
        write(&dst.join("gone"), b"x\n");
        fs::remove_file(dst.join("big")).unwrap();
        chmod(&dst.join("f1"), 0o600);
        set_times(dst, 1_600_000_000, 0);
    };
    let cases: &[&[&str]] = &[
        &["-v"],
        &["-vv"],
        &["--info=name"],
        &["--info=name2"],
        &["--info=NAME2", "--out-format=%n%L"],
        &["-i", "--info=name2"],
        &["-i", "--info=name0"],
        &["-v", "--info=del0"],
        &["--out-format=%n", "--info=name0"],
        &["--info=del"],
        &["--info=none", "-v"],
        &["--info=all,progress0,stats0"],
        &["-vv", "--info=stats0", "--max-size=2000"],
        &["--info=skip", "--max-size=2000"],
        &["--no-D"],
        &["--no-D", "--info=nonreg0"],
        &["--safe-links", "--info=name"],
        &["--safe-links", "-v", "--info=name0"],
        &["--copy-unsafe-links", "--info=symsafe"],
        &["-b", "--info=backup"],
        &["-b", "--backup-dir=./bak/", "--info=backup"],
        &["-b", "--backup-dir=../bak", "--info=backup,name"],
        &["--remove-source-files", "--info=remove"],
        &["-q", "--info=all2"],
        &["--stats", "--info=stats0"],
    ];
    for (k, flags) in cases.iter().enumerate() {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let case = t.path().join(format!("{k}-{tool}"));
            fs::create_dir_all(&case).unwrap();
            let (from, dst) = (case.join("src"), case.join("dst"));
            prepare(&dst);
            let cp = std::process::Command::new("cp")
                .arg("-a")
                .arg(&src)
                .arg(&from)
                .status()
                .unwrap();
            assert!(cp.success());
            let mut args: Vec<&str> = vec!["-a", "--delete"];
            args.extend_from_slice(flags);
            let out = rsync_or_arsync(tool, &args, &from, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {out:?}");
            got.push((listed_lines(&out, &dst), sorted_tree(&case)));
        }
        assert_eq!(
            got[0].0, got[1].0,
            "{flags:?}: rsync's lines, then arsync's"
        );
        assert_eq!(got[0].1, got[1].1, "{flags:?}: rsync's tree, then arsync's");
    }

    // The log file of a run that changes nothing gets the unchanged entries when the item
    // lines show them with %i (-ii, -i --info=name2), not at -vv or --info=name2 alone, as
    // rsync's.
    for flags in [
        &["-vv"][..],
        &["--info=name2"],
        &["-ii"],
        &["-i", "--info=name2"],
    ] {
        let mut counts = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = t.path().join(format!("log-{tool}"));
            let log = t.path().join(format!("log-{tool}.txt"));
            let _ = fs::remove_file(&log);
            if !dst.exists() {
                let cp = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(&src)
                    .arg(&dst)
                    .status()
                    .unwrap();
                assert!(cp.success());
            }
            let log_arg = format!("--log-file={}", log.display());
            let mut args = vec!["-a", &log_arg];
            args.extend_from_slice(flags);
            let out = rsync_or_arsync(tool, &args, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {out:?}");
            let text = fs::read_to_string(&log).unwrap();
            // (After the "YYYY/MM/DD HH:MM:SS [PID] " prefix: an unchanged entry's line.)
            counts.push(
                text.lines()
                    .filter_map(|l| l.split_once("] ").map(|(_, r)| r))
                    .filter(|r| {
                        r.len() > 12 && r.as_bytes()[0] == b'.' && r[2..12].trim().is_empty()
                    })
                    .count(),
            );
        }
        assert_eq!(counts[0], counts[1], "{flags:?}: rsync's, then arsync's");
    }

    // An unknown word: rsync's message, exit 1, nothing written.
    let dst = t.path().join("never");
    for tool in ["rsync", "arsync"] {
        let out = if tool == "rsync" {
            std::process::Command::new("rsync")
                .args(["-a", "--info=name,bogus2"])
                .arg(&src)
                .arg(&dst)
                .output()
                .unwrap()
        } else {
            run(&[
                s("-a"),
                s("--info=name,bogus2"),
                src.as_os_str(),
                dst.as_os_str(),
            ])
        };
        assert_eq!(code(&out), 1, "{tool}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Unknown --info item: \"bogus\""),
            "{tool}: {out:?}"
        );
        assert!(!dst.exists());
    }
    // --info=help: rsync's text, word for word.
    let theirs = std::process::Command::new("rsync")
        .arg("--info=help")
        .output()
        .unwrap();
    let ours = run(&[s("--info=name,help")]);
    assert_eq!(code(&ours), 0);
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout)
    );
}

/// rsync 3.5 walks the paths the operator names and refuses a symlink on them owned by a user
/// other than root or the one running it (a user who can write there could otherwise redirect
/// a privileged copy): the destination (exit 3), `--exclude-from`/`--include-from` and merge
/// files (11), `--files-from` (1), `-T` (each file fails: 23), `--backup-dir` (11),
/// `--link-dest` (not used),
/// `--log-file` (ignored); `--insecure-links` follows them. arsync followed every one of them;
/// the same runs with rsync are the oracle: exit codes, rsync's message, and what was written.
#[test]
fn operator_paths_through_another_users_symlink_are_refused_as_rsync_refuses_them() {
    if !is_root() {
        skip(
            "operator_paths_through_another_users_symlink_are_refused_as_rsync_refuses_them",
            "needs root to give a symlink to another user",
        );
        return;
    }
    if !require_rsync(
        "operator_paths_through_another_users_symlink_are_refused_as_rsync_refuses_them",
    ) {
        return;
    }
    const REFUSING: &str = "refusing to follow a symlink owned by an untrusted user";
    let mut results = Vec::new();
    for tool in ["rsync", "arsync"] {
        let t = Scratch::new();
        let root = t.path();
        let (src, target, public) = (root.join("src"), root.join("target"), root.join("pub"));
        for d in [&src, &target.join("dst"), &target.join("ref"), &public] {
            fs::create_dir_all(d).unwrap();
        }
        write(&src.join("f"), b"new\n");
        set_times(&src.join("f"), 1_600_000_000, 0);
        write(&target.join("rules"), b"- f\n");
        write(&target.join("list"), b"f\n");
        // Someone else's link in a directory anyone may write, and root's own.
        let theirs = public.join("link");
        std::os::unix::fs::symlink(&target, &theirs).unwrap();
        lchown(&theirs, 65534, 65534);
        std::os::unix::fs::symlink(&target, root.join("mine")).unwrap();
        let d = |p: &str| root.join(p).display().to_string();
        let cases: Vec<(Vec<String>, String, i32)> = vec![
            (vec![], d("pub/link/dst/"), 3),
            (vec![], d("pub/link/new/"), 3),
            (
                vec![format!("--exclude-from={}", d("pub/link/rules"))],
                d("d1"),
                11,
            ),
            (
                vec![format!("--include-from={}", d("pub/link/rules"))],
                d("d2"),
                11,
            ),
            (
                vec![format!("--filter=merge {}", d("pub/link/rules"))],
                d("d3"),
                11,
            ),
            (
                vec![format!("--files-from={}", d("pub/link/list"))],
                d("d4"),
                1,
            ),
            (vec![format!("-T{}", d("pub/link/ref"))], d("d5"), 23),
            (
                vec![format!("--link-dest={}", d("pub/link/ref"))],
                d("d6"),
                0,
            ),
            (
                vec![format!("--log-file={}", d("pub/link/log"))],
                d("d7"),
                0,
            ),
            (
                vec!["-b".into(), format!("--backup-dir={}", d("pub/link/bak"))],
                d("d8"),
                11,
            ),
            (vec!["--insecure-links".into()], d("pub/link/dst/"), 0),
            // Root's own symlinks are followed.
            (
                vec![format!("--exclude-from={}", d("mine/rules"))],
                d("mine/dst2/"),
                0,
            ),
        ];
        // d8 holds an older f, so that a backup is due.
        fs::create_dir_all(root.join("d8")).unwrap();
        write(&root.join("d8/f"), b"old\n");
        set_times(&root.join("d8/f"), 1_000_000_000, 0);
        for (flags, dest, want) in &cases {
            let out = std::process::Command::new(if tool == "rsync" {
                std::path::PathBuf::from("rsync")
            } else {
                std::path::PathBuf::from(env!("CARGO_BIN_EXE_arsync"))
            })
            .arg("-a")
            .args(flags)
            .arg(format!("{}/", src.display()))
            .arg(dest)
            .output()
            .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(code(&out), *want, "{tool} {flags:?} {dest}: {err}");
            let refused = !flags
                .iter()
                .any(|f| f.contains("mine") || f == "--insecure-links");
            assert_eq!(
                err.contains(REFUSING),
                refused,
                "{tool} {flags:?} {dest}: {err}"
            );
        }
        // What was written, for the two tools to agree on: the target tree and the
        // destinations.
        // (rsync 3.5 makes the new destination's directory through the link before it refuses
        // to enter it: target/new; arsync refuses before, and makes nothing there.)
        let mut tree = sorted_tree(root);
        tree.retain(|p| p != "target/new");
        if tool == "arsync" {
            assert!(!target.join("new").exists());
        }
        let f_in = |p: &str| fs::read(root.join(p)).ok();
        results.push((tree, f_in("d8/f"), f_in("target/dst/f"), f_in("d6/f")));
    }
    assert_eq!(
        results[0], results[1],
        "rsync's tree and files, then arsync's"
    );
    // The backup directory refused: the old file is still there, neither backed up nor
    // replaced; --insecure-links wrote through the link.
    assert_eq!(results[1].1.as_deref(), Some(&b"old\n"[..]));
    assert_eq!(results[1].2.as_deref(), Some(&b"new\n"[..]));
}

/// `--drop-D` (rsync 3.5): no device or special file is made, whatever `-D`, `--devices` or
/// `--specials` say and wherever they stand; they are skipped with "skipping non-regular file";
/// `--copy-devices` still copies a device's content as a file. rsync is the oracle. (It was an
/// unknown option.)
#[test]
fn drop_d_makes_no_devices_or_specials_as_rsync() {
    if !require_rsync("drop_d_makes_no_devices_or_specials_as_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"x");
    mkfifo(&src.join("sub/fifo"));
    if is_root() {
        mknod(
            &src.join("null"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        );
    }
    for (k, flags) in [
        &["-a", "--drop-D"][..],
        &["-a", "--drop-D", "-D", "--devices", "--specials"],
        &["-a", "--drop-D", "--copy-devices"],
    ]
    .iter()
    .enumerate()
    {
        rsync_and_arsync_agree(&format!("{flags:?}"), |tool| {
            let dst = t.path().join(format!("{k}-{tool}"));
            let out = rsync_or_arsync(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {out:?}");
            let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            let tree: Vec<(String, u32)> = {
                let mut v: Vec<(String, u32)> = treediff::walk(&dst)
                    .unwrap()
                    .into_iter()
                    .map(|p| {
                        let m = fs::symlink_metadata(dst.join(&p)).unwrap();
                        use std::os::unix::fs::MetadataExt;
                        (p.display().to_string(), m.mode() & libc::S_IFMT)
                    })
                    .collect();
                v.sort();
                v
            };
            assert!(
                !tree
                    .iter()
                    .any(|(_, t)| *t == libc::S_IFIFO || *t == libc::S_IFCHR),
                "{tool} {flags:?}: {tree:?}"
            );
            (lines, tree)
        });
    }
}

/// Operator paths that are not what they should be, as rsync 3.5 meets them: a reference
/// directory that is missing or a file (a warning, the run goes on), a backup directory that is
/// a file (exit 1), a `DEST/` that is a file (exit 3, was arsync's 11), a rules file that is a
/// directory (no rules, was arsync's 11). Exit codes and the first words of each message agree
/// with rsync's; what was copied too.
#[test]
fn odd_operator_paths_get_rsyncs_warnings_and_exit_codes() {
    if !require_rsync("odd_operator_paths_get_rsyncs_warnings_and_exit_codes") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), b"x");
    write(&t.path().join("afile"), b"a");
    let at = |p: &str| t.path().join(p).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("--link-dest={}", at("nonexistent"))], "d1"),
        (vec!["--copy-dest=nonexistent".into()], "d2"),
        (vec![format!("--compare-dest={}", at("afile"))], "d3"),
        (
            vec!["-b".into(), format!("--backup-dir={}", at("afile"))],
            "d4",
        ),
        (vec![], "afile/"),
        (vec![format!("--exclude-from={}", src.display())], "d5"),
        (vec![format!("--filter=merge {}", src.display())], "d6"),
    ];
    // rsync's message without its program prefix, side tag and source location.
    let words = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(|l| {
                let l = l
                    .trim_start_matches("rsync: ")
                    .trim_start_matches("arsync: ")
                    .trim_start_matches("[Receiver] ");
                let l = l.split(" at main.c(").next().unwrap_or(l);
                // (rsync names a relative destination by its absolute path.)
                l.replace(&format!("{}/", t.path().display()), "")
                    .replace("arsync error", "error")
                    .replace("rsync error", "error")
            })
            .collect()
    };
    for (flags, dest) in &cases {
        rsync_and_arsync_agree(&format!("{flags:?} {dest}"), |tool| {
            let dst = t.path().join(tool).join(dest);
            fs::create_dir_all(t.path().join(tool)).unwrap();
            if *dest == "afile/" {
                write(&t.path().join(tool).join("afile"), b"a");
            }
            let args: Vec<&str> = std::iter::once("-a")
                .chain(flags.iter().map(String::as_str))
                .collect();
            let out = rsync_or_arsync(tool, &args, &src, &dst);
            let w: Vec<String> = words(&out)
                .into_iter()
                .map(|l| l.replace(&format!("{tool}/"), ""))
                .collect();
            let mut tree = sorted_tree(&t.path().join(tool));
            // (rsync makes the destination directory before it checks the backup directory;
            // arsync refuses the run before writing anything.)
            tree.retain(|p| p != "d4");
            (code(&out), w, tree)
        });
        assert!(!t.path().join("arsync/d4").exists());
    }
}

/// `--debug=filter` (and `-vv`, which sets it): the rule that decided about each entry a rule
/// matched, in rsync 3.5's words, on the sending side (`hiding`/`showing`) and the receiving
/// side (`protecting`/`risking`), with rsync's names for rules from files (`<rule from a file
/// read earlier>`, ` [per-dir .rsync-filter]`) and `-C`'s (` [global CVS]`). rsync is the
/// oracle. (`--debug` was a usage error, and `-vv` said nothing of the rules.)
#[test]
fn debug_filter_names_the_deciding_rule_as_rsync() {
    if !require_rsync("debug_filter_names_the_deciding_rule_as_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for f in ["a.o", "b.c", "q.x", "core", "x.bak", "sub/c.o", "sub/d.c"] {
        write(&src.join(f), b"x");
    }
    write(&src.join(".rsync-filter"), b"- b.c\n");
    let rules = t.path().join("rules");
    write(&rules, b"- *.x\n");
    let merge = format!("--filter=merge {}", rules.display());
    let from = format!("--exclude-from={}", rules.display());
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "--debug=filter",
            "-F",
            "--include=a.o",
            "--exclude=sub/",
            &merge,
        ],
        vec!["-vv", &from, "-C"],
        vec!["--debug=FILTER", "--exclude=/sub/**", "--include=*/"],
        vec![
            "--debug=filter",
            "--exclude=*.o",
            "--include=*.c",
            "--exclude=*",
        ],
        vec![
            "--debug=filter",
            "--delete",
            "--exclude=*.o",
            "--filter=P zz/",
        ],
        vec!["-vv", "--delete", "--filter=P *.c", "--filter=R gone.c"],
        vec!["--debug=filter", "--delete-after", "-F"],
        vec!["--debug=filter", "--delete", "-C"],
        vec!["--debug=filter0", "-vv", "--exclude=*.o"],
    ];
    for (k, flags) in cases.iter().enumerate() {
        let (lines, _) = rsync_and_arsync_agree(&format!("{flags:?}"), |tool| {
            let dst = t.path().join(format!("{k}-{tool}"));
            // What the destination has that the source lacks, for the deletion rules.
            fs::create_dir_all(dst.join("zz")).unwrap();
            fs::create_dir_all(dst.join("sub2/deep")).unwrap();
            for f in ["keep.o", "zz/x", "gone.c", "sub2/deep/y.o", "sub2/r.c"] {
                write(&dst.join(f), b"y");
            }
            let mut args = vec!["-a"];
            args.extend_from_slice(flags);
            let out = rsync_or_arsync(tool, &args, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {out:?}");
            let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" because of pattern "))
                .map(str::to_string)
                .collect();
            lines.sort();
            (lines, sorted_tree(&dst))
        });
        let expect_lines = !flags.contains(&"--debug=filter0");
        assert_eq!(!lines.is_empty(), expect_lines, "{flags:?}");
    }
    // --debug=help is rsync's text; an unknown word is rsync's usage error.
    let theirs = std::process::Command::new("rsync")
        .arg("--debug=help")
        .output()
        .unwrap();
    let ours = run(&[s("--debug=help")]);
    assert_eq!(code(&ours), 0);
    assert_eq!(ours.stdout, theirs.stdout);
    let bad = run(&[
        s("--debug=bogus"),
        src.as_os_str(),
        t.path().join("x").as_os_str(),
    ]);
    assert_eq!(code(&bad), 1);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Unknown --debug item: \"bogus\""));
}

/// `--old-dirs`/`--old-d` (rsync's `--dirs` for old rsyncs): recursion with `- /*/*` after the
/// other rules, so the top level's directories are made empty; `-d`/`--no-d` override it by
/// place. rsync is the oracle. (It was an unknown option.)
#[test]
fn old_dirs_makes_the_top_level_as_rsync() {
    if !require_rsync("old_dirs_makes_the_top_level_as_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    for f in ["f", "a/g", "a/b/h"] {
        write(&src.join(f), b"x");
    }
    for (k, flags) in [
        &["-a", "--old-d"][..],
        &["-a", "--old-dirs", "--exclude=f"],
        &["-a", "--old-d", "--no-d"],
        &["-a", "--no-d", "--old-d"],
        &["--old-d", "-lt"],
    ]
    .iter()
    .enumerate()
    {
        rsync_and_arsync_agree(&format!("{flags:?}"), |tool| {
            let dst = t.path().join(format!("{k}-{tool}"));
            let out = rsync_or_arsync(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {out:?}");
            sorted_tree(&dst)
        });
    }
}

/// `--suffix` with a slash is refused whether or not `-b` is given, and an empty or "."
/// `--partial-dir` is `--partial` (the partial file kept under its own name), as rsync 3.5 reads
/// them; arsync refused the second and accepted the first without `-b`. rsync is the oracle:
/// exit codes and what was written.
#[test]
fn suffix_and_partial_dir_values_are_read_as_rsync_reads_them() {
    if !require_rsync("suffix_and_partial_dir_values_are_read_as_rsync_reads_them") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("d/f"), b"x");
    for (k, flags) in [
        &["-a", "--suffix=a/b"][..],
        &["-a", "-b", "--suffix=a/b"],
        &["-a", "--partial-dir="],
        &["-a", "--partial-dir=."],
    ]
    .iter()
    .enumerate()
    {
        rsync_and_arsync_agree(&format!("{flags:?}"), |tool| {
            let top = t.path().join(format!("{k}-{tool}"));
            fs::create_dir_all(&top).unwrap();
            let out = rsync_or_arsync(tool, flags, &src, &top.join("dst"));
            (code(&out), sorted_tree(&top))
        });
    }
}
