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
//! Draining (on `DRAIN`, `SIGTERM` or `SIGINT`) goes in three steps:
//!
//! 1. Stop accepting at once; the next generation accepts from the same
//!    socket.
//! 2. For a grace period of min(1 s, time left / 4), keep serving the open
//!    keep-alive connections, but answer every request with
//!    `Connection: close`. A busy client thus learns to reconnect (to the new
//!    generation) from a response, instead of racing a close.
//! 3. Shut every remaining connection down gracefully (requests in flight
//!    finish, idle connections close), wait for them until shortly before the
//!    deadline, and exit 0.

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
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Longest `?sleep_ms=`.
const MAX_SLEEP_MS: u64 = 10_000;

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    // The handoff runs before the runtime starts its threads (it edits the
    // environment), and so does the signal handling of the drain handle.
    hotsup_child::init()?;
    let drain = hotsup_child::drain();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(&addr, drain))?;
    // Connections still open at the deadline are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

async fn serve(addr: &str, drain: hotsup_child::Drain) -> Result<(), Box<dyn Error>> {
    let listener = hotsup_child::tokio::inherit_listener(addr)?;
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "http example listening on {} pid={pid} generation={generation}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    hotsup_child::ready()?;

    let body = Bytes::from(format!("pid={pid} generation={generation}\n"));
    // Set during the grace period: every response says `Connection: close`.
    let closing = Arc::new(AtomicBool::new(false));
    // Set after it: every connection shuts down gracefully.
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = drain.wait_async() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        body.clone(),
                        Arc::clone(&closing),
                        shutdown_rx.clone(),
                    ));
                }
                Err(e) => {
                    // For example EMFILE: back off instead of spinning.
                    say!("http example: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);

    let now = Instant::now();
    let deadline = drain.deadline().unwrap_or(now + DEFAULT_DRAIN);
    let left = deadline.saturating_duration_since(now);
    // Exit a little before the deadline, so that the supervisor sees a clean
    // exit rather than having to kill the process group.
    let leave_by = deadline - (left / 10).min(Duration::from_millis(200));
    let grace = Duration::from_secs(1).min(left / 4);
    say!(
        "http example pid={pid}: draining {} connections, grace {grace:?}",
        connections.len()
    );

    closing.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(grace, wait_all(&mut connections)).await;
    let _ = shutdown.send(true);
    let finished = tokio::time::timeout_at(leave_by.into(), wait_all(&mut connections)).await;
    if finished.is_err() {
        say!(
            "http example pid={pid}: {} connections still open at the deadline",
            connections.len()
        );
    }
    Ok(())
}

async fn wait_all(connections: &mut JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    body: Bytes,
    closing: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| respond(req, body.clone(), Arc::clone(&closing)));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return report(result),
        // An error means the sender is gone: shut down as well.
        _ = shutdown.wait_for(|shut| *shut) => {}
    }
    // Finishes the request in flight, if any, then closes.
    connection.as_mut().graceful_shutdown();
    report(connection.await);
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
