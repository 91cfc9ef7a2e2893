//! The control socket and the client subcommands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, client, example, hotsup_bin, json, tempdir, text, zombies_of};

/// hotsup running testchild with a mode file and a control socket.
fn supervised(dir: &Path, extra: &[&str]) -> (Hotsup, PathBuf, PathBuf) {
    supervised_with(dir, extra, &[])
}

fn supervised_with(dir: &Path, extra: &[&str], child_args: &[&str]) -> (Hotsup, PathBuf, PathBuf) {
    let mode = dir.join("mode");
    std::fs::write(&mode, "serve").unwrap();
    let sock = dir.join("control.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut args = vec!["-l", "http=127.0.0.1:0", "--control", &sock_arg];
    args.extend(extra);
    let mut command = vec![example("testchild"), "--mode-file".into(), mode.clone()];
    command.extend(child_args.iter().map(PathBuf::from));
    let h = Hotsup::run(&args, &command);
    h.ready(1);
    h.event("control_socket", &[]);
    (h, sock, mode)
}

#[test]
fn upgrade_reports_success_and_each_kind_of_failure() {
    let dir = tempdir();
    let (mut h, sock, mode) = supervised(dir.path(), &["--ready-timeout", "1s"]);

    let ok = client(&sock, &["upgrade"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let pid2 = h.ready(2);
    assert!(
        text(&ok).contains(&format!("generation 2 (pid {pid2}) is serving")),
        "{}",
        text(&ok)
    );

    std::fs::write(&mode, "crash").unwrap();
    let crash = client(&sock, &["upgrade"]);
    assert_eq!(crash.status.code(), Some(1), "{}", text(&crash));
    assert!(
        text(&crash)
            .contains("failed before it was ready: child exited with code 3 before it was ready"),
        "{}",
        text(&crash)
    );

    std::fs::write(&mode, "never-ready").unwrap();
    let slow = client(&sock, &["upgrade"]);
    assert_eq!(slow.status.code(), Some(1), "{}", text(&slow));
    assert!(
        text(&slow).contains("not ready within 1s"),
        "{}",
        text(&slow)
    );

    // The binary is replaced by nothing at the same path: COMMAND is looked
    // up again at every upgrade.
    let bin = dir.path().join("server");
    std::os::unix::fs::symlink(example("testchild"), &bin).unwrap();
    drop(h);
    std::fs::write(&mode, "serve").unwrap();
    let sock_arg = sock.to_str().unwrap().to_string();
    h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--control", &sock_arg],
        &[bin.clone(), "--mode-file".into(), mode.clone()],
    );
    h.ready(1);
    std::fs::remove_file(&bin).unwrap();
    let gone = client(&sock, &["upgrade"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(text(&gone).contains("does not exist"), "{}", text(&gone));
    // Without waiting, a failure that happens at once is still reported.
    let gone = client(&sock, &["upgrade", "--no-wait"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(text(&gone).contains("upgrade failed"), "{}", text(&gone));
    assert!(text(&gone).contains("does not exist"), "{}", text(&gone));

    // Generation 1 served through all of it.
    let status = client(&sock, &["status"]);
    assert!(
        text(&status).contains("serving:  generation 1"),
        "{}",
        text(&status)
    );
    assert!(
        text(&status).contains("last upgrade: failed"),
        "{}",
        text(&status)
    );
    let stop = client(&sock, &["stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!sock.exists(), "control socket left behind");
    h.assert_left_nothing();
}

#[test]
fn concurrent_upgrade_clients_all_learn_the_outcome() {
    let dir = tempdir();
    // Each generation takes 3s to be ready, so the burst lands while the
    // first requested upgrade is in progress.
    let (h, sock, _) = supervised_with(
        dir.path(),
        &["--ready-timeout", "20s"],
        &["--ready-delay-ms", "3000"],
    );
    let spawn_client = |sock: &PathBuf| {
        let sock = sock.clone();
        std::thread::spawn(move || client(&sock, &["upgrade"]))
    };
    let mut clients = vec![spawn_client(&sock)];
    h.spawned_pid(2);
    clients.extend((0..19).map(|_| spawn_client(&sock)));
    let outputs: Vec<Output> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        assert!(text(o).contains("is serving"), "{}", text(o));
    }
    // One upgrade, plus at most one coalesced follow-up.
    // Generation 1, then the upgrade the first client started, then one
    // follow-up covering the other nineteen.
    let spawned = h.log.count_events("spawned", &[]);
    assert_eq!(
        spawned, 3,
        "{spawned} generations spawned in all for 20 requests"
    );
}

#[test]
fn status_json_has_a_stable_schema() {
    let dir = tempdir();
    let (_h, sock, _) = supervised(dir.path(), &[]);
    let up = client(&sock, &["upgrade"]);
    assert_eq!(up.status.code(), Some(0), "{}", text(&up));
    let out = client(&sock, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "pid",
        "version",
        "uptime_ms",
        "listeners",
        "serving",
        "starting",
        "draining",
        "last_upgrade",
        "restarts",
        "standby",
        "upgrades",
        "notify_dropped",
        "last_good",
        "previous_good",
        "workers",
        "log_lines_dropped",
        "binary",
    ];
    expected.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, expected);
    assert!(v["pid"].is_i64() && v["uptime_ms"].is_u64() && v["restarts"].is_u64());
    assert_eq!(v["log_lines_dropped"], 0, "stderr is read: nothing dropped");
    // Which binary runs (`hotsup upgrade --self`).
    assert!(v["binary"]["path"].is_string() && v["binary"]["build"].is_string());
    assert_eq!(v["binary"]["self_upgrades"], 0);
    assert_eq!(v["listeners"][0]["name"], "http");
    assert_eq!(v["listeners"][0]["kind"], "tcp");
    assert!(
        v["listeners"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(v["serving"]["generation"], 2);
    assert!(v["serving"]["pid"].is_i64());
    assert_eq!(v["serving"]["ready_via"], "READY");
    assert!(v["serving"]["serving_ms"].is_u64());
    assert!(v["starting"].is_null());
    assert!(v["draining"].is_array());
    assert_eq!(v["last_upgrade"]["result"], "ready");
    assert_eq!(v["last_upgrade"]["generation"], 2);
}

#[test]
fn status_shows_what_the_child_reported() {
    // An unmodified app that reports through NOTIFY_SOCKET.
    let script = "import os, socket, time\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'STATUS=serving 42 tenants\\nREADY=1', os.environ['NOTIFY_SOCKET'])\n\
                  time.sleep(60)\n";
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let h = Hotsup::run(
        &[
            "--fds",
            "systemd",
            "-l",
            "127.0.0.1:0",
            "--control",
            &sock_arg,
        ],
        &["python3", "-c", script],
    );
    h.ready(1);
    let out = client(&sock, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["serving"]["status"], "serving 42 tenants", "{v}");
    assert_eq!(v["serving"]["ready_via"], "READY=1");
    let human = client(&sock, &["status"]);
    assert!(
        text(&human).contains("status: serving 42 tenants"),
        "{}",
        text(&human)
    );
}

#[test]
fn malformed_requests_get_an_error_and_change_nothing() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let (h, sock, _) = supervised(dir.path(), &[]);
    for garbage in [
        &b"hello\n"[..],
        b"{\"version\":1}\n",
        b"{\"version\":9,\"command\":\"status\"}\n",
        b"\xff\xfe\n",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(garbage).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("\"ok\":false"), "{reply}");
    }
    let status = client(&sock, &["status"]);
    assert_eq!(status.status.code(), Some(0));
    assert_eq!(h.log.count_events("spawned", &[]), 1);
}

#[test]
fn clients_of_another_user_are_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED clients_of_another_user_are_refused: needs root to run a client as another uid"
        );
        return;
    }
    let dir = tempdir();
    let (h, sock, _) = supervised(dir.path(), &[]);
    // Open the file and its directory to everyone, so only SO_PEERCRED
    // stands between another user and the supervisor.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        hotsup_bin(),
        "upgrade",
        "--control",
    ])
    .arg(&sock);
    let out = crate::util::output_bounded(cmd);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    h.event("control_refused", &[("peer_uid", json!(65534))]);
    assert_eq!(
        h.log.count_events("spawned", &[]),
        1,
        "a refused client started an upgrade"
    );
}

#[test]
fn a_live_control_socket_is_not_stolen() {
    let dir = tempdir();
    let (_h, sock, _) = supervised(dir.path(), &[]);
    let (code, err) = crate::util::run_to_end(&[
        "run",
        "-l",
        "127.0.0.1:0",
        "--control",
        sock.to_str().unwrap(),
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by a live process"), "{err}");
    assert_eq!(client(&sock, &["status"]).status.code(), Some(0));
}

#[test]
fn unreachable_control_socket_is_one_clear_line() {
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(["status", "--control", "/nonexistent/hotsup.sock"]);
    let out = crate::util::output_bounded(cmd);
    // Apart from any outcome of a request, so a deploy script can tell "it
    // failed" from "I could not ask".
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/hotsup.sock"), "{err}");
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(["upgrade", "--control", "/nonexistent/hotsup.sock"]);
    assert_eq!(crate::util::output_bounded(cmd).status.code(), Some(5));
}

/// `hotsup ARGS` as a client of the supervisors in `runtime`.
fn client_in(runtime: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(args).env("HOTSUP_RUNTIME_DIR", runtime);
    crate::util::output_bounded(cmd)
}

/// A supervisor named `name` whose default control socket is in `runtime`.
fn named_in(runtime: &Path, name: &str) -> Hotsup {
    let mut cmd = crate::util::hotsup_command(
        &["-l", "127.0.0.1:0", "--name", name],
        &[example("testchild")],
    );
    cmd.env("HOTSUP_RUNTIME_DIR", runtime);
    let h = Hotsup::spawn(cmd);
    h.ready(1);
    h.event("control_socket", &[]);
    h
}

#[test]
fn clients_without_a_name_find_the_only_running_hotsup() {
    let runtime = crate::util::Runtime::new();
    let rt = runtime.path();
    let none = client_in(rt, &["status"]);
    assert_eq!(none.status.code(), Some(5), "{}", text(&none));
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(rt.to_str().unwrap()), "{err}");

    // A dead supervisor's socket file does not count.
    drop(std::os::unix::net::UnixListener::bind(rt.join("dead.sock")).unwrap());
    let mut one = named_in(rt, "one");
    let up = client_in(rt, &["upgrade"]);
    assert_eq!(up.status.code(), Some(0), "{}", text(&up));
    one.ready(2);
    let status = client_in(rt, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["pid"], json!(one.pid));

    // With two, the client cannot choose: it lists them and exits 2.
    let mut two = named_in(rt, "two");
    for args in [&["status"][..], &["upgrade"], &["stop"]] {
        let out = client_in(rt, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for name in ["one", "two"] {
            let path = rt.join(format!("{name}.sock"));
            assert!(
                err.lines()
                    .any(|l| l.contains(name) && l.contains(path.to_str().unwrap())),
                "{name} not listed: {err}"
            );
        }
        assert!(!err.contains("dead"), "{err}");
    }
    // Neither was touched.
    assert_eq!(
        one.log.count_events("ready", &[("generation", json!(3))]),
        0
    );
    assert_eq!(
        two.log.count_events("ready", &[("generation", json!(2))]),
        0
    );
    let stop = client_in(rt, &["stop", "--name", "two"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert_eq!(two.wait_exit(WAIT).code(), Some(0));
    let stop = client_in(rt, &["stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert_eq!(one.wait_exit(WAIT).code(), Some(0));
    one.assert_left_nothing();
    two.assert_left_nothing();
    assert_eq!(runtime.leftovers(), [rt.join("dead.sock")]);
}

#[test]
fn overlapping_upgrades_respect_max_draining() {
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            &sock_arg,
            "--max-draining",
            "2",
            "--drain-timeout",
            "60s",
        ],
        &[example("http")],
    );
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    let mut long = Vec::new();
    for g in 2..=5u64 {
        // A long request pins the serving generation: it keeps draining
        // until the request completes, far beyond this test.
        long.push(std::thread::spawn(move || {
            hotsup_bench::http::request_once(addr, "/?sleep_ms=10000", Duration::from_secs(30))
        }));
        let out = client(&sock, &["upgrade"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        h.ready(g);
        traffic.wait_ok(10);
        let status = client(&sock, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let draining = v["draining"].as_array().unwrap().len();
        assert!(
            draining <= 2,
            "{draining} generations draining with --max-draining 2"
        );
    }
    h.event("killed", &[("cause", json!("max_draining"))]);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    h.signal(Signal::INT);
    h.event("shutdown_began", &[]);
    h.signal(Signal::INT);
    // The second interrupt kills what still drains: exit 1.
    assert_eq!(h.wait_exit(WAIT).code(), Some(1));
    for t in long {
        let _ = t.join();
    }
}

#[test]
fn two_hundred_upgrades_leak_nothing() {
    // Counts what cannot be reused by chance: fds, zombies, generations.
    // Memory is the bench's to measure (`footprint`): RSS moves with the
    // allocator's arenas, so no bound on it tells a leak from noise.
    let dir = tempdir();
    let (mut h, sock, _) = supervised(dir.path(), &[]);
    let no_draining = || {
        crate::util::eventually("no generation draining", || {
            let v: serde_json::Value =
                serde_json::from_slice(&client(&sock, &["status", "--json"]).stdout).unwrap();
            v["draining"].as_array().unwrap().is_empty()
        })
    };
    // Warm up lazy statics before counting; count with only the serving
    // generation left, as at the end.
    for _ in 0..10 {
        assert_eq!(client(&sock, &["upgrade"]).status.code(), Some(0));
    }
    no_draining();
    let fds_before = h.quiet_fds();
    for _ in 0..200 {
        let out = client(&sock, &["upgrade"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    h.ready(211);
    // Old generations finish draining; then only the serving one remains.
    no_draining();
    let deadline = std::time::Instant::now() + WAIT;
    while h.quiet_fds() > fds_before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        h.quiet_fds(),
        fds_before,
        "fd count changed over 200 upgrades"
    );
    assert_eq!(h.log.count_events("drained", &[]), 210);
    assert!(zombies_of(h.pid).is_empty());
    assert_eq!(client(&sock, &["stop"]).status.code(), Some(0));
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
