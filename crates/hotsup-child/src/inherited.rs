//! The inherited sockets, by name, each of which can be taken once.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Mutex;

use hotsup_protocol::{Kind, ListenerInfo};

use crate::error::Error;
use crate::sockets;

/// One inherited fd.
#[derive(Debug)]
struct Slot {
    name: String,
    /// The listener kind, or what the fd turned out to be when it is not a
    /// listener this crate supports (only with socket activation, where
    /// nobody declared the kinds).
    kind: Result<Kind, String>,
    /// The fd's number, for error messages.
    fd: RawFd,
}

/// A set of inherited sockets, in the supervisor's order.
#[derive(Debug)]
pub(crate) struct Sockets {
    slots: Vec<Slot>,
    /// The supported listeners, in order (the slots whose kind is known).
    listeners: Vec<ListenerInfo>,
    /// The fds, index for index with `slots`; `None` once taken.
    fds: Mutex<Vec<Option<OwnedFd>>>,
}

impl Sockets {
    /// The sockets of a native handoff: every listener has a declared kind.
    pub(crate) fn declared(listeners: Vec<ListenerInfo>, fds: Vec<OwnedFd>) -> Sockets {
        debug_assert_eq!(listeners.len(), fds.len());
        let slots = listeners
            .iter()
            .zip(&fds)
            .map(|(info, fd)| Slot {
                name: info.name.clone(),
                kind: Ok(info.kind),
                fd: fd.as_raw_fd(),
            })
            .collect();
        Sockets {
            slots,
            listeners,
            fds: Mutex::new(fds.into_iter().map(Some).collect()),
        }
    }

    /// Sockets whose kinds were found by looking at them: `kind` is `Err`
    /// (with a description of the fd) for an fd that is not a supported
    /// listener. Names must be unique.
    pub(crate) fn inspected(entries: Vec<(String, Result<Kind, String>, String, OwnedFd)>) -> Self {
        let mut slots = Vec::with_capacity(entries.len());
        let mut listeners = Vec::with_capacity(entries.len());
        let mut fds = Vec::with_capacity(entries.len());
        for (name, kind, address, fd) in entries {
            if let Ok(kind) = kind {
                listeners.push(ListenerInfo {
                    name: name.clone(),
                    kind,
                    address,
                });
            }
            slots.push(Slot {
                name,
                kind,
                fd: fd.as_raw_fd(),
            });
            fds.push(Some(fd));
        }
        Sockets {
            slots,
            listeners,
            fds: Mutex::new(fds),
        }
    }

    /// Every supported listener, in order, taken or not.
    pub(crate) fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// Takes the socket named `name`, checked to be of `kind`, leaving its
    /// `O_NONBLOCK` flag as it is.
    pub(crate) fn take_socket(&self, name: &str, kind: Kind) -> Result<OwnedFd, Error> {
        self.take(self.index_of(name)?, kind)
    }

    /// Takes the TCP listener named `name`, in the given mode.
    ///
    /// The mode is set once, directly: `O_NONBLOCK` is shared with every
    /// generation, and even a moment in the other mode could leave an older
    /// generation blocked in `accept`.
    pub(crate) fn take_tcp(&self, name: &str, nonblocking: bool) -> Result<TcpListener, Error> {
        let listener = TcpListener::from(self.take(self.index_of(name)?, Kind::Tcp)?);
        listener.set_nonblocking(nonblocking)?;
        Ok(listener)
    }

    /// Takes the first TCP listener, in order, in the given mode.
    pub(crate) fn take_first_tcp(&self, nonblocking: bool) -> Result<TcpListener, Error> {
        let index = self
            .slots
            .iter()
            .position(|s| s.kind == Ok(Kind::Tcp))
            .ok_or(Error::NoListenerOfKind { kind: Kind::Tcp })?;
        let listener = TcpListener::from(self.take(index, Kind::Tcp)?);
        listener.set_nonblocking(nonblocking)?;
        Ok(listener)
    }

    /// Takes the Unix stream listener named `name`, in the given mode.
    pub(crate) fn take_unix(&self, name: &str, nonblocking: bool) -> Result<UnixListener, Error> {
        let listener = UnixListener::from(self.take(self.index_of(name)?, Kind::Unix)?);
        listener.set_nonblocking(nonblocking)?;
        Ok(listener)
    }

    /// Takes the UDP socket named `name`, in the given mode.
    pub(crate) fn take_udp(&self, name: &str, nonblocking: bool) -> Result<UdpSocket, Error> {
        let socket = UdpSocket::from(self.take(self.index_of(name)?, Kind::Udp)?);
        socket.set_nonblocking(nonblocking)?;
        Ok(socket)
    }

    fn index_of(&self, name: &str) -> Result<usize, Error> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::NotFound { name: name.into() })
    }

    /// Takes the fd at `index` if it is declared as `kind` and really is such
    /// a socket; otherwise leaves it in place.
    fn take(&self, index: usize, kind: Kind) -> Result<OwnedFd, Error> {
        let slot = &self.slots[index];
        let wrong = |found: String| Error::WrongKind {
            name: slot.name.clone(),
            expected: kind,
            found,
        };
        match &slot.kind {
            Err(found) => {
                return Err(Error::UnsupportedInheritedFd {
                    fd: slot.fd,
                    found: found.clone(),
                });
            }
            Ok(declared) if *declared != kind => {
                return Err(wrong(format!("a {declared} listener")));
            }
            Ok(_) => {}
        }
        let mut fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        let held = &mut fds[index];
        let fd = held.as_ref().ok_or_else(|| Error::AlreadyTaken {
            name: slot.name.clone(),
        })?;
        let found = sockets::inspect(fd.as_fd());
        if !sockets::matches(kind, found) {
            return Err(wrong(found.to_string()));
        }
        Ok(held.take().expect("checked above"))
    }
}
