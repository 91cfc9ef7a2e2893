//! Socket activation: adopting the fds that `LISTEN_FDS` passes, as systemd
//! and `hotsup run --fds systemd` do.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::FdFlags;

use crate::error::Error;
use crate::inherited::Sockets;
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

fn bad_env(var: &'static str, value: &OsStr) -> Error {
    Error::BadEnv {
        var,
        value: value.to_string_lossy().into_owned(),
    }
}

/// Whether the fds are meant for this process: `LISTEN_PID` is unset, empty
/// or this process's pid.
pub(crate) fn meant_for_us(listen_pid: Option<&OsStr>) -> Result<bool, Error> {
    let Some(value) = listen_pid.filter(|v| !v.is_empty()) else {
        return Ok(true);
    };
    let pid: u32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad_env(LISTEN_PID, value))?;
    Ok(pid == std::process::id())
}

/// Adopts the fds `first .. first + LISTEN_FDS`, naming them after
/// `LISTEN_FDNAMES` and finding out what each one is.
///
/// Every fd must be open; then each becomes close-on-exec and is owned by the
/// returned [`Sockets`]. On error, none is adopted (or closed).
pub(crate) fn adopt(
    listen_fds: &OsStr,
    names: Option<&OsStr>,
    first_fd: Option<&OsStr>,
) -> Result<Sockets, Error> {
    let count: RawFd = listen_fds
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad_env(LISTEN_FDS, listen_fds))?;
    let first: RawFd = match first_fd.filter(|v| !v.is_empty()) {
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

    // Check every fd before owning any, so that a wrong count never closes
    // (on the error path) an fd that belongs to someone else.
    for fd in first..end {
        // SAFETY: the fd is only used for one `fcntl(F_GETFD)`, which fails
        // harmlessly with EBADF if it is not open; nothing is closed.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            return Err(Error::NotASocket { fd });
        }
    }

    let given: Vec<&str> = match names.and_then(OsStr::to_str) {
        Some(names) => names.split(':').collect(),
        None => Vec::new(),
    };
    let mut used = HashSet::new();
    let mut entries = Vec::with_capacity(count as usize);
    for (index, fd) in (first..end).enumerate() {
        // SAFETY: the fd is open (checked above) and `LISTEN_FDS` hands it to
        // this process, which this crate adopts once (the process-global
        // `OnceLock` runs this at most once, and the variables are removed
        // from the environment). No other part of the program owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(std::io::Error::from)?;
        let found = sockets::inspect(owned.as_fd());
        let kind = sockets::kind_of(found);
        let address = match found {
            Inspected::Socket { .. } => sockets::local_address(owned.as_fd()),
            Inspected::NotASocket => String::new(),
        };
        let default = format!("{}{index}", kind.map_or("other", |k| k.as_str()));
        let name = unique_name(given.get(index).copied(), &default, &mut used);
        entries.push((name, kind.ok_or_else(|| found.to_string()), address, owned));
    }
    Ok(Sockets::inspected(entries))
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
    if used.insert(default.to_owned()) {
        return default.to_owned();
    }
    let name = (2..)
        .map(|k| format!("{default}-{k}"))
        .find(|n| !used.contains(n))
        .expect("an unused suffix exists");
    used.insert(name.clone());
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

    #[test]
    fn listen_pid() {
        assert!(meant_for_us(None).unwrap());
        assert!(meant_for_us(Some(OsStr::new(""))).unwrap());
        let me = std::process::id().to_string();
        assert!(meant_for_us(Some(OsStr::new(&me))).unwrap());
        assert!(!meant_for_us(Some(OsStr::new("1"))).unwrap());
        assert!(matches!(
            meant_for_us(Some(OsStr::new("x"))),
            Err(Error::BadEnv {
                var: "LISTEN_PID",
                ..
            })
        ));
    }

    #[test]
    fn bad_counts() {
        for (fds, first) in [
            ("x", None),
            ("-1", None),
            ("1", Some("-3")),
            ("2147483647", None),
        ] {
            let err = adopt(OsStr::new(fds), None, first.map(OsStr::new)).unwrap_err();
            assert!(
                matches!(err, Error::BadEnv { .. }),
                "{fds} {first:?}: {err:?}"
            );
        }
        // Nothing is open that high; nothing is adopted.
        let err = adopt(OsStr::new("2"), None, Some(OsStr::new("100000"))).unwrap_err();
        assert!(matches!(err, Error::NotASocket { fd: 100000 }), "{err:?}");
        let none = adopt(OsStr::new("0"), None, None).unwrap();
        assert!(none.listeners().is_empty());
    }
}
