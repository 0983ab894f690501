//! Ctrl-C and SIGTERM, handled like `just`'s interrupt guard: the first one
//! asks es to stop starting new work and to let each host finish (or undo)
//! the step it is in, so that no host is left with its processes stopped and
//! no lock is left behind; the summary is printed and es exits 130 (SIGINT)
//! or 143 (SIGTERM). A second Ctrl-C exits at once.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, 0 while none was.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, write(2) and _exit(2).
    // The first signal wins: SIGINT then SIGTERM still exits 130.
    let first = match SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => 0,
        Err(earlier) => earlier,
    };
    if first == 0 {
        let note: &[u8] =
            b"\nes: interrupted: finishing the steps under way (Ctrl-C again to abort at once)\n";
        // SAFETY: write(2) on stderr with a static buffer is async-signal-safe.
        unsafe { libc::write(2, note.as_ptr().cast(), note.len()) };
    } else if signal == libc::SIGINT {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls async-signal-safe
        // functions; SA_RESTART keeps blocking reads going after it ran.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Ctrl-C and SIGTERM end es at once, as for any program: for a command with
/// nothing to finish or undo (`es logs -f`).
pub fn end_at_once() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Whether es was asked to stop.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit status for the signal received (128 + its number), if any.
pub fn exit_code() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(128 + signal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_noted_and_the_first_one_gives_the_exit_code() {
        install();
        assert!(!requested());
        // SAFETY: raising SIGTERM in this process runs the handler installed above.
        unsafe { libc::raise(libc::SIGTERM) };
        assert!(requested());
        assert_eq!(exit_code(), Some(143));
        SIGNAL.store(0, Ordering::SeqCst);

        // The first signal gives the exit code.
        on_signal(libc::SIGINT);
        // A SIGTERM after the Ctrl-C (a supervisor stopping es) does not
        // change what es reports.
        on_signal(libc::SIGTERM);
        assert_eq!(exit_code(), Some(130));
        SIGNAL.store(0, Ordering::SeqCst);
    }
}
