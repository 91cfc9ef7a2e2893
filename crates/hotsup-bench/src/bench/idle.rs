//! Scenario "idle": hotsup running the HTTP example with no load at all.
//! hotsup's CPU time and context switches over the window should be zero
//! (no watchdog is configured, so nothing should wake it up).

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs::{self, ProcSample};
use hotsup_bench::request_once;
use serde::Serialize;

use super::report::{PROBE_TIMEOUT, Table};
use super::supervised::{Binaries, DRAIN_TIMEOUT, Launch};
use super::upgrades::START_TIMEOUT;

/// Settling time between the last request and the start of the window.
const SETTLE: Duration = Duration::from_millis(500);

/// One process's wake-ups over the window.
#[derive(Debug, Default, Serialize)]
pub struct Wakeups {
    pub pid: i32,
    pub cpu_ms: f64,
    pub context_switches: u64,
    pub voluntary: u64,
    pub nonvoluntary: u64,
    pub rss_kib: u64,
}

impl Wakeups {
    fn of(pid: i32, a: &ProcSample, b: &ProcSample) -> Wakeups {
        Wakeups {
            pid,
            cpu_ms: a.cpu_ms_until(b),
            context_switches: a.ctxt_until(b),
            voluntary: b.voluntary_ctxt.saturating_sub(a.voluntary_ctxt),
            nonvoluntary: b.nonvoluntary_ctxt.saturating_sub(a.nonvoluntary_ctxt),
            rss_kib: b.rss_kib,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct IdleOutcome {
    pub seconds: f64,
    pub hotsup: Wakeups,
    pub child: Option<Wakeups>,
    pub error: Option<String>,
}

impl IdleOutcome {
    /// Whether hotsup never woke up during the window.
    pub fn met(&self) -> bool {
        self.error.is_none() && self.hotsup.context_switches == 0
    }

    pub fn text(&self, out: &mut String) {
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  ERROR {e}");
            return;
        }
        let mut t = Table::new([
            "over the window",
            "CPU ms",
            "ctxt switches",
            "voluntary",
            "nonvoluntary",
        ]);
        for (name, w) in [
            ("hotsup", Some(&self.hotsup)),
            ("child http", self.child.as_ref()),
        ] {
            if let Some(w) = w {
                t.row([
                    format!("{name} (pid {})", w.pid),
                    format!("{:.3}", w.cpu_ms),
                    w.context_switches.to_string(),
                    w.voluntary.to_string(),
                    w.nonvoluntary.to_string(),
                ]);
            }
        }
        t.render(out);
        let _ = writeln!(
            out,
            "  window {:.1}s; target: hotsup has 0 wakeups while idle: {}",
            self.seconds,
            if self.met() { "met" } else { "NOT met" }
        );
    }
}

fn measure(bins: &Binaries, window: Duration, o: &mut IdleOutcome) -> Result<()> {
    let mut hs = Launch::new(&bins.hotsup, &bins.http).start()?;
    let addr = hs.expect_listening(START_TIMEOUT)?;
    let (_, ready) = hs.expect_ready(0, 1, START_TIMEOUT)?;
    let r = request_once(addr, "/", PROBE_TIMEOUT)
        .map_err(|f| anyhow::anyhow!("request to {addr}: {f}"))?;
    if r.status != 200 {
        bail!("request to {addr}: status {}", r.status);
    }
    thread::sleep(SETTLE);
    let pid = hs.pid();
    let h0 = procfs::sample(pid).context("cannot read hotsup's /proc entry")?;
    let c0 = ready.pid.and_then(|p| procfs::sample(p).ok());
    let t = Instant::now();
    // One sleep, so that the bench itself does not disturb the window.
    thread::sleep(window);
    let h1 = procfs::sample(pid).context("cannot read hotsup's /proc entry")?;
    let c1 = ready.pid.and_then(|p| procfs::sample(p).ok());
    o.seconds = t.elapsed().as_secs_f64();
    o.hotsup = Wakeups::of(pid, &h0, &h1);
    o.child = c0
        .zip(c1)
        .map(|(a, b)| Wakeups::of(ready.pid.unwrap_or(0), &a, &b));
    let s = hs.stop(DRAIN_TIMEOUT + Duration::from_secs(5));
    if !s.leftovers.is_empty() {
        bail!(
            "children left running after hotsup exited: {:?} (killed)",
            s.leftovers
        );
    }
    Ok(())
}

pub fn run(bins: &Binaries, window: Duration) -> IdleOutcome {
    let mut o = IdleOutcome::default();
    if let Err(e) = measure(bins, window, &mut o) {
        o.error = Some(format!("{e:#}"));
    }
    o
}
