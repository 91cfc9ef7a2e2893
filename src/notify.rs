//! systemd's notify protocol, both ways: hotsup listens on a `NOTIFY_SOCKET`
//! of its own for its children, and reports to its own service manager.

use std::fs::Permissions;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::process::{Gid, Pid, Uid};
use sd_notify::NotifyState;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Largest datagram read; systemd itself accepts up to about 4 KiB plus fds.
pub const MAX_DATAGRAM: usize = 8192;

/// The private directory (mode 0700) that holds one `NOTIFY_SOCKET` per
/// worker process. It and its sockets are removed when hotsup exits.
///
/// A socket of its own per worker, rather than one for all, is what makes a
/// message count even when its sender is gone by the time hotsup reads it:
/// `systemd-notify --ready`, or any helper that sends READY=1 and exits,
/// sends to the socket its own generation was given. While the sender lives,
/// hotsup also checks that it belongs to that generation (its main process,
/// its cgroup, or without cgroups its process group), so a process of
/// another generation that learned the path cannot speak for this one.
pub struct ChildNotify {
    /// Removed with its contents on drop.
    dir: PathBuf,
    /// `--user`: who owns the sockets.
    child: Option<(Uid, Gid)>,
}

/// Whether every directory from `/` down to `path` lets anyone through
/// (the x bit for others).
fn searchable_by_all(path: &std::path::Path) -> bool {
    path.ancestors().all(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

impl ChildNotify {
    /// Creates the directory, private to hotsup (mode 0700, whatever the
    /// umask), in hotsup's runtime directory ([`crate::runtime_dir`]); in
    /// the temporary directory only when the children (`--user`) could not
    /// reach the runtime directory.
    ///
    /// With `child` (the children's uid and gid, `--user`), each socket
    /// file becomes theirs with mode 0600 and the directory, still hotsup's,
    /// mode 0710 with their group: the children's uid can reach its sockets
    /// (connecting needs write permission on the file, which only it has)
    /// but cannot remove or replace them, and no other uid can reach them.
    pub fn create(child: Option<(Uid, Gid)>) -> std::io::Result<ChildNotify> {
        // A child of another uid must be able to reach the directory: the
        // runtime directory is 0700, and so may TMPDIR be.
        let reachable = |p: &PathBuf| child.is_none() || searchable_by_all(p);
        let runtime = crate::runtime_dir::dir();
        let base = Some(runtime)
            .filter(|p| crate::runtime_dir::ensure(p).is_ok() && reachable(p))
            .or_else(|| Some(std::env::temp_dir()).filter(reachable))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        // mkdir applies the umask to the mode asked for: ask for 0700, so no
        // umask can widen it, then set it exactly.
        let dir = tempfile::Builder::new()
            .prefix("notify.")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
        if let Some((_, gid)) = child {
            rustix::fs::chown(dir.path(), None, Some(gid))?;
            std::fs::set_permissions(dir.path(), Permissions::from_mode(0o710))?;
        }
        // Removed by our Drop instead: a directory adopted after a
        // self-upgrade has no TempDir.
        Ok(ChildNotify {
            dir: dir.keep(),
            child,
        })
    }

    /// The directory of the hotsup that exec'd this one
    /// (`hotsup upgrade --self`), with the sockets of the live workers.
    pub fn adopt(dir: PathBuf, child: Option<(Uid, Gid)>) -> std::io::Result<ChildNotify> {
        if !std::fs::symlink_metadata(&dir)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(ChildNotify { dir, child })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Binds the socket of one worker, with `SO_PASSCRED` set before any
    /// child can know it, so every datagram arrives with its sender's pid.
    pub fn bind(&self, generation: u64, slot: u32, seq: u64) -> std::io::Result<WorkerSocket> {
        let path = self.dir.join(format!("notify-{generation}.{slot}.{seq}"));
        // A leftover of a worker that failed to spawn.
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        rustix::net::sockopt::set_socket_passcred(&sock, true)?;
        // Mode and owner are set before the child that will use it exists;
        // until then only hotsup's uid can reach the directory's files.
        std::fs::set_permissions(&path, Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.child {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &path,
                Some(uid),
                Some(gid),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        let fd: OwnedFd = sock.into();
        // SAFETY: an OwnedFd stays open and keeps its number until the
        // AsyncFd that owns it drops it.
        let socket = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(WorkerSocket { path, socket })
    }
}

/// One worker's `NOTIFY_SOCKET`; its file is removed on drop.
pub struct WorkerSocket {
    pub path: PathBuf,
    socket: AsyncFd<OwnedFd>,
}

impl Drop for ChildNotify {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl WorkerSocket {
    /// Its number, for `hotsup upgrade --self` (the relay task owns it).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.socket.get_ref())
    }

    /// A worker's socket handed over by the hotsup that exec'd this one.
    /// Must run inside the runtime.
    pub fn adopt(fd: OwnedFd, path: PathBuf) -> std::io::Result<WorkerSocket> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: an OwnedFd stays open and keeps its number until the
        // AsyncFd that owns it drops it.
        let socket = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(WorkerSocket { path, socket })
    }
}

impl Drop for WorkerSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who may speak on a worker's socket.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The worker's main process.
    pub pid: Pid,
    /// Its cgroup, as `/proc/PID/cgroup` shows it; `None` without cgroups,
    /// where its process group (whose id is `pid`) decides instead.
    pub cgroup: Option<PathBuf>,
}

impl Owner {
    /// Whether a datagram from `sender` counts. Looked at the moment the
    /// datagram is read: a sender that is gone by then sent to the socket
    /// only its generation knows, so it counts.
    fn accepts(&self, sender: Option<Pid>) -> bool {
        let Some(sender) = sender else {
            return false;
        };
        if sender == self.pid {
            return true;
        }
        match &self.cgroup {
            // A process can leave its group, and join another generation's,
            // but not leave its cgroup.
            Some(cg) => crate::cgroup::cgroup_of(sender).is_none_or(|c| c.starts_with(cg)),
            None => match rustix::process::getpgid(Some(sender)) {
                Ok(pgid) => pgid == self.pid,
                Err(_) => true,
            },
        }
    }
}

/// Datagrams dropped because they came from a process that is not of the
/// worker whose socket they reached, and the rate-limited warning about
/// them.
#[derive(Debug)]
pub struct Strangers {
    total: AtomicU64,
    unreported: AtomicU64,
    /// Milliseconds after `epoch` of the last warning, plus one (0: never).
    warned_at: AtomicU64,
    epoch: std::time::Instant,
}

/// At most one warning about strangers per this interval, with a count.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for Strangers {
    fn default() -> Self {
        Strangers {
            total: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Strangers {
    /// Counting on from `total`, the count of the hotsup that exec'd this
    /// one.
    pub fn starting_at(total: u64) -> Strangers {
        let s = Strangers::default();
        s.total.store(total, Ordering::Relaxed);
        s
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn note(&self, sender: Option<Pid>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let unreported = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        let every = WARN_EVERY.as_millis() as u64;
        if last == 0 || now.saturating_sub(last) >= every {
            self.warned_at.store(now, Ordering::Relaxed);
            self.unreported.store(0, Ordering::Relaxed);
            tracing::warn!(
                dropped = unreported,
                last_sender = sender.map(Pid::as_raw_pid),
                "notify_from_stranger"
            );
        }
    }
}

/// Datagrams handled per wakeup before the runtime runs anything else.
const BATCH: usize = 32;

/// Reads a worker's socket for as long as the worker lives, and relays what
/// its processes say. The queue to the supervisor is bounded: when it is
/// full, this stops reading and the worker's senders wait.
pub async fn relay<W: Copy + Send + 'static>(
    sock: WorkerSocket,
    owner: Owner,
    worker: W,
    tx: tokio::sync::mpsc::Sender<(W, Parsed)>,
    strangers: Arc<Strangers>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok(mut guard) = sock.socket.readable().await else {
            return;
        };
        for _ in 0..BATCH {
            let d = match recv(sock.socket.get_ref(), &mut buf) {
                Ok(Some(d)) => d,
                Ok(None) | Err(_) => {
                    guard.clear_ready();
                    break;
                }
            };
            if !owner.accepts(d.pid) {
                strangers.note(d.pid);
                continue;
            }
            let parsed = parse(&d.text);
            if tx.send((worker, parsed)).await.is_err() {
                return;
            }
            // `d`, and the fd of a BARRIER=1 it may carry, is dropped only
            // now, once everything sent before it was passed on.
            drop(d);
        }
        // AsyncFd readiness does not use up the task's budget: give the
        // rest of the supervisor its turn.
        tokio::task::yield_now().await;
    }
}

/// One datagram, with the sender's pid from `SCM_CREDENTIALS` and any fds
/// it carried. The fds stay open until the datagram is dropped: that is how
/// `BARRIER=1` is answered, once every earlier datagram was passed on.
#[derive(Debug)]
struct Datagram<'a> {
    pid: Option<Pid>,
    text: std::borrow::Cow<'a, str>,
    _fds: Vec<OwnedFd>,
}

/// Reads one datagram into `buf` without blocking; `None` when there is
/// none. A datagram longer than `buf` is cut, never an error.
fn recv<'a>(fd: &OwnedFd, buf: &'a mut [u8]) -> std::io::Result<Option<Datagram<'a>>> {
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
        _fds: fds,
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
