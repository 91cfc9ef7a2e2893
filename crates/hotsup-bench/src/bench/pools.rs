//! Worker pools (`hotsup run --workers N`, `--rollout-batch K`), measured
//! side by side in one run:
//!
//! - "pool-throughput": requests/s of the CPU-bound example
//!   (`examples/cpu`, one thread per process, `/work?ms=N` burns N ms of
//!   CPU) with 1, 2 and 4 workers, as a ratio against 1 worker;
//! - "pool-upgrade": how long an upgrade of 4 workers takes (trigger ->
//!   every new worker ready, trigger -> the last old worker gone), all at
//!   once and one by one, against a single worker, under load;
//! - "footprint": hotsup's own RSS at rest and after upgrades, with 1 and
//!   16 workers (and a hotsup built from an older commit, if given).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs::{self, ProcSample};
use rustix::process::Signal;
use serde::Serialize;

use super::report::{Dist, Probes, Table, Traffic, TwoLoads, dist, f, ms, probe_until};
use super::supervised::{Binaries, Hotsup, Launch};
use super::throughput::{mean, timed_load, wait_answer};
use super::upgrades::{DRAINED_TIMEOUT, READY_TIMEOUT, START_TIMEOUT};
use hotsup_bench::kit::ts_ms;

/// Worker counts of "pool-throughput".
pub const POOL_SIZES: [u32; 3] = [1, 2, 4];
/// CPU each request of "pool-throughput" burns.
pub const WORK_MS: u64 = 5;
/// Rounds of "pool-throughput" (1, 2, 4 workers, then 4, 2, 1, ...).
const ROUNDS: usize = 4;
/// Upgrades before "footprint" samples RSS again.
const FOOTPRINT_UPGRADES: u64 = 3;
/// Let hotsup settle before sampling its RSS.
const SETTLE: Duration = Duration::from_millis(500);

/// Waits until the `workers` workers of generation `old` exited (their
/// `drained` or `reaped` events at or after line `from`); returns the line
/// of the last one.
fn old_gone(
    hs: &mut Hotsup,
    from: usize,
    old: u64,
    workers: u32,
    timeout: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut i = from;
    for seen in 0..workers {
        let left = deadline.saturating_duration_since(Instant::now());
        let exit = |l: &hotsup_bench::kit::Line| {
            l.event.as_ref().is_some_and(|e| {
                e.generation == Some(old) && matches!(e.event.as_str(), "drained" | "reaped")
            })
        };
        match hs.wait_for(i, left, exit) {
            Ok(j) => i = j + 1,
            Err(e) => bail!(
                "waiting for the {workers} workers of generation {old} to exit ({seen} did): {e}\n{}",
                hs.log.tail(15)
            ),
        }
    }
    Ok(i.saturating_sub(1))
}

// ------------------------------------------------------ pool-throughput

#[derive(Debug, Clone, Serialize)]
pub struct PoolRun {
    pub round: usize,
    pub workers: u32,
    pub ok_per_s: f64,
    pub load: Traffic,
}

#[derive(Debug, Default, Serialize)]
pub struct PoolThroughput {
    pub work_ms: u64,
    pub concurrency: usize,
    pub seconds_per_run: f64,
    pub runs: Vec<PoolRun>,
    pub error: Option<String>,
}

impl PoolThroughput {
    /// Per round, requests/s of `workers` over that of 1 worker.
    pub fn ratios(&self, workers: u32) -> Vec<f64> {
        (0..ROUNDS)
            .filter_map(|round| {
                let rate = |n| {
                    self.runs
                        .iter()
                        .find(|r| r.round == round && r.workers == n)
                        .map(|r| r.ok_per_s)
                };
                let (one, n) = (rate(1)?, rate(workers)?);
                (one > 0.0).then(|| n / one)
            })
            .collect()
    }

    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "workers",
            "req/s (mean)",
            "ratio to 1 worker",
            "per round",
            "failed",
        ]);
        for n in POOL_SIZES {
            let runs: Vec<&PoolRun> = self.runs.iter().filter(|r| r.workers == n).collect();
            let rates: Vec<f64> = runs.iter().map(|r| r.ok_per_s).collect();
            let ratios = self.ratios(n);
            t.row([
                n.to_string(),
                f(mean(&rates), 0),
                f(mean(&ratios), 2),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                runs.iter().map(|r| r.load.failed).sum::<u64>().to_string(),
            ]);
        }
        t.render(out);
        let _ = writeln!(
            out,
            "  examples/cpu, GET /work?ms={} (CPU time), {} new-connection workers, {:.0}s per run, \
             {ROUNDS} rounds in alternate orders (1,2,4 then 4,2,1); {} CPUs",
            self.work_ms,
            self.concurrency,
            self.seconds_per_run,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let mut failures = std::collections::BTreeMap::<&str, u64>::new();
        for r in &self.runs {
            for (k, n) in &r.load.failures {
                *failures.entry(k).or_default() += n;
            }
        }
        if !failures.is_empty() {
            let _ = writeln!(out, "  failures: {failures:?}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  ERROR {e}");
        }
    }
}

pub fn run_throughput(bins: &Binaries, secs: Duration, concurrency: usize) -> PoolThroughput {
    let mut o = PoolThroughput {
        work_ms: WORK_MS,
        concurrency,
        seconds_per_run: secs.as_secs_f64(),
        ..PoolThroughput::default()
    };
    let r = (|| -> Result<()> {
        // All three run for the whole scenario; the idle ones cost nothing.
        let mut pools = Vec::new();
        for n in POOL_SIZES {
            let mut hs = Launch::new(&bins.hotsup, &bins.cpu)
                .args(["--workers".into(), n.to_string()])
                .start()?;
            let addr = hs.expect_listening(START_TIMEOUT)?;
            hs.expect_ready(0, 1, START_TIMEOUT)?;
            wait_answer(addr, || None)?;
            pools.push((n, addr, hs));
        }
        let path = format!("/work?ms={WORK_MS}");
        for round in 0..ROUNDS {
            let order: Vec<&(u32, SocketAddr, Hotsup)> = if round % 2 == 0 {
                pools.iter().collect()
            } else {
                pools.iter().rev().collect()
            };
            for (n, addr, _) in order {
                let (load, ok_per_s) = timed_load(*addr, &path, concurrency, false, secs);
                o.runs.push(PoolRun {
                    round,
                    workers: *n,
                    ok_per_s,
                    load,
                });
            }
        }
        Ok(())
    })();
    o.error = r.err().map(|e| format!("{e:#}"));
    o
}

// --------------------------------------------------------- pool-upgrade

/// One pool configuration's upgrades.
#[derive(Debug, Default, Serialize)]
pub struct PoolUpgrades {
    pub config: String,
    pub workers: u32,
    pub rollout_batch: Option<u32>,
    pub upgrades: usize,
    /// `upgrade_requested` -> `ready` of the new generation (every new
    /// worker ready), by hotsup's log timestamps (1 ms steps), ms.
    pub to_all_ready: Option<Dist>,
    /// `upgrade_requested` -> the last old worker's `drained` (or
    /// `reaped`), by hotsup's log timestamps, ms.
    pub to_last_old_gone: Option<Dist>,
    /// The same two by the bench's clock: SIGUSR2 sent -> the line read.
    pub to_all_ready_read: Option<Dist>,
    pub to_last_old_gone_read: Option<Dist>,
    /// Trigger -> a probe answered by the new generation, ms.
    pub to_first_response: Option<Dist>,
    pub requests: u64,
    pub failed: u64,
    /// The failures by kind, load and probes together.
    pub failures: std::collections::BTreeMap<String, u64>,
    pub hotsup_rss_kib_after: u64,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct PoolUpgradeOutcome {
    pub configs: Vec<PoolUpgrades>,
}

impl PoolUpgradeOutcome {
    pub fn text(&self, out: &mut String) {
        let base = self
            .configs
            .first()
            .and_then(|c| c.to_last_old_gone)
            .map(|d| d.p50);
        let base_ready = self
            .configs
            .first()
            .and_then(|c| c.to_all_ready)
            .map(|d| d.p50);
        let mut t = Table::new([
            "ms (hotsup's clock), p50 / p99",
            "upgrades",
            "-> all new ready",
            "vs 1 worker",
            "-> last old gone",
            "vs 1 worker",
            "failed requests",
        ]);
        let pq = |d: Option<Dist>| {
            d.map_or_else(|| "-".into(), |d| format!("{:.1} / {:.1}", d.p50, d.p99))
        };
        let ratio = |d: Option<Dist>, b: Option<f64>| {
            f(d.zip(b.filter(|b| *b > 0.0)).map(|(d, b)| d.p50 / b), 2)
        };
        for c in &self.configs {
            t.row([
                c.config.clone(),
                c.upgrades.to_string(),
                pq(c.to_all_ready),
                ratio(c.to_all_ready, base_ready),
                pq(c.to_last_old_gone),
                ratio(c.to_last_old_gone, base),
                format!("{} of {}", c.failed, c.requests),
            ]);
        }
        t.render(out);
        for c in self.configs.iter().filter(|c| c.failed > 0) {
            let _ = writeln!(out, "  {}: failures {:?}", c.config, c.failures);
        }
        for c in self.configs.iter().filter(|c| c.error.is_some()) {
            let _ = writeln!(
                out,
                "  {}: ERROR {}",
                c.config,
                c.error.as_deref().unwrap_or_default()
            );
        }
    }
}

/// Pool configurations of "pool-upgrade": name, workers, rollout batch.
const CONFIGS: [(&str, u32, Option<u32>); 3] = [
    ("1 worker", 1, None),
    ("4 workers, all at once", 4, None),
    ("4 workers, --rollout-batch 1", 4, Some(1)),
];

pub fn run_upgrade(
    bins: &Binaries,
    upgrades: u32,
    close: usize,
    keepalive: usize,
) -> PoolUpgradeOutcome {
    let mut o = PoolUpgradeOutcome::default();
    for (name, workers, batch) in CONFIGS {
        let mut c = PoolUpgrades {
            config: name.into(),
            workers,
            rollout_batch: batch,
            ..PoolUpgrades::default()
        };
        if let Err(e) = pool_upgrades(bins, upgrades, (close, keepalive), &mut c) {
            c.error = Some(format!("{e:#}"));
        }
        o.configs.push(c);
    }
    o
}

fn pool_upgrades(
    bins: &Binaries,
    upgrades: u32,
    (close, keepalive): (usize, usize),
    c: &mut PoolUpgrades,
) -> Result<()> {
    let mut args = vec!["--workers".to_string(), c.workers.to_string()];
    if let Some(k) = c.rollout_batch {
        args.extend(["--rollout-batch".into(), k.to_string()]);
    }
    let mut hs = Launch::new(&bins.hotsup, &bins.http).args(args).start()?;
    let addr = hs.expect_listening(START_TIMEOUT)?;
    hs.expect_ready(0, 1, START_TIMEOUT)?;
    let bound = (READY_TIMEOUT + DRAINED_TIMEOUT) * (upgrades + 1);
    let loads = TwoLoads::start(addr, close, keepalive, bound)?;
    loads.warm_up(Duration::from_secs(1));
    let (mut ready, mut gone, mut first) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ready_ts, mut gone_ts) = (Vec::new(), Vec::new());
    let mut probes = Probes::default();
    let result = (|| -> Result<()> {
        for old in 1..=u64::from(upgrades) {
            let from = hs.log.len();
            let t = Instant::now();
            hs.try_signal(Signal::USR2)?;
            let (answered, _) = probe_until(
                addr,
                t + READY_TIMEOUT,
                &mut probes,
                |id| id.generation > Some(old),
                || None,
            )?;
            first.push(ms(answered.duration_since(t)));
            let (i, all_ready) = hs.expect_ready(from, old + 1, READY_TIMEOUT)?;
            ready.push(ms(hs.log.line(i).at.duration_since(t)));
            let j = old_gone(&mut hs, from, old, c.workers, DRAINED_TIMEOUT)?;
            gone.push(ms(hs.log.line(j).at.duration_since(t)));
            let requested = hs
                .log
                .events_from(from)
                .find(|e| e.event == "upgrade_requested");
            ready_ts.extend(ts_ms(requested.as_ref(), Some(&all_ready)));
            gone_ts.extend(ts_ms(requested.as_ref(), hs.log.line(j).event.as_ref()));
            thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })();
    let (a, b) = loads.stop();
    c.upgrades = gone.len();
    c.to_all_ready = dist(ready_ts);
    c.to_last_old_gone = dist(gone_ts);
    c.to_all_ready_read = dist(ready);
    c.to_last_old_gone_read = dist(gone);
    c.to_first_response = dist(first);
    c.requests = a.total_requests() + b.total_requests() + probes.requests;
    c.failed = a.total_failures() + b.total_failures() + probes.failed();
    c.failures = probes.failures.clone();
    for (k, n) in a
        .failures_by_label()
        .into_iter()
        .chain(b.failures_by_label())
    {
        *c.failures.entry(k).or_default() += n;
    }
    c.hotsup_rss_kib_after = procfs::rss_kib(hs.pid()).unwrap_or(0);
    hs.stop(DRAINED_TIMEOUT);
    result
}

// ------------------------------------------------------------ footprint

#[derive(Debug, Default, Serialize)]
pub struct Footprint {
    pub config: String,
    pub workers: u32,
    pub idle: ProcSample,
    pub after_upgrades: ProcSample,
    pub upgrades: u64,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct FootprintOutcome {
    pub rows: Vec<Footprint>,
}

impl FootprintOutcome {
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "hotsup, one listener",
            "RSS KiB idle",
            "fds",
            "threads",
            "RSS KiB after upgrades",
            "fds",
        ]);
        for r in &self.rows {
            t.row([
                r.config.clone(),
                r.idle.rss_kib.to_string(),
                r.idle.fds.to_string(),
                r.idle.threads.to_string(),
                format!("{} ({} upgrades)", r.after_upgrades.rss_kib, r.upgrades),
                r.after_upgrades.fds.to_string(),
            ]);
        }
        t.render(out);
        for r in self.rows.iter().filter(|r| r.error.is_some()) {
            let _ = writeln!(
                out,
                "  {}: ERROR {}",
                r.config,
                r.error.as_deref().unwrap_or_default()
            );
        }
    }
}

pub fn run_footprint(bins: &Binaries) -> FootprintOutcome {
    let mut o = FootprintOutcome::default();
    if let Some(old) = &bins.old {
        let mut r = Footprint {
            config: format!("old {}, 1 worker", old.hotsup.display()),
            workers: 1,
            ..Footprint::default()
        };
        if let Err(e) = footprint_old(old, &mut r) {
            r.error = Some(format!("{e:#}"));
        }
        o.rows.push(r);
    }
    for workers in [1, 16] {
        let mut r = Footprint {
            config: format!("--workers {workers}"),
            workers,
            ..Footprint::default()
        };
        if let Err(e) = footprint(bins, &mut r) {
            r.error = Some(format!("{e:#}"));
        }
        o.rows.push(r);
    }
    o
}

fn footprint(bins: &Binaries, r: &mut Footprint) -> Result<()> {
    let mut hs = Launch::new(&bins.hotsup, &bins.http)
        .args(["--workers".into(), r.workers.to_string()])
        .start()?;
    hs.expect_listening(START_TIMEOUT)?;
    hs.expect_ready(0, 1, START_TIMEOUT)?;
    thread::sleep(SETTLE);
    r.idle = procfs::sample(hs.pid()).context("hotsup's /proc entry")?;
    for old in 1..=FOOTPRINT_UPGRADES {
        let from = hs.log.len();
        hs.try_signal(Signal::USR2)?;
        hs.expect_ready(from, old + 1, READY_TIMEOUT)?;
        old_gone(&mut hs, from, old, r.workers, DRAINED_TIMEOUT)?;
        r.upgrades = old;
    }
    thread::sleep(SETTLE);
    r.after_upgrades = procfs::sample(hs.pid()).context("hotsup's /proc entry")?;
    hs.stop(DRAINED_TIMEOUT);
    Ok(())
}

/// The same with a hotsup from before `--log-format json`: its log is not
/// read; the bench picks the port, and follows generations by what answers
/// and by hotsup's children.
fn footprint_old(old: &super::supervised::OldBuild, r: &mut Footprint) -> Result<()> {
    let addr = super::procs::free_loopback_addr()?;
    let mut launch = Launch::new(&old.hotsup, &old.http);
    launch.listen = vec![addr.to_string()];
    launch.json = false;
    let mut hs = launch.start()?;
    wait_answer(addr, || None)?;
    thread::sleep(SETTLE);
    r.idle = procfs::sample(hs.pid()).context("hotsup's /proc entry")?;
    for g in 2..=FOOTPRINT_UPGRADES + 1 {
        old_upgrade(&mut hs, addr, g)?;
        r.upgrades = g - 1;
    }
    thread::sleep(SETTLE);
    r.after_upgrades = procfs::sample(hs.pid()).context("hotsup's /proc entry")?;
    hs.stop(DRAINED_TIMEOUT);
    Ok(())
}

/// An upgrade of a hotsup whose log is not read: SIGUSR2, then generation
/// `g` answers and hotsup is left with one child.
pub fn old_upgrade(hs: &mut Hotsup, addr: SocketAddr, g: u64) -> Result<()> {
    hs.try_signal(Signal::USR2)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    probe_until(
        addr,
        deadline,
        &mut Probes::default(),
        |id| id.generation >= Some(g),
        || None,
    )
    .with_context(|| format!("generation {g} never answered"))?;
    let deadline = Instant::now() + DRAINED_TIMEOUT;
    while procfs::children(hs.pid()).len() > 1 {
        if Instant::now() > deadline {
            bail!("generation {} did not exit", g - 1);
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
