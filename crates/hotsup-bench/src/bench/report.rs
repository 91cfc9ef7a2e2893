//! What the scenarios share to measure load and report it: the two loads
//! every restart scenario runs, their summaries (serialized with serde
//! into the JSON report), distributions, and text tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hotsup_bench::{
    FailureKind, Identity, LatencyStats, Load, LoadConfig, Report, Window, percentile, request_once,
};
use serde::Serialize;

/// Timeout of each load request.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one probe request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Failure messages kept from the probes.
const MAX_PROBE_SAMPLES: usize = 10;

pub use hotsup_bench::kit::secs;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50/p99/max of a set of values (milliseconds, unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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

/// Request latency, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lat {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Lat {
    pub fn of(r: &Report, w: Window<'_>) -> Option<Lat> {
        r.latency_percentiles(w).map(|s: LatencyStats| Lat {
            count: s.count,
            p50_ms: ms(s.p50),
            p99_ms: ms(s.p99),
            max_ms: ms(s.max),
        })
    }
}

/// One load's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub connections: u64,
    pub requests_per_s: f64,
    /// First failures, for the record.
    pub samples: Vec<String>,
}

impl Traffic {
    pub fn of(r: &Report) -> Traffic {
        Traffic {
            requests: r.total_requests(),
            ok: r.ok,
            failed: r.total_failures(),
            failures: r.failures_by_label(),
            connections: r.connections,
            requests_per_s: rate(r.total_requests(), r.elapsed),
            samples: r.samples.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn failures_of(&self, label: &str) -> u64 {
        self.failures.get(label).copied().unwrap_or(0)
    }
}

pub fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Probe requests, each on a new connection, sent to find out when a new
/// process answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probes {
    pub requests: u64,
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
    pub samples: Vec<String>,
}

impl Probes {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn failure(&mut self, kind: FailureKind, message: String) {
        if self.samples.len() < MAX_PROBE_SAMPLES {
            self.samples.push(format!("{kind}: {message}"));
        }
        *self.failures.entry(kind.label()).or_default() += 1;
    }
}

/// Pause between probes (a refused connect returns at once: do not spin).
const PROBE_PAUSE: Duration = Duration::from_micros(200);
/// Most probes in one wait (a second bound besides its deadline).
const MAX_PROBES: u64 = 100_000;
/// How often a probe loop asks whether the process it waits for is gone.
const ALIVE_EVERY: Duration = Duration::from_millis(20);

/// Sends probes (`GET /`, each on a new connection) until one is answered
/// by a process `wanted` accepts; returns when that response was complete
/// and how many probes were sent. `gone` says why waiting is pointless
/// (the process exited), checked every 20 ms.
pub fn probe_until(
    addr: SocketAddr,
    deadline: Instant,
    probes: &mut Probes,
    wanted: impl Fn(&Identity) -> bool,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<(Instant, u64)> {
    let mut sent = 0;
    let mut next_check = Instant::now() + ALIVE_EVERY;
    while sent < MAX_PROBES && Instant::now() < deadline {
        sent += 1;
        probes.requests += 1;
        match request_once(addr, "/", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let done = Instant::now();
                probes.ok += 1;
                if wanted(&r.identity()) {
                    return Ok((done, sent));
                }
            }
            Ok(r) => probes.failure(
                FailureKind::BadStatus(r.status),
                format!("status {}", r.status),
            ),
            Err(f) => probes.failure(f.kind, f.message),
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + ALIVE_EVERY;
            if let Some(why) = gone() {
                bail!("no answer from the process waited for: {why}");
            }
        }
        thread::sleep(PROBE_PAUSE);
    }
    bail!("no answer from the process waited for ({sent} probes)")
}

/// A new-connection-per-request load and a keep-alive load, side by side,
/// as every restart scenario runs them.
pub struct TwoLoads {
    close: Load,
    keepalive: Load,
}

impl TwoLoads {
    /// Starts both loads at `addr` (`close` and `keepalive` workers, for at
    /// most `bound`) and waits until each got a response.
    pub fn start(
        addr: SocketAddr,
        close: usize,
        keepalive: usize,
        bound: Duration,
    ) -> Result<TwoLoads> {
        let config = |concurrency, keep_alive| LoadConfig {
            concurrency,
            keep_alive,
            max_duration: bound,
            timeout: LOAD_TIMEOUT,
            ..LoadConfig::new(addr)
        };
        let loads = TwoLoads {
            close: Load::start(config(close, false)),
            keepalive: Load::start(config(keepalive, true)),
        };
        for (name, load) in [
            ("new-connection", &loads.close),
            ("keep-alive", &loads.keepalive),
        ] {
            if !load.wait_for_ok(1, Duration::from_secs(10)) {
                bail!(
                    "the {name} load got no successful response within 10s ({:?})",
                    load.snapshot()
                );
            }
        }
        Ok(loads)
    }

    pub fn started(&self) -> Instant {
        self.close.started()
    }

    /// Sleeps until `warmup` after the start.
    pub fn warm_up(&self, warmup: Duration) {
        thread::sleep((self.started() + warmup).saturating_duration_since(Instant::now()));
    }

    /// Stops both; returns (new-connection, keep-alive).
    pub fn stop(self) -> (Report, Report) {
        (self.close.stop(), self.keepalive.stop())
    }
}

/// Both loads and the probes of a restart scenario, summarized against its
/// restart windows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loads {
    pub new_connection: Traffic,
    pub keep_alive: Traffic,
    pub probes: Probes,
    /// Latency of both loads outside and inside the restart windows.
    pub steady: Option<Lat>,
    pub across: Option<Lat>,
}

impl Loads {
    pub fn of(
        close: &Report,
        keepalive: &Report,
        probes: Probes,
        windows: &[(Instant, Instant)],
    ) -> Loads {
        let both = combined(close, keepalive);
        Loads {
            new_connection: Traffic::of(close),
            keep_alive: Traffic::of(keepalive),
            probes,
            steady: Lat::of(&both, Window::Outside(windows)),
            across: Lat::of(&both, Window::Inside(windows)),
        }
    }

    pub fn requests(&self) -> u64 {
        self.new_connection.requests + self.keep_alive.requests
    }

    /// Failures of the loads (not the probes).
    pub fn failed(&self) -> u64 {
        self.new_connection.failed + self.keep_alive.failed
    }

    pub fn failed_of(&self, label: &str) -> u64 {
        self.new_connection.failures_of(label) + self.keep_alive.failures_of(label)
    }

    /// The requests and failures tables.
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new(["requests", "total", "ok", "failed", "req/s", "connections"]);
        for (name, r) in [
            ("new connection per request", &self.new_connection),
            ("keep-alive", &self.keep_alive),
        ] {
            t.row([
                name.to_string(),
                r.requests.to_string(),
                r.ok.to_string(),
                r.failed.to_string(),
                format!("{:.0}", r.requests_per_s),
                r.connections.to_string(),
            ]);
        }
        let p = &self.probes;
        t.row([
            "probes".into(),
            p.requests.to_string(),
            p.ok.to_string(),
            p.failed().to_string(),
            "-".into(),
            p.requests.to_string(),
        ]);
        t.render(out);
        let mut kinds: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
        for (i, m) in [
            &self.new_connection.failures,
            &self.keep_alive.failures,
            &p.failures,
        ]
        .into_iter()
        .enumerate()
        {
            for (k, n) in m {
                kinds.entry(k).or_default()[i] += n;
            }
        }
        if kinds.is_empty() {
            let _ = writeln!(out, "  failures: none");
        } else {
            let mut t = Table::new(["failures by kind", "new-conn", "keep-alive", "probes"]);
            for (k, [a, b, c]) in kinds {
                t.row([k.to_string(), a.to_string(), b.to_string(), c.to_string()]);
            }
            t.render(out);
            let first = self
                .new_connection
                .samples
                .iter()
                .map(|s| format!("new-conn {s}"));
            let first = first.chain(
                self.keep_alive
                    .samples
                    .iter()
                    .map(|s| format!("keep-alive {s}")),
            );
            for s in first
                .chain(p.samples.iter().map(|s| format!("probe {s}")))
                .take(8)
            {
                let _ = writeln!(out, "    {s}");
            }
        }
        let mut t = Table::new(["latency ms (both loads)", "count", "p50", "p99", "max"]);
        for (name, l) in [
            ("steady (outside restart windows)", self.steady),
            ("across restarts (inside)", self.across),
        ] {
            t.row([
                name.to_string(),
                l.map_or(0, |l| l.count).to_string(),
                f(l.map(|l| l.p50_ms), 3),
                f(l.map(|l| l.p99_ms), 3),
                f(l.map(|l| l.max_ms), 3),
            ]);
        }
        t.render(out);
    }
}

/// Both reports' successful requests in one (for latency only).
pub fn combined(a: &Report, b: &Report) -> Report {
    let mut records = [a.records.as_slice(), b.records.as_slice()].concat();
    records.sort_unstable_by_key(|s| s.started);
    Report {
        records,
        ..Report::default()
    }
}

/// `x` with `prec` decimals, `-` for none.
pub fn f(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// A text table: the first column left-aligned, the others right-aligned,
/// indented by two spaces.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(head: impl IntoIterator<Item = S>) -> Table {
        Table {
            rows: vec![head.into_iter().map(|s| s.to_string()).collect()],
        }
    }

    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows
            .push(cells.into_iter().map(|s| s.to_string()).collect());
        self
    }

    /// A p50/p99/max row (`-` when there is nothing).
    pub fn dist_row(&mut self, name: &str, d: Option<Dist>, prec: usize) -> &mut Table {
        self.row([
            name.to_string(),
            f(d.map(|d| d.p50), prec),
            f(d.map(|d| d.p99), prec),
            f(d.map(|d| d.max), prec),
        ])
    }

    pub fn render(&self, out: &mut String) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let mut line = String::from(" ");
            for (c, cell) in r.iter().enumerate() {
                let w = width[c];
                if c == 0 {
                    let _ = write!(line, " {cell:<w$}");
                } else {
                    let _ = write!(line, "  {cell:>w$}");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_and_tables() {
        let d = dist(vec![3.0, 1.0, f64::NAN, 2.0]).unwrap();
        assert_eq!((d.count, d.p50, d.p99, d.max), (3, 2.0, 3.0, 3.0));
        assert!(dist(vec![]).is_none());
        let mut out = String::new();
        let mut t = Table::new(["name", "n"]);
        t.row(["a", "10"]).dist_row("b", Some(d), 1);
        t.render(&mut out);
        assert_eq!(out, "  name    n\n  a      10\n  b     2.0  3.0  3.0\n");
    }
}
