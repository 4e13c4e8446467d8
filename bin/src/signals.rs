//! SIGINT, SIGTERM and SIGHUP: the first one asks the engine to stop cleanly (staged files are
//! discarded, nothing half-written is published, the run ends with rsync's exit code 20); a second
//! one exits at once with the same code.
//!
//! The signals are blocked in the main thread before the engine starts its core threads (which
//! inherit the mask), and one thread takes them with `sigwait`, so no code runs in a signal
//! handler.

use std::io::Write;

/// Block SIGINT/SIGTERM/SIGHUP in this thread (and the threads it starts from now on) and turn them
/// into `stop.request()` on a dedicated thread.
pub fn stop_on_signals(stop: engine::Stop) {
    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is initialised; the old mask is not needed.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("arsync-signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` holds signals blocked in every thread; `sig` receives one.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let name = match sig {
                    libc::SIGINT => "SIGINT",
                    libc::SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                if stopping {
                    let _ = writeln!(std::io::stderr(), "arsync: received {name} again: exiting");
                    std::process::exit(20);
                }
                stopping = true;
                let _ = writeln!(
                    std::io::stderr(),
                    "arsync: received {name}: stopping (files being written are discarded)"
                );
                stop.request();
            }
        });
    if spawned.is_err() {
        // Without the thread, restore default handling rather than ignore the signals.
        // SAFETY: unblocking the set we blocked above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}
