//! Socket activation: adopting the fds that `LISTEN_FDS` passes, as systemd
//! and `hotsup run --fds systemd` do.
//!
//! Three steps, each usable on its own, so that a supervisor adopting its
//! own `LISTEN_FDS` can share them: [`parse`] reads the variables' values
//! (no side effect), [`claim`] takes ownership of the fd numbers (the one
//! unsafe step), [`inspect`] names the owned fds and finds out what each is.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::FdFlags;

use crate::Kind;
use crate::error::StartupError;
use crate::sockets::{self, Inspected};

/// How many fds are passed.
pub(crate) const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the fds are meant for.
pub(crate) const LISTEN_PID: &str = "LISTEN_PID";
/// Their names, separated by `:`.
pub(crate) const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first fd, 3 unless set (an extension of systemfd and listenfd).
pub(crate) const LISTEN_FDS_FIRST_FD: &str = "LISTEN_FDS_FIRST_FD";
/// The service manager's notification socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where the fds start when `LISTEN_FDS_FIRST_FD` is unset (`SD_LISTEN_FDS_START`).
const DEFAULT_FIRST_FD: RawFd = 3;

/// The values of the activation variables, as found in the environment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vars<'a> {
    pub(crate) listen_fds: Option<&'a OsStr>,
    pub(crate) listen_pid: Option<&'a OsStr>,
    pub(crate) first_fd: Option<&'a OsStr>,
}

fn bad_env(var: &'static str, value: &OsStr) -> StartupError {
    StartupError::BadEnv {
        var,
        value: value.to_string_lossy().into_owned(),
    }
}

/// The fd numbers passed to the process whose pid is `pid`: `None` when
/// `LISTEN_FDS` is unset, or when `LISTEN_PID` is set, not empty and names
/// another process (the fds are meant for it, typically a parent that did
/// not consume them).
pub(crate) fn parse(vars: Vars<'_>, pid: u32) -> Result<Option<Range<RawFd>>, StartupError> {
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
pub(crate) unsafe fn claim(range: Range<RawFd>) -> Result<Vec<OwnedFd>, StartupError> {
    for fd in range.clone() {
        // SAFETY: the fd is only used for one `fcntl(F_GETFD)`, which fails
        // harmlessly with EBADF if it is not open; nothing is closed.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            return Err(StartupError::NotASocket { fd });
        }
    }
    let owned: Vec<OwnedFd> = range
        // SAFETY: open (checked above), and the caller guarantees that
        // nothing else owns it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    for fd in &owned {
        rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC).map_err(|e| StartupError::Io {
            operation: "make an inherited fd close-on-exec",
            source: e.into(),
        })?;
    }
    Ok(owned)
}

/// One adopted fd, named, with what it turned out to be.
#[derive(Debug)]
pub(crate) struct Adopted {
    pub(crate) name: String,
    /// The listener kind, or a description of the fd when it is not a
    /// listener this crate supports.
    pub(crate) kind: Result<Kind, String>,
    /// The bound address, empty if unknown.
    pub(crate) address: String,
    pub(crate) fd: OwnedFd,
}

/// Names the fds after `LISTEN_FDNAMES` (`names`) and finds out what each
/// one is by looking at it.
pub(crate) fn inspect(fds: Vec<OwnedFd>, names: Option<&OsStr>) -> Vec<Adopted> {
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
                Inspected::NotASocket => String::new(),
            };
            let default = format!("{}{index}", kind.map_or("other", Kind::as_str));
            let name = unique_name(given.get(index).copied(), &default, &mut used);
            Adopted {
                name,
                kind: kind.ok_or_else(|| found.to_string()),
                address,
                fd,
            }
        })
        .collect()
}

/// The name from `LISTEN_FDNAMES` if it is present, non-empty and not taken
/// by an earlier fd; otherwise `default` (`<kind><index>`), made unique with
/// a `-2`, `-3`, … suffix in the unlikely case that an earlier fd was given
/// that name.
fn unique_name(given: Option<&str>, default: &str, used: &mut HashSet<String>) -> String {
    if let Some(name) = given.filter(|n| !n.is_empty()) {
        if used.insert(name.to_owned()) {
            return name.to_owned();
        }
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
            Err(StartupError::BadEnv {
                var: "LISTEN_PID",
                ..
            })
        ));
        assert_eq!(parse(vars("1", None, Some("10")), 7).unwrap(), Some(10..11));
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
                matches!(err, StartupError::BadEnv { .. }),
                "{fds} {first:?}: {err:?}"
            );
        }
        // Nothing is open that high; nothing is claimed.
        // SAFETY: fds 100000 and 100001 are not open in this test process.
        let err = unsafe { claim(100_000..100_002) }.unwrap_err();
        assert!(
            matches!(err, StartupError::NotASocket { fd: 100000 }),
            "{err:?}"
        );
        // SAFETY: an empty range claims nothing.
        let none = unsafe { claim(5..5) }.unwrap();
        assert!(inspect(none, None).is_empty());
    }
}
