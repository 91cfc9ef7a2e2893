//! Receiving the sockets from the supervisor, and handing them out.

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use hotsup_protocol::{FromChild, Kind, ListenerInfo, ToChild};
use rustix::io::FdFlags;

use crate::drain::{self, Drain, DrainReason, Shared};
use crate::error::Error;
use crate::inherited::Sockets;
use crate::sockets;

/// The sockets and channel a supervisor handed to this process.
///
/// Most apps never touch this type: the process-global functions
/// ([`inherit_listener`](crate::inherit_listener),
/// [`tcp_listener`](crate::tcp_listener), [`ready`](crate::ready),
/// [`drain`](crate::drain()), …) create one from `HOTSUP_FD` on first use.
/// [`Handoff::receive`] is public for tests, and for programs that get the
/// channel some other way.
///
/// Receiving starts a background thread that reads the channel for the rest of
/// the process's life and feeds [`Handoff::drain`].
#[derive(Debug)]
pub struct Handoff {
    channel: Arc<OwnedFd>,
    generation: u64,
    sockets: Sockets,
    /// Whether `READY` was sent.
    ready: Mutex<bool>,
    drain: Arc<Shared>,
}

impl Handoff {
    /// Performs the child's side of the handshake on `channel`: checks that it
    /// is an `AF_UNIX` `SOCK_SEQPACKET` socket, makes it close-on-exec and
    /// blocking, reads `HELLO` and every `LISTENERS` message, and starts the
    /// thread that watches the channel for `DRAIN` and end-of-file.
    ///
    /// Raises the soft `RLIMIT_NOFILE` to the hard limit first, because the
    /// kernel silently drops received fds beyond it.
    ///
    /// On error every fd received so far is closed, and so is `channel`.
    pub fn receive(channel: OwnedFd) -> Result<Handoff, Error> {
        let fd = channel.as_raw_fd();
        match sockets::is_seqpacket(channel.as_fd()) {
            Ok(true) => {}
            Ok(false) => return Err(Error::NotSeqpacket { fd }),
            Err(()) => return Err(Error::NotASocket { fd }),
        }
        rustix::io::fcntl_setfd(&channel, FdFlags::CLOEXEC).map_err(std::io::Error::from)?;
        // The child's end is its own open file description, so this changes
        // nobody else's mode.
        rustix::io::ioctl_fionbio(&channel, false).map_err(std::io::Error::from)?;

        let drain = Shared::new();
        let (generation, count) = receive_hello(&channel, &drain)?;
        sockets::raise_nofile_limit();

        // `count` comes from the wire; don't let it size an allocation.
        let mut listeners = Vec::with_capacity(count.min(1024));
        let mut fds = Vec::with_capacity(count.min(1024));
        while listeners.len() < count {
            let msg = hotsup_protocol::recv(channel.as_fd(), false)?;
            let (start, entries) = match decode_ignoring_unknown(&msg.bytes)? {
                None => continue,
                Some(ToChild::Listeners { start, entries }) => (start, entries),
                Some(ToChild::Drain { timeout }) => {
                    drain.trigger(DrainReason::Supervisor { timeout });
                    continue;
                }
                Some(ToChild::Pause | ToChild::Resume) => continue,
                Some(ToChild::Hello { .. }) => {
                    return Err(Error::UnexpectedMessage {
                        expected: "LISTENERS",
                        found: "HELLO".into(),
                    });
                }
            };
            if start != listeners.len() {
                return Err(Error::OutOfOrder {
                    expected: listeners.len(),
                    found: start,
                });
            }
            if msg.fds.len() != entries.len() {
                return Err(Error::FdCountMismatch {
                    expected: entries.len(),
                    found: msg.fds.len(),
                });
            }
            if listeners.len() + entries.len() > count {
                return Err(Error::ListenerCountMismatch {
                    expected: count,
                    found: listeners.len() + entries.len(),
                });
            }
            listeners.extend(entries);
            fds.extend(msg.fds);
        }

        let mut names = HashSet::with_capacity(listeners.len());
        if let Some(dup) = listeners.iter().find(|l| !names.insert(l.name.as_str())) {
            return Err(Error::DuplicateName {
                name: dup.name.clone(),
            });
        }

        let channel = Arc::new(channel);
        drain::spawn_watcher(Arc::clone(&channel), Arc::clone(&drain))?;
        Ok(Handoff {
            channel,
            generation,
            sockets: Sockets::declared(listeners, fds),
            ready: Mutex::new(false),
            drain,
        })
    }

    /// This process's generation number, from `HELLO` (1 for the first child
    /// a supervisor starts, then 2, 3, …).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every listener the supervisor declared, in order, taken or not.
    pub fn listeners(&self) -> &[ListenerInfo] {
        self.sockets.listeners()
    }

    /// Takes the socket named `name`, checked to be of `kind`, leaving its
    /// `O_NONBLOCK` flag as it is.
    ///
    /// For apps that set the mode themselves. The flag is shared by every
    /// generation holding the socket, so all generations of the app must use
    /// the same mode: a generation that makes a listener blocking can leave
    /// an older one stuck in `accept` while it drains.
    pub fn take_socket(&self, name: &str, kind: Kind) -> Result<OwnedFd, Error> {
        self.sockets.take_socket(name, kind)
    }

    /// Takes the TCP listener named `name`, set to blocking mode.
    pub fn take_tcp(&self, name: &str) -> Result<TcpListener, Error> {
        self.sockets.take_tcp(name, false)
    }

    /// Takes the first TCP listener, in the supervisor's order, set to
    /// blocking mode.
    pub fn take_first_tcp(&self) -> Result<TcpListener, Error> {
        self.sockets.take_first_tcp(false)
    }

    /// Takes the Unix stream listener named `name`, set to blocking mode.
    pub fn take_unix(&self, name: &str) -> Result<UnixListener, Error> {
        self.sockets.take_unix(name, false)
    }

    /// Takes the UDP socket named `name`, set to blocking mode.
    pub fn take_udp(&self, name: &str) -> Result<UdpSocket, Error> {
        self.sockets.take_udp(name, false)
    }

    /// Sends `READY` to the supervisor, once; later calls do nothing.
    ///
    /// If sending fails (the supervisor is gone), the error is returned and a
    /// later call tries again.
    pub fn ready(&self) -> Result<(), Error> {
        let mut sent = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if !*sent {
            self.send(&FromChild::Ready)?;
            *sent = true;
        }
        Ok(())
    }

    /// Sends `STATUS text` to the supervisor, which logs it. `text` must be a
    /// single line.
    pub fn status(&self, text: &str) -> Result<(), Error> {
        self.send(&FromChild::Status(text.to_owned()))
    }

    /// A handle on this handoff's drain state, fed by `DRAIN` and by the end of
    /// the channel. Unlike [`drain()`](crate::drain()), this installs no
    /// signal handlers.
    pub fn drain(&self) -> Drain {
        Drain::new(Arc::clone(&self.drain))
    }

    pub(crate) fn drain_shared(&self) -> &Arc<Shared> {
        &self.drain
    }

    pub(crate) fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    fn send(&self, msg: &FromChild) -> Result<(), Error> {
        let bytes = msg.encode()?;
        hotsup_protocol::send(self.channel.as_fd(), &bytes, &[])?;
        Ok(())
    }
}

/// Reads up to and including `HELLO`; returns its generation and listener
/// count.
fn receive_hello(channel: &OwnedFd, drain: &Shared) -> Result<(u64, usize), Error> {
    loop {
        let msg = hotsup_protocol::recv(channel.as_fd(), false)?;
        // The version decides how to read everything else, so look at it
        // before the other fields (a later version may drop or change them).
        if let Some(version) = hello_version(&msg.bytes) {
            if version != hotsup_protocol::BASE_VERSION {
                return Err(Error::UnsupportedVersion { version });
            }
        }
        match decode_ignoring_unknown(&msg.bytes)? {
            None => {}
            Some(ToChild::Hello {
                generation,
                listeners,
                ..
            }) => return Ok((generation, listeners)),
            Some(ToChild::Drain { timeout }) => {
                drain.trigger(DrainReason::Supervisor { timeout });
            }
            // Version 2 messages only follow a version 2 answer, which this
            // child has not sent.
            Some(ToChild::Pause | ToChild::Resume) => {}
            Some(ToChild::Listeners { .. }) => {
                return Err(Error::UnexpectedMessage {
                    expected: "HELLO",
                    found: "LISTENERS".into(),
                });
            }
        }
    }
}

/// Decodes a message from the supervisor; `None` for a verb this version does
/// not know, which the protocol says to ignore.
fn decode_ignoring_unknown(bytes: &[u8]) -> Result<Option<ToChild>, Error> {
    match ToChild::decode(bytes) {
        Ok(msg) => Ok(Some(msg)),
        Err(hotsup_protocol::DecodeError::UnknownVerb(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The `version` field of a `HELLO` message, if it is one and the field parses.
fn hello_version(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let first = text.lines().next()?;
    let mut words = first.split(' ').filter(|w| !w.is_empty());
    if words.next()? != "HELLO" {
        return None;
    }
    words
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == "version")
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_first() {
        assert_eq!(hello_version(b"HELLO version=1 generation=2"), Some(1));
        assert_eq!(hello_version(b"HELLO  future=x version=7\nmore"), Some(7));
        assert_eq!(hello_version(b"HELLO generation=2"), None);
        assert_eq!(hello_version(b"DRAIN version=2"), None);
        assert_eq!(hello_version(b"\xff"), None);
    }
}
