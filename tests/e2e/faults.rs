//! The fault suite: crash loops, fd exhaustion and a long soak. Each test is
//! bounded and deterministic; the signal storm is in `upgrade.rs` and the
//! garbage-writing child in `rollback.rs`.

use std::time::Duration;

use hotsup_bench::loadgen::{Load, LoadConfig};
use rustix::process::{Pid, Resource, Signal};

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, example, json, rss_kib, tempdir, zombies_of};

fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn crash_looping_new_children_leave_the_old_one_serving() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "serve").unwrap();
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0"],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(5);
    std::fs::write(&mode, "crash").unwrap();
    // Warm up before measuring.
    let mut from = 0;
    for g in 2..=6u64 {
        h.upgrade();
        from = h
            .log
            .wait_event_from(from, "upgrade_failed", &[("generation", json!(g))], WAIT)
            .0;
    }
    let fds = h.quiet_fds();
    let rss = rss_kib(h.pid);
    for g in 7..=56u64 {
        h.upgrade();
        let (i, failed) =
            h.log
                .wait_event_from(from, "upgrade_failed", &[("generation", json!(g))], WAIT);
        assert!(
            failed["reason"]
                .as_str()
                .unwrap()
                .contains("exited with code 3"),
            "{failed}"
        );
        from = i;
    }
    traffic.wait_ok(10);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    for (_, r) in &reports {
        assert_eq!(r.generations_seen(), [1].into_iter().collect());
    }
    assert_eq!(h.quiet_fds(), fds, "fds changed over 50 failed upgrades");
    let rss_after = rss_kib(h.pid);
    assert!(
        rss_after <= rss + 512,
        "RSS grew from {rss} to {rss_after} KiB"
    );
    assert!(zombies_of(h.pid).is_empty());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn an_upgrade_that_cannot_get_fds_fails_cleanly() {
    let mut h = Hotsup::run(&["-l", "http=127.0.0.1:0"], &[example("http")]);
    let addr = h.addr("http");
    h.ready(1);
    let load = Load::start(LoadConfig {
        keep_alive: true,
        concurrency: 2,
        max_duration: Duration::from_secs(120),
        ..LoadConfig::new(addr)
    });
    assert!(load.wait_for_ok(10, WAIT));
    let pid = Pid::from_raw(h.pid).unwrap();
    let saved = rustix::process::getrlimit(Resource::Nofile);
    // Leave hotsup one free fd: the new child's channel needs two.
    let open = h.quiet_fds() as u64;
    let tight = rustix::process::Rlimit {
        current: Some(open + 1),
        maximum: saved.maximum,
    };
    rustix::process::prlimit(Some(pid), Resource::Nofile, tight).unwrap();
    h.upgrade();
    let failed = h.event("upgrade_failed", &[]);
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{failed}"
    );
    assert_eq!(failed["serving"], 1, "{failed}");
    assert!(load.wait_for_more_ok(20, WAIT));

    // With fds available again, the next upgrade works.
    let roomy = rustix::process::Rlimit {
        current: Some(65536.min(saved.maximum.unwrap_or(65536))),
        maximum: saved.maximum,
    };
    rustix::process::prlimit(Some(pid), Resource::Nofile, roomy).unwrap();
    h.upgrade();
    h.ready(2);
    assert!(load.wait_for_more_ok(20, WAIT));
    let report = load.stop();
    assert_eq!(report.total_failures(), 0, "{:?}", report.samples);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn soak_a_thousand_upgrades_under_light_load() {
    const UPGRADES: u64 = 1000;
    // Upgrades follow each other as fast as generations become ready, so on
    // a loaded machine several drain at once; the default --max-draining
    // (4) would then kill one with a request in flight, which is that
    // option's job but not what this test is about.
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--drain-timeout",
            "5s",
            "--max-draining",
            "64",
        ],
        &[example("testchild")],
    );
    let addr = h.addr("http");
    h.ready(1);
    let load = Load::start(LoadConfig {
        keep_alive: false,
        concurrency: 1,
        pause_between: Some(Duration::from_millis(2)),
        max_duration: Duration::from_secs(600),
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(addr)
    });
    assert!(load.wait_for_ok(5, WAIT));
    let mut samples = Vec::new();
    let mut from = 0;
    for g in 2..=UPGRADES + 1 {
        h.upgrade();
        from = h
            .log
            .wait_event_from(from, "ready", &[("generation", json!(g))], WAIT)
            .0;
        if g % 100 == 1 {
            // Let every older generation finish (several drain at once on
            // a loaded machine), then sample.
            crate::util::eventually("older generations drained", || {
                h.log.count_events("drained", &[]) as u64 >= g - 1
            });
            samples.push((g, h.quiet_fds(), rss_kib(h.pid), threads(h.pid)));
        }
    }
    let report = load.stop();
    eprintln!("(generation, fds, RSS KiB, threads): {samples:?}");
    assert_eq!(report.total_failures(), 0, "{:?}", report.samples);
    let (_, fds0, rss0, _) = samples[0];
    for &(g, fds, rss, t) in &samples {
        assert_eq!(fds, fds0, "fds at generation {g}: {samples:?}");
        assert!(rss <= rss0 + 1024, "RSS at generation {g}: {samples:?}");
        // The loop, the log writer, and at most one blocking-pool thread
        // that closes replaced executables off the loop.
        assert!(t <= 3, "threads at generation {g}: {samples:?}");
    }
    crate::util::eventually("hotsup back to its loop and log writer", || {
        threads(h.pid) == 2
    });
    assert!(zombies_of(h.pid).is_empty());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
