//! [`Handoff`]: what the supervisor handed this process, and the channel
//! back to it.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hotsup_protocol::{DecodeError, FromChild, RecvError, ToChild};
use rustix::io::FdFlags;

use crate::env::Snapshot;
use crate::error::{Error, StartupError};
use crate::inherited::{ListenerInfo, Sockets};
use crate::lifecycle::{self, DrainReason, Lifecycle, Shared};
use crate::notify::Notifier;
use crate::take::{Select, Take, Tcp, Udp, Unix};
use hotsup_os::activation;
use hotsup_os::sockets;

/// The version of the protocol this crate answers with, when the app
/// honours `PAUSE` and `RESUME`.
const PAUSE_VERSION: u32 = 2;

/// Everything a supervisor handed this process: the inherited sockets, the
/// channel back to it (or `NOTIFY_SOCKET`), and the lifecycle it drives.
///
/// Create it once, early in `main`, with [`Handoff::from_env`]: it finds
/// out whether the process runs under hotsup's native protocol
/// (`HOTSUP_FD`), under socket activation (`LISTEN_FDS`: systemd or
/// `hotsup run --fds systemd`), or standalone, and owns what it was given.
/// The process-wide functions of the crate root ([`tcp`](crate::tcp),
/// [`ready`](crate::ready), …) are the same methods on a handoff that they
/// create on first use.
///
/// ```no_run
/// # fn main() -> Result<(), hotsup_child::Error> {
/// let handoff = hotsup_child::Handoff::from_env()?;
/// let listener = handoff.tcp("http").or_bind("127.0.0.1:8080").nonblocking()?;
/// let lifecycle = handoff.lifecycle();
/// handoff.enable_pause()?; // the accept loop below honours PAUSE
/// handoff.ready()?;
/// while let Some(accepted) = lifecycle.accept(&listener) {
///     let Ok((conn, _)) = accepted else { continue };
///     # drop(conn);
/// }
/// # Ok(()) }
/// ```
///
/// Receiving from the native channel starts a thread that reads it for the
/// rest of the handoff's life and feeds the [`Lifecycle`].
pub struct Handoff {
    supervised: bool,
    generation: Option<u64>,
    sockets: Sockets,
    channel: Option<Channel>,
    notifier: Option<Notifier>,
    lifecycle: Arc<Shared>,
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff")
            .field("supervised", &self.supervised)
            .field("generation", &self.generation)
            .field("listeners", &self.sockets.listeners())
            .field("native", &self.channel.is_some())
            .field("lifecycle", &Lifecycle::new(Arc::clone(&self.lifecycle)))
            .finish()
    }
}

/// The native channel to the supervisor.
struct Channel {
    fd: Arc<OwnedFd>,
    /// The highest version the supervisor offered in `HELLO`.
    max_version: u32,
    /// The version this process answered with; 0 before it answered. The
    /// channel thread obeys version 2 messages only once it is 2.
    spoken: Arc<AtomicU32>,
    /// Serializes the answer, so that it is sent once.
    answer: Mutex<()>,
    ready: AtomicBool,
}

impl Channel {
    fn send(&self, message: &'static str, msg: &FromChild) -> Result<(), Error> {
        let bytes = msg.encode().map_err(|_| match msg {
            FromChild::Status(t) | FromChild::Unhealthy(t) => Error::invalid_text(t),
            _ => Error::invalid_text(""),
        })?;
        hotsup_protocol::send(self.fd.as_fd(), &bytes, &[])
            .map_err(|source| Error::Send { message, source })
    }
}

impl Handoff {
    /// Reads the environment and adopts what it passes to this process:
    /// the native channel, socket activation, or nothing (standalone).
    ///
    /// Only reads the environment, so it is sound from any thread, also
    /// inside `#[tokio::main]`; see [`scrub_env`](crate::scrub_env) for
    /// removing the variables.
    ///
    /// - `HOTSUP_FD` set: the channel is checked, made close-on-exec, and
    ///   `HELLO` and every `LISTENERS` message are received (see
    ///   [`from_channel`](Self::from_channel)).
    /// - Otherwise, `LISTEN_FDS` set for this process (`LISTEN_PID` unset,
    ///   empty, or this process's pid): the fds are adopted (see
    ///   [socket activation](crate#under-systemd-socket-activation--hotsup-run---fds-systemd)).
    /// - Otherwise: standalone; every listener comes from its fallback.
    ///
    /// `HOTSUP_GENERATION` and `NOTIFY_SOCKET` are read in every mode.
    ///
    /// The inherited fds can have only one owner, so this succeeds once per
    /// process; a second call returns [`StartupError::AlreadyAdopted`]. The
    /// process-wide functions of the crate root call it on first use: a
    /// program uses either them or its own handoff.
    pub fn from_env() -> Result<Handoff, StartupError> {
        static ADOPTED: AtomicBool = AtomicBool::new(false);
        if ADOPTED.swap(true, Ordering::SeqCst) {
            return Err(StartupError::AlreadyAdopted);
        }
        let env = crate::env::snapshot();
        let mut handoff = match &env.hotsup_fd {
            Some(value) => Handoff::from_channel(open_channel(value)?)?,
            None => match activation::parse(activation_vars(env), std::process::id())
                .map_err(StartupError::from)?
            {
                None => Handoff::standalone(),
                Some(range) => {
                    // SAFETY: `LISTEN_FDS` (with a matching or absent
                    // `LISTEN_PID`) passes these fds to this process, and
                    // `ADOPTED` makes this the only adoption in it.
                    let fds = unsafe { activation::claim(range) }.map_err(StartupError::from)?;
                    Handoff::from_activation(fds, env.fd_names.as_deref())
                }
            },
        };
        if handoff.generation.is_none() {
            handoff.generation = env_generation(env);
        }
        handoff.notifier = env.notify_socket.clone().and_then(Notifier::new);
        Ok(handoff)
    }

    /// A handoff with nothing inherited: every listener is bound from its
    /// fallback, [`ready`](Self::ready) does nothing, and only signals drain.
    pub fn standalone() -> Handoff {
        Handoff {
            supervised: false,
            generation: None,
            sockets: Sockets::default(),
            channel: None,
            notifier: None,
            lifecycle: Shared::new(),
        }
    }

    /// Performs the child's side of the native handshake on `channel`:
    /// checks that it is an `AF_UNIX` `SOCK_SEQPACKET` socket, makes it
    /// close-on-exec and blocking, reads `HELLO` and every `LISTENERS`
    /// message, and starts the thread that reads the channel for `DRAIN`,
    /// `PAUSE`, `RESUME` and end-of-file.
    ///
    /// Raises the soft `RLIMIT_NOFILE` to the hard limit first, because the
    /// kernel silently drops received fds beyond it.
    ///
    /// For programs that get the channel some other way than `HOTSUP_FD`,
    /// and for tests (an emulated supervisor on a `socketpair`). On error
    /// every fd received so far is closed, and so is `channel`.
    pub fn from_channel(channel: OwnedFd) -> Result<Handoff, StartupError> {
        let fd = channel.as_raw_fd();
        match sockets::is_seqpacket(channel.as_fd()) {
            Some(true) => {}
            Some(false) => return Err(StartupError::NotSeqpacket { fd }),
            None => return Err(StartupError::NotASocket { fd }),
        }
        let io = |operation| {
            move |e: rustix::io::Errno| StartupError::Io {
                operation,
                source: e.into(),
            }
        };
        rustix::io::fcntl_setfd(&channel, FdFlags::CLOEXEC)
            .map_err(io("make the channel close-on-exec"))?;
        // The child's end is its own open file description, so this changes
        // nobody else's mode.
        rustix::io::ioctl_fionbio(&channel, false).map_err(io("make the channel blocking"))?;

        let lifecycle = Shared::new();
        let hello = receive_hello(&channel, &lifecycle)?;
        hotsup_os::raise_nofile_limit();

        // `count` comes from the wire; don't let it size an allocation.
        let count = hello.listeners;
        let mut listeners = Vec::with_capacity(count.min(1024));
        let mut fds = Vec::with_capacity(count.min(1024));
        while listeners.len() < count {
            let msg = recv(&channel)?;
            let (start, entries) = match decode_ignoring_unknown(&msg.bytes)? {
                None => continue,
                Some(ToChild::Listeners { start, entries }) => (start, entries),
                Some(ToChild::Drain { timeout }) => {
                    lifecycle.drain(DrainReason::Supervisor { timeout });
                    continue;
                }
                // Version 2 messages only follow this child's answer, which
                // it sends after the listeners arrived.
                Some(ToChild::Pause | ToChild::Resume) => continue,
                Some(ToChild::Hello { .. }) => {
                    return Err(StartupError::UnexpectedMessage {
                        expected: "LISTENERS",
                        found: "HELLO".into(),
                    });
                }
            };
            if start != listeners.len() {
                return Err(StartupError::OutOfOrder {
                    expected: listeners.len(),
                    found: start,
                });
            }
            if msg.fds.len() != entries.len() {
                return Err(StartupError::FdCountMismatch {
                    expected: entries.len(),
                    found: msg.fds.len(),
                });
            }
            if listeners.len() + entries.len() > count {
                return Err(StartupError::ListenerCountMismatch {
                    expected: count,
                    found: listeners.len() + entries.len(),
                });
            }
            listeners.extend(entries.into_iter().map(ListenerInfo::from_wire));
            fds.extend(msg.fds);
        }

        let mut names = HashSet::with_capacity(listeners.len());
        if let Some(dup) = listeners.iter().find(|l| !names.insert(l.name())) {
            return Err(StartupError::DuplicateName {
                name: dup.name().to_owned(),
            });
        }

        let channel = Channel {
            fd: Arc::new(channel),
            max_version: hello.max_version,
            spoken: Arc::new(AtomicU32::new(0)),
            answer: Mutex::new(()),
            ready: AtomicBool::new(false),
        };
        spawn_watcher(
            Arc::clone(&channel.fd),
            Arc::clone(&lifecycle),
            Arc::clone(&channel.spoken),
        )
        .map_err(|source| StartupError::Io {
            operation: "start the channel thread",
            source,
        })?;
        Ok(Handoff {
            supervised: true,
            generation: Some(hello.generation),
            sockets: Sockets::declared(listeners, fds),
            channel: Some(channel),
            notifier: None,
            lifecycle,
        })
    }

    /// A handoff of socket-activated fds, named after `names`
    /// (`LISTEN_FDNAMES`, colon-separated) by position.
    ///
    /// Each fd is inspected to find its kind; the ones that are not
    /// supported listeners keep their names but are not in
    /// [`listeners`](Self::listeners). [`Handoff::from_env`] uses this with
    /// the fds it adopted; tests can pass sockets of their own.
    pub fn from_activation(fds: Vec<OwnedFd>, names: Option<&OsStr>) -> Handoff {
        Handoff {
            supervised: true,
            sockets: Sockets::inspected(activation::inspect(fds, names)),
            ..Handoff::standalone()
        }
    }

    /// Whether a supervisor passed anything: the native channel, or socket
    /// activation meant for this process.
    pub fn is_supervised(&self) -> bool {
        self.supervised
    }

    /// This process's generation (1 for the first child a supervisor
    /// starts, then 2, 3, …): from `HELLO`, else from `HOTSUP_GENERATION`;
    /// `None` standalone or under plain systemd.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Every listener the supervisor passed, in its order, taken or not.
    /// Under socket activation, fds that are not supported listeners are
    /// left out.
    pub fn listeners(&self) -> &[ListenerInfo] {
        self.sockets.listeners()
    }

    /// The value `NOTIFY_SOCKET` had at start-up, for apps that send other
    /// notifications themselves (`WATCHDOG=1`, …).
    pub fn notify_socket(&self) -> Option<&OsStr> {
        self.notifier.as_ref().map(Notifier::value)
    }

    /// The protocol version agreed with the supervisor: 1 on the native
    /// channel, 2 once [`enable_pause`](Self::enable_pause) answered a
    /// version 2 supervisor; `None` without the native channel.
    pub fn protocol_version(&self) -> Option<u32> {
        self.channel
            .as_ref()
            .map(|c| c.spoken.load(Ordering::SeqCst).max(1))
    }

    /// The inherited TCP listener named `name`; see [`Take`] for the
    /// fallback and the mode.
    pub fn tcp(&self, name: &str) -> Take<'_, Tcp> {
        Take::new(Ok(self), Select::Name(name.into()))
    }

    /// The first inherited TCP listener, in the supervisor's order: the
    /// server's main listener when it has one. See [`Take`].
    pub fn first_tcp(&self) -> Take<'_, Tcp> {
        Take::new(Ok(self), Select::First)
    }

    /// The inherited Unix stream listener named `name`; see [`Take`].
    pub fn unix(&self, name: &str) -> Take<'_, Unix> {
        Take::new(Ok(self), Select::Name(name.into()))
    }

    /// The inherited UDP socket named `name`; see [`Take`].
    pub fn udp(&self, name: &str) -> Take<'_, Udp> {
        Take::new(Ok(self), Select::Name(name.into()))
    }

    pub(crate) fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// Declares that every accept loop of this app honours `PAUSE` and
    /// `RESUME`: it takes no new connection while the [`Lifecycle`] is
    /// [`Paused`](crate::State::Paused), as [`Lifecycle::accept`] and
    /// [`Lifecycle::accept_async`] do, on every listener it accepts on.
    ///
    /// To a supervisor that offers version 2 of the protocol, this answers
    /// `HELLO version=2`; from then on the supervisor may pause this
    /// generation (keeping it on standby while a new one is on probation)
    /// and resume it (rolling the new one back at once). Call it before
    /// [`ready`](Self::ready). Returns whether the supervisor was told;
    /// `false` (and nothing sent) for a version 1 supervisor, socket
    /// activation or standalone. Later calls send nothing more.
    pub fn enable_pause(&self) -> Result<bool, Error> {
        let Some(channel) = &self.channel else {
            return Ok(false);
        };
        if channel.max_version < PAUSE_VERSION {
            return Ok(false);
        }
        let _once = channel.answer.lock().unwrap_or_else(|e| e.into_inner());
        if channel.spoken.load(Ordering::SeqCst) < PAUSE_VERSION {
            // Before sending: a PAUSE may follow the answer at once.
            channel.spoken.store(PAUSE_VERSION, Ordering::SeqCst);
            let sent = channel.send(
                "HELLO",
                &FromChild::Hello {
                    version: PAUSE_VERSION,
                },
            );
            if sent.is_err() {
                channel.spoken.store(0, Ordering::SeqCst);
            }
            sent?;
        }
        Ok(true)
    }

    /// Tells the supervisor that this process serves, so that it can drain
    /// the previous generation. Only the first successful call sends it.
    ///
    /// With the native channel this sends `READY` on it. Without one, if
    /// `NOTIFY_SOCKET` was set at start-up (`hotsup run --fds systemd`, or a
    /// systemd `Type=notify` service), it sends `READY=1` there, also when
    /// no sockets were inherited. Otherwise it does nothing.
    pub fn ready(&self) -> Result<(), Error> {
        match (&self.channel, &self.notifier) {
            (Some(channel), _) => {
                if !channel.ready.load(Ordering::SeqCst) {
                    channel.send("READY", &FromChild::Ready)?;
                    channel.ready.store(true, Ordering::SeqCst);
                }
                Ok(())
            }
            (None, Some(notifier)) => notifier.ready(),
            (None, None) => Ok(()),
        }
    }

    /// Sends a one-line status text, which the supervisor logs: `STATUS` on
    /// the native channel, else `STATUS=<text>` to `NOTIFY_SOCKET` if it was
    /// set at start-up, else nothing.
    pub fn status(&self, text: &str) -> Result<(), Error> {
        match (&self.channel, &self.notifier) {
            (Some(channel), _) => channel.send("STATUS", &FromChild::Status(text.to_owned())),
            (None, Some(notifier)) => notifier.status(text),
            (None, None) => Ok(()),
        }
    }

    /// Reports that this process is alive but cannot serve correctly (its
    /// database is unreachable, say); `reason` is one line.
    ///
    /// After [`enable_pause`](Self::enable_pause) agreed on version 2, this
    /// sends `UNHEALTHY <reason>`: a supervisor that has this generation on
    /// probation rolls the upgrade back. Otherwise no such message exists,
    /// so it sends `unhealthy: <reason>` as a [`status`](Self::status) for
    /// the log and returns `false`.
    pub fn unhealthy(&self, reason: &str) -> Result<bool, Error> {
        if let Some(channel) = &self.channel
            && channel.spoken.load(Ordering::SeqCst) >= PAUSE_VERSION
        {
            channel.send("UNHEALTHY", &FromChild::Unhealthy(reason.to_owned()))?;
            return Ok(true);
        }
        if reason.contains(['\n', '\r']) {
            return Err(Error::invalid_text(reason));
        }
        self.status(&format!("unhealthy: {reason}"))?;
        Ok(false)
    }

    /// A handle on this handoff's [`Lifecycle`], which `DRAIN`, `PAUSE`,
    /// `RESUME` and the end of the channel drive.
    ///
    /// The first call in the process also installs handlers that turn
    /// `SIGTERM` and `SIGINT` into a drain (of every handoff that asked for
    /// its lifecycle): from then on these signals no longer kill the
    /// process, which must exit by itself once draining. Under socket
    /// activation the supervisor drains with a signal, so ask for the
    /// lifecycle before the signal can arrive.
    pub fn lifecycle(&self) -> Lifecycle {
        lifecycle::drain_on_signals(&self.lifecycle);
        Lifecycle::new(Arc::clone(&self.lifecycle))
    }
}

fn activation_vars(env: &Snapshot) -> activation::Vars<'_> {
    activation::Vars {
        listen_fds: env.listen_fds.as_deref(),
        listen_pid: env.listen_pid.as_deref(),
        first_fd: env.first_fd.as_deref(),
    }
}

pub(crate) fn env_generation(env: &Snapshot) -> Option<u64> {
    env.generation.as_ref()?.to_str()?.parse().ok()
}

/// Whether the environment says a supervisor passed something, whatever
/// became of it.
pub(crate) fn env_supervised(env: &Snapshot) -> bool {
    env.hotsup_fd.is_some()
        || !matches!(
            activation::parse(activation_vars(env), std::process::id()),
            Ok(None)
        )
}

/// Takes ownership of the channel fd named by `HOTSUP_FD`, after checking it
/// is open and of the right type (so a wrong number never closes someone
/// else's fd).
fn open_channel(value: &OsString) -> Result<OwnedFd, StartupError> {
    let bad = || StartupError::BadEnv {
        var: hotsup_protocol::ENV_FD,
        value: value.to_string_lossy().into_owned(),
    };
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd: &RawFd| *fd >= 0)
        .ok_or_else(bad)?;
    // SAFETY: only used for `fcntl(F_GETFD)` and two getsockopt calls, which
    // fail harmlessly with EBADF if the fd is not open; nothing is closed.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if rustix::io::fcntl_getfd(borrowed).is_err() {
        return Err(StartupError::NotASocket { fd });
    }
    match sockets::is_seqpacket(borrowed) {
        Some(true) => {}
        Some(false) => return Err(StartupError::NotSeqpacket { fd }),
        None => return Err(StartupError::NotASocket { fd }),
    }
    // SAFETY: the fd is open and is an AF_UNIX SOCK_SEQPACKET socket, and
    // HOTSUP_FD hands it to this process; `Handoff::from_env` adopts once
    // per process, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn recv(channel: &OwnedFd) -> Result<hotsup_protocol::Received, StartupError> {
    hotsup_protocol::recv(channel.as_fd(), false).map_err(|e| match e {
        RecvError::Closed => StartupError::ChannelClosed,
        RecvError::Truncated | RecvError::FdsTruncated => StartupError::Truncated,
        RecvError::WouldBlock => StartupError::Io {
            operation: "receive from the supervisor",
            source: std::io::ErrorKind::WouldBlock.into(),
        },
        RecvError::Io(source) => StartupError::Io {
            operation: "receive from the supervisor",
            source,
        },
    })
}

struct Hello {
    generation: u64,
    listeners: usize,
    max_version: u32,
}

/// Reads up to and including `HELLO`.
fn receive_hello(channel: &OwnedFd, lifecycle: &Shared) -> Result<Hello, StartupError> {
    loop {
        let msg = recv(channel)?;
        match decode_ignoring_unknown(&msg.bytes)? {
            None => {}
            Some(ToChild::Hello {
                generation,
                listeners,
                max_version,
                ..
            }) => {
                return Ok(Hello {
                    generation,
                    listeners,
                    max_version,
                });
            }
            Some(ToChild::Drain { timeout }) => {
                lifecycle.drain(DrainReason::Supervisor { timeout });
            }
            Some(ToChild::Pause | ToChild::Resume) => {}
            Some(ToChild::Listeners { .. }) => {
                return Err(StartupError::UnexpectedMessage {
                    expected: "HELLO",
                    found: "LISTENERS".into(),
                });
            }
        }
    }
}

/// Decodes a message from the supervisor; `None` for a verb this version does
/// not know, which the protocol says to ignore.
fn decode_ignoring_unknown(bytes: &[u8]) -> Result<Option<ToChild>, StartupError> {
    match ToChild::decode(bytes) {
        Ok(msg) => Ok(Some(msg)),
        Err(DecodeError::UnknownVerb(_)) => Ok(None),
        // hotsup-protocol reads a HELLO's version before its other fields.
        Err(DecodeError::UnsupportedVersion(version)) => {
            Err(StartupError::UnsupportedVersion { version })
        }
        Err(e) => Err(StartupError::Malformed {
            detail: e.to_string(),
        }),
    }
}

/// Starts the thread that reads the channel after the handshake and turns
/// `DRAIN`, `PAUSE`, `RESUME` and end-of-file into lifecycle state.
fn spawn_watcher(
    channel: Arc<OwnedFd>,
    lifecycle: Arc<Shared>,
    spoken: Arc<AtomicU32>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("hotsup-channel".into())
        .spawn(move || watch_channel(&channel, &lifecycle, &spoken))?;
    Ok(())
}

fn watch_channel(channel: &OwnedFd, lifecycle: &Shared, spoken: &AtomicU32) {
    let mut complained = false;
    loop {
        let msg = match hotsup_protocol::recv(channel.as_fd(), false) {
            Ok(msg) => msg,
            Err(RecvError::WouldBlock) => {
                // Only if someone made the channel nonblocking behind our
                // back: wait for it rather than spin.
                let mut fds = [rustix::event::PollFd::new(
                    channel,
                    rustix::event::PollFlags::IN,
                )];
                let _ = rustix::event::poll(&mut fds, None);
                continue;
            }
            Err(RecvError::Truncated | RecvError::FdsTruncated) => {
                complain(&mut complained, "an oversized message");
                continue;
            }
            Err(RecvError::Closed | RecvError::Io(_)) => {
                lifecycle.drain(DrainReason::SupervisorGone);
                return;
            }
        };
        // Any fds attached to a message after the handshake are closed when
        // `msg` is dropped.
        let v2 = spoken.load(Ordering::SeqCst) >= PAUSE_VERSION;
        match ToChild::decode(&msg.bytes) {
            Ok(ToChild::Drain { timeout }) => lifecycle.drain(DrainReason::Supervisor { timeout }),
            Ok(ToChild::Pause) if v2 => lifecycle.set_paused(true),
            Ok(ToChild::Resume) if v2 => lifecycle.set_paused(false),
            Ok(other) => complain(&mut complained, &format!("an unexpected {other:?}")),
            // Unknown verbs are ignored: a newer supervisor may send messages
            // this version does not know.
            Err(DecodeError::UnknownVerb(_)) => {}
            Err(e) => complain(&mut complained, &e.to_string()),
        }
    }
}

fn complain(complained: &mut bool, what: &str) {
    if !*complained {
        *complained = true;
        crate::warn(format_args!(
            "ignoring {what} from the supervisor (further ones silently)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_has_nothing() {
        let h = Handoff::standalone();
        assert!(!h.is_supervised());
        assert!(h.listeners().is_empty());
        assert_eq!(h.protocol_version(), None);
        assert!(!h.enable_pause().unwrap());
        h.ready().unwrap();
        assert!(!h.unhealthy("fine really").unwrap());
        assert!(matches!(
            h.unhealthy("two\nlines"),
            Err(Error::InvalidText { .. })
        ));
    }
}
