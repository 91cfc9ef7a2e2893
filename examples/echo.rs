//! A TCP echo server on tokio that pauses and drains gracefully.
//!
//! ```text
//! cargo run --example echo [ADDR]              # standalone, default 127.0.0.1:7000
//! hotsup run --listen 127.0.0.1:7000 -- target/debug/examples/echo
//! ```
//!
//! While paused (protocol version 2) it accepts nothing and keeps echoing on
//! the open connections. On drain (`DRAIN`, `SIGTERM` or `SIGINT`) it stops
//! accepting at once, lets the open connections run until their clients
//! close them, at most until shortly before the drain deadline, and exits 0.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use tokio::net::TcpStream;

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let listener = hotsup_child::first_tcp().or_bind(addr).tokio()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    println!(
        "echo example listening on {} pid={pid} generation={generation}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
        match accepted {
            Ok((stream, _)) => {
                let in_flight = lifecycle.in_flight();
                tokio::spawn(async move {
                    echo(stream).await;
                    drop(in_flight);
                });
            }
            Err(e) => {
                // For example EMFILE: back off instead of spinning.
                eprintln!("echo example: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);

    eprintln!(
        "echo example pid={pid}: draining, {} connections open",
        lifecycle.in_flight_count()
    );
    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    if tokio::time::timeout_at(leave_by.into(), lifecycle.idle())
        .await
        .is_err()
    {
        eprintln!(
            "echo example pid={pid}: closing {} connections at the deadline",
            lifecycle.in_flight_count()
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
