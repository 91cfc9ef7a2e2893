//! Listening sockets that survive a crash of hotsup: systemd's file
//! descriptor store.
//!
//! With `FileDescriptorStoreMax=` set on the unit, hotsup gives systemd a
//! copy of each listener it binds (`FDSTORE=1`, `FDNAME=hs.NAME`). If hotsup
//! dies, systemd keeps the sockets open, so connections queue in their
//! backlog instead of being refused, and hands them back at the next start
//! as `LISTEN_FDS`. hotsup then takes back each one whose name and address
//! match a `--listen`, instead of binding it again; one that no longer
//! matches is closed and removed from the store (`FDSTOREREMOVE=1`).
//!
//! The `hs.` prefix keeps hotsup's own entries apart from sockets a
//! `.socket` unit passes, which keep their names.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use clap::ValueEnum;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

use crate::listeners::{Address, ListenSpec, Listener};

/// Prefix of the names hotsup gives its sockets in the store.
const PREFIX: &str = "hs.";

/// `--fd-store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// When the service manager says the store is enabled (`$FDSTORE`,
    /// systemd 254 and later).
    Auto,
    /// Whenever there is a service manager (`NOTIFY_SOCKET`): for systemd
    /// 253 and earlier, which do not say.
    On,
    Off,
}

/// The store, when there is one to use.
pub struct FdStore;

impl FdStore {
    /// Whether hotsup should use the store.
    pub fn detect(mode: Mode) -> Option<FdStore> {
        // No service manager, no store.
        std::env::var_os("NOTIFY_SOCKET")?;
        let announced = std::env::var("FDSTORE")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n > 0);
        match mode {
            Mode::On => Some(FdStore),
            Mode::Auto if announced => Some(FdStore),
            _ => None,
        }
    }

    /// Gives systemd a copy of `l`.
    pub fn keep(&self, l: &Listener) {
        let text = format!("FDSTORE=1\nFDNAME={PREFIX}{}\n", l.info.name);
        match send(&text, Some(l.fd().as_fd())) {
            Ok(()) => tracing::info!(name = %l.info.name, "fd_stored"),
            Err(e) => tracing::warn!(name = %l.info.name, error = %e, "fd_store_failed"),
        }
    }

    /// Drops a listener from the store.
    pub fn forget(&self, name: &str) {
        let text = format!("FDSTOREREMOVE=1\nFDNAME={PREFIX}{name}\n");
        if let Err(e) = send(&text, None) {
            tracing::warn!(name = %name, error = %e, "fd_store_failed");
        }
    }
}

/// One notify message to the service manager, with an fd attached. (The
/// sd-notify crate does the same only through a second syscall crate.)
fn send(text: &str, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let path = std::env::var_os("NOTIFY_SOCKET")
        .ok_or_else(|| std::io::Error::other("NOTIFY_SOCKET is not set"))?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        None => SocketAddrUnix::new(bytes)?,
    };
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("control buffer too small"));
    }
    rustix::net::sendmsg_addr(
        &sock,
        &addr,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    Ok(())
}

/// Splits adopted sockets into those hotsup stored itself (named without
/// their prefix) and those a `.socket` unit passed.
pub fn split(adopted: Vec<Listener>) -> (Vec<Listener>, Vec<Listener>) {
    let (mut stored, activated): (Vec<Listener>, Vec<Listener>) = adopted
        .into_iter()
        .partition(|l| l.info.name.starts_with(PREFIX));
    for l in &mut stored {
        l.info.name = l.info.name[PREFIX.len()..].to_string();
        l.origin = crate::listeners::Origin::Restored;
    }
    (stored, activated)
}

/// Takes the stored socket that `spec`, named `name`, describes, if one
/// does: same name, same kind, and the same address. A host that is a name
/// rather than an IP is not resolved again: its port alone must match.
pub fn take(stored: &mut Vec<Listener>, spec: &ListenSpec, name: &str) -> Option<Listener> {
    let pos = stored.iter().position(|l| {
        l.info.name == name && matches(&spec.address, l.info.kind, &l.info.address)
    })?;
    Some(stored.remove(pos))
}

fn matches(want: &Address, kind: hotsup_protocol::Kind, have: &str) -> bool {
    use hotsup_protocol::Kind;
    match (want, kind) {
        (Address::Tcp(hp), Kind::Tcp) | (Address::Udp(hp), Kind::Udp) => {
            let Ok(have) = have.parse::<SocketAddr>() else {
                return false;
            };
            match hp.parse::<SocketAddr>() {
                // Port 0 asked for any port: the one the kernel chose
                // last time will do.
                Ok(w) => w.ip() == have.ip() && (w.port() == 0 || w.port() == have.port()),
                Err(_) => hp
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_some_and(|p| p == 0 || p == have.port()),
            }
        }
        (Address::Unix(path), Kind::Unix) => path.as_os_str() == have,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotsup_protocol::Kind;

    fn tcp(s: &str) -> Address {
        Address::Tcp(s.to_string())
    }

    #[test]
    fn a_stored_socket_matches_only_the_same_address() {
        assert!(matches(&tcp("127.0.0.1:8080"), Kind::Tcp, "127.0.0.1:8080"));
        assert!(matches(&tcp("[::1]:8080"), Kind::Tcp, "[::1]:8080"));
        assert!(matches(&tcp("127.0.0.1:0"), Kind::Tcp, "127.0.0.1:41234"));
        assert!(!matches(
            &tcp("127.0.0.1:8081"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        assert!(!matches(&tcp("0.0.0.0:8080"), Kind::Tcp, "127.0.0.1:8080"));
        assert!(!matches(
            &tcp("127.0.0.1:8080"),
            Kind::Udp,
            "127.0.0.1:8080"
        ));
        assert!(matches(
            &Address::Udp("127.0.0.1:53".into()),
            Kind::Udp,
            "127.0.0.1:53"
        ));
        // A name is not resolved again; its port decides.
        assert!(matches(&tcp("localhost:8080"), Kind::Tcp, "127.0.0.1:8080"));
        assert!(!matches(
            &tcp("localhost:8081"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        let unix = Address::Unix("/run/app.sock".into());
        assert!(matches(&unix, Kind::Unix, "/run/app.sock"));
        assert!(!matches(&unix, Kind::Unix, "/run/other.sock"));
        assert!(!matches(&unix, Kind::Tcp, "/run/app.sock"));
    }
}
