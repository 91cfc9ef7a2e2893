//! Inherit listening sockets from the hotsup supervisor, tell it when you
//! serve, and learn when to stop.
//!
//! hotsup is a zero-downtime restart supervisor. It binds the listening
//! sockets once and runs your server as a child process, handing it the
//! sockets. To upgrade, it starts a new generation of the server with the same
//! sockets, waits until the new one reports `READY`, and only then tells the
//! old one to drain. No connection is refused in between, because the
//! listening sockets never close.
//!
//! This crate is the app's side of that: a few functions that return the
//! inherited sockets (or bind a fallback address when the program runs on its
//! own, so the same binary works with and without hotsup), report readiness,
//! and tell you when to drain.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//!
//! fn main() -> Result<(), hotsup_child::Error> {
//!     // Early in main: performs the handoff, or notices that the program
//!     // runs standalone and binds the fallback address instead.
//!     let listener = hotsup_child::inherit_listener("127.0.0.1:0")?;
//!     let drain = hotsup_child::drain();
//!     println!(
//!         "listening on {} (generation {:?})",
//!         listener.local_addr()?,
//!         hotsup_child::generation(),
//!     );
//!
//!     // Tell the supervisor the server is up: it may now drain the previous
//!     // generation. Standalone, this does nothing.
//!     hotsup_child::ready()?;
//!
//!     // A real server loops here until `drain.is_draining()`.
//!     assert!(!drain.is_draining());
//!     # let addr = listener.local_addr()?;
//!     # let mut client = std::net::TcpStream::connect(addr)?;
//!     # client.write_all(b"hi")?;
//!     let (mut conn, _) = listener.accept()?;
//!     conn.write_all(b"hello\n")?;
//!     Ok(())
//! }
//! ```
//!
//! A complete accept loop that stops when asked to drain:
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//!
//! // Nonblocking, so that the loop notices a drain even when no client
//! // connects.
//! let listener = hotsup_child::inherit_listener_nonblocking("127.0.0.1:8080")?;
//! let drain = hotsup_child::drain();
//! hotsup_child::ready()?;
//! while !drain.is_draining() {
//!     match listener.accept() {
//!         Ok((conn, _)) => { /* hand `conn` to a worker */ }
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
//!             drain.wait_timeout(Duration::from_millis(10));
//!         }
//!         Err(e) => eprintln!("accept: {e}"),
//!     }
//! }
//! drop(listener);
//! // Finish in-flight work, at most until the supervisor's deadline.
//! let deadline = drain.deadline().unwrap_or(Instant::now() + Duration::from_secs(10));
//! # let _ = deadline;
//! # Ok::<(), hotsup_child::Error>(())
//! ```
//!
//! # Running under hotsup
//!
//! ```text
//! hotsup run --listen 127.0.0.1:8080 -- ./myapp
//! ```
//!
//! The supervisor binds `127.0.0.1:8080`, starts `./myapp` and passes it the
//! socket; [`inherit_listener`] returns it. Run `./myapp` directly and
//! [`inherit_listener`] binds its fallback address instead: that is
//! *standalone* mode, in which [`ready`] and [`status`] do nothing (unless
//! `NOTIFY_SOCKET` is set), [`generation`] is `None` and the only drain
//! triggers are signals.
//!
//! The same binary also runs unchanged under `hotsup run --fds systemd` and
//! under systemd socket activation: see
//! [below](#under-systemd-socket-activation--hotsup-run---fds-systemd).
//!
//! Listeners have names. With several of them, take each by name:
//! [`tcp_listener`], [`unix_listener`], [`udp_socket`], or their `_or_bind`
//! variants, which bind a fallback when standalone. [`listeners`] lists what
//! the supervisor passed.
//!
//! # Start-up and the environment
//!
//! The first call of any function of this crate (apart from those of
//! [`Handoff`]) performs the handoff, once for the process:
//!
//! - If `HOTSUP_FD` is unset, the process is standalone, unless `LISTEN_FDS`
//!   passes it sockets (see
//!   [socket activation](#under-systemd-socket-activation--hotsup-run---fds-systemd)).
//! - Otherwise the fd it names must be an `AF_UNIX` `SOCK_SEQPACKET` socket.
//!   It is made close-on-exec (so it never leaks into the app's own children),
//!   the soft `RLIMIT_NOFILE` is raised to the hard limit (the kernel silently
//!   drops received fds beyond it; child processes inherit the raised limit),
//!   and `HELLO` and every `LISTENERS` message are read.
//! - `HOTSUP_FD`, `HOTSUP_GENERATION`, `LISTEN_FDS`, `LISTEN_PID`,
//!   `LISTEN_FDNAMES`, `LISTEN_FDS_FIRST_FD` and `NOTIFY_SOCKET` are removed
//!   from the environment, in every mode, so the app's own children neither
//!   believe they are supervised nor report readiness on the app's behalf.
//!   [`notify_socket`] returns the captured `NOTIFY_SOCKET`.
//!
//! **Make the first call early in `main`, before starting threads or an async
//! runtime.** Removing environment variables is only sound while no other
//! thread reads the environment through libc (the reason
//! [`std::env::remove_var`] is `unsafe`); other socket-inheriting crates such
//! as listenfd have the same rule. [`init`] does nothing but this first call.
//!
//! If the handoff fails (a corrupt message, an unsupported protocol version),
//! the channel is closed, so the supervisor sees the child fail, and every
//! later call returns the same error wrapped in [`Error::Handoff`]. The
//! received sockets are close-on-exec as well.
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
//! a `NOTIFY_SOCKET` to report readiness on. This crate needs no change of
//! the app: the first call adopts them when `HOTSUP_FD` is unset and
//! `LISTEN_FDS` is set.
//!
//! - `LISTEN_PID` must be unset, empty or this process's pid. Any other pid
//!   means the fds are meant for another process (typically a parent that
//!   did not consume them): the process is standalone and leaves those fds
//!   alone. A `LISTEN_PID` or `LISTEN_FDS` that does not parse is a start-up
//!   error ([`Error::BadEnv`]).
//! - The fds are `LISTEN_FDS_FIRST_FD` (default 3) and the `LISTEN_FDS - 1`
//!   after it. Every one must be open (else [`Error::NotASocket`], and none
//!   is adopted); each is made close-on-exec.
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
//!   explicitly, `unknown` included, is kept as given (`unknown` is only
//!   libsystemd's placeholder when the variable is missing, which this crate
//!   replaces with the default names). Names must be unique, but systemd
//!   repeats a socket unit's name for each of its sockets: a name already
//!   used by an earlier fd is replaced by the default name (so
//!   `web.socket:web.socket` gives `web.socket` and `tcp1`).
//! - [`generation`] comes from `HOTSUP_GENERATION` if it is set, else it is
//!   `None` (the process is supervised by systemd); [`is_supervised`] is
//!   true either way.
//! - [`ready`] sends `READY=1` and [`status`] sends `STATUS=<text>` as one
//!   datagram to the `NOTIFY_SOCKET` captured at start-up (an absolute path,
//!   or `@name` for an abstract socket). The same happens in standalone mode
//!   when `NOTIFY_SOCKET` is set, as for a systemd `Type=notify` service
//!   without sockets. With the native channel, `NOTIFY_SOCKET` is not used.
//! - There is no `DRAIN` message: the supervisor sends its `--drain-signal`
//!   (`SIGTERM` by default), which [`drain()`] turns into a drain (without a
//!   deadline), as does systemd's stop. Call [`drain()`] before the signal
//!   can arrive, or it kills the process.
//!
//! # Blocking mode
//!
//! A listener's `O_NONBLOCK` flag belongs to its open file description, which
//! the supervisor and every generation share. So every function here sets the
//! mode explicitly: the functions at the crate root return blocking sockets,
//! those of the `tokio` module nonblocking ones. Because
//! the flag is shared, a blocking `accept` can also be woken with no
//! connection to take (another generation took it) and wait for the next one:
//! an accept loop that must notice a drain promptly should poll (see the
//! example above) rather than block.
//!
//! All generations of an app must agree on the mode. A generation that makes
//! a listener blocking while an older one is parked in a nonblocking-style
//! `accept` can leave the older one blocked in the kernel, unable to notice
//! its drain. [`take_socket`] hands a socket over without touching the flag,
//! for apps that set it themselves.
//!
//! # Draining
//!
//! [`drain()`] returns a [`Drain`] handle. It turns draining when
//!
//! - the supervisor sends `DRAIN` (a new generation is ready, or hotsup is
//!   stopping): [`Drain::deadline`] says when the supervisor will kill the
//!   process group;
//! - the channel to the supervisor reaches end-of-file, which means the
//!   supervisor died: nobody will start a successor or stop this process, so
//!   it drains (no deadline);
//! - the process receives `SIGTERM` or `SIGINT` (no deadline), supervised or
//!   not.
//!
//! The signal handlers are installed by the first call of [`drain()`], not
//! before. From then on these two signals no longer kill the process: the app
//! must exit by itself once draining.
//!
//! Draining means: stop accepting (drop the listeners), finish the work in
//! flight, and exit before the deadline.
//!
//! # Tokio
//!
//! With the `tokio` feature, the `tokio` module returns
//! tokio sockets, and `Drain::wait_async` waits without blocking a thread.
//!
//! # Wire protocol, version 1
//!
//! This section specifies the protocol for implementers in other languages.
//!
//! ## Channel
//!
//! The supervisor creates a `socketpair(AF_UNIX, SOCK_SEQPACKET)` per child
//! and passes one end to the child as an inherited file descriptor. The
//! child's environment holds:
//!
//! - `HOTSUP_FD`: the decimal number of that fd;
//! - `HOTSUP_GENERATION`: the child's generation as a decimal number (1 for
//!   the first child, then 2, 3, …), for information; `HELLO` is
//!   authoritative.
//!
//! A child should check that the fd is an `AF_UNIX` `SOCK_SEQPACKET` socket,
//! set close-on-exec on it and remove both variables from its environment.
//!
//! ## Messages
//!
//! Each message is one `SOCK_SEQPACKET` record, sent with one `sendmsg` and
//! received with one `recvmsg`; the kernel keeps the boundaries.
//!
//! - A message is UTF-8 text of at most 65536 bytes (64 KiB). Lines are
//!   separated by `\n`; there is no trailing newline.
//! - The first line is a verb followed by space-separated `key=value` fields.
//!   Field order is not significant, values contain no spaces, and unknown
//!   keys are ignored.
//! - Further lines, if any, depend on the verb.
//! - A receiver ignores a message whose verb it does not know (closing any
//!   fds attached to it).
//!
//! ## Supervisor to child
//!
//! - `HELLO version=1 generation=<g> listeners=<n>`: always the first
//!   message. `n` is the total number of listeners.
//! - `LISTENERS start=<s> count=<c>`, followed by `c` lines
//!   `<kind> <name> <address>`, one per listener:
//!   - `kind` is `tcp` (a listening TCP socket, IPv4 or IPv6), `udp` (a bound
//!     UDP socket) or `unix` (a listening Unix stream socket);
//!   - `name` is 1 to 255 bytes of ASCII letters, digits, `-`, `_` and `.`,
//!     unique among the listeners;
//!   - `address` is the rest of the line: `ip:port`, `[ipv6]:port` or a Unix
//!     socket path (which may contain spaces).
//!
//!   The message carries exactly `c` fds, in the order of its lines, in a
//!   single `SCM_RIGHTS` control message. `c` is at most 252 (musl's limit;
//!   the kernel allows 253), so `n` listeners take `ceil(n / 252)` messages
//!   with `start` = 0, 252, 504, …; none when `n` is 0. They immediately
//!   follow `HELLO`. Receive them with `MSG_CMSG_CLOEXEC` and room for 252
//!   fds; treat `MSG_CTRUNC` as an error. Raise `RLIMIT_NOFILE` first: the
//!   kernel drops fds beyond it.
//!
//!   The fds share their open file descriptions with the supervisor and the
//!   other generations, so `O_NONBLOCK` is shared: set the mode you need.
//! - `DRAIN timeout_ms=<t>`: stop accepting, finish in-flight work, close the
//!   channel's end or simply exit, within `t` milliseconds of receiving it.
//!   When they run out, the supervisor kills the child's process group with
//!   `SIGKILL`. It may arrive at any time after the handshake, also before
//!   `READY`.
//!
//! ## Child to supervisor
//!
//! - `READY`: the child serves. The supervisor counts a new generation as up,
//!   and drains the previous one, only after this. Send it once.
//! - `STATUS <text>`: free-form status for the supervisor's log; one line,
//!   the rest of the message after the space.
//!
//! ## End of file
//!
//! A `recvmsg` that returns 0 bytes and no fds means the peer closed its end.
//! For the child that means the supervisor died: it should drain (there is no
//! deadline). For the supervisor it means the child exited or gave up the
//! channel.
//!
//! ## Versioning
//!
//! `HELLO` carries the version. A child reads `version` before any other
//! field and refuses to continue (exits with an error) if it does not know
//! it. Within version 1, new fields and new verbs may be added; receivers
//! ignore them. Any incompatible change gets a new version number.
//!
//! ## Example transcript
//!
//! ```text
//! supervisor -> child   HELLO version=1 generation=2 listeners=3
//! supervisor -> child   LISTENERS start=0 count=3          + SCM_RIGHTS [3 fds]
//!                       tcp http 127.0.0.1:8080
//!                       udp dns [::1]:5353
//!                       unix admin /run/my app/admin.sock
//! child -> supervisor   STATUS loading configuration
//! child -> supervisor   READY
//!      ... later, generation 3 has sent READY ...
//! supervisor -> child   DRAIN timeout_ms=30000
//!      ... the child closes its listeners, finishes its requests, exits 0
//! ```

use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::Path;

mod activation;
mod drain;
mod error;
mod global;
mod handoff;
mod inherited;
mod notify;
mod sockets;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use drain::{Drain, DrainReason};
pub use error::Error;
pub use handoff::Handoff;
pub use hotsup_protocol::{Kind, ListenerInfo};

use global::global;

/// Performs the start-up handoff now, if no earlier call did; returns its
/// error, if any.
///
/// Every function of this crate does this on first use; calling `init` first
/// thing in `main` just makes the moment explicit (see
/// [Start-up and the environment](crate#start-up-and-the-environment)).
pub fn init() -> Result<(), Error> {
    global().sockets().map(|_| ())
}

/// Whether the process was started by hotsup (`HOTSUP_FD` was set) or with
/// socket activation (`LISTEN_FDS` was set for this process, see
/// [socket activation](crate#under-systemd-socket-activation--hotsup-run---fds-systemd)),
/// even if the handoff then failed.
pub fn is_supervised() -> bool {
    global().supervised
}

/// This process's generation number (1 for the first child a supervisor
/// starts, then 2, 3, …), or `None` standalone.
///
/// Under socket activation it comes from `HOTSUP_GENERATION`, which
/// `hotsup run --fds systemd` sets; it is `None` under plain systemd.
pub fn generation() -> Option<u64> {
    global().generation
}

/// Every listener the supervisor passed, in its order, taken or not; empty
/// when standalone or when the handoff failed.
///
/// Under socket activation, inherited fds that are not supported listeners
/// are left out (see [`Error::UnsupportedInheritedFd`]).
pub fn listeners() -> &'static [ListenerInfo] {
    match global().sockets() {
        Ok(Some(sockets)) => sockets.listeners(),
        _ => &[],
    }
}

/// The server's main TCP listener: under hotsup (or socket activation), the
/// first TCP listener the supervisor passed; standalone, a new listener bound
/// to `fallback`.
///
/// Returns it in blocking mode. Under hotsup, `fallback` is never used: a
/// missing listener is an error ([`Error::NoListenerOfKind`]), because a
/// socket the supervisor does not hold would not survive an upgrade.
pub fn inherit_listener<A: ToSocketAddrs>(fallback: A) -> Result<TcpListener, Error> {
    inherit_listener_in(fallback, false)
}

/// Like [`inherit_listener`], in nonblocking mode, for accept loops that
/// poll (see the crate example).
///
/// Prefer it to calling `set_nonblocking(true)` on a blocking listener: the
/// flag is shared with every generation, and the moment the listener spends
/// in blocking mode can leave an older generation stuck in `accept`.
pub fn inherit_listener_nonblocking<A: ToSocketAddrs>(fallback: A) -> Result<TcpListener, Error> {
    inherit_listener_in(fallback, true)
}

pub(crate) fn inherit_listener_in<A: ToSocketAddrs>(
    fallback: A,
    nonblocking: bool,
) -> Result<TcpListener, Error> {
    match global().sockets()? {
        Some(sockets) => sockets.take_first_tcp(nonblocking),
        None => bind_tcp(fallback, nonblocking),
    }
}

/// Takes the inherited socket named `name`, checked to be of `kind`,
/// without changing its `O_NONBLOCK` flag. See [`Handoff::take_socket`].
///
/// Standalone this returns [`Error::NotFound`].
pub fn take_socket(name: &str, kind: Kind) -> Result<std::os::fd::OwnedFd, Error> {
    supervised(name)?.take_socket(name, kind)
}

/// Takes the inherited TCP listener named `name`, in blocking mode.
///
/// Standalone there are no inherited listeners, so this returns
/// [`Error::NotFound`]; use [`tcp_listener_or_bind`] to bind one instead.
pub fn tcp_listener(name: &str) -> Result<TcpListener, Error> {
    supervised(name)?.take_tcp(name, false)
}

#[cfg(feature = "tokio")]
pub(crate) fn tcp_listener_in(name: &str, nonblocking: bool) -> Result<TcpListener, Error> {
    supervised(name)?.take_tcp(name, nonblocking)
}

/// Takes the inherited TCP listener named `name` under hotsup, or binds
/// `fallback` standalone; blocking mode either way.
pub fn tcp_listener_or_bind<A: ToSocketAddrs>(
    name: &str,
    fallback: A,
) -> Result<TcpListener, Error> {
    tcp_listener_or_bind_in(name, fallback, false)
}

pub(crate) fn tcp_listener_or_bind_in<A: ToSocketAddrs>(
    name: &str,
    fallback: A,
    nonblocking: bool,
) -> Result<TcpListener, Error> {
    match global().sockets()? {
        Some(sockets) => sockets.take_tcp(name, nonblocking),
        None => bind_tcp(fallback, nonblocking),
    }
}

/// Takes the inherited Unix stream listener named `name`, in blocking mode.
///
/// Standalone this returns [`Error::NotFound`]; see
/// [`unix_listener_or_bind`].
pub fn unix_listener(name: &str) -> Result<UnixListener, Error> {
    supervised(name)?.take_unix(name, false)
}

#[cfg(feature = "tokio")]
pub(crate) fn unix_listener_in(name: &str, nonblocking: bool) -> Result<UnixListener, Error> {
    supervised(name)?.take_unix(name, nonblocking)
}

/// Takes the inherited Unix stream listener named `name` under hotsup, or
/// binds `fallback` standalone (which fails if the path exists).
pub fn unix_listener_or_bind<P: AsRef<Path>>(
    name: &str,
    fallback: P,
) -> Result<UnixListener, Error> {
    unix_listener_or_bind_in(name, fallback, false)
}

pub(crate) fn unix_listener_or_bind_in<P: AsRef<Path>>(
    name: &str,
    fallback: P,
    nonblocking: bool,
) -> Result<UnixListener, Error> {
    match global().sockets()? {
        Some(sockets) => sockets.take_unix(name, nonblocking),
        None => {
            let path = fallback.as_ref();
            let listener = UnixListener::bind(path).map_err(|source| Error::Bind {
                address: path.display().to_string(),
                source,
            })?;
            listener.set_nonblocking(nonblocking)?;
            Ok(listener)
        }
    }
}

/// Takes the inherited UDP socket named `name`, in blocking mode.
///
/// Standalone this returns [`Error::NotFound`]; see [`udp_socket_or_bind`].
pub fn udp_socket(name: &str) -> Result<UdpSocket, Error> {
    supervised(name)?.take_udp(name, false)
}

#[cfg(feature = "tokio")]
pub(crate) fn udp_socket_in(name: &str, nonblocking: bool) -> Result<UdpSocket, Error> {
    supervised(name)?.take_udp(name, nonblocking)
}

/// Takes the inherited UDP socket named `name` under hotsup, or binds
/// `fallback` standalone; blocking mode either way.
pub fn udp_socket_or_bind<A: ToSocketAddrs>(name: &str, fallback: A) -> Result<UdpSocket, Error> {
    udp_socket_or_bind_in(name, fallback, false)
}

pub(crate) fn udp_socket_or_bind_in<A: ToSocketAddrs>(
    name: &str,
    fallback: A,
    nonblocking: bool,
) -> Result<UdpSocket, Error> {
    match global().sockets()? {
        Some(sockets) => sockets.take_udp(name, nonblocking),
        None => {
            let (addrs, address) = resolve(fallback)?;
            let socket =
                UdpSocket::bind(&addrs[..]).map_err(|source| Error::Bind { address, source })?;
            socket.set_nonblocking(nonblocking)?;
            Ok(socket)
        }
    }
}

/// Tells the supervisor that this process serves, so that it can drain the
/// previous generation. Idempotent: only the first successful call sends it.
///
/// With the native channel (`HOTSUP_FD`), this sends `READY` on it. Without
/// one, if `NOTIFY_SOCKET` was set at start-up (`hotsup run --fds systemd`,
/// or a systemd `Type=notify` service), it sends `READY=1` there, also when
/// no sockets were inherited. Otherwise it does nothing.
pub fn ready() -> Result<(), Error> {
    global().ready()
}

/// Sends a one-line status text to the supervisor, which logs it: `STATUS`
/// on the native channel, else `STATUS=<text>` to `NOTIFY_SOCKET` if it was
/// set at start-up, else nothing.
pub fn status(text: &str) -> Result<(), Error> {
    global().status(text)
}

/// The value `NOTIFY_SOCKET` had at start-up, which this crate removed from
/// the environment.
///
/// [`ready`] and [`status`] use it already; this is for apps that send other
/// notifications themselves (`WATCHDOG=1`, `STOPPING=1`, …). Libraries that
/// read `NOTIFY_SOCKET` from the environment (such as `sd-notify`) find it
/// unset after the first call into this crate.
pub fn notify_socket() -> Option<&'static std::ffi::OsStr> {
    global().notify_socket()
}

/// The process-wide drain handle. The first call installs handlers that turn
/// `SIGTERM` and `SIGINT` into a drain (see [Draining](crate#draining)).
///
/// Works in every mode, also when the handoff failed (then only signals
/// trigger it).
pub fn drain() -> Drain {
    let shared = global().drain_shared();
    drain::install_signal_handlers(shared);
    Drain::new(std::sync::Arc::clone(shared))
}

/// The handoff, or `NotFound` standalone (there are no inherited listeners).
fn supervised(name: &str) -> Result<&'static inherited::Sockets, Error> {
    global()
        .sockets()?
        .ok_or_else(|| Error::NotFound { name: name.into() })
}

fn resolve<A: ToSocketAddrs>(fallback: A) -> Result<(Vec<SocketAddr>, String), Error> {
    let addrs: Vec<SocketAddr> = fallback.to_socket_addrs()?.collect();
    let address = addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Ok((addrs, address))
}

fn bind_tcp<A: ToSocketAddrs>(fallback: A, nonblocking: bool) -> Result<TcpListener, Error> {
    let (addrs, address) = resolve(fallback)?;
    let listener =
        TcpListener::bind(&addrs[..]).map_err(|source| Error::Bind { address, source })?;
    listener.set_nonblocking(nonblocking)?;
    Ok(listener)
}
