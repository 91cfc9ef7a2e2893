//! The state a running hotsup hands to the binary it execs into
//! (`hotsup upgrade --self`), as one versioned JSON document in a sealed
//! memfd whose number the new process finds in `HOTSUP_STATE_FD`.
//!
//! What travels is everything the new process needs to carry on as if it
//! had been running all along: the listeners, the control socket, the
//! children's notify directory and each worker's notify socket, the
//! metrics listener, each worker's channel and cgroup, the pinned
//! executables, the lifecycle core (generations, their workers' pids,
//! states and deadlines, counters, the last upgrade), and the command line,
//! which the new binary parses again. Open files travel as fd numbers: the
//! old process clears their close-on-exec flag just before `execve`, so they
//! are the same open files at the same numbers afterwards.
//!
//! # Versions
//!
//! `format` is [`FORMAT`]. A reader accepts exactly the formats it knows;
//! every struct denies unknown fields, so a document from a newer hotsup
//! that carries something this one does not know is refused with the name
//! of that field, rather than adopted without it. That refusal happens in
//! the new binary's check (`hotsup __self-check`), before the old process
//! execs anything.
//!
//! # Listener sets
//!
//! Listeners sit in a table with ids, and each worker lists the ids it was
//! handed, so that a hotsup whose generations use different sets of
//! listeners (listeners added or removed by a configuration change) can
//! describe them. This version hands every listener to every generation,
//! and refuses a document where a worker's set differs.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{CoreImage, WorkerIdImage};

/// The format this hotsup writes and reads.
pub const FORMAT: u32 = 1;

/// The hidden subcommand that checks a state (on stdin) before a
/// self-upgrade.
pub const CHECK_COMMAND: &str = "__self-check";

/// The variable that names the state's fd in the exec'd process.
pub const ENV_FD: &str = "HOTSUP_STATE_FD";

/// Largest document read: a state of 10,000 listeners and 1,024 workers is
/// a few MiB.
const MAX_SIZE: u64 = 64 << 20;

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// The version of the hotsup that wrote it.
    pub written_by: String,
    /// The binary that wrote it, for the new process's report.
    pub from_binary: Binary,
    /// CLOCK_MONOTONIC at the export, in nanoseconds: the instants in
    /// `core` count from it.
    pub monotonic_ns: u64,
    /// hotsup's command line, parsed again by the new binary.
    pub argv: Vec<Os>,
    /// Where `hotsup upgrade --self` looks for the binary by default.
    pub install_path: Os,
    /// The soft RLIMIT_NOFILE hotsup was first started with (it raised its
    /// own since), for the children.
    pub child_nofile: Option<u64>,
    /// Self-upgrades before this one.
    pub self_upgrades: u64,
    /// Counters of the supervisor beyond the core's.
    pub notify_dropped: u64,
    pub log_lines_dropped: u64,
    pub next_ticket: u64,
    pub listeners: Vec<ListenerState>,
    pub control: Option<ControlState>,
    /// The children's notify directory.
    pub notify_dir: Option<Os>,
    /// `--metrics`' listening socket.
    pub metrics: Option<RawFd>,
    pub cgroups: Option<CgroupsState>,
    /// Cgroups of reaped workers that still held processes.
    pub emptying: Vec<CgroupState>,
    pub pins: Vec<PinState>,
    pub workers: Vec<WorkerState>,
    pub core: CoreImage,
    /// The connection of the `hotsup upgrade --self` client, answered by
    /// the new process once it runs.
    pub client: Option<RawFd>,
    /// The binary the old process exec'd, held open for `fexecve`; the new
    /// process closes it.
    pub exe: Option<RawFd>,
}

/// A string of the OS (a path, an argument): UTF-8 text when it is, its
/// bytes otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Os {
    Text(String),
    Bytes(Vec<u8>),
}

impl Os {
    pub fn new(s: &OsStr) -> Os {
        match s.to_str() {
            Some(t) => Os::Text(t.to_string()),
            None => Os::Bytes(s.as_bytes().to_vec()),
        }
    }

    pub fn to_os(&self) -> OsString {
        match self {
            Os::Text(t) => OsString::from(t),
            Os::Bytes(b) => OsString::from_vec(b.clone()),
        }
    }

    pub fn to_path(&self) -> PathBuf {
        PathBuf::from(self.to_os())
    }
}

/// Which file a running binary is, as `hotsup status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    pub version: String,
    /// The path it was started from.
    pub path: Os,
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl Default for Os {
    fn default() -> Os {
        Os::Text(String::new())
    }
}

impl Binary {
    /// The binary this process runs, as started from `path`: the file's
    /// identity now (`/proc/self/exe` still reaches it once replaced).
    pub fn current(path: &std::path::Path) -> Binary {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/proc/self/exe").ok();
        Binary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            path: Os::new(path.as_os_str()),
            dev: meta.as_ref().map_or(0, MetadataExt::dev),
            inode: meta.as_ref().map_or(0, MetadataExt::ino),
            size: meta.as_ref().map_or(0, MetadataExt::size),
            mtime: meta.as_ref().map_or(0, MetadataExt::mtime),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Tcp,
    Udp,
    Unix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerOrigin {
    Bound,
    Activated,
    Restored,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerState {
    pub id: u32,
    pub name: String,
    pub kind: ListenerKind,
    pub address: String,
    pub origin: ListenerOrigin,
    pub fd: RawFd,
    /// The Unix socket file hotsup removes at exit, if it is hotsup's.
    pub owned_file: Option<OwnedFile>,
}

/// A file hotsup created, known by device and inode so that it never
/// removes one that replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedFile {
    pub path: Os,
    pub dev: u64,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlState {
    pub fd: RawFd,
    pub file: OwnedFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupsState {
    pub mount: Os,
    pub base: Os,
    pub base_rel: Os,
    /// The base directory, flock'ed: the lock is the open file's, so it
    /// holds across the exec.
    pub lock_fd: RawFd,
    pub kill_supported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupState {
    pub id: u64,
    pub dir: Os,
    pub rel: Os,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinState {
    pub id: u64,
    /// `O_PATH` on the pinned file.
    pub fd: RawFd,
    pub path: Os,
    pub dev: u64,
    pub inode: u64,
    pub script: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerState {
    pub id: WorkerIdImage,
    /// hotsup's end of its channel, while open.
    pub channel: Option<RawFd>,
    pub notify: Option<NotifySocketState>,
    pub cgroup: Option<CgroupState>,
    /// The ids of the listeners it was handed.
    pub listeners: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySocketState {
    pub fd: RawFd,
    pub path: Os,
}

/// Why a state document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state: {0}")]
    Io(#[from] std::io::Error),
    #[error("the state is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error(
        "the running hotsup hands over its state in format {found}, and this hotsup ({version}) \
         reads format {FORMAT} only: it is too {} to take over from it",
        if *found > FORMAT { "old" } else { "new" }
    )]
    Format { found: u32, version: &'static str },
    #[error("the state is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Unsupported(String),
}

impl State {
    /// Every fd the document names, which must survive the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = Vec::new();
        fds.extend(self.listeners.iter().map(|l| l.fd));
        fds.extend(self.control.as_ref().map(|c| c.fd));
        fds.extend(self.metrics);
        fds.extend(self.cgroups.as_ref().map(|c| c.lock_fd));
        fds.extend(self.pins.iter().map(|p| p.fd));
        for w in &self.workers {
            fds.extend(w.channel);
            fds.extend(w.notify.as_ref().map(|n| n.fd));
        }
        fds.extend(self.client);
        fds.extend(self.exe);
        fds
    }

    /// Checks what this version can adopt beyond the document's shape.
    pub fn check(&self) -> Result<(), StateError> {
        let all: Vec<u32> = self.listeners.iter().map(|l| l.id).collect();
        for (i, l) in self.listeners.iter().enumerate() {
            if l.id as usize != i {
                return Err(StateError::Malformed(format!(
                    "listener {} is not at its place in the table",
                    l.name
                )));
            }
        }
        for w in &self.workers {
            if w.listeners != all {
                return Err(StateError::Unsupported(format!(
                    "generation {} uses a set of listeners of its own, which this hotsup \
                     cannot adopt (it hands every listener to every generation)",
                    w.id.generation
                )));
            }
        }
        let mut fds = self.fds();
        let n = fds.len();
        fds.sort_unstable();
        fds.dedup();
        if fds.len() != n || fds.first().is_some_and(|fd| *fd < 3) {
            return Err(StateError::Malformed(
                "an fd is named twice, or is stdio".into(),
            ));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(self).map_err(|e| StateError::Malformed(e.to_string()))
    }

    /// Parses a document: first its format, so that a document of another
    /// format is refused as such, not as malformed.
    pub fn from_json(bytes: &[u8]) -> Result<State, StateError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
        if head.format != FORMAT {
            return Err(StateError::Format {
                found: head.format,
                version: env!("CARGO_PKG_VERSION"),
            });
        }
        let state: State =
            serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
        state.check()?;
        Ok(state)
    }

    /// The document in a sealed memfd (close-on-exec until the exec
    /// step clears it): nobody, not even the check process that reads it,
    /// can change it.
    pub fn to_memfd(&self) -> Result<OwnedFd, StateError> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let json = self.to_json()?;
        let fd = rustix::fs::memfd_create(
            "hotsup-state",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&json)?;
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )
        .map_err(std::io::Error::from)?;
        Ok(file.into())
    }
}

/// Takes ownership of fd `fd`, handed over by the hotsup that exec'd this
/// one, close-on-exec again (it was cleared for the exec only). `what`
/// names it in the error.
pub fn adopt_fd(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    if fd < 3 {
        return Err(format!("{what}: fd {fd} is stdio"));
    }
    // SAFETY: fcntl(F_GETFD) on a plain integer only asks whether it is
    // open; no Rust object owns or borrows it yet.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("{what}: fd {fd} is not open"));
    }
    // SAFETY: the exec'ing hotsup handed this fd over for this purpose
    // alone; it is open (checked above), and `State::check` refused a
    // document that names an fd twice, so it is adopted once.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
    Ok(owned)
}

/// A read-only open file of its own on the memfd `fd`, for a reader that
/// must not share (nor move) the writer's offset.
pub fn reopen_read_only(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Reads a document from the start of `fd`.
pub fn read(fd: OwnedFd) -> Result<State, StateError> {
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file)?;
    (&mut file).take(MAX_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(StateError::TooLarge);
    }
    State::from_json(&bytes)
}

/// The fd `HOTSUP_STATE_FD` names, taken once: the variable is removed.
///
/// # Safety
///
/// Call it before any other thread exists (first thing in `main`): it
/// changes the environment, and takes ownership of the fd number the
/// variable gives, which the exec'ing hotsup passed for this purpose.
pub unsafe fn take_env_fd() -> Option<Result<OwnedFd, StateError>> {
    let raw = std::env::var_os(ENV_FD)?;
    // SAFETY: the caller guarantees the process is single-threaded.
    unsafe { std::env::remove_var(ENV_FD) };
    let fd: RawFd = match raw.to_str().and_then(|s| s.parse().ok()) {
        Some(fd) if fd > 2 => fd,
        _ => {
            return Some(Err(StateError::Malformed(format!(
                "{ENV_FD}={raw:?} is not an fd"
            ))));
        }
    };
    // SAFETY: F_GETFD on a plain integer only asks whether it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Some(Err(StateError::Malformed(format!(
            "{ENV_FD}={fd} is not open"
        ))));
    }
    // SAFETY: the exec'ing hotsup (or the check's parent) passed this fd
    // for us alone; it is open (checked above) and adopted once, here.
    Some(Ok(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let policy = crate::lifecycle::Policy {
            ready: crate::lifecycle::ReadyRule::Notify,
            ready_timeout: std::time::Duration::from_secs(60),
            drain_timeout: std::time::Duration::from_secs(30),
            drain_signal: 15,
            restart: crate::lifecycle::RestartRule::OnFailure,
            max_draining: 4,
            probation: None,
            start_attempts: 3,
            workers: 1,
            rollout_batch: None,
            canary: None,
            max_worker_age: None,
            ready_settle: None,
            ready_probe: false,
            check: false,
            after_upgrade: false,
        };
        let now = std::time::Instant::now();
        let core = crate::lifecycle::Core::new(policy, now);
        State {
            format: FORMAT,
            written_by: "0.1.0".into(),
            from_binary: Binary {
                version: "0.1.0".into(),
                path: Os::new(OsStr::new("/usr/bin/hotsup")),
                dev: 1,
                inode: 2,
                size: 3,
                mtime: 4,
            },
            monotonic_ns: 5,
            argv: vec![
                Os::new(OsStr::new("hotsup")),
                Os::new(OsStr::from_bytes(b"\xff-not-utf8")),
            ],
            install_path: Os::new(OsStr::new("/usr/bin/hotsup")),
            child_nofile: Some(1024),
            self_upgrades: 0,
            notify_dropped: 0,
            log_lines_dropped: 0,
            next_ticket: 0,
            listeners: vec![ListenerState {
                id: 0,
                name: "http".into(),
                kind: ListenerKind::Tcp,
                address: "127.0.0.1:8080".into(),
                origin: ListenerOrigin::Bound,
                fd: 3,
                owned_file: None,
            }],
            control: None,
            notify_dir: None,
            metrics: None,
            cgroups: None,
            emptying: Vec::new(),
            pins: Vec::new(),
            workers: vec![WorkerState {
                id: WorkerIdImage {
                    generation: 1,
                    slot: 0,
                    seq: 1,
                },
                channel: Some(4),
                notify: None,
                cgroup: None,
                listeners: vec![0],
            }],
            core: core.export(now),
            client: None,
            exe: None,
        }
    }

    #[test]
    fn round_trips_through_a_sealed_memfd() {
        let s = sample();
        let fd = s.to_memfd().unwrap();
        // Sealed: not even its writer can change it.
        let mut f = std::fs::File::from(fd.try_clone().unwrap());
        assert!(f.write_all(b"x").is_err());
        let back = read(reopen_read_only(&fd).unwrap()).unwrap();
        assert_eq!(back.argv, s.argv);
        assert_eq!(back.argv[1].to_os().as_bytes(), b"\xff-not-utf8");
        assert_eq!(back.core, s.core);
        assert_eq!(back.fds(), vec![3, 4]);
    }

    #[test]
    fn other_formats_and_unknown_fields_are_refused_with_the_reason() {
        let s = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&s.to_json().unwrap()).unwrap();
        // Written by a newer hotsup: this one is too old to take over.
        v["format"] = serde_json::json!(FORMAT + 1);
        let e = State::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("too old"), "{e}");
        v["format"] = serde_json::json!(0);
        let e = State::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("too new"), "{e}");
        v["format"] = serde_json::json!(FORMAT);
        v["quota"] = serde_json::json!(1);
        let e = State::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("quota"), "{e}");
        assert!(State::from_json(b"{\"format\":1").is_err());
    }

    #[test]
    fn per_generation_listener_sets_are_refused_by_this_version() {
        let mut s = sample();
        s.listeners.push(ListenerState {
            id: 1,
            name: "admin".into(),
            kind: ListenerKind::Unix,
            address: "/run/a.sock".into(),
            origin: ListenerOrigin::Bound,
            fd: 5,
            owned_file: None,
        });
        assert!(matches!(s.check(), Err(StateError::Unsupported(_))));
        s.workers[0].listeners = vec![0, 1];
        assert!(s.check().is_ok());
        s.workers[0].channel = Some(5);
        assert!(matches!(s.check(), Err(StateError::Malformed(_))));
    }
}
