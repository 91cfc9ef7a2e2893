//! Signal names, for options (`--drain-signal TERM`), commands (`hotsup
//! signal USR1`) and logs.

use rustix::process::Signal;

/// Every standard Linux signal (1 to 31 on most architectures) but
/// `SIGSTKFLT`, which exists only on some, by its conventional name.
/// Real-time signals have no name here: they are given and shown as
/// numbers.
const NAMES: [(Signal, &str); 30] = [
    (Signal::HUP, "SIGHUP"),
    (Signal::INT, "SIGINT"),
    (Signal::QUIT, "SIGQUIT"),
    (Signal::ILL, "SIGILL"),
    (Signal::TRAP, "SIGTRAP"),
    (Signal::ABORT, "SIGABRT"),
    (Signal::BUS, "SIGBUS"),
    (Signal::FPE, "SIGFPE"),
    (Signal::KILL, "SIGKILL"),
    (Signal::USR1, "SIGUSR1"),
    (Signal::SEGV, "SIGSEGV"),
    (Signal::USR2, "SIGUSR2"),
    (Signal::PIPE, "SIGPIPE"),
    (Signal::ALARM, "SIGALRM"),
    (Signal::TERM, "SIGTERM"),
    (Signal::CHILD, "SIGCHLD"),
    (Signal::CONT, "SIGCONT"),
    (Signal::STOP, "SIGSTOP"),
    (Signal::TSTP, "SIGTSTP"),
    (Signal::TTIN, "SIGTTIN"),
    (Signal::TTOU, "SIGTTOU"),
    (Signal::URG, "SIGURG"),
    (Signal::XCPU, "SIGXCPU"),
    (Signal::XFSZ, "SIGXFSZ"),
    (Signal::VTALARM, "SIGVTALRM"),
    (Signal::PROF, "SIGPROF"),
    (Signal::WINCH, "SIGWINCH"),
    (Signal::IO, "SIGIO"),
    (Signal::POWER, "SIGPWR"),
    (Signal::SYS, "SIGSYS"),
];

/// The conventional name of signal number `raw` (`SIGTERM`), if it has
/// one.
pub fn name(raw: i32) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(s, _)| s.as_raw() == raw)
        .map(|(_, n)| *n)
}

/// The number of the signal `s` names: `TERM`, `SIGTERM` and `sigterm`
/// alike, or the decimal number of a named signal (as rustix's
/// `Signal::from_named_raw` knows them). `None` for anything else.
pub fn parse(s: &str) -> Option<i32> {
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let raw = NAMES
        .iter()
        .find(|(_, n)| n.strip_prefix("SIG") == Some(bare))
        .map(|(s, _)| s.as_raw())
        .or_else(|| bare.parse::<i32>().ok())?;
    Signal::from_named_raw(raw).map(|s| s.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_both_ways() {
        assert_eq!(parse("TERM"), Some(Signal::TERM.as_raw()));
        assert_eq!(parse("sigquit"), Some(Signal::QUIT.as_raw()));
        assert_eq!(parse(" SIGUSR2 "), Some(Signal::USR2.as_raw()));
        assert_eq!(parse("10"), Some(10));
        assert_eq!(parse("tstp"), Some(Signal::TSTP.as_raw()));
        assert_eq!(parse("NOPE"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("SIG"), None);
        assert_eq!(name(Signal::KILL.as_raw()), Some("SIGKILL"));
        assert_eq!(name(99), None);
        for (sig, n) in NAMES {
            assert_eq!(parse(n), Some(sig.as_raw()), "{n}");
            assert_eq!(name(sig.as_raw()), Some(n));
        }
        // Real-time signals are not named signals.
        assert_eq!(parse("40"), None);
    }
}
