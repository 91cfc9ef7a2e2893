//! `hotsup upgrade --self`: the supervisor replaces its own binary in place
//! (`execve` from the loop's thread, same pid), and the new binary adopts
//! everything the old one held from a [`State`] document.
//!
//! 1. A `self_upgrade` request is refused at once while anything is in
//!    progress whose outcome a client or a process of this hotsup waits for
//!    ([`lifecycle::Busy`]: an upgrade, a rollback, a probation, a worker
//!    starting, a shutdown), while a self-upgrade is under way, and in watch
//!    mode. Refused, not queued: the operator retries once the upgrade is
//!    over, and a refusal never surprises anyone later.
//! 2. The new binary runs once as `hotsup __self-check`, an auxiliary
//!    process reaped by the one reaper, with the state on its stdin (a
//!    read-only open of a sealed memfd) and [`CHECK_TIMEOUT`] to answer: it
//!    parses the document and the command line, and imports the lifecycle
//!    core, with no side effect. Its last line of output is its version, or
//!    the reason it cannot adopt the state, which the refusal quotes.
//! 3. The request is answered (`self_upgrade`: versions and binary); once
//!    that answer is written, the state is exported again (things may have
//!    moved during the check), the fds it names lose close-on-exec, the
//!    handled signals are blocked (a blocked signal stays pending across
//!    `execve`, and the new process delivers it once its handlers exist),
//!    the log queue is drained, and hotsup execs the new binary with its
//!    original command line and `HOTSUP_STATE_FD` naming the memfd. If
//!    `execve` fails, every fd gets close-on-exec back, the signals are
//!    released, and the failure is counted and shown by `status`.
//! 4. The new process ([`Supervisor::adopt`]) takes over every fd, imports
//!    the core, restarts the relay tasks of each worker's channel and
//!    notify socket, and runs the reaper once: a child that exited during
//!    the exec is a zombie that waits for it.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Supervisor, WorkerHandle};
use crate::aux::{AuxExit, AuxKind};
use crate::cgroup::GenCgroup;
use crate::control::{self, Reply};
use crate::handoff;
use crate::lifecycle::{Core, PinId, WorkerId};
use crate::notify;
use crate::pinned::Pinned;
use crate::state::{self, Binary, Os, State};

/// How long the new binary's check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Output of the check kept for the refusal: its last line matters.
const CHECK_OUTPUT: usize = 4096;
/// The log lines still queued get this long to be written before the exec.
const LOG_DRAIN: Duration = Duration::from_millis(100);

/// What the self-upgrade needs from `main`.
#[derive(Debug, Clone)]
pub struct Setup {
    /// hotsup's command line, which the new binary parses again.
    pub argv: Vec<OsString>,
    /// Where `upgrade --self` finds the new binary by default: the path
    /// hotsup was first started from.
    pub install_path: PathBuf,
    /// The binary running now.
    pub binary: Binary,
    /// Self-upgrades before this process.
    pub count: u64,
    /// The control socket, handed over too.
    pub control: Option<state::ControlState>,
    /// `Some(why)` when this hotsup never self-upgrades (watch mode).
    pub unsupported: Option<String>,
}

/// A check in progress.
struct Check {
    pid: rustix::process::Pid,
    binary: PathBuf,
    deadline: Instant,
    timed_out: bool,
    /// The read end of the check's stdout and stderr, non-blocking.
    output: OwnedFd,
    reply: oneshot::Sender<Reply>,
    written: oneshot::Receiver<()>,
}

/// The self-upgrade's part of the supervisor.
pub struct SelfUp {
    setup: Setup,
    check: Option<Check>,
    /// Checked and answered: exec once the answer is written.
    go: Option<(PathBuf, oneshot::Receiver<()>)>,
    failed: u64,
    last_error: Option<String>,
    /// Whether this process was exec'd by a self-upgrade and must reap
    /// once before anything else.
    pub(super) adopted: bool,
}

/// What the loop must do next for the self-upgrade.
pub enum Next {
    CheckTimedOut,
    Exec,
}

impl SelfUp {
    pub fn new(setup: Option<Setup>) -> SelfUp {
        let setup = setup.unwrap_or_else(|| Setup {
            argv: std::env::args_os().collect(),
            install_path: PathBuf::new(),
            binary: Binary::default(),
            count: 0,
            control: None,
            unsupported: Some("this hotsup was started without a self-upgrade setup".into()),
        });
        SelfUp {
            setup,
            check: None,
            go: None,
            failed: 0,
            last_error: None,
            adopted: false,
        }
    }

    /// The next thing to do, for the loop's `select!`; pending forever
    /// while nothing is under way.
    pub async fn next(&mut self) -> Next {
        if let Some((_, written)) = &mut self.go {
            // Written, or the client went: either way, go.
            let _ = written.await;
            return Next::Exec;
        }
        match &self.check {
            Some(c) if !c.timed_out => {
                tokio::time::sleep_until(c.deadline).await;
                Next::CheckTimedOut
            }
            _ => std::future::pending().await,
        }
    }

    pub fn status(&self) -> control::BinaryStatus {
        let b = &self.setup.binary;
        control::BinaryStatus {
            path: b.path.to_path().display().to_string(),
            build: format!("{}:{}:{}:{}", b.dev, b.inode, b.size, b.mtime),
            self_upgrades: self.setup.count,
            self_upgrades_failed: self.failed,
            last_self_upgrade_error: self.last_error.clone(),
        }
    }

    fn failed(&mut self, why: String) -> Reply {
        warn!(reason = %why, "self_upgrade_refused");
        self.failed += 1;
        self.last_error = Some(why.clone());
        Reply::error(format!("self-upgrade refused: {why}"))
    }
}

impl Supervisor {
    /// A `self_upgrade` request: refused now, or its check started.
    pub(super) fn self_upgrade(
        &mut self,
        binary: Option<PathBuf>,
        reply: oneshot::Sender<Reply>,
        written: oneshot::Receiver<()>,
    ) {
        match self.start_check(binary) {
            Ok((pid, binary, output)) => {
                info!(pid = pid.as_raw_pid(), binary = %binary.display(), "self_upgrade_check");
                self.selfup.check = Some(Check {
                    pid,
                    binary,
                    deadline: Instant::now() + CHECK_TIMEOUT,
                    timed_out: false,
                    output,
                    reply,
                    written,
                });
            }
            Err(why) => {
                let r = self.selfup.failed(why);
                let _ = reply.send(r);
            }
        }
    }

    /// Why a self-upgrade cannot start now, if anything keeps it.
    fn self_upgrade_blocked(&self) -> Option<String> {
        if let Some(why) = &self.selfup.setup.unsupported {
            return Some(why.clone());
        }
        if self.selfup.check.is_some() || self.selfup.go.is_some() {
            return Some("a self-upgrade is in progress".into());
        }
        if let Some(busy) = self.core.busy_for_handover() {
            return Some(format!("{busy}; try again once it is over"));
        }
        if !self.aux.is_empty() {
            return Some("an auxiliary process is running".into());
        }
        None
    }

    fn start_check(
        &mut self,
        binary: Option<PathBuf>,
    ) -> Result<(rustix::process::Pid, PathBuf, OwnedFd), String> {
        if let Some(why) = self.self_upgrade_blocked() {
            return Err(why);
        }
        let binary = binary.unwrap_or_else(|| self.selfup.setup.install_path.clone());
        let memfd = self
            .export_state()
            .and_then(|s| s.to_memfd().map_err(|e| e.to_string()))?;
        // A reader of its own, read-only: the check cannot move the offset
        // of (nor, the memfd being sealed, change) the state.
        let stdin = state::reopen_read_only(&memfd)
            .map_err(|e| format!("cannot reopen the state for the check: {e}"))?;
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("cannot create a pipe for the check: {e}"))?;
        rustix::io::ioctl_fionbio(&read, true)
            .map_err(|e| format!("cannot set up the check's pipe: {e}"))?;
        let write2 = write
            .try_clone()
            .map_err(|e| format!("cannot set up the check's pipe: {e}"))?;
        let mut cmd = Command::new(&binary);
        cmd.arg(crate::state::CHECK_COMMAND)
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2));
        let pid = self
            .aux
            .spawn_with_stdin(
                AuxKind::SelfCheck,
                cmd,
                self.cfg.child_nofile,
                Stdio::from(stdin),
            )
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        Ok((pid, binary, read))
    }

    /// The check ran over its time: killed, and refused once reaped.
    pub(super) fn self_check_timed_out(&mut self) {
        if let Some(c) = &mut self.selfup.check {
            c.timed_out = true;
            self.aux.kill(c.pid);
        }
    }

    /// The check was reaped: go ahead, or refuse with its reason.
    pub(super) fn self_check_exited(&mut self, exit: &AuxExit) {
        let Some(check) = self.selfup.check.take() else {
            return;
        };
        let output = read_tail(&check.output);
        let last = output
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string();
        let refusal = if check.timed_out {
            Some(format!(
                "{} did not finish its check within {}s",
                check.binary.display(),
                CHECK_TIMEOUT.as_secs()
            ))
        } else if exit.status.code != Some(0) {
            let how = match (exit.status.code, exit.status.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (_, Some(s)) => format!("was killed by {}", crate::signals::name(s)),
                _ => "failed".into(),
            };
            Some(if last.is_empty() {
                format!(
                    "{} cannot take over: its check {how}",
                    check.binary.display()
                )
            } else {
                format!("{} cannot take over: {last}", check.binary.display())
            })
        } else {
            // Things may have moved during the check.
            self.self_upgrade_blocked_after_check()
        };
        if let Some(why) = refusal {
            let r = self.selfup.failed(why);
            let _ = check.reply.send(r);
            return;
        }
        let to_version = last
            .strip_prefix("hotsup ")
            .unwrap_or(&last)
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>();
        info!(binary = %check.binary.display(), to_version = %to_version, "self_upgrade_checked");
        let _ = check.reply.send(Reply {
            version: control::VERSION,
            ok: true,
            self_upgrade: Some(control::SelfUpgrading {
                from_version: env!("CARGO_PKG_VERSION").to_string(),
                to_version,
                binary: check.binary.display().to_string(),
                count: self.selfup.setup.count + 1,
            }),
            ..Reply::default()
        });
        self.selfup.go = Some((check.binary, check.written));
    }

    fn self_upgrade_blocked_after_check(&self) -> Option<String> {
        self.core
            .busy_for_handover()
            .map(|b| format!("{b} (it began during the check); try again once it is over"))
    }

    /// Execs the checked binary, or carries on as before if that fails.
    pub(super) fn exec_self(&mut self) {
        let Some((binary, _)) = self.selfup.go.take() else {
            return;
        };
        if let Some(why) = self.self_upgrade_blocked_after_check() {
            self.selfup.failed(why);
            return;
        }
        let why = match self.try_exec(&binary) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        self.selfup
            .failed(format!("cannot exec {}: {why}", binary.display()));
    }

    fn try_exec(&mut self, binary: &Path) -> Result<std::convert::Infallible, String> {
        let st = self.export_state()?;
        let memfd = st.to_memfd().map_err(|e| e.to_string())?;
        let argv = cstrings(st.argv.iter().map(Os::to_os))?;
        let mut env: Vec<OsString> = std::env::vars_os()
            .filter(|(k, _)| k != state::ENV_FD)
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect();
        env.push(format!("{}={}", state::ENV_FD, memfd.as_raw_fd()).into());
        let envp = cstrings(env)?;
        let path = CString::new(binary.as_os_str().as_bytes())
            .map_err(|_| "the path has a NUL byte".to_string())?;
        let mut fds = st.fds();
        fds.push(memfd.as_raw_fd());
        info!(
            binary = %binary.display(),
            fds = fds.len(),
            workers = st.workers.len(),
            "self_upgrade_exec"
        );
        crate::logging::drain_queue(LOG_DRAIN);
        crate::signals::hold();
        for fd in &fds {
            set_cloexec(*fd, false);
        }
        let argv_p = pointers(&argv);
        let envp_p = pointers(&envp);
        // SAFETY: every pointer is to a NUL-terminated string owned by
        // `path`, `argv` and `envp`, which outlive the call, and both
        // arrays end with a null pointer. On success it does not return.
        unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        let err = std::io::Error::last_os_error();
        for fd in &fds {
            set_cloexec(*fd, true);
        }
        crate::signals::release();
        drop(memfd);
        Err(err.to_string())
    }

    /// Everything the new binary needs to carry on, with fds by number.
    fn export_state(&self) -> Result<State, String> {
        let now = Instant::now().into_std();
        let monotonic_ns = monotonic_ns();
        let listeners: Vec<state::ListenerState> = self
            .outbox
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| l.to_state(i as u32))
            .collect();
        let ids: Vec<u32> = listeners.iter().map(|l| l.id).collect();
        let mut workers = Vec::new();
        for (id, h) in &self.workers {
            workers.push(state::WorkerState {
                id: (*id).into(),
                channel: h.channel.as_ref().map(|c| c.get_ref().as_raw_fd()),
                notify: h
                    .notify
                    .as_ref()
                    .map(|(fd, path)| state::NotifySocketState {
                        fd: *fd,
                        path: Os::new(path.as_os_str()),
                    }),
                cgroup: h.cgroup.as_ref().map(GenCgroup::to_state),
                listeners: ids.clone(),
            });
        }
        let s = &self.selfup.setup;
        let st = State {
            format: state::FORMAT,
            written_by: env!("CARGO_PKG_VERSION").to_string(),
            from_binary: s.binary.clone(),
            monotonic_ns,
            argv: s.argv.iter().map(|a| Os::new(a)).collect(),
            install_path: Os::new(s.install_path.as_os_str()),
            child_nofile: self.cfg.child_nofile,
            self_upgrades: s.count,
            notify_dropped: self.strangers.total(),
            log_lines_dropped: crate::logging::dropped_lines(),
            next_ticket: self.next_ticket,
            listeners,
            control: s.control.clone(),
            notify_dir: self
                .cfg
                .notify
                .as_ref()
                .map(|n| Os::new(n.dir().as_os_str())),
            metrics: self.cfg.metrics.as_ref().map(|m| m.listener_fd()),
            cgroups: self.cfg.cgroups.as_ref().map(|c| c.to_state()),
            emptying: self.emptying.iter().map(GenCgroup::to_state).collect(),
            pins: self
                .pins
                .iter()
                .map(|(id, p)| p.exe.to_state(id.0))
                .collect(),
            workers,
            core: self.core.export(now),
            client: None,
            exe: None,
        };
        st.check().map_err(|e| e.to_string())?;
        Ok(st)
    }

    /// The supervisor of the hotsup that exec'd this one, from its state.
    /// The listeners (in `outbox`), the control socket, the notify
    /// directory, the metrics and the cgroups are adopted by `main`; this
    /// takes the rest. Past the exec there is no going back: a worker whose
    /// fds cannot be adopted is kept without them (its channel closed, as
    /// if its process had closed it), rather than failing the supervisor.
    pub fn adopt(
        cfg: super::Config,
        settings: crate::settings::Derived,
        outbox: handoff::Outbox,
        control_rx: tokio::sync::mpsc::UnboundedReceiver<control::Message>,
        feed: control::EventFeed,
        st: State,
    ) -> Result<Supervisor, String> {
        // The export's moment, in this process's clock.
        let ago = Duration::from_nanos(monotonic_ns().saturating_sub(st.monotonic_ns));
        let now = Instant::now().into_std();
        let then = now.checked_sub(ago).unwrap_or(now);
        let core =
            Core::import(settings.policy.clone(), &st.core, then).map_err(|e| e.to_string())?;
        let mut s = Supervisor::new(cfg, settings, outbox, control_rx, feed);
        s.core = core;
        s.selfup.adopted = true;
        s.next_ticket = st.next_ticket;
        s.strangers = Arc::new(notify::Strangers::starting_at(st.notify_dropped));
        for p in &st.pins {
            match Pinned::adopt(p) {
                Ok(exe) => {
                    // Without --config (refused otherwise), every pin was
                    // launched as the command line says.
                    let launch = s.launch.clone();
                    s.pins.insert(PinId(p.id), super::Pin { exe, launch });
                }
                Err(e) => warn!(error = %e, "self_upgrade_lost_pin"),
            }
        }
        s.emptying = st.emptying.iter().map(GenCgroup::adopt).collect();
        let pids = s.core.live_workers();
        for w in &st.workers {
            let worker = WorkerId::from(w.id);
            let pid = pids.iter().find(|(id, _)| *id == worker).map(|(_, p)| *p);
            let cgroup = w.cgroup.as_ref().map(GenCgroup::adopt);
            let mut handle = WorkerHandle {
                channel: None,
                task: None,
                notify_task: None,
                notify: None,
                cgroup,
            };
            if let Some(n) = &w.notify {
                let path = n.path.to_path();
                let sock = state::adopt_fd(n.fd, "a notify socket").and_then(|fd| {
                    notify::WorkerSocket::adopt(fd, path.clone()).map_err(|e| e.to_string())
                });
                match (sock, pid) {
                    (Ok(sock), Some(pid)) => {
                        handle.notify = Some((sock.raw_fd(), path));
                        let owner = notify::Owner {
                            pid,
                            cgroup: handle.cgroup.as_ref().map(|c| c.path().to_path_buf()),
                        };
                        handle.notify_task = Some(tokio::spawn(notify::relay(
                            sock,
                            owner,
                            worker,
                            s.notify_tx.clone(),
                            s.strangers.clone(),
                        )));
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        warn!(generation = worker.generation, error = %e, "self_upgrade_lost_notify")
                    }
                }
            }
            if let Some(fd) = w.channel {
                match state::adopt_fd(fd, "a channel")
                    .and_then(|fd| handoff::register(fd).map_err(|e| e.to_string()))
                {
                    Ok(chan) => {
                        handle.task = Some(tokio::spawn(handoff::relay(
                            worker,
                            chan.clone(),
                            s.chan_tx.clone(),
                        )));
                        handle.channel = Some(chan);
                    }
                    Err(e) => {
                        warn!(generation = worker.generation, error = %e, "self_upgrade_lost_channel");
                        let _ = s.chan_tx.try_send((
                            worker,
                            handoff::ChannelEvent::Closed(format!("lost in the self-upgrade: {e}")),
                        ));
                    }
                }
            }
            s.workers.insert(worker, handle);
        }
        info!(
            from_version = %st.written_by,
            to_version = env!("CARGO_PKG_VERSION"),
            workers = st.workers.len(),
            listeners = st.listeners.len(),
            exec_us = u64::try_from(ago.as_micros()).unwrap_or(u64::MAX),
            self_upgrades = s.selfup.setup.count,
            "self_upgraded"
        );
        Ok(s)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `Instant` counts in, which
/// `execve` does not reset.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

fn set_cloexec(fd: RawFd, on: bool) {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a number the state names, which this process
    // holds open for the whole call; it changes only that fd's flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags) };
}

fn cstrings(items: impl IntoIterator<Item = OsString>) -> Result<Vec<CString>, String> {
    items
        .into_iter()
        .map(|s| CString::new(s.into_vec()).map_err(|_| "an argument has a NUL byte".to_string()))
        .collect()
}

fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// What the check wrote, its last [`CHECK_OUTPUT`] bytes: it has exited,
/// so everything is in the pipe (or it filled the pipe, and was killed).
fn read_tail(fd: &OwnedFd) -> String {
    let mut all: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    // A pipe holds 64 KiB by default: bounded.
    for _ in 0..64 {
        match rustix::io::read(fd.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if all.len() > CHECK_OUTPUT {
                    all.drain(..all.len() - CHECK_OUTPUT);
                }
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}
