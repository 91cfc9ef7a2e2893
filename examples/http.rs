//! An HTTP/1.1 server (hyper 1) that upgrades without dropping a request.
//!
//! ```text
//! cargo run --example http [ADDR]              # standalone, default 127.0.0.1:8080
//! hotsup run --listen 127.0.0.1:8080 -- target/debug/examples/http
//! ```
//!
//! Every response is `200 OK` with the body `pid=<pid> generation=<g>\n`
//! (`g` is 0 standalone). `?sleep_ms=N` (at most 10000) delays the response,
//! to have requests in flight across an upgrade.
//!
//! It follows the supervisor's lifecycle: it accepts while serving, accepts
//! nothing while paused (protocol version 2; open connections are served
//! as usual), and drains (on `DRAIN`, `SIGTERM` or `SIGINT`) in three
//! steps:
//!
//! 1. Stop accepting at once; the next generation accepts from the same
//!    socket.
//! 2. For a grace period of min(1 s, time left / 4), keep serving the open
//!    keep-alive connections, but answer every request with
//!    `Connection: close`. A busy client thus learns to reconnect (to the new
//!    generation) from a response, instead of racing a close.
//! 3. Shut the remaining connections down with hyper-util's
//!    `GracefulShutdown` (requests in flight finish, idle connections
//!    close), until shortly before the deadline, and exit 0.

/// One line on stderr in one write(2): `eprintln!` writes a formatted line
/// in pieces, and the stderr an app shares with hotsup would get hotsup's
/// log lines in between them.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

use std::convert::Infallible;
use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Longest `?sleep_ms=`.
const MAX_SLEEP_MS: u64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = hotsup_child::first_tcp().or_bind(addr).tokio()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "http example listening on {} pid={pid} generation={generation}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    let body = Bytes::from(format!("pid={pid} generation={generation}\n"));
    // Set during the grace period: every response says `Connection: close`.
    let closing = Arc::new(AtomicBool::new(false));
    let graceful = GracefulShutdown::new();
    while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // For example EMFILE: back off instead of spinning.
                say!("http example: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (body, closing) = (body.clone(), Arc::clone(&closing));
        let service = service_fn(move |req| respond(req, body.clone(), Arc::clone(&closing)));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let in_flight = lifecycle.in_flight();
        tokio::spawn(async move {
            report(connection.await);
            drop(in_flight);
        });
    }
    drop(listener);

    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    let grace = Duration::from_secs(1).min(leave_by.saturating_duration_since(Instant::now()) / 4);
    say!(
        "http example pid={pid}: draining {} connections, grace {grace:?}",
        lifecycle.in_flight_count()
    );
    closing.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(grace, lifecycle.idle()).await;
    if tokio::time::timeout_at(leave_by.into(), graceful.shutdown())
        .await
        .is_err()
    {
        say!(
            "http example pid={pid}: {} connections still open at the deadline",
            lifecycle.in_flight_count()
        );
    }
    Ok(())
}

fn report(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Clients that vanish mid-request are routine.
        if !e.is_incomplete_message() && !e.is_canceled() {
            say!("http example: connection: {e}");
        }
    }
}

async fn respond(
    req: Request<Incoming>,
    body: Bytes,
    closing: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = sleep_ms(req.uri().query()) {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS))).await;
    }
    let length = body.len();
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    // Checked after the work, so a request in flight when the drain starts
    // is answered with it too.
    if closing.load(Ordering::SeqCst) {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

fn sleep_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "sleep_ms")
        .and_then(|(_, v)| v.parse().ok())
}
