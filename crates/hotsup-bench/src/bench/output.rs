//! The report: a human-readable table and the same numbers as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hotsup_bench::{FailureKind, LatencyStats, Report, Window, percentile};

use super::idle::{cpu_delta_ms, wakeups_json};
use super::json::Json;
use super::procfs::{ProcSample, ticks_to_ms};
use super::scenario::{Outcome, ProbeTotals, UpgradeRecord, WINDOW_TAIL, describe_exit};

/// p50/p99/max of a set of millisecond values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn dist(mut v: Vec<f64>) -> Option<Dist> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    Some(Dist {
        count: v.len(),
        p50: percentile(&v, 50.0)?,
        p99: percentile(&v, 99.0)?,
        max: *v.last()?,
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The per-upgrade series the report summarises, in display order.
type Series = (
    &'static str,
    &'static str,
    fn(&UpgradeRecord) -> Option<f64>,
);

const SERIES: &[Series] = &[
    (
        "signal_to_first_response_probe_ms",
        "signal -> first response of new gen (probe)",
        UpgradeRecord::signal_to_first_probe_ms,
    ),
    (
        "signal_to_first_response_load_ms",
        "signal -> first response of new gen (load)",
        UpgradeRecord::signal_to_first_load_ms,
    ),
    (
        "signal_to_ready_logged_ms",
        "signal -> `ready` line read",
        |u| Some(u.signal_to_ready_read_ms()),
    ),
    (
        "child_startup_spawned_to_ready_ms",
        "child start-up (spawned -> ready)",
        UpgradeRecord::spawned_to_ready_ms,
    ),
    (
        "supervisor_overhead_ms",
        "supervisor overhead (sum of the 3 below)",
        UpgradeRecord::overhead_ms,
    ),
    (
        "signal_to_spawned_ms",
        "  signal -> spawned (delivery, fork, exec)",
        UpgradeRecord::signal_to_spawned_ms,
    ),
    (
        "signal_to_upgrade_requested_ms",
        "    of which signal -> `upgrade requested`",
        UpgradeRecord::signal_to_requested_ms,
    ),
    (
        "handoff_ms",
        "  listener handoff (elapsed_us)",
        UpgradeRecord::handoff_ms,
    ),
    (
        "ready_to_draining_ms",
        "  ready -> draining",
        UpgradeRecord::ready_to_draining_ms,
    ),
    (
        "old_gen_drain_ms",
        "old gen drain (draining -> drained)",
        UpgradeRecord::drain_ms,
    ),
    (
        "signal_to_old_gen_reaped_ms",
        "signal -> old gen reaped (`drained` read)",
        |u| Some(u.signal_to_drained_read_ms()),
    ),
];

fn series(o: &Outcome, f: fn(&UpgradeRecord) -> Option<f64>) -> Option<Dist> {
    dist(o.upgrades.iter().filter_map(f).collect())
}

/// Both loads' successful requests in one report (for latency only).
fn combined(o: &Outcome) -> Report {
    Report {
        records: [o.close.records.as_slice(), o.keepalive.records.as_slice()].concat(),
        ..Report::default()
    }
}

/// Failures by label: (new-connection, keep-alive, probes).
pub fn failures_rows(
    close: &Report,
    keepalive: &Report,
    probes: &BTreeMap<FailureKind, u64>,
) -> BTreeMap<String, [u64; 3]> {
    let mut t: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for (col, map) in [&close.failures, &keepalive.failures, probes]
        .into_iter()
        .enumerate()
    {
        for (kind, n) in map {
            t.entry(kind.label()).or_default()[col] += n;
        }
    }
    t
}

pub fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

fn f3(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"))
}

/// The count, p50, p99 and max cells of a latency row.
fn lat_cells(s: Option<LatencyStats>) -> String {
    match s {
        Some(s) => format!(
            "{:>9} {:>9.3} {:>9.3} {:>9.3}",
            s.count,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        ),
        None => format!("{:>9} {:>9} {:>9} {:>9}", 0, "-", "-", "-"),
    }
}

/// One latency row, its label indented by `ind`.
pub fn lat_row(out: &mut String, ind: &str, name: &str, s: Option<LatencyStats>) {
    let _ = writeln!(out, "{ind}{name:<44} {}", lat_cells(s));
}

/// The `requests` and `failures by kind` tables shared by the upgrade and
/// restart reports. `ind` indents the headings; rows are indented two more.
pub fn requests_and_failures(
    out: &mut String,
    ind: &str,
    probes_label: &str,
    close: &Report,
    keepalive: &Report,
    probes: &ProbeTotals,
    max_samples: usize,
) {
    let _ = writeln!(out, "\n{ind}requests");
    let _ = writeln!(
        out,
        "{ind}  {:<26} {:>10} {:>10} {:>8} {:>9} {:>11}",
        "", "total", "ok", "failed", "req/s", "connections"
    );
    for (name, r) in [
        ("new connection per request", close),
        ("keep-alive", keepalive),
    ] {
        let _ = writeln!(
            out,
            "{ind}  {name:<26} {:>10} {:>10} {:>8} {:>9.0} {:>11}",
            r.total_requests(),
            r.ok,
            r.total_failures(),
            rate(r.total_requests(), r.elapsed),
            r.connections
        );
    }
    let _ = writeln!(
        out,
        "{ind}  {:<26} {:>10} {:>10} {:>8} {:>9} {:>11}",
        probes_label,
        probes.requests,
        probes.ok,
        probes.total_failures(),
        "-",
        probes.requests
    );

    let _ = writeln!(out, "\n{ind}failures by kind");
    let table = failures_rows(close, keepalive, &probes.failures);
    if table.is_empty() {
        let _ = writeln!(out, "{ind}  none");
        return;
    }
    let _ = writeln!(
        out,
        "{ind}  {:<26} {:>10} {:>10} {:>8}",
        "", "new-conn", "keep-alive", "probes"
    );
    for (label, [a, b, c]) in &table {
        let _ = writeln!(out, "{ind}  {label:<26} {a:>10} {b:>10} {c:>8}");
    }
    let _ = writeln!(out, "{ind}  first failures:");
    for s in close
        .samples
        .iter()
        .map(|s| format!("new-conn {s}"))
        .chain(keepalive.samples.iter().map(|s| format!("keep-alive {s}")))
        .chain(probes.samples.iter().map(|s| format!("probe {s}")))
        .take(max_samples)
    {
        let _ = writeln!(out, "{ind}    {s}");
    }
}

/// The human-readable report.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let opts = &o.opts;
    let m = &o.machine;
    let w = o.windows();
    let all = combined(o);
    let _ = writeln!(out, "hotsup-bench: scenario \"hotsup upgrades\"");
    let _ = writeln!(
        out,
        "  machine: nproc {}, kernel {}, cpu {}; load average {} at start, {} at end",
        m.nproc, m.kernel, m.cpu_model, m.loadavg_start, o.loadavg_end
    );
    let _ = writeln!(
        out,
        "  target: hotsup pid {} on {}, HTTP example, --drain-timeout 10s",
        o.hotsup_pid, o.addr
    );
    let _ = writeln!(
        out,
        "  upgrades {} requested, {} completed; concurrency {} ({} new-connection + {} keep-alive); \
         warm-up {:.1}s, gap {} ms, idle {:.1}s; run took {:.1}s",
        opts.upgrades,
        o.upgrades.len(),
        opts.concurrency,
        opts.close_workers(),
        opts.keepalive_workers(),
        opts.warmup.as_secs_f64(),
        opts.gap.as_millis(),
        opts.idle.as_secs_f64(),
        o.elapsed.as_secs_f64()
    );

    requests_and_failures(
        &mut out,
        "",
        "probes (during upgrades)",
        &o.close,
        &o.keepalive,
        &o.probes,
        10,
    );

    let _ = writeln!(
        out,
        "\nlatency (ms; by request start; upgrade window = signal .. old gen exit + {} ms)",
        WINDOW_TAIL.as_millis()
    );
    let _ = writeln!(
        out,
        "  {:<44} {:>9} {:>9} {:>9} {:>9}",
        "", "count", "p50", "p99", "max"
    );
    lat_row(
        &mut out,
        "  ",
        "steady state (outside upgrade windows)",
        all.latency_percentiles(Window::Outside(&w)),
    );
    lat_row(
        &mut out,
        "  ",
        "across upgrades (inside upgrade windows)",
        all.latency_percentiles(Window::Inside(&w)),
    );
    for (name, r) in [("new-conn", &o.close), ("keep-alive", &o.keepalive)] {
        lat_row(
            &mut out,
            "  ",
            &format!("  {name}: steady"),
            r.latency_percentiles(Window::Outside(&w)),
        );
        lat_row(
            &mut out,
            "  ",
            &format!("  {name}: across upgrades"),
            r.latency_percentiles(Window::Inside(&w)),
        );
    }

    let _ = writeln!(
        out,
        "\nupgrades (ms, over {} upgrades; hotsup's log timestamps for intervals inside hotsup)",
        o.upgrades.len()
    );
    let _ = writeln!(out, "  {:<44} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    for (_, label, f) in SERIES {
        let d = series(o, *f);
        let _ = writeln!(
            out,
            "  {label:<44} {:>9} {:>9} {:>9}",
            f3(d.map(|d| d.p50)),
            f3(d.map(|d| d.p99)),
            f3(d.map(|d| d.max))
        );
    }
    let unclean: Vec<String> = o
        .upgrades
        .iter()
        .filter(|u| !u.drained_clean)
        .map(|u| format!("gen {}: {}", u.old_generation, u.drained_how))
        .collect();
    let _ = writeln!(
        out,
        "  old generations exited with code 0: {} of {}{}",
        o.upgrades.len() - unclean.len(),
        o.upgrades.len(),
        if unclean.is_empty() {
            String::new()
        } else {
            format!(" ({})", unclean.join("; "))
        }
    );
    if let Some(e) = &o.upgrade_error {
        let _ = writeln!(out, "  UPGRADES STOPPED: {e}");
    }

    let (s, e) = (&o.proc_start, &o.proc_end);
    let _ = writeln!(
        out,
        "\nsupervisor process (hotsup pid {}; CPU from /proc ticks at {} Hz)",
        o.hotsup_pid, m.clk_tck
    );
    let _ = writeln!(out, "  {:<44} {:>9} {:>9}", "", "start", "after upgrades");
    let _ = writeln!(out, "  {:<44} {:>9} {:>9}", "RSS KiB", s.rss_kib, e.rss_kib);
    let _ = writeln!(
        out,
        "  {:<44} {:>9.0} {:>9.0}",
        "CPU ms (utime+stime, clock ticks)",
        ticks_to_ms(s.cpu_ticks),
        ticks_to_ms(e.cpu_ticks)
    );
    let _ = writeln!(
        out,
        "  {:<44} {:>9} {:>9}",
        "CPU ms (schedstat run time, ns precision)",
        f3(ns_ms(s.cpu_ns)),
        f3(ns_ms(e.cpu_ns))
    );
    let _ = writeln!(out, "  {:<44} {:>9} {:>9}", "open fds", s.fds, e.fds);
    let _ = writeln!(out, "  {:<44} {:>9} {:>9}", "threads", s.threads, e.threads);
    let cpu_upgrades = cpu_delta_ms(s, e);
    let _ = writeln!(
        out,
        "  CPU ms during load+upgrades: {:.3} total, {} per upgrade",
        cpu_upgrades,
        if o.upgrades.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.3}", cpu_upgrades / o.upgrades.len() as f64)
        }
    );
    let _ = writeln!(
        out,
        "  zombie children: max {} after an upgrade, {} at the end",
        o.zombies_max, o.zombies_end
    );

    let (a, b) = (&o.idle_before, &o.idle_after);
    let _ = writeln!(
        out,
        "\nidle ({:.1}s after the loads stopped, one generation serving)",
        o.idle_took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  CPU ms {:.3}, context switches {} ({} voluntary + {} nonvoluntary)",
        cpu_delta_ms(a, b),
        b.ctxt_switches().saturating_sub(a.ctxt_switches()),
        b.voluntary_ctxt.saturating_sub(a.voluntary_ctxt),
        b.nonvoluntary_ctxt.saturating_sub(a.nonvoluntary_ctxt)
    );

    let _ = writeln!(
        out,
        "\nshutdown: SIGTERM -> {} after {:.0} ms; leftover generations: {}",
        describe_exit(&o.shutdown),
        ms(o.shutdown.took),
        if o.leftovers.is_empty() {
            "none".to_owned()
        } else {
            format!("{:?} (killed)", o.leftovers)
        }
    );
    if !o.problems.is_empty() {
        let _ = writeln!(out, "hotsup warnings/errors ({}):", o.problems.len());
        for p in o.problems.iter().take(10) {
            let _ = writeln!(out, "  {p}");
        }
    }
    let verdict = o.verdict();
    if verdict.is_empty() {
        let _ = writeln!(out, "\nresult: PASS (0 failed requests)");
    } else {
        let _ = writeln!(out, "\nresult: FAIL: {}", verdict.join("; "));
    }
    out
}

fn ns_ms(ns: Option<u64>) -> Option<f64> {
    Some(ns? as f64 / 1e6)
}

pub fn lat_json(s: Option<LatencyStats>) -> Json {
    match s {
        Some(s) => Json::obj()
            .set("count", s.count)
            .set("p50_ms", ms(s.p50))
            .set("p99_ms", ms(s.p99))
            .set("max_ms", ms(s.max)),
        None => Json::obj().set("count", 0u64),
    }
}

pub fn dist_json(d: Option<Dist>) -> Json {
    match d {
        Some(d) => Json::obj()
            .set("count", d.count)
            .set("p50", d.p50)
            .set("p99", d.p99)
            .set("max", d.max),
        None => Json::obj().set("count", 0u64),
    }
}

/// One load's figures; `failures` is its failures by label, and
/// `across_key` names the latency inside the windows.
pub fn load_json(
    r: &Report,
    w: &[(std::time::Instant, std::time::Instant)],
    failures: Json,
    across_key: &str,
) -> Json {
    Json::obj()
        .set("requests", r.total_requests())
        .set("ok", r.ok)
        .set("failed", r.total_failures())
        .set("connections", r.connections)
        .set("elapsed_s", r.elapsed.as_secs_f64())
        .set("requests_per_s", rate(r.total_requests(), r.elapsed))
        .set("failures", failures)
        .set(
            "failure_samples",
            r.samples
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .set(
            "latency_steady",
            lat_json(r.latency_percentiles(Window::Outside(w))),
        )
        .set(
            across_key,
            lat_json(r.latency_percentiles(Window::Inside(w))),
        )
}

/// Failures by label, in label order.
fn by_label(r: &Report) -> Json {
    Json::Obj(
        r.failures_by_label()
            .into_iter()
            .map(|(k, n)| (k, Json::from(n)))
            .collect(),
    )
}

fn proc_json(p: &ProcSample) -> Json {
    Json::obj()
        .set("rss_kib", p.rss_kib)
        .set("cpu_ms_ticks", ticks_to_ms(p.cpu_ticks))
        .set("cpu_ms_schedstat", ns_ms(p.cpu_ns))
        .set("fds", p.fds)
        .set("threads", p.threads)
        .set("voluntary_ctxt_switches", p.voluntary_ctxt)
        .set("nonvoluntary_ctxt_switches", p.nonvoluntary_ctxt)
}

/// Key of a load's latency inside the upgrade windows.
const ACROSS: &str = "latency_across_upgrades";

/// The same report as JSON.
pub fn json(o: &Outcome) -> Json {
    let w = o.windows();
    let all = combined(o);
    let m = &o.machine;
    let mut upgrades = Json::obj();
    for (key, _, f) in SERIES {
        upgrades = upgrades.set(key, dist_json(series(o, *f)));
    }
    let per_upgrade: Vec<Json> = o
        .upgrades
        .iter()
        .map(|u| {
            let mut j = Json::obj()
                .set("index", u64::from(u.index))
                .set("generation", u.generation)
                .set("pid", u.pid)
                .set("old_generation_exit", u.drained_how.as_str())
                .set("probes", u.probes);
            for (key, _, f) in SERIES {
                j = j.set(key, f(u));
            }
            j
        })
        .collect();
    let (a, b) = (&o.idle_before, &o.idle_after);
    let verdict = o.verdict();
    Json::obj()
        .set("scenario", "hotsup upgrades")
        .set(
            "machine",
            Json::obj()
                .set("nproc", m.nproc)
                .set("kernel", m.kernel.as_str())
                .set("cpu_model", m.cpu_model.as_str())
                .set("clock_ticks_per_s", m.clk_tck)
                .set("loadavg_start", m.loadavg_start.as_str())
                .set("loadavg_end", o.loadavg_end.as_str()),
        )
        .set(
            "options",
            Json::obj()
                .set("upgrades", u64::from(o.opts.upgrades))
                .set("concurrency", o.opts.concurrency)
                .set("new_connection_workers", o.opts.close_workers())
                .set("keep_alive_workers", o.opts.keepalive_workers())
                .set("warmup_s", o.opts.warmup.as_secs_f64())
                .set("gap_ms", ms(o.opts.gap))
                .set("idle_s", o.opts.idle.as_secs_f64())
                .set("drain_timeout_s", 10u64),
        )
        .set("hotsup_pid", o.hotsup_pid)
        .set("address", o.addr.to_string())
        .set("elapsed_s", o.elapsed.as_secs_f64())
        .set(
            "requests",
            Json::obj()
                .set("total", all.records.len() as u64 + o.request_failures())
                .set("failed", o.request_failures())
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
                    load_json(&o.close, &w, by_label(&o.close), ACROSS),
                )
                .set(
                    "keep_alive",
                    load_json(&o.keepalive, &w, by_label(&o.keepalive), ACROSS),
                )
                .set(
                    "probes",
                    Json::obj()
                        .set("requests", o.probes.requests)
                        .set("ok", o.probes.ok)
                        .set("failed", o.probes.total_failures())
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
                    "across_upgrades",
                    lat_json(all.latency_percentiles(Window::Inside(&w))),
                ),
        )
        .set(
            "upgrades",
            upgrades
                .set("requested", u64::from(o.opts.upgrades))
                .set("completed", o.upgrades.len())
                .set("error", o.upgrade_error.clone())
                .set(
                    "old_generations_clean_exit",
                    o.upgrades.iter().filter(|u| u.drained_clean).count(),
                )
                .set("per_upgrade", per_upgrade),
        )
        .set(
            "supervisor",
            Json::obj()
                .set("start", proc_json(&o.proc_start))
                .set("after_upgrades", proc_json(&o.proc_end))
                .set(
                    "cpu_ms_during_upgrades",
                    cpu_delta_ms(&o.proc_start, &o.proc_end),
                )
                .set("zombies_max_after_upgrade", o.zombies_max)
                .set("zombies_end", o.zombies_end),
        )
        .set(
            "idle",
            wakeups_json(Json::obj().set("seconds", o.idle_took.as_secs_f64()), a, b),
        )
        .set(
            "shutdown",
            Json::obj()
                .set("exit_code", o.shutdown.exit_code)
                .set("exit_signal", o.shutdown.exit_signal)
                .set("took_ms", ms(o.shutdown.took))
                .set("forced", o.shutdown.forced)
                .set("leftover_generations", o.leftovers.clone()),
        )
        .set("hotsup_problems", o.problems.clone())
        .set("pass", verdict.is_empty())
        .set("fail_reasons", verdict)
}
