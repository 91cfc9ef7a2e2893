//! Recipe: axum under hotsup.
//!
//! ```text
//! cargo run -p hotsup-child --features tokio --example recipe_axum [ADDR]  # standalone, default 127.0.0.1:8080
//! hotsup run -l http=127.0.0.1:8080 -- target/debug/examples/recipe_axum
//! hotsup run --fds systemd -l http=127.0.0.1:8080 -- target/debug/examples/recipe_axum
//! ```
//!
//! `GET /` answers `pid=<pid> generation=<g>`; `?sleep_ms=N` (at most
//! 10000) delays the answer. The listener is wrapped so that axum's accept
//! loop follows the lifecycle (nothing accepted while paused), and
//! `with_graceful_shutdown` gets the drain, after a grace period in which
//! every response says `Connection: close`, so that busy keep-alive clients
//! move to the next generation without racing a close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONNECTION, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use hotsup_child::Lifecycle;
use tokio::net::{TcpListener, TcpStream};

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// axum's listener, accepting only while the lifecycle says so.
struct Pausable {
    listener: TcpListener,
    lifecycle: Lifecycle,
}

impl axum::serve::Listener for Pausable {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.lifecycle.accept_async(|| self.listener.accept()).await {
                Some(Ok(accepted)) => return accepted,
                Some(Err(e)) => {
                    eprintln!("recipe_axum: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Draining: accept nothing more; the graceful shutdown
                // below ends the server.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

struct App {
    body: String,
    closing: AtomicBool,
}

async fn hello(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> impl IntoResponse {
    if let Some(ms) = sleep_ms(query.as_deref()) {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    }
    let mut response = app.body.clone().into_response();
    if app.closing.load(Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let listener = hotsup_child::first_tcp().or_bind(addr).tokio()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "recipe_axum listening on {} pid={pid}",
        listener.local_addr()?
    );

    let app = Arc::new(App {
        body: format!("pid={pid} generation={generation}\n"),
        closing: AtomicBool::new(false),
    });
    let router = Router::new()
        .route("/", get(hello))
        .with_state(Arc::clone(&app));
    let drained = {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle.drained().await;
            app.closing.store(true, Ordering::SeqCst);
            let left = lifecycle.exit_by(DEFAULT_DRAIN) - Instant::now();
            tokio::time::sleep(Duration::from_secs(1).min(left / 4)).await;
        }
    };
    let listener = Pausable {
        listener,
        lifecycle: lifecycle.clone(),
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(drained);

    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;
    // The graceful shutdown waits for every connection; the deadline does
    // not.
    tokio::select! {
        served = server => served?,
        () = async {
            lifecycle.drained().await;
            tokio::time::sleep_until(lifecycle.exit_by(DEFAULT_DRAIN).into()).await;
        } => eprintln!("recipe_axum: connections still open at the deadline"),
    }
    Ok(())
}

fn sleep_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse().ok())
}
