//! The client subcommands: `hotsup upgrade|status|stop|signal`.
//!
//! Exit codes: 0 success; 1 the operation failed; 2 usage (several
//! supervisors run and neither --control nor --name picks one); 5 hotsup
//! cannot be reached (none runs). `upgrade` and `rollback` tell their
//! outcomes apart: 1 failed before ready, 3 rolled back after ready,
//! 4 refused or superseded, 6 gave up waiting (see
//! [`crate::cli::CLIENT_EXIT_CODES`]). A reader of stdout that went away
//! (EPIPE, as with `| head`) does not change the exit code; another error
//! writing stdout exits 1.
//!
//! Text from the server (a child's STATUS above all) is printed with its
//! control characters escaped (`\x1b`), so that it cannot drive the
//! operator's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Target;
use crate::control::{self, Reply, Request};
use crate::lifecycle::{FailureReason, LastResult, UpgradeOutcome};
use crate::logging;

const OK: u8 = 0;
const FAILED: u8 = 1;
const USAGE: u8 = 2;
const ROLLED_BACK: u8 = 3;
const REFUSED: u8 = 4;
const UNREACHABLE: u8 = 5;
const TIMED_OUT: u8 = 6;

fn path_of(target: &Target) -> Result<PathBuf, u8> {
    match (&target.control, &target.name) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(n)) => Ok(control::default_path(n)),
        (None, None) => the_only_one(&crate::runtime_dir::dir()),
    }
}

/// Without --name or --control: the control socket of the only supervisor
/// of this user that is running, found by its live socket in the default
/// directory. Several: they are listed, and the choice is the user's.
fn the_only_one(dir: &std::path::Path) -> Result<PathBuf, u8> {
    let live = control::live_sockets(dir);
    match live.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            logging::report(format_args!(
                "no hotsup is running here: no live control socket in {} (give --control PATH for one elsewhere)",
                dir.display()
            ));
            Err(UNREACHABLE)
        }
        several => {
            let mut msg = format!(
                "{} hotsups are running; choose one with --name NAME:",
                several.len()
            );
            for p in several {
                let name = p.file_stem().unwrap_or_default().to_string_lossy();
                let _ = write!(
                    msg,
                    "\n  {:<16} {}",
                    clean(&name),
                    clean(&p.display().to_string())
                );
            }
            logging::report(msg);
            Err(USAGE)
        }
    }
}

/// Connects to the control socket and sends `request`; the stream is left
/// for reading the answer.
fn connect(
    target: &Target,
    request: Request,
) -> Result<(UnixStream, PathBuf, std::io::Result<()>), u8> {
    let path = path_of(target)?;
    let fail = |what: String| {
        logging::report(what);
        UNREACHABLE
    };
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        fail(format!(
            "cannot reach the control socket {}: {e} (is hotsup running, with this --name or --control?)",
            path.display()
        ))
    })?;
    // Only trust a server run by us or by root: a socket planted in a
    // shared directory must not tell a deploy script "ready".
    let me = rustix::process::geteuid().as_raw();
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(cred) if cred.uid.as_raw() == me || cred.uid.is_root() => {}
        Ok(cred) => {
            return Err(fail(format!(
                "{} is served by uid {}, not by us or root; refusing to talk to it",
                path.display(),
                cred.uid.as_raw()
            )));
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot check who serves {}: {e}",
                path.display()
            )));
        }
    }
    let mut line = serde_json::to_vec(&control::Envelope {
        version: control::VERSION,
        request,
    })
    .map_err(|e| fail(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    // A server that refuses the client answers before reading the request,
    // so a failed send may still have a reply waiting.
    let sent = stream.write_all(&line);
    Ok((stream, path, sent))
}

/// Sends one request and reads the one-line reply.
fn call(target: &Target, request: Request, timeout: Option<Duration>) -> Result<Reply, u8> {
    let fail = |what: String| {
        logging::report(what);
        UNREACHABLE
    };
    let (stream, path, sent) = connect(target, request)?;
    let _ = stream.set_read_timeout(timeout);
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    if reply.is_empty() {
        if let Err(e) = &read
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            logging::report(format_args!(
                "no answer from {} within the timeout; the request goes on",
                path.display()
            ));
            return Err(TIMED_OUT);
        }
        return Err(fail(match (sent, read) {
            (Err(e), _) => format!("cannot send to {}: {e}", path.display()),
            (_, Err(e)) => format!("no reply from {}: {e}", path.display()),
            _ => format!("{} closed without replying", path.display()),
        }));
    }
    serde_json::from_str(&reply)
        .map_err(|e| fail(format!("malformed reply from {}: {e}", path.display())))
}

fn refused(reply: &Reply) -> Option<u8> {
    if reply.upgrade.is_none() && !reply.ok {
        logging::report(clean(reply.error.as_deref().unwrap_or("request refused")));
        return Some(FAILED);
    }
    None
}

/// Prints `text` on stdout and returns `code`, or 1 if stdout failed (other
/// than by its reader going away).
fn say(text: &str, code: u8) -> u8 {
    match logging::print(text) {
        Ok(()) => code,
        Err(e) => {
            logging::report(format_args!("cannot write to stdout: {e}"));
            FAILED
        }
    }
}

/// `s` with control characters escaped as tracing escapes them in the log
/// (`\x1b`, `\u{9b}`): a child's STATUS must not reach the terminal raw.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c as u32 {
            n @ (0..=0x1f | 0x7f) => {
                let _ = write!(out, "\\x{n:02x}");
            }
            n @ 0x80..=0x9f => {
                let _ = write!(out, "\\u{{{n:x}}}");
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub fn upgrade(target: &Target, no_wait: bool, timeout: Duration) -> u8 {
    outcome(call(
        target,
        Request::Upgrade { wait: !no_wait },
        Some(timeout),
    ))
}

/// `hotsup upgrade --self`: asks for the self-upgrade, then waits until
/// the control socket answers from the new binary.
pub fn self_upgrade(target: &Target, binary: Option<PathBuf>, timeout: Duration) -> u8 {
    let started = std::time::Instant::now();
    let before = match call(target, Request::Status, Some(timeout)) {
        Ok(r) => match r.status {
            Some(s) => s,
            None => {
                logging::report(clean(
                    r.error.as_deref().unwrap_or("reply without a status"),
                ));
                return UNREACHABLE;
            }
        },
        Err(code) => return code,
    };
    let reply = match call(target, Request::SelfUpgrade { binary }, Some(timeout)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(up) = reply.self_upgrade else {
        logging::report(clean(
            reply.error.as_deref().unwrap_or("reply without an outcome"),
        ));
        return if reply.ok { UNREACHABLE } else { REFUSED };
    };
    // The old process execs once its answer is written: until the new one
    // listens, connections wait in the control socket's backlog or, between
    // the two, are refused; either way, ask again.
    let deadline = started + timeout;
    loop {
        if let Ok(Reply {
            status: Some(s), ..
        }) = call_quiet(target, Request::Status)
        {
            if s.binary.self_upgrades >= up.count {
                let took = started.elapsed();
                return say(
                    &format!(
                        "self-upgraded: hotsup {} -> {} (pid {}, build {}) in {} ms\n",
                        clean(&up.from_version),
                        clean(&s.version),
                        s.pid,
                        clean(&s.binary.build),
                        took.as_millis()
                    ),
                    OK,
                );
            }
            if s.binary.self_upgrades_failed > before.binary.self_upgrades_failed {
                logging::report(format_args!(
                    "self-upgrade failed: {}; hotsup {} (pid {}) runs on",
                    clean(
                        s.binary
                            .last_self_upgrade_error
                            .as_deref()
                            .unwrap_or("unknown")
                    ),
                    clean(&s.version),
                    s.pid
                ));
                return FAILED;
            }
        }
        if std::time::Instant::now() >= deadline {
            logging::report("no answer from the new hotsup within the timeout");
            return TIMED_OUT;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`call`] without reporting failures: for polling.
fn call_quiet(target: &Target, request: Request) -> Result<Reply, ()> {
    let path = path_of(target).map_err(|_| ())?;
    let mut stream = UnixStream::connect(&path).map_err(|_| ())?;
    let me = rustix::process::geteuid().as_raw();
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(cred) if cred.uid.as_raw() == me || cred.uid.is_root() => {}
        _ => return Err(()),
    }
    let mut line = serde_json::to_vec(&control::Envelope {
        version: control::VERSION,
        request,
    })
    .map_err(|_| ())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|_| ())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|_| ())?;
    serde_json::from_str(&reply).map_err(|_| ())
}

pub fn rollback(target: &Target, timeout: Duration) -> u8 {
    outcome(call(target, Request::Rollback, Some(timeout)))
}

/// Prints what became of an upgrade or rollback; returns its exit code.
fn outcome(reply: Result<Reply, u8>) -> u8 {
    let reply = match reply {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(o) = reply.upgrade else {
        logging::report(clean(
            reply.error.as_deref().unwrap_or("reply without an outcome"),
        ));
        return if reply.ok { UNREACHABLE } else { REFUSED };
    };
    match o {
        UpgradeOutcome::Ready { generation, pid } => say(
            &format!("upgraded: generation {generation} (pid {pid}) is serving\n"),
            OK,
        ),
        UpgradeOutcome::Started { generation, pid } => say(
            &format!("upgrade started: generation {generation} (pid {pid})\n"),
            OK,
        ),
        UpgradeOutcome::Queued => say("upgrade queued after the one in progress\n", OK),
        UpgradeOutcome::Failed {
            generation,
            failure,
            reason,
            serving,
        } => {
            let to = generation
                .map(|g| format!(" to generation {g}"))
                .unwrap_or_default();
            let serving = serving
                .map(|g| format!("; generation {g} serves on"))
                .unwrap_or_default();
            // A refused upgrade started nothing that could be ready.
            let how = if matches!(failure, FailureReason::CheckFailed { .. }) {
                "was refused"
            } else {
                "failed before it was ready"
            };
            logging::report(format_args!(
                "upgrade{to} {how}: {}{serving}",
                clean(&reason)
            ));
            FAILED
        }
        UpgradeOutcome::RolledBack {
            generation,
            reason,
            lived_ms,
            serving,
            ..
        } => {
            let serving = serving
                .map(|g| format!("; generation {g} serves"))
                .unwrap_or_default();
            logging::report(format_args!(
                "upgrade to generation {generation} rolled back after {}: {}{serving}",
                humantime::format_duration(Duration::from_millis(lived_ms)),
                clean(&reason)
            ));
            ROLLED_BACK
        }
        UpgradeOutcome::Superseded => {
            logging::report("upgrade superseded: hotsup began shutting down");
            REFUSED
        }
    }
}

pub fn status(target: &Target, json: bool) -> u8 {
    let reply = match call(target, Request::Status, Some(Duration::from_secs(30))) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(code) = refused(&reply) {
        return code;
    }
    let Some(s) = reply.status else {
        logging::report("reply without a status");
        return FAILED;
    };
    if json {
        return match serde_json::to_string_pretty(&s) {
            Ok(text) => say(&format!("{text}\n"), OK),
            Err(e) => {
                logging::report(e);
                FAILED
            }
        };
    }
    say(&status_text(&s), OK)
}

/// The human form of `hotsup status`.
fn status_text(s: &control::Status) -> String {
    let secs = |ms: u64| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "hotsup {} (pid {}), up {}",
        clean(&s.version),
        s.pid,
        secs(s.uptime_ms)
    );
    out.push_str("listeners:\n");
    for l in &s.listeners {
        let _ = writeln!(
            out,
            "  {:<12} {:<4} {:<24} {}",
            clean(&l.name),
            clean(&l.kind),
            clean(&l.address),
            clean(&l.source)
        );
    }
    match &s.serving {
        Some(g) => {
            let _ = writeln!(
                out,
                "serving:  generation {} (pid {}), ready via {} {} ago{}",
                g.generation,
                g.pid,
                clean(g.ready_via.as_deref().unwrap_or("?")),
                secs(g.serving_ms.unwrap_or(0)),
                g.probation_ends_in_ms
                    .map(|ms| format!(", on probation for {} more", secs(ms)))
                    .unwrap_or_default()
            );
        }
        // No generation was ever good: the starts are failing (or the
        // first one is under way), which is not an upgrade failing.
        None if s.last_good.is_none() => {
            out.push_str("serving:  nothing: no start has succeeded yet\n");
        }
        None => out.push_str("serving:  nothing\n"),
    }
    if let Some(g) = &s.standby {
        let _ = writeln!(
            out,
            "standby:  generation {} (pid {}), paused; resumes if the upgrade is rolled back",
            g.generation, g.pid
        );
    }
    if let Some(text) = s.serving.as_ref().and_then(|g| g.status.as_deref()) {
        let _ = writeln!(out, "          status: {}", clean(text));
    }
    if let Some(g) = s.checking {
        let _ = writeln!(
            out,
            "checking: the upgrade to generation {g} (--check runs)"
        );
    }
    if let Some(g) = &s.starting {
        let _ = writeln!(
            out,
            "starting: generation {} (pid {}), for {}",
            g.generation,
            g.pid,
            secs(g.age_ms)
        );
    }
    for g in &s.draining {
        let _ = match g.deadline_in_ms {
            Some(d) => writeln!(
                out,
                "draining: generation {} (pid {}), killed in {}",
                g.generation,
                g.pid,
                secs(d)
            ),
            None => writeln!(
                out,
                "draining: generation {} (pid {}), being killed",
                g.generation, g.pid
            ),
        };
    }
    let _ = match &s.last_upgrade {
        Some(u) => writeln!(
            out,
            "last upgrade: {}{} {} ago{}",
            match u.result {
                LastResult::Ready => "ready",
                LastResult::Failed => "failed",
                LastResult::RolledBack => "rolled back",
            },
            u.generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default(),
            secs(u.ago_ms),
            u.reason
                .as_ref()
                .map(|r| format!(": {}", clean(r)))
                .unwrap_or_default()
        ),
        None => writeln!(out, "last upgrade: none"),
    };
    // A failed start is restarted too: "crash" would not fit it.
    let _ = writeln!(
        out,
        "upgrades: {} ready, {} failed, {} rolled back; restarts: {}",
        s.upgrades.ready, s.upgrades.failed, s.upgrades.rolled_back, s.restarts
    );
    if let Some(p) = &s.last_good {
        let _ = writeln!(out, "last good: {}", clean(p));
    }
    let _ = writeln!(out, "log lines dropped: {}", s.log_lines_dropped);
    if !s.binary.path.is_empty() {
        let _ = writeln!(
            out,
            "binary: {} (build {}); self-upgrades: {}, refused or failed: {}",
            clean(&s.binary.path),
            clean(&s.binary.build),
            s.binary.self_upgrades,
            s.binary.self_upgrades_failed
        );
        if let Some(e) = &s.binary.last_self_upgrade_error {
            let _ = writeln!(out, "last self-upgrade error: {}", clean(e));
        }
    }
    out
}

pub fn stop(target: &Target, no_wait: bool) -> u8 {
    let reply = match call(target, Request::Stop { wait: !no_wait }, None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(code) = refused(&reply) {
        return code;
    }
    match reply.stop {
        Some(s) => say(
            &format!("stopped: hotsup exited with code {}\n", s.exit_code),
            if s.exit_code == 0 { OK } else { FAILED },
        ),
        None => say("stopping\n", OK),
    }
}

/// `hotsup events`: prints lifecycle events as JSON lines as they happen,
/// until hotsup exits.
pub fn events(target: &Target, names: Vec<String>) -> u8 {
    let (stream, path, sent) = match connect(target, Request::Events { names }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = sent {
        logging::report(format_args!("cannot send to {}: {e}", path.display()));
        return UNREACHABLE;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        // A refusal is one reply object, not an event.
        if let Ok(reply) = serde_json::from_str::<Reply>(&line)
            && !reply.ok
            && reply.error.is_some()
        {
            refused(&reply);
            return REFUSED;
        }
        if say(&format!("{}\n", line), OK) != OK {
            return FAILED;
        }
    }
    OK
}

pub fn scale(target: &Target, workers: u32) -> u8 {
    let reply = match call(
        target,
        Request::Scale { workers },
        Some(Duration::from_secs(30)),
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(code) = refused(&reply) {
        return code;
    }
    match reply.scale {
        Some(s) => say(&format!("scaled from {} to {} workers\n", s.from, s.to), OK),
        None => FAILED,
    }
}

pub fn signal(target: &Target, signal: &str, worker: Option<u32>) -> u8 {
    let reply = match call(
        target,
        Request::Signal {
            signal: signal.to_string(),
            worker,
        },
        Some(Duration::from_secs(30)),
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(code) = refused(&reply) {
        return code;
    }
    match reply.signal {
        Some(s) => say(
            &format!(
                "sent {} to generation {} (pid {})\n",
                clean(&s.signal),
                s.generation,
                s.pid
            ),
            OK,
        ),
        None => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::clean;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(clean("warm, 42 tenants"), Cow::Borrowed(_)));
        assert_eq!(
            clean("evil \u{1b}[2J\u{7}\u{9b}\ttab\nline\u{7f} é"),
            r"evil \x1b[2J\x07\u{9b}\x09tab\x0aline\x7f é"
        );
    }
}
