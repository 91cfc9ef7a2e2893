//! `--metrics ADDR`: Prometheus text format at `/metrics`.
//!
//! Counters and histograms follow the lifecycle events as they are
//! emitted; gauges that describe the present (the serving generation,
//! draining generations, the workers' memory) are set when scraped, from
//! what the supervisor loop last published. Without the flag none of this
//! exists: nothing listens, nothing is counted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::lifecycle::Event;

/// Connections served at once; more wait in the listen backlog.
const MAX_SCRAPERS: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: u32,
}

/// What the loop publishes for scrapes: the present state.
#[derive(Debug, Default, Clone)]
pub struct Present {
    pub generation: u64,
    pub draining: u64,
    /// Live workers of the serving generation: slot and pid.
    pub workers: Vec<(u32, i32)>,
    pub log_lines_dropped: u64,
    pub notify_dropped: u64,
    pub counters: crate::lifecycle::Counters,
}

/// The metrics, fed by the supervisor loop.
pub struct Metrics {
    ready_seconds: Histogram,
    drain_seconds: Histogram,
    present: Arc<Mutex<Present>>,
    /// The listening socket's number, owned by the accept task: what a
    /// self-upgrade hands over.
    fd: std::os::fd::RawFd,
}

/// What the HTTP task needs: the registry and the present state.
struct Scrape {
    registry: Registry,
    present: Arc<Mutex<Present>>,
    upgrades: Family<ResultLabel, Counter>,
    crash_restarts: Counter,
    worker_restarts: Counter,
    generation: Gauge,
    draining: Gauge,
    rss: Family<WorkerLabel, Gauge>,
    log_dropped: Counter,
    notify_dropped: Counter,
}

impl Metrics {
    /// Binds `addr` and serves `/metrics` from a task. Must run inside the
    /// runtime.
    pub fn serve(addr: SocketAddr) -> std::io::Result<(Metrics, SocketAddr)> {
        Metrics::serve_on(std::net::TcpListener::bind(addr)?)
    }

    /// Serves `/metrics` on a listener already bound: by [`Metrics::serve`],
    /// or by the hotsup that exec'd this one (`hotsup upgrade --self`).
    pub fn serve_on(std_listener: std::net::TcpListener) -> std::io::Result<(Metrics, SocketAddr)> {
        std_listener.set_nonblocking(true)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std_listener);
        let bound = std_listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;

        let mut registry = Registry::with_prefix("hotsup");
        let upgrades = Family::<ResultLabel, Counter>::default();
        registry.register(
            "upgrades",
            "Upgrades by outcome: ready, failed (before ready), rolled_back (after)",
            upgrades.clone(),
        );
        let crash_restarts = Counter::default();
        registry.register(
            "crash_restarts",
            "Generations started again after the serving one died",
            crash_restarts.clone(),
        );
        let worker_restarts = Counter::default();
        registry.register(
            "worker_restarts",
            "Workers started again in their slot after a crash",
            worker_restarts.clone(),
        );
        let ready_seconds =
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "time_to_ready_seconds",
            "From a generation's start to every worker ready",
            ready_seconds.clone(),
        );
        let drain_seconds =
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "drain_duration_seconds",
            "From the drain request to the worker's exit",
            drain_seconds.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "generation",
            "The serving generation (0: none)",
            generation.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining_generations",
            "Generations draining now",
            draining.clone(),
        );
        let rss = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "worker_rss_bytes",
            "Resident memory of each serving worker",
            rss.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines not written because stderr was full or closed",
            log_dropped.clone(),
        );
        let notify_dropped = Counter::default();
        registry.register(
            "notify_dropped",
            "NOTIFY_SOCKET datagrams dropped because no generation sent them",
            notify_dropped.clone(),
        );
        let present = Arc::new(Mutex::new(Present::default()));
        let scrape = Arc::new(Scrape {
            registry,
            present: present.clone(),
            upgrades,
            crash_restarts,
            worker_restarts,
            generation,
            draining,
            rss,
            log_dropped,
            notify_dropped,
        });
        tokio::spawn(accept_loop(listener, scrape));
        Ok((
            Metrics {
                ready_seconds,
                drain_seconds,
                present,
                fd,
            },
            bound,
        ))
    }

    /// The listening socket, for `hotsup upgrade --self`.
    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    /// Observes the durations an event tells.
    pub fn observe(&self, ev: &Event) {
        match ev {
            Event::Ready { after_ms, .. } => {
                self.ready_seconds.observe(*after_ms as f64 / 1000.0);
            }
            Event::Drained { drain_ms, .. } => {
                self.drain_seconds.observe(*drain_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }

    /// Publishes the present state for the next scrape.
    pub fn publish(&self, present: Present) {
        if let Ok(mut p) = self.present.lock() {
            *p = present;
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, scrape: Arc<Scrape>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: try again later, without spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let scrape = scrape.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&scrape, &req)) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A scraper that stalls is let go.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
            drop(permit);
        });
    }
}

fn answer<B>(scrape: &Scrape, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n".into());
    }
    let present = scrape.present.lock().map(|p| p.clone()).unwrap_or_default();
    scrape.generation.set(present.generation as i64);
    scrape.draining.set(present.draining as i64);
    scrape.rss.clear();
    for (slot, pid) in &present.workers {
        if let Some(rss) = crate::supervisor::rss_bytes(*pid) {
            scrape
                .rss
                .get_or_create(&WorkerLabel { worker: *slot })
                .set(rss as i64);
        }
    }
    // Counters of totals kept elsewhere: moved up to them.
    let up = |c: &Counter, total: u64| {
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    };
    up(&scrape.log_dropped, present.log_lines_dropped);
    up(&scrape.notify_dropped, present.notify_dropped);
    let c = present.counters;
    for (result, total) in [
        ("ready", c.upgrades_ready),
        ("failed", c.upgrades_failed),
        ("rolled_back", c.rollbacks),
    ] {
        up(
            &scrape.upgrades.get_or_create(&ResultLabel { result }),
            total,
        );
    }
    up(&scrape.crash_restarts, c.crash_restarts);
    up(&scrape.worker_restarts, c.worker_restarts);
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &scrape.registry) {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}
