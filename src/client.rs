//! The client subcommands: `hotsup upgrade|status|stop|signal`.
//!
//! Exit codes: 0 success; 1 the operation failed or hotsup cannot be
//! reached; 2 usage (no --control or --name).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Target;
use crate::control::{self, Reply, Request};

const OK: u8 = 0;
const FAILED: u8 = 1;
const USAGE: u8 = 2;

fn path_of(target: &Target) -> Result<PathBuf, u8> {
    match (&target.control, &target.name) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(n)) => Ok(control::default_path(n)),
        (None, None) => {
            eprintln!(
                "hotsup: give --control PATH or --name NAME (the name hotsup run was given, by default its COMMAND's file name)"
            );
            Err(USAGE)
        }
    }
}

/// Sends one request and reads the one-line reply.
fn call(target: &Target, request: Request, timeout: Option<Duration>) -> Result<Reply, u8> {
    let path = path_of(target)?;
    let fail = |what: String| {
        eprintln!("hotsup: {what}");
        FAILED
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
    let _ = stream.set_read_timeout(timeout);
    let mut line = serde_json::to_vec(&control::Envelope {
        version: control::VERSION,
        request,
    })
    .map_err(|e| fail(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    // A server that refuses the client answers before reading the request,
    // so a failed send may still have a reply waiting.
    let sent = stream.write_all(&line);
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    if reply.is_empty() {
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
        eprintln!(
            "hotsup: {}",
            reply.error.as_deref().unwrap_or("request refused")
        );
        return Some(FAILED);
    }
    None
}

pub fn upgrade(target: &Target, no_wait: bool, timeout: Duration) -> u8 {
    let reply = match call(target, Request::Upgrade { wait: !no_wait }, Some(timeout)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(code) = refused(&reply) {
        return code;
    }
    let Some(o) = reply.upgrade else {
        eprintln!("hotsup: reply without an outcome");
        return FAILED;
    };
    let gen_pid = match (o.generation, o.pid) {
        (Some(g), Some(p)) => format!("generation {g} (pid {p})"),
        (Some(g), None) => format!("generation {g}"),
        _ => "a new generation".to_string(),
    };
    match o.result.as_str() {
        "ready" => {
            println!("upgraded: {gen_pid} is serving");
            OK
        }
        "started" => {
            println!("upgrade started: {gen_pid}");
            OK
        }
        "queued" => {
            println!("upgrade queued after the one in progress");
            OK
        }
        other => {
            let why = o.reason.as_deref().unwrap_or("no reason given");
            eprintln!("hotsup: upgrade {other}: {why}");
            FAILED
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
        eprintln!("hotsup: reply without a status");
        return FAILED;
    };
    if json {
        match serde_json::to_string_pretty(&s) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hotsup: {e}");
                return FAILED;
            }
        }
        return OK;
    }
    let secs = |ms: u64| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string();
    println!(
        "hotsup {} (pid {}), up {}",
        s.version,
        s.pid,
        secs(s.uptime_ms)
    );
    println!("listeners:");
    for l in &s.listeners {
        println!("  {:<12} {:<4} {}", l.name, l.kind, l.address);
    }
    match &s.serving {
        Some(g) => println!(
            "serving:  generation {} (pid {}), ready via {} {} ago",
            g.generation,
            g.pid,
            g.ready_via.as_deref().unwrap_or("?"),
            secs(g.serving_ms.unwrap_or(0))
        ),
        None => println!("serving:  nothing"),
    }
    if let Some(text) = s.serving.as_ref().and_then(|g| g.status.as_deref()) {
        println!("          status: {text}");
    }
    if let Some(g) = &s.starting {
        println!(
            "starting: generation {} (pid {}), for {}",
            g.generation,
            g.pid,
            secs(g.age_ms)
        );
    }
    for g in &s.draining {
        match g.deadline_in_ms {
            Some(d) => println!(
                "draining: generation {} (pid {}), killed in {}",
                g.generation,
                g.pid,
                secs(d)
            ),
            None => println!(
                "draining: generation {} (pid {}), being killed",
                g.generation, g.pid
            ),
        }
    }
    match &s.last_upgrade {
        Some(u) => println!(
            "last upgrade: {}{} {} ago{}",
            u.result,
            u.generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default(),
            secs(u.ago_ms),
            u.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        None => println!("last upgrade: none"),
    }
    println!("crash restarts: {}", s.restarts);
    OK
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
        Some(s) => {
            println!("stopped: hotsup exited with code {}", s.exit_code);
            if s.exit_code == 0 { OK } else { FAILED }
        }
        None => {
            println!("stopping");
            OK
        }
    }
}

pub fn signal(target: &Target, signal: &str) -> u8 {
    let reply = match call(
        target,
        Request::Signal {
            signal: signal.to_string(),
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
        Some(s) => {
            println!(
                "sent {} to generation {} (pid {})",
                s.signal, s.generation, s.pid
            );
            OK
        }
        None => FAILED,
    }
}
