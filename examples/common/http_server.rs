//! The HTTP/1.1 server shared by `listenfd_app` and `notify_app`: examples
//! of apps with no hotsup code in them, which get their listener the way
//! systemd socket activation passes it and drain on `SIGTERM`.
//!
//! Every response is `200 OK` with the body `pid=<pid> generation=<g>\n`,
//! where `g` is `HOTSUP_GENERATION` (set by `hotsup run --fds systemd`, read
//! for information only) or 0. `?sleep_ms=N` (at most 10000) delays the
//! response.
//!
//! On `SIGTERM` or `SIGINT` the server drains:
//!
//! 1. It stops accepting at once (the next generation accepts from the same
//!    socket).
//! 2. For a grace period of 500 ms it keeps serving the open keep-alive
//!    connections, answering every request with `Connection: close`, so a
//!    busy client learns from a response to reconnect (to the new
//!    generation) instead of racing a close.
//! 3. It shuts every remaining connection down gracefully (requests in
//!    flight finish, idle connections close), waits for them at most 10 s,
//!    and exits 0.

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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long open connections are still served, with `Connection: close`,
/// after the drain starts.
const GRACE: Duration = Duration::from_millis(500);
/// How long requests in flight may take after the grace period.
const IN_FLIGHT: Duration = Duration::from_secs(10);
/// Longest `?sleep_ms=`.
const MAX_SLEEP_MS: u64 = 10_000;

/// Readiness reporting: called once, `delay` after the server started
/// serving, unless it is draining by then.
pub struct Ready {
    pub delay: Duration,
    pub report: Box<dyn FnOnce() + Send>,
}

/// The generation hotsup passes in `HOTSUP_GENERATION`, or 0.
pub fn generation() -> u64 {
    std::env::var("HOTSUP_GENERATION")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// Serves HTTP on `listener` until `SIGTERM` or `SIGINT`, then drains and
/// returns. `app` names the program in log lines.
pub fn run(
    listener: std::net::TcpListener,
    app: &'static str,
    ready: Option<Ready>,
) -> Result<(), Box<dyn Error>> {
    // tokio's `from_std` requires a nonblocking socket; an inherited one may
    // be in either mode (the flag is shared with the supervisor).
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listener, app, ready))?;
    // Connections still open after the wait are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

async fn serve(
    listener: std::net::TcpListener,
    app: &'static str,
    ready: Option<Ready>,
) -> Result<(), Box<dyn Error>> {
    // Before anything else: from here on the signals drain instead of kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let pid = std::process::id();
    let body = Bytes::from(format!("pid={pid} generation={}\n", generation()));

    let ready = ready.map(|Ready { delay, report }| {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Reporting blocks briefly (a datagram, a print).
            let _ = tokio::task::spawn_blocking(report).await;
        })
    });

    // Set during the grace period: every response says `Connection: close`.
    let closing = Arc::new(AtomicBool::new(false));
    // Set after it: every connection shuts down gracefully.
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
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
                    say!("{app}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if let Some(ready) = ready {
        // Draining before it reported ready: it never will.
        ready.abort();
    }
    say!(
        "{app} pid={pid}: draining {} connections",
        connections.len()
    );

    closing.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(GRACE, wait_all(&mut connections)).await;
    let _ = shutdown.send(true);
    if tokio::time::timeout(IN_FLIGHT, wait_all(&mut connections))
        .await
        .is_err()
    {
        say!(
            "{app} pid={pid}: {} connections still open after {IN_FLIGHT:?}",
            connections.len()
        );
    }
    say!("{app} pid={pid}: drained");
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
            say!("connection: {e}");
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
