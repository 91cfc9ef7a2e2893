//! An HTTP/1.1 server with no hotsup code in it: it takes its listener with
//! `sd_notify::listen_fds()`, as from systemd socket activation, and reports
//! readiness with `sd_notify::notify(READY=1)`, as a systemd `Type=notify`
//! service does.
//!
//! ```text
//! cargo run --example notify_app -- [--ready-delay-ms N] [ADDR]   # default 127.0.0.1:8080
//! hotsup run --fds systemd --listen 127.0.0.1:8080 -- target/debug/examples/notify_app
//! ```
//!
//! `sd_notify::listen_fds()` only returns the passed sockets when
//! `LISTEN_PID` is this process's pid, as many socket-activated programs
//! check; otherwise it binds `ADDR`. It serves at once, and sends `READY=1`
//! to `NOTIFY_SOCKET` (if set) `--ready-delay-ms` milliseconds later
//! (default 0). It drains on `SIGTERM`. Serving and draining are described
//! in `examples/common/http_server.rs`.

use std::error::Error;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;

#[path = "common/http_server.rs"]
mod http_server;

fn main() -> Result<(), Box<dyn Error>> {
    let pid = std::process::id();
    // First thing, before any thread exists.
    let listen_pid_ok = std::env::var("LISTEN_PID").is_ok_and(|p| p == pid.to_string());
    let inherited = sd_notify::listen_fds()?.next();

    let mut ready_delay = Duration::ZERO;
    let mut addr = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--ready-delay-ms" {
            let ms = args.next().ok_or("--ready-delay-ms needs a value")?;
            ready_delay = Duration::from_millis(ms.parse()?);
        } else {
            addr = arg;
        }
    }

    let listener = match inherited {
        // SAFETY: `listen_fds` returned this fd: it is open, was passed to
        // this process (LISTEN_PID matched) for it to own, and nothing else
        // in the program uses it. It was made close-on-exec.
        Some(fd) => unsafe { std::net::TcpListener::from_raw_fd(fd) },
        None => {
            std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot bind {addr}: {e}"))?
        }
    };
    println!(
        "notify_app listening on {} pid={pid} listen_pid_ok={listen_pid_ok}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;

    let report = move || {
        // Sent from this process, so the supervisor attributes it to it.
        // Does nothing when NOTIFY_SOCKET is unset.
        if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
            eprintln!("notify_app: cannot send READY=1: {e}");
        }
        println!("notify_app ready pid={pid}");
        let _ = std::io::stdout().flush();
    };
    let ready = http_server::Ready {
        delay: ready_delay,
        report: Box::new(report),
    };
    http_server::run(listener, "notify_app", Some(ready))
}
