//! Scenario "handoff": hotsup with K listeners (`-l 127.0.0.1:0` K times)
//! running the HTTP example, which serves the first TCP listener and
//! receives (without accepting on) the others. Measures the handoff
//! (`handed_off` elapsed_us) of generation 1 and of a few upgrades, and
//! hotsup's memory and fds at each K.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs::{self, ProcSample};
use hotsup_bench::{percentile, request_once};
use rustix::process::Signal;
use serde::Serialize;

use super::report::{PROBE_TIMEOUT, Table, f, ms};
use super::supervised::{Binaries, Launch};
use super::upgrades::{DRAINED_TIMEOUT, READY_TIMEOUT};

/// Listener counts measured.
pub const SIZES: &[usize] = &[1, 100, 1000, 10_000];
/// Upgrades per size.
pub const UPGRADES: u32 = 3;
/// How long hotsup may take to bind K listeners and start generation 1.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One listener count, as measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleRow {
    pub listeners: usize,
    /// Bytes of hotsup's argument list.
    pub argv_bytes: usize,
    /// Start of hotsup -> `ready` of generation 1 read.
    pub start_to_ready_ms: Option<f64>,
    pub gen1_handoff_us: Option<u64>,
    /// `listeners` hotsup reported for generation 1's handoff.
    pub reported_listeners: Option<u64>,
    /// `listening` events that reached the log.
    pub listening_logged: usize,
    pub upgrade_handoff_us: Vec<u64>,
    /// Signal -> `ready` read, per upgrade.
    pub upgrade_ready_ms: Vec<f64>,
    /// hotsup after generation 1 was ready, and after the upgrades.
    pub proc_ready: ProcSample,
    pub proc_after: ProcSample,
    pub error: Option<String>,
}

impl ScaleRow {
    pub fn upgrade_handoff_p50_us(&self) -> Option<u64> {
        let mut v = self.upgrade_handoff_us.clone();
        v.sort_unstable();
        percentile(&v, 50.0)
    }
}

#[derive(Debug, Serialize)]
pub struct ScaleOutcome {
    pub rows: Vec<ScaleRow>,
    /// The bench's RLIMIT_NOFILE (soft, hard) after raising it.
    pub nofile: (Option<u64>, Option<u64>),
    /// `RLIMIT_STACK / 4`, the kernel's limit on argv + envp, if known.
    pub arg_max: Option<u64>,
}

impl ScaleOutcome {
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "listeners",
            "start->ready ms",
            "gen1 handoff us",
            "upgrade handoff p50 us",
            "upgrade sig->ready p50 ms",
            "RSS KiB gen1",
            "RSS KiB after",
            "fds after",
        ]);
        for r in &self.rows {
            let mut rdy = r.upgrade_ready_ms.clone();
            rdy.sort_by(f64::total_cmp);
            let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
            t.row([
                r.listeners.to_string(),
                f(r.start_to_ready_ms, 1),
                opt(r.gen1_handoff_us),
                opt(r.upgrade_handoff_p50_us()),
                f(percentile(&rdy, 50.0), 1),
                opt(Some(r.proc_ready.rss_kib).filter(|&v| v > 0)),
                opt(Some(r.proc_after.rss_kib).filter(|&v| v > 0)),
                opt(Some(r.proc_after.fds).filter(|&v| v > 0)),
            ]);
        }
        t.render(out);
        for r in &self.rows {
            if r.error.is_none() && r.listening_logged != r.listeners {
                let _ = writeln!(
                    out,
                    "  K={}: {} `listening` events reached the log (hotsup drops lines its log queue cannot take)",
                    r.listeners, r.listening_logged
                );
            }
            if let Some(e) = &r.error {
                let _ = writeln!(
                    out,
                    "  K={}: ERROR {}",
                    r.listeners,
                    e.replace('\n', "\n      ")
                );
            }
        }
    }
}

fn arg_max() -> Option<u64> {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Stack);
    // fs/exec.c: the strings may take up to a quarter of the stack limit,
    // and at least 128 KiB.
    lim.current.map(|s| (s / 4).max(128 * 1024))
}

fn measure(launch: &Launch, row: &mut ScaleRow) -> Result<()> {
    let k = row.listeners;
    let t0 = Instant::now();
    let mut hs = launch.start()?;
    let addr = hs.expect_listening(START_TIMEOUT)?;
    let (ready, _) = hs.expect_ready(0, 1, START_TIMEOUT)?;
    row.start_to_ready_ms = Some(ms(hs.log.line(ready).at.saturating_duration_since(t0)));
    // Not every `listening` event need be there: 10,000 of them at once
    // overflow hotsup's log queue, which drops lines rather than wait.
    if let Some(e) = hs.log.events_from(0).find(|e| e.is("handed_off", 1)) {
        row.gen1_handoff_us = e.u64("elapsed_us");
        row.reported_listeners = e.u64("listeners");
        if row.reported_listeners != Some(k as u64) {
            bail!(
                "hotsup handed off {:?} listeners of {k}",
                row.reported_listeners
            );
        }
    }
    row.listening_logged = hs
        .log
        .events_from(0)
        .filter(|e| e.event == "listening")
        .count();
    let r = request_once(addr, "/", PROBE_TIMEOUT)
        .map_err(|f| anyhow::anyhow!("request to the first listener {addr}: {f}"))?;
    if r.status != 200 {
        bail!("request to the first listener {addr}: status {}", r.status);
    }
    row.proc_ready = procfs::sample(hs.pid()).context("cannot read hotsup's /proc entry")?;
    for old in 1..=u64::from(UPGRADES) {
        let from = hs.log.len();
        let t_signal = Instant::now();
        hs.try_signal(Signal::USR2)?;
        let (i, _) = hs.expect_ready(from, old + 1, READY_TIMEOUT)?;
        row.upgrade_ready_ms
            .push(ms(hs.log.line(i).at.saturating_duration_since(t_signal)));
        if let Some(us) = hs
            .log
            .events_from(from)
            .find(|e| e.is("handed_off", old + 1))
            .and_then(|e| e.u64("elapsed_us"))
        {
            row.upgrade_handoff_us.push(us);
        }
        hs.expect_event(from, DRAINED_TIMEOUT, "drained", |e| {
            e.generation == Some(old)
        })?;
    }
    row.proc_after = procfs::sample(hs.pid()).unwrap_or_default();
    let s = hs.stop(DRAINED_TIMEOUT);
    if !s.leftovers.is_empty() {
        bail!(
            "children left running after hotsup exited: {:?} (killed)",
            s.leftovers
        );
    }
    Ok(())
}

pub fn run(bins: &Binaries, nofile: (Option<u64>, Option<u64>)) -> ScaleOutcome {
    let max = arg_max();
    let mut rows = Vec::new();
    for &k in SIZES {
        let launch = Launch::new(&bins.hotsup, &bins.http).listeners(k);
        let mut row = ScaleRow {
            listeners: k,
            argv_bytes: launch.argv().iter().map(|a| a.len() + 1).sum::<usize>()
                + bins.hotsup.as_os_str().len()
                + 1,
            ..ScaleRow::default()
        };
        let fds_needed = k as u64 + 64;
        if nofile.0.is_some_and(|soft| soft < fds_needed) {
            row.error = Some(format!(
                "RLIMIT_NOFILE is {:?} (hard {:?}), {k} listeners need about {fds_needed}",
                nofile.0, nofile.1
            ));
        } else if max.is_some_and(|m| row.argv_bytes as u64 > m) {
            row.error = Some(format!(
                "argument list of {} bytes exceeds ARG_MAX {max:?}",
                row.argv_bytes
            ));
        } else if let Err(e) = measure(&launch, &mut row) {
            row.error = Some(format!("{e:#}"));
        }
        rows.push(row);
    }
    ScaleOutcome {
        rows,
        nofile,
        arg_max: max,
    }
}
