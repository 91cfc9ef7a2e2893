//! A closed-loop HTTP load generator on plain threads.
//!
//! [`Load::start`] spawns `concurrency` workers; each sends `GET` requests one
//! after another (optionally reusing its connection) until it is stopped, the
//! [`LoadConfig::max_duration`] deadline passes, or the global
//! [`LoadConfig::max_requests`] budget is used up. Failed requests are never
//! retried: every failure is counted, including failures on a reused
//! keep-alive connection.
//!
//! ```no_run
//! use hotsup_bench::loadgen::{Load, LoadConfig};
//! use std::time::Duration;
//!
//! let load = Load::start(LoadConfig::new("127.0.0.1:8080".parse().unwrap()));
//! assert!(load.wait_for_ok(100, Duration::from_secs(5)));
//! let report = load.stop();
//! assert_eq!(report.total_failures(), 0, "{report}");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{Connection, Failure, FailureKind, validate_path};

/// How many failures are kept in [`Report::samples`].
pub const MAX_FAILURE_SAMPLES: usize = 20;

/// What load to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// Server address (only loopback addresses are meant to be used).
    pub addr: SocketAddr,
    /// Number of worker threads, each with at most one request in flight.
    pub concurrency: usize,
    /// Reuse each worker's connection until the server answers with
    /// `Connection: close` or a request fails.
    pub keep_alive: bool,
    /// Request path, must start with `/`.
    pub path: String,
    /// Stop after this many requests in total (successful or not).
    pub max_requests: Option<u64>,
    /// Stop starting requests after this much time.
    pub max_duration: Duration,
    /// Connect timeout, write timeout and deadline for reading a response.
    pub timeout: Duration,
    /// Pause of each worker after each request.
    pub pause_between: Option<Duration>,
}

impl LoadConfig {
    /// Defaults: 4 workers, keep-alive, path `/`, no request limit, 30 s
    /// maximum duration, 5 s timeout, no pause.
    pub fn new(addr: SocketAddr) -> Self {
        LoadConfig {
            addr,
            concurrency: 4,
            keep_alive: true,
            path: "/".to_owned(),
            max_requests: None,
            max_duration: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            pause_between: None,
        }
    }
}

/// One successful (status 200) request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request started (before connecting, if it had to connect).
    pub started: Instant,
    /// Time until the complete response was read (includes connecting).
    pub latency: Duration,
    /// `generation=<g>` from the body, if present.
    pub generation: Option<u64>,
    /// `pid=<pid>` from the body, if present.
    pub pid: Option<u32>,
}

impl Sample {
    /// When the complete response had been read.
    pub fn completed(&self) -> Instant {
        self.started + self.latency
    }
}

/// One failed request, kept for debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureSample {
    /// When the failure was observed.
    pub at: Instant,
    /// Time since the load started.
    pub since_start: Duration,
    /// Index of the worker (0-based).
    pub worker: usize,
    /// Whether the request was sent on a reused keep-alive connection.
    pub reused_connection: bool,
    /// The classification.
    pub kind: FailureKind,
    /// The error text.
    pub message: String,
}

impl fmt::Display for FailureSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{:.3}s worker {}{}: {}: {}",
            self.since_start.as_secs_f64(),
            self.worker,
            if self.reused_connection {
                " (reused conn)"
            } else {
                ""
            },
            self.kind,
            self.message
        )
    }
}

/// Counts observed so far, see [`Load::snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Successful (status 200) requests.
    pub ok: u64,
    /// Failed requests of any kind.
    pub failures: u64,
    /// Workers still running.
    pub active_workers: usize,
}

/// Latency statistics, see [`Report::latency_percentiles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyStats {
    /// Number of samples considered.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
}

/// Which samples to consider, by their [`Sample::started`] instant.
/// Windows are half-open: `start <= started < end`.
#[derive(Debug, Clone, Copy)]
pub enum Window<'a> {
    /// Every sample.
    All,
    /// Samples that started inside any of the windows.
    Inside(&'a [(Instant, Instant)]),
    /// Samples that started outside all of the windows.
    Outside(&'a [(Instant, Instant)]),
}

impl Window<'_> {
    /// Whether a sample that started at `t` is selected.
    pub fn contains(&self, t: Instant) -> bool {
        let inside = |ws: &[(Instant, Instant)]| ws.iter().any(|&(a, b)| a <= t && t < b);
        match self {
            Window::All => true,
            Window::Inside(ws) => inside(ws),
            Window::Outside(ws) => !inside(ws),
        }
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value such that
/// at least `p` percent of the values are `<=` it. `None` for an empty slice.
/// `p` is clamped to `0..=100`; `p == 0` gives the minimum.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    // Computed in f64; exact for the sizes used here.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// The result of a load run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Successful (status 200) requests.
    pub ok: u64,
    /// Failed requests by kind.
    pub failures: BTreeMap<FailureKind, u64>,
    /// The first [`MAX_FAILURE_SAMPLES`] failures, in time order.
    pub samples: Vec<FailureSample>,
    /// Every successful request, sorted by start time.
    pub records: Vec<Sample>,
    /// Connections opened by the workers (successful connects).
    pub connections: u64,
    /// Responses that asked to close the connection (normal, not failures).
    pub server_closes: u64,
    /// Wall time from [`Load::start`] until the workers were joined.
    pub elapsed: Duration,
}

impl Report {
    /// Sum of all failures.
    pub fn total_failures(&self) -> u64 {
        self.failures.values().sum()
    }

    /// All requests: successes plus failures.
    pub fn total_requests(&self) -> u64 {
        self.ok + self.total_failures()
    }

    /// Number of failures of exactly this kind.
    pub fn failures_of(&self, kind: &FailureKind) -> u64 {
        self.failures.get(kind).copied().unwrap_or(0)
    }

    /// Number of failures whose kind matches `pred` (e.g. any `BadStatus`).
    pub fn failures_where(&self, pred: impl Fn(&FailureKind) -> bool) -> u64 {
        self.failures
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n)
            .sum()
    }

    /// Failures keyed by [`FailureKind::label`].
    pub fn failures_by_label(&self) -> BTreeMap<String, u64> {
        self.failures.iter().map(|(k, &n)| (k.label(), n)).collect()
    }

    /// Generations seen in successful responses.
    pub fn generations_seen(&self) -> BTreeSet<u64> {
        self.records.iter().filter_map(|s| s.generation).collect()
    }

    /// Server pids seen in successful responses.
    pub fn pids_seen(&self) -> BTreeSet<u32> {
        self.records.iter().filter_map(|s| s.pid).collect()
    }

    /// When the first response of generation `g` was completely read.
    pub fn first_response_of_generation(&self, g: u64) -> Option<Instant> {
        self.records
            .iter()
            .filter(|s| s.generation == Some(g))
            .map(Sample::completed)
            .min()
    }

    /// When the last response of generation `g` was completely read.
    pub fn last_response_of_generation(&self, g: u64) -> Option<Instant> {
        self.records
            .iter()
            .filter(|s| s.generation == Some(g))
            .map(Sample::completed)
            .max()
    }

    /// p50, p99 and maximum latency of the successful requests selected by
    /// `window`; `None` if none is selected.
    pub fn latency_percentiles(&self, window: Window<'_>) -> Option<LatencyStats> {
        let mut lat: Vec<Duration> = self
            .records
            .iter()
            .filter(|s| window.contains(s.started))
            .map(|s| s.latency)
            .collect();
        lat.sort_unstable();
        Some(LatencyStats {
            count: lat.len(),
            p50: percentile(&lat, 50.0)?,
            p99: percentile(&lat, 99.0)?,
            max: *lat.last()?,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} failed in {:.3}s ({} connections, {} server closes)",
            self.ok,
            self.total_failures(),
            self.elapsed.as_secs_f64(),
            self.connections,
            self.server_closes
        )?;
        for (kind, n) in &self.failures {
            write!(f, "\n  {kind}: {n}")?;
        }
        if let Some(s) = self.latency_percentiles(Window::All) {
            write!(
                f,
                "\n  latency p50 {:?} p99 {:?} max {:?}",
                s.p50, s.p99, s.max
            )?;
        }
        if !self.samples.is_empty() {
            write!(f, "\n  first failures:")?;
            for s in &self.samples {
                write!(f, "\n    {s}")?;
            }
        }
        Ok(())
    }
}

/// State shared between the [`Load`] handle and its workers.
#[derive(Debug)]
struct Shared {
    config: LoadConfig,
    started: Instant,
    deadline: Instant,
    stop: AtomicBool,
    issued: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    active: AtomicUsize,
    samples: Mutex<Vec<FailureSample>>,
}

impl Shared {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// Claims one request from the `max_requests` budget.
    fn claim_request(&self) -> bool {
        match self.config.max_requests {
            None => true,
            Some(max) => self.issued.fetch_add(1, Ordering::Relaxed) < max,
        }
    }
}

/// What one worker collected.
#[derive(Debug, Default)]
struct WorkerResult {
    failures: BTreeMap<FailureKind, u64>,
    records: Vec<Sample>,
    connections: u64,
    server_closes: u64,
}

fn worker(shared: &Shared, id: usize) -> WorkerResult {
    let cfg = &shared.config;
    let mut out = WorkerResult::default();
    let mut conn: Option<Connection> = None;
    while !shared.should_stop() && shared.claim_request() {
        let started = Instant::now();
        let reused = conn.is_some();
        let connected = match conn.take() {
            Some(c) => Ok(c),
            None => Connection::connect(cfg.addr, cfg.timeout).inspect(|_| out.connections += 1),
        };
        let result = connected.and_then(|mut c| {
            let response = c.get(&cfg.path, cfg.keep_alive)?;
            Ok((c, response))
        });
        let failure = match result {
            Ok((c, response)) => {
                let latency = started.elapsed();
                if response.close {
                    out.server_closes += 1;
                } else if cfg.keep_alive {
                    conn = Some(c);
                }
                if response.status == 200 {
                    let id = response.identity();
                    out.records.push(Sample {
                        started,
                        latency,
                        generation: id.generation,
                        pid: id.pid,
                    });
                    shared.ok.fetch_add(1, Ordering::Relaxed);
                    None
                } else {
                    Some(Failure::new(
                        FailureKind::BadStatus(response.status),
                        format!(
                            "status {} {:?}, body {:?}",
                            response.status,
                            response.reason,
                            truncate(&response.body_text(), 200)
                        ),
                    ))
                }
            }
            Err(f) => Some(f),
        };
        if let Some(f) = failure {
            let n = shared.failures.fetch_add(1, Ordering::Relaxed);
            if n < MAX_FAILURE_SAMPLES as u64 {
                // Timestamp under the lock so that samples are in time order.
                let mut samples = lock(&shared.samples);
                let at = Instant::now();
                samples.push(FailureSample {
                    at,
                    since_start: at.duration_since(shared.started),
                    worker: id,
                    reused_connection: reused,
                    kind: f.kind.clone(),
                    message: f.message,
                });
            }
            *out.failures.entry(f.kind).or_default() += 1;
        }
        if let Some(pause) = cfg.pause_between {
            // Woken early by `unpark` from `Load::stop`.
            let until = Instant::now() + pause;
            while !shared.should_stop() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                thread::park_timeout(
                    left.min(shared.deadline.saturating_duration_since(Instant::now())),
                );
            }
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrements the active-worker count even if the worker panics.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A running load; stop it with [`Load::stop`] or wait with [`Load::finish`].
/// Dropping it stops and joins the workers.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<WorkerResult>>,
}

impl Load {
    /// Spawns `config.concurrency` workers.
    ///
    /// # Panics
    /// If `config.path` is not a valid request path (must start with `/`, no
    /// whitespace or control characters), or a thread cannot be spawned.
    pub fn start(config: LoadConfig) -> Load {
        if let Err(e) = validate_path(&config.path) {
            panic!("invalid LoadConfig: {e}");
        }
        let started = Instant::now();
        let concurrency = config.concurrency;
        let shared = Arc::new(Shared {
            deadline: started + config.max_duration,
            config,
            started,
            stop: AtomicBool::new(false),
            issued: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            active: AtomicUsize::new(concurrency),
            samples: Mutex::new(Vec::new()),
        });
        let mut load = Load {
            shared,
            workers: Vec::with_capacity(concurrency),
        };
        for id in 0..concurrency {
            let shared = Arc::clone(&load.shared);
            let spawned = thread::Builder::new()
                .name(format!("loadgen-{id}"))
                .spawn(move || {
                    let _active = ActiveGuard(&shared.active);
                    worker(&shared, id)
                });
            match spawned {
                Ok(handle) => load.workers.push(handle),
                // Dropping `load` stops and joins the workers already started.
                Err(e) => panic!("spawn load worker {id}: {e}"),
            }
        }
        load
    }

    /// The instant the load started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Current counts, without stopping.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ok: self.shared.ok.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            active_workers: self.shared.active.load(Ordering::Acquire),
        }
    }

    /// Whether every worker has ended by itself (budget or deadline).
    pub fn is_finished(&self) -> bool {
        self.shared.active.load(Ordering::Acquire) == 0
    }

    /// Polls until at least `n` successful responses were counted in total,
    /// or `timeout` passes, or all workers ended. Returns whether `n` was
    /// reached.
    pub fn wait_for_ok(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.ok >= n)
    }

    /// Polls until at least `n` more successful responses were counted than
    /// when called (see [`Load::wait_for_ok`]).
    pub fn wait_for_more_ok(&self, n: u64, timeout: Duration) -> bool {
        let target = self.snapshot().ok.saturating_add(n);
        self.wait_for_ok(target, timeout)
    }

    /// Polls (every millisecond) until `pred` holds for a snapshot, `timeout`
    /// passes, or all workers ended. Returns whether `pred` held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let snap = self.snapshot();
            if pred(&snap) {
                return true;
            }
            if snap.active_workers == 0 || Instant::now() >= deadline {
                return pred(&self.snapshot());
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Signals the workers to stop and joins them. A request in flight is
    /// completed (or fails) first, so this takes at most about
    /// [`LoadConfig::timeout`].
    ///
    /// # Panics
    /// If a worker panicked.
    pub fn stop(mut self) -> Report {
        self.signal_stop();
        self.join()
    }

    /// Waits for the workers to end by themselves (at `max_requests` or
    /// `max_duration`) and joins them.
    ///
    /// # Panics
    /// If a worker panicked.
    pub fn finish(mut self) -> Report {
        self.join()
    }

    fn signal_stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            w.thread().unpark();
        }
    }

    fn join(&mut self) -> Report {
        let mut report = Report::default();
        for handle in std::mem::take(&mut self.workers) {
            let w = match handle.join() {
                Ok(w) => w,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            report.records.extend(w.records);
            for (kind, n) in w.failures {
                *report.failures.entry(kind).or_default() += n;
            }
            report.connections += w.connections;
            report.server_closes += w.server_closes;
        }
        report.elapsed = self.shared.started.elapsed();
        report.ok = report.records.len() as u64;
        report.records.sort_unstable_by_key(|s| s.started);
        report.samples = std::mem::take(&mut *lock(&self.shared.samples));
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        self.signal_stop();
        for handle in std::mem::take(&mut self.workers) {
            // Ignore worker panics here: we may already be unwinding.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(1));
        assert_eq!(percentile(&v, 1.5), Some(2));

        let v = [10, 20, 30, 40, 50];
        // Wikipedia's nearest-rank example.
        assert_eq!(percentile(&v, 5.0), Some(10));
        assert_eq!(percentile(&v, 30.0), Some(20));
        assert_eq!(percentile(&v, 40.0), Some(20));
        assert_eq!(percentile(&v, 50.0), Some(30));
        assert_eq!(percentile(&v, 100.0), Some(50));

        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn report_helpers() {
        let t0 = Instant::now();
        let rec = |start_ms: u64, lat_ms: u64, generation: u64| Sample {
            started: t0 + ms(start_ms),
            latency: ms(lat_ms),
            generation: Some(generation),
            pid: Some(100 + generation as u32),
        };
        let mut report = Report {
            ok: 0,
            records: vec![],
            ..Report::default()
        };
        // Steady state of generation 1: latencies 1..=100 ms at t=0..99 ms.
        for i in 0..100 {
            report.records.push(rec(i, i + 1, 1));
        }
        // "Upgrade" window 1000..1100 ms: slow requests, generations 1 and 2.
        report.records.push(rec(1000, 500, 1));
        report.records.push(rec(1010, 300, 2));
        report.records.push(rec(1050, 200, 2));
        // After: generation 2.
        report.records.push(rec(2000, 2, 2));
        report.ok = report.records.len() as u64;
        report.failures.insert(FailureKind::Reset, 2);
        report.failures.insert(FailureKind::BadStatus(503), 3);
        report.failures.insert(FailureKind::BadStatus(502), 1);

        assert_eq!(report.total_failures(), 6);
        assert_eq!(report.total_requests(), 110);
        assert_eq!(report.failures_of(&FailureKind::Reset), 2);
        assert_eq!(report.failures_of(&FailureKind::Timeout), 0);
        assert_eq!(
            report.failures_where(|k| matches!(k, FailureKind::BadStatus(_))),
            4
        );
        assert_eq!(report.failures_by_label()["status_503"], 3);
        assert_eq!(report.generations_seen(), BTreeSet::from([1, 2]));
        assert_eq!(report.pids_seen(), BTreeSet::from([101, 102]));
        // Completion times: gen 2 first completes at 1050+200 = 1250 < 1010+300.
        assert_eq!(report.first_response_of_generation(2), Some(t0 + ms(1250)));
        assert_eq!(report.first_response_of_generation(1), Some(t0 + ms(1)));
        assert_eq!(report.last_response_of_generation(1), Some(t0 + ms(1500)));
        assert_eq!(report.first_response_of_generation(3), None);

        let upgrade = [(t0 + ms(1000), t0 + ms(1100))];
        let steady = report
            .latency_percentiles(Window::Outside(&upgrade))
            .unwrap();
        assert_eq!(steady.count, 101);
        // Sorted: 1, 2, 2, 3, ..., 100; rank ceil(0.5 * 101) = 51 -> 50 ms.
        assert_eq!(steady.p50, ms(50));
        assert_eq!(steady.p99, ms(99));
        assert_eq!(steady.max, ms(100));

        let across = report
            .latency_percentiles(Window::Inside(&upgrade))
            .unwrap();
        assert_eq!(across.count, 3);
        assert_eq!(across.p50, ms(300));
        assert_eq!(across.p99, ms(500));
        assert_eq!(across.max, ms(500));

        assert_eq!(report.latency_percentiles(Window::All).unwrap().count, 104);
        let nothing = [(t0 + ms(5000), t0 + ms(6000))];
        assert_eq!(report.latency_percentiles(Window::Inside(&nothing)), None);
        // Windows are half-open.
        let edge = [(t0 + ms(1000), t0 + ms(1010))];
        assert_eq!(
            report
                .latency_percentiles(Window::Inside(&edge))
                .unwrap()
                .count,
            1
        );
        let text = report.to_string();
        assert!(text.contains("104 ok, 6 failed"), "{text}");
        assert!(text.contains("status_503: 3"), "{text}");
    }
}
