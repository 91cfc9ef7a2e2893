//! The signals hotsup acts on, and holding them back until it can.
//!
//! Until the event loop has installed its handlers, a SIGTERM would kill
//! hotsup with the default action and leave its Unix socket files behind. So
//! `main` blocks these signals first, and the supervisor unblocks them once
//! its handlers exist: a signal sent meanwhile is delivered then, not lost.
//! Children never inherit the mask: `fork` clears it in the child.
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

/// Holds the handled signals pending until [`release`].
pub fn hold() {
    crate::sys::mask_signals(&HANDLED, true);
}

/// Delivers held signals to the handlers now installed.
pub fn release() {
    crate::sys::mask_signals(&HANDLED, false);
}

/// Blocks every handled signal in the calling thread for its whole life:
/// for the runtime's blocking-pool thread, so that hotsup's signals reach
/// the loop's thread only. Otherwise one sent while the loop's thread holds
/// them (across the `execve` of `hotsup upgrade --self`) would go to that
/// thread, whose handler would take it, and the exec would lose it.
pub fn hold_in_this_thread() {
    crate::sys::mask_signals(&HANDLED, true);
}

/// A signal's conventional name (`SIGTERM`), or `signal N`.
pub fn name(raw: i32) -> String {
    hotsup_os::signals::name(raw).map_or_else(|| format!("signal {raw}"), str::to_string)
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or a number, for `--drain-signal`
/// and `hotsup signal`.
pub fn parse(s: &str) -> Result<rustix::process::Signal, String> {
    hotsup_os::signals::parse(s)
        .and_then(rustix::process::Signal::from_named_raw)
        .ok_or_else(|| "not a signal name or number, such as TERM or 15".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the parsing are hotsup-os's (tested there); this is
    /// what hotsup adds: a name for every number, and a usage message.
    #[test]
    fn unnamed_numbers_and_bad_names() {
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(99), "signal 99");
        assert_eq!(parse("usr2").map(|s| s.as_raw()), Ok(libc::SIGUSR2));
        assert!(parse("NOPE").unwrap_err().contains("such as TERM"));
    }
}
