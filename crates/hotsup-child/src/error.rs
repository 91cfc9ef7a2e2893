//! The crate's error type.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use hotsup_protocol::{DecodeError, EncodeError, Kind, RecvError};

/// Everything that can go wrong while inheriting sockets from the supervisor,
/// reporting readiness or binding a fallback.
///
/// Errors of the start-up handoff (reading `HOTSUP_FD`, `HELLO` and the
/// `LISTENERS` messages) are kept for the life of the process: every later
/// call of the process-global functions returns them again, wrapped in
/// [`Error::Handoff`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `HOTSUP_FD`, `LISTEN_FDS`, `LISTEN_PID` or `LISTEN_FDS_FIRST_FD` is
    /// set but its value does not parse.
    #[error("environment variable {var} has an invalid value {value:?}")]
    BadEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value, lossily converted to UTF-8.
        value: String,
    },

    /// The channel fd named by `HOTSUP_FD` is not open or not a socket, or an
    /// fd that `LISTEN_FDS` passes is not open.
    #[error("fd {fd} is not an open socket")]
    NotASocket {
        /// The file descriptor number.
        fd: RawFd,
    },

    /// The channel fd is a socket, but not an `AF_UNIX` `SOCK_SEQPACKET` one.
    #[error("fd {fd} is not an AF_UNIX SOCK_SEQPACKET socket")]
    NotSeqpacket {
        /// The file descriptor number.
        fd: RawFd,
    },

    /// The supervisor speaks a protocol version this crate does not know.
    #[error(
        "unsupported hotsup protocol version {version} (this library speaks version {})",
        hotsup_protocol::VERSION
    )]
    UnsupportedVersion {
        /// The version the supervisor announced in `HELLO`.
        version: u32,
    },

    /// A message from the supervisor is malformed.
    #[error("malformed message from the supervisor: {0}")]
    Protocol(#[from] DecodeError),

    /// The supervisor sent a well-formed message at the wrong point of the
    /// handshake (for example `LISTENERS` before `HELLO`).
    #[error("expected {expected} from the supervisor, got {found}")]
    UnexpectedMessage {
        /// The verb that was expected.
        expected: &'static str,
        /// The verb that arrived.
        found: String,
    },

    /// A `LISTENERS` message does not start where the previous one ended.
    #[error("LISTENERS message starts at {found}, expected {expected}")]
    OutOfOrder {
        /// The index the message should have started at.
        expected: usize,
        /// The `start` it carried.
        found: usize,
    },

    /// A `LISTENERS` message carries a different number of fds than entries.
    #[error("LISTENERS message describes {expected} listeners but carries {found} fds")]
    FdCountMismatch {
        /// Number of listener lines in the message.
        expected: usize,
        /// Number of file descriptors attached.
        found: usize,
    },

    /// The `LISTENERS` messages describe more listeners than `HELLO` announced.
    #[error("HELLO announced {expected} listeners but LISTENERS messages carry at least {found}")]
    ListenerCountMismatch {
        /// The count from `HELLO`.
        expected: usize,
        /// How many arrived.
        found: usize,
    },

    /// Two inherited listeners share a name.
    #[error("the supervisor sent two listeners named {name:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },

    /// Receiving from the supervisor channel failed, or the channel was closed
    /// during the handshake.
    #[error("receiving from the supervisor channel failed: {0}")]
    Channel(#[source] RecvError),

    /// No inherited listener has this name.
    #[error("no inherited listener named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },

    /// No inherited listener is of this kind (for
    /// [`inherit_listener`](crate::inherit_listener), which takes the first
    /// TCP listener).
    #[error("no inherited {kind} listener")]
    NoListenerOfKind {
        /// The kind asked for.
        kind: Kind,
    },

    /// The listener exists but is not of the kind asked for, or the socket
    /// that arrived does not match the kind the supervisor declared.
    #[error("listener {name:?} is not a {expected} listener: found {found}")]
    WrongKind {
        /// The listener's name.
        name: String,
        /// The kind asked for.
        expected: Kind,
        /// What the listener is: its declared kind, or a description of the
        /// socket that arrived (for example `unix stream socket, not listening`).
        found: String,
    },

    /// The listener was already taken; each listener can be taken once.
    #[error("listener {name:?} was already taken")]
    AlreadyTaken {
        /// The listener's name.
        name: String,
    },

    /// The inherited fd asked for is not a socket this crate can hand out
    /// (a listening TCP or Unix stream socket, or a bound UDP socket).
    ///
    /// Only with socket activation (`LISTEN_FDS`), where the kinds are not
    /// declared but found by looking at the fds: such an fd is kept open and
    /// keeps its name, but is not in [`listeners`](crate::listeners) and
    /// cannot be taken.
    #[error(
        "inherited fd {fd} is not a listening TCP or Unix stream socket or a UDP socket: found {found}"
    )]
    UnsupportedInheritedFd {
        /// The file descriptor number.
        fd: RawFd,
        /// What the fd is, for example `not a socket` or
        /// `inet stream socket, not listening`.
        found: String,
    },

    /// Sending a notification to `NOTIFY_SOCKET` failed.
    #[error("cannot notify {socket:?} (NOTIFY_SOCKET): {source}")]
    Notify {
        /// The value `NOTIFY_SOCKET` had.
        socket: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Binding the standalone fallback address failed.
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// The fallback address, as given.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A status text cannot be sent (it contains a line break or is too long).
    #[error("cannot encode message: {0}")]
    Encode(#[from] EncodeError),

    /// The start-up handoff failed; this is its error, shared by every call.
    #[error("the handoff from the hotsup supervisor failed: {0}")]
    Handoff(#[source] Arc<Error>),

    /// Any other OS error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<RecvError> for Error {
    fn from(e: RecvError) -> Self {
        Error::Channel(e)
    }
}
