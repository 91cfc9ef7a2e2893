//! A TCP echo server on tokio that drains gracefully.
//!
//! ```text
//! cargo run --example echo [ADDR]              # standalone, default 127.0.0.1:7000
//! hotsup run --listen 127.0.0.1:7000 -- target/debug/examples/echo
//! ```
//!
//! On drain (`DRAIN`, `SIGTERM` or `SIGINT`) it stops accepting at once, lets
//! the open connections run until their clients close them, at most until
//! shortly before the drain deadline, and exits 0.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
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
        "echo example listening on {} pid={pid} generation={generation}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    hotsup_child::ready()?;

    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = drain.wait_async() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(echo(stream));
                }
                Err(e) => {
                    // For example EMFILE: back off instead of spinning.
                    eprintln!("echo example: accept: {e}");
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
    eprintln!(
        "echo example pid={pid}: draining, {} connections open",
        connections.len()
    );
    let all_closed = tokio::time::timeout_at(leave_by.into(), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if all_closed.is_err() {
        eprintln!(
            "echo example pid={pid}: closing {} connections at the deadline",
            connections.len()
        );
    }
    Ok(())
}

async fn echo(mut stream: TcpStream) {
    let (mut reader, mut writer) = stream.split();
    if let Err(e) = tokio::io::copy(&mut reader, &mut writer).await {
        eprintln!("echo example: connection: {e}");
    }
}
