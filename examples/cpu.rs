//! A CPU-bound HTTP/1.1 server (hyper 1) on one thread per process, for
//! measuring worker pools (`hotsup run --workers N`): one process uses at
//! most one core, so more cores need more workers.
//!
//! ```text
//! cargo run --example cpu [ADDR]               # standalone, default 127.0.0.1:8080
//! hotsup run --workers 4 --listen 127.0.0.1:8080 -- target/release/examples/cpu
//! ```
//!
//! `GET /work?ms=N` burns N ms (at most 1000) of this thread's CPU time
//! before it answers, holding the thread as a CPU-bound request does;
//! anything else answers at once. Every response is `200 OK` with the body
//! `pid=<pid> generation=<g> worker=<w>\n`.
//!
//! It follows the supervisor's lifecycle as `examples/http` does: no
//! accepting while paused, and on a drain it stops accepting and lets the
//! open connections finish (hyper-util's `GracefulShutdown`) until shortly
//! before the deadline.

use std::convert::Infallible;
use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustix::time::{ClockId, clock_gettime};

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Most CPU one request may burn.
const MAX_WORK: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = hotsup_child::first_tcp().or_bind(addr).tokio()?;
    let lifecycle = hotsup_child::lifecycle();
    let body = Bytes::from(format!(
        "pid={} generation={} worker={}\n",
        std::process::id(),
        hotsup_child::generation().unwrap_or(0),
        std::env::var("HOTSUP_WORKER").unwrap_or_else(|_| "0".into())
    ));
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    let graceful = GracefulShutdown::new();
    while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
        let Ok((stream, _)) = accepted else {
            // For example EMFILE: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let body = body.clone();
        let service = service_fn(move |req| respond(req, body.clone()));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let in_flight = lifecycle.in_flight();
        tokio::spawn(async move {
            // Clients that vanish mid-request are routine.
            let _ = connection.await;
            drop(in_flight);
        });
    }
    drop(listener);
    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    let _ = tokio::time::timeout_at(leave_by.into(), graceful.shutdown()).await;
    Ok(())
}

async fn respond(req: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/work" {
        burn(work(req.uri().query()).min(MAX_WORK));
    }
    let length = body.len();
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// `ms=N` of the query.
fn work(query: Option<&str>) -> Duration {
    let ms = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

/// Spins until this thread has used `d` of CPU time: time it spends
/// preempted does not count, so a request costs the same CPU however many
/// processes share the cores.
fn burn(d: Duration) {
    let cpu = || {
        let t = clock_gettime(ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let until = cpu() + d;
    while cpu() < until {
        std::hint::spin_loop();
    }
}
