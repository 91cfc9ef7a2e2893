//! Scenario "upgrades": the HTTP example under hotsup, two loads (a new
//! connection per request, and keep-alive), N upgrades by SIGUSR2, then
//! the supervisor's own costs, an idle window and a graceful shutdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hotsup_bench::procfs::{self, ProcSample};
use rustix::process::Signal;
use serde::Serialize;

use super::report::{Dist, Loads, Probes, Table, TwoLoads, dist, f, ms, probe_until, secs};
use super::supervised::{Binaries, DRAIN_TIMEOUT, Hotsup, Launch, Stopped};
use hotsup_bench::kit::ts_ms;

/// How long hotsup may take to log `listening` and the first `ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upgraded generation may take to be spawned, ready and
/// answering probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after `draining` the old generation may take to be reaped.
pub const DRAINED_TIMEOUT: Duration = Duration::from_secs(DRAIN_TIMEOUT.as_secs() + 5);
/// A restart window extends this far past its end (the old process's exit,
/// or the new one's first answer).
pub const WINDOW_TAIL: Duration = Duration::from_millis(100);
/// Scenario 1's own idle window after its loads stop (the `idle` scenario
/// measures idle cost properly).
const IDLE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub upgrades: u32,
    pub close_workers: usize,
    pub keepalive_workers: usize,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Pause after each upgrade's old generation exited, before the next
    /// signal, so that steady-state traffic is seen between upgrades.
    #[serde(serialize_with = "secs")]
    pub gap: Duration,
    pub log: Option<PathBuf>,
}

/// One upgrade, as observed. Times are from the signal, in ms, by the
/// bench's clock unless said otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeRecord {
    pub generation: u64,
    pub pid: Option<i32>,
    #[serde(skip)]
    pub t_signal: Instant,
    #[serde(skip)]
    pub window_end: Instant,
    /// A probe (new connection) got a response from the new generation.
    pub first_probe_ms: Option<f64>,
    /// The load first completed a response from it (filled in after the
    /// run).
    pub first_load_ms: Option<f64>,
    /// `ready` read.
    pub ready_ms: f64,
    /// The old generation's `drained` read.
    pub drained_ms: f64,
    /// The child's own start-up: `after_ms` of `ready` (hotsup's clock,
    /// whole ms).
    pub child_startup_ms: Option<f64>,
    /// `elapsed_us` of `handed_off`, in ms.
    pub handoff_ms: Option<f64>,
    /// `ready` to `draining`, by hotsup's log timestamps.
    pub ready_to_draining_ms: Option<f64>,
    /// `draining` to `drained`, by hotsup's log timestamps.
    pub drain_ms: Option<f64>,
    /// How the old generation ended (`status` of `drained`).
    pub old_exit: String,
    pub old_clean: bool,
    pub probes: u64,
}

/// The series the report summarises: key, label, value.
type Series = (
    &'static str,
    &'static str,
    fn(&UpgradeRecord) -> Option<f64>,
);

const SERIES: &[Series] = &[
    (
        "signal_to_first_response_probe_ms",
        "signal -> first response of new gen (probe)",
        |u| u.first_probe_ms,
    ),
    (
        "signal_to_first_response_load_ms",
        "signal -> first response of new gen (load)",
        |u| u.first_load_ms,
    ),
    ("signal_to_ready_read_ms", "signal -> `ready` read", |u| {
        Some(u.ready_ms)
    }),
    (
        "child_startup_ms",
        "child start-up (`ready` after_ms, 1 ms steps)",
        |u| u.child_startup_ms,
    ),
    (
        "handoff_ms",
        "listener handoff (`handed_off` elapsed_us)",
        |u| u.handoff_ms,
    ),
    (
        "ready_to_draining_ms",
        "ready -> draining (log ts, 1 ms steps)",
        |u| u.ready_to_draining_ms,
    ),
    ("old_drain_ms", "old gen drain (log ts, 1 ms steps)", |u| {
        u.drain_ms
    }),
    (
        "signal_to_old_drained_read_ms",
        "signal -> old gen `drained` read",
        |u| Some(u.drained_ms),
    ),
];

/// Everything the run measured.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub options: Options,
    pub hotsup_pid: i32,
    pub address: String,
    pub loads: Loads,
    pub upgrades: Vec<UpgradeRecord>,
    pub series: BTreeMap<&'static str, Option<Dist>>,
    /// Why the upgrades stopped early, if they did.
    pub error: Option<String>,
    pub proc_start: ProcSample,
    pub proc_end: ProcSample,
    pub cpu_ms_per_upgrade: Option<f64>,
    pub zombies_max: usize,
    pub zombies_end: usize,
    pub idle_s: f64,
    pub idle_cpu_ms: f64,
    pub idle_context_switches: u64,
    pub shutdown: Stopped,
    /// Warnings and errors hotsup logged.
    pub problems: Vec<String>,
    pub elapsed_s: f64,
}

impl Outcome {
    pub fn request_failures(&self) -> u64 {
        self.loads.failed() + self.loads.probes.failed()
    }

    pub fn first_response(&self) -> Option<Dist> {
        self.series
            .get("signal_to_first_response_probe_ms")
            .copied()
            .flatten()
    }

    /// Reasons the run counts as failed; empty when it passed.
    pub fn verdict(&self) -> Vec<String> {
        let mut why = Vec::new();
        let f = self.request_failures();
        if f > 0 {
            why.push(format!("{f} failed requests"));
        }
        if let Some(e) = &self.error {
            why.push(format!("upgrades stopped early: {}", first_line(e)));
        } else if self.upgrades.len() != self.options.upgrades as usize {
            why.push(format!(
                "{} of {} upgrades completed",
                self.upgrades.len(),
                self.options.upgrades
            ));
        }
        let unclean = self.upgrades.iter().filter(|u| !u.old_clean).count();
        if unclean > 0 {
            why.push(format!("{unclean} old generations did not exit cleanly"));
        }
        if !self.shutdown.clean() {
            why.push(format!(
                "hotsup did not stop cleanly ({}; leftovers {:?})",
                self.shutdown.describe(),
                self.shutdown.leftovers
            ));
        }
        if self.zombies_max > 0 || self.zombies_end > 0 {
            why.push(format!(
                "zombie children seen (max {} after an upgrade, {} at the end)",
                self.zombies_max, self.zombies_end
            ));
        }
        why
    }

    pub fn text(&self, out: &mut String) {
        let o = &self.options;
        let _ = writeln!(
            out,
            "  hotsup pid {} on {}; {} of {} upgrades; {} new-connection + {} keep-alive workers; \
             warm-up {:.1}s, gap {} ms; took {:.1}s",
            self.hotsup_pid,
            self.address,
            self.upgrades.len(),
            o.upgrades,
            o.close_workers,
            o.keepalive_workers,
            o.warmup.as_secs_f64(),
            o.gap.as_millis(),
            self.elapsed_s
        );
        self.loads.text(out);
        let mut t = Table::new(["upgrades (ms)", "p50", "p99", "max"]);
        for (key, label, _) in SERIES {
            t.dist_row(label, self.series.get(key).copied().flatten(), 3);
        }
        t.render(out);
        let unclean: Vec<String> = self
            .upgrades
            .iter()
            .filter(|u| !u.old_clean)
            .map(|u| format!("gen {}: {}", u.generation - 1, u.old_exit))
            .collect();
        let _ = writeln!(
            out,
            "  old generations exited cleanly: {} of {} {}",
            self.upgrades.len() - unclean.len(),
            self.upgrades.len(),
            unclean.join("; ")
        );
        let (s, e) = (&self.proc_start, &self.proc_end);
        let mut t = Table::new(["supervisor", "start", "after upgrades"]);
        t.row([
            "RSS KiB".into(),
            s.rss_kib.to_string(),
            e.rss_kib.to_string(),
        ]);
        t.row(["open fds".into(), s.fds.to_string(), e.fds.to_string()]);
        t.row([
            "threads".into(),
            s.threads.to_string(),
            e.threads.to_string(),
        ]);
        t.render(out);
        let _ = writeln!(
            out,
            "  supervisor CPU per upgrade (under load): {} ms; zombies: max {} after an upgrade, {} at the end",
            f(self.cpu_ms_per_upgrade, 3),
            self.zombies_max,
            self.zombies_end
        );
        let _ = writeln!(
            out,
            "  idle {:.1}s after the loads: {:.3} CPU ms, {} context switches",
            self.idle_s, self.idle_cpu_ms, self.idle_context_switches
        );
        let _ = writeln!(
            out,
            "  shutdown: SIGTERM -> {} after {:.0} ms; leftovers {:?}",
            self.shutdown.describe(),
            ms(self.shutdown.took),
            self.shutdown.leftovers
        );
        for p in self.problems.iter().take(10) {
            let _ = writeln!(out, "  hotsup problem: {p}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  UPGRADES STOPPED: {e}");
        }
    }
}

pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Runs the scenario. Errors are for runs that could not get going;
/// failures of hotsup during upgrades are recorded in the outcome.
pub fn run(bins: &Binaries, options: Options) -> Result<Outcome> {
    let started = Instant::now();
    let mut hs = Launch::new(&bins.hotsup, &bins.http).start()?;
    let addr = hs.expect_listening(START_TIMEOUT)?;
    hs.expect_ready(0, 1, START_TIMEOUT)?;
    let hotsup_pid = hs.pid();
    let proc_start = procfs::sample(hotsup_pid).context("cannot read hotsup's /proc entry")?;

    let bound = options.warmup
        + (READY_TIMEOUT + DRAINED_TIMEOUT + options.gap) * options.upgrades.max(1)
        + Duration::from_secs(60);
    let loads = TwoLoads::start(
        addr,
        options.close_workers,
        options.keepalive_workers,
        bound,
    )?;
    loads.warm_up(options.warmup);

    let mut upgrades = Vec::with_capacity(options.upgrades as usize);
    let mut probes = Probes::default();
    let mut error = None;
    let mut zombies_max = 0;
    for index in 1..=options.upgrades {
        match upgrade(&mut hs, addr, index as u64, &mut probes) {
            Ok(rec) => upgrades.push(rec),
            Err(e) => {
                error = Some(format!("upgrade {index}: {e:#}"));
                break;
            }
        }
        zombies_max = zombies_max.max(procfs::zombie_children(hotsup_pid).len());
        thread::sleep(options.gap);
    }
    let proc_end = procfs::sample(hotsup_pid).unwrap_or_default();
    let (close, keepalive) = loads.stop();
    for u in &mut upgrades {
        u.first_load_ms = close
            .first_response_of_generation(u.generation)
            .into_iter()
            .chain(keepalive.first_response_of_generation(u.generation))
            .min()
            .map(|t| ms(t.saturating_duration_since(u.t_signal)));
    }
    let windows: Vec<_> = upgrades
        .iter()
        .map(|u| (u.t_signal, u.window_end))
        .collect();
    let loads = Loads::of(&close, &keepalive, probes, &windows);

    let idle_before = procfs::sample(hotsup_pid).unwrap_or_default();
    let idle_start = Instant::now();
    thread::sleep(IDLE);
    let idle_after = procfs::sample(hotsup_pid).unwrap_or_default();
    let idle_s = idle_start.elapsed().as_secs_f64();
    let zombies_end = procfs::zombie_children(hotsup_pid).len();

    let shutdown = hs.stop(DRAIN_TIMEOUT + Duration::from_secs(5));
    hs.log.len();
    let problems = hs
        .log
        .events_from(0)
        .filter(|e| e.is_problem())
        .map(|e| format!("{} {:?}", e.event, e.fields))
        .collect();
    if let Some(path) = &options.log {
        let text: String = hs.log.all().iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the hotsup log to {}", path.display()))?;
    }
    let series = SERIES
        .iter()
        .map(|(key, _, f)| (*key, dist(upgrades.iter().filter_map(f).collect())))
        .collect();
    let cpu = proc_start.cpu_ms_until(&proc_end);
    Ok(Outcome {
        hotsup_pid,
        address: addr.to_string(),
        loads,
        series,
        cpu_ms_per_upgrade: (!upgrades.is_empty()).then(|| cpu / upgrades.len() as f64),
        upgrades,
        error,
        proc_start,
        proc_end,
        zombies_max,
        zombies_end,
        idle_s,
        idle_cpu_ms: idle_before.cpu_ms_until(&idle_after),
        idle_context_switches: idle_before.ctxt_until(&idle_after),
        shutdown,
        problems,
        elapsed_s: started.elapsed().as_secs_f64(),
        options,
    })
}

/// One upgrade to generation `g`: SIGUSR2, probes until the new generation
/// answers, then its `ready` and the old generation's `drained`.
fn upgrade(
    hs: &mut Hotsup,
    addr: SocketAddr,
    old: u64,
    probes: &mut Probes,
) -> Result<UpgradeRecord> {
    let from = hs.log.len();
    let g = old + 1;
    let t_signal = Instant::now();
    hs.try_signal(Signal::USR2)?;
    let deadline = t_signal + READY_TIMEOUT;
    let (t_first, n) = probe_until(
        addr,
        deadline,
        probes,
        |id| id.generation >= Some(g),
        || None,
    )
    .with_context(|| {
        format!(
            "generation {g} never answered\nlast hotsup log lines:\n{}",
            hs.log.tail(15)
        )
    })?;
    let left = deadline.saturating_duration_since(Instant::now());
    let (ready_i, ready) = hs.expect_ready(from, g, left)?;
    let (drained_i, drained) = hs.expect_event(from, DRAINED_TIMEOUT, "drained", |e| {
        e.generation == Some(old)
    })?;
    let find = |name: &str, n: u64| hs.log.events_from(from).find(|e| e.is(name, n));
    let handed = find("handed_off", g);
    let draining = find("draining", old);
    let since = |i: usize| ms(hs.log.line(i).at.saturating_duration_since(t_signal));
    Ok(UpgradeRecord {
        generation: g,
        pid: ready.pid,
        t_signal,
        window_end: hs.log.line(drained_i).at + WINDOW_TAIL,
        first_probe_ms: Some(ms(t_first.duration_since(t_signal))),
        first_load_ms: None,
        ready_ms: since(ready_i),
        drained_ms: since(drained_i),
        child_startup_ms: ready.u64("after_ms").map(|v| v as f64),
        handoff_ms: handed
            .and_then(|e| e.u64("elapsed_us"))
            .map(|us| us as f64 / 1000.0),
        ready_to_draining_ms: ts_ms(Some(&ready), draining.as_ref()),
        drain_ms: ts_ms(draining.as_ref(), Some(&drained)),
        old_exit: drained.str("status").unwrap_or_default().to_owned(),
        old_clean: drained.bool("clean") == Some(true),
        probes: n,
    })
}
