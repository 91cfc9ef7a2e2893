//! Shared by the socket-activation tests (`tests/activation.rs`) and the
//! process they run (`examples/activation_probe.rs`).

#![allow(dead_code)] // each side uses part of it

use std::os::fd::{BorrowedFd, RawFd};

use rustix::io::FdFlags;

/// Set in the probe: the listeners it must find, `kind name address` lines.
pub const EXPECT: &str = "HSC_ACTIVATION_EXPECT";

/// Every variable the crate must remove from the environment.
pub const SCRUBBED: [&str; 7] = [
    "HOTSUP_FD",
    "HOTSUP_GENERATION",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
    "NOTIFY_SOCKET",
];

/// A listener as `ListenerInfo`'s `Display` writes it: `kind name address`.
pub fn line(kind: &str, name: &str, address: impl std::fmt::Display) -> String {
    format!("{kind} {name} {address}")
}

pub fn encode(listeners: &[String]) -> String {
    listeners.join("\n")
}

/// In the probe: the listeners the test says it passed.
pub fn expected() -> Vec<String> {
    let text = std::env::var(EXPECT).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// In the probe: the listeners the crate found.
pub fn found() -> Vec<String> {
    hotsup_child::listeners()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The address part of an expected line.
pub fn address(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap()
}

pub fn assert_scrubbed() {
    for var in SCRUBBED {
        assert_eq!(std::env::var_os(var), None, "{var} must be removed");
    }
}

pub fn fd_flags(fd: RawFd) -> rustix::io::Result<FdFlags> {
    // SAFETY: only used for one `fcntl(F_GETFD)`, which fails harmlessly
    // with EBADF if the fd is not open.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) })
}
