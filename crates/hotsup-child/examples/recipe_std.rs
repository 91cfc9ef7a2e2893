//! Recipe: a plain std server, blocking threads, no async runtime.
//!
//! ```text
//! cargo run -p hotsup-child --example recipe_std [ADDR]          # standalone, default 127.0.0.1:8080
//! hotsup run -l http=127.0.0.1:8080 -- target/debug/examples/recipe_std
//! hotsup run --fds systemd -l http=127.0.0.1:8080 -- target/debug/examples/recipe_std
//! ```
//!
//! A minimal HTTP/1.1 server (GET, keep-alive) answering
//! `pid=<pid> generation=<g>`; `?sleep_ms=N` (at most 10000) delays the
//! answer. One thread accepts with `Lifecycle::accept` (nothing while
//! paused, `None` once draining); one thread per connection, counted with
//! `Lifecycle::in_flight`. On drain: a grace period in which responses say
//! `Connection: close`, then idle connections are closed and the requests
//! in flight waited for, until shortly before the deadline.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Drain budget when the drain has no deadline (a signal).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

struct Shared {
    body: String,
    /// Grace period: answer with `Connection: close`.
    closing: AtomicBool,
    /// After it: close idle connections.
    closed: AtomicBool,
}

fn main() -> Result<(), hotsup_child::Error> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    // Nonblocking, so that the accept loop notices a pause or a drain.
    let listener = hotsup_child::first_tcp().or_bind(addr).nonblocking()?;
    let lifecycle = hotsup_child::lifecycle();
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);
    if let Ok(local) = listener.local_addr() {
        println!("recipe_std listening on {local} pid={pid}");
    }
    let shared = Arc::new(Shared {
        body: format!("pid={pid} generation={generation}\n"),
        closing: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    hotsup_child::enable_pause()?;
    hotsup_child::ready()?;

    while let Some(accepted) = lifecycle.accept(&listener) {
        let Ok((conn, _)) = accepted else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let in_flight = lifecycle.in_flight();
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            serve(conn, &shared);
            drop(in_flight);
        });
    }
    drop(listener);

    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    shared.closing.store(true, Ordering::SeqCst);
    let grace = Duration::from_secs(1).min((leave_by - Instant::now()) / 4);
    if !lifecycle.wait_idle_until(Instant::now() + grace) {
        shared.closed.store(true, Ordering::SeqCst);
        if !lifecycle.wait_idle_until(leave_by) {
            eprintln!("recipe_std: connections still open at the deadline");
        }
    }
    Ok(())
}

/// Serves one keep-alive connection until the client or the drain ends it.
fn serve(conn: TcpStream, shared: &Shared) {
    // Wakes idle reads up, so that the drain can close them.
    if conn
        .set_read_timeout(Some(Duration::from_millis(50)))
        .is_err()
    {
        return;
    }
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    loop {
        match reader.read_line(&mut head) {
            Ok(0) => return,
            Ok(_) if head.ends_with("\r\n\r\n") => {}
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Idle (nothing of a request read yet) after the grace.
                if head.is_empty() && shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let request = std::mem::take(&mut head);
        let Some(target) = request.split(' ').nth(1) else {
            return;
        };
        if let Some(ms) = sleep_ms(target) {
            thread::sleep(Duration::from_millis(ms.min(10_000)));
        }
        let close = shared.closing.load(Ordering::SeqCst)
            || request.to_ascii_lowercase().contains("connection: close");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{}",
            shared.body.len(),
            if close { "Connection: close\r\n" } else { "" },
            shared.body
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn sleep_ms(target: &str) -> Option<u64> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse().ok())
}
