//! The process-global handoff, created from the environment on first use.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use hotsup_protocol::{ENV_FD, ENV_GENERATION};

use crate::drain::Shared;
use crate::error::Error;
use crate::handoff::Handoff;
use crate::sockets;

/// What the process learned from its environment.
pub(crate) struct Global {
    /// Whether `HOTSUP_FD` was set.
    pub(crate) supervised: bool,
    /// The generation: from `HELLO`, or from `HOTSUP_GENERATION` if the
    /// handoff failed.
    pub(crate) generation: Option<u64>,
    /// `None` when standalone.
    handoff: Option<Result<Handoff, Arc<Error>>>,
    /// Drain state when there is no working handoff.
    standalone_drain: Arc<Shared>,
}

impl Global {
    /// The handoff: `Ok(None)` when standalone, the start-up error if the
    /// handoff failed.
    pub(crate) fn handoff(&self) -> Result<Option<&Handoff>, Error> {
        match &self.handoff {
            None => Ok(None),
            Some(Ok(handoff)) => Ok(Some(handoff)),
            Some(Err(e)) => Err(Error::Handoff(Arc::clone(e))),
        }
    }

    /// The drain state the process-wide [`Drain`](crate::Drain) handles share.
    pub(crate) fn drain_shared(&self) -> &Arc<Shared> {
        match &self.handoff {
            Some(Ok(handoff)) => handoff.drain_shared(),
            _ => &self.standalone_drain,
        }
    }
}

/// The process-global state, initialised on the first call.
pub(crate) fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(from_env)
}

fn from_env() -> Global {
    let fd_var = std::env::var_os(ENV_FD);
    let generation_var = std::env::var_os(ENV_GENERATION);
    if fd_var.is_some() || generation_var.is_some() {
        // SAFETY: `remove_var` races with code that reads the environment
        // without std's lock (libc `getenv` from C code or another thread).
        // The crate docs require the first call into this crate to happen
        // early in `main`, before the program starts threads that read the
        // environment, as listenfd and similar crates do. std's own readers
        // take the lock and are safe in any case.
        unsafe {
            std::env::remove_var(ENV_FD);
            std::env::remove_var(ENV_GENERATION);
        }
    }
    let standalone_drain = Shared::new();
    let Some(fd_var) = fd_var else {
        return Global {
            supervised: false,
            generation: None,
            handoff: None,
            standalone_drain,
        };
    };
    let env_generation = generation_var.and_then(|g| g.to_str()?.parse().ok());
    let handoff = open_channel(&fd_var)
        .and_then(Handoff::receive)
        .map_err(Arc::new);
    Global {
        supervised: true,
        generation: handoff
            .as_ref()
            .map(Handoff::generation)
            .ok()
            .or(env_generation),
        handoff: Some(handoff),
        standalone_drain,
    }
}

/// Takes ownership of the channel fd named by `HOTSUP_FD`, after checking it
/// is open and of the right type (so a wrong number never closes someone
/// else's fd).
fn open_channel(value: &OsString) -> Result<OwnedFd, Error> {
    let bad = || Error::BadEnv {
        var: ENV_FD,
        value: value.to_string_lossy().into_owned(),
    };
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    if fd < 0 {
        return Err(bad());
    }
    // Where /proc is mounted, check the fd is open before borrowing it.
    if std::fs::metadata("/proc/self/fd").is_ok()
        && std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err()
    {
        return Err(Error::NotASocket { fd });
    }
    // SAFETY: the supervisor passes the channel open at this number (and it
    // was just seen in /proc/self/fd). It is only used for two getsockopt
    // calls, which fail harmlessly with EBADF should it not be open, and this
    // crate is the only user of HOTSUP_FD, which it has already removed.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match sockets::is_seqpacket(borrowed) {
        Ok(true) => {}
        Ok(false) => return Err(Error::NotSeqpacket { fd }),
        Err(()) => return Err(Error::NotASocket { fd }),
    }
    // SAFETY: the fd is open and is an AF_UNIX SOCK_SEQPACKET socket, and
    // HOTSUP_FD hands it to this crate: nothing else in the process owns it.
    // The OnceLock runs this at most once, so it is owned only once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
