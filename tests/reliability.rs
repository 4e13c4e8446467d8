//! Faults a data mover must survive: io_uring refused by a seccomp filter, SIGINT/SIGTERM,
//! a full destination file system, a low fd limit, and source files that change while they are
//! read. Each test asserts the fault was actually hit.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Make `io_uring_setup` fail with EPERM in the child (a per-process seccomp filter, as a
/// container runtime would install), leaving everything else allowed.
fn deny_io_uring(cmd: &mut Command) {
    #[cfg(target_arch = "x86_64")]
    const NR_IO_URING_SETUP: u32 = 425;
    #[cfg(target_arch = "aarch64")]
    const NR_IO_URING_SETUP: u32 = 425;
    // SAFETY: only async-signal-safe calls (prctl, syscall) between fork and exec; the filter
    // program lives on this stack frame for the duration of the seccomp call.
    unsafe {
        cmd.pre_exec(|| {
            // BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K.
            const BPF_LD_W_ABS: u16 = 0x20;
            const BPF_JMP_JEQ_K: u16 = 0x15;
            const BPF_RET_K: u16 = 0x06;
            const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
            const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
            let filter = [
                libc::sock_filter {
                    code: BPF_LD_W_ABS,
                    jt: 0,
                    jf: 0,
                    k: 0, // seccomp_data.nr
                },
                libc::sock_filter {
                    code: BPF_JMP_JEQ_K,
                    jt: 0,
                    jf: 1,
                    k: NR_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: BPF_RET_K,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
                },
                libc::sock_filter {
                    code: BPF_RET_K,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_seccomp, 1 /* SET_MODE_FILTER */, 0, &prog) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn io_uring_refused_falls_back_and_copies_exactly() {
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 50,
            depth: 5,
        },
    );
    // The filter really is in force: --version reports io_uring as unavailable.
    let mut v = arsync();
    v.arg("--version");
    deny_io_uring(&mut v);
    let out = v.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("io_uring: unavailable"), "{text}");
    for method in ["auto", "uring"] {
        let dst = s.path().join(method);
        let mut c = arsync();
        c.arg("-a")
            .arg(format!("--copy-method={method}"))
            .arg(format!("{}/", src.display()))
            .arg(&dst);
        deny_io_uring(&mut c);
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{method}: {}", err(&out));
        assert!(
            err(&out).contains("io_uring is not available"),
            "no word about the fallback: {}",
            err(&out)
        );
        assert_same(&src, &dst, treediff::Check::archive());
    }
}

/// Start `arsync ARGS SRC/ DST`, wait until `ready()` says the copy is under way, then send
/// `sig`; returns the exit code. The child is killed if the test fails first.
fn signal_mid_copy(
    args: &[&str],
    src: &Path,
    dst: &Path,
    sig: i32,
    ready: impl Fn() -> bool,
) -> i32 {
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(
        arsync()
            .args(args)
            .arg(format!("{}/", src.display()))
            .arg(dst)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while !ready() {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("the copy ended ({st}) before the signal could be sent");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120));
        std::thread::yield_now();
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, sig) }, 0);
    let status = child.0.wait().unwrap();
    status.code().unwrap_or(-1)
}

fn temporaries(root: &Path) -> Vec<std::path::PathBuf> {
    treediff::walk(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("~arsync"))
        .collect()
}

#[test]
fn sigint_and_sigterm_stop_cleanly_with_exit_20() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("big"), &content(1, 128 << 20));
    for i in 0..20 {
        write(&src.join(format!("sub/f{i}")), &content(i, 1000));
    }
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        let dst = s.path().join(name);
        let slow = [
            "-a",
            "--temp-names",
            "--copy-method=uring",
            "--buffer-size=4K",
            "--queue-depth=1",
        ];
        let rc = signal_mid_copy(&slow, &src, &dst, sig, || {
            temporaries(&dst)
                .iter()
                .any(|p| fs::metadata(dst.join(p)).is_ok_and(|m| m.len() > 0))
        });
        assert_eq!(rc, 20, "{name}: rsync's code for a signal");
        assert!(
            temporaries(&dst).is_empty(),
            "{name}: {:?}",
            temporaries(&dst)
        );
        assert!(
            !dst.join("big").exists(),
            "{name}: a half-written file was published"
        );
        let out = copy_contents(&["-a"], &src, &dst);
        assert_eq!(code(&out), 0, "{}", err(&out));
        assert_same(&src, &dst, treediff::Check::archive());
    }
}

#[test]
fn full_destination_keeps_complete_files_and_a_rerun_finishes() {
    if !is_root() {
        skip(
            "full_destination_keeps_complete_files_and_a_rerun_finishes",
            "needs root to loop-mount a small ext4 image",
        );
        return;
    }
    let _lock = mount_lock();
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // 12 files of 3 MiB into a 24 MiB file system: some fit, the rest do not.
    for i in 0..12 {
        write(&src.join(format!("d/f{i:02}")), &content(i, 3 << 20));
    }
    let m = Mount::new(
        &s.path().join("img"),
        24,
        &["mkfs.ext4", "-q", "-F"],
        &s.path().join("mnt"),
    );
    let dst = m.dir.join("dst");
    let out = copy_contents(&["-a"], &src, &dst);
    let e = err(&out);
    assert_eq!(code(&out), 11, "rsync's code for a write failure: {e}");
    assert!(e.contains("No space left on device (28)"), "{e}");
    let mut complete = 0;
    for i in 0..12 {
        let name = format!("d/f{i:02}");
        match fs::read(dst.join(&name)) {
            Ok(data) => {
                assert_eq!(
                    data,
                    fs::read(src.join(&name)).unwrap(),
                    "{name} is not exact"
                );
                complete += 1;
            }
            Err(_) => assert!(
                e.contains(&format!("f{i:02}")),
                "{name} failed silently: {e}"
            ),
        }
    }
    assert!(
        complete > 0 && complete < 12,
        "the fault was not hit ({complete} fit)"
    );
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    // Space freed (the files that made it are moved away): the re-run completes.
    let keep = m.dir.join("moved");
    fs::create_dir(&keep).unwrap();
    for i in 0..12 {
        let _ = fs::remove_file(dst.join(format!("d/f{i:02}")));
    }
    let small_src = s.path().join("src2");
    fs::create_dir_all(small_src.join("d")).unwrap();
    for i in 0..4 {
        fs::copy(
            src.join(format!("d/f{i:02}")),
            small_src.join(format!("d/f{i:02}")),
        )
        .unwrap();
    }
    let out = copy_contents(&["-a", "--delete"], &small_src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&small_src, &dst, treediff::Check::archive());
}

#[test]
fn a_low_fd_limit_still_completes() {
    let s = Scratch::new();
    let src = s.path().join("src");
    // 10,000 files in 100 directories, 3 levels.
    for d in 0..100 {
        let dir = src.join(format!("a{}/b{}", d / 10, d));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            write(&dir.join(format!("f{f}")), format!("{d}/{f}").as_bytes());
        }
    }
    let dst = s.path().join("dst");
    let mut c = arsync();
    c.arg("-a").arg(format!("{}/", src.display())).arg(&dst);
    // SAFETY: setrlimit between fork and exec (async-signal-safe).
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
}
