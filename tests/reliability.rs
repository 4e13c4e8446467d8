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
            const BPF_LD_W_ABS: u16 = 0x00 | 0x00 | 0x20;
            const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10 | 0x00;
            const BPF_RET_K: u16 = 0x06 | 0x00;
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
