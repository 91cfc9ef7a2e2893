//! Drain escalation, crash restarts and shutdown.

use std::time::Duration;

use hotsup_bench::http::FailureKind;
use hotsup_bench::http::request_once;
use hotsup_bench::loadgen::{Load, LoadConfig};
use rustix::process::Signal;

use crate::util::{Hotsup, WAIT, alive, example, field, json, tempdir, wait_dead, zombies_of};

#[test]
fn old_child_ignoring_drain_is_killed_with_its_whole_group() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "ignore-drain").unwrap();
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0", "--drain-timeout", "1s"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    let old = h.ready(1);
    let grandchild: i32 = field(&h.out.wait(&["testchild grandchild"]), "pid")
        .parse()
        .unwrap();
    assert!(alive(grandchild));

    std::fs::write(&mode, "serve").unwrap();
    h.upgrade();
    h.ready(2);
    h.event("draining", &[("generation", json!(1))]);
    h.event(
        "killed",
        &[("generation", json!(1)), ("cause", json!("drain_deadline"))],
    );
    h.event(
        "reaped",
        &[
            ("generation", json!(1)),
            ("status", json!("killed by SIGKILL")),
        ],
    );
    assert!(wait_dead(old, WAIT), "old child survived");
    assert!(
        wait_dead(grandchild, WAIT),
        "grandchild survived its group's kill"
    );
    assert!(zombies_of(h.pid).is_empty());

    // Generation 2 serves.
    let body = request_once(h.addr("http"), "/", WAIT).unwrap().body_text();
    assert!(body.contains("generation=2"), "{body}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn crashes_restart_with_backoff_while_clients_queue() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "crash-after-ready").unwrap();
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0"],
        &[
            example("testchild"),
            "--mode-file".into(),
            mode.clone(),
            "--crash-after-ms".into(),
            "200".into(),
        ],
    );
    let addr = h.addr("http");
    h.ready(1);
    // Fresh connections all through the crash loop: they wait in the
    // backlog hotsup holds, and are never refused.
    let load = Load::start(LoadConfig {
        keep_alive: false,
        concurrency: 2,
        max_duration: Duration::from_secs(120),
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(addr)
    });
    h.event(
        "crashed",
        &[
            ("generation", json!(1)),
            ("status", json!("exited with code 4")),
        ],
    );
    h.event("restart_scheduled", &[("delay_ms", json!(100))]);
    h.ready(2);
    h.event("restart_scheduled", &[("delay_ms", json!(200))]);
    h.ready(3);
    h.event("restart_scheduled", &[("delay_ms", json!(400))]);
    std::fs::write(&mode, "serve").unwrap();
    h.ready(4);
    assert!(load.wait_for_more_ok(50, WAIT));
    let report = load.stop();
    assert_eq!(
        report.failures_of(&FailureKind::Refused),
        0,
        "a connection was refused: {:?}",
        report.samples
    );
    // Requests a crashing child had accepted die with it; requests that
    // were only queued are served by the next generation.
    let served: Vec<u64> = report.generations_seen().into_iter().collect();
    assert!(
        served.contains(&4),
        "generation 4 served nothing: {served:?}"
    );
    assert!(zombies_of(h.pid).is_empty());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_child_that_leaves_its_group_is_still_killed() {
    // It ignores SIGTERM and moves into hotsup's own process group, so a
    // kill of its original group misses it.
    let script = "import os, signal, time\n\
                  signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                  os.setpgid(0, os.getpgid(os.getppid()))\n\
                  print('escaped', flush=True)\n\
                  time.sleep(60)\n";
    let mut h = Hotsup::run(
        &[
            "-l",
            "127.0.0.1:0",
            "--ready",
            "exec",
            "--drain-timeout",
            "1s",
        ],
        &["python3", "-c", script],
    );
    let pid = h.ready(1);
    h.out.wait(&["escaped"]);
    h.signal(Signal::TERM);
    h.event(
        "killed",
        &[("generation", json!(1)), ("cause", json!("drain_deadline"))],
    );
    h.event(
        "reaped",
        &[
            ("generation", json!(1)),
            ("status", json!("killed by SIGKILL")),
        ],
    );
    assert!(wait_dead(pid, WAIT));
    assert_eq!(h.wait_exit(WAIT).code(), Some(1));
}

#[test]
fn backoff_doubles_once_per_failed_start() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "never-ready").unwrap();
    let mut h = Hotsup::run(
        &[
            "-l",
            "127.0.0.1:0",
            "--ready-timeout",
            "300ms",
            "--start-attempts",
            "10",
        ],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    // Each start is killed at the ready timeout; the backoff counts each
    // failure once.
    h.event("restart_scheduled", &[("delay_ms", json!(400))]);
    let delays: Vec<u64> = h
        .log
        .events()
        .iter()
        .filter(|e| e["event"] == "restart_scheduled")
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .take(3)
        .collect();
    assert_eq!(delays, [100, 200, 400]);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn shutdown_drains_in_flight_requests_and_exits_0() {
    let dir = tempdir();
    let sock = dir.path().join("app.sock");
    let unix_arg = format!("admin=unix:{}", sock.display());
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "-l",
            &unix_arg,
            "--unix-mode",
            "600",
        ],
        &[example("http")],
    );
    let addr = h.addr("http");
    let pid = h.ready(1);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // In flight once the server has accepted it: the accepted connection is
    // one more socket among the server's fds.
    let sockets_before = sockets_of(pid);
    let slow = std::thread::spawn(move || request_once(addr, "/?sleep_ms=3000", WAIT));
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = false;
    while !seen && std::time::Instant::now() < deadline {
        seen = sockets_of(pid) > sockets_before;
        if !seen {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(seen, "the slow request never reached the server");
    h.signal(Signal::TERM);
    h.event(
        "draining",
        &[("generation", json!(1)), ("via", json!("protocol"))],
    );
    let resp = slow.join().unwrap().expect("in-flight request failed");
    assert_eq!(resp.status, 200);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!alive(pid));
    assert!(!sock.exists(), "socket file left behind");
}

/// How many sockets `pid` holds open.
fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigterm_during_startup_is_a_graceful_shutdown() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let arg = format!("unix:{}", sock.display());
    let mut h = Hotsup::run(&["-l", &arg], &[example("http")]);
    // As early as the log allows: the sockets are bound, the event loop may
    // not run yet. The signal waits for hotsup's handlers.
    h.event("listening", &[]);
    h.signal(Signal::TERM);
    assert_eq!(
        h.wait_exit(WAIT).code(),
        Some(0),
        "killed instead of shut down"
    );
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn second_interrupt_kills_at_once_and_exits_1() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "ignore-drain").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--drain-timeout", "60s"],
        &[example("testchild"), "--mode-file".into(), mode],
    );
    let pid = h.ready(1);
    h.signal(Signal::TERM);
    h.event("shutdown_began", &[]);
    h.event("draining", &[("generation", json!(1))]);
    h.signal(Signal::INT);
    // Far sooner than the 60s drain timeout.
    assert_eq!(h.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(wait_dead(pid, WAIT));
}

#[test]
fn restart_policy_decides_what_an_exit_means() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    // A child that exits 0 on its own is done, under the default policy.
    std::fs::write(&mode, "exit-after-ready").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    h.ready(1);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert_eq!(h.log.count_events("restart_scheduled", &[]), 0);
    h.event(
        "stopped",
        &[("generation", json!(1)), ("exit_code", json!(0))],
    );

    // Under --restart never, hotsup exits with the code of the child that
    // stopped it, as tini does.
    std::fs::write(&mode, "crash-after-ready").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--restart", "never"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    h.ready(1);
    assert_eq!(h.wait_exit(WAIT).code(), Some(4));

    // --restart always restarts even a clean exit.
    std::fs::write(&mode, "exit-after-ready").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--restart", "always"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    h.ready(1);
    h.ready(2);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn usr1_is_forwarded_to_the_serving_child() {
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--restart", "never"],
        &[example("http")],
    );
    let pid = h.ready(1);
    h.signal(Signal::USR1);
    h.event(
        "forwarded",
        &[("pid", json!(pid)), ("signal", json!("SIGUSR1"))],
    );
    // The http example does not handle SIGUSR1, so it dies of it: proof the
    // signal reached the child, not just the log.
    h.event(
        "crashed",
        &[
            ("generation", json!(1)),
            ("status", json!("killed by SIGUSR1")),
        ],
    );
    // 128 + the signal, as a shell (and tini) report a death by signal.
    assert_eq!(h.wait_exit(WAIT).code(), Some(128 + 10));
}

#[test]
fn quit_is_a_graceful_shutdown() {
    // As for nginx, QUIT stops gracefully. Forwarded, it would kill the
    // http example (and dump a Go app's goroutines), and the crash would be
    // restarted.
    let mut h = Hotsup::run(&["-l", "127.0.0.1:0"], &[example("http")]);
    let pid = h.ready(1);
    h.signal(Signal::QUIT);
    h.event(
        "shutdown_began",
        &[("source", json!("SIGQUIT")), ("forced", json!(false))],
    );
    h.event(
        "drained",
        &[
            ("generation", json!(1)),
            ("status", json!("exited with code 0")),
        ],
    );
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!crate::util::alive(pid));
    assert_eq!(h.log.count_events("forwarded", &[]), 0);
}

#[test]
fn a_first_start_that_never_succeeds_exits_1_after_the_attempts() {
    // A service manager, a container runtime or a shell learns at once that
    // the service cannot start, instead of watching it crash-loop.
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "crash").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--start-attempts", "3"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    assert_eq!(h.wait_exit(WAIT).code(), Some(1));
    let attempts: Vec<u64> = h
        .log
        .events()
        .iter()
        .filter(|e| e["event"] == "start_failed")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    h.event("gave_up", &[("attempts", json!(3))]);
    // Start failures are not upgrade failures.
    assert_eq!(h.log.count_events("upgrade_failed", &[]), 0);
    assert!(zombies_of(h.pid).is_empty());

    // Once something has served, crashes never end hotsup.
    std::fs::write(&mode, "crash-after-ready").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--start-attempts", "1"],
        &[
            example("testchild"),
            "--mode-file".into(),
            mode.clone(),
            "--crash-after-ms".into(),
            "50".into(),
        ],
    );
    for g in 1..=3 {
        h.ready(g);
        h.event("crashed", &[("generation", json!(g))]);
    }
    assert!(h.is_running());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
