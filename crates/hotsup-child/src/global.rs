//! The process-global handoff, created from the environment on first use.

use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use hotsup_protocol::{ENV_FD, ENV_GENERATION};

use crate::activation::{
    self, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_FIRST_FD, LISTEN_PID, NOTIFY_SOCKET,
};
use crate::drain::Shared;
use crate::error::Error;
use crate::handoff::Handoff;
use crate::inherited::Sockets;
use crate::notify::Notifier;
use crate::sockets;

/// Where the inherited sockets came from.
pub(crate) enum Source {
    /// The native channel (`HOTSUP_FD`).
    Native(Handoff),
    /// Socket activation (`LISTEN_FDS`), from systemd or
    /// `hotsup run --fds systemd`.
    Activation(Sockets),
}

/// What the process learned from its environment.
pub(crate) struct Global {
    /// Whether `HOTSUP_FD` was set, or `LISTEN_FDS` for this process.
    pub(crate) supervised: bool,
    /// The generation: from `HELLO`, or from `HOTSUP_GENERATION` if the
    /// handoff failed or with socket activation.
    pub(crate) generation: Option<u64>,
    /// `None` when standalone.
    inherited: Option<Result<Source, Arc<Error>>>,
    /// `NOTIFY_SOCKET`, if it was set.
    notifier: Option<Notifier>,
    /// Drain state when there is no working native handoff.
    standalone_drain: Arc<Shared>,
}

impl Global {
    /// The inherited sockets: `Ok(None)` when standalone, the start-up error
    /// if the handoff failed.
    pub(crate) fn sockets(&self) -> Result<Option<&Sockets>, Error> {
        match &self.inherited {
            None => Ok(None),
            Some(Ok(Source::Native(handoff))) => Ok(Some(handoff.sockets())),
            Some(Ok(Source::Activation(sockets))) => Ok(Some(sockets)),
            Some(Err(e)) => Err(Error::Handoff(Arc::clone(e))),
        }
    }

    /// The native handoff, if there is one; the start-up error if the
    /// handoff failed.
    fn native(&self) -> Result<Option<&Handoff>, Error> {
        match &self.inherited {
            Some(Ok(Source::Native(handoff))) => Ok(Some(handoff)),
            Some(Err(e)) => Err(Error::Handoff(Arc::clone(e))),
            _ => Ok(None),
        }
    }

    /// `READY` on the native channel, else `READY=1` to `NOTIFY_SOCKET`, else
    /// nothing.
    pub(crate) fn ready(&self) -> Result<(), Error> {
        match (self.native()?, &self.notifier) {
            (Some(handoff), _) => handoff.ready(),
            (None, Some(notifier)) => notifier.ready(),
            (None, None) => Ok(()),
        }
    }

    /// `STATUS` on the native channel, else `STATUS=` to `NOTIFY_SOCKET`,
    /// else nothing.
    pub(crate) fn status(&self, text: &str) -> Result<(), Error> {
        match (self.native()?, &self.notifier) {
            (Some(handoff), _) => handoff.status(text),
            (None, Some(notifier)) => notifier.status(text),
            (None, None) => Ok(()),
        }
    }

    /// The `NOTIFY_SOCKET` value captured at start-up.
    pub(crate) fn notify_socket(&self) -> Option<&OsStr> {
        self.notifier.as_ref().map(Notifier::value)
    }

    /// The drain state the process-wide [`Drain`](crate::Drain) handles share.
    pub(crate) fn drain_shared(&self) -> &Arc<Shared> {
        match &self.inherited {
            Some(Ok(Source::Native(handoff))) => handoff.drain_shared(),
            _ => &self.standalone_drain,
        }
    }
}

/// The process-global state, initialised on the first call.
pub(crate) fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(from_env)
}

/// Every variable this crate reads at start-up, and removes.
const VARS: [&str; 7] = [
    ENV_FD,
    ENV_GENERATION,
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    LISTEN_FDS_FIRST_FD,
    NOTIFY_SOCKET,
];

fn from_env() -> Global {
    let [
        fd_var,
        generation_var,
        listen_fds,
        listen_pid,
        fd_names,
        first_fd,
        notify_socket,
    ] = VARS.map(std::env::var_os);
    for (name, value) in VARS.iter().zip([
        &fd_var,
        &generation_var,
        &listen_fds,
        &listen_pid,
        &fd_names,
        &first_fd,
        &notify_socket,
    ]) {
        if value.is_some() {
            // SAFETY: `remove_var` races with code that reads the environment
            // without std's lock (libc `getenv` from C code or another
            // thread). The crate docs require the first call into this crate
            // to happen early in `main`, before the program starts threads
            // that read the environment, as listenfd and similar crates do.
            // std's own readers take the lock and are safe in any case.
            unsafe { std::env::remove_var(name) };
        }
    }
    let standalone = |notifier| Global {
        supervised: false,
        generation: None,
        inherited: None,
        notifier,
        standalone_drain: Shared::new(),
    };
    let notifier = notify_socket.and_then(Notifier::new);
    let env_generation = generation_var.and_then(|g| g.to_str()?.parse().ok());

    if let Some(fd_var) = fd_var {
        let handoff = open_channel(&fd_var)
            .and_then(Handoff::receive)
            .map_err(Arc::new);
        return Global {
            supervised: true,
            generation: handoff
                .as_ref()
                .map(Handoff::generation)
                .ok()
                .or(env_generation),
            inherited: Some(handoff.map(Source::Native)),
            notifier,
            standalone_drain: Shared::new(),
        };
    }
    let Some(listen_fds) = listen_fds else {
        return standalone(notifier);
    };
    let sockets = match activation::meant_for_us(listen_pid.as_deref()) {
        Ok(false) => return standalone(notifier),
        Ok(true) => activation::adopt(&listen_fds, fd_names.as_deref(), first_fd.as_deref()),
        Err(e) => Err(e),
    };
    Global {
        supervised: true,
        generation: env_generation,
        inherited: Some(sockets.map(Source::Activation).map_err(Arc::new)),
        notifier,
        standalone_drain: Shared::new(),
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
