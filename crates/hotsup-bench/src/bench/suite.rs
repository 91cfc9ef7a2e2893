//! Runs the selected scenarios one after another, prints each one's table as
//! it completes, then a summary comparing the restart scenarios side by
//! side, and decides the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotsup_bench::{FailureKind, Report, Window};

use super::idle::{self, IdleOutcome};
use super::json::Json;
use super::output::{self, Dist, dist, dist_json, failures_rows, lat_json, load_json, ms};
use super::procs;
use super::restarts::{self, RestartOptions, RestartOutcome, RestartRecord, Which};
use super::scale::{self, ScaleOutcome};
use super::scenario::{self, Machine, Outcome, WINDOW_TAIL};
use super::supervised::Binaries;
use super::throughput::{self, ThroughputOutcome};

/// A scenario that can be selected with `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Upgrades,
    Naive,
    Hard,
    Crash,
    Handoff,
    Idle,
    Throughput,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Upgrades,
        Scenario::Naive,
        Scenario::Hard,
        Scenario::Crash,
        Scenario::Handoff,
        Scenario::Idle,
        Scenario::Throughput,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Upgrades => "upgrades",
            Scenario::Naive => "naive",
            Scenario::Hard => "hard",
            Scenario::Crash => "crash",
            Scenario::Handoff => "handoff",
            Scenario::Idle => "idle",
            Scenario::Throughput => "throughput",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Everything the command line selects.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub scenarios: Vec<Scenario>,
    /// Scenario 1's options (its `idle` is its own short idle window).
    pub upgrades: scenario::Options,
    pub baseline_restarts: u32,
    pub crash_restarts: u32,
    pub idle: Duration,
    pub throughput: Duration,
    pub json: Option<PathBuf>,
}

impl SuiteOptions {
    pub fn has(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }

    fn restart_options(&self, restarts: u32) -> RestartOptions {
        RestartOptions {
            restarts,
            close_workers: self.upgrades.close_workers(),
            keepalive_workers: self.upgrades.keepalive_workers(),
            warmup: self.upgrades.warmup,
            gap: self.upgrades.gap,
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
    let bins = match Binaries::locate() {
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
        machine.loadavg_start
    ));
    o.machine = Some(machine);
    for &s in &opts.scenarios {
        let t = Instant::now();
        emit(&format!("\n[{}] running ...\n", s.name()));
        let mut text = String::new();
        match s {
            Scenario::Upgrades => {
                let r = scenario::run(opts.upgrades.clone()).map_err(|e| format!("{e:#}"));
                match &r {
                    Ok(outcome) => {
                        text.push_str("\n== hotsup upgrades ==\n");
                        text.push_str(&output::text(outcome));
                    }
                    Err(e) => {
                        let _ = writeln!(text, "\n== hotsup upgrades ==\n  ERROR {e}");
                    }
                }
                o.upgrades = Some(r);
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
                restart_text(&r, &mut text);
                o.restarts.push(r);
            }
            Scenario::Handoff => {
                let r = scale::run(&bins, o.nofile);
                scale::text(&r, &mut text);
                o.scale = Some(r);
            }
            Scenario::Idle => {
                let r = idle::run(&bins, opts.idle);
                idle::text(&r, &mut text);
                o.idle = Some(r);
            }
            Scenario::Throughput => {
                let r = throughput::run(&bins, opts.throughput, opts.upgrades.concurrency);
                throughput::text(&r, &mut text);
                o.throughput = Some(r);
            }
        }
        let _ = writeln!(
            text,
            "  [{}] took {:.1}s",
            s.name(),
            t.elapsed().as_secs_f64()
        );
        emit(&text);
    }
    o.elapsed = started.elapsed();
    o
}

// ------------------------------------------------------- restart reports

type RestartSeries = (
    &'static str,
    &'static str,
    fn(&RestartRecord) -> Option<f64>,
);

const RESTART_SERIES: &[RestartSeries] = &[
    (
        "trigger_to_first_response_probe_ms",
        "trigger -> first response of new process (probe)",
        RestartRecord::trigger_to_first_probe_ms,
    ),
    (
        "trigger_to_first_response_load_ms",
        "trigger -> first response of new process (load)",
        RestartRecord::trigger_to_first_load_ms,
    ),
    (
        "trigger_to_old_reaped_ms",
        "trigger -> old process reaped by the bench",
        |r| r.old_exit_ms,
    ),
    (
        "trigger_to_spawned_ms",
        "trigger -> new process spawned",
        |r| r.spawn_ms,
    ),
    (
        "hotsup_backoff_ms",
        "  of which hotsup's announced backoff",
        |r| r.backoff_ms,
    ),
    (
        "first_response_minus_backoff_ms",
        "trigger -> first response, minus the backoff",
        |r| Some(r.trigger_to_first_probe_ms()? - r.backoff_ms?),
    ),
    (
        "trigger_to_ready_logged_ms",
        "trigger -> hotsup's `ready` line read",
        |r| r.ready_read_ms,
    ),
];

fn restart_series(o: &RestartOutcome, f: fn(&RestartRecord) -> Option<f64>) -> Option<Dist> {
    dist(o.restarts.iter().filter_map(f).collect())
}

pub fn restart_text(o: &RestartOutcome, out: &mut String) {
    let w = o.windows();
    let all = o.combined();
    let _ = writeln!(out, "\n== {} ==", o.which.title());
    let _ = writeln!(out, "  how: {}", o.how);
    let _ = writeln!(
        out,
        "  app: {}; address {}; restarts {} requested, {} completed{}; took {:.1}s",
        o.app,
        o.addr.map_or_else(|| "-".into(), |a| a.to_string()),
        o.requested,
        o.restarts.len(),
        if o.which == Which::Crash {
            format!(" over {} hotsup instances", o.rounds)
        } else {
            String::new()
        },
        o.elapsed.as_secs_f64()
    );
    output::requests_and_failures(
        out,
        "  ",
        "probes (during restarts)",
        &o.close,
        &o.keepalive,
        &o.probes,
        8,
    );
    let _ = writeln!(
        out,
        "\n  latency (ms; by request start; restart window = trigger .. new process answered + {} ms)",
        WINDOW_TAIL.as_millis()
    );
    let _ = writeln!(
        out,
        "    {:<44} {:>9} {:>9} {:>9} {:>9}",
        "", "count", "p50", "p99", "max"
    );
    output::lat_row(
        out,
        "    ",
        "steady state (outside restart windows)",
        all.latency_percentiles(Window::Outside(&w)),
    );
    output::lat_row(
        out,
        "    ",
        "across restarts (inside restart windows)",
        all.latency_percentiles(Window::Inside(&w)),
    );
    let _ = writeln!(out, "\n  restarts (ms, over {} restarts)", o.restarts.len());
    let _ = writeln!(out, "    {:<50} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    for (_, label, f) in RESTART_SERIES {
        let Some(d) = restart_series(o, *f) else {
            continue;
        };
        let _ = writeln!(
            out,
            "    {label:<50} {:>9.3} {:>9.3} {:>9.3}",
            d.p50, d.p99, d.max
        );
    }
    for r in o.restarts.iter().filter(|r| r.note.is_some()) {
        let _ = writeln!(
            out,
            "    restart {}: pid {}: {}",
            r.index,
            r.old_pid,
            r.note.as_deref().unwrap_or_default()
        );
    }
    if !o.hotsup_problems.is_empty() {
        let _ = writeln!(
            out,
            "  hotsup warnings/errors ({}; `serving child killed` and `restarting in` are this scenario's own doing):",
            o.hotsup_problems.len()
        );
        for p in o.hotsup_problems.iter().take(6) {
            let _ = writeln!(out, "    {p}");
        }
    }
    if let Some(e) = &o.error {
        let _ = writeln!(out, "  STOPPED EARLY: {e}");
    }
}

fn labels(map: &BTreeMap<FailureKind, u64>) -> Json {
    Json::Obj(
        map.iter()
            .map(|(k, n)| (k.label(), Json::from(*n)))
            .collect(),
    )
}

/// Key of a load's latency inside the restart windows.
const ACROSS: &str = "latency_across_restarts";

pub fn restart_json(o: &RestartOutcome) -> Json {
    let w = o.windows();
    let all = o.combined();
    let mut series = Json::obj();
    for (key, _, f) in RESTART_SERIES {
        series = series.set(key, dist_json(restart_series(o, *f)));
    }
    let per: Vec<Json> = o
        .restarts
        .iter()
        .map(|r| {
            let mut j = Json::obj()
                .set("index", u64::from(r.index))
                .set("round", u64::from(r.round))
                .set("old_pid", r.old_pid)
                .set("new_pid", r.new_pid)
                .set("probes", r.probes)
                .set("note", r.note.clone());
            for (key, _, f) in RESTART_SERIES {
                j = j.set(key, f(r));
            }
            j
        })
        .collect();
    Json::obj()
        .set("scenario", o.which.title())
        .set("how", o.how.as_str())
        .set("app", o.app.as_str())
        .set("address", o.addr.map(|a| a.to_string()))
        .set("restarts_requested", u64::from(o.requested))
        .set("restarts_completed", o.restarts.len())
        .set("hotsup_instances", u64::from(o.rounds))
        .set("elapsed_s", o.elapsed.as_secs_f64())
        .set(
            "requests",
            Json::obj()
                .set("load_total", o.load_requests())
                .set("load_failed", o.load_failures())
                .set(
                    "failures_by_kind",
                    Json::Obj(
                        failures_rows(&o.close, &o.keepalive, &o.probes.failures)
                            .into_iter()
                            .map(|(k, [a, b, c])| {
                                (
                                    k,
                                    Json::obj()
                                        .set("new_connection", a)
                                        .set("keep_alive", b)
                                        .set("probes", c),
                                )
                            })
                            .collect(),
                    ),
                )
                .set(
                    "new_connection",
                    load_json(&o.close, &w, labels(&o.close.failures), ACROSS),
                )
                .set(
                    "keep_alive",
                    load_json(&o.keepalive, &w, labels(&o.keepalive.failures), ACROSS),
                )
                .set(
                    "probes",
                    Json::obj()
                        .set("requests", o.probes.requests)
                        .set("ok", o.probes.ok)
                        .set("failed", o.probes.total_failures())
                        .set("failures", labels(&o.probes.failures))
                        .set("failure_samples", o.probes.samples.clone()),
                ),
        )
        .set(
            "latency",
            Json::obj()
                .set(
                    "steady",
                    lat_json(all.latency_percentiles(Window::Outside(&w))),
                )
                .set(
                    "across_restarts",
                    lat_json(all.latency_percentiles(Window::Inside(&w))),
                ),
        )
        .set("restarts", series.set("per_restart", per))
        .set("hotsup_problems", o.hotsup_problems.clone())
        .set("error", o.error.clone())
}

// ---------------------------------------------------------------- summary

/// One row of the side-by-side comparison.
struct Row {
    name: &'static str,
    events: String,
    requests: u64,
    failed: u64,
    by_kind: [u64; 5],
    probe_failed: u64,
    p99_steady: Option<f64>,
    p99_across: Option<f64>,
    first: Option<Dist>,
    note: Option<String>,
}

/// Load failures as refused, reset, eof_before_response, timeout, other.
fn kinds(reports: &[&Report]) -> [u64; 5] {
    let mut k = [0u64; 5];
    for r in reports {
        for (kind, n) in &r.failures {
            let i = match kind {
                FailureKind::Refused => 0,
                FailureKind::Reset => 1,
                FailureKind::EofBeforeResponse => 2,
                FailureKind::Timeout => 3,
                _ => 4,
            };
            k[i] += n;
        }
    }
    k
}

fn rows(o: &SuiteOutcome) -> Vec<Row> {
    let mut rows = Vec::new();
    match &o.upgrades {
        Some(Ok(u)) => {
            let w = u.windows();
            let all = Report {
                records: [u.close.records.as_slice(), u.keepalive.records.as_slice()].concat(),
                ..Report::default()
            };
            rows.push(Row {
                name: "1 hotsup upgrades",
                events: format!("{}/{}", u.upgrades.len(), u.opts.upgrades),
                requests: u.close.total_requests() + u.keepalive.total_requests(),
                failed: u.close.total_failures() + u.keepalive.total_failures(),
                by_kind: kinds(&[&u.close, &u.keepalive]),
                probe_failed: u.probes.total_failures(),
                p99_steady: all
                    .latency_percentiles(Window::Outside(&w))
                    .map(|s| ms(s.p99)),
                p99_across: all
                    .latency_percentiles(Window::Inside(&w))
                    .map(|s| ms(s.p99)),
                first: dist(
                    u.upgrades
                        .iter()
                        .filter_map(|x| x.signal_to_first_probe_ms())
                        .collect(),
                ),
                note: u.upgrade_error.clone(),
            });
        }
        Some(Err(e)) => rows.push(Row {
            name: "1 hotsup upgrades",
            events: "-".into(),
            requests: 0,
            failed: 0,
            by_kind: [0; 5],
            probe_failed: 0,
            p99_steady: None,
            p99_across: None,
            first: None,
            note: Some(e.clone()),
        }),
        None => {}
    }
    for r in &o.restarts {
        let w = r.windows();
        let all = r.combined();
        rows.push(Row {
            name: match r.which {
                Which::Naive => "2 naive restart",
                Which::Hard => "3 held socket, hard",
                Which::Crash => "4 hotsup crash",
            },
            events: format!("{}/{}", r.restarts.len(), r.requested),
            requests: r.load_requests(),
            failed: r.load_failures(),
            by_kind: kinds(&[&r.close, &r.keepalive]),
            probe_failed: r.probes.total_failures(),
            p99_steady: all
                .latency_percentiles(Window::Outside(&w))
                .map(|s| ms(s.p99)),
            p99_across: all
                .latency_percentiles(Window::Inside(&w))
                .map(|s| ms(s.p99)),
            first: dist(
                r.restarts
                    .iter()
                    .filter_map(RestartRecord::trigger_to_first_probe_ms)
                    .collect(),
            ),
            note: r.error.clone(),
        });
    }
    rows
}

fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
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
            "restarts side by side (load requests only; probe failures separate; \
             trigger = SIGUSR2 / SIGTERM / SIGKILL; first response = first probe answered by the new process)"
        );
        let _ = writeln!(
            out,
            "  {:<21} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}",
            "scenario",
            "events",
            "requests",
            "failed",
            "refused",
            "reset",
            "eof",
            "timeout",
            "other",
            "probes",
            "p99 ms",
            "p99 ms",
            "1st resp",
            "1st resp",
            "1st resp"
        );
        let _ = writeln!(
            out,
            "  {:<21} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "failed",
            "steady",
            "across",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        for r in &rows {
            let _ = writeln!(
                out,
                "  {:<21} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}",
                r.name,
                r.events,
                r.requests,
                r.failed,
                r.by_kind[0],
                r.by_kind[1],
                r.by_kind[2],
                r.by_kind[3],
                r.by_kind[4],
                r.probe_failed,
                fmt_opt(r.p99_steady, 3),
                fmt_opt(r.p99_across, 3),
                fmt_opt(r.first.map(|d| d.p50), 2),
                fmt_opt(r.first.map(|d| d.p99), 2),
                fmt_opt(r.first.map(|d| d.max), 2),
            );
            if let Some(n) = &r.note {
                let _ = writeln!(out, "    ^ stopped early: {}", scenario::first_line(n));
            }
        }
    }
    if let Some(s) = &o.scale {
        let _ = writeln!(
            out,
            "handoff: {}",
            s.rows
                .iter()
                .map(|r| format!(
                    "K={} gen1 {} us, upgrades p50 {} us, hotsup RSS {} KiB{}",
                    r.listeners,
                    r.gen1_handoff_us.map_or("-".into(), |v| v.to_string()),
                    r.upgrade_handoff_p50_us()
                        .map_or("-".into(), |v| v.to_string()),
                    r.proc_after.rss_kib.max(r.proc_ready.rss_kib),
                    if r.error.is_some() { " (ERROR)" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if let Some(i) = &o.idle {
        let _ = writeln!(
            out,
            "idle: hotsup {:.3} CPU ms and {} context switches in {:.1}s: zero-wakeup target {}",
            i.hotsup_cpu_ms(),
            i.hotsup_ctxt(),
            i.took.as_secs_f64(),
            if i.met() { "met" } else { "NOT met" }
        );
    }
    if let Some(t) = &o.throughput {
        let _ = writeln!(
            out,
            "throughput hotsup/direct (mean of {} pairs): keep-alive {}, new-connection {}",
            throughput::PAIRS,
            fmt_opt(t.mean_ratio(true), 3),
            fmt_opt(t.mean_ratio(false), 3)
        );
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

/// Reasons for exit code 1; empty for 0. Baselines' request failures are
/// expected and never count; any scenario that could not run does.
pub fn verdict(o: &SuiteOutcome, opts: &SuiteOptions) -> Vec<String> {
    let mut why: Vec<String> = o.errors.clone();
    match &o.upgrades {
        Some(Ok(u)) => why.extend(u.verdict().into_iter().map(|w| format!("upgrades: {w}"))),
        Some(Err(e)) => why.push(format!(
            "upgrades could not run: {}",
            scenario::first_line(e)
        )),
        None => {}
    }
    for r in &o.restarts {
        if let Some(e) = &r.error {
            why.push(format!(
                "{} stopped early: {}",
                r.which.key(),
                scenario::first_line(e)
            ));
        } else if r.restarts.len() != r.requested as usize {
            why.push(format!(
                "{}: {} of {} restarts",
                r.which.key(),
                r.restarts.len(),
                r.requested
            ));
        }
        if r.which == Which::Crash {
            let refused = r.load_failures_of(&FailureKind::Refused)
                + r.probes
                    .failures
                    .get(&FailureKind::Refused)
                    .copied()
                    .unwrap_or(0);
            if refused > 0 {
                why.push(format!("crash: {refused} refused connections"));
            }
        }
    }
    if let Some(s) = &o.scale {
        for r in &s.rows {
            if let Some(e) = &r.error {
                why.push(format!(
                    "handoff K={}: {}",
                    r.listeners,
                    scenario::first_line(e)
                ));
            }
        }
    }
    if let Some(i) = &o.idle
        && let Some(e) = &i.error
    {
        why.push(format!("idle: {}", scenario::first_line(e)));
    }
    if let Some(t) = &o.throughput
        && let Some(e) = &t.error
    {
        why.push(format!("throughput: {}", scenario::first_line(e)));
    }
    if opts.scenarios.is_empty() {
        why.push("no scenario selected".into());
    }
    why
}

/// Everything as JSON.
pub fn json(o: &SuiteOutcome, opts: &SuiteOptions) -> Json {
    let mut scenarios = Json::obj();
    match &o.upgrades {
        Some(Ok(u)) => scenarios = scenarios.set("upgrades", output::json(u)),
        Some(Err(e)) => scenarios = scenarios.set("upgrades", Json::obj().set("error", e.clone())),
        None => {}
    }
    for r in &o.restarts {
        scenarios = scenarios.set(r.which.key(), restart_json(r));
    }
    if let Some(s) = &o.scale {
        scenarios = scenarios.set("handoff", scale::json(s));
    }
    if let Some(i) = &o.idle {
        scenarios = scenarios.set("idle", idle::json(i));
    }
    if let Some(t) = &o.throughput {
        scenarios = scenarios.set("throughput", throughput::json(t));
    }
    let summary: Vec<Json> = rows(o)
        .into_iter()
        .map(|r| {
            Json::obj()
                .set("scenario", r.name)
                .set("events", r.events)
                .set("load_requests", r.requests)
                .set("load_failed", r.failed)
                .set(
                    "load_failures",
                    Json::obj()
                        .set("refused", r.by_kind[0])
                        .set("reset", r.by_kind[1])
                        .set("eof_before_response", r.by_kind[2])
                        .set("timeout", r.by_kind[3])
                        .set("other", r.by_kind[4]),
                )
                .set("probe_failed", r.probe_failed)
                .set("latency_p99_steady_ms", r.p99_steady)
                .set("latency_p99_across_ms", r.p99_across)
                .set("trigger_to_first_response_ms", dist_json(r.first))
                .set("stopped_early", r.note)
        })
        .collect();
    let m = o.machine.as_ref();
    let why = verdict(o, opts);
    Json::obj()
        .set(
            "machine",
            match m {
                Some(m) => Json::obj()
                    .set("nproc", m.nproc)
                    .set("kernel", m.kernel.as_str())
                    .set("cpu_model", m.cpu_model.as_str())
                    .set("loadavg_start", m.loadavg_start.as_str())
                    .set("loadavg_end", scenario::loadavg()),
                None => Json::Null,
            },
        )
        .set(
            "options",
            Json::obj()
                .set(
                    "scenarios",
                    opts.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
                )
                .set("upgrades", u64::from(opts.upgrades.upgrades))
                .set("concurrency", opts.upgrades.concurrency)
                .set("baseline_restarts", u64::from(opts.baseline_restarts))
                .set("crash_restarts", u64::from(opts.crash_restarts))
                .set(
                    "crash_restarts_per_hotsup",
                    u64::from(restarts::CRASHES_PER_HOTSUP),
                )
                .set("idle_s", opts.idle.as_secs_f64())
                .set("throughput_s", opts.throughput.as_secs_f64())
                .set("warmup_s", opts.upgrades.warmup.as_secs_f64())
                .set("gap_ms", ms(opts.upgrades.gap)),
        )
        .set("nofile_soft", o.nofile.0)
        .set("nofile_hard", o.nofile.1)
        .set("elapsed_s", o.elapsed.as_secs_f64())
        .set("summary", summary)
        .set("scenarios", scenarios)
        .set("errors", o.errors.clone())
        .set("pass", why.is_empty())
        .set("fail_reasons", why)
}
