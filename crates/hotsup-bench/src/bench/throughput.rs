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
use hotsup_bench::{FailureKind, Load, LoadConfig, request_once};

use super::json::Json;
use super::procs::{self, Server};
use super::scenario::{DRAIN_TIMEOUT, LOAD_TIMEOUT, PROBE_TIMEOUT, START_TIMEOUT};
use super::supervised::{Binaries, Hotsup};

/// Direct/hotsup pairs.
pub const PAIRS: usize = 2;

/// One timed load run.
#[derive(Debug, Clone)]
pub struct Run {
    pub under_hotsup: bool,
    pub keep_alive: bool,
    pub pair: usize,
    pub requests: u64,
    pub failed: u64,
    pub failures: Vec<(String, u64)>,
    pub elapsed: Duration,
}

impl Run {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            (self.requests - self.failed) as f64 / self.elapsed.as_secs_f64()
        }
    }
}

#[derive(Debug, Default)]
pub struct ThroughputOutcome {
    pub seconds: Duration,
    pub concurrency: usize,
    pub runs: Vec<Run>,
    pub error: Option<String>,
    pub elapsed: Duration,
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
                        .map(Run::rate)
                };
                let (d, h) = (find(false)?, find(true)?);
                (d > 0.0).then(|| h / d)
            })
            .collect()
    }

    pub fn mean_ratio(&self, keep_alive: bool) -> Option<f64> {
        let r = self.ratios(keep_alive);
        (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
    }

    fn mean_rate(&self, keep_alive: bool, under_hotsup: bool) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.keep_alive == keep_alive && r.under_hotsup == under_hotsup)
            .map(Run::rate)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

fn wait_answer(addr: SocketAddr, mut alive: impl FnMut() -> Option<String>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match request_once(addr, "/", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(f) => last = f.to_string(),
        }
        if let Some(why) = alive() {
            bail!("the server at {addr} is gone: {why}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    bail!("{addr} did not answer within {START_TIMEOUT:?} (last: {last})")
}

fn load(addr: SocketAddr, concurrency: usize, keep_alive: bool, secs: Duration) -> Run {
    let report = Load::start(LoadConfig {
        concurrency,
        keep_alive,
        max_duration: secs,
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    })
    .finish();
    Run {
        under_hotsup: false,
        keep_alive,
        pair: 0,
        requests: report.total_requests(),
        failed: report.total_failures(),
        failures: report
            .failures
            .iter()
            .map(|(k, n): (&FailureKind, &u64)| (k.label(), *n))
            .collect(),
        elapsed: report.elapsed,
    }
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
    let mut hs = Hotsup::start(&bins.hotsup, &bins.http, DRAIN_TIMEOUT)?;
    let (i, hotsup_addr) = hs.expect_listening(START_TIMEOUT, "the `listening` line")?;
    hs.expect_first_ready(i, START_TIMEOUT)?;
    wait_answer(hotsup_addr, || None)?;
    for pair in 0..PAIRS {
        for under_hotsup in [false, true] {
            let addr = if under_hotsup {
                hotsup_addr
            } else {
                direct_addr
            };
            for keep_alive in [true, false] {
                let mut run = load(addr, concurrency, keep_alive, secs);
                run.pair = pair;
                run.under_hotsup = under_hotsup;
                o.runs.push(run);
            }
        }
    }
    hs.signal(rustix::process::Signal::TERM)?;
    hs.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(5));
    let leftovers = hs.cleanup();
    drop(direct);
    if !leftovers.is_empty() {
        bail!("generations left running after hotsup exited: {leftovers:?} (killed)");
    }
    Ok(())
}

pub fn run(bins: &Binaries, secs: Duration, concurrency: usize) -> ThroughputOutcome {
    let started = Instant::now();
    let mut o = ThroughputOutcome {
        seconds: secs,
        concurrency,
        ..ThroughputOutcome::default()
    };
    if let Err(e) = measure(bins, secs, concurrency, &mut o) {
        o.error = Some(format!("{e:#}"));
    }
    o.elapsed = started.elapsed();
    o
}

fn f(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

pub fn text(o: &ThroughputOutcome, out: &mut String) {
    let _ = writeln!(
        out,
        "\n== throughput: examples/http direct vs under hotsup, {} workers, {:.0}s per run \
         (--throughput-secs), order direct, hotsup x{PAIRS} ==",
        o.concurrency,
        o.seconds.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  {:<4} {:<8} {:<12} {:>10} {:>8} {:>11}",
        "pair", "server", "load", "requests", "failed", "ok req/s"
    );
    for r in &o.runs {
        let _ = writeln!(
            out,
            "  {:<4} {:<8} {:<12} {:>10} {:>8} {:>11.0}{}",
            r.pair + 1,
            if r.under_hotsup { "hotsup" } else { "direct" },
            if r.keep_alive {
                "keep-alive"
            } else {
                "new-conn"
            },
            r.requests,
            r.failed,
            r.rate(),
            if r.failures.is_empty() {
                String::new()
            } else {
                format!(
                    "  ({})",
                    r.failures
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let _ = writeln!(
        out,
        "  {:<12} {:>13} {:>13} {:>22} {:>12}",
        "load", "direct req/s", "hotsup req/s", "ratio hotsup/direct", "per pair"
    );
    for keep_alive in [true, false] {
        let _ = writeln!(
            out,
            "  {:<12} {:>13} {:>13} {:>22} {:>12}",
            if keep_alive { "keep-alive" } else { "new-conn" },
            f(o.mean_rate(keep_alive, false), 0),
            f(o.mean_rate(keep_alive, true), 0),
            f(o.mean_ratio(keep_alive), 3),
            o.ratios(keep_alive)
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(e) = &o.error {
        let _ = writeln!(out, "  ERROR {e}");
    }
}

pub fn json(o: &ThroughputOutcome) -> Json {
    let runs: Vec<Json> = o
        .runs
        .iter()
        .map(|r| {
            Json::obj()
                .set("pair", r.pair + 1)
                .set("server", if r.under_hotsup { "hotsup" } else { "direct" })
                .set("keep_alive", r.keep_alive)
                .set("requests", r.requests)
                .set("failed", r.failed)
                .set(
                    "failures",
                    Json::Obj(
                        r.failures
                            .iter()
                            .map(|(k, n)| (k.clone(), Json::from(*n)))
                            .collect(),
                    ),
                )
                .set("elapsed_s", r.elapsed.as_secs_f64())
                .set("ok_requests_per_s", r.rate())
        })
        .collect();
    let mode = |ka: bool| {
        Json::obj()
            .set("direct_requests_per_s_mean", o.mean_rate(ka, false))
            .set("hotsup_requests_per_s_mean", o.mean_rate(ka, true))
            .set("ratio_hotsup_over_direct_per_pair", o.ratios(ka))
            .set("ratio_hotsup_over_direct_mean", o.mean_ratio(ka))
    };
    Json::obj()
        .set("seconds_per_run", o.seconds.as_secs_f64())
        .set("concurrency", o.concurrency)
        .set("keep_alive", mode(true))
        .set("new_connection", mode(false))
        .set("runs", runs)
        .set("error", o.error.clone())
        .set("elapsed_s", o.elapsed.as_secs_f64())
}
