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
use std::os::fd::{AsFd, BorrowedFd};

use clap::ValueEnum;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

use crate::listeners::{ListenSpec, Listener};

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
#[derive(Debug, Clone, Copy)]
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
/// does: same name, and [`Listener::is_bound_to`] its address.
pub fn take(stored: &mut Vec<Listener>, spec: &ListenSpec, name: &str) -> Option<Listener> {
    let pos = stored
        .iter()
        .position(|l| l.info.name == name && l.is_bound_to(&spec.address))?;
    Some(stored.remove(pos))
}
