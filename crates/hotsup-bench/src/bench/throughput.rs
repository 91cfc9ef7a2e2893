//! Scenario "throughput": the HTTP example served directly (no hotsup)
//! versus under hotsup, with the same closed-loop load for the same time,
//! keep-alive and a new connection per request. Runs alternate (direct,
//! hotsup, direct, hotsup) and the ratio under/direct is averaged over the
//! pairs, since machines are noisy. hotsup never proxies, so the ratio
//! should be 1 within noise.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hotsup_bench::{Load, LoadConfig, request_once};
use serde::Serialize;

use super::procs::{self, Server};
use super::report::{LOAD_TIMEOUT, PROBE_TIMEOUT, Table, Traffic, f};
use super::supervised::{Binaries, DRAIN_TIMEOUT, Launch};
use super::upgrades::START_TIMEOUT;

/// Direct/hotsup pairs.
pub const PAIRS: usize = 2;

/// One timed load run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub pair: usize,
    pub under_hotsup: bool,
    pub keep_alive: bool,
    /// Successful requests per second.
    pub ok_per_s: f64,
    pub load: Traffic,
}

#[derive(Debug, Default, Serialize)]
pub struct ThroughputOutcome {
    pub seconds_per_run: f64,
    pub concurrency: usize,
    pub runs: Vec<Run>,
    pub error: Option<String>,
}

impl ThroughputOutcome {
    /// Ratios under/direct per pair for one load mode.
    pub fn ratios(&self, keep_alive: bool) -> Vec<f64> {
        (0..PAIRS)
            .filter_map(|p| {
                let find = |h: bool| {
                    self.runs
                        .iter()
                        .find(|r| r.pair == p && r.keep_alive == keep_alive && r.under_hotsup == h)
                        .map(|r| r.ok_per_s)
                };
                let (d, h) = (find(false)?, find(true)?);
                (d > 0.0).then(|| h / d)
            })
            .collect()
    }

    pub fn mean_ratio(&self, keep_alive: bool) -> Option<f64> {
        mean(&self.ratios(keep_alive))
    }

    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "load",
            "direct req/s",
            "hotsup req/s",
            "ratio hotsup/direct",
            "per pair",
        ]);
        for keep_alive in [true, false] {
            let rate = |h: bool| {
                let v: Vec<f64> = self
                    .runs
                    .iter()
                    .filter(|r| r.keep_alive == keep_alive && r.under_hotsup == h)
                    .map(|r| r.ok_per_s)
                    .collect();
                mean(&v)
            };
            t.row([
                if keep_alive { "keep-alive" } else { "new-conn" }.to_string(),
                f(rate(false), 0),
                f(rate(true), 0),
                f(self.mean_ratio(keep_alive), 3),
                self.ratios(keep_alive)
                    .iter()
                    .map(|r| format!("{r:.3}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]);
        }
        t.render(out);
        let failed: u64 = self.runs.iter().map(|r| r.load.failed).sum();
        let _ = writeln!(
            out,
            "  {} workers, {:.0}s per run, order direct, hotsup x{PAIRS}; failed requests {failed}",
            self.concurrency, self.seconds_per_run
        );
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  ERROR {e}");
        }
    }
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Waits until `addr` answers `path` with 200, or `gone` says why not.
pub fn wait_answer(addr: SocketAddr, mut gone: impl FnMut() -> Option<String>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match request_once(addr, "/", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(f) => last = f.to_string(),
        }
        if let Some(why) = gone() {
            bail!("the server at {addr} is gone: {why}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    bail!("{addr} did not answer within {START_TIMEOUT:?} (last: {last})")
}

/// One closed-loop load of `secs` at `addr` with `path`: its figures and
/// its successful requests per second.
pub fn timed_load(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    keep_alive: bool,
    secs: Duration,
) -> (Traffic, f64) {
    let report = Load::start(LoadConfig {
        concurrency,
        keep_alive,
        path: path.into(),
        max_duration: secs,
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    })
    .finish();
    let ok_per_s = if report.elapsed.is_zero() {
        0.0
    } else {
        report.ok as f64 / report.elapsed.as_secs_f64()
    };
    (Traffic::of(&report), ok_per_s)
}

fn measure(
    bins: &Binaries,
    secs: Duration,
    concurrency: usize,
    o: &mut ThroughputOutcome,
) -> Result<()> {
    // Both servers run for the whole scenario; the idle one costs nothing.
    let direct_addr = procs::free_loopback_addr()?;
    let mut direct = Server::spawn(&bins.http, &[direct_addr.to_string()], &[], None)?;
    wait_answer(direct_addr, || {
        direct
            .exited()
            .map(|s| format!("exited ({})", procs::describe_status(&s)))
    })?;
    let mut hs = Launch::new(&bins.hotsup, &bins.http).start()?;
    let hotsup_addr = hs.expect_listening(START_TIMEOUT)?;
    hs.expect_ready(0, 1, START_TIMEOUT)?;
    wait_answer(hotsup_addr, || None)?;
    for pair in 0..PAIRS {
        for under_hotsup in [false, true] {
            let addr = if under_hotsup {
                hotsup_addr
            } else {
                direct_addr
            };
            for keep_alive in [true, false] {
                let (load, ok_per_s) = timed_load(addr, "/", concurrency, keep_alive, secs);
                o.runs.push(Run {
                    pair,
                    under_hotsup,
                    keep_alive,
                    ok_per_s,
                    load,
                });
            }
        }
    }
    let s = hs.stop(DRAIN_TIMEOUT + Duration::from_secs(5));
    drop(direct);
    if !s.leftovers.is_empty() {
        bail!(
            "children left running after hotsup exited: {:?} (killed)",
            s.leftovers
        );
    }
    Ok(())
}

pub fn run(bins: &Binaries, secs: Duration, concurrency: usize) -> ThroughputOutcome {
    let mut o = ThroughputOutcome {
        seconds_per_run: secs.as_secs_f64(),
        concurrency,
        ..ThroughputOutcome::default()
    };
    if let Err(e) = measure(bins, secs, concurrency, &mut o) {
        o.error = Some(format!("{e:#}"));
    }
    o
}
