//! The wire protocol between the hotsup supervisor and the servers it runs,
//! and its reference implementation.
//!
//! The supervisor (`hotsup`) and the Rust app library (`hotsup-child`) both
//! use this crate. This page is the specification, for implementers in any
//! language: a child that follows it gets its listening sockets from hotsup,
//! reports readiness, and drains, pauses and resumes when told.
//!
//! # 1. The channel
//!
//! For each child it starts, the supervisor creates a
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)`, keeps one end, and passes the other
//! to the child as an inherited file descriptor. The child's environment
//! holds:
//!
//! | variable | value |
//! |---|---|
//! | `HOTSUP_FD` ([`ENV_FD`]) | the decimal number of the child's end |
//! | `HOTSUP_GENERATION` ([`ENV_GENERATION`]) | the child's generation, decimal: 1 for the first child, then 2, 3, … (for information; `HELLO` is authoritative) |
//!
//! The child should check that the fd is an `AF_UNIX` `SOCK_SEQPACKET`
//! socket (`getsockopt(SO_DOMAIN)`, `SO_TYPE`), set close-on-exec on it, and
//! keep both variables away from the programs it starts itself (they would
//! find the number closed or reused).
//!
//! (`hotsup run --fds systemd` uses systemd's socket activation protocol
//! instead: `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, `NOTIFY_SOCKET`, a
//! signal to drain. None of this page applies there.)
//!
//! # 2. Framing
//!
//! - Each message is one `SOCK_SEQPACKET` record: one `sendmsg`, received
//!   by one `recvmsg`. The kernel keeps the boundaries; there is no length
//!   prefix and no terminator.
//! - A message is UTF-8 text of at most [`MAX_MESSAGE`] (65536) bytes.
//!   Receive with a buffer of at least 65537 bytes, and treat `MSG_TRUNC`
//!   as an error.
//! - Lines are separated by `\n` (0x0A), with no trailing newline. `\r`
//!   appears nowhere.
//! - The first line is a verb (ASCII capitals) followed by zero or more
//!   fields `key=value`, separated by single spaces. Keys are lower case;
//!   values contain no space. Field order is not significant. A receiver
//!   ignores keys it does not know.
//! - Further lines, if any, depend on the verb. Free text (`STATUS`,
//!   `UNHEALTHY`) is the rest of the first line after the verb and one
//!   space.
//! - A receiver ignores a well-formed message whose verb it does not know
//!   (closing any fds attached to it). Every verb below is defined for one
//!   direction only.
//!
//! ## File descriptors
//!
//! Only `LISTENERS` carries fds: all of them in one `SCM_RIGHTS` control
//! message, in the order of its lines, at most [`MAX_FDS_PER_MESSAGE`]
//! (252; the kernel allows 253 and musl 252). Receive with
//! `MSG_CMSG_CLOEXEC` and control space for 252 fds. `MSG_CTRUNC` means fds
//! were lost (too many, or over `RLIMIT_NOFILE`): an error. Raise the soft
//! `RLIMIT_NOFILE` to the hard limit before receiving: the kernel silently
//! drops fds beyond it. A receiver closes fds attached to any other message.
//!
//! The fds share their open file descriptions with the supervisor and with
//! every other generation of the app. `O_NONBLOCK` belongs to the open file
//! description: set the mode you need, explicitly, and use the same mode in
//! every generation. Nonblocking is the one that lets an accept loop notice
//! `PAUSE` and `DRAIN` promptly.
//!
//! # 3. Supervisor to child
//!
//! | message (exact bytes, `<…>` replaced by decimal numbers) | meaning |
//! |---|---|
//! | `HELLO version=1 generation=<g> listeners=<n>` | first message, from a version 1 supervisor |
//! | `HELLO version=1 generation=<g> listeners=<n> max_version=2` | first message, from a supervisor that also speaks version 2 |
//! | `LISTENERS start=<s> count=<c>` + `c` lines `<kind> <name> <address>`, + `c` fds | a chunk of listeners |
//! | `DRAIN timeout_ms=<t>` | drain: stop accepting, finish, exit within `t` ms |
//! | `PAUSE` | version 2: accept nothing new until `RESUME` |
//! | `RESUME` | version 2: accept again |
//!
//! - **`HELLO`** is always the first message. `version` is the version of
//!   the framing, which a child reads *before* any other field: a child that
//!   does not know it exits with an error. Supervisors write
//!   [`BASE_VERSION`] (1) there and offer more in `max_version` (absent
//!   means equal to `version`). `generation` is the child's generation; `n`
//!   the total number of listeners.
//! - **`LISTENERS`** messages immediately follow `HELLO`: `ceil(n / 252)` of
//!   them (none when `n` is 0), with `start` = 0, 252, 504, … in that order.
//!   Each listener line is `<kind> <name> <address>`:
//!   - `kind`: `tcp` (a listening TCP socket, IPv4 or IPv6), `udp` (a bound
//!     UDP socket) or `unix` (a listening Unix stream socket);
//!   - `name`: 1 to 255 bytes of ASCII letters, digits, `-`, `_` and `.`
//!     ([`valid_name`]), unique among the listeners;
//!   - `address`: the rest of the line: `ip:port`, `[ipv6]:port`, or a Unix
//!     socket path (which may contain spaces).
//! - **`DRAIN`** may arrive at any time after `HELLO`, even between
//!   `LISTENERS` messages and before `READY`. The child stops accepting,
//!   finishes its work in flight, and exits (or closes its end of the
//!   channel) within `t` milliseconds of receiving it; then the supervisor
//!   kills the child's process group with `SIGKILL`. A second `DRAIN` may
//!   shorten the deadline, never lengthen it. `DRAIN` ends any pause.
//! - **`PAUSE`** and **`RESUME`** (version 2) come only after the child
//!   answered `HELLO version=2`. While paused, the child accepts no new
//!   connection (and reads no new datagram) on any listener, but keeps the
//!   listeners open, keeps running, and keeps serving its open connections:
//!   the supervisor pauses the previous generation while a new one is on
//!   probation, so that it can take the traffic back at once with `RESUME`
//!   if the new one fails. `PAUSE` while paused and `RESUME` while serving
//!   change nothing; `RESUME` after `DRAIN` is ignored.
//!
//! # 4. Child to supervisor
//!
//! | message (exact bytes) | meaning |
//! |---|---|
//! | `READY` | the child serves |
//! | `STATUS <text>` | a line for the supervisor's log |
//! | `HELLO version=2` | version 2: the child's answer to `HELLO` |
//! | `UNHEALTHY <text>` | version 2: alive, but cannot serve correctly |
//!
//! - **`READY`**: the child serves. The supervisor counts a new generation
//!   as up, and drains (or pauses) the previous one, only after it. Send it
//!   once.
//! - **`STATUS <text>`**: free-form, one line (no `\n`, no `\r`), logged by
//!   the supervisor and shown by `hotsup status`.
//! - **`HELLO version=2`**: sent at most once, after all `LISTENERS`
//!   arrived, and before `READY` (a supervisor must not rely on seeing it
//!   before `READY`, but a child should send it first so that the new
//!   generation can be paused as soon as it is ready). Only to a supervisor
//!   whose `max_version` is 2 or more. **Answer it only if you honour
//!   `PAUSE` and `RESUME` on every listener you accept on:** a paused
//!   generation that keeps accepting takes connections while the supervisor
//!   believes another generation serves.
//! - **`UNHEALTHY <text>`** (version 2, so only after `HELLO version=2`): the
//!   child is alive but cannot serve (its database is unreachable, say);
//!   one line. A generation on probation is rolled back: the previous one
//!   resumes, this one is drained.
//!
//! A message from the child carries no fds. The supervisor logs a malformed
//! message and stops reading the channel after 10 of them.
//!
//! # 5. Version negotiation
//!
//! | supervisor | child | the child receives | the child sends | result |
//! |---|---|---|---|---|
//! | version 1 | any | `HELLO version=1 …` (no `max_version`) | never `HELLO` | version 1 |
//! | version 2 | version 1 | `HELLO version=1 … max_version=2` | ignores the unknown field, never answers | version 1: no `PAUSE`, `RESUME` |
//! | version 2 | version 2, honours `PAUSE` | `HELLO version=1 … max_version=2` | `HELLO version=2` | version 2 |
//!
//! A version 1 child is treated as version 1 for its whole life: the
//! supervisor drains it as before, and never sends it a version 2 message.
//! Within a version, new fields and new verbs may be added; receivers
//! ignore them. An incompatible change of the framing would get a new
//! `version` in `HELLO`, which older children refuse.
//!
//! # 6. End of file and errors
//!
//! - A `recvmsg` that returns 0 bytes and no fds means the peer closed its
//!   end. For the child that means the supervisor died: nobody will start a
//!   successor or stop it, so it drains, without deadline. For the
//!   supervisor it means the child exited or gave up the channel.
//! - An error in the handshake (an unknown `version`, a malformed `HELLO` or
//!   `LISTENERS`, `LISTENERS` out of order or with the wrong number of fds,
//!   more listeners than announced, a duplicate name, end of file before
//!   all listeners arrived) is fatal for the child: it closes every fd it
//!   received and exits with a non-zero status, and the supervisor sees the
//!   new generation fail (the old one keeps serving).
//! - After the handshake, a child ignores (and may log) messages it cannot
//!   decode.
//!
//! # 7. A child in another language, step by step
//!
//! 1. Read `HOTSUP_FD`. If it is unset, run without hotsup (or look for
//!    `LISTEN_FDS`). Check the fd is an `AF_UNIX` `SOCK_SEQPACKET` socket;
//!    set `FD_CLOEXEC` on it; make sure it is blocking.
//! 2. Raise the soft `RLIMIT_NOFILE` to the hard limit.
//! 3. `recvmsg` the first message (buffer 65537 bytes, control space for 252
//!    fds, `MSG_CMSG_CLOEXEC`). It must be `HELLO`; read `version` first and
//!    refuse anything but 1. Note `generation`, `listeners` (`n`) and
//!    `max_version` (default: `version`). If a `DRAIN` arrives first or in
//!    between, remember it and go on.
//! 4. `recvmsg` until `n` listeners arrived: each `LISTENERS` message's
//!    `start` must equal the number received so far, its line count must
//!    equal `count` and its fd count too. Keep fd *i* with line *i*.
//! 5. Set the mode of each socket you use (nonblocking, normally), and start
//!    serving: accept on the sockets, by name.
//! 6. If `max_version` ≥ 2 and every accept loop follows the pause state,
//!    send `HELLO version=2`.
//! 7. Send `READY`.
//! 8. Keep reading the channel (a thread, or the event loop): on `DRAIN`
//!    stop accepting, finish the work in flight and exit before the
//!    deadline; on `PAUSE` stop accepting (keep everything else); on
//!    `RESUME` accept again; on end of file drain. Ignore unknown verbs.
//! 9. Optionally send `STATUS <text>` at any time, and `UNHEALTHY <text>`
//!    (version 2) when the process cannot serve.
//!
//! # 8. Transcripts
//!
//! Version 1:
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
//!
//! Version 2, with probation (`hotsup run --probation 5s`):
//!
//! ```text
//! supervisor -> gen 2   HELLO version=1 generation=2 listeners=1 max_version=2
//! supervisor -> gen 2   LISTENERS start=0 count=1          + SCM_RIGHTS [1 fd]
//!                       tcp http 127.0.0.1:8080
//! gen 2 -> supervisor   HELLO version=2
//! gen 2 -> supervisor   READY
//!      ... an upgrade starts generation 3, which answers HELLO version=2
//!      and sends READY ...
//! supervisor -> gen 2   PAUSE          (standby: gen 3 accepts, on probation)
//! gen 3 -> supervisor   UNHEALTHY database unreachable
//! supervisor -> gen 2   RESUME         (rolled back: gen 2 accepts again)
//! supervisor -> gen 3   DRAIN timeout_ms=30000
//! ```
//!
//! # This crate
//!
//! [`ToChild`] and [`FromChild`] are the messages, with `encode` and
//! `decode`; [`send`] and [`recv`] move one message and its fds;
//! [`chunk_listeners`] splits listeners into `LISTENERS` messages.

use std::fmt::{self, Write as _};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The highest protocol version this crate speaks.
///
/// Version 2 adds `PAUSE` and `RESUME` (supervisor to child) and the child's
/// `HELLO` and `UNHEALTHY` (child to supervisor). It is negotiated, so that
/// version 1 peers keep working unchanged; see [`BASE_VERSION`].
pub const VERSION: u32 = 2;

/// The version a supervisor writes in `version=` of its `HELLO`.
///
/// Every child rejects a `HELLO` whose `version` it does not know, so the
/// supervisor keeps announcing version 1, the framing every child reads, and
/// offers more in `max_version=`. A child that speaks version 2 answers with
/// its own `HELLO version=2` after it received the listeners; only then may
/// the supervisor send it version 2 messages. A version 1 child ignores the
/// unknown field and never answers, and is treated as version 1.
pub const BASE_VERSION: u32 = 1;

/// Most file descriptors attached to one message.
///
/// The kernel's `SCM_MAX_FD` is 253; musl's libc caps it at 252, so 252 is the
/// largest number every peer can receive in one `recvmsg`.
pub const MAX_FDS_PER_MESSAGE: usize = 252;

/// Largest message in bytes, in either direction.
///
/// A `LISTENERS` message with 252 Unix socket paths of 108 bytes stays well
/// below this.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Environment variable naming the child's end of the channel.
pub const ENV_FD: &str = "HOTSUP_FD";
/// Environment variable carrying the child's generation number (1, 2, …).
pub const ENV_GENERATION: &str = "HOTSUP_GENERATION";

/// What kind of socket a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A listening TCP socket (IPv4 or IPv6).
    Tcp,
    /// A bound UDP socket.
    Udp,
    /// A listening Unix stream socket.
    Unix,
}

impl Kind {
    /// The protocol's spelling: `tcp`, `udp` or `unix`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Unix => "unix",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "tcp" => Some(Kind::Tcp),
            "udp" => Some(Kind::Udp),
            "unix" => Some(Kind::Unix),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One listener as described on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Unique name, matching [`valid_name`].
    pub name: String,
    /// Socket kind.
    pub kind: Kind,
    /// The bound address: `ip:port`, `[v6]:port`, or a Unix socket path.
    pub address: String,
}

/// Whether `name` may name a listener: 1 to 255 bytes of ASCII letters,
/// digits, `-`, `_` and `.`.
///
/// This is a subset of what systemd allows in `LISTEN_FDNAMES`, so every
/// name also works there.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A message from the supervisor to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToChild {
    /// First message on every channel.
    Hello {
        /// Protocol version of the framing; a child rejects a version it
        /// does not know. Supervisors send [`BASE_VERSION`].
        version: u32,
        /// The child's generation number.
        generation: u64,
        /// How many listeners the following `LISTENERS` messages carry.
        listeners: usize,
        /// The highest version the supervisor speaks (`max_version=`,
        /// absent in version 1, which decodes as `version`).
        max_version: u32,
    },
    /// A chunk of listeners, with their fds attached in the same order.
    Listeners {
        /// Index of the first listener of this chunk.
        start: usize,
        /// The listeners of this chunk.
        entries: Vec<ListenerInfo>,
    },
    /// Stop accepting, finish in-flight work and exit within `timeout`.
    Drain {
        /// Time left before the supervisor kills the child's process group.
        timeout: Duration,
    },
    /// Version 2: stop accepting new connections, but keep the listeners,
    /// the process and every open connection. The supervisor sends it to the
    /// previous generation while a new one is on probation, so that it can
    /// take the traffic back at once with `RESUME`.
    Pause,
    /// Version 2: accept again after `PAUSE`.
    Resume,
}

/// A message from a child to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromChild {
    /// The child serves; the supervisor may drain the previous generation.
    Ready,
    /// Free-form status text for logs, at most one line.
    Status(String),
    /// Version 2: the child's answer to the supervisor's `HELLO`, naming the
    /// highest version both speak. Sent once, after the listeners arrived.
    Hello {
        /// The version the child will speak from now on.
        version: u32,
    },
    /// Version 2: the child is alive but cannot serve correctly. On
    /// probation, this rolls the upgrade back. At most one line.
    Unhealthy(String),
}

/// Why bytes could not be decoded as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message is not UTF-8.
    #[error("message is not UTF-8")]
    NotUtf8,
    /// The message is empty or its first line has no verb.
    #[error("empty message")]
    Empty,
    /// The verb is not one this version knows for this direction.
    #[error("unknown message {0:?}")]
    UnknownVerb(String),
    /// A required field is absent.
    #[error("{verb} lacks the field {field}")]
    MissingField {
        /// The message verb.
        verb: &'static str,
        /// The missing key.
        field: &'static str,
    },
    /// A field's value does not parse.
    #[error("{verb} has a bad value for {field}: {value:?}")]
    BadField {
        /// The message verb.
        verb: &'static str,
        /// The key.
        field: &'static str,
        /// The raw value.
        value: String,
    },
    /// A listener line is malformed.
    #[error("bad listener line {0:?}")]
    BadListener(String),
    /// The number of listener lines disagrees with `count`.
    #[error("LISTENERS says count={expected} but has {found} lines")]
    CountMismatch {
        /// Declared count.
        expected: usize,
        /// Lines present.
        found: usize,
    },
    /// The message exceeds [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLong(usize),
    /// A supervisor's `HELLO` announces a framing version other than
    /// [`BASE_VERSION`], the only one this crate reads; its other fields
    /// were not looked at.
    #[error("HELLO announces version {0}; this side reads version {BASE_VERSION}")]
    UnsupportedVersion(u32),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A listener name fails [`valid_name`].
    #[error("invalid listener name {0:?}")]
    BadName(String),
    /// An address or status text contains a line break.
    #[error("text contains a line break: {0:?}")]
    LineBreak(String),
    /// More entries than fit in one message.
    #[error("{0} listeners do not fit in one message (max {MAX_FDS_PER_MESSAGE})")]
    TooManyEntries(usize),
    /// The encoded message exceeds [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLong(usize),
}

fn check_line(s: &str) -> Result<(), EncodeError> {
    if s.contains(['\n', '\r']) {
        return Err(EncodeError::LineBreak(s.to_owned()));
    }
    Ok(())
}

fn finish(buf: String) -> Result<Vec<u8>, EncodeError> {
    if buf.len() > MAX_MESSAGE {
        return Err(EncodeError::TooLong(buf.len()));
    }
    Ok(buf.into_bytes())
}

impl ToChild {
    /// Encodes the message to its wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = String::new();
        match self {
            ToChild::Hello {
                version,
                generation,
                listeners,
                max_version,
            } => {
                let _ = write!(
                    out,
                    "HELLO version={version} generation={generation} listeners={listeners}"
                );
                // Version 1 supervisors never wrote the field; leaving it out
                // when it adds nothing keeps their exact bytes.
                if max_version != version {
                    let _ = write!(out, " max_version={max_version}");
                }
            }
            ToChild::Listeners { start, entries } => {
                if entries.len() > MAX_FDS_PER_MESSAGE {
                    return Err(EncodeError::TooManyEntries(entries.len()));
                }
                let _ = write!(out, "LISTENERS start={start} count={}", entries.len());
                for e in entries {
                    if !valid_name(&e.name) {
                        return Err(EncodeError::BadName(e.name.clone()));
                    }
                    check_line(&e.address)?;
                    let _ = write!(out, "\n{} {} {}", e.kind, e.name, e.address);
                }
            }
            ToChild::Drain { timeout } => {
                let _ = write!(out, "DRAIN timeout_ms={}", timeout.as_millis());
            }
            ToChild::Pause => out.push_str("PAUSE"),
            ToChild::Resume => out.push_str("RESUME"),
        }
        finish(out)
    }

    /// Decodes wire bytes sent by a supervisor.
    pub fn decode(bytes: &[u8]) -> Result<ToChild, DecodeError> {
        let (verb, fields, rest) = split(bytes)?;
        match verb {
            "HELLO" => {
                // The version decides how to read everything else, so it is
                // read first and alone: a later version may drop or change
                // the other fields.
                let version = fields.num("HELLO", "version")?;
                if version != BASE_VERSION {
                    return Err(DecodeError::UnsupportedVersion(version));
                }
                Ok(ToChild::Hello {
                    version,
                    generation: fields.num("HELLO", "generation")?,
                    listeners: fields.num("HELLO", "listeners")?,
                    max_version: fields.opt_num("HELLO", "max_version")?.unwrap_or(version),
                })
            }
            "LISTENERS" => {
                let start = fields.num("LISTENERS", "start")?;
                let count: usize = fields.num("LISTENERS", "count")?;
                if count > MAX_FDS_PER_MESSAGE {
                    return Err(DecodeError::BadField {
                        verb: "LISTENERS",
                        field: "count",
                        value: count.to_string(),
                    });
                }
                let mut entries = Vec::with_capacity(count);
                for line in rest.split('\n').filter(|_| !rest.is_empty()) {
                    entries.push(parse_listener(line)?);
                }
                if entries.len() != count {
                    return Err(DecodeError::CountMismatch {
                        expected: count,
                        found: entries.len(),
                    });
                }
                Ok(ToChild::Listeners { start, entries })
            }
            "DRAIN" => Ok(ToChild::Drain {
                timeout: Duration::from_millis(fields.num("DRAIN", "timeout_ms")?),
            }),
            "PAUSE" => Ok(ToChild::Pause),
            "RESUME" => Ok(ToChild::Resume),
            other => Err(DecodeError::UnknownVerb(truncate(other))),
        }
    }
}

impl FromChild {
    /// Encodes the message to its wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            FromChild::Ready => finish("READY".to_owned()),
            FromChild::Status(text) => {
                check_line(text)?;
                finish(format!("STATUS {text}"))
            }
            FromChild::Hello { version } => finish(format!("HELLO version={version}")),
            FromChild::Unhealthy(text) => {
                check_line(text)?;
                finish(format!("UNHEALTHY {text}"))
            }
        }
    }

    /// Decodes wire bytes sent by a child.
    pub fn decode(bytes: &[u8]) -> Result<FromChild, DecodeError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
        let first = text.split('\n').next().unwrap_or("");
        let (verb, tail) = first.split_once(' ').unwrap_or((first, ""));
        match verb {
            "READY" => Ok(FromChild::Ready),
            // Same rule as the encoder: status text is one line.
            "STATUS" if tail.contains('\r') => Err(DecodeError::BadField {
                verb: "STATUS",
                field: "text",
                value: truncate(tail),
            }),
            "STATUS" => Ok(FromChild::Status(tail.to_owned())),
            "UNHEALTHY" if tail.contains('\r') => Err(DecodeError::BadField {
                verb: "UNHEALTHY",
                field: "text",
                value: truncate(tail),
            }),
            "UNHEALTHY" => Ok(FromChild::Unhealthy(tail.to_owned())),
            "HELLO" => {
                let (_, fields, _) = split(bytes)?;
                Ok(FromChild::Hello {
                    version: fields.num("HELLO", "version")?,
                })
            }
            "" => Err(DecodeError::Empty),
            other => Err(DecodeError::UnknownVerb(truncate(other))),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl Fields<'_> {
    fn opt_num<T: std::str::FromStr>(
        &self,
        verb: &'static str,
        field: &'static str,
    ) -> Result<Option<T>, DecodeError> {
        if self.0.iter().any(|(k, _)| *k == field) {
            self.num(verb, field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn num<T: std::str::FromStr>(
        &self,
        verb: &'static str,
        field: &'static str,
    ) -> Result<T, DecodeError> {
        let raw = self
            .0
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| *v)
            .ok_or(DecodeError::MissingField { verb, field })?;
        raw.parse().map_err(|_| DecodeError::BadField {
            verb,
            field,
            value: truncate(raw),
        })
    }
}

/// Splits a message into its verb, its `key=value` fields (unknown keys are
/// kept and ignored, so later versions can add fields) and the lines after
/// the first.
fn split(bytes: &[u8]) -> Result<(&str, Fields<'_>, &str), DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = first.split(' ').filter(|w| !w.is_empty());
    let verb = words.next().ok_or(DecodeError::Empty)?;
    let fields = words.filter_map(|w| w.split_once('=')).collect();
    Ok((verb, Fields(fields), rest))
}

fn parse_listener(line: &str) -> Result<ListenerInfo, DecodeError> {
    let bad = || DecodeError::BadListener(truncate(line));
    let mut parts = line.splitn(3, ' ');
    let kind = parts.next().and_then(Kind::parse).ok_or_else(bad)?;
    let name = parts.next().filter(|n| valid_name(n)).ok_or_else(bad)?;
    // A `\r` (a peer ending lines with CRLF) is refused here as the encoder
    // refuses it: an address must never carry it into a bind or a log.
    let address = parts
        .next()
        .filter(|a| !a.is_empty() && !a.contains('\r'))
        .ok_or_else(bad)?;
    Ok(ListenerInfo {
        name: name.to_owned(),
        kind,
        address: address.to_owned(),
    })
}

/// Why a message could not be received.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The peer closed the channel.
    #[error("channel closed by peer")]
    Closed,
    /// The message was larger than the buffer; it was discarded.
    #[error("message truncated")]
    Truncated,
    /// More fds were attached than [`MAX_FDS_PER_MESSAGE`], or the kernel
    /// truncated them (`MSG_CTRUNC`, for example at `RLIMIT_NOFILE`). The ones
    /// that did arrive were closed.
    #[error("file descriptors truncated (too many, or RLIMIT_NOFILE reached)")]
    FdsTruncated,
    /// The operation would block (nonblocking socket).
    #[error("would block")]
    WouldBlock,
    /// Any other OS error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One received message: its bytes and the fds attached to it.
#[derive(Debug)]
pub struct Received {
    /// The message bytes.
    pub bytes: Vec<u8>,
    /// File descriptors attached with `SCM_RIGHTS`, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Sends one message with `fds` attached, in a single `sendmsg`.
///
/// `fds` must hold at most [`MAX_FDS_PER_MESSAGE`] descriptors. On a
/// nonblocking socket this may fail with `WouldBlock`; nothing was sent then.
pub fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "too many fds for one message",
        ));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("control buffer too small"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        // SOCK_SEQPACKET sends whole records or fails; a short count would
        // mean the socket is of the wrong type.
        return Err(std::io::Error::other("short send on a SEQPACKET channel"));
    }
    Ok(())
}

/// Receives one message and the fds attached to it.
///
/// The fds are received close-on-exec. A message larger than
/// [`MAX_MESSAGE`] or carrying more than [`MAX_FDS_PER_MESSAGE`] fds is an
/// error, and every fd that came with it is closed before returning.
pub fn recv(socket: BorrowedFd<'_>, nonblocking: bool) -> Result<Received, RecvError> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut space =
        vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let msg = loop {
        match rustix::net::recvmsg(
            socket.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            flags,
        ) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Err(RecvError::WouldBlock),
            Err(e) => return Err(RecvError::Io(e.into())),
        }
    };
    // Take ownership of every fd first, so that any error below closes them.
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    // The control buffer's alignment padding can fit a 253rd fd; the limit is
    // the protocol's, not the buffer's.
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(RecvError::FdsTruncated);
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.bytes > MAX_MESSAGE {
        return Err(RecvError::Truncated);
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(RecvError::Closed);
    }
    buf.truncate(msg.bytes);
    Ok(Received { bytes: buf, fds })
}

/// Splits `listeners` into the `LISTENERS` messages that follow `HELLO`, each
/// with the indices of the fds it carries.
pub fn chunk_listeners(listeners: &[ListenerInfo]) -> Vec<(ToChild, std::ops::Range<usize>)> {
    listeners
        .chunks(MAX_FDS_PER_MESSAGE)
        .enumerate()
        .map(|(i, chunk)| {
            let start = i * MAX_FDS_PER_MESSAGE;
            (
                ToChild::Listeners {
                    start,
                    entries: chunk.to_vec(),
                },
                start..start + chunk.len(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
