//! Bad input: one line naming the input and the cause, a documented exit
//! code, and nothing left behind.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use crate::util::{hotsup_bin, run_to_end, tempdir};

pub const USAGE: i32 = 2;
const RUNTIME: i32 = 1;

pub fn check(args: &[&str], code: i32, mentions: &[&str]) {
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
    for args in [
        &["run", "-l", "127.0.0.1:0"][..],
        &["run", "-l", "127.0.0.1:0", "--"],
    ] {
        check(
            args,
            USAGE,
            &["no COMMAND given", "(see hotsup run --help)"],
        );
    }
}

#[test]
fn run_help_shows_command_as_required_after_the_options() {
    let out = crate::util::output_bounded({
        let mut cmd = std::process::Command::new(hotsup_bin());
        cmd.args(["run", "--help"]);
        cmd
    });
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Usage: hotsup run [OPTIONS] [--] <COMMAND> [ARGS]..."),
        "{help}"
    );
    assert!(!help.contains("pidof"), "{help}");
    assert!(help.contains("hotsup upgrade"), "{help}");
}

#[test]
fn usage_errors_point_to_the_help_of_their_subcommand() {
    for (args, mentions) in [
        (
            &["frobnicate"][..],
            &["'frobnicate'", "(see hotsup --help)"][..],
        ),
        // clap's tips are kept.
        (
            &["statsu"],
            &[
                "tip: a similar subcommand exists: 'status'",
                "(see hotsup --help)",
            ],
        ),
        (
            &["upgrade", "--timeout", "5"],
            &["'5'", "(see hotsup upgrade --help)"],
        ),
        (
            &["-v", "status", "--frob"],
            &["--frob", "(see hotsup status --help)"],
        ),
        (
            &["rollback", "--timeout", "x"],
            &["(see hotsup rollback --help)"],
        ),
        (
            &["run", "--frob", "--", "/bin/true"],
            &["(see hotsup run --help)"],
        ),
    ] {
        check(args, USAGE, mentions);
        let (_, err) = run_to_end(args);
        assert_eq!(err.matches("(see ").count(), 1, "{err}");
    }
}

#[test]
fn options_after_command_are_named_when_no_listener_is_left() {
    // Everything after COMMAND is COMMAND's: the -l went to /bin/true.
    for (args, named) in [
        (
            &["run", "/bin/true", "-l", "127.0.0.1:0"][..],
            "-l after COMMAND",
        ),
        (
            &[
                "run",
                "--",
                "/bin/true",
                "--listen=127.0.0.1:0",
                "--fds",
                "systemd",
            ],
            "--listen=127.0.0.1:0 --fds after COMMAND",
        ),
    ] {
        check(args, USAGE, &["no listeners", "must come before", named]);
    }
    // Without any hotsup option after COMMAND, the plain message.
    let (_, err) = run_to_end(&["run", "/bin/true", "-x"]);
    assert!(!err.contains("must come before"), "{err}");
}

#[test]
fn options_after_command_are_warned_about() {
    let h = crate::util::Hotsup::spawn({
        let mut cmd = std::process::Command::new(hotsup_bin());
        cmd.args([
            "--log-format",
            "json",
            "run",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "exec",
        ])
        .args(["sleep", "60", "--drain-timeout", "5s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd
    });
    h.event(
        "options_after_command",
        &[("options", crate::util::json!("--drain-timeout"))],
    );
    h.ready(1);
    // With `--`, COMMAND's options are its own on purpose.
    let explicit = crate::util::Hotsup::run(
        &["--ready", "exec", "-l", "127.0.0.1:0"],
        &["sleep", "60", "-l"],
    );
    explicit.ready(1);
    assert_eq!(explicit.log.count_events("options_after_command", &[]), 0);
}

#[test]
fn nonsense_durations_and_signals() {
    for (flag, value, cause) in [
        ("--ready-timeout", "soon", "--ready-timeout"),
        ("--drain-timeout", "0s", "longer than zero"),
        (
            "--drain-timeout",
            "5",
            "a unit is needed, for example 5s or 5ms",
        ),
        ("--drain-signal", "NOPE", "not a signal"),
    ] {
        check(
            &["run", flag, value, "--", "/bin/true"],
            USAGE,
            &[value, cause],
        );
    }
    // Said once, not by humantime and again by hotsup.
    let (_, err) = run_to_end(&["run", "--drain-timeout", "30", "--", "/bin/true"]);
    assert_eq!(err.matches("unit").count(), 1, "{err}");
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

#[test]
fn unknown_or_unusable_user_and_group() {
    let dir = tempdir();
    let sock = dir.path().join("web.sock");
    let control = dir.path().join("control.sock");
    let unix = format!("unix:{}", sock.display());
    let control_arg = control.to_str().unwrap();
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["run", "-l", &unix, "--control", control_arg];
        args.extend(extra);
        args.extend(["--", "/bin/true"]);
        args.into_iter().map(String::from).collect()
    };
    for (extra, mentions) in [
        (
            &["--user", "no-such-user-hotsup"][..],
            &["--user \"no-such-user-hotsup\": no such user"][..],
        ),
        (
            &["--user", "root", "--group", "no-such-group-hotsup"],
            &["--group \"no-such-group-hotsup\": no such group"],
        ),
        (
            &["--group", "no-such-group-hotsup"],
            &["--group \"no-such-group-hotsup\": no such group"],
        ),
        (
            &["--user", "3999999999"],
            &["3999999999", "no primary group: give --group too"],
        ),
    ] {
        let args = run(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args, USAGE, mentions);
    }
    assert!(
        !sock.exists() && !control.exists(),
        "a socket file was left behind"
    );

    // A hotsup that cannot switch users says so before binding.
    let args = run(&["--user", "daemon"]);
    let (code, err) = if rustix::process::geteuid().is_root() {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            hotsup_bin(),
        ])
        .args(&args);
        let out = crate::util::output_bounded(cmd);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    } else {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end(&args)
    };
    assert_eq!(code, USAGE, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--user daemon: hotsup cannot run its children as another user: it lacks CAP_SETUID, CAP_SETGID, CAP_CHOWN (run hotsup as root)"),
        "{err}"
    );
    assert!(
        !sock.exists() && !control.exists(),
        "a socket file was left behind"
    );
}

#[test]
fn fds_systemd_needs_hotsup_executable_by_the_user() {
    if !crate::util::root_or_skip(
        "fds_systemd_needs_hotsup_executable_by_the_user",
        "needs root to use --user",
    ) {
        return;
    }
    // Each child re-executes hotsup as the user to set LISTEN_PID.
    let dir = tempdir();
    let hotsup = dir.path().join("hotsup");
    std::fs::copy(hotsup_bin(), &hotsup).unwrap();
    std::fs::set_permissions(&hotsup, std::fs::Permissions::from_mode(0o750)).unwrap();
    let sock = dir.path().join("web.sock");
    let mut cmd = std::process::Command::new(&hotsup);
    cmd.args(["run", "--user", "nobody", "--fds", "systemd", "-l"])
        .arg(format!("unix:{}", sock.display()))
        .args(["--control"])
        .arg(dir.path().join("control.sock"))
        .args(["--", "/bin/true"]);
    let out = crate::util::output_bounded(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(USAGE), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--user nobody with --fds systemd")
            && err.contains("may not execute")
            && err.contains("(mode 750)")
            && err.contains("chmod o+x"),
        "{err}"
    );
    assert!(!sock.exists(), "the socket file was left behind");
}
