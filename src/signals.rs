//! The signals hotsup acts on, and holding them back until it can.
//!
//! Until the event loop has installed its handlers, a SIGTERM would kill
//! hotsup with the default action and leave its Unix socket files behind. So
//! `main` blocks these signals first, and the supervisor unblocks them once
//! its handlers exist: a signal sent meanwhile is delivered then, not lost.
//! Children never inherit the mask: `child::prepare_child` clears it.
//! hotsup's only other thread, the log writer, blocks every signal for its
//! whole life (see `logging`), so these reach the event loop's thread.

const HANDLED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
];

fn mask(how: libc::c_int) {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset gets valid signal
    // numbers; sigprocmask gets that initialised set and a null old-set
    // pointer, which it allows. It sets the mask of the event loop's thread,
    // the one that takes signals.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in HANDLED {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        libc::sigprocmask(how, set.as_ptr(), std::ptr::null_mut());
    }
}

/// Holds the handled signals pending until [`release`].
pub fn hold() {
    mask(libc::SIG_BLOCK);
}

/// Delivers held signals to the handlers now installed.
pub fn release() {
    mask(libc::SIG_UNBLOCK);
}

/// Blocks every handled signal in the calling thread for its whole life:
/// for the runtime's blocking-pool thread, so that hotsup's signals reach
/// the loop's thread only. Otherwise one sent while the loop's thread holds
/// them (across the `execve` of `hotsup upgrade --self`) would go to that
/// thread, whose handler would take it, and the exec would lose it.
pub fn hold_in_this_thread() {
    mask(libc::SIG_BLOCK);
}

/// Signals by name, for `--drain-signal`, `hotsup signal` and logs.
const NAMES: [(i32, &str); 20] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGWINCH, "SIGWINCH"),
];

/// A signal's conventional name (`SIGTERM`), or `signal N`.
pub fn name(raw: i32) -> String {
    NAMES
        .iter()
        .find(|(n, _)| *n == raw)
        .map(|(_, s)| (*s).to_string())
        .unwrap_or_else(|| format!("signal {raw}"))
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or a number.
pub fn parse(s: &str) -> Result<rustix::process::Signal, String> {
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let raw = NAMES
        .iter()
        .find(|(_, n)| n.strip_prefix("SIG") == Some(bare))
        .map(|(r, _)| *r)
        .or_else(|| bare.parse::<i32>().ok());
    raw.and_then(rustix::process::Signal::from_named_raw)
        .ok_or_else(|| "not a signal name or number, such as TERM or 15".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").map(|s| s.as_raw()), Ok(libc::SIGTERM));
        assert_eq!(parse("sigquit").map(|s| s.as_raw()), Ok(libc::SIGQUIT));
        assert_eq!(parse("10").map(|s| s.as_raw()), Ok(libc::SIGUSR1));
        assert_eq!(parse("tstp").map(|s| s.as_raw()), Ok(libc::SIGTSTP));
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(99), "signal 99");
        for (raw, n) in NAMES {
            assert_eq!(parse(n).map(|s| s.as_raw()), Ok(raw), "{n}");
        }
    }
}
