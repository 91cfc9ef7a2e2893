//! Shared by the socket-activation tests (`tests/activation.rs`) and the
//! process they run (`examples/activation_probe.rs`).

#![allow(dead_code)] // each side uses part of it

use std::os::fd::{BorrowedFd, RawFd};

use hotsup_child::{Kind, ListenerInfo};
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

pub fn encode(listeners: &[ListenerInfo]) -> String {
    listeners
        .iter()
        .map(|l| format!("{} {} {}", l.kind, l.name, l.address))
        .collect::<Vec<_>>()
        .join("\n")
}

/// In the probe: the listeners the test says it passed.
pub fn expected() -> Vec<ListenerInfo> {
    let text = std::env::var(EXPECT).unwrap();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let kind = match parts.next().unwrap() {
                "tcp" => Kind::Tcp,
                "udp" => Kind::Udp,
                "unix" => Kind::Unix,
                other => panic!("kind {other}"),
            };
            ListenerInfo {
                kind,
                name: parts.next().unwrap().into(),
                address: parts.next().unwrap().into(),
            }
        })
        .collect()
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
