//! `--ready-probe`, `--check` and `--after-upgrade`: commands hotsup runs
//! around the lifecycle, bounded in time and output, leaving nothing behind.

use std::path::{Path, PathBuf};

use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, Value, WAIT, client, example, json, tempdir, text, wait_dead, wait_serving, zombies_of,
};

/// hotsup running testchild with a control socket and `extra` options;
/// generation 1 is not waited for.
fn start(dir: &Path, extra: &[&str]) -> (Hotsup, PathBuf) {
    let sock = dir.join("control.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut args = vec!["-l", "http=127.0.0.1:0", "--control", &sock_arg];
    args.extend(extra);
    let h = Hotsup::run(&args, &[example("testchild")]);
    (h, sock)
}

/// Stops hotsup and checks it left no process, zombie or file behind.
fn stop(mut h: Hotsup, pids: &[i32]) {
    assert!(zombies_of(h.pid).is_empty(), "hotsup left zombies");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    for pid in pids {
        assert!(wait_dead(*pid, WAIT), "pid {pid} outlived hotsup");
    }
    h.assert_left_nothing();
}

/// The position of the first event `name` with these fields in the log.
fn position(events: &[Value], name: &str, fields: &[(&str, Value)]) -> Option<usize> {
    events
        .iter()
        .position(|e| e["event"] == name && fields.iter().all(|(k, v)| &e[*k] == v))
}

fn read_pid(path: &Path) -> i32 {
    let mut pid = 0;
    crate::util::eventually(&format!("{} holds a pid", path.display()), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

#[test]
fn a_ready_probe_that_fails_twice_delays_ready_until_it_passes() {
    let dir = tempdir();
    let d = dir.path().display();
    // Fails its first two runs for each generation, printing why.
    let probe = format!(
        "n=$(cat {d}/count-$HOTSUP_GENERATION 2>/dev/null || echo 0); n=$((n+1)); \
         echo $n > {d}/count-$HOTSUP_GENERATION; \
         echo \"$HOTSUP_GENERATION $HOTSUP_PID $HOTSUP_SLOT\" >> {d}/seen; \
         [ $n -ge 3 ] || {{ echo \"not up yet: try $n\"; exit 1; }}"
    );
    let (h, sock) = start(dir.path(), &["--ready-probe", &probe]);
    let pid1 = h.ready(1);
    let events = h.log.events();
    let ready = position(&events, "ready", &[("generation", json!(1))]).unwrap();
    // Two failed runs, each with its output, both before ready.
    for n in 1..=2 {
        let failed = position(
            &events,
            "probe_failed",
            &[
                ("generation", json!(1)),
                ("pid", json!(pid1)),
                (
                    "detail",
                    json!(format!("exited with code 1: not up yet: try {n}")),
                ),
            ],
        );
        let failed = failed.unwrap_or_else(|| panic!("no failed try {n}: {events:#?}"));
        assert!(failed < ready, "try {n} failed after ready");
    }
    assert_eq!(h.log.count_events("probe_failed", &[]), 2);
    // An upgrade waits for its probe the same way.
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid2 = h.ready(2);
    assert_eq!(
        h.log
            .count_events("probe_failed", &[("generation", json!(2))]),
        2
    );
    // Every run saw its generation, its worker's pid and slot.
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    let expected = format!("1 {pid1} 0\n").repeat(3) + &format!("2 {pid2} 0\n").repeat(3);
    assert_eq!(seen, expected);
    stop(h, &[pid2]);
}

#[test]
fn a_probe_that_never_passes_fails_the_upgrade_and_the_old_generation_serves_on() {
    let dir = tempdir();
    let probe = "[ \"$HOTSUP_GENERATION\" = 1 ] || { echo 'HTTP 503'; exit 1; }";
    let (h, sock) = start(
        dir.path(),
        &["--ready-probe", probe, "--ready-timeout", "2s"],
    );
    let pid1 = h.ready(1);
    let traffic = Traffic::start(h.addr("http"));
    traffic.wait_ok(10);
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--ready-probe did not succeed within 2s")
            && text(&out).contains("HTTP 503")
            && text(&out).contains("generation 1 serves on"),
        "{}",
        text(&out)
    );
    assert!(
        h.log
            .count_events("probe_failed", &[("generation", json!(2))])
            >= 1
    );
    traffic.wait_ok(10);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    assert_eq!(wait_serving(&sock)["serving"]["generation"], json!(1));
    assert_eq!(h.log.count_events("ready", &[("generation", json!(2))]), 0);
    stop(h, &[pid1]);
}

#[test]
fn a_hanging_probe_is_killed_at_its_timeout_with_what_it_started() {
    let dir = tempdir();
    let d = dir.path().display();
    // The first run hangs, with a grandchild in its group; the next passes.
    let probe = format!(
        "[ -e {d}/hung ] && exit 0; touch {d}/hung; echo $$ > {d}/shell; \
         sleep 1000 & echo $! > {d}/sleeper; wait"
    );
    let (h, _sock) = start(
        dir.path(),
        &["--ready-probe", &probe, "--ready-probe-timeout", "500ms"],
    );
    let pid1 = h.ready(1);
    h.event(
        "probe_failed",
        &[
            ("generation", json!(1)),
            ("detail", json!("timed out after 500ms")),
        ],
    );
    for name in ["shell", "sleeper"] {
        let pid = read_pid(&dir.path().join(name));
        assert!(
            wait_dead(pid, WAIT),
            "the probe's {name} survived its timeout"
        );
    }
    stop(h, &[pid1]);
}

#[test]
fn a_failing_check_refuses_the_upgrade_under_load_and_the_next_one_works() {
    let dir = tempdir();
    let d = dir.path().display();
    // A chatty check: only the tail of its output may come back.
    let check = format!(
        "echo $HOTSUP_GENERATION >> {d}/checked; \
         if [ -e {d}/broken ]; then seq 1 200000; echo 'config error in line 3' >&2; exit 1; fi"
    );
    std::fs::write(dir.path().join("broken"), "").unwrap();
    let (h, sock) = start(dir.path(), &["--check", &check]);
    let pid1 = h.ready(1);
    let traffic = Traffic::start(h.addr("http"));
    traffic.wait_ok(10);

    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upgrade was refused: --check failed: exited with code 1: ")
            && err.contains("199999 | 200000 | config error in line 3")
            && err.contains("generation 1 serves on"),
        "{err}"
    );
    assert!(err.len() < 8192, "{} bytes of check output", err.len());
    h.event("check_failed", &[("generation", json!(2))]);
    // Nothing was started.
    assert_eq!(h.log.count_events("spawned", &[]), 1);
    traffic.wait_ok(10);

    std::fs::remove_file(dir.path().join("broken")).unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid2 = h.ready(2);
    traffic.wait_ok(10);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    // Each check was told the generation about to start; the first start
    // was not checked.
    let checked = std::fs::read_to_string(dir.path().join("checked")).unwrap();
    assert_eq!(checked, "2\n2\n");
    assert!(wait_dead(pid1, WAIT));
    stop(h, &[pid2]);
}

#[test]
fn a_hanging_check_is_killed_at_its_timeout_and_refuses_the_upgrade() {
    let dir = tempdir();
    let d = dir.path().display();
    let check = format!("echo $$ > {d}/shell; sleep 1000 & echo $! > {d}/sleeper; wait");
    let (h, sock) = start(dir.path(), &["--check", &check, "--check-timeout", "500ms"]);
    let pid1 = h.ready(1);
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--check failed: timed out after 500ms"),
        "{}",
        text(&out)
    );
    for name in ["shell", "sleeper"] {
        let pid = read_pid(&dir.path().join(name));
        assert!(
            wait_dead(pid, WAIT),
            "the check's {name} survived its timeout"
        );
    }
    assert_eq!(wait_serving(&sock)["serving"]["generation"], json!(1));
    assert_eq!(h.log.count_events("spawned", &[]), 1);
    stop(h, &[pid1]);
}

#[test]
fn after_upgrade_runs_once_ready_with_the_new_pid_and_its_failure_changes_nothing() {
    let dir = tempdir();
    let d = dir.path().display();
    let hook =
        format!("echo \"$HOTSUP_GENERATION $HOTSUP_PID\" >> {d}/ran; echo 'chat is down'; exit 3");
    let (h, sock) = start(dir.path(), &["--after-upgrade", &hook]);
    h.ready(1);
    let mut pids = Vec::new();
    for g in [2, 3] {
        h.upgrade();
        let pid = h.ready(g);
        pids.push(pid);
        let failed = h.event("after_upgrade_failed", &[("generation", json!(g))]);
        assert_eq!(
            failed["detail"],
            json!("exited with code 3: chat is down"),
            "{failed}"
        );
        let events = h.log.events();
        let ready = position(&events, "ready", &[("generation", json!(g))]).unwrap();
        let hook = position(&events, "after_upgrade_failed", &[("generation", json!(g))]);
        assert!(hook.unwrap() > ready);
        assert_eq!(wait_serving(&sock)["serving"]["generation"], json!(g));
    }
    // Not run at the first start; once per upgrade, with the new pid.
    let ran = std::fs::read_to_string(dir.path().join("ran")).unwrap();
    assert_eq!(ran, format!("2 {}\n3 {}\n", pids[0], pids[1]));
    stop(h, &[pids[1]]);
}
