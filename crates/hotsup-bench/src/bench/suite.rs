//! Runs the selected scenarios one after another, prints each one's report
//! as it completes, then a summary with the figures side by side, and
//! decides the exit code.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hotsup_bench::procfs::{self, Machine};
use serde::Serialize;
use serde_json::{Value, json};

use super::idle::{self, IdleOutcome};
use super::notify::{self, FloodOutcome, HelperOutcome};
use super::pools::{self, FootprintOutcome, PoolThroughput, PoolUpgradeOutcome};
use super::probation::{self, ProbationOutcome};
use super::procs;
use super::report::{Dist, f, secs};
use super::restarts::{self, RestartOptions, RestartOutcome, Which};
use super::scale::{self, ScaleOutcome};
use super::supervised::Binaries;
use super::throughput::{self, ThroughputOutcome};
use super::upgrades::{self, Outcome, first_line};

/// A scenario `--scenarios` can select, run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N upgrades by SIGUSR2 under load, under hotsup.
    Upgrades,
    /// The example run directly, restarted by SIGTERM + start.
    Naive,
    /// Socket held by the bench, app SIGKILLed + started again.
    Hard,
    /// Under hotsup, the serving child SIGKILLed; hotsup restarts it.
    Crash,
    /// hotsup with 1, 100, 1000, 10000 listeners: handoff time, RSS.
    Handoff,
    /// hotsup's CPU time and context switches with no load.
    Idle,
    /// Requests/s direct vs under hotsup, alternating twice.
    Throughput,
    /// CPU-bound example with 1, 2, 4 workers: requests/s against 1 worker.
    PoolThroughput,
    /// Upgrades of 4 workers (at once, one by one) against 1 worker.
    PoolUpgrade,
    /// hotsup's RSS idle and after upgrades: 1 and 16 workers (and --old-hotsup).
    Footprint,
    /// --probation: crash on probation -> first response of the resumed generation.
    Probation,
    /// 3 processes flood the child's NOTIFY_SOCKET (and --old-hotsup's).
    NotifyFlood,
    /// Upgrades with READY=1 sent by a helper that exits at once (and --old-hotsup).
    NotifyHelper,
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        Scenario::value_variants().to_vec()
    }

    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
}

/// Everything the command line selects.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteOptions {
    pub scenarios: Vec<Scenario>,
    pub upgrades: u32,
    pub baseline_restarts: u32,
    pub crash_restarts: u32,
    pub concurrency: usize,
    #[serde(serialize_with = "secs")]
    pub idle: Duration,
    #[serde(serialize_with = "secs")]
    pub throughput_run: Duration,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    #[serde(serialize_with = "secs")]
    pub gap: Duration,
    pub pool_upgrades: u32,
    pub rollbacks: u32,
    #[serde(serialize_with = "secs")]
    pub flood: Duration,
    pub helper_upgrades: u32,
    pub old_hotsup: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

impl SuiteOptions {
    pub fn has(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }

    /// Workers of the new-connection-per-request load.
    pub fn close_workers(&self) -> usize {
        self.concurrency / 2
    }

    /// Workers of the keep-alive load.
    pub fn keepalive_workers(&self) -> usize {
        self.concurrency - self.close_workers()
    }

    fn restart_options(&self, restarts: u32) -> RestartOptions {
        RestartOptions {
            restarts,
            close_workers: self.close_workers(),
            keepalive_workers: self.keepalive_workers(),
            warmup: self.warmup,
            gap: self.gap,
        }
    }
}

/// What the run measured, by scenario.
#[derive(Default)]
pub struct SuiteOutcome {
    pub machine: Option<Machine>,
    pub nofile: (Option<u64>, Option<u64>),
    pub upgrades: Option<Result<Outcome, String>>,
    pub restarts: Vec<RestartOutcome>,
    pub scale: Option<ScaleOutcome>,
    pub idle: Option<IdleOutcome>,
    pub throughput: Option<ThroughputOutcome>,
    pub pool_throughput: Option<PoolThroughput>,
    pub pool_upgrade: Option<PoolUpgradeOutcome>,
    pub footprint: Option<FootprintOutcome>,
    pub probation: Option<ProbationOutcome>,
    pub flood: Option<FloodOutcome>,
    pub helper: Option<HelperOutcome>,
    /// Every scenario's outcome as JSON, by name.
    pub json: serde_json::Map<String, Value>,
    /// Scenarios that could not start at all (binaries missing, ...).
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Runs every selected scenario, printing each report as it completes.
pub fn run(opts: &SuiteOptions) -> SuiteOutcome {
    let started = Instant::now();
    let mut o = SuiteOutcome {
        nofile: procs::raise_nofile(),
        ..SuiteOutcome::default()
    };
    let bins = match Binaries::locate(opts.old_hotsup.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            o.errors.push(format!("{e:#}"));
            return o;
        }
    };
    let machine = Machine::detect();
    emit(&format!(
        "hotsup-bench: scenarios {}\n  machine: nproc {}, kernel {}, cpu {}; load average {}\n",
        opts.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        machine.nproc,
        machine.kernel,
        machine.cpu_model,
        machine.loadavg
    ));
    o.machine = Some(machine);
    for &s in &opts.scenarios {
        let t = Instant::now();
        emit(&format!("\n== {} ==\n", s.name()));
        let mut text = String::new();
        let value = match s {
            Scenario::Upgrades => {
                let u = upgrades::Options {
                    upgrades: opts.upgrades,
                    close_workers: opts.close_workers(),
                    keepalive_workers: opts.keepalive_workers(),
                    warmup: opts.warmup,
                    gap: opts.gap,
                    log: opts.log.clone(),
                };
                let r = upgrades::run(&bins, u).map_err(|e| format!("{e:#}"));
                let v = match &r {
                    Ok(outcome) => {
                        outcome.text(&mut text);
                        serde_json::to_value(outcome)
                    }
                    Err(e) => {
                        let _ = writeln!(text, "  ERROR {e}");
                        Ok(json!({ "error": e }))
                    }
                };
                o.upgrades = Some(r);
                v
            }
            Scenario::Naive | Scenario::Hard | Scenario::Crash => {
                let r = match s {
                    Scenario::Naive => {
                        restarts::run_naive(&bins, &opts.restart_options(opts.baseline_restarts))
                    }
                    Scenario::Hard => {
                        restarts::run_hard(&bins, &opts.restart_options(opts.baseline_restarts))
                    }
                    _ => restarts::run_crash(&bins, &opts.restart_options(opts.crash_restarts)),
                };
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.restarts.push(r);
                v
            }
            Scenario::Handoff => {
                let r = scale::run(&bins, o.nofile);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.scale = Some(r);
                v
            }
            Scenario::Idle => {
                let r = idle::run(&bins, opts.idle);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.idle = Some(r);
                v
            }
            Scenario::Throughput => {
                let r = throughput::run(&bins, opts.throughput_run, opts.concurrency);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.throughput = Some(r);
                v
            }
            Scenario::PoolThroughput => {
                let r = pools::run_throughput(&bins, opts.throughput_run, opts.concurrency);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.pool_throughput = Some(r);
                v
            }
            Scenario::PoolUpgrade => {
                let r = pools::run_upgrade(
                    &bins,
                    opts.pool_upgrades,
                    opts.close_workers(),
                    opts.keepalive_workers(),
                );
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.pool_upgrade = Some(r);
                v
            }
            Scenario::Footprint => {
                let r = pools::run_footprint(&bins);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.footprint = Some(r);
                v
            }
            Scenario::Probation => {
                let r = probation::run(&bins, opts.rollbacks, 2);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.probation = Some(r);
                v
            }
            Scenario::NotifyFlood => {
                let r = notify::run_flood(&bins, opts.flood);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.flood = Some(r);
                v
            }
            Scenario::NotifyHelper => {
                let r = notify::run_helper(&bins, opts.helper_upgrades);
                r.text(&mut text);
                let v = serde_json::to_value(&r);
                o.helper = Some(r);
                v
            }
        };
        let mut v = value.unwrap_or_else(|e| json!({ "error": format!("cannot serialize: {e}") }));
        if let Value::Object(m) = &mut v {
            m.insert("elapsed_s".into(), t.elapsed().as_secs_f64().into());
        }
        o.json.insert(s.name(), v);
        let _ = writeln!(
            text,
            "  [{}] took {:.1}s, load average {}",
            s.name(),
            t.elapsed().as_secs_f64(),
            procfs::loadavg()
        );
        emit(&text);
    }
    o.elapsed = started.elapsed();
    o
}

/// One row of the side-by-side comparison of restarts.
#[derive(Debug, Serialize)]
struct Row {
    scenario: &'static str,
    events: String,
    requests: u64,
    failed: u64,
    refused: u64,
    reset: u64,
    eof: u64,
    timeout: u64,
    probe_failed: u64,
    p99_steady_ms: Option<f64>,
    p99_across_ms: Option<f64>,
    trigger_to_first_response_ms: Option<Dist>,
    stopped_early: Option<String>,
}

fn rows(o: &SuiteOutcome) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(u) = &o.upgrades {
        rows.push(match u {
            Ok(u) => Row {
                scenario: "hotsup upgrade (SIGUSR2)",
                events: format!("{}/{}", u.upgrades.len(), u.options.upgrades),
                requests: u.loads.requests(),
                failed: u.loads.failed(),
                refused: u.loads.failed_of("refused"),
                reset: u.loads.failed_of("reset"),
                eof: u.loads.failed_of("eof_before_response"),
                timeout: u.loads.failed_of("timeout"),
                probe_failed: u.loads.probes.failed(),
                p99_steady_ms: u.loads.steady.map(|l| l.p99_ms),
                p99_across_ms: u.loads.across.map(|l| l.p99_ms),
                trigger_to_first_response_ms: u.first_response(),
                stopped_early: u.error.clone(),
            },
            Err(e) => Row {
                scenario: "hotsup upgrade (SIGUSR2)",
                events: "-".into(),
                requests: 0,
                failed: 0,
                refused: 0,
                reset: 0,
                eof: 0,
                timeout: 0,
                probe_failed: 0,
                p99_steady_ms: None,
                p99_across_ms: None,
                trigger_to_first_response_ms: None,
                stopped_early: Some(e.clone()),
            },
        });
    }
    for r in &o.restarts {
        let l = &r.loads;
        rows.push(Row {
            scenario: r.which.title(),
            events: format!("{}/{}", r.restarts.len(), r.requested),
            requests: l.requests(),
            failed: l.failed(),
            refused: l.failed_of("refused"),
            reset: l.failed_of("reset"),
            eof: l.failed_of("eof_before_response"),
            timeout: l.failed_of("timeout"),
            probe_failed: l.probes.failed(),
            p99_steady_ms: l.steady.map(|l| l.p99_ms),
            p99_across_ms: l.across.map(|l| l.p99_ms),
            trigger_to_first_response_ms: r.first_response(),
            stopped_early: r.error.clone(),
        });
    }
    rows
}

/// The summary tables and the verdict.
pub fn summary_text(o: &SuiteOutcome, opts: &SuiteOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n================================ summary ================================"
    );
    let rows = rows(o);
    if !rows.is_empty() {
        let _ = writeln!(
            out,
            "restarts side by side (load requests; probe failures apart; first response = first probe \
             answered by the new process, from the trigger)"
        );
        let mut t = super::report::Table::new([
            "scenario",
            "events",
            "requests",
            "failed",
            "refused",
            "reset",
            "eof",
            "timeout",
            "probes failed",
            "p99 ms steady",
            "p99 ms across",
            "1st response p50 / p99 ms",
        ]);
        for r in &rows {
            t.row([
                r.scenario.to_string(),
                r.events.clone(),
                r.requests.to_string(),
                r.failed.to_string(),
                r.refused.to_string(),
                r.reset.to_string(),
                r.eof.to_string(),
                r.timeout.to_string(),
                r.probe_failed.to_string(),
                f(r.p99_steady_ms, 3),
                f(r.p99_across_ms, 3),
                r.trigger_to_first_response_ms
                    .map_or_else(|| "-".into(), |d| format!("{:.2} / {:.2}", d.p50, d.p99)),
            ]);
        }
        t.render(&mut out);
        for r in rows.iter().filter(|r| r.stopped_early.is_some()) {
            let _ = writeln!(
                out,
                "  {} stopped early: {}",
                r.scenario,
                first_line(r.stopped_early.as_deref().unwrap_or_default())
            );
        }
    }
    if let Some(s) = &o.scale {
        let cells: Vec<String> = s
            .rows
            .iter()
            .map(|r| {
                format!(
                    "K={} gen1 {} us, upgrades p50 {} us, RSS {} KiB{}",
                    r.listeners,
                    r.gen1_handoff_us.map_or("-".into(), |v| v.to_string()),
                    r.upgrade_handoff_p50_us()
                        .map_or("-".into(), |v| v.to_string()),
                    r.proc_after.rss_kib.max(r.proc_ready.rss_kib),
                    if r.error.is_some() { " (ERROR)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(out, "handoff: {}", cells.join("; "));
    }
    if let Some(i) = &o.idle {
        let _ = writeln!(
            out,
            "idle: hotsup {:.3} CPU ms and {} context switches in {:.1}s: zero-wakeup target {}",
            i.hotsup.cpu_ms,
            i.hotsup.context_switches,
            i.seconds,
            if i.met() { "met" } else { "NOT met" }
        );
    }
    if let Some(t) = &o.throughput {
        let _ = writeln!(
            out,
            "throughput hotsup/direct (mean of {} pairs): keep-alive {}, new-connection {}",
            throughput::PAIRS,
            f(t.mean_ratio(true), 3),
            f(t.mean_ratio(false), 3)
        );
    }
    if let Some(p) = &o.pool_throughput {
        let cells: Vec<String> = pools::POOL_SIZES
            .iter()
            .map(|&n| format!("{n} workers {}", f(throughput::mean(&p.ratios(n)), 2)))
            .collect();
        let _ = writeln!(
            out,
            "pool throughput against 1 worker (CPU-bound, /work?ms={}): {}",
            p.work_ms,
            cells.join(", ")
        );
    }
    if let Some(p) = &o.pool_upgrade {
        for c in &p.configs {
            let _ = writeln!(
                out,
                "pool upgrade, {}: -> all new ready p50 {} ms, -> last old gone p50 {} ms, {} of {} requests failed",
                c.config,
                f(c.to_all_ready.map(|d| d.p50), 1),
                f(c.to_last_old_gone.map(|d| d.p50), 1),
                c.failed,
                c.requests
            );
        }
    }
    if let Some(p) = &o.footprint {
        let cells: Vec<String> = p
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}: {} KiB idle, {} KiB after {} upgrades",
                    r.config, r.idle.rss_kib, r.after_upgrades.rss_kib, r.upgrades
                )
            })
            .collect();
        let _ = writeln!(out, "hotsup RSS: {}", cells.join("; "));
    }
    if let Some(p) = &o.probation {
        let d = p.crash_to_first_response;
        let _ = writeln!(
            out,
            "probation: crash -> first response of the resumed generation p50 {} ms, p99 {} ms over {} rollbacks",
            f(d.map(|d| d.p50), 2),
            f(d.map(|d| d.p99), 2),
            p.rollbacks.len()
        );
    }
    if let Some(p) = &o.flood {
        for r in &p.rows {
            let _ = writeln!(
                out,
                "notify flood, {}: RSS {} -> max {} KiB, {} log lines, {} datagrams sent",
                r.build, r.rss_kib_before, r.rss_kib_max, r.log_lines, r.sent.datagrams
            );
        }
    }
    if let Some(p) = &o.helper {
        for r in &p.rows {
            let _ = writeln!(
                out,
                "READY=1 from a helper, {}: {} of {} upgrades failed",
                r.build, r.failed, r.upgrades
            );
        }
    }
    let _ = writeln!(out, "run took {:.1}s", o.elapsed.as_secs_f64());
    let why = verdict(o, opts);
    if why.is_empty() {
        let _ = writeln!(
            out,
            "\nresult: PASS (hotsup targets met: {})",
            targets(opts)
        );
    } else {
        let _ = writeln!(out, "\nresult: FAIL: {}", why.join("; "));
    }
    out
}

fn targets(opts: &SuiteOptions) -> String {
    let mut t = Vec::new();
    if opts.has(Scenario::Upgrades) {
        t.push("0 failed requests across upgrades");
    }
    if opts.has(Scenario::Crash) {
        t.push("0 refused across crash restarts");
    }
    if t.is_empty() {
        "none selected; every selected scenario ran".into()
    } else {
        t.join(", ")
    }
}

/// Reasons for exit code 1; empty for 0. The baselines' request failures
/// are expected and never count, and the other scenarios are measured, not
/// asserted; any scenario that could not run counts.
pub fn verdict(o: &SuiteOutcome, opts: &SuiteOptions) -> Vec<String> {
    let mut why: Vec<String> = o.errors.clone();
    match &o.upgrades {
        Some(Ok(u)) => why.extend(u.verdict().into_iter().map(|w| format!("upgrades: {w}"))),
        Some(Err(e)) => why.push(format!("upgrades could not run: {}", first_line(e))),
        None => {}
    }
    for r in &o.restarts {
        let name = r.which.title();
        if let Some(e) = &r.error {
            why.push(format!("{name} stopped early: {}", first_line(e)));
        } else if r.restarts.len() != r.requested as usize {
            why.push(format!(
                "{name}: {} of {} restarts",
                r.restarts.len(),
                r.requested
            ));
        }
        if r.which == Which::Crash {
            let refused = r.loads.failed_of("refused")
                + r.loads.probes.failures.get("refused").copied().unwrap_or(0);
            if refused > 0 {
                why.push(format!("crash: {refused} refused connections"));
            }
        }
    }
    let mut errors: Vec<(String, &Option<String>)> = Vec::new();
    if let Some(s) = &o.scale {
        errors.extend(
            s.rows
                .iter()
                .map(|r| (format!("handoff K={}", r.listeners), &r.error)),
        );
    }
    if let Some(i) = &o.idle {
        errors.push(("idle".into(), &i.error));
    }
    if let Some(t) = &o.throughput {
        errors.push(("throughput".into(), &t.error));
    }
    if let Some(p) = &o.pool_throughput {
        errors.push(("pool-throughput".into(), &p.error));
    }
    if let Some(p) = &o.pool_upgrade {
        errors.extend(
            p.configs
                .iter()
                .map(|c| (format!("pool-upgrade {}", c.config), &c.error)),
        );
    }
    if let Some(p) = &o.footprint {
        errors.extend(
            p.rows
                .iter()
                .map(|r| (format!("footprint {}", r.config), &r.error)),
        );
    }
    if let Some(p) = &o.probation {
        errors.push(("probation".into(), &p.error));
    }
    if let Some(p) = &o.flood {
        errors.extend(
            p.rows
                .iter()
                .map(|r| (format!("notify-flood {}", r.build), &r.error)),
        );
    }
    if let Some(p) = &o.helper {
        errors.extend(
            p.rows
                .iter()
                .map(|r| (format!("notify-helper {}", r.build), &r.error)),
        );
    }
    for (name, e) in errors {
        if let Some(e) = e {
            why.push(format!("{name}: {}", first_line(e)));
        }
    }
    if opts.scenarios.is_empty() {
        why.push("no scenario selected".into());
    }
    why
}

/// Everything as JSON.
pub fn json(o: &SuiteOutcome, opts: &SuiteOptions) -> Value {
    let why = verdict(o, opts);
    json!({
        "machine": o.machine.as_ref().map(|m| json!({
            "nproc": m.nproc,
            "kernel": m.kernel,
            "cpu_model": m.cpu_model,
            "clock_ticks_per_s": m.clk_tck,
            "loadavg_start": m.loadavg,
            "loadavg_end": procfs::loadavg(),
        })),
        "options": opts,
        "nofile": o.nofile,
        "elapsed_s": o.elapsed.as_secs_f64(),
        "summary": rows(o),
        "scenarios": o.json,
        "errors": o.errors,
        "pass": why.is_empty(),
        "fail_reasons": why,
    })
}
