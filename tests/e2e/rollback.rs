//! A new generation that fails leaves the old one serving, untouched.

use std::path::Path;

use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, alive, example, json, tempdir, wait_dead};

fn testchild(mode_file: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut v = vec![
        example("testchild").into_os_string(),
        "--mode-file".into(),
        mode_file.into(),
    ];
    v.extend(extra.iter().map(Into::into));
    v
}

/// Runs generation 1 in `serve` mode under load, upgrades into `mode`, and
/// checks that the failure is reported and generation 1 served throughout.
fn failed_upgrade(mode: &str, args: &[&str], expect: &str) -> Hotsup {
    let dir = tempdir();
    let mode_file = dir.path().join("mode");
    std::fs::write(&mode_file, "serve").unwrap();
    let mut all_args = vec!["-l", "http=127.0.0.1:0"];
    all_args.extend(args);
    let mut h = Hotsup::run(&all_args, &testchild(&mode_file, &[]));
    let addr = h.addr("http");
    let old = h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);

    std::fs::write(&mode_file, mode).unwrap();
    h.upgrade();
    let new = h.spawned_pid(2);
    let failed = h.event("upgrade_failed", &[("generation", json!(2))]);
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains(expect), "failure {failed} lacks {expect:?}");
    assert_eq!(
        failed["serving"], 1,
        "failure {failed} does not say who serves"
    );
    assert!(wait_dead(new, WAIT), "failed generation {new} still alive");

    // The old generation never noticed.
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    for (_, r) in &reports {
        assert_eq!(
            r.generations_seen(),
            [1].into_iter().collect(),
            "only generation 1 may answer"
        );
    }
    assert!(alive(old));
    assert!(h.is_running());
    assert_eq!(
        h.log.count_events("draining", &[]),
        0,
        "generation 1 must not drain"
    );

    // And a good upgrade afterwards still works.
    std::fs::write(&mode_file, "serve").unwrap();
    h.upgrade();
    h.ready(3);
    h.event("drained", &[("generation", json!(1))]);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h
}

#[test]
fn new_child_crashing_at_start_is_rolled_back() {
    failed_upgrade("crash", &[], "child exited with code 3 before it was ready");
}

#[test]
fn new_child_never_ready_is_killed_at_the_timeout() {
    failed_upgrade(
        "never-ready",
        &["--ready-timeout", "1s"],
        "not ready within 1s",
    );
}

#[test]
fn new_child_sending_garbage_is_killed() {
    failed_upgrade("garbage", &[], "malformed message");
}
