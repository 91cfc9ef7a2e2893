//! Recipe: hyper 1 with hyper-util's `GracefulShutdown` under hotsup.
//!
//! ```text
//! cargo run -p hotsup-child --features tokio --example recipe_hyper [ADDR]  # standalone, default 127.0.0.1:8080
//! hotsup run -l http=127.0.0.1:8080 -- target/debug/examples/recipe_hyper
//! hotsup run --fds systemd -l http=127.0.0.1:8080 -- target/debug/examples/recipe_hyper
//! ```
//!
//! `GET /` answers `pid=<pid> generation=<g>`; `?sleep_ms=N` (at most
//! 10000) delays the answer. The accept loop follows the lifecycle; each
//! connection is watched by `GracefulShutdown`, which after the drain's
//! grace period (responses say `Connection: close`) finishes the requests
//! in flight and closes the idle connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let listener = hotsup_child::first_tcp().or_bind(addr).tokio()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "recipe_hyper listening on {} pid={pid}",
        listener.local_addr()?
    );
    let body = Bytes::from(format!("pid={pid} generation={generation}\n"));
    let closing = Arc::new(AtomicBool::new(false));
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    let graceful = GracefulShutdown::new();
    while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (body, closing) = (body.clone(), Arc::clone(&closing));
        let service = service_fn(move |req| respond(req, body.clone(), Arc::clone(&closing)));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let in_flight = lifecycle.in_flight();
        tokio::spawn(async move {
            let _ = connection.await;
            drop(in_flight);
        });
    }
    drop(listener);

    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    closing.store(true, Ordering::SeqCst);
    let grace = Duration::from_secs(1).min((leave_by - Instant::now()) / 4);
    let _ = tokio::time::timeout(grace, lifecycle.idle()).await;
    if tokio::time::timeout_at(leave_by.into(), graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("recipe_hyper: connections still open at the deadline");
    }
    Ok(())
}

async fn respond(
    req: Request<Incoming>,
    body: Bytes,
    closing: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = sleep_ms(req.uri().query()) {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    }
    let mut response = Response::new(Full::new(body));
    if closing.load(Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

fn sleep_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse().ok())
}
