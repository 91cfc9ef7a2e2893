//! systemd's socket activation: adopting the fds that `LISTEN_FDS` passes,
//! as systemd, `hotsup run --fds systemd` and systemfd do.
//!
//! Three steps, each usable on its own: [`parse`] reads the variables'
//! values (no side effect), [`claim`] takes ownership of the fd numbers
//! (the one unsafe step), [`inspect`] names the owned fds and finds out
//! what each is. The supervisor adopts its own `LISTEN_FDS` with them, and
//! so does `hotsup-child` in an app; both behave alike:
//!
//! - `LISTEN_PID` unset or empty: the fds are this process's (as listenfd
//!   and hotsup-child always accepted; systemd always sets it). Set to
//!   another pid: they are someone else's, and nothing is adopted. Not a
//!   number: an error, as in systemd's `sd_listen_fds`.
//! - `LISTEN_FDS_FIRST_FD` (an extension of systemfd and listenfd) moves
//!   the first fd from 3; honoured when set and not empty.
//! - Names come from `LISTEN_FDNAMES` by position. A name that is not a
//!   valid listener name ([`hotsup_protocol::valid_name`]: the protocol
//!   must be able to pass it on), is empty, or was already taken by an
//!   earlier fd (systemd gives every socket of one `.socket` unit the
//!   unit's name) is replaced by the default `<kind><index>` (`tcp0`,
//!   `unix2`, `other3` for an fd that is no supported listener), made
//!   unique with `-2`, `-3`, … if an earlier fd took that too.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use hotsup_protocol::{Kind, valid_name};
use rustix::io::FdFlags;

use crate::sockets::{self, Inspected};

/// How many fds are passed.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the fds are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Their names, separated by `:`.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first fd, 3 unless set (an extension of systemfd and listenfd).
pub const LISTEN_FDS_FIRST_FD: &str = "LISTEN_FDS_FIRST_FD";

/// Where the fds start when `LISTEN_FDS_FIRST_FD` is unset (`SD_LISTEN_FDS_START`).
pub const DEFAULT_FIRST_FD: RawFd = 3;

/// Why socket activation's fds cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable's value is malformed.
    #[error("{var}={value:?} is not valid")]
    BadEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// An fd the variables name is not open.
    #[error("fd {fd} named by LISTEN_FDS is not open")]
    NotOpen {
        /// The fd.
        fd: RawFd,
    },
    /// An fd could not be made close-on-exec.
    #[error("fd {fd} named by LISTEN_FDS: {source}")]
    Io {
        /// The fd.
        fd: RawFd,
        /// What failed.
        source: io::Error,
    },
}

/// The values of the activation variables, as found in the environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub listen_fds: Option<&'a OsStr>,
    pub listen_pid: Option<&'a OsStr>,
    pub first_fd: Option<&'a OsStr>,
}

fn bad_env(var: &'static str, value: &OsStr) -> Error {
    Error::BadEnv {
        var,
        value: value.to_string_lossy().into_owned(),
    }
}

/// The fd numbers passed to the process whose pid is `pid`: `None` when
/// `LISTEN_FDS` is unset, or when `LISTEN_PID` is set, not empty and names
/// another process (the fds are meant for it, typically a parent that did
/// not consume them).
pub fn parse(vars: Vars<'_>, pid: u32) -> Result<Option<Range<RawFd>>, Error> {
    let Some(listen_fds) = vars.listen_fds else {
        return Ok(None);
    };
    if let Some(value) = vars.listen_pid.filter(|v| !v.is_empty()) {
        let for_pid: u32 = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad_env(LISTEN_PID, value))?;
        if for_pid != pid {
            return Ok(None);
        }
    }
    let count: RawFd = listen_fds
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad_env(LISTEN_FDS, listen_fds))?;
    let first: RawFd = match vars.first_fd.filter(|v| !v.is_empty()) {
        None => DEFAULT_FIRST_FD,
        Some(value) => value
            .to_str()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad_env(LISTEN_FDS_FIRST_FD, value))?,
    };
    let end = first
        .checked_add(count)
        .ok_or_else(|| bad_env(LISTEN_FDS, listen_fds))?;
    Ok(Some(first..end))
}

/// Takes ownership of the fds in `range` and makes each close-on-exec.
///
/// Every fd must be open; if one is not, none is taken (so a wrong count
/// never closes, on the error path, an fd that belongs to someone else).
///
/// # Safety
///
/// Nothing else in the process may own or use these fd numbers: they were
/// passed to this process for it to adopt, and this is the only adoption.
pub unsafe fn claim(range: Range<RawFd>) -> Result<Vec<OwnedFd>, Error> {
    for fd in range.clone() {
        // SAFETY: the fd is only used for one `fcntl(F_GETFD)`, which fails
        // harmlessly with EBADF if it is not open; nothing is closed.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            return Err(Error::NotOpen { fd });
        }
    }
    let owned: Vec<OwnedFd> = range
        // SAFETY: open (checked above), and the caller guarantees that
        // nothing else owns it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    for fd in &owned {
        rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC).map_err(|e| Error::Io {
            fd: std::os::fd::AsRawFd::as_raw_fd(fd),
            source: e.into(),
        })?;
    }
    Ok(owned)
}

/// One adopted fd, named, with what it turned out to be.
#[derive(Debug)]
pub struct Adopted {
    pub name: String,
    /// What the fd is.
    pub found: Inspected,
    /// The listener kind it can serve as, if any.
    pub kind: Option<Kind>,
    /// The bound address, if known (see [`sockets::local_address`]).
    pub address: Option<String>,
    pub fd: OwnedFd,
}

/// Names the fds after `LISTEN_FDNAMES` (`names`) and finds out what each
/// one is by looking at it.
pub fn inspect(fds: Vec<OwnedFd>, names: Option<&OsStr>) -> Vec<Adopted> {
    let given: Vec<&str> = match names.and_then(OsStr::to_str) {
        Some(names) => names.split(':').collect(),
        None => Vec::new(),
    };
    let mut used = HashSet::new();
    fds.into_iter()
        .enumerate()
        .map(|(index, fd)| {
            let found = sockets::inspect(fd.as_fd());
            let kind = sockets::kind_of(found);
            let address = match found {
                Inspected::Socket { .. } => sockets::local_address(fd.as_fd()),
                Inspected::NotASocket => None,
            };
            let default = format!("{}{index}", kind.map_or("other", Kind::as_str));
            let name = unique_name(given.get(index).copied(), &default, &mut used);
            Adopted {
                name,
                found,
                kind,
                address,
                fd,
            }
        })
        .collect()
}

/// The name from `LISTEN_FDNAMES` if it is a valid listener name not taken
/// by an earlier fd; otherwise `default`, made unique with a `-2`, `-3`, …
/// suffix in the unlikely case that an earlier fd was given that name.
fn unique_name(given: Option<&str>, default: &str, used: &mut HashSet<String>) -> String {
    if let Some(name) = given.filter(|n| valid_name(n))
        && used.insert(name.to_owned())
    {
        return name.to_owned();
    }
    let mut name = default.to_owned();
    let mut k = 2;
    while !used.insert(name.clone()) {
        name = format!("{default}-{k}");
        k += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_given_or_defaulted_and_unique() {
        let mut used = HashSet::new();
        assert_eq!(unique_name(Some("web"), "tcp0", &mut used), "web");
        assert_eq!(unique_name(Some(""), "tcp1", &mut used), "tcp1");
        assert_eq!(unique_name(None, "udp2", &mut used), "udp2");
        // systemd repeats a socket unit's name for each of its sockets.
        assert_eq!(unique_name(Some("web"), "tcp3", &mut used), "tcp3");
        assert_eq!(unique_name(Some("unknown"), "tcp4", &mut used), "unknown");
        // An earlier fd was explicitly named like this one's default.
        assert_eq!(unique_name(Some("tcp5"), "tcp6", &mut used), "tcp5");
        assert_eq!(unique_name(Some("tcp5"), "tcp5", &mut used), "tcp5-2");
        // Names the protocol could not pass on (a template unit's `@`).
        assert_eq!(unique_name(Some("app@1.socket"), "tcp7", &mut used), "tcp7");
        assert_eq!(unique_name(Some("a b"), "unix8", &mut used), "unix8");
    }

    fn vars<'a>(fds: &'a str, pid: Option<&'a str>, first: Option<&'a str>) -> Vars<'a> {
        Vars {
            listen_fds: Some(OsStr::new(fds)),
            listen_pid: pid.map(OsStr::new),
            first_fd: first.map(OsStr::new),
        }
    }

    #[test]
    fn listen_pid_decides_whose_fds_they_are() {
        assert_eq!(parse(Vars::default(), 7).unwrap(), None);
        assert_eq!(parse(vars("2", None, None), 7).unwrap(), Some(3..5));
        assert_eq!(parse(vars("2", Some(""), None), 7).unwrap(), Some(3..5));
        assert_eq!(parse(vars("2", Some("7"), None), 7).unwrap(), Some(3..5));
        assert_eq!(parse(vars("2", Some("1"), None), 7).unwrap(), None);
        // For another process: its LISTEN_FDS is its business.
        assert_eq!(parse(vars("x", Some("1"), None), 7).unwrap(), None);
        assert!(matches!(
            parse(vars("1", Some("x"), None), 7),
            Err(Error::BadEnv {
                var: "LISTEN_PID",
                ..
            })
        ));
        assert_eq!(parse(vars("1", None, Some("10")), 7).unwrap(), Some(10..11));
        assert_eq!(parse(vars("1", None, Some("")), 7).unwrap(), Some(3..4));
    }

    #[test]
    fn bad_counts() {
        for (fds, first) in [
            ("x", None),
            ("-1", None),
            ("1", Some("-3")),
            ("2147483647", None),
        ] {
            let err = parse(vars(fds, None, first), 7).unwrap_err();
            assert!(
                matches!(err, Error::BadEnv { .. }),
                "{fds} {first:?}: {err:?}"
            );
        }
        // Nothing is open that high; nothing is claimed.
        // SAFETY: fds 100000 and 100001 are not open in this test process.
        let err = unsafe { claim(100_000..100_002) }.unwrap_err();
        assert!(matches!(err, Error::NotOpen { fd: 100000 }), "{err:?}");
        // SAFETY: an empty range claims nothing.
        let none = unsafe { claim(5..5) }.unwrap();
        assert!(inspect(none, None).is_empty());
    }

    #[test]
    fn inspect_names_and_describes_each_fd() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let again = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fds: Vec<OwnedFd> = vec![tcp.into(), udp.into(), file.into(), again.into()];
        let adopted = inspect(fds, Some(OsStr::new("web:web:log")));
        let names: Vec<&str> = adopted.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["web", "udp1", "log", "tcp3"]);
        let kinds: Vec<Option<Kind>> = adopted.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [Some(Kind::Tcp), Some(Kind::Udp), None, Some(Kind::Tcp)]
        );
        assert_eq!(adopted[0].address, Some(format!("127.0.0.1:{port}")));
        assert_eq!(adopted[2].found, Inspected::NotASocket);
        assert_eq!(adopted[2].address, None);
    }
}
