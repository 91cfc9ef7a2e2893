//! The crate's two error types: [`StartupError`], of the handoff at start,
//! and [`Error`], of one call.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::Kind;

/// Why the handoff at start-up failed: the environment, the channel or the
/// supervisor's messages are not what the protocol says.
///
/// Fatal: the process cannot serve the sockets it was meant to serve. Exit
/// with an error, so that the supervisor sees the new generation fail and
/// keeps the old one. The process-wide functions keep this error and return
/// it again from every later call, as [`Error::Startup`].
///
/// `Display` is one sentence for a log line; `Debug` (what
/// `fn main() -> Result<(), StartupError>` prints) is the same sentence with
/// its causes.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// `HOTSUP_FD`, `LISTEN_FDS`, `LISTEN_PID` or `LISTEN_FDS_FIRST_FD` is
    /// set but its value does not parse.
    #[error("environment variable {var} has an invalid value {value:?}")]
    BadEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value, lossily converted to UTF-8.
        value: String,
    },

    /// The channel fd named by `HOTSUP_FD` is not open or not a socket, or
    /// an fd that `LISTEN_FDS` passes is not open.
    #[error("inherited fd {fd} is not an open socket")]
    NotASocket {
        /// The file descriptor number.
        fd: RawFd,
    },

    /// The channel fd is a socket, but not an `AF_UNIX` `SOCK_SEQPACKET` one.
    #[error("fd {fd} (HOTSUP_FD) is not an AF_UNIX SOCK_SEQPACKET socket")]
    NotSeqpacket {
        /// The file descriptor number.
        fd: RawFd,
    },

    /// The supervisor's `HELLO` announces a framing version this crate does
    /// not know.
    #[error(
        "the supervisor speaks hotsup protocol version {version}, this library version {}",
        hotsup_protocol::BASE_VERSION
    )]
    UnsupportedVersion {
        /// The version the supervisor announced in `HELLO`.
        version: u32,
    },

    /// A message from the supervisor does not parse.
    #[error("malformed message from the supervisor: {detail}")]
    Malformed {
        /// What is wrong with it.
        detail: String,
    },

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
    #[error("a LISTENERS message starts at {found}, expected {expected}")]
    OutOfOrder {
        /// The index the message should have started at.
        expected: usize,
        /// The `start` it carried.
        found: usize,
    },

    /// A `LISTENERS` message carries a different number of fds than entries.
    #[error("a LISTENERS message describes {expected} listeners but carries {found} fds")]
    FdCountMismatch {
        /// Number of listener lines in the message.
        expected: usize,
        /// Number of file descriptors attached.
        found: usize,
    },

    /// The `LISTENERS` messages describe more listeners than `HELLO`
    /// announced.
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

    /// The supervisor closed the channel before the handshake was complete.
    #[error("the supervisor closed the channel during the handshake")]
    ChannelClosed,

    /// A message, or the fds attached to it, did not fit: more than the
    /// protocol allows, or the kernel dropped fds at `RLIMIT_NOFILE`.
    #[error("a message from the supervisor was truncated (too long, or fds over RLIMIT_NOFILE)")]
    Truncated,

    /// An operation of the handshake failed in the OS.
    #[error("cannot {operation}")]
    Io {
        /// What was being done, such as `receive from the supervisor`.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// [`Handoff::from_env`](crate::Handoff::from_env) was already called
    /// in this process (perhaps by a process-wide function of this crate):
    /// the inherited fds have one owner.
    #[error(
        "the inherited sockets were already adopted in this process (Handoff::from_env runs once)"
    )]
    AlreadyAdopted,
}

/// What went wrong in one call: a listener that is not there or not of the
/// kind asked for, a fallback that cannot be bound, a message that cannot be
/// sent, or the start-up failure ([`Error::Startup`]).
///
/// `Display` is one sentence for a log line; `Debug` (what
/// `fn main() -> Result<(), hotsup_child::Error>` prints) is the same
/// sentence with its causes:
///
/// ```text
/// Error: the handoff from the hotsup supervisor failed at start-up
///
/// Caused by:
///     inherited fd 99 is not an open socket
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handoff at start-up failed; every call of the process-wide
    /// functions returns it.
    #[error("the handoff from the hotsup supervisor failed at start-up")]
    Startup(#[source] Arc<StartupError>),

    /// No inherited listener has this name.
    #[error("no inherited listener is named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },

    /// Standalone (no supervisor passed sockets), a listener was asked for
    /// by name without a fallback to bind ([`Take::or_bind`](crate::Take)).
    #[error("running without a supervisor, and listener {name:?} has no fallback address to bind")]
    NoFallback {
        /// The name asked for.
        name: String,
    },

    /// No inherited listener is of this kind (for
    /// [`first_tcp`](crate::Handoff::first_tcp)).
    #[error("no inherited {kind} listener")]
    NoListenerOfKind {
        /// The kind asked for.
        kind: Kind,
    },

    /// The listener exists but is not of the kind asked for, or the socket
    /// that arrived does not match the kind the supervisor declared.
    #[error("listener {name:?} is not a {expected} listener: it is {found}")]
    WrongKind {
        /// The listener's name.
        name: String,
        /// The kind asked for.
        expected: Kind,
        /// What the listener is: its declared kind, or a description of the
        /// socket that arrived (for example `a unix stream socket, not
        /// listening`).
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
    /// keeps its name, but is not in [`listeners`](crate::Handoff::listeners)
    /// and cannot be taken.
    #[error(
        "inherited fd {fd} ({name:?}) is not a listening TCP or Unix stream socket or a UDP socket: it is {found}"
    )]
    UnsupportedInheritedFd {
        /// The name it was given.
        name: String,
        /// The file descriptor number.
        fd: RawFd,
        /// What the fd is, for example `not a socket` or
        /// `an inet stream socket, not listening`.
        found: String,
    },

    /// Binding the standalone fallback address failed.
    #[error("cannot bind {address}")]
    Bind {
        /// The fallback address, as resolved.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Setting up a listener that was taken or bound failed: its mode, or
    /// registering it with the async runtime.
    #[error("cannot {operation} listener {name:?}")]
    Setup {
        /// What was being done, such as `make nonblocking`.
        operation: &'static str,
        /// The listener's name (or the fallback address).
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Sending a message to the supervisor on the channel failed: it is
    /// probably gone.
    #[error("cannot send {message} to the supervisor")]
    Send {
        /// The verb: `READY`, `STATUS`, `HELLO` or `UNHEALTHY`.
        message: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Sending a notification to `NOTIFY_SOCKET` failed.
    #[error("cannot notify {socket:?} (NOTIFY_SOCKET)")]
    Notify {
        /// The value `NOTIFY_SOCKET` had.
        socket: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A status or unhealthy text cannot be sent: it contains a line break
    /// or is longer than a message may be.
    #[error("text cannot be sent: it must be one line of at most 64 KiB: {text:?}")]
    InvalidText {
        /// The first 64 characters of the text.
        text: String,
    },
}

impl From<StartupError> for Error {
    fn from(e: StartupError) -> Self {
        Error::Startup(Arc::new(e))
    }
}

impl Error {
    pub(crate) fn invalid_text(text: &str) -> Error {
        Error::InvalidText {
            text: text.chars().take(64).collect(),
        }
    }
}

/// Writes `error` and its causes, as `main` shows them.
fn chain(error: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{error}")?;
    let mut cause = error.source();
    if cause.is_some() {
        f.write_str("\n\nCaused by:")?;
    }
    while let Some(e) = cause {
        write!(f, "\n    {e}")?;
        cause = e.source();
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        chain(self, f)
    }
}

impl From<hotsup_os::activation::Error> for StartupError {
    fn from(e: hotsup_os::activation::Error) -> StartupError {
        use hotsup_os::activation::Error as E;
        match e {
            E::BadEnv { var, value } => StartupError::BadEnv { var, value },
            E::NotOpen { fd } => StartupError::NotASocket { fd },
            E::Io { source, .. } => StartupError::Io {
                operation: "make an inherited fd close-on-exec",
                source,
            },
        }
    }
}

impl fmt::Debug for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        chain(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_prints_the_sentence_and_its_causes() {
        let e = Error::from(StartupError::NotASocket { fd: 99 });
        assert_eq!(
            format!("{e:?}"),
            "the handoff from the hotsup supervisor failed at start-up\n\n\
             Caused by:\n    inherited fd 99 is not an open socket"
        );
        assert_eq!(
            e.to_string(),
            "the handoff from the hotsup supervisor failed at start-up"
        );
        let e = Error::Bind {
            address: "127.0.0.1:80".into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            format!("{e:?}"),
            "cannot bind 127.0.0.1:80\n\nCaused by:\n    address in use"
        );
        let e = Error::NotFound { name: "web".into() };
        assert_eq!(format!("{e:?}"), "no inherited listener is named \"web\"");
    }
}
