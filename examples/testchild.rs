//! A deliberately controllable server for hotsup's end-to-end tests.
//!
//! It uses only std threads and the blocking `hotsup_child` API.
//!
//! ```text
//! testchild [--mode-file PATH] [--ready-delay-ms N] [--crash-after-ms N]
//!           [--unhealthy-after-ms N] [--protocol 1|2] [--dump-listeners]
//!           [--http-on NAME] [--listen ADDR]
//! ```
//!
//! `--protocol 2` (the default) answers a version 2 supervisor's `HELLO`
//! (`enable_pause`) before `ready()` in the serving modes and honours
//! `PAUSE`/`RESUME` on every listener: while paused it accepts (and reads
//! UDP datagrams) no more, but keeps serving its open connections.
//! `--protocol 1` behaves as a version 1 child: no answer, no pause.
//! `--unhealthy-after-ms N` sends `UNHEALTHY testchild unhealthy` N ms after
//! `ready()` (a status line when version 2 was not agreed).
//!
//! The mode is read from `--mode-file` at start-up (trimmed; `serve` when the
//! option is absent, the file missing or empty):
//!
//! - `serve`: serve HTTP/1.1 on the first TCP listener, call `ready()`, drain
//!   gracefully when asked.
//! - `crash`: exit with code 3 right away, before `ready()`.
//! - `never-ready`: take the sockets, never call `ready()`, sleep until killed.
//! - `ignore-drain`: serve and become ready, but ignore `DRAIN`, `SIGTERM` and
//!   `SIGINT`; also start a grandchild in the same process group that sleeps
//!   forever (`testchild grandchild pid=<pid>` on stdout).
//! - `garbage`: send `NONSENSE \xff\xfe` on the channel instead of `READY`,
//!   then sleep until killed.
//! - `exit-after-ready`: become ready, exit 0 200 ms later.
//! - `crash-after-ready`: become ready, serve, exit with code 4 after
//!   `--crash-after-ms` (default 500).
//!
//! `--dump-listeners` prints `listener <index> <name> <kind> <address>` per
//! inherited listener and answers on every one of them instead of serving
//! HTTP: TCP and Unix connections get `<name>\n`, UDP datagrams are echoed
//! prefixed with `<name> `. With `--http-on NAME` as well, the TCP
//! listener NAME serves HTTP as in `serve` instead.
//!
//! Stdout lines, each flushed at once: `testchild ready pid=<pid>
//! generation=<g>` after `ready()`, `testchild paused pid=<pid>` and
//! `testchild resumed pid=<pid>` when the supervisor pauses and resumes it,
//! `testchild unhealthy pid=<pid> sent=<true|false>` after reporting itself
//! unhealthy (`sent`: as `UNHEALTHY`), `testchild draining pid=<pid>` when
//! draining. Standalone (generation 0) the HTTP server binds `--listen`
//! (default `127.0.0.1:0`) and prints the address on stderr.
//!
//! HTTP responses are `200 OK` with the body `pid=<pid> generation=<g>\n`; a
//! query `?sleep_ms=N` (at most 10000) delays the response. On drain the
//! server stops accepting, finishes requests in flight, answers further
//! requests on open connections with `Connection: close`, closes idle
//! connections after a grace period of min(1 s, time left / 4), and exits 0
//! once every connection is closed or the deadline is near.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::BorrowedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hotsup_child::{Accept, InFlight, Kind, Lifecycle, State};

/// How often accept loops and idle connections look at the drain state.
const POLL: Duration = Duration::from_millis(10);
/// How long a drain without a deadline (a signal) may take.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Longest `?sleep_ms=`.
const MAX_SLEEP_MS: u64 = 10_000;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Crash,
    NeverReady,
    IgnoreDrain,
    Garbage,
    ExitAfterReady,
    CrashAfterReady,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "" | "serve" => Mode::Serve,
            "crash" => Mode::Crash,
            "never-ready" => Mode::NeverReady,
            "ignore-drain" => Mode::IgnoreDrain,
            "garbage" => Mode::Garbage,
            "exit-after-ready" => Mode::ExitAfterReady,
            "crash-after-ready" => Mode::CrashAfterReady,
            _ => return None,
        })
    }
}

struct Args {
    mode_file: Option<PathBuf>,
    ready_delay: Duration,
    crash_after: Duration,
    unhealthy_after: Option<Duration>,
    protocol: u32,
    dump_listeners: bool,
    /// With `dump_listeners`: the TCP listener that serves HTTP.
    http_on: Option<String>,
    grandchild: bool,
    listen: String,
}

fn usage(msg: &str) -> ! {
    eprintln!("testchild: {msg}");
    eprintln!(
        "usage: testchild [--mode-file PATH] [--ready-delay-ms N] [--crash-after-ms N] \
         [--unhealthy-after-ms N] [--protocol 1|2] [--dump-listeners] [--listen ADDR]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        mode_file: None,
        ready_delay: Duration::ZERO,
        crash_after: Duration::from_millis(500),
        unhealthy_after: None,
        protocol: 2,
        dump_listeners: false,
        http_on: None,
        grandchild: false,
        listen: "127.0.0.1:0".into(),
    };
    let mut it = std::env::args().skip(1);
    let millis = |flag: &str, value: Option<String>| -> Duration {
        match value.as_deref().map(str::parse) {
            Some(Ok(ms)) => Duration::from_millis(ms),
            _ => usage(&format!("{flag} needs a number of milliseconds")),
        }
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode-file" => match it.next() {
                Some(path) => args.mode_file = Some(path.into()),
                None => usage("--mode-file needs a path"),
            },
            "--ready-delay-ms" => args.ready_delay = millis(&arg, it.next()),
            "--crash-after-ms" => args.crash_after = millis(&arg, it.next()),
            "--unhealthy-after-ms" => args.unhealthy_after = Some(millis(&arg, it.next())),
            "--protocol" => match it.next().as_deref() {
                Some("1") => args.protocol = 1,
                Some("2") => args.protocol = 2,
                _ => usage("--protocol needs 1 or 2"),
            },
            "--dump-listeners" => args.dump_listeners = true,
            "--http-on" => match it.next() {
                Some(name) => args.http_on = Some(name),
                None => usage("--http-on needs a listener name"),
            },
            "--grandchild" => args.grandchild = true,
            "--listen" => match it.next() {
                Some(addr) => args.listen = addr,
                None => usage("--listen needs an address"),
            },
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    args
}

fn read_mode(path: Option<&PathBuf>) -> Mode {
    let Some(path) = path else {
        return Mode::Serve;
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Mode::Serve,
        Err(e) => usage(&format!("cannot read {}: {e}", path.display())),
    };
    Mode::parse(text.trim()).unwrap_or_else(|| usage(&format!("unknown mode {:?}", text.trim())))
}

/// Prints one line on stdout and flushes it. Errors (a closed pipe) are
/// ignored: the tests may stop reading.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let args = parse_args();
    if args.grandchild {
        // Handling the signals (and never acting on them) makes them
        // harmless: only the process group's SIGKILL ends the grandchild.
        let _ignored = hotsup_child::lifecycle();
        sleep_forever();
    }
    let mode = read_mode(args.mode_file.as_ref());
    if mode == Mode::Crash {
        eprintln!("testchild: crashing on purpose (mode crash)");
        std::process::exit(3);
    }
    // For `garbage`: the channel's number, read before the library removes
    // the variable.
    let channel_fd: Option<i32> = std::env::var(hotsup_protocol::ENV_FD)
        .ok()
        .and_then(|v| v.parse().ok());
    if let Err(e) = hotsup_child::init() {
        eprintln!("testchild: {e}");
        std::process::exit(1);
    }
    let pid = std::process::id();
    let generation = hotsup_child::generation().unwrap_or(0);

    // The lifecycle also turns SIGTERM and SIGINT into a drain. Modes that
    // must die from those signals (never-ready, garbage) do not ask for it.
    let lifecycle = match mode {
        Mode::NeverReady | Mode::Garbage => None,
        _ => Some(hotsup_child::lifecycle()),
    };
    let server = Arc::new(Server {
        lifecycle: lifecycle.clone(),
        ignore_drain: mode == Mode::IgnoreDrain,
        idle_close_at: OnceLock::new(),
        body: format!("pid={pid} generation={generation}\n"),
    });

    // Every testchild generation takes its sockets nonblocking, so no
    // generation (not even one that never serves) can leave an older one
    // stuck in a blocking accept.
    let sockets = if args.dump_listeners {
        take_all_listeners(args.http_on.as_deref())
    } else {
        let taken = hotsup_child::first_tcp()
            .or_bind(args.listen.as_str())
            .nonblocking();
        match taken {
            Ok(l) => {
                if !hotsup_child::is_supervised()
                    && let Ok(addr) = l.local_addr()
                {
                    eprintln!("testchild: standalone, listening on {addr}");
                }
                vec![Socket::Http(l)]
            }
            Err(e) => {
                eprintln!("testchild: {e}");
                std::process::exit(1);
            }
        }
    };

    match mode {
        Mode::NeverReady => {
            let _keep = sockets;
            sleep_forever();
        }
        Mode::Garbage => {
            let _keep = sockets;
            send_garbage(channel_fd);
            sleep_forever();
        }
        _ => {}
    }

    let threads: Vec<JoinHandle<()>> = sockets
        .into_iter()
        .map(|s| {
            let server = Arc::clone(&server);
            thread::spawn(move || s.serve(&server))
        })
        .collect();

    if mode == Mode::IgnoreDrain {
        spawn_grandchild();
    }
    if !args.ready_delay.is_zero() {
        thread::sleep(args.ready_delay);
    }
    // Every accept loop follows the lifecycle (ignore-drain's too, for
    // pauses), so this child may answer version 2.
    if args.protocol >= 2
        && let Err(e) = hotsup_child::enable_pause()
    {
        eprintln!("testchild: enable_pause: {e}");
    }
    if let Some(lifecycle) = &lifecycle {
        let lifecycle = lifecycle.clone();
        thread::spawn(move || report_pauses(&lifecycle, pid));
    }
    if let Err(e) = hotsup_child::ready() {
        eprintln!("testchild: ready: {e}");
    }
    say(&format!(
        "testchild ready pid={pid} generation={generation}"
    ));
    if let Some(after) = args.unhealthy_after {
        thread::spawn(move || {
            thread::sleep(after);
            match hotsup_child::unhealthy("testchild unhealthy") {
                Ok(sent) => say(&format!("testchild unhealthy pid={pid} sent={sent}")),
                Err(e) => eprintln!("testchild: unhealthy: {e}"),
            }
        });
    }

    match mode {
        Mode::ExitAfterReady => {
            thread::sleep(Duration::from_millis(200));
            std::process::exit(0);
        }
        Mode::CrashAfterReady => {
            let after = args.crash_after;
            thread::spawn(move || {
                thread::sleep(after);
                eprintln!("testchild: crashing on purpose (mode crash-after-ready)");
                std::process::exit(4);
            });
        }
        Mode::IgnoreDrain => sleep_forever(),
        _ => {}
    }

    let Some(lifecycle) = lifecycle else {
        unreachable!("serving modes have a lifecycle");
    };
    lifecycle.wait_drain();
    say(&format!("testchild draining pid={pid}"));
    if args.dump_listeners && args.http_on.is_none() {
        // The dump answers are one-shot; nothing is in flight to finish.
        std::process::exit(0);
    }
    let now = Instant::now();
    let leave_by = lifecycle.exit_by(DEFAULT_DRAIN);
    let grace = Duration::from_secs(1).min(leave_by.saturating_duration_since(now) / 4);
    let _ = server.idle_close_at.set(now + grace);
    for t in threads {
        let _ = t.join();
    }
    lifecycle.wait_idle_until(leave_by);
    std::process::exit(0);
}

/// Prints a line whenever the supervisor pauses or resumes this process.
fn report_pauses(lifecycle: &Lifecycle, pid: u32) {
    let mut seen = State::Serving;
    loop {
        seen = match lifecycle.wait_change(seen, None) {
            State::Paused => {
                say(&format!("testchild paused pid={pid}"));
                State::Paused
            }
            State::Serving => {
                say(&format!("testchild resumed pid={pid}"));
                State::Serving
            }
            _ => return,
        };
    }
}

/// Sends bytes that are no protocol message on the channel.
fn send_garbage(channel_fd: Option<i32>) {
    let Some(fd) = channel_fd.filter(|_| hotsup_child::is_supervised()) else {
        eprintln!("testchild: mode garbage needs a supervisor");
        return;
    };
    // SAFETY: `hotsup_child::init()` succeeded, so the library owns this fd
    // (the channel) and keeps it open for the rest of the process's life; it
    // is only borrowed for one `sendmsg`.
    let channel = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Err(e) = hotsup_protocol::send(channel, b"NONSENSE \xff\xfe", &[]) {
        eprintln!("testchild: sending garbage: {e}");
    }
}

fn spawn_grandchild() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("testchild: cannot find my executable: {e}");
            return;
        }
    };
    // Same process group: that is the point.
    match Command::new(exe)
        .arg("--grandchild")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => say(&format!("testchild grandchild pid={}", child.id())),
        Err(e) => eprintln!("testchild: cannot start the grandchild: {e}"),
    }
}

/// State shared by the main thread and the serving threads.
struct Server {
    lifecycle: Option<Lifecycle>,
    /// Whether drains are ignored.
    ignore_drain: bool,
    /// When draining: from then on idle connections are closed.
    idle_close_at: OnceLock<Instant>,
    /// The response body.
    body: String,
}

impl Server {
    fn draining(&self) -> bool {
        !self.ignore_drain && self.lifecycle.as_ref().is_some_and(Lifecycle::is_draining)
    }

    /// Waits while paused; returns whether to stop (draining).
    fn hold(&self) -> bool {
        let Some(lifecycle) = &self.lifecycle else {
            return false;
        };
        loop {
            match lifecycle.state() {
                State::Paused => {
                    lifecycle.wait_change(State::Paused, Some(POLL * 10));
                }
                State::Draining => return !self.ignore_drain,
                _ => return false,
            }
        }
    }

    /// Counts one connection as in flight.
    fn in_flight(&self) -> Option<InFlight> {
        self.lifecycle.as_ref().map(Lifecycle::in_flight)
    }

    fn close_idle(&self) -> bool {
        self.idle_close_at
            .get()
            .is_some_and(|at| Instant::now() >= *at)
    }
}

/// A socket and what to do with it.
enum Socket {
    Http(TcpListener),
    TcpName(TcpListener, String),
    UnixName(UnixListener, String),
    UdpEcho(UdpSocket, String),
}

/// Takes every inherited listener and prints one line per listener.
fn take_all_listeners(http_on: Option<&str>) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for (index, l) in hotsup_child::listeners().iter().enumerate() {
        say(&format!(
            "listener {index} {} {} {}",
            l.name(),
            l.kind(),
            l.address()
        ));
        let name = l.name().to_owned();
        let taken = match l.kind() {
            Kind::Tcp if http_on == Some(name.as_str()) => {
                hotsup_child::tcp(&name).nonblocking().map(Socket::Http)
            }
            Kind::Tcp => hotsup_child::tcp(&name)
                .nonblocking()
                .map(|s| Socket::TcpName(s, name)),
            Kind::Unix => hotsup_child::unix(&name)
                .nonblocking()
                .map(|s| Socket::UnixName(s, name)),
            Kind::Udp => hotsup_child::udp(&name)
                .nonblocking()
                .map(|s| Socket::UdpEcho(s, name)),
            other => {
                eprintln!("testchild: listener kind {other} is new to me");
                continue;
            }
        };
        match taken {
            Ok(s) => sockets.push(s),
            Err(e) => {
                eprintln!("testchild: {e}");
                std::process::exit(1);
            }
        }
    }
    sockets
}

impl Socket {
    /// Serves until draining (or forever when drains are ignored).
    fn serve(self, server: &Arc<Server>) {
        match self {
            Socket::Http(l) => accept_loop(&l, server, |conn| {
                let server = Arc::clone(server);
                // Counted here, in the accept loop, not in the new thread:
                // the drain waits for the count once the accept loops are
                // joined, and must not miss a connection whose thread has
                // not run yet.
                let in_flight = server.in_flight();
                thread::spawn(move || {
                    let _in_flight = in_flight;
                    if let Err(e) = serve_http(conn, &server) {
                        eprintln!("testchild: connection: {e}");
                    }
                });
            }),
            Socket::TcpName(l, name) => accept_loop(&l, server, |conn| answer_name(conn, &name)),
            Socket::UnixName(l, name) => accept_loop(&l, server, |conn| answer_name(conn, &name)),
            Socket::UdpEcho(s, name) => udp_echo(&s, &name, server),
        }
    }
}

/// Accepts until draining, holding back while paused. With a lifecycle
/// that honours drains, `Lifecycle::accept` does it all; ignore-drain mode
/// polls by hand, since for it a drain is no reason to stop.
fn accept_loop<L: Accept>(listener: &L, server: &Server, mut handle: impl FnMut(L::Conn))
where
    L::Conn: SetBlocking,
{
    if let (Some(lifecycle), false) = (&server.lifecycle, server.ignore_drain) {
        while let Some(accepted) = lifecycle.accept(listener) {
            match accepted {
                Ok((conn, _)) => {
                    if let Err(e) = conn.set_blocking() {
                        eprintln!("testchild: {e}");
                        continue;
                    }
                    handle(conn);
                }
                Err(e) => {
                    eprintln!("testchild: accept: {e}");
                    thread::sleep(POLL);
                }
            }
        }
        return;
    }
    while !server.hold() {
        match listener.accept() {
            Ok((conn, _)) => {
                // Accepted sockets do not inherit O_NONBLOCK, but be explicit.
                if let Err(e) = conn.set_blocking() {
                    eprintln!("testchild: {e}");
                    continue;
                }
                handle(conn);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                eprintln!("testchild: accept: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

trait SetBlocking {
    fn set_blocking(&self) -> io::Result<()>;
}

impl SetBlocking for TcpStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

impl SetBlocking for UnixStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

fn answer_name(mut conn: impl Write, name: &str) {
    let _ = conn.write_all(format!("{name}\n").as_bytes());
}

fn udp_echo(socket: &UdpSocket, name: &str, server: &Server) {
    if let Err(e) = socket.set_read_timeout(Some(POLL * 5)) {
        eprintln!("testchild: {e}");
    }
    let mut buf = vec![0u8; 65536];
    while !server.hold() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let mut reply = format!("{name} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from);
            }
            // A timeout, or nothing to read because another generation made
            // the socket nonblocking.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                thread::sleep(POLL)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("testchild: udp: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

/// One HTTP/1.1 connection, keep-alive until the client or a drain closes it.
fn serve_http(mut conn: TcpStream, server: &Server) -> io::Result<()> {
    conn.set_read_timeout(Some(POLL * 5))?;
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(&mut conn, &mut buf, server)? else {
            return Ok(());
        };
        let request = parse_head(&head);
        discard_body(&mut conn, &mut buf, request.content_length)?;
        if let Some(ms) = request.sleep_ms {
            thread::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS)));
        }
        // Checked after the work, so that a request in flight when the drain
        // starts is answered with `Connection: close`.
        let close = request.close || server.draining();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
            server.body.len()
        );
        if close {
            response.push_str("Connection: close\r\n");
        } else if request.http10 {
            response.push_str("Connection: keep-alive\r\n");
        }
        response.push_str("\r\n");
        if !request.head_only {
            response.push_str(&server.body);
        }
        conn.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// Reads until a complete request head is in `buf`, and splits it off.
/// `None` when the client closed the connection, or when it is idle and the
/// drain's grace period is over.
fn read_head(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    server: &Server,
) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some(std::mem::replace(buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if buf.is_empty() && server.close_idle() {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Reads and drops a request body of `len` bytes.
fn discard_body(conn: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let buffered = len.min(buf.len());
    buf.drain(..buffered);
    let mut left = len - buffered;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        match conn.read(&mut chunk[..left.min(8192)]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Request {
    close: bool,
    http10: bool,
    head_only: bool,
    content_length: usize,
    sleep_ms: Option<u64>,
}

fn parse_head(head: &[u8]) -> Request {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let version = parts.next().unwrap_or("");
    let mut request = Request {
        // HTTP/1.0 closes unless asked to keep the connection alive.
        close: version != "HTTP/1.1",
        http10: version == "HTTP/1.0",
        head_only: method == "HEAD",
        content_length: 0,
        sleep_ms: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    request.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    request.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            request.content_length = value.parse().unwrap_or(0);
        }
    }
    if let Some((_, query)) = target.split_once('?') {
        request.sleep_ms = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "sleep_ms")
            .and_then(|(_, v)| v.parse().ok());
    }
    request
}
