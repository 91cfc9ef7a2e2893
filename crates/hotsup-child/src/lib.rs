//! Inherit listening sockets from the hotsup supervisor, tell it when you
//! serve, pause when it asks, and learn when to stop.
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! #[tokio::main]
//! async fn main() -> Result<(), hotsup_child::Error> {
//!     // Under hotsup: the socket it holds. Run alone: binds the fallback.
//!     let listener = hotsup_child::tcp("http").or_bind("127.0.0.1:0").tokio()?;
//!     let lifecycle = hotsup_child::lifecycle();
//!     hotsup_child::enable_pause()?; // the loop below takes nothing while paused
//!     hotsup_child::ready()?; // hotsup may now drain the previous generation
//!     # let addr = listener.local_addr().unwrap();
//!     # tokio::spawn(async move {
//!     #     use tokio::io::AsyncReadExt;
//!     #     let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
//!     #     let _ = c.read_to_end(&mut Vec::new()).await;
//!     #     // Ctrl-C, as a user would, to end the example.
//!     #     rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT).unwrap();
//!     # });
//!
//!     // Accepts while serving, waits while paused, ends once draining.
//!     while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
//!         let Ok((mut conn, _)) = accepted else { continue };
//!         let work = lifecycle.in_flight();
//!         tokio::spawn(async move {
//!             use tokio::io::AsyncWriteExt;
//!             let _ = conn.write_all(b"hello\n").await;
//!             drop(work);
//!         });
//!     }
//!     // Draining: finish what is in flight, shortly before the deadline.
//!     let exit_by = lifecycle.exit_by(std::time::Duration::from_secs(10));
//!     let _ = tokio::time::timeout_at(exit_by.into(), lifecycle.idle()).await;
//!     Ok(())
//! }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! hotsup is a zero-downtime restart supervisor. It binds the listening
//! sockets once and runs your server as a child process, handing it the
//! sockets. To upgrade, it starts a new generation of the server with the
//! same sockets, waits until the new one reports `READY`, and only then
//! tells the old one to drain. No connection is refused in between, because
//! the listening sockets never close. With `hotsup run --probation`, the old
//! generation is paused instead of drained while the new one proves itself,
//! and resumed at once if the new one fails.
//!
//! This crate is the app's side of that: a [`Handoff`] owns what the
//! supervisor passed (or notices that the program runs on its own, so the
//! same binary works with and without hotsup), hands out the listeners
//! ([`Take`]), reports readiness, and drives a [`Lifecycle`] that the app's
//! accept loop follows.
//!
//! # Running under hotsup
//!
//! ```text
//! hotsup run --listen http=127.0.0.1:8080 -- ./myapp
//! ```
//!
//! The supervisor binds `127.0.0.1:8080`, starts `./myapp` and passes it the
//! socket named `http`; [`tcp("http")`](tcp) takes it. Run `./myapp`
//! directly and the same call binds its fallback instead: that is
//! *standalone* mode, in which [`ready`] and [`status`] do nothing (unless
//! `NOTIFY_SOCKET` is set), [`generation`] is `None` and the only drain
//! triggers are signals.
//!
//! The same binary also runs unchanged under `hotsup run --fds systemd` and
//! under systemd socket activation: see
//! [below](#under-systemd-socket-activation--hotsup-run---fds-systemd).
//!
//! | to get | call |
//! |---|---|
//! | the listener named `http`, or a fallback | [`tcp("http").or_bind(addr)`](tcp) |
//! | the first TCP listener, whatever its name | [`first_tcp()`](first_tcp) |
//! | a Unix stream listener, a UDP socket | [`unix`], [`udp`] |
//! | … in a mode | [`.tokio()`](Take::tokio), [`.nonblocking()`](Take::nonblocking), [`.blocking()`](Take::blocking), [`.fd()`](Take::fd) |
//! | what was passed | [`listeners`] |
//! | pause, resume, drain, deadline, work in flight | [`lifecycle`] → [`Lifecycle`] |
//! | readiness, status, health | [`ready`], [`status`], [`unhealthy`] |
//!
//! # The handle and the process-wide functions
//!
//! [`Handoff::from_env`] reads the environment once and owns what it
//! describes; the inherited fds have a single owner, so it succeeds once per
//! process. The functions at the crate root are thin conveniences: the
//! first one called creates the process's handoff with
//! [`Handoff::from_env`], and each then calls the method of the same name
//! on it. A program uses one or the other; tests build handoffs with
//! [`Handoff::from_channel`], [`Handoff::from_activation`] or
//! [`Handoff::standalone`].
//!
//! If the handoff fails (a corrupt message, an unsupported protocol
//! version), the channel is closed, so the supervisor sees the child fail;
//! the process-wide functions return the same [`StartupError`] from every
//! later call, wrapped in [`Error::Startup`]. Exit then: the sockets this
//! generation should serve are not available.
//!
//! # Start-up and the environment
//!
//! - If `HOTSUP_FD` is set, the fd it names must be an `AF_UNIX`
//!   `SOCK_SEQPACKET` socket. It is made close-on-exec (so it never leaks
//!   into the app's own children), the soft `RLIMIT_NOFILE` is raised to
//!   the hard limit (the kernel silently drops received fds beyond it;
//!   child processes inherit the raised limit), and `HELLO` and every
//!   `LISTENERS` message are read.
//! - Else, if `LISTEN_FDS` passes sockets to this process, they are adopted
//!   ([socket activation](#under-systemd-socket-activation--hotsup-run---fds-systemd)).
//! - Else the process is standalone.
//!
//! The handoff only *reads* the environment, so it is sound at any time,
//! from any thread: the first call may happen inside `#[tokio::main]`. It
//! does not remove the variables ([`ENV_VARS`]). They describe fds and a
//! notification socket meant for this process, and the fds are close-on-exec,
//! so a program this app starts would find the numbers closed or reused:
//! start children with [`remove_env`] (any time, any thread), or call the
//! `unsafe` [`scrub_env`] first thing in `main`, before any other thread
//! exists.
//!
//! # Under systemd socket activation / `hotsup run --fds systemd`
//!
//! ```text
//! hotsup run --fds systemd --listen web=127.0.0.1:8080 -- ./myapp
//! ```
//!
//! In this mode the supervisor opens no channel. Like systemd, it passes the
//! listeners as fds 3, 4, … with `LISTEN_FDS=<n>`, `LISTEN_PID=<the child's
//! pid>` and `LISTEN_FDNAMES=<name>:<name>:…`, plus `HOTSUP_GENERATION` and
//! a `NOTIFY_SOCKET` to report readiness on. The app needs no change: the
//! handoff adopts them when `HOTSUP_FD` is unset and `LISTEN_FDS` is set.
//!
//! - `LISTEN_PID` must be unset, empty or this process's pid. Any other pid
//!   means the fds are meant for another process (typically a parent that
//!   did not consume them): the process is standalone and leaves those fds
//!   alone. A `LISTEN_PID` or `LISTEN_FDS` that does not parse is a start-up
//!   error ([`StartupError::BadEnv`]).
//! - The fds are `LISTEN_FDS_FIRST_FD` (default 3) and the `LISTEN_FDS - 1`
//!   after it. Every one must be open (else [`StartupError::NotASocket`],
//!   and none is adopted); each is made close-on-exec.
//! - Nobody declares the kinds, so they are found by looking at each fd: a
//!   listening `AF_INET`/`AF_INET6` stream socket is `tcp`, an
//!   `AF_INET`/`AF_INET6` datagram socket `udp`, a listening `AF_UNIX` stream
//!   socket `unix`. The address comes from `getsockname` (`ip:port`,
//!   `[v6]:port`, the socket path, or `@name` for an abstract one).
//! - Anything else (not a socket, a connected socket such as systemd's
//!   `Accept=yes` passes, a non-listening stream socket, a FIFO, …) keeps its
//!   name and stays open, but is not in [`listeners`], and asking for it by
//!   name returns [`Error::UnsupportedInheritedFd`].
//! - Names come from `LISTEN_FDNAMES`, by position. A missing or empty name
//!   (or no `LISTEN_FDNAMES`) gives the name hotsup would: `<kind><index>`,
//!   such as `tcp0` or `unix2` (`other<index>` for an unsupported fd), with
//!   `index` the fd's position counted from 0. A name systemd gives
//!   explicitly, `unknown` included, is kept as given if hotsup's protocol
//!   could pass it on (1 to 255 of `A-Z a-z 0-9 - _ .`; a template unit's
//!   `app@1.socket` is not), so that an app finds the same names under
//!   systemd and under `hotsup run` adopting them. Names must be unique,
//!   but systemd repeats a socket unit's name for each of its sockets: a
//!   name already used by an earlier fd is replaced by the default name (so
//!   `web.socket:web.socket` gives `web.socket` and `tcp1`). The supervisor
//!   adopts its own `LISTEN_FDS` by the same rules (the `hotsup-os` crate).
//! - [`generation`] comes from `HOTSUP_GENERATION` if it is set, else it is
//!   `None` (the process is supervised by systemd); [`is_supervised`] is
//!   true either way.
//! - [`ready`] sends `READY=1` and [`status`] sends `STATUS=<text>` as one
//!   datagram to the `NOTIFY_SOCKET` captured at start-up (an absolute path,
//!   or `@name` for an abstract socket). The same happens in standalone mode
//!   when `NOTIFY_SOCKET` is set, as for a systemd `Type=notify` service
//!   without sockets. With the native channel, `NOTIFY_SOCKET` is not used.
//! - There is no `DRAIN` message and no `PAUSE`: the supervisor sends its
//!   `--drain-signal` (`SIGTERM` by default), which the [`Lifecycle`] turns
//!   into a drain (without a deadline), as does systemd's stop. Ask for the
//!   lifecycle before the signal can arrive, or it kills the process.
//!
//! # Blocking mode
//!
//! A listener's `O_NONBLOCK` flag belongs to its open file description,
//! which the supervisor and every generation share. So [`Take`] sets the
//! mode the caller names, once, directly: [`Take::tokio`] and
//! [`Take::nonblocking`] set it, [`Take::blocking`] clears it, and
//! [`Take::fd`] leaves it alone. Async runtimes (tokio, actix, mio) need it
//! set; a runtime that sets it itself then changes nothing.
//!
//! Because the flag is shared, a blocking `accept` can also be woken with no
//! connection to take (another generation took it) and wait for the next
//! one, unable to notice a pause or a drain meanwhile. All generations of
//! an app must agree on the mode, and nonblocking is the one that works:
//! [`Lifecycle::accept`] waits for connections with `poll(2)`, so a std
//! accept loop in that mode needs no busy polling.
//!
//! # Draining, pausing, and work in flight
//!
//! [`lifecycle`] returns a [`Lifecycle`] handle. Its [`State`] is
//!
//! - [`Serving`](State::Serving): accept new connections;
//! - [`Paused`](State::Paused): the supervisor sent `PAUSE` (protocol
//!   version 2, after [`enable_pause`]): accept nothing new, keep serving
//!   the open connections, keep the listeners; `RESUME` makes it serving
//!   again;
//! - [`Draining`](State::Draining), for good, when the supervisor sends
//!   `DRAIN` (a new generation is ready, or hotsup is stopping:
//!   [`Lifecycle::deadline`] says when the supervisor will kill the process
//!   group), when the channel to the supervisor reaches end-of-file (the
//!   supervisor died: nobody will start a successor or stop this process, so
//!   it drains, without deadline), or when the process receives `SIGTERM` or
//!   `SIGINT` (no deadline), supervised or not.
//!
//! Draining means: stop accepting (drop the listeners), finish the work in
//! flight, and exit before the deadline. [`Lifecycle::accept`] (std) and
//! [`Lifecycle::accept_async`] (any async runtime) make an accept loop
//! follow the state; [`Lifecycle::drained`] is an owned future for APIs
//! such as axum's `with_graceful_shutdown`; [`Lifecycle::in_flight`]
//! counts work that the drain then waits for ([`Lifecycle::idle`],
//! [`Lifecycle::wait_idle_until`]) until [`Lifecycle::exit_by`].
//!
//! **Answer `PAUSE` only if you honour it.** [`enable_pause`] tells a
//! version 2 supervisor that every accept loop of the app stops accepting
//! while paused. An app that accepts on a listener without following the
//! lifecycle must not call it: a paused generation that keeps accepting
//! takes connections while the supervisor believes another one serves.
//!
//! # Recipes
//!
//! The crate's `examples/` hold complete servers that are tested under
//! hotsup (native and `--fds systemd`, upgrades under load with no failed
//! request) and standalone: `recipe_axum.rs`, `recipe_hyper.rs` (hyper-util's
//! graceful shutdown), `recipe_actix.rs` (actix-web, pausing with its
//! `ServerHandle`) and `recipe_std.rs` (blocking threads, no runtime).
//!
//! # Wire protocol
//!
//! The protocol between hotsup and its children, for implementers in other
//! languages, is specified in the `hotsup-protocol` crate's documentation.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod env;
mod error;
mod handoff;
mod inherited;
mod lifecycle;
mod notify;
mod take;

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};

pub use env::{ENV_VARS, remove_env, scrub_env};
pub use error::{Error, StartupError};
pub use handoff::Handoff;
pub use inherited::{Kind, ListenerInfo};
pub use lifecycle::{Accept, DrainReason, InFlight, Lifecycle, Signal, State, Wait};
pub use take::{SocketKind, Take, Tcp, Udp, Unix};

use lifecycle::Shared;

/// The process's handoff, made by the first process-wide call.
struct Global {
    handoff: Result<Handoff, Arc<StartupError>>,
    /// From the environment, whatever became of the handoff.
    supervised: bool,
    generation: Option<u64>,
    /// The lifecycle when the handoff failed: only signals drain it.
    fallback: Arc<Shared>,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let env = env::snapshot();
        Global {
            handoff: Handoff::from_env().map_err(Arc::new),
            supervised: handoff::env_supervised(env),
            generation: handoff::env_generation(env),
            fallback: Shared::new(),
        }
    })
}

/// The process's [`Handoff`], created from the environment by the first
/// call of this or any other process-wide function; the start-up error if
/// that failed.
pub fn handoff() -> Result<&'static Handoff, Error> {
    global()
        .handoff
        .as_ref()
        .map_err(|e| Error::Startup(Arc::clone(e)))
}

/// Performs the handoff now, if no earlier call did; returns its error, if
/// any. Every process-wide function does this on first use; calling `init`
/// early in `main` makes the moment (and the failure) explicit.
pub fn init() -> Result<(), Error> {
    handoff().map(drop)
}

/// Whether the process was started by a supervisor: `HOTSUP_FD` was set, or
/// `LISTEN_FDS` for this process, even if the handoff then failed.
pub fn is_supervised() -> bool {
    global().supervised
}

/// This process's generation number (1 for the first child a supervisor
/// starts, then 2, 3, …), or `None` standalone or under plain systemd. See
/// [`Handoff::generation`].
pub fn generation() -> Option<u64> {
    match handoff() {
        Ok(h) => h.generation(),
        Err(_) => global().generation,
    }
}

/// Every listener the supervisor passed, in its order, taken or not; empty
/// when standalone or when the handoff failed. See [`Handoff::listeners`].
pub fn listeners() -> &'static [ListenerInfo] {
    handoff().map_or(&[], Handoff::listeners)
}

/// The inherited TCP listener named `name`. See [`Handoff::tcp`] and
/// [`Take`].
pub fn tcp(name: &str) -> Take<'static, Tcp> {
    Take::new(handoff(), take::Select::Name(name.into()))
}

/// The first inherited TCP listener. See [`Handoff::first_tcp`] and
/// [`Take`].
pub fn first_tcp() -> Take<'static, Tcp> {
    Take::new(handoff(), take::Select::First)
}

/// The inherited Unix stream listener named `name`. See [`Handoff::unix`]
/// and [`Take`].
pub fn unix(name: &str) -> Take<'static, Unix> {
    Take::new(handoff(), take::Select::Name(name.into()))
}

/// The inherited UDP socket named `name`. See [`Handoff::udp`] and
/// [`Take`].
pub fn udp(name: &str) -> Take<'static, Udp> {
    Take::new(handoff(), take::Select::Name(name.into()))
}

/// Tells the supervisor that this process serves. See [`Handoff::ready`].
pub fn ready() -> Result<(), Error> {
    handoff()?.ready()
}

/// Sends a one-line status text for the supervisor's log. See
/// [`Handoff::status`].
pub fn status(text: &str) -> Result<(), Error> {
    handoff()?.status(text)
}

/// Reports that this process cannot serve correctly. See
/// [`Handoff::unhealthy`].
pub fn unhealthy(reason: &str) -> Result<bool, Error> {
    handoff()?.unhealthy(reason)
}

/// Declares that every accept loop honours `PAUSE` and `RESUME`. See
/// [`Handoff::enable_pause`].
pub fn enable_pause() -> Result<bool, Error> {
    handoff()?.enable_pause()
}

/// The value `NOTIFY_SOCKET` had at start-up. See
/// [`Handoff::notify_socket`].
pub fn notify_socket() -> Option<&'static OsStr> {
    handoff().ok()?.notify_socket()
}

/// The process's [`Lifecycle`]. The first call installs handlers that turn
/// `SIGTERM` and `SIGINT` into a drain (see [`Handoff::lifecycle`]).
///
/// Works in every mode, also when the handoff failed (then only signals
/// drain it).
pub fn lifecycle() -> Lifecycle {
    match handoff() {
        Ok(h) => h.lifecycle(),
        Err(_) => {
            let shared = &global().fallback;
            lifecycle::drain_on_signals(shared);
            Lifecycle::new(Arc::clone(shared))
        }
    }
}

/// Writes a warning on stderr, ignoring a stderr that is closed or full
/// (unlike `eprintln!`, which panics then).
fn warn(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "hotsup-child: {args}");
}
