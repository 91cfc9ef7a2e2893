//! Upgrades under load lose nothing.

use std::time::Duration;

use hotsup_bench::loadgen::{Load, LoadConfig, Report};
use rustix::process::Signal;

use crate::util::{Hotsup, WAIT, alive, example, json, wait_dead, zombies_of};

/// Load that keeps requests in flight across every upgrade: fresh
/// connections, keep-alive connections, and slow requests.
pub struct Traffic {
    loads: Vec<(&'static str, Load)>,
}

impl Traffic {
    pub fn start(addr: std::net::SocketAddr) -> Traffic {
        let cfg = |keep_alive, concurrency, path: &str| LoadConfig {
            keep_alive,
            concurrency,
            path: path.to_string(),
            max_duration: Duration::from_secs(180),
            timeout: Duration::from_secs(20),
            ..LoadConfig::new(addr)
        };
        Traffic {
            loads: vec![
                (
                    "new connection per request",
                    Load::start(cfg(false, 3, "/")),
                ),
                ("keep-alive", Load::start(cfg(true, 3, "/"))),
                (
                    "slow, in flight",
                    Load::start(cfg(true, 2, "/?sleep_ms=150")),
                ),
            ],
        }
    }

    pub fn wait_ok(&self, n: u64) {
        for (name, l) in &self.loads {
            assert!(l.wait_for_more_ok(n, WAIT), "{name}: no progress");
        }
    }

    pub fn stop(self) -> Vec<(&'static str, Report)> {
        self.loads.into_iter().map(|(n, l)| (n, l.stop())).collect()
    }
}

pub fn assert_no_failures(reports: &[(&str, Report)]) {
    for (name, r) in reports {
        assert!(r.ok > 0, "{name}: nothing served");
        assert_eq!(
            r.total_failures(),
            0,
            "{name}: {} failed of {}: {:?}\nfirst failures: {:#?}",
            r.total_failures(),
            r.total_requests(),
            r.failures_by_label(),
            r.samples
        );
    }
}

#[test]
fn twenty_upgrades_under_load_fail_no_request() {
    const UPGRADES: u64 = 20;
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0", "--drain-timeout", "5s"],
        &[example("http")],
    );
    let addr = h.addr("http");
    let mut pids = vec![h.ready(1)];
    let traffic = Traffic::start(addr);
    traffic.wait_ok(20);
    for g in 2..=UPGRADES + 1 {
        h.upgrade();
        pids.push(h.ready(g));
        // The old generation drains while the load goes on.
        h.event(
            "drained",
            &[
                ("generation", json!(g - 1)),
                ("status", json!("exited with code 0")),
            ],
        );
        traffic.wait_ok(20);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);

    // Every generation served, as the pids in response bodies show.
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in &reports {
        seen.extend(r.generations_seen());
    }
    let all: std::collections::BTreeSet<u64> = (1..=UPGRADES + 1).collect();
    assert_eq!(seen, all, "generations that answered");
    // ...and every old generation has exited.
    for pid in &pids[..pids.len() - 1] {
        assert!(!alive(*pid), "old generation pid {pid} still alive");
    }
    assert!(zombies_of(h.pid).is_empty(), "hotsup left zombies");

    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(wait_dead(*pids.last().unwrap(), WAIT));
    h.assert_left_nothing();
}

#[test]
fn signal_storm_spawns_at_most_two_generations() {
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0", "--drain-timeout", "5s"],
        &[
            example("testchild"),
            "--ready-delay-ms".into(),
            "1500".into(),
        ],
    );
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(5);
    let fds_before = h.open_fds();
    // The first signal starts an upgrade (its child takes 1.5s to be
    // ready); the 99 that arrive during it coalesce into one follow-up.
    h.upgrade();
    h.spawned_pid(2);
    for _ in 0..99 {
        h.upgrade();
    }
    h.ready(2);
    h.ready(3);
    h.event("drained", &[("generation", json!(2))]);
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    assert_eq!(h.log.count_events("spawned", &[]), 3, "{:#?}", h.log.all());
    assert!(zombies_of(h.pid).is_empty());
    // One more than before: the executable generation 2 ran stays pinned as
    // the previous good one, for `hotsup rollback`.
    assert!(
        h.open_fds() <= fds_before + 1,
        "fds grew from {fds_before} to {}",
        h.open_fds()
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
