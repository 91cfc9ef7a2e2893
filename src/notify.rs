//! systemd's notify protocol, both ways: hotsup listens on a `NOTIFY_SOCKET`
//! of its own for its children, and reports to its own service manager.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::process::Pid;
use sd_notify::NotifyState;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Largest datagram read; systemd itself accepts up to about 4 KiB plus fds.
pub const MAX_DATAGRAM: usize = 8192;

/// The socket children send `READY=1` to, in a private directory that is
/// removed when hotsup exits.
pub struct ChildNotify {
    pub path: PathBuf,
    socket: Arc<AsyncFd<OwnedFd>>,
    // Dropped last: removing the directory removes the socket file.
    _dir: tempfile::TempDir,
}

impl ChildNotify {
    /// Binds the socket with `SO_PASSCRED` set, before any child starts, so
    /// every datagram arrives with its sender's credentials.
    pub fn bind() -> std::io::Result<ChildNotify> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        // tempfile creates the directory with mode 0700: only our uid can
        // reach the socket.
        let dir = tempfile::Builder::new()
            .prefix("hotsup.")
            .tempdir_in(base)?;
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        rustix::net::sockopt::set_socket_passcred(&sock, true)?;
        let fd: OwnedFd = sock.into();
        // SAFETY: an OwnedFd stays open and keeps its number until the
        // AsyncFd that owns it drops it.
        let socket = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(ChildNotify {
            path,
            socket: Arc::new(socket),
            _dir: dir,
        })
    }

    /// The socket, for the supervisor loop to wait on and read.
    pub fn socket(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.socket.clone()
    }
}

/// One datagram, with the sender's pid from `SCM_CREDENTIALS` and any fds
/// it carried. The fds stay open until the datagram is dropped: that is how
/// `BARRIER=1` is answered, once every earlier datagram was handled.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub pid: Option<Pid>,
    pub text: std::borrow::Cow<'a, str>,
    pub fds: Vec<OwnedFd>,
}

/// Reads one datagram into `buf` without blocking; `None` when there is
/// none. A datagram longer than `buf` is cut, never an error.
pub fn recv<'a>(fd: &OwnedFd, buf: &'a mut [u8]) -> std::io::Result<Option<Datagram<'a>>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(8))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = match rustix::net::recvmsg(
        fd.as_fd(),
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut pid = None;
    let mut fds = Vec::new();
    for m in control.drain() {
        match m {
            RecvAncillaryMessage::ScmCredentials(cred) => pid = Some(cred.pid),
            RecvAncillaryMessage::ScmRights(rights) => fds.extend(rights),
            _ => {}
        }
    }
    let len = msg.bytes.min(buf.len());
    Ok(Some(Datagram {
        pid,
        text: String::from_utf8_lossy(&buf[..len]),
        fds,
    }))
}

/// What a notify datagram says, for the states hotsup acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
    /// `ERRNO=N` with N other than 0: the service reports a failure, which
    /// hotsup counts as unhealthy.
    pub errno: Option<i32>,
}

/// Parses `KEY=VALUE` lines; unknown keys are ignored.
pub fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => p.ready = true,
            Some(("STOPPING", "1")) => p.stopping = true,
            Some(("STATUS", s)) => p.status = Some(s.to_owned()),
            Some(("ERRNO", n)) => p.errno = n.trim().parse().ok().filter(|n| *n != 0),
            _ => {}
        }
    }
    p
}

/// hotsup's own reports to its service manager. Every call is a no-op when
/// `NOTIFY_SOCKET` is unset.
pub struct Manager {
    enabled: bool,
}

impl Manager {
    pub fn from_env() -> Manager {
        Manager {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "manager_notify_failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `Type=notify-reload`: an upgrade began.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_hotsup_acts_on() {
        let p = parse("READY=1\nSTATUS=warming up\nMAINPID=12\n");
        assert!(p.ready);
        assert_eq!(p.status.as_deref(), Some("warming up"));
        assert!(!p.stopping);
        assert!(parse("STOPPING=1").stopping);
        assert!(!parse("READY=0").ready);
        assert_eq!(parse("ERRNO=111").errno, Some(111));
        assert_eq!(parse("ERRNO=0").errno, None);
        assert_eq!(parse("ERRNO=x").errno, None);
        assert_eq!(parse("garbage\n\u{0}"), Parsed::default());
    }
}
