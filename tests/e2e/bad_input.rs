//! Bad input: one line naming the input and the cause, a documented exit
//! code, and nothing left behind.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use crate::util::{hotsup_bin, run_to_end, tempdir};

const USAGE: i32 = 2;
const RUNTIME: i32 = 1;

fn check(args: &[&str], code: i32, mentions: &[&str]) {
    let (got, err) = run_to_end(args);
    assert_eq!(got, code, "hotsup {args:?} exited {got}: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "hotsup {args:?} printed more than one line:\n{err}"
    );
    assert!(lines[0].starts_with("hotsup: "), "{err}");
    for m in mentions {
        assert!(
            err.contains(m),
            "hotsup {args:?}: {err:?} does not mention {m:?}"
        );
    }
}

#[test]
fn malformed_listen() {
    for (arg, cause) in [
        ("8080", "is not HOST:PORT"),
        ("127.0.0.1:99999", "port"),
        ("sctp://1.2.3.4:5", "unknown scheme"),
        ("bad name=127.0.0.1:0", "invalid name"),
        ("unix:", "empty Unix socket path"),
        ("[::zz]:80", "is not HOST:PORT"),
    ] {
        check(&["run", "-l", arg, "--", "/bin/true"], USAGE, &[arg, cause]);
    }
}

#[test]
fn duplicate_name() {
    check(
        &[
            "run",
            "-l",
            "a=127.0.0.1:0",
            "-l",
            "a=127.0.0.1:0",
            "--",
            "/bin/true",
        ],
        USAGE,
        &["duplicate listener name \"a\""],
    );
}

#[test]
fn address_in_use_leaves_no_socket_file() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempdir();
    let sock = dir.path().join("first.sock");
    let unix = format!("unix:{}", sock.display());
    check(
        &["run", "-l", &unix, "-l", &addr, "--", "/bin/true"],
        RUNTIME,
        &[&addr, "Address already in use"],
    );
    assert!(
        !sock.exists(),
        "the first listener's socket file was left behind"
    );
}

#[test]
fn permission_denied() {
    let is_root = rustix::process::geteuid().is_root();
    if !is_root {
        check(
            &["run", "-l", "127.0.0.1:80", "--", "/bin/true"],
            RUNTIME,
            &["127.0.0.1:80", "Permission denied"],
        );
        return;
    }
    // Root may bind port 80, so run as nobody: binding a privileged port is
    // then refused exactly as it is for an unprivileged user.
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        hotsup_bin(),
    ])
    .args(["run", "-l", "127.0.0.1:80", "--", "/bin/true"]);
    // setpriv (util-linux) drops root for this test.
    let out = crate::util::output_bounded(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(RUNTIME), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("127.0.0.1:80") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
}

#[test]
fn missing_or_non_executable_command() {
    let dir = tempdir();
    check(
        &["run", "-l", "127.0.0.1:0", "--", "/nonexistent/server"],
        USAGE,
        &["/nonexistent/server", "does not exist"],
    );
    check(
        &["run", "-l", "127.0.0.1:0", "--", "no-such-server-in-path"],
        USAGE,
        &["no-such-server-in-path", "not found in PATH"],
    );
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = plain.to_str().unwrap();
    check(
        &["run", "-l", "127.0.0.1:0", "--", p],
        USAGE,
        &[p, "not executable"],
    );
    check(
        &[
            "run",
            "-l",
            "127.0.0.1:0",
            "--",
            dir.path().to_str().unwrap(),
        ],
        USAGE,
        &["is a directory"],
    );
}

#[test]
fn no_command() {
    check(&["run", "-l", "127.0.0.1:0"], USAGE, &["no COMMAND"]);
    check(&["run", "-l", "127.0.0.1:0", "--"], USAGE, &["no COMMAND"]);
}

#[test]
fn nonsense_durations_and_signals() {
    for (flag, value, cause) in [
        ("--ready-timeout", "soon", "--ready-timeout"),
        ("--drain-timeout", "0s", "longer than zero"),
        ("--drain-timeout", "5", "500ms, 2s or 1m"),
        ("--drain-signal", "NOPE", "not a signal"),
    ] {
        check(
            &["run", flag, value, "--", "/bin/true"],
            USAGE,
            &[value, cause],
        );
    }
}

#[test]
fn unknown_option_and_help() {
    check(
        &["run", "--frobnicate", "--", "/bin/true"],
        USAGE,
        &["--frobnicate"],
    );
    let (code, _) = run_to_end(&["--help"]);
    assert_eq!(code, 0);
}
