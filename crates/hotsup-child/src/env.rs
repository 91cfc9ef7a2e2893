//! The environment variables the supervisor sets: read once, removed only on
//! request.

use std::ffi::OsString;
use std::process::Command;
use std::sync::OnceLock;

use hotsup_protocol::{ENV_FD, ENV_GENERATION};

use hotsup_os::activation::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_FIRST_FD, LISTEN_PID};

/// The service manager's notification socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Every variable this crate reads: the native channel (`HOTSUP_FD`,
/// `HOTSUP_GENERATION`), socket activation (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`, `LISTEN_FDS_FIRST_FD`) and readiness
/// (`NOTIFY_SOCKET`).
///
/// They describe fds and a notification socket meant for this process, not
/// for its children: see [`remove_env`] and [`scrub_env`].
pub const ENV_VARS: [&str; 7] = [
    ENV_FD,
    ENV_GENERATION,
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    LISTEN_FDS_FIRST_FD,
    NOTIFY_SOCKET,
];

/// The values of [`ENV_VARS`] when this crate first looked.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) hotsup_fd: Option<OsString>,
    pub(crate) generation: Option<OsString>,
    pub(crate) listen_fds: Option<OsString>,
    pub(crate) listen_pid: Option<OsString>,
    pub(crate) fd_names: Option<OsString>,
    pub(crate) first_fd: Option<OsString>,
    pub(crate) notify_socket: Option<OsString>,
}

/// Reads the variables on the first call; later calls return the same
/// values, even after [`scrub_env`] removed them.
pub(crate) fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let [
            hotsup_fd,
            generation,
            listen_fds,
            listen_pid,
            fd_names,
            first_fd,
            notify_socket,
        ] = ENV_VARS.map(std::env::var_os);
        Snapshot {
            hotsup_fd,
            generation,
            listen_fds,
            listen_pid,
            fd_names,
            first_fd,
            notify_socket,
        }
    })
}

/// Removes [`ENV_VARS`] from a command's environment, so that the program
/// it starts neither believes it is supervised nor reports readiness on this
/// process's behalf.
///
/// The sound way to keep the variables from the app's children, at any
/// time, from any thread:
///
/// ```
/// let mut cmd = std::process::Command::new("true");
/// hotsup_child::remove_env(&mut cmd).status()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn remove_env(command: &mut Command) -> &mut Command {
    for var in ENV_VARS {
        command.env_remove(var);
    }
    command
}

/// Removes [`ENV_VARS`] from this process's environment, after saving their
/// values for this crate (so it may run before or after the handoff).
///
/// The crate never does this by itself: the handoff only reads the
/// environment, so it is sound at any time, also from a `#[tokio::main]`
/// runtime thread. Removing is for programs that start other programs with
/// APIs that do not let them shape the environment; otherwise prefer
/// [`remove_env`] on each [`Command`].
///
/// The sockets and the channel are close-on-exec either way, so a child that
/// sees the variables finds the fd numbers closed (or reused) rather than the
/// sockets; hence the removal.
///
/// # Safety
///
/// As for [`std::env::remove_var`]: no other thread may read or write the
/// environment at the same time, which in practice means calling this before
/// any other thread starts (first thing in `main`, before an async runtime).
pub unsafe fn scrub_env() {
    snapshot();
    for var in ENV_VARS {
        if std::env::var_os(var).is_some() {
            // SAFETY: the caller guarantees that no other thread uses the
            // environment now.
            unsafe { std::env::remove_var(var) };
        }
    }
}
