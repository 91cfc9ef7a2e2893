//! The inherited sockets, by name, each of which can be taken once.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::error::Error;
use hotsup_os::sockets;

/// What kind of socket a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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

    pub(crate) fn to_wire(self) -> hotsup_protocol::Kind {
        match self {
            Kind::Tcp => hotsup_protocol::Kind::Tcp,
            Kind::Udp => hotsup_protocol::Kind::Udp,
            Kind::Unix => hotsup_protocol::Kind::Unix,
        }
    }

    pub(crate) fn from_wire(kind: hotsup_protocol::Kind) -> Kind {
        match kind {
            hotsup_protocol::Kind::Tcp => Kind::Tcp,
            hotsup_protocol::Kind::Udp => Kind::Udp,
            hotsup_protocol::Kind::Unix => Kind::Unix,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One inherited listener: its name, kind and bound address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerInfo {
    name: String,
    kind: Kind,
    address: String,
}

impl ListenerInfo {
    pub(crate) fn new(name: String, kind: Kind, address: String) -> ListenerInfo {
        ListenerInfo {
            name,
            kind,
            address,
        }
    }

    pub(crate) fn from_wire(info: hotsup_protocol::ListenerInfo) -> ListenerInfo {
        ListenerInfo::new(info.name, Kind::from_wire(info.kind), info.address)
    }

    /// The listener's name: the supervisor's `--listen NAME=…`, a
    /// `LISTEN_FDNAMES` entry, or a default such as `tcp0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The bound address: `ip:port`, `[v6]:port`, a Unix socket path, or
    /// `@name` for an abstract Unix socket (empty if unknown).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for ListenerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.name, self.address)
    }
}

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
#[derive(Debug, Default)]
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
    pub(crate) fn inspected(entries: Vec<hotsup_os::activation::Adopted>) -> Self {
        let mut slots = Vec::with_capacity(entries.len());
        let mut listeners = Vec::with_capacity(entries.len());
        let mut fds = Vec::with_capacity(entries.len());
        for entry in entries {
            let kind = entry
                .kind
                .map(Kind::from_wire)
                .ok_or_else(|| entry.found.to_string());
            if let Ok(kind) = kind {
                // An address that cannot be known is empty (see `address`).
                let address = entry.address.unwrap_or_default();
                listeners.push(ListenerInfo::new(entry.name.clone(), kind, address));
            }
            slots.push(Slot {
                name: entry.name,
                kind,
                fd: entry.fd.as_raw_fd(),
            });
            fds.push(Some(entry.fd));
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

    /// The index of the socket named `name`.
    pub(crate) fn index_of(&self, name: &str) -> Result<usize, Error> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::NotFound { name: name.into() })
    }

    /// The index of the first listener of `kind`.
    pub(crate) fn first_of(&self, kind: Kind) -> Result<usize, Error> {
        self.slots
            .iter()
            .position(|s| s.kind == Ok(kind))
            .ok_or(Error::NoListenerOfKind { kind })
    }

    pub(crate) fn name(&self, index: usize) -> &str {
        &self.slots[index].name
    }

    /// Takes the fd at `index` if it is declared as `kind` and really is such
    /// a socket; otherwise leaves it in place.
    pub(crate) fn take(&self, index: usize, kind: Kind) -> Result<OwnedFd, Error> {
        let slot = &self.slots[index];
        let wrong = |found: String| Error::WrongKind {
            name: slot.name.clone(),
            expected: kind,
            found,
        };
        match &slot.kind {
            Err(found) => {
                return Err(Error::UnsupportedInheritedFd {
                    name: slot.name.clone(),
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
        let Some(fd) = held.as_ref() else {
            return Err(Error::AlreadyTaken {
                name: slot.name.clone(),
            });
        };
        let found = sockets::inspect(fd.as_fd());
        if !sockets::matches(kind.to_wire(), found) {
            return Err(wrong(found.to_string()));
        }
        held.take().ok_or_else(|| Error::AlreadyTaken {
            name: slot.name.clone(),
        })
    }
}
