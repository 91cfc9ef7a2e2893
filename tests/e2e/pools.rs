//! Worker pools: several processes per generation on one socket set,
//! rolling and canary upgrades, slot restarts and scaling, under load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, client, example, json, pid_of, script, tempdir, text};

/// An app that is testchild, except where a flag file in `dir` says
/// otherwise for a generation and worker: `crash-<g>-<w>` exits at once,
/// `crash-after-ready-<g>-<w>` serves, then exits 300 ms after ready.
fn app(dir: &Path) -> PathBuf {
    let app = dir.join("app");
    let tc = example("testchild");
    script(
        &app,
        &format!(
            "#!/bin/sh\n\
             d={dir}\n\
             g=$HOTSUP_GENERATION; w=$HOTSUP_WORKER\n\
             [ -e \"$d/crash-$g-$w\" ] && exit 3\n\
             if [ -e \"$d/crash-after-ready-$g-$w\" ]; then\n\
             echo crash-after-ready > \"$d/mode-$g-$w\"\n\
             exec {tc} --mode-file \"$d/mode-$g-$w\" --crash-after-ms 300\n\
             fi\n\
             exec {tc}\n",
            dir = dir.display(),
            tc = tc.display()
        ),
    );
    app
}

fn status(sock: &Path) -> serde_json::Value {
    let out = client(sock, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Workers serving or starting, over every generation: what the N+K bound
/// counts.
fn busy(v: &serde_json::Value) -> usize {
    let mut gens: Vec<&serde_json::Value> = Vec::new();
    for k in ["serving", "starting", "standby"] {
        if v[k].is_object() {
            gens.push(&v[k]);
        }
    }
    gens.extend(v["draining"].as_array().into_iter().flatten());
    gens.iter()
        .flat_map(|g| g["workers"].as_array().into_iter().flatten())
        .filter(|w| w["state"] == "serving" || w["state"] == "starting")
        .count()
}

fn pool(dir: &Path, extra: &[&str]) -> (Hotsup, PathBuf) {
    let sock = dir.join("control.sock");
    let mut args = vec![
        "-l",
        "http=127.0.0.1:0",
        "--control",
        sock.to_str().unwrap(),
        "--drain-timeout",
        "5s",
    ];
    args.extend(extra);
    let h = Hotsup::run(&args, &[app(dir)]);
    (h, sock)
}

#[test]
fn rolling_upgrades_of_four_workers_lose_nothing_and_stay_within_n_plus_k() {
    const UPGRADES: u64 = 20;
    let dir = tempdir();
    let (mut h, sock) = pool(dir.path(), &["--workers", "4", "--rollout-batch", "2"]);
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(20);
    // (generation, pid): pids wrap around on a busy machine (pid_max is
    // often 32768), so a pid alone may name workers of two generations.
    let mut worker_pids: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut max_busy = 0;
    for g in 1..=UPGRADES + 1 {
        if g > 1 {
            h.upgrade();
            // Sample the pool while the rollout goes on.
            while h.log.count_events("ready", &[("generation", json!(g))]) == 0 {
                max_busy = max_busy.max(busy(&status(&sock)));
                if h.log.count_events("upgrade_failed", &[]) > 0 {
                    panic!("an upgrade failed: {:#?}", h.log.all());
                }
            }
        }
        h.ready(g);
        // From the control socket rather than the log: log lines may be
        // dropped on a machine too loaded to read them in time.
        let v = status(&sock);
        assert_eq!(v["serving"]["generation"], g, "{v}");
        for w in v["serving"]["workers"].as_array().unwrap() {
            worker_pids.insert((g, w["pid"].as_u64().unwrap() as u32));
        }
        // Each serves before the next upgrade replaces it.
        traffic.wait_ok(40);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);
    assert_eq!(worker_pids.len() as u64, 4 * (UPGRADES + 1));
    let mut served: BTreeSet<(u64, u32)> = BTreeSet::new();
    for (_, r) in &reports {
        served.extend(
            r.records
                .iter()
                .filter_map(|s| Some((s.generation?, s.pid?))),
        );
    }
    let idle: Vec<&(u64, u32)> = worker_pids.difference(&served).collect();
    // Every worker of every generation took requests.
    assert!(idle.is_empty(), "workers that served nothing: {idle:?}");
    assert!(max_busy <= 4 + 2, "{max_busy} workers busy at once");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_worker_failing_mid_rollout_rolls_it_back_with_nothing_lost() {
    let dir = tempdir();
    let (mut h, sock) = pool(dir.path(), &["--workers", "3", "--rollout-batch", "1"]);
    let addr = h.addr("http");
    h.ready(1);
    let old: BTreeSet<i64> = h
        .log
        .events()
        .iter()
        .filter(|e| e["event"] == "spawned" && e["generation"] == 1)
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    // Generation 2's second worker cannot start.
    std::fs::write(dir.path().join("crash-2-1"), "").unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    h.event("upgrade_failed", &[("generation", json!(2))]);
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let v = status(&sock);
    assert_eq!(v["serving"]["generation"], 1);
    let now: BTreeSet<i64> = v["serving"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "serving")
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(now.len(), 3, "{v}");
    // testchild speaks protocol 2 when hotsup-child does: its old worker
    // paused and resumed; otherwise the slot was refilled. Either way the
    // pool is whole, and its untouched workers are the same processes.
    assert!(now.intersection(&old).count() >= 2, "{old:?} vs {now:?}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_canary_that_crashes_is_taken_back_with_no_connection_refused() {
    let dir = tempdir();
    let (mut h, sock) = pool(dir.path(), &["--workers", "2", "--canary", "5s"]);
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    std::fs::write(dir.path().join("crash-after-ready-2-0"), "").unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    h.event("canary_started", &[("generation", json!(2))]);
    h.event("rolled_back", &[("generation", json!(2))]);
    traffic.wait_ok(20);
    let reports = traffic.stop();
    // Only requests in flight in the crashing canary may fail: never a
    // refused connection.
    for (name, r) in &reports {
        let refused = r.failures_where(|k| k.label() == "refused");
        assert_eq!(refused, 0, "{name}: {:?}", r.failures_by_label());
        assert!(
            r.total_failures() <= 8,
            "{name}: {:?}",
            r.failures_by_label()
        );
    }
    let v = status(&sock);
    assert_eq!(v["serving"]["generation"], 1);
    assert_eq!(v["upgrades"]["rolled_back"], 1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_killed_worker_restarts_alone_in_its_slot() {
    let dir = tempdir();
    let (mut h, sock) = pool(dir.path(), &["--workers", "3"]);
    let addr = h.addr("http");
    h.ready(1);
    let pids = |v: &serde_json::Value| -> Vec<(u64, i64)> {
        let mut p: Vec<(u64, i64)> = v["serving"]["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["worker"].as_u64().unwrap(), w["pid"].as_i64().unwrap()))
            .collect();
        p.sort();
        p
    };
    let before = pids(&status(&sock));
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    let victim = before[1].1 as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim).unwrap(),
        Signal::KILL,
    )
    .unwrap();
    let (from, _) = h
        .log
        .wait_event_from(0, "slot_restart_scheduled", &[("slot", json!(1))], WAIT);
    let (_, restarted) = h.log.wait_event_from(
        from,
        "worker_ready",
        &[("generation", json!(1)), ("slot", json!(1))],
        WAIT,
    );
    traffic.wait_ok(20);
    let reports = traffic.stop();
    for (name, r) in &reports {
        assert_eq!(
            r.failures_where(|k| k.label() == "refused"),
            0,
            "{name}: {:?}",
            r.failures_by_label()
        );
    }
    let after = pids(&status(&sock));
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert_eq!(after[1].1 as i32, pid_of(&restarted));
    assert_ne!(after[1].1, before[1].1);
    assert_eq!(status(&sock)["serving"]["generation"], 1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn scaling_up_and_down_under_load_loses_nothing() {
    let dir = tempdir();
    let (mut h, sock) = pool(dir.path(), &["--workers", "2"]);
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    let out = client(&sock, &["scale", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for slot in 2..4 {
        h.event("worker_ready", &[("slot", json!(slot))]);
    }
    traffic.wait_ok(20);
    let out = client(&sock, &["scale", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for slot in 1..4 {
        h.event("drained", &[("slot", json!(slot))]);
    }
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let v = status(&sock);
    assert_eq!(v["workers"], 1);
    assert_eq!(v["serving"]["workers"].as_array().unwrap().len(), 1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn an_unmodified_pool_under_systemd_fds_upgrades_with_nothing_lost() {
    // gunicorn-style: several processes of an app that knows only
    // LISTEN_FDS and READY=1.
    let mut h = Hotsup::run(
        &[
            "--fds",
            "systemd",
            "--workers",
            "3",
            "-l",
            "web=127.0.0.1:0",
            "--drain-timeout",
            "5s",
        ],
        &[example("notify_app")],
    );
    let addr = h.addr("web");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    for g in 2..=6 {
        h.upgrade();
        h.ready(g);
        traffic.wait_ok(10);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
