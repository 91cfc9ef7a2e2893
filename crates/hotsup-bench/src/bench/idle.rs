//! Scenario "idle cost": hotsup running the HTTP example with no load at
//! all. hotsup's CPU time and context switches over the window should be
//! zero (no watchdog is configured, so nothing should wake it up).

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::request_once;
use rustix::process::Signal;

use super::json::Json;
use super::procfs::{self, ProcSample};
use super::scenario::{DRAIN_TIMEOUT, PROBE_TIMEOUT, START_TIMEOUT};
use super::supervised::{Binaries, Hotsup};

/// Settling time between the last request and the start of the window.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct IdleOutcome {
    pub requested: Duration,
    pub took: Duration,
    pub hotsup_pid: i32,
    pub child_pid: Option<i32>,
    pub hotsup_before: ProcSample,
    pub hotsup_after: ProcSample,
    pub child_before: Option<ProcSample>,
    pub child_after: Option<ProcSample>,
    pub error: Option<String>,
}

/// CPU milliseconds between two samples (schedstat ns where available).
pub fn cpu_delta_ms(a: &ProcSample, b: &ProcSample) -> f64 {
    match (a.cpu_ns, b.cpu_ns) {
        (Some(x), Some(y)) => y.saturating_sub(x) as f64 / 1e6,
        _ => procfs::ticks_to_ms(b.cpu_ticks.saturating_sub(a.cpu_ticks)),
    }
}

impl IdleOutcome {
    pub fn hotsup_ctxt(&self) -> u64 {
        self.hotsup_after
            .ctxt_switches()
            .saturating_sub(self.hotsup_before.ctxt_switches())
    }

    pub fn hotsup_cpu_ms(&self) -> f64 {
        cpu_delta_ms(&self.hotsup_before, &self.hotsup_after)
    }

    /// Whether hotsup never woke up during the window.
    pub fn met(&self) -> bool {
        self.error.is_none() && self.hotsup_ctxt() == 0
    }
}

fn measure(bins: &Binaries, o: &mut IdleOutcome) -> Result<()> {
    let mut hs = Hotsup::start(&bins.hotsup, &bins.http, DRAIN_TIMEOUT)?;
    o.hotsup_pid = hs.pid();
    let (i, addr) = hs.expect_listening(START_TIMEOUT, "the `listening` line")?;
    let ready = hs.expect_first_ready(i, START_TIMEOUT)?;
    o.child_pid = hs.lines[ready].pid;
    let r = request_once(addr, "/", PROBE_TIMEOUT)
        .map_err(|f| anyhow::anyhow!("request to {addr}: {f}"))?;
    if r.status != 200 {
        bail!("request to {addr}: status {}", r.status);
    }
    thread::sleep(SETTLE);
    o.hotsup_before = procfs::sample(hs.pid()).context("cannot read hotsup's /proc entry")?;
    o.child_before = o.child_pid.and_then(|p| procfs::sample(p).ok());
    let t = Instant::now();
    // One sleep, so that the bench itself does not disturb the window.
    thread::sleep(o.requested);
    o.hotsup_after = procfs::sample(hs.pid()).context("cannot read hotsup's /proc entry")?;
    o.child_after = o.child_pid.and_then(|p| procfs::sample(p).ok());
    o.took = t.elapsed();
    hs.signal(Signal::TERM)?;
    hs.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(5));
    let leftovers = hs.cleanup();
    if !leftovers.is_empty() {
        bail!("generations left running after hotsup exited: {leftovers:?} (killed)");
    }
    Ok(())
}

pub fn run(bins: &Binaries, window: Duration) -> IdleOutcome {
    let mut o = IdleOutcome {
        requested: window,
        ..IdleOutcome::default()
    };
    if let Err(e) = measure(bins, &mut o) {
        o.error = Some(format!("{e:#}"));
    }
    o
}

fn per_min(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 * 60.0 / d.as_secs_f64()
    }
}

pub fn text(o: &IdleOutcome, out: &mut String) {
    let _ = writeln!(
        out,
        "\n== idle cost: hotsup + examples/http, no load, {:.1}s window (--idle-secs) ==",
        o.took.as_secs_f64()
    );
    if let Some(e) = &o.error {
        let _ = writeln!(out, "  ERROR {e}");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>14} {:>10} {:>13} {:>10}",
        "", "CPU ms", "ctxt switches", "voluntary", "nonvoluntary", "per minute"
    );
    let mut row = |name: &str, a: &ProcSample, b: &ProcSample| {
        let n = b.ctxt_switches().saturating_sub(a.ctxt_switches());
        let _ = writeln!(
            out,
            "  {name:<28} {:>10.3} {:>14} {:>10} {:>13} {:>10.1}",
            cpu_delta_ms(a, b),
            n,
            b.voluntary_ctxt.saturating_sub(a.voluntary_ctxt),
            b.nonvoluntary_ctxt.saturating_sub(a.nonvoluntary_ctxt),
            per_min(n, o.took)
        );
    };
    row(
        &format!("hotsup (pid {})", o.hotsup_pid),
        &o.hotsup_before,
        &o.hotsup_after,
    );
    if let (Some(a), Some(b)) = (&o.child_before, &o.child_after) {
        row(
            &format!("child http (pid {})", o.child_pid.unwrap_or(0)),
            a,
            b,
        );
    }
    let _ = writeln!(
        out,
        "  target: hotsup has 0 wakeups while idle: {}",
        if o.met() { "met" } else { "NOT met" }
    );
}

/// `json` with the CPU time and context switches between two samples.
pub fn wakeups_json(json: Json, a: &ProcSample, b: &ProcSample) -> Json {
    json.set("cpu_ms", cpu_delta_ms(a, b))
        .set(
            "context_switches",
            b.ctxt_switches().saturating_sub(a.ctxt_switches()),
        )
        .set(
            "voluntary_ctxt_switches",
            b.voluntary_ctxt.saturating_sub(a.voluntary_ctxt),
        )
        .set(
            "nonvoluntary_ctxt_switches",
            b.nonvoluntary_ctxt.saturating_sub(a.nonvoluntary_ctxt),
        )
}

fn proc_json(a: &ProcSample, b: &ProcSample) -> Json {
    wakeups_json(Json::obj(), a, b)
        .set("rss_kib", b.rss_kib)
        .set("threads", b.threads)
}

pub fn json(o: &IdleOutcome) -> Json {
    let child = match (&o.child_before, &o.child_after) {
        (Some(a), Some(b)) => proc_json(a, b).set("pid", o.child_pid),
        _ => Json::Null,
    };
    Json::obj()
        .set("seconds_requested", o.requested.as_secs_f64())
        .set("seconds", o.took.as_secs_f64())
        .set(
            "hotsup",
            proc_json(&o.hotsup_before, &o.hotsup_after).set("pid", o.hotsup_pid),
        )
        .set("child", child)
        .set("target_zero_wakeups_met", o.met())
        .set("error", o.error.clone())
}
