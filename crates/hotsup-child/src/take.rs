//! [`Take`]: one listener, inherited or bound, in the mode the caller names.

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::handoff::Handoff;
use crate::inherited::Kind;

/// A request for one listener: the inherited one under a supervisor, else
/// the fallback given to [`or_bind`](Take::or_bind); finished by the method
/// that names the mode.
///
/// Made by [`Handoff::tcp`], [`Handoff::first_tcp`], [`Handoff::unix`],
/// [`Handoff::udp`] and the functions of the same names at the crate root.
///
/// | method | returns | `O_NONBLOCK` |
/// |---|---|---|
/// | [`tokio`](Take::tokio) | a tokio listener or socket | set |
/// | [`nonblocking`](Take::nonblocking) | the std type | set |
/// | [`blocking`](Take::blocking) | the std type | cleared |
/// | [`fd`](Take::fd) | an [`OwnedFd`] | as it is |
///
/// The flag belongs to the open file description, which the supervisor and
/// every generation share (see [Blocking mode](crate#blocking-mode)), so the
/// mode is an explicit choice, made once, with no moment in the other mode.
/// Async servers (tokio, actix, mio) need nonblocking sockets; so does
/// [`Lifecycle::accept`](crate::Lifecycle::accept) to honour a pause
/// promptly.
///
/// Under a supervisor the fallback is never used: a missing listener is an
/// error ([`Error::NotFound`]), because a socket the supervisor does not
/// hold would not survive an upgrade. A listener that fails to be taken
/// (wrong kind, say) stays in place.
///
/// ```no_run
/// # fn main() -> Result<(), hotsup_child::Error> {
/// let http = hotsup_child::tcp("http").or_bind("127.0.0.1:8080").nonblocking()?;
/// let admin = hotsup_child::unix("admin").or_bind("/run/app/admin.sock").blocking()?;
/// # Ok(()) }
/// ```
#[must_use = "a Take does nothing until a mode is chosen (tokio, nonblocking, blocking, fd)"]
pub struct Take<'a, K> {
    handoff: Result<&'a Handoff, Error>,
    select: Select,
    fallback: Option<Fallback>,
    kind: PhantomData<K>,
}

impl<K> std::fmt::Debug for Take<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Take")
            .field("select", &self.select)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) enum Select {
    Name(String),
    First,
}

#[derive(Debug)]
enum Fallback {
    /// Resolved addresses, and how to name them in errors.
    Net(io::Result<Vec<SocketAddr>>, String),
    Path(PathBuf),
}

/// A TCP listener: `std::net::TcpListener`, `tokio::net::TcpListener`.
#[derive(Debug)]
pub enum Tcp {}
/// A Unix stream listener: `std::os::unix::net::UnixListener`,
/// `tokio::net::UnixListener`.
#[derive(Debug)]
pub enum Unix {}
/// A UDP socket: `std::net::UdpSocket`, `tokio::net::UdpSocket`.
#[derive(Debug)]
pub enum Udp {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Tcp {}
    impl Sealed for super::Unix {}
    impl Sealed for super::Udp {}
}

/// The kinds of socket [`Take`] hands out: [`Tcp`], [`Unix`], [`Udp`].
pub trait SocketKind: sealed::Sealed {
    /// The std type.
    type Std: From<OwnedFd> + Into<OwnedFd>;
    /// The tokio type.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    type Tokio;
    /// The listener kind.
    const KIND: Kind;
    #[doc(hidden)]
    fn bind_fallback(addrs: &[SocketAddr]) -> io::Result<Self::Std>;
    #[doc(hidden)]
    #[cfg(feature = "tokio")]
    fn to_tokio(socket: Self::Std) -> io::Result<Self::Tokio>;
}

impl SocketKind for Tcp {
    type Std = std::net::TcpListener;
    #[cfg(feature = "tokio")]
    type Tokio = tokio::net::TcpListener;
    const KIND: Kind = Kind::Tcp;
    fn bind_fallback(addrs: &[SocketAddr]) -> io::Result<Self::Std> {
        std::net::TcpListener::bind(addrs)
    }
    #[cfg(feature = "tokio")]
    fn to_tokio(socket: Self::Std) -> io::Result<Self::Tokio> {
        tokio::net::TcpListener::from_std(socket)
    }
}

impl SocketKind for Udp {
    type Std = std::net::UdpSocket;
    #[cfg(feature = "tokio")]
    type Tokio = tokio::net::UdpSocket;
    const KIND: Kind = Kind::Udp;
    fn bind_fallback(addrs: &[SocketAddr]) -> io::Result<Self::Std> {
        std::net::UdpSocket::bind(addrs)
    }
    #[cfg(feature = "tokio")]
    fn to_tokio(socket: Self::Std) -> io::Result<Self::Tokio> {
        tokio::net::UdpSocket::from_std(socket)
    }
}

impl SocketKind for Unix {
    type Std = std::os::unix::net::UnixListener;
    #[cfg(feature = "tokio")]
    type Tokio = tokio::net::UnixListener;
    const KIND: Kind = Kind::Unix;
    fn bind_fallback(_: &[SocketAddr]) -> io::Result<Self::Std> {
        Err(io::ErrorKind::InvalidInput.into())
    }
    #[cfg(feature = "tokio")]
    fn to_tokio(socket: Self::Std) -> io::Result<Self::Tokio> {
        tokio::net::UnixListener::from_std(socket)
    }
}

impl<'a, K: SocketKind> Take<'a, K> {
    pub(crate) fn new(handoff: Result<&'a Handoff, Error>, select: Select) -> Self {
        Take {
            handoff,
            select,
            fallback: None,
            kind: PhantomData,
        }
    }

    fn standalone(&self) -> bool {
        self.handoff.as_ref().is_ok_and(|h| !h.is_supervised())
    }

    /// Takes the socket in nonblocking mode, as std type.
    pub fn nonblocking(self) -> Result<K::Std, Error> {
        let (fd, name) = self.take_fd()?;
        set_mode(&fd, true, &name)?;
        Ok(K::Std::from(fd))
    }

    /// Takes the socket in blocking mode, as std type.
    ///
    /// A blocking listener cannot notice a pause or a drain while it waits
    /// in `accept`; prefer [`nonblocking`](Self::nonblocking) unless every
    /// generation of the app uses it blocking.
    pub fn blocking(self) -> Result<K::Std, Error> {
        let (fd, name) = self.take_fd()?;
        set_mode(&fd, false, &name)?;
        Ok(K::Std::from(fd))
    }

    /// Takes the socket in nonblocking mode and registers it with the
    /// current tokio runtime.
    ///
    /// # Panics
    ///
    /// Like tokio's `from_std`, when called outside a tokio runtime with IO
    /// enabled.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn tokio(self) -> Result<K::Tokio, Error> {
        let (fd, name) = self.take_fd()?;
        set_mode(&fd, true, &name)?;
        K::to_tokio(K::Std::from(fd)).map_err(|source| Error::Setup {
            operation: "register with the tokio runtime",
            name,
            source,
        })
    }

    /// Takes the socket as a plain fd, leaving `O_NONBLOCK` as it is, for
    /// apps that set the mode themselves (a fallback is bound blocking).
    pub fn fd(self) -> Result<OwnedFd, Error> {
        self.take_fd().map(|(fd, _)| fd)
    }

    /// The fd, and its name for error messages.
    fn take_fd(self) -> Result<(OwnedFd, String), Error> {
        let handoff = self.handoff?;
        if handoff.is_supervised() {
            let sockets = handoff.sockets();
            let index = match &self.select {
                Select::Name(name) => sockets.index_of(name)?,
                Select::First => sockets.first_of(K::KIND)?,
            };
            let fd = sockets.take(index, K::KIND)?;
            return Ok((fd, sockets.name(index).to_owned()));
        }
        let name = match self.select {
            Select::Name(name) => name,
            Select::First => format!("(the first {} listener)", K::KIND),
        };
        match self.fallback {
            None => Err(Error::NoFallback { name }),
            Some(Fallback::Net(addrs, address)) => {
                let bound = addrs.and_then(|addrs| K::bind_fallback(&addrs));
                let socket = bound.map_err(|source| Error::Bind {
                    address: address.clone(),
                    source,
                })?;
                Ok((socket.into(), address))
            }
            Some(Fallback::Path(path)) => {
                let address = path.display().to_string();
                let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|source| {
                    Error::Bind {
                        address: address.clone(),
                        source,
                    }
                })?;
                Ok((OwnedFd::from(listener), address))
            }
        }
    }
}

fn set_mode(fd: &OwnedFd, nonblocking: bool, name: &str) -> Result<(), Error> {
    rustix::io::ioctl_fionbio(fd, nonblocking).map_err(|e| Error::Setup {
        operation: if nonblocking {
            "make nonblocking"
        } else {
            "make blocking"
        },
        name: name.to_owned(),
        source: e.into(),
    })
}

fn resolve(addr: impl ToSocketAddrs) -> Fallback {
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            let shown = addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Fallback::Net(Ok(addrs), shown)
        }
        Err(e) => Fallback::Net(Err(e), "the fallback address".into()),
    }
}

impl Take<'_, Tcp> {
    /// Standalone, bind this address instead (resolved only then).
    pub fn or_bind(mut self, addr: impl ToSocketAddrs) -> Self {
        if self.standalone() {
            self.fallback = Some(resolve(addr));
        }
        self
    }
}

impl Take<'_, Udp> {
    /// Standalone, bind this address instead (resolved only then).
    pub fn or_bind(mut self, addr: impl ToSocketAddrs) -> Self {
        if self.standalone() {
            self.fallback = Some(resolve(addr));
        }
        self
    }
}

impl Take<'_, Unix> {
    /// Standalone, bind this path instead (which fails if it exists).
    pub fn or_bind(mut self, path: impl AsRef<Path>) -> Self {
        if self.standalone() {
            self.fallback = Some(Fallback::Path(path.as_ref().to_owned()));
        }
        self
    }
}
