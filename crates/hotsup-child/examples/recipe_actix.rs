//! Recipe: actix-web under hotsup.
//!
//! ```text
//! cargo run -p hotsup-child --example recipe_actix [ADDR]        # standalone, default 127.0.0.1:8080
//! hotsup run -l http=127.0.0.1:8080 -- target/debug/examples/recipe_actix
//! hotsup run --fds systemd -l http=127.0.0.1:8080 -- target/debug/examples/recipe_actix
//! ```
//!
//! `GET /` answers `pid=<pid> generation=<g>`; `?sleep_ms=N` (at most
//! 10000) delays the answer. actix runs its own accept loop, so the
//! lifecycle drives its `ServerHandle`: `pause()` and `resume()` follow
//! `PAUSE` and `RESUME`; a drain first answers with `Connection: close`
//! for a grace period, then stops the server gracefully. actix's own signal
//! handling is off: the lifecycle turns `SIGTERM`/`SIGINT` into the drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hotsup_child::State;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

struct Shared {
    body: String,
    closing: AtomicBool,
}

async fn hello(req: HttpRequest, app: web::Data<Shared>) -> HttpResponse {
    if let Some(ms) = sleep_ms(req.query_string()) {
        actix_web::rt::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    }
    let mut response = HttpResponse::Ok();
    if app.closing.load(Ordering::SeqCst) {
        response.force_close();
    }
    response.body(app.body.clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    actix_web::rt::System::new().block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    // actix (mio) wants the listener nonblocking, and now changes nothing.
    let listener = hotsup_child::first_tcp().or_bind(addr).nonblocking()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "recipe_actix listening on {} pid={pid}",
        listener.local_addr()?
    );

    let shared = web::Data::new(Shared {
        body: format!("pid={pid} generation={generation}\n"),
        closing: AtomicBool::new(false),
    });
    let app_data = shared.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_data.clone())
            .default_service(web::to(hello))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(DEFAULT_DRAIN.as_secs())
    .listen(listener)?
    .run();
    let handle = server.handle();
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    let follow = async move {
        let mut seen = State::Serving;
        loop {
            let changed = lifecycle.changed();
            match lifecycle.state() {
                State::Draining => break,
                State::Paused if seen != State::Paused => handle.pause().await,
                State::Serving if seen != State::Serving => handle.resume().await,
                _ => {}
            }
            seen = lifecycle.state();
            changed.await;
        }
        let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
        handle.pause().await;
        shared.closing.store(true, Ordering::SeqCst);
        let grace = Duration::from_secs(1).min((leave_by - Instant::now()) / 4);
        actix_web::rt::time::sleep(grace).await;
        // Graceful: requests in flight finish, bounded by the deadline.
        actix_web::rt::spawn(handle.stop(true));
        actix_web::rt::time::sleep_until(leave_by.into()).await;
    };
    // actix runs on tokio: the deadline bounds the graceful stop.
    tokio::select! {
        served = server => served?,
        () = follow => eprintln!("recipe_actix: connections still open at the deadline"),
    }
    Ok(())
}

fn sleep_ms(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse().ok())
}
