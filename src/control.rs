//! The control socket: a Unix stream socket that deploy scripts and the
//! `hotsup upgrade|status|stop|signal` subcommands talk to.
//!
//! # Protocol, version 1
//!
//! One request per connection. The client sends one line of JSON, the
//! server answers one line of JSON and closes the connection.
//!
//! ```text
//! -> {"version":1,"command":"upgrade","wait":true}
//! <- {"version":1,"ok":true,"upgrade":{"result":"ready","generation":3,"pid":4242}}
//! -> {"version":1,"command":"status"}
//! <- {"version":1,"ok":true,"status":{...}}
//! -> {"version":1,"command":"stop","wait":true}
//! -> {"version":1,"command":"signal","signal":"USR1"}
//! <- {"version":1,"ok":false,"error":"malformed request: ..."}
//! ```
//!
//! `upgrade` with `"wait": true` (the default) answers when the upgrade that
//! covers the request has an outcome, probation included: `ready`, `failed`
//! (never became ready), `rolled_back` (became ready, then failed on
//! probation or was rolled back by request) or `superseded` (hotsup began
//! shutting down first). A failure carries `failure`, a typed object whose
//! `kind` names the cause (`exited_before_ready`, `not_ready`,
//! `exited_on_probation`, `unhealthy`, ...), and `reason`, its human form.
//! With `"wait": false` it answers `started` (or `queued`, when it will follow
//! the upgrade in progress) once the new generation has a pid.
//!
//! `rollback` takes back the upgrade on probation at once, or else upgrades
//! to the previous good executable; it answers like `upgrade`.
//!
//! `self_upgrade` (with `"binary": PATH` to choose another file than the
//! install path) checks the new hotsup binary, answers
//! `{"self_upgrade":{"from_version":..,"to_version":..,"binary":..,"count":N}}`
//! and then execs it in place; the client polls `status` until
//! `binary.self_upgrades` is N. A refusal is `ok: false` with the reason.
//!
//! `events` (with `"names": [...]` to choose) keeps the connection and
//! writes each lifecycle event as one JSON line, the same objects as
//! `--log-format json` logs (`{"event":"ready","generation":2,...}`), until
//! hotsup exits. A client that falls too far behind gets
//! `{"event":"events_lost","count":N}` and the events after.
//!
//! Unknown fields are ignored; a new incompatible protocol gets a new
//! `version`.
//!
//! # Bounds
//!
//! At most [`MAX_CONNECTIONS`] (64) connections are served at once; one
//! more is answered `{"version":1,"ok":false,"error":"busy: ..."}` without
//! waiting and closed, so a flood of idle clients cannot queue without end
//! or pin fds. A client has [`REQUEST_TIMEOUT`] (10 s) to send its request
//! and [`REPLY_TIMEOUT`] (5 s) to take the reply; past either, the
//! connection is closed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::lifecycle::{FailureReason, LastResult, UpgradeOutcome};

/// The control protocol version this hotsup speaks.
pub const VERSION: u32 = 1;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// A client must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must take the reply within this time.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are refused at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The answer to a connection beyond [`MAX_CONNECTIONS`]; short enough to
/// fit any socket buffer, so writing it never waits.
const BUSY: &[u8] =
    b"{\"version\":1,\"ok\":false,\"error\":\"busy: too many control connections (64), try again\"}\n";

/// A request, tagged by `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    /// Start an upgrade; with `wait`, answer with its outcome.
    Upgrade {
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Describe the supervisor.
    Status,
    /// Graceful shutdown; with `wait`, answer when it is done.
    Stop {
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Forward a signal (name or number) to the serving generation's
    /// workers, or to the worker of one slot.
    Signal {
        signal: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<u32>,
    },
    /// Change the number of workers.
    Scale { workers: u32 },
    /// Stream lifecycle events as JSON lines, those named in `names` (all
    /// when empty), until hotsup exits.
    Events {
        #[serde(default)]
        names: Vec<String>,
    },
    /// Roll back the upgrade on probation, or go back to the previous good
    /// executable.
    Rollback,
    /// Replace hotsup itself by the binary at its install path (or
    /// `binary`), in place: same pid, children untouched. Answered once the
    /// new binary's check passed, just before the exec; the client then
    /// waits for `status` to show the new binary.
    #[serde(rename = "self_upgrade")]
    SelfUpgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
    },
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Every reply: `ok`, and one of the payloads or `error`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stopped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signalled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scaled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_upgrade: Option<SelfUpgrading>,
}

/// A self-upgrade about to happen: the new binary passed its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfUpgrading {
    pub from_version: String,
    pub to_version: String,
    pub binary: String,
    /// `self_upgrades` in `status` once the new binary runs.
    pub count: u64,
}

/// Which binary a hotsup runs, and how often it replaced itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryStatus {
    /// The path it was started from, where `upgrade --self` looks.
    pub path: String,
    /// `dev:inode:size:mtime` of the file it was started from: differs
    /// between two builds of one version.
    pub build: String,
    pub self_upgrades: u64,
    /// Self-upgrades refused or failed since this binary started.
    pub self_upgrades_failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_self_upgrade_error: Option<String>,
}

/// What `scale` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaled {
    pub from: u32,
    pub to: u32,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            version: VERSION,
            ok: false,
            error: Some(msg.into()),
            ..Reply::default()
        }
    }

    pub fn upgrade(o: UpgradeOutcome) -> Reply {
        Reply {
            version: VERSION,
            ok: o.is_success(),
            upgrade: Some(o),
            ..Reply::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stopped {
    pub exit_code: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signalled {
    pub signal: String,
    pub generation: u64,
    pub pid: i32,
}

/// `hotsup status --json`: this schema is stable within version 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    pub version: String,
    pub uptime_ms: u64,
    pub listeners: Vec<ListenerStatus>,
    pub serving: Option<GenerationStatus>,
    pub starting: Option<GenerationStatus>,
    /// The generation an upgrade will start once its `--check` passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checking: Option<u64>,
    /// The paused previous generation, while `serving` is on probation.
    #[serde(default)]
    pub standby: Option<GenerationStatus>,
    pub draining: Vec<GenerationStatus>,
    pub last_upgrade: Option<LastUpgrade>,
    /// Crash restarts.
    pub restarts: u64,
    /// Upgrades that went live, failed before ready, and were rolled back.
    #[serde(default)]
    pub upgrades: UpgradeCounts,
    /// The executables hotsup keeps pinned: what a crash restart runs
    /// (`last_good`) and what `hotsup rollback` goes back to
    /// (`previous_good`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_good: Option<String>,
    /// NOTIFY_SOCKET datagrams dropped because no generation sent them.
    #[serde(default)]
    pub notify_dropped: u64,
    /// Workers per generation (`--workers`, or the last `hotsup scale`).
    #[serde(default = "one")]
    pub workers: u32,
    /// Log lines hotsup could not write: stderr was full or closed.
    #[serde(default)]
    pub log_lines_dropped: u64,
    #[serde(default)]
    pub binary: BinaryStatus,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct UpgradeCounts {
    pub ready: u64,
    pub failed: u64,
    pub rolled_back: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub kind: String,
    pub address: String,
    /// `bound` (by this hotsup), `systemd` (socket activation) or
    /// `fd-store` (kept by systemd across a restart of hotsup).
    #[serde(default)]
    pub source: String,
    /// The generations that were given it.
    #[serde(default)]
    pub generations: Vec<u64>,
    /// Removed from the config file: new generations do not get it; it
    /// closes once no generation uses it.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    pub pid: i32,
    /// Milliseconds since it was spawned.
    pub age_ms: u64,
    /// How it became ready: `READY`, `READY=1`, `delay` or `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_via: Option<String>,
    /// Milliseconds since it became ready (serving only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_ms: Option<u64>,
    /// Milliseconds until it is killed (draining only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_in_ms: Option<u64>,
    /// Milliseconds of probation left (on probation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_ends_in_ms: Option<u64>,
    /// `starting`, `probation`, `serving`, `standby`, `draining` or
    /// `killing`.
    #[serde(default)]
    pub state: String,
    /// The protocol version it speaks (2 can be paused and resumed).
    #[serde(default = "one")]
    pub protocol: u32,
    /// The last UNHEALTHY (or ERRNO=) it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// Its worker processes (one, without `--workers`).
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// The last status line it reported (`STATUS`, or `STATUS=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// One worker process of a generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its slot, 0 to N-1 (`HOTSUP_WORKER`).
    pub worker: u32,
    pub pid: i32,
    /// `starting`, `serving`, `paused`, `draining` or `killing`.
    pub state: String,
    pub age_ms: u64,
    /// Resident memory, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastUpgrade {
    pub generation: Option<u64>,
    pub result: LastResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReason>,
    /// The human form of `failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ago_ms: u64,
}

/// A request on its way to the supervisor loop, with where to answer.
pub struct Message {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
    /// Fired (or dropped) once the reply is written or the client gone:
    /// a self-upgrade execs only then, so that its answer goes out.
    pub written: oneshot::Receiver<()>,
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "control socket {0} is in use by a live process: another hotsup runs with this name (choose one with --name or --control)"
    )]
    InUse(String),
    #[error("control socket {0} exists and is not a socket; refusing to replace it")]
    NotSocket(String),
    #[error("cannot create control socket {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The default control socket for `name`: `NAME.sock` in the runtime
/// directory ([`crate::runtime_dir`]).
pub fn default_path(name: &str) -> PathBuf {
    crate::runtime_dir::dir().join(format!("{name}.sock"))
}

/// The control sockets in `dir` that a live process accepts on, sorted:
/// the running supervisors, whatever stale files their dead predecessors
/// left. Each is probed with a non-blocking connect, so a supervisor that
/// does not accept (its backlog full) still counts and never blocks the
/// caller.
pub fn live_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut live: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock") && accepts(p))
        .collect();
    live.sort();
    live
}

/// Whether a process listens on the Unix socket at `path`.
fn accepts(path: &Path) -> bool {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(fd) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    ) else {
        return false;
    };
    // EAGAIN: the backlog is full, so someone listens. ECONNREFUSED: a
    // stale file.
    matches!(
        rustix::net::connect(&fd, &addr),
        Ok(()) | Err(rustix::io::Errno::AGAIN)
    )
}

/// A directory another user controls could swap the socket file under us
/// (the default under /tmp is guessable): it must be a real directory owned
/// by us or root, and writable by others only if sticky.
/// The bound control socket; its file is removed on drop if still ours.
pub struct Server {
    pub path: PathBuf,
    listener: Option<UnixListener>,
    /// The listener's number (the accept task owns it), for a self-upgrade.
    fd: std::os::fd::RawFd,
    ident: (u64, u64),
    /// Connections being served, so replies sent at exit get written.
    active: std::sync::Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.ident
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Server {
    /// Binds `path` with mode 0600, replacing a stale socket file. Must run
    /// inside the runtime.
    pub fn bind(path: &Path) -> Result<Server, ControlError> {
        use std::os::unix::fs::FileTypeExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::runtime_dir::ensure(dir).map_err(io_err(path))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotSocket(path.display().to_string()));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ControlError::InUse(path.display().to_string())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io_err(path))?;
                }
                Err(e) => return Err(io_err(path)(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        // Mode 0600 from the start: the umask applies at creation, so there
        // is no window, and no chmod that could follow a swapped-in symlink.
        // The runtime has no other thread that could create files meanwhile.
        let old = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(io_err(path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
        let server = Server {
            path: path.to_path_buf(),
            fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
            listener: Some(listener),
            ident: (meta.dev(), meta.ino()),
            active: Default::default(),
        };
        Ok(server)
    }

    /// The socket as `hotsup upgrade --self` hands it over.
    pub fn to_state(&self) -> crate::state::ControlState {
        crate::state::ControlState {
            fd: self.fd,
            file: crate::state::OwnedFile {
                path: crate::state::Os::new(self.path.as_os_str()),
                dev: self.ident.0,
                inode: self.ident.1,
            },
        }
    }

    /// The control socket of the hotsup that exec'd this one. Must run
    /// inside the runtime.
    pub fn adopt(st: &crate::state::ControlState) -> Result<Server, String> {
        let fd = crate::state::adopt_fd(st.fd, "the control socket")?;
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("the control socket: {e}"))?;
        let listener =
            UnixListener::from_std(std_listener).map_err(|e| format!("the control socket: {e}"))?;
        Ok(Server {
            path: st.file.path.to_path(),
            fd: st.fd,
            listener: Some(listener),
            ident: (st.file.dev, st.file.inode),
            active: Default::default(),
        })
    }

    /// Lets the connections in flight write their replies (the answers to
    /// `stop` are sent as hotsup exits), for at most `timeout`.
    pub async fn quiesce(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.active.1.notified();
            if self.active.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Accepts connections and forwards their requests.
    pub fn spawn(
        &mut self,
        tx: mpsc::UnboundedSender<Message>,
        feed: EventFeed,
    ) -> tokio::task::JoinHandle<()> {
        let listener = self.listener.take();
        let active = self.active.clone();
        tokio::spawn(async move {
            let Some(listener) = listener else { return };
            let me = rustix::process::geteuid().as_raw();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // EMFILE and the like: keep serving later connections.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Only this task adds, so the count cannot pass the cap.
                if active.0.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
                    // Without waiting: the reply fits the empty socket
                    // buffer, or the client does without it.
                    let _ = stream.try_write(BUSY);
                    debug!("control socket: refused a connection beyond {MAX_CONNECTIONS}");
                    continue;
                }
                let (tx, feed) = (tx.clone(), feed.clone());
                let active = active.clone();
                active.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    serve(stream, me, tx, feed).await;
                    active.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    active.1.notify_waiters();
                });
            }
        })
    }
}

/// Lifecycle events as JSON lines, for `events` clients. A client that
/// falls behind by more than the channel holds is told how many it missed.
pub type EventFeed = tokio::sync::broadcast::Sender<std::sync::Arc<str>>;

/// Events waiting for the slowest `events` client.
pub const EVENT_BACKLOG: usize = 1024;

async fn serve(stream: UnixStream, me: u32, tx: mpsc::UnboundedSender<Message>, feed: EventFeed) {
    let (read, mut write) = stream.into_split();
    let peer = write.as_ref().peer_cred().ok();
    let uid = peer.as_ref().map(|c| c.uid());
    if uid != Some(me) && uid != Some(0) {
        warn!(
            peer_uid = uid,
            peer_pid = peer.as_ref().and_then(|c| c.pid()),
            "control_refused"
        );
        let _ = send(
            &mut write,
            &Reply::error("permission denied: not the same user as hotsup, nor root"),
        )
        .await;
        return;
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let reply = match read {
        Err(_) => Reply::error("no request within 10s"),
        Ok(Err(e)) => Reply::error(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Reply::error("request longer than 64 KiB"),
        Ok(Ok(_)) => match parse(&line) {
            Err(e) => Reply::error(e),
            Ok(Request::Events { names }) => {
                return stream_events(&mut write, feed.subscribe(), names).await;
            }
            Ok(request) => {
                debug!(?request, "control request");
                let (reply_tx, reply_rx) = oneshot::channel();
                let (written_tx, written_rx) = oneshot::channel();
                if tx
                    .send(Message {
                        request,
                        reply: reply_tx,
                        written: written_rx,
                    })
                    .is_err()
                {
                    Reply::error("hotsup is exiting")
                } else {
                    let reply = reply_rx
                        .await
                        .unwrap_or_else(|_| Reply::error("hotsup is exiting"));
                    let _ = send(&mut write, &reply).await;
                    let _ = written_tx.send(());
                    return;
                }
            }
        },
    };
    let _ = send(&mut write, &reply).await;
}

/// Writes events as they come, each within [`REPLY_TIMEOUT`], until hotsup
/// exits or the client goes.
async fn stream_events(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>,
    names: Vec<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let line: std::sync::Arc<str> = match rx.recv().await {
            Ok(line) => line,
            Err(RecvError::Lagged(n)) => {
                format!("{{\"event\":\"events_lost\",\"count\":{n}}}\n").into()
            }
            Err(RecvError::Closed) => break,
        };
        if !names.is_empty() && !names.iter().any(|n| event_is(&line, n)) {
            continue;
        }
        let write = w.write_all(line.as_bytes());
        if !matches!(tokio::time::timeout(REPLY_TIMEOUT, write).await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = tokio::time::timeout(REPLY_TIMEOUT, w.shutdown()).await;
}

/// Whether a JSON event line is the event `name` (it starts with its
/// `event` key, as [`crate::events::feed_line`] writes it).
fn event_is(line: &str, name: &str) -> bool {
    line.strip_prefix("{\"event\":\"")
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.starts_with('"'))
}

/// Parses one request line.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(other) => {
            return Err(format!(
                "unsupported protocol version {other} (this hotsup speaks 1)"
            ));
        }
        None => return Err("malformed request: missing \"version\"".into()),
    }
    let env: Envelope = serde_json::from_value(v).map_err(|e| format!("malformed request: {e}"))?;
    Ok(env.request)
}

/// Writes the reply, for at most [`REPLY_TIMEOUT`]: a client that does not
/// read must not keep the connection (and its fd) forever.
async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    let write = async {
        w.write_all(&line).await?;
        w.shutdown().await
    };
    match tokio::time::timeout(REPLY_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => {
            debug!("control socket: the client did not take its reply within 5s");
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_rejects_garbage() {
        assert_eq!(
            parse(br#"{"version":1,"command":"upgrade"}"#),
            Ok(Request::Upgrade { wait: true })
        );
        assert_eq!(
            parse(br#"{"version":1,"command":"upgrade","wait":false,"future":1}"#),
            Ok(Request::Upgrade { wait: false })
        );
        assert_eq!(
            parse(br#"{"version":1,"command":"signal","signal":"USR1"}"#),
            Ok(Request::Signal {
                signal: "USR1".into(),
                worker: None,
            })
        );
        assert!(parse(b"upgrade").unwrap_err().contains("malformed"));
        assert!(
            parse(br#"{"command":"status"}"#)
                .unwrap_err()
                .contains("version")
        );
        assert!(
            parse(br#"{"version":2,"command":"status"}"#)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(parse(br#"{"version":1,"command":"explode"}"#).is_err());
        assert_eq!(
            parse(br#"{"version":1,"command":"rollback"}"#),
            Ok(Request::Rollback)
        );
        assert!(parse(br#"{"version":1,"command":"signal"}"#).is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::upgrade(UpgradeOutcome::failed(
            Some(3),
            FailureReason::ExitedBeforeReady {
                status: crate::lifecycle::ExitInfo::exited(3),
            },
            Some(2),
        ));
        assert!(!r.ok);
        let text = serde_json::to_string(&r).unwrap();
        let back: Reply = serde_json::from_str(&text).unwrap();
        assert_eq!(back.upgrade, r.upgrade);
        assert!(!text.contains("\"status\":{\"pid"));
        assert!(text.contains(r#""result":"failed""#), "{text}");
        assert!(text.contains(r#""kind":"exited_before_ready""#), "{text}");
        assert!(
            text.contains(r#""reason":"child exited with code 3 before it was ready""#),
            "{text}"
        );
        // The version 1 shape of a success is unchanged.
        let ok = Reply::upgrade(UpgradeOutcome::Ready {
            generation: 3,
            pid: 4242,
        });
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"version":1,"ok":true,"upgrade":{"result":"ready","generation":3,"pid":4242}}"#
        );
    }
}
