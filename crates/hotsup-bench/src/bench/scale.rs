//! Scenario "handoff scale": hotsup with K listeners (`-l 127.0.0.1:0` K
//! times) running the HTTP example, which serves the first TCP listener and
//! receives (without accepting on) the others. Measures the handoff
//! (`handed off listeners ... elapsed_us=X`) of generation 1 and of a few
//! upgrades, and hotsup's memory and fds at each K.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::{percentile, request_once};
use rustix::process::Signal;

use super::json::Json;
use super::logline::Kind;
use super::output::ms;
use super::procfs::{self, ProcSample};
use super::scenario::{DRAIN_TIMEOUT, PROBE_TIMEOUT, READY_TIMEOUT};
use super::supervised::{Binaries, Hotsup};

/// Listener counts measured.
pub const SIZES: &[usize] = &[1, 100, 1000, 10_000];
/// Upgrades per size.
pub const UPGRADES: u32 = 3;
/// How long hotsup may take to bind K listeners and start generation 1.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an old generation may take to be reaped after an upgrade.
const DRAINED_TIMEOUT: Duration = Duration::from_secs(DRAIN_TIMEOUT.as_secs() + 5);

/// One listener count, as measured.
#[derive(Debug, Clone, Default)]
pub struct ScaleRow {
    pub listeners: usize,
    /// Bytes of hotsup's argument list (each argument plus its NUL).
    pub argv_bytes: usize,
    /// Start of hotsup -> `ready generation=1` read.
    pub start_to_ready_ms: Option<f64>,
    /// `elapsed_us` of generation 1's handoff.
    pub gen1_handoff_us: Option<u64>,
    /// `listeners=` hotsup reported for generation 1's handoff.
    pub reported_listeners: Option<u64>,
    /// `elapsed_us` of each upgrade's handoff.
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

#[derive(Debug)]
pub struct ScaleOutcome {
    pub rows: Vec<ScaleRow>,
    /// The bench's RLIMIT_NOFILE (soft, hard) after raising it.
    pub nofile: (Option<u64>, Option<u64>),
    /// `RLIMIT_STACK / 4`, the kernel's limit on argv + envp, if known.
    pub arg_max: Option<u64>,
    pub elapsed: Duration,
}

fn arg_max() -> Option<u64> {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Stack);
    // fs/exec.c: the strings may take up to a quarter of the stack limit,
    // and at least 128 KiB (ARG_MAX is then the usual 2 MiB for 8 MiB).
    lim.current.map(|s| (s / 4).max(128 * 1024))
}

fn argv_bytes(bins: &Binaries, k: usize) -> usize {
    let fixed = [
        bins.hotsup.display().to_string(),
        "run".into(),
        "--drain-timeout".into(),
        format!("{}ms", DRAIN_TIMEOUT.as_millis()),
        "--".into(),
        bins.http.display().to_string(),
    ];
    fixed.iter().map(|a| a.len() + 1).sum::<usize>() + k * ("-l".len() + "127.0.0.1:0".len() + 2)
}

fn measure(bins: &Binaries, k: usize, row: &mut ScaleRow) -> Result<()> {
    let t0 = Instant::now();
    let mut hs = Hotsup::start_with_listeners(&bins.hotsup, &bins.http, DRAIN_TIMEOUT, k)?;
    let (first, addr) = hs.expect_listening(START_TIMEOUT, "the first `listening` line")?;
    let ready = hs.expect_first_ready(first, START_TIMEOUT)?;
    row.start_to_ready_ms = Some(ms(hs.lines[ready].at.saturating_duration_since(t0)));
    let listening = hs.lines[..ready]
        .iter()
        .filter(|l| matches!(l.kind, Kind::Listening { .. }))
        .count();
    if listening != k {
        bail!("hotsup logged {listening} `listening` lines for {k} listeners");
    }
    if let Some(l) = hs.lines[..=ready]
        .iter()
        .find(|l| matches!(l.kind, Kind::HandedOff { .. }) && l.generation == Some(1))
    {
        if let Kind::HandedOff { elapsed_us } = l.kind {
            row.gen1_handoff_us = Some(elapsed_us);
        }
        row.reported_listeners = l
            .raw
            .split_ascii_whitespace()
            .find_map(|t| t.strip_prefix("listeners=")?.parse().ok());
    }
    let r = request_once(addr, "/", PROBE_TIMEOUT)
        .map_err(|f| anyhow::anyhow!("request to the first listener {addr}: {f}"))?;
    if r.status != 200 {
        bail!("request to the first listener {addr}: status {}", r.status);
    }
    row.proc_ready = procfs::sample(hs.pid()).context("cannot read hotsup's /proc entry")?;

    let mut generation = 1;
    for _ in 0..UPGRADES {
        hs.pump();
        let from = hs.lines.len();
        let t_signal = Instant::now();
        hs.signal(Signal::USR2)?;
        let g = generation + 1;
        let ready = hs.expect(
            from,
            READY_TIMEOUT,
            &format!("`ready generation={g}`"),
            |l| l.kind == Kind::Ready && l.generation == Some(g),
        )?;
        row.upgrade_ready_ms
            .push(ms(hs.lines[ready].at.saturating_duration_since(t_signal)));
        if let Some(Kind::HandedOff { elapsed_us }) = hs.lines[from..=ready]
            .iter()
            .find(|l| matches!(l.kind, Kind::HandedOff { .. }) && l.generation == Some(g))
            .map(|l| l.kind.clone())
        {
            row.upgrade_handoff_us.push(elapsed_us);
        }
        hs.expect(
            from,
            DRAINED_TIMEOUT,
            &format!("`drained` of generation {generation}"),
            |l| matches!(l.kind, Kind::Drained { .. }) && l.generation == Some(generation),
        )?;
        generation = g;
    }
    row.proc_after = procfs::sample(hs.pid()).unwrap_or_default();
    // Graceful shutdown; `cleanup` forces it if that takes too long.
    hs.signal(Signal::TERM)?;
    hs.wait_exit(DRAINED_TIMEOUT);
    let leftovers = hs.cleanup();
    if !leftovers.is_empty() {
        bail!("generations left running after hotsup exited: {leftovers:?} (killed)");
    }
    Ok(())
}

pub fn run(bins: &Binaries, nofile: (Option<u64>, Option<u64>)) -> ScaleOutcome {
    let started = Instant::now();
    let mut rows = Vec::new();
    let max = arg_max();
    for &k in SIZES {
        let mut row = ScaleRow {
            listeners: k,
            argv_bytes: argv_bytes(bins, k),
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
                "argument list of {} bytes exceeds ARG_MAX {:?}",
                row.argv_bytes, max
            ));
        } else if let Err(e) = measure(bins, k, &mut row) {
            row.error = Some(format!("{e:#}"));
        }
        rows.push(row);
    }
    ScaleOutcome {
        rows,
        nofile,
        arg_max: max,
        elapsed: started.elapsed(),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn text(o: &ScaleOutcome, out: &mut String) {
    let _ = writeln!(
        out,
        "\n== handoff scale: hotsup with K listeners running examples/http \
         (serves the first; receives all), generation 1 + {UPGRADES} upgrades =="
    );
    let _ = writeln!(
        out,
        "  bench RLIMIT_NOFILE soft {} hard {}; argv limit {} bytes; took {:.1}s",
        opt(o.nofile.0),
        opt(o.nofile.1),
        opt(o.arg_max),
        o.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  {:>9} {:>9} {:>10} {:>12} {:>14} {:>12} {:>10} {:>10} {:>8}",
        "listeners",
        "argv KiB",
        "start->rdy",
        "gen1 handoff",
        "upgr handoff",
        "upgr sig->rdy",
        "RSS KiB",
        "RSS KiB",
        "fds"
    );
    let _ = writeln!(
        out,
        "  {:>9} {:>9} {:>10} {:>12} {:>14} {:>12} {:>10} {:>10} {:>8}",
        "", "", "ms", "us", "p50 us", "p50 ms", "gen1 rdy", "after", "after"
    );
    for r in &o.rows {
        let mut rdy = r.upgrade_ready_ms.clone();
        rdy.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "  {:>9} {:>9.1} {:>10} {:>12} {:>14} {:>12} {:>10} {:>10} {:>8}",
            r.listeners,
            r.argv_bytes as f64 / 1024.0,
            r.start_to_ready_ms
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            opt(r.gen1_handoff_us),
            opt(r.upgrade_handoff_p50_us()),
            percentile(&rdy, 50.0).map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            if r.proc_ready.rss_kib == 0 {
                "-".into()
            } else {
                r.proc_ready.rss_kib.to_string()
            },
            if r.proc_after.rss_kib == 0 {
                "-".into()
            } else {
                r.proc_after.rss_kib.to_string()
            },
            if r.proc_after.fds == 0 {
                "-".into()
            } else {
                r.proc_after.fds.to_string()
            },
        );
        if let Some(n) = r.reported_listeners
            && n != r.listeners as u64
        {
            let _ = writeln!(
                out,
                "    K={}: hotsup reported listeners={n} in the handoff",
                r.listeners
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "    K={}: ERROR {}",
                r.listeners,
                e.lines().collect::<Vec<_>>().join("\n      ")
            );
        }
    }
}

pub fn json(o: &ScaleOutcome) -> Json {
    let rows: Vec<Json> = o
        .rows
        .iter()
        .map(|r| {
            Json::obj()
                .set("listeners", r.listeners)
                .set("argv_bytes", r.argv_bytes)
                .set("start_to_ready_ms", r.start_to_ready_ms)
                .set("gen1_handoff_us", r.gen1_handoff_us)
                .set("reported_listeners", r.reported_listeners)
                .set("upgrade_handoff_us", r.upgrade_handoff_us.clone())
                .set("upgrade_handoff_p50_us", r.upgrade_handoff_p50_us())
                .set("upgrade_signal_to_ready_ms", r.upgrade_ready_ms.clone())
                .set("hotsup_rss_kib_gen1_ready", r.proc_ready.rss_kib)
                .set("hotsup_rss_kib_after_upgrades", r.proc_after.rss_kib)
                .set("hotsup_fds_gen1_ready", r.proc_ready.fds)
                .set("hotsup_fds_after_upgrades", r.proc_after.fds)
                .set("error", r.error.clone())
        })
        .collect();
    Json::obj()
        .set("nofile_soft", o.nofile.0)
        .set("nofile_hard", o.nofile.1)
        .set("arg_max", o.arg_max)
        .set("upgrades_per_size", u64::from(UPGRADES))
        .set("elapsed_s", o.elapsed.as_secs_f64())
        .set("sizes", rows)
}
