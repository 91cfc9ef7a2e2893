//! Scenario "hotsup upgrades": the HTTP example under hotsup, two loads
//! (a new connection per request, and keep-alive), N upgrades by SIGUSR2,
//! then the supervisor's own costs, an idle window and a graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hotsup_bench::{FailureKind, Load, LoadConfig, Report, request_once};
use rustix::process::Signal;

use super::logline::{Kind, LogLine};
use super::output::ms;
use super::procfs::{self, ProcSample};
use super::supervised::{Binaries, Hotsup};

/// `--drain-timeout` given to hotsup.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long hotsup may take to log `listening` and the first `ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upgraded generation may take to be spawned, ready and
/// answering probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most probes per upgrade (a second bound besides `READY_TIMEOUT`).
pub const MAX_PROBES: u64 = 100_000;
/// Timeout of one probe request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between probes.
const PROBE_PAUSE: Duration = Duration::from_micros(100);
/// How long after `draining` the old generation may take to be reaped.
const DRAINED_TIMEOUT: Duration = Duration::from_secs(DRAIN_TIMEOUT.as_secs() + 5);
/// An upgrade window extends this far past the old generation's exit.
pub const WINDOW_TAIL: Duration = Duration::from_millis(100);
/// Timeout of each load request.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Failure messages kept from the probes.
const MAX_PROBE_SAMPLES: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub upgrades: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub idle: Duration,
    /// Pause after each upgrade's old generation exited, before the next
    /// signal, so that steady-state traffic is seen between upgrades.
    pub gap: Duration,
    pub log: Option<PathBuf>,
}

impl Options {
    /// Workers of the new-connection-per-request load.
    pub fn close_workers(&self) -> usize {
        self.concurrency / 2
    }

    /// Workers of the keep-alive load.
    pub fn keepalive_workers(&self) -> usize {
        self.concurrency - self.close_workers()
    }
}

/// One upgrade, as observed.
#[derive(Debug, Clone)]
pub struct UpgradeRecord {
    pub index: u32,
    pub generation: u64,
    pub old_generation: u64,
    pub pid: Option<i32>,
    /// Local clock, just before kill(2).
    pub t_signal: Instant,
    /// Wall clock (µs since the epoch) just before kill(2), to compare with
    /// hotsup's log timestamps.
    pub wall_signal_us: i64,
    /// When a probe first got a response from the new generation.
    pub t_first_probe: Option<Instant>,
    /// When the load first completed a response from the new generation
    /// (filled in from the reports after the run).
    pub t_first_load: Option<Instant>,
    /// When the bench read `ready generation=g`.
    pub t_ready_read: Instant,
    /// When the bench read `drained ... generation=g-1`.
    pub t_drained_read: Instant,
    /// hotsup's timestamps (µs since the epoch).
    pub ts_requested: Option<i64>,
    pub ts_spawned: Option<i64>,
    pub ts_ready: Option<i64>,
    pub ts_draining: Option<i64>,
    pub ts_drained: Option<i64>,
    /// `elapsed_us` of `handed off listeners`.
    pub handoff_us: Option<u64>,
    /// How the old generation ended (`exited with code 0`).
    pub drained_how: String,
    pub drained_clean: bool,
    pub probes: u64,
}

fn us_diff_ms(a: Option<i64>, b: Option<i64>) -> Option<f64> {
    Some((b? - a?) as f64 / 1000.0)
}

impl UpgradeRecord {
    pub fn signal_to_first_probe_ms(&self) -> Option<f64> {
        Some(ms(self.t_first_probe?.duration_since(self.t_signal)))
    }

    pub fn signal_to_first_load_ms(&self) -> Option<f64> {
        Some(ms(self
            .t_first_load?
            .saturating_duration_since(self.t_signal)))
    }

    pub fn signal_to_ready_read_ms(&self) -> f64 {
        ms(self.t_ready_read.duration_since(self.t_signal))
    }

    /// The child's own start-up including the handoff (hotsup's clock).
    pub fn spawned_to_ready_ms(&self) -> Option<f64> {
        us_diff_ms(self.ts_spawned, self.ts_ready)
    }

    /// From our kill(2) to hotsup's `spawned` line (signal delivery,
    /// wake-up, fork and exec).
    pub fn signal_to_spawned_ms(&self) -> Option<f64> {
        us_diff_ms(Some(self.wall_signal_us), self.ts_spawned)
    }

    /// From our kill(2) to hotsup's `upgrade requested` line (signal
    /// delivery and the event loop's wake-up).
    pub fn signal_to_requested_ms(&self) -> Option<f64> {
        us_diff_ms(Some(self.wall_signal_us), self.ts_requested)
    }

    pub fn handoff_ms(&self) -> Option<f64> {
        Some(self.handoff_us? as f64 / 1000.0)
    }

    pub fn ready_to_draining_ms(&self) -> Option<f64> {
        us_diff_ms(self.ts_ready, self.ts_draining)
    }

    /// (signal -> spawned) + handoff + (ready -> draining).
    pub fn overhead_ms(&self) -> Option<f64> {
        Some(self.signal_to_spawned_ms()? + self.handoff_ms()? + self.ready_to_draining_ms()?)
    }

    pub fn drain_ms(&self) -> Option<f64> {
        us_diff_ms(self.ts_draining, self.ts_drained)
    }

    pub fn window(&self) -> (Instant, Instant) {
        (self.t_signal, self.t_drained_read + WINDOW_TAIL)
    }

    pub fn signal_to_drained_read_ms(&self) -> f64 {
        ms(self.t_drained_read.duration_since(self.t_signal))
    }
}

/// Probe requests sent while looking for new generations.
#[derive(Debug, Clone, Default)]
pub struct ProbeTotals {
    pub requests: u64,
    pub ok: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    pub samples: Vec<String>,
}

impl ProbeTotals {
    pub fn total_failures(&self) -> u64 {
        self.failures.values().sum()
    }
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub clk_tck: u64,
    /// /proc/loadavg at the start of the run (other work on the machine
    /// skews every number).
    pub loadavg_start: String,
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_ascii_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn detect() -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = ["model name", "Hardware", "cpu model", "uarch", "cpu"]
            .iter()
            .find_map(|key| {
                cpuinfo.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            cpu_model,
            clk_tck: procfs::clock_ticks_per_second(),
            loadavg_start: loadavg(),
        }
    }
}

/// How hotsup ended.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// From SIGTERM to exit.
    pub took: Duration,
    /// hotsup did not exit in time and was killed.
    pub forced: bool,
}

/// Everything the run measured.
#[derive(Debug)]
pub struct Outcome {
    pub opts: Options,
    pub machine: Machine,
    pub hotsup_pid: i32,
    pub addr: SocketAddr,
    pub close: Report,
    pub keepalive: Report,
    pub probes: ProbeTotals,
    pub upgrades: Vec<UpgradeRecord>,
    /// Why the upgrades stopped early, if they did.
    pub upgrade_error: Option<String>,
    pub proc_start: ProcSample,
    pub proc_end: ProcSample,
    pub zombies_max: usize,
    pub zombies_end: usize,
    pub idle_before: ProcSample,
    pub idle_after: ProcSample,
    pub idle_took: Duration,
    pub shutdown: Shutdown,
    /// Generations still running after hotsup exited (killed by the bench).
    pub leftovers: Vec<i32>,
    /// WARN and ERROR lines hotsup logged.
    pub problems: Vec<String>,
    pub elapsed: Duration,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
}

impl Outcome {
    pub fn windows(&self) -> Vec<(Instant, Instant)> {
        self.upgrades.iter().map(UpgradeRecord::window).collect()
    }

    pub fn request_failures(&self) -> u64 {
        self.close.total_failures() + self.keepalive.total_failures() + self.probes.total_failures()
    }

    /// Reasons the run counts as failed; empty when it passed.
    pub fn verdict(&self) -> Vec<String> {
        let mut why = Vec::new();
        let f = self.request_failures();
        if f > 0 {
            why.push(format!("{f} failed requests"));
        }
        if let Some(e) = &self.upgrade_error {
            why.push(format!("upgrades stopped early: {}", first_line(e)));
        } else if self.upgrades.len() != self.opts.upgrades as usize {
            why.push(format!(
                "{} of {} upgrades completed",
                self.upgrades.len(),
                self.opts.upgrades
            ));
        }
        let unclean = self.upgrades.iter().filter(|u| !u.drained_clean).count();
        if unclean > 0 {
            why.push(format!(
                "{unclean} old generations did not exit with code 0"
            ));
        }
        if self.shutdown.forced || self.shutdown.exit_code != Some(0) {
            why.push(format!(
                "hotsup did not exit cleanly ({})",
                describe_exit(&self.shutdown)
            ));
        }
        if self.zombies_max > 0 || self.zombies_end > 0 {
            why.push(format!(
                "zombie children seen (max {} after an upgrade, {} at the end)",
                self.zombies_max, self.zombies_end
            ));
        }
        if !self.leftovers.is_empty() {
            why.push(format!(
                "generations left running after hotsup exited: {:?}",
                self.leftovers
            ));
        }
        why
    }
}

pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

pub fn describe_exit(s: &Shutdown) -> String {
    let mut out = match (s.exit_code, s.exit_signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "did not exit".to_owned(),
    };
    if s.forced {
        out.push_str(", had to be killed");
    }
    out
}

pub fn now_wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Runs the scenario. Errors are for runs that could not get going (or
/// broke the bench itself); failures of hotsup during upgrades are
/// recorded in the outcome instead.
pub fn run(opts: Options) -> Result<Outcome> {
    let started = Instant::now();
    let bins = Binaries::locate()?;
    let machine = Machine::detect();

    // 1. hotsup with the HTTP example.
    let mut hs = Hotsup::start(&bins.hotsup, &bins.http, DRAIN_TIMEOUT)?;
    let (i, addr) = hs.expect_listening(START_TIMEOUT, "the `listening` line")?;
    hs.expect_first_ready(i, START_TIMEOUT)?;
    let mut generation = 1;
    let hotsup_pid = hs.pid();
    let proc_start = procfs::sample(hotsup_pid).context("cannot read hotsup's /proc entry")?;

    // 2. Loads, then a steady-state warm-up.
    let bound = opts.warmup
        + READY_TIMEOUT
            .saturating_add(DRAINED_TIMEOUT)
            .saturating_add(opts.gap)
            .saturating_mul(opts.upgrades.max(1))
        + Duration::from_secs(60);
    let config = |concurrency, keep_alive| LoadConfig {
        concurrency,
        keep_alive,
        max_duration: bound,
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    };
    let close = Load::start(config(opts.close_workers(), false));
    let keepalive = Load::start(config(opts.keepalive_workers(), true));
    for (name, load) in [("new-connection", &close), ("keep-alive", &keepalive)] {
        if !load.wait_for_ok(1, Duration::from_secs(10)) {
            bail!(
                "the {name} load got no successful response within 10s ({:?})",
                load.snapshot()
            );
        }
    }
    let warm_until = close.started() + opts.warmup;
    thread::sleep(warm_until.saturating_duration_since(Instant::now()));

    // 3. The upgrades.
    let mut upgrades = Vec::with_capacity(opts.upgrades as usize);
    let mut probes = ProbeTotals::default();
    let mut upgrade_error = None;
    let mut zombies_max = 0;
    for index in 1..=opts.upgrades {
        match upgrade(&mut hs, addr, index, generation, &mut probes) {
            Ok(rec) => {
                generation = rec.generation;
                upgrades.push(rec);
            }
            Err(e) => {
                upgrade_error = Some(format!("upgrade {index}: {e:#}"));
                break;
            }
        }
        zombies_max = zombies_max.max(procfs::zombie_children(hotsup_pid).len());
        if index < opts.upgrades {
            thread::sleep(opts.gap);
        }
    }
    let proc_end = procfs::sample(hotsup_pid).unwrap_or_default();

    // 4. Stop the loads.
    let close = close.stop();
    let keepalive = keepalive.stop();
    let mut first_seen: BTreeMap<u64, Instant> = BTreeMap::new();
    for s in close.records.iter().chain(&keepalive.records) {
        if let Some(g) = s.generation {
            let t = s.completed();
            first_seen
                .entry(g)
                .and_modify(|old| *old = (*old).min(t))
                .or_insert(t);
        }
    }
    for u in &mut upgrades {
        u.t_first_load = first_seen.get(&u.generation).copied();
    }

    // 5. and 6. Idle cost.
    let idle_before = procfs::sample(hotsup_pid).unwrap_or_default();
    let idle_start = Instant::now();
    thread::sleep(opts.idle);
    let idle_after = procfs::sample(hotsup_pid).unwrap_or_default();
    let idle_took = idle_start.elapsed();
    let zombies_end = procfs::zombie_children(hotsup_pid).len();

    // 7. Graceful shutdown.
    let term_at = Instant::now();
    let mut shutdown = Shutdown::default();
    match hs.signal(Signal::TERM) {
        Ok(()) => {}
        Err(e) => eprintln!("hotsup-bench: {e:#}"),
    }
    let mut leftovers = Vec::new();
    let status = match hs.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(5)) {
        Some(s) => Some(s),
        None => {
            shutdown.forced = true;
            leftovers = hs.cleanup();
            hs.exited()
        }
    };
    shutdown.took = term_at.elapsed();
    if let Some(s) = status {
        use std::os::unix::process::ExitStatusExt;
        shutdown.exit_code = s.code();
        shutdown.exit_signal = s.signal();
    }
    leftovers.extend(hs.kill_leftover_generations());
    leftovers.sort_unstable();
    leftovers.dedup();
    hs.pump();
    let problems = hs
        .lines
        .iter()
        .filter(|l| l.is_problem())
        .map(|l| l.raw.clone())
        .collect();
    if let Some(path) = &opts.log {
        let text: String = hs.lines.iter().map(|l| format!("{}\n", l.raw)).collect();
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the hotsup log to {}", path.display()))?;
    }

    Ok(Outcome {
        opts,
        machine,
        hotsup_pid,
        addr,
        close,
        keepalive,
        probes,
        upgrades,
        upgrade_error,
        proc_start,
        proc_end,
        zombies_max,
        zombies_end,
        idle_before,
        idle_after,
        idle_took,
        shutdown,
        leftovers,
        problems,
        elapsed: started.elapsed(),
        loadavg_end: loadavg(),
    })
}

/// One upgrade: SIGUSR2, probe until the new generation answers, wait for
/// its `ready` and for the old generation's `drained`.
fn upgrade(
    hs: &mut Hotsup,
    addr: SocketAddr,
    index: u32,
    old: u64,
    probes: &mut ProbeTotals,
) -> Result<UpgradeRecord> {
    hs.pump();
    let from = hs.lines.len();
    let expected = old + 1;
    let wall_signal_us = now_wall_us();
    let t_signal = Instant::now();
    hs.signal(Signal::USR2)?;
    // One budget for the new generation to be spawned, ready and
    // answering, shared by the probes and the log waits.
    let deadline = t_signal + READY_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let (t_first_probe, n_probes) = probe_generation(addr, expected, deadline, probes);
    if t_first_probe.is_none() {
        hs.pump();
        let logged = |k: Kind| hs.lines[from..].iter().any(|l| l.kind == k);
        let (spawned, ready) = (logged(Kind::Spawned), logged(Kind::Ready));
        bail!(
            "no probe got a response from generation {expected} or later within {} of the \
             signal (hotsup logged `spawned`: {spawned}, `ready`: {ready})\nlast hotsup log lines:\n{}",
            super::supervised::fmt_secs(READY_TIMEOUT),
            hs.tail(15)
        );
    }

    let spawned = hs.expect(from, left(), "`spawned`", |l| l.kind == Kind::Spawned)?;
    let g = hs.lines[spawned]
        .generation
        .context("`spawned` line without generation")?;
    let ready = hs.expect(from, left(), &format!("`ready generation={g}`"), |l| {
        l.kind == Kind::Ready && l.generation == Some(g)
    })?;
    let drained = hs.expect(
        from,
        DRAINED_TIMEOUT,
        &format!("`drained` of generation {old}"),
        |l| matches!(l.kind, Kind::Drained { .. }) && l.generation == Some(old),
    )?;

    let lines = &hs.lines[from..];
    let find = |pred: &dyn Fn(&LogLine) -> bool| lines.iter().find(|l| pred(l));
    let ts_requested = find(&|l| l.kind == Kind::UpgradeRequested).and_then(|l| l.wall_us);
    let handoff_us = find(&|l| matches!(l.kind, Kind::HandedOff { .. }) && l.generation == Some(g))
        .and_then(|l| match l.kind {
            Kind::HandedOff { elapsed_us } => Some(elapsed_us),
            _ => None,
        });
    let ts_draining =
        find(&|l| l.kind == Kind::Draining && l.generation == Some(old)).and_then(|l| l.wall_us);
    let (drained_how, drained_clean) = match &hs.lines[drained].kind {
        Kind::Drained { clean, how } => (how.clone(), *clean),
        _ => (String::new(), false),
    };
    Ok(UpgradeRecord {
        index,
        generation: g,
        old_generation: old,
        pid: hs.lines[spawned].pid,
        t_signal,
        wall_signal_us,
        t_first_probe,
        t_first_load: None,
        t_ready_read: hs.lines[ready].at,
        t_drained_read: hs.lines[drained].at,
        ts_requested,
        ts_spawned: hs.lines[spawned].wall_us,
        ts_ready: hs.lines[ready].wall_us,
        ts_draining,
        ts_drained: hs.lines[drained].wall_us,
        handoff_us,
        drained_how,
        drained_clean,
        probes: n_probes,
    })
}

/// Sends probe requests until one is answered by generation `g` or later;
/// returns when that response was complete, and how many probes were sent.
fn probe_generation(
    addr: SocketAddr,
    g: u64,
    deadline: Instant,
    totals: &mut ProbeTotals,
) -> (Option<Instant>, u64) {
    let mut sent = 0;
    while sent < MAX_PROBES && Instant::now() < deadline {
        sent += 1;
        totals.requests += 1;
        match request_once(addr, "/", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let done = Instant::now();
                totals.ok += 1;
                if r.identity().generation.is_some_and(|got| got >= g) {
                    return (Some(done), sent);
                }
            }
            Ok(r) => record_probe_failure(
                totals,
                FailureKind::BadStatus(r.status),
                format!("status {}", r.status),
            ),
            Err(f) => record_probe_failure(totals, f.kind, f.message),
        }
        thread::sleep(PROBE_PAUSE);
    }
    (None, sent)
}

pub fn record_probe_failure(totals: &mut ProbeTotals, kind: FailureKind, message: String) {
    if totals.samples.len() < MAX_PROBE_SAMPLES {
        totals.samples.push(format!("{kind}: {message}"));
    }
    *totals.failures.entry(kind).or_default() += 1;
}
