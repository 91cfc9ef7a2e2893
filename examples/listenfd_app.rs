//! An HTTP/1.1 server with no hotsup code in it: it takes its listener with
//! the `listenfd` crate, as from systemd socket activation, and reports no
//! readiness at all.
//!
//! ```text
//! cargo run --example listenfd_app [ADDR]      # standalone, default 127.0.0.1:8080
//! hotsup run --fds systemd --ready delay:300ms --listen 127.0.0.1:8080 -- target/debug/examples/listenfd_app
//! ```
//!
//! Under `hotsup run --fds systemd` (or systemd, or `systemfd`) the listener
//! is fd 3 (`LISTEN_FDS`); without one it binds `ADDR`. Since it never says
//! it is ready, run it under hotsup with `--ready delay:<time>` or
//! `--ready exec`. It drains on `SIGTERM`, hotsup's default `--drain-signal`
//! in that mode. Serving and draining are described in
//! `examples/common/http_server.rs`.

use std::error::Error;
use std::io::Write;

#[path = "common/http_server.rs"]
mod http_server;

fn main() -> Result<(), Box<dyn Error>> {
    // First thing, before any thread exists: listenfd removes LISTEN_FDS and
    // LISTEN_PID from the environment.
    let mut fds = listenfd::ListenFd::from_env();
    let listener = match fds.take_tcp_listener(0)? {
        Some(listener) => listener,
        None => {
            let addr = std::env::args()
                .nth(1)
                .unwrap_or_else(|| "127.0.0.1:8080".into());
            std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot bind {addr}: {e}"))?
        }
    };
    println!(
        "listenfd_app listening on {} pid={}",
        listener.local_addr()?,
        std::process::id()
    );
    std::io::stdout().flush()?;
    http_server::run(listener, "listenfd_app", None)
}
