//! systemd's notify protocol, both ways: hotsup listens on a `NOTIFY_SOCKET`
//! of its own for its children, and reports to its own service manager.

use std::fs::Permissions;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::process::{Gid, Pid, Uid};
use sd_notify::NotifyState;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

/// Largest datagram read; systemd itself accepts up to about 4 KiB plus fds.
const MAX_DATAGRAM: usize = 8192;

/// The socket children send `READY=1` to, in a private directory that is
/// removed when hotsup exits.
pub struct ChildNotify {
    pub path: PathBuf,
    socket: Arc<AsyncFd<OwnedFd>>,
    // Dropped last: removing the directory removes the socket file.
    _dir: tempfile::TempDir,
}

/// One datagram, with the sender's pid from `SCM_CREDENTIALS`.
#[derive(Debug)]
pub struct Datagram {
    pub pid: Option<Pid>,
    pub text: String,
}

impl ChildNotify {
    /// Binds the socket with `SO_PASSCRED` set, before any child starts, so
    /// every datagram arrives with its sender's credentials.
    ///
    /// The directory is private to hotsup (mode 0700, whatever the umask).
    /// With `child` (the children's uid and gid, `--user`), the socket file
    /// becomes theirs with mode 0600 and the directory, still hotsup's,
    /// mode 0710 with their group: the children's uid can reach the socket
    /// (connecting needs write permission on the file, which only it has)
    /// but cannot remove or replace it, and no other uid can reach it.
    pub fn bind(child: Option<(Uid, Gid)>) -> std::io::Result<ChildNotify> {
        // A child of another uid must be able to reach the directory: root's
        // XDG_RUNTIME_DIR (/run/user/0) is 0700, and so may TMPDIR be.
        let reachable = |p: &PathBuf| child.is_none() || searchable_by_all(p);
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir() && reachable(p))
            .or_else(|| Some(std::env::temp_dir()).filter(reachable))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        // mkdir applies the umask to the mode asked for: ask for 0700, so no
        // umask can widen it, then set it exactly.
        let dir = tempfile::Builder::new()
            .prefix("hotsup.")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        rustix::net::sockopt::set_socket_passcred(&sock, true)?;
        // Nobody else can reach the directory yet: the file's mode and
        // owner are set before the directory is opened to the children.
        std::fs::set_permissions(&path, Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = child {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &path,
                Some(uid),
                Some(gid),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::chown(dir.path(), None, Some(gid))?;
            std::fs::set_permissions(dir.path(), Permissions::from_mode(0o710))?;
        }
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

    /// Forwards every datagram to the supervisor loop.
    pub fn spawn_reader(&self, tx: UnboundedSender<Datagram>) -> tokio::task::JoinHandle<()> {
        let socket = self.socket.clone();
        tokio::spawn(async move {
            loop {
                let Ok(mut guard) = socket.readable().await else {
                    return;
                };
                match recv(socket.get_ref()) {
                    Ok(Some(d)) => {
                        if tx.send(d).is_err() {
                            return;
                        }
                    }
                    Ok(None) => guard.clear_ready(),
                    Err(_) => guard.clear_ready(),
                }
            }
        })
    }
}

/// Whether every directory from `/` down to `path` lets anyone through
/// (the x bit for others).
fn searchable_by_all(path: &std::path::Path) -> bool {
    path.ancestors().all(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

fn recv(fd: &OwnedFd) -> std::io::Result<Option<Datagram>> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(8))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = match rustix::net::recvmsg(
        fd.as_fd(),
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC,
    ) {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut pid = None;
    // Fds (FDSTORE=1 and the like) are not supported; draining the buffer
    // closes them.
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmCredentials(cred) = m {
            pid = Some(cred.pid);
        }
    }
    let len = msg.bytes.min(buf.len());
    Ok(Some(Datagram {
        pid,
        text: String::from_utf8_lossy(&buf[..len]).into_owned(),
    }))
}

/// What a notify datagram says, for the states hotsup acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
}

/// Parses `KEY=VALUE` lines; unknown keys are ignored.
pub fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => p.ready = true,
            Some(("STOPPING", "1")) => p.stopping = true,
            Some(("STATUS", s)) => p.status = Some(s.to_owned()),
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
            tracing::warn!("cannot notify the service manager: {e}");
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
        assert_eq!(parse("garbage\n\u{0}"), Parsed::default());
    }
}
