//! Inspecting file descriptors: what kind of socket arrived.

use std::fmt;
use std::os::fd::BorrowedFd;

use crate::Kind;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType, sockopt};

/// The family of a socket, as far as this crate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Inet,
    Unix,
    Other,
}

/// What a file descriptor turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inspected {
    /// Not a socket at all (or not open).
    NotASocket,
    /// A socket.
    Socket {
        family: Family,
        type_: SocketType,
        /// `SO_ACCEPTCONN`; always false for datagram sockets.
        listening: bool,
    },
}

impl fmt::Display for Inspected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inspected::Socket {
            family,
            type_,
            listening,
        } = *self
        else {
            return f.write_str("not a socket");
        };
        let family = match family {
            Family::Inet => "an inet",
            Family::Unix => "a unix",
            Family::Other => "a non-inet non-unix",
        };
        let type_ = match type_ {
            SocketType::STREAM => "stream",
            SocketType::DGRAM => "datagram",
            SocketType::SEQPACKET => "seqpacket",
            _ => "other-type",
        };
        write!(f, "{family} {type_} socket")?;
        if type_ != "datagram" && !listening {
            f.write_str(", not listening")?;
        }
        Ok(())
    }
}

/// Looks at `fd` with `getsockopt(SO_TYPE, SO_DOMAIN, SO_ACCEPTCONN)`.
pub(crate) fn inspect(fd: BorrowedFd<'_>) -> Inspected {
    let type_ = match sockopt::socket_type(fd) {
        Ok(t) => t,
        Err(_) => return Inspected::NotASocket,
    };
    let family = match sockopt::socket_domain(fd) {
        Ok(AddressFamily::INET | AddressFamily::INET6) => Family::Inet,
        Ok(AddressFamily::UNIX) => Family::Unix,
        _ => Family::Other,
    };
    let listening = type_ != SocketType::DGRAM && sockopt::socket_acceptconn(fd).unwrap_or(false);
    Inspected::Socket {
        family,
        type_,
        listening,
    }
}

/// Whether `found` is what a listener of `kind` must be.
pub(crate) fn matches(kind: Kind, found: Inspected) -> bool {
    let Inspected::Socket {
        family,
        type_,
        listening,
    } = found
    else {
        return false;
    };
    match kind {
        Kind::Tcp => family == Family::Inet && type_ == SocketType::STREAM && listening,
        Kind::Unix => family == Family::Unix && type_ == SocketType::STREAM && listening,
        Kind::Udp => family == Family::Inet && type_ == SocketType::DGRAM,
    }
}

/// The kind of listener `found` can serve as, if any.
pub(crate) fn kind_of(found: Inspected) -> Option<Kind> {
    [Kind::Tcp, Kind::Udp, Kind::Unix]
        .into_iter()
        .find(|&kind| matches(kind, found))
}

/// The address `fd` is bound to, spelled as the protocol does: `ip:port`,
/// `[ipv6]:port`, a Unix socket path, `@name` for an abstract Unix address;
/// empty for an unnamed Unix socket or when `getsockname` fails.
pub(crate) fn local_address(fd: BorrowedFd<'_>) -> String {
    let Ok(addr) = rustix::net::getsockname(fd) else {
        return String::new();
    };
    match addr.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => std::net::SocketAddr::try_from(addr)
            .map(|a| a.to_string())
            .unwrap_or_default(),
        AddressFamily::UNIX => match rustix::net::SocketAddrUnix::try_from(addr) {
            Ok(unix) => {
                if let Some(path) = unix.path_bytes() {
                    String::from_utf8_lossy(path).into_owned()
                } else if let Some(name) = unix.abstract_name() {
                    format!("@{}", String::from_utf8_lossy(name))
                } else {
                    String::new()
                }
            }
            Err(_) => String::new(),
        },
        _ => String::new(),
    }
}

/// Whether `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket, the channel's type.
/// `Err(())` means it is not a socket at all.
pub(crate) fn is_seqpacket(fd: BorrowedFd<'_>) -> Result<bool, ()> {
    match sockopt::socket_type(fd) {
        Ok(SocketType::SEQPACKET) => {}
        Ok(_) => return Ok(false),
        Err(Errno::NOTSOCK | Errno::BADF) => return Err(()),
        Err(_) => return Ok(false),
    }
    Ok(matches!(
        sockopt::socket_domain(fd),
        Ok(AddressFamily::UNIX)
    ))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that many inherited
/// listeners are not silently dropped by the kernel. Best effort.
pub(crate) fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, raised).is_ok() || limit.maximum.is_some() {
        return;
    }
    // An unlimited hard limit cannot be the soft limit on Linux (it is capped
    // by fs.nr_open); fall back to that sysctl's default.
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(1 << 20),
            maximum: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn describes_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let found = inspect(tcp.as_fd());
        assert!(matches(Kind::Tcp, found));
        assert!(!matches(Kind::Udp, found));
        assert!(!matches(Kind::Unix, found));
        assert_eq!(found.to_string(), "an inet stream socket");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = inspect(udp.as_fd());
        assert!(matches(Kind::Udp, found));
        assert!(!matches(Kind::Tcp, found));
        assert_eq!(found.to_string(), "an inet datagram socket");

        let stream = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let found = inspect(stream.as_fd());
        assert!(!matches(Kind::Tcp, found));
        assert_eq!(found.to_string(), "an inet stream socket, not listening");

        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(inspect(file.as_fd()), Inspected::NotASocket);
        assert_eq!(is_seqpacket(file.as_fd()), Err(()));
        assert_eq!(is_seqpacket(tcp.as_fd()), Ok(false));
    }
}
