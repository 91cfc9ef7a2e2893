//! Inspecting file descriptors: what kind of socket arrived, and where it
//! is bound.

use std::fmt;
use std::os::fd::BorrowedFd;

use hotsup_protocol::Kind;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType, sockopt};

/// The family of a socket, as far as this crate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Unix,
    Other,
}

/// What a file descriptor turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspected {
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
pub fn inspect(fd: BorrowedFd<'_>) -> Inspected {
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
pub fn matches(kind: Kind, found: Inspected) -> bool {
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
pub fn kind_of(found: Inspected) -> Option<Kind> {
    [Kind::Tcp, Kind::Udp, Kind::Unix]
        .into_iter()
        .find(|&kind| matches(kind, found))
}

/// The address `fd` is bound to, spelled as the protocol does: `ip:port`,
/// `[ipv6]:port`, a Unix socket path, `@name` for an abstract Unix address.
/// `None` for an unnamed Unix socket, another family, or when
/// `getsockname` fails.
pub fn local_address(fd: BorrowedFd<'_>) -> Option<String> {
    let addr = rustix::net::getsockname(fd).ok()?;
    match addr.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => std::net::SocketAddr::try_from(addr)
            .ok()
            .map(|a| a.to_string()),
        AddressFamily::UNIX => {
            let unix = rustix::net::SocketAddrUnix::try_from(addr).ok()?;
            // An unnamed socket's address reads as an empty abstract name.
            if let Some(path) = unix.path_bytes().filter(|p| !p.is_empty()) {
                Some(String::from_utf8_lossy(path).into_owned())
            } else {
                unix.abstract_name()
                    .filter(|n| !n.is_empty())
                    .map(|name| format!("@{}", String::from_utf8_lossy(name)))
            }
        }
        _ => None,
    }
}

/// Whether `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket, the channel's type;
/// `None` when it is not a socket at all.
pub fn is_seqpacket(fd: BorrowedFd<'_>) -> Option<bool> {
    match sockopt::socket_type(fd) {
        Ok(SocketType::SEQPACKET) => {}
        Ok(_) => return Some(false),
        Err(Errno::NOTSOCK | Errno::BADF) => return None,
        Err(_) => return Some(false),
    }
    Some(matches!(
        sockopt::socket_domain(fd),
        Ok(AddressFamily::UNIX)
    ))
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
        assert_eq!(is_seqpacket(file.as_fd()), None);
        assert_eq!(is_seqpacket(tcp.as_fd()), Some(false));
        assert_eq!(local_address(file.as_fd()), None);
    }

    #[test]
    fn addresses_are_spelled_as_on_the_wire() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        assert_eq!(local_address(v4.as_fd()), Some(format!("127.0.0.1:{port}")));
        if let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") {
            let port = v6.local_addr().unwrap().port();
            assert_eq!(local_address(v6.as_fd()), Some(format!("[::1]:{port}")));
        }
        let dir = std::env::temp_dir().join(format!("hotsup-os-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a b.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let shown = local_address(unix.as_fd());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(shown.as_deref(), path.to_str());
        let (unnamed, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(local_address(unnamed.as_fd()), None);
    }
}
