//! The lifecycle state machine. One loop owns every generation: signals,
//! child exits, channel messages and timers come in; spawns, drains and
//! kills go out.
//!
//! A generation moves Starting -> Serving -> Draining -> (reaped), or
//! Starting -> Killing -> (reaped) when it fails to become ready. At most one
//! generation is Starting and at most one is Serving.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::child::{self, describe_status, kill_group};
use crate::cli::{Restart, signal_name};
use crate::handoff::{self, Channel, ChannelEvent, Outbox};

/// First crash-restart delay; it doubles per consecutive crash.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest crash-restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a Starting child that closed its channel may take to exit
/// before it is killed.
const CLOSED_GRACE: Duration = Duration::from_millis(250);
/// A generation that served this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// What the supervisor was told to run, and how.
pub struct Config {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub ready_timeout: Duration,
    pub drain_timeout: Duration,
    pub drain_signal: Signal,
    pub restart: Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting {
        deadline: Instant,
    },
    Serving {
        since: Instant,
    },
    Draining {
        deadline: Instant,
    },
    /// SIGKILL sent to the group; waiting to reap.
    Killing,
}

struct Generation {
    id: u64,
    pid: Pid,
    spawned_at: Instant,
    state: State,
    channel: Option<Channel>,
    task: JoinHandle<()>,
    /// Whether the child ever sent a valid message: such a child gets DRAIN
    /// on its channel rather than the drain signal.
    spoke: bool,
    /// Why a Starting generation can no longer become ready, reported if it
    /// has not exited by its (shortened) deadline.
    doomed: Option<String>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    No,
    Graceful,
    Forced,
}

pub struct Supervisor {
    cfg: Config,
    outbox: Arc<Outbox>,
    gens: BTreeMap<u64, Generation>,
    next_id: u64,
    /// An upgrade asked for while one was in progress, run after it.
    pending_upgrade: bool,
    crashes: u32,
    restart_at: Option<Instant>,
    shutdown: Shutdown,
    /// Set when the supervisor should exit with this code once every
    /// generation is reaped.
    exit_code: Option<u8>,
    tx: mpsc::UnboundedSender<(u64, ChannelEvent)>,
    rx: mpsc::UnboundedReceiver<(u64, ChannelEvent)>,
}

impl Supervisor {
    pub fn new(cfg: Config, outbox: Outbox) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        Supervisor {
            cfg,
            outbox: Arc::new(outbox),
            gens: BTreeMap::new(),
            next_id: 1,
            pending_upgrade: false,
            crashes: 0,
            restart_at: None,
            shutdown: Shutdown::No,
            exit_code: None,
            tx,
            rx,
        }
    }

    /// Runs until shutdown; returns the process exit code.
    pub async fn run(mut self) -> std::io::Result<u8> {
        let mut sigchld = signal(SignalKind::child())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;

        if let Err(e) = self.start_generation("start") {
            error!("cannot start COMMAND: {e}");
            return Ok(1);
        }
        loop {
            if self.gens.is_empty() {
                if let Some(code) = self.exit_code {
                    return Ok(code);
                }
            }
            let deadline = self.next_deadline();
            tokio::select! {
                Some((id, ev)) = self.rx.recv() => self.on_channel(id, ev),
                Some(()) = sigchld.recv() => self.reap(),
                Some(()) = usr2.recv() => self.request_upgrade("SIGUSR2"),
                Some(()) = hup.recv() => self.request_upgrade("SIGHUP"),
                Some(()) = term.recv() => self.request_shutdown("SIGTERM"),
                Some(()) = int.recv() => self.request_shutdown("SIGINT"),
                Some(()) = quit.recv() => self.forward(Signal::QUIT),
                Some(()) = usr1.recv() => self.forward(Signal::USR1),
                () = sleep_until(deadline) => self.on_timer(),
            }
        }
    }

    fn serving(&self) -> Option<&Generation> {
        self.gens
            .values()
            .find(|g| matches!(g.state, State::Serving { .. }))
    }

    fn starting(&self) -> Option<&Generation> {
        self.gens
            .values()
            .find(|g| matches!(g.state, State::Starting { .. }))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.gens
            .values()
            .filter_map(|g| match g.state {
                State::Starting { deadline } | State::Draining { deadline } => Some(deadline),
                _ => None,
            })
            .chain(self.restart_at)
            .min()
    }

    /// Spawns a new generation in the Starting state.
    fn start_generation(&mut self, why: &str) -> Result<(), String> {
        let program = child::resolve(&self.cfg.program).map_err(|e| e.to_string())?;
        let id = self.next_id;
        let spawned = child::spawn(&program, &self.cfg.program, &self.cfg.args, id)
            .map_err(|e| format!("cannot spawn {}: {e}", program.display()))?;
        self.next_id += 1;
        let now = Instant::now();
        let chan = handoff::register(spawned.channel).map_err(|e| {
            kill_group(spawned.pid, Signal::KILL);
            format!("cannot register channel: {e}")
        });
        let (channel, task) = match chan {
            Ok(chan) => {
                let task = tokio::spawn(handoff::run(
                    id,
                    chan.clone(),
                    self.outbox.clone(),
                    self.tx.clone(),
                ));
                (Some(chan), task)
            }
            Err(e) => {
                // The child is already signalled; it will be reaped as a
                // failed generation.
                warn!(generation = id, "{e}");
                (None, tokio::spawn(async {}))
            }
        };
        info!(
            generation = id,
            pid = spawned.pid.as_raw_pid(),
            reason = why,
            "spawned {}",
            program.display()
        );
        self.gens.insert(
            id,
            Generation {
                id,
                pid: spawned.pid,
                spawned_at: now,
                state: if channel.is_some() {
                    State::Starting {
                        deadline: now + self.cfg.ready_timeout,
                    }
                } else {
                    State::Killing
                },
                channel,
                task,
                spoke: false,
                doomed: None,
            },
        );
        Ok(())
    }

    fn request_upgrade(&mut self, source: &str) {
        if self.shutdown != Shutdown::No {
            info!("{source}: ignored, shutting down");
            return;
        }
        if let Some(g) = self.starting() {
            if !self.pending_upgrade {
                info!(
                    generation = g.id,
                    "{source}: upgrade already in progress; one more will follow it"
                );
            } else {
                debug!("{source}: coalesced into the pending upgrade");
            }
            self.pending_upgrade = true;
            return;
        }
        info!("{source}: upgrade requested");
        self.restart_at = None;
        self.begin_upgrade(source);
    }

    fn begin_upgrade(&mut self, why: &str) {
        if let Err(e) = self.start_generation(why) {
            self.upgrade_failed(None, &e);
        }
    }

    /// Reports a failed generation and decides what happens next.
    fn upgrade_failed(&mut self, id: Option<u64>, reason: &str) {
        let gen_txt = id
            .map(|i| format!(" to generation {i}"))
            .unwrap_or_default();
        match self.serving() {
            Some(s) => error!(
                serving = s.id,
                pid = s.pid.as_raw_pid(),
                "upgrade{gen_txt} failed: {reason}; rolled back, generation {} keeps serving",
                s.id
            ),
            None => error!("start{gen_txt} failed: {reason}; nothing is serving"),
        }
        self.after_attempt();
    }

    /// After an attempt resolved (ready or failed): run the coalesced
    /// upgrade, or schedule a crash restart when nothing serves.
    fn after_attempt(&mut self) {
        if self.shutdown != Shutdown::No {
            return;
        }
        if self.pending_upgrade && self.starting().is_none() {
            self.pending_upgrade = false;
            info!("starting the upgrade requested during the previous one");
            self.begin_upgrade("coalesced upgrade");
            return;
        }
        if self.serving().is_none() && self.starting().is_none() {
            self.schedule_restart();
        }
    }

    fn schedule_restart(&mut self) {
        if self.cfg.restart == Restart::Never {
            error!("nothing is serving and --restart never: exiting");
            self.exit_code = Some(1);
            self.begin_shutdown(Shutdown::Graceful);
            return;
        }
        let delay = BACKOFF_START
            .saturating_mul(1u32 << self.crashes.min(16))
            .min(BACKOFF_MAX);
        self.crashes = self.crashes.saturating_add(1);
        warn!(
            attempt = self.crashes,
            "restarting in {}",
            humantime::format_duration(delay)
        );
        self.restart_at = Some(Instant::now() + delay);
    }

    fn on_channel(&mut self, id: u64, ev: ChannelEvent) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let pid = g.pid.as_raw_pid();
        match ev {
            ChannelEvent::HandedOff { elapsed } => info!(
                generation = id,
                pid,
                listeners = self.outbox.listeners.len(),
                elapsed_us = elapsed.as_micros() as u64,
                "handed off listeners"
            ),
            ChannelEvent::Status(s) => {
                g.spoke = true;
                info!(generation = id, pid, "status: {s}");
            }
            ChannelEvent::Ready => {
                g.spoke = true;
                if matches!(g.state, State::Starting { .. }) {
                    self.on_ready(id);
                } else {
                    debug!(generation = id, pid, "repeated READY ignored");
                }
            }
            ChannelEvent::Unknown(verb) => {
                debug!(generation = id, pid, "ignored unknown message {verb:?}");
            }
            ChannelEvent::Malformed(why) => {
                warn!(generation = id, pid, "malformed message from child: {why}");
                if matches!(g.state, State::Starting { .. }) {
                    self.fail_starting(id, &format!("child sent a malformed message: {why}"));
                }
            }
            ChannelEvent::Closed(why) => {
                g.channel = None;
                g.spoke = false;
                if let State::Starting { deadline } = g.state {
                    // A crashing child closes its channel just before it
                    // becomes reapable; wait briefly so the failure can
                    // name the exit status rather than the closed channel.
                    g.doomed = Some(format!("closed the hotsup channel before READY ({why})"));
                    g.state = State::Starting {
                        deadline: deadline.min(Instant::now() + CLOSED_GRACE),
                    };
                } else {
                    debug!(generation = id, pid, "channel closed: {why}");
                }
            }
        }
    }

    fn on_ready(&mut self, id: u64) {
        let now = Instant::now();
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.state = State::Serving { since: now };
        info!(
            generation = id,
            pid = g.pid.as_raw_pid(),
            after_ms = now.duration_since(g.spawned_at).as_millis() as u64,
            "ready"
        );
        let old: Vec<u64> = self
            .gens
            .values()
            .filter(|o| o.id != id && matches!(o.state, State::Serving { .. }))
            .map(|o| o.id)
            .collect();
        for o in old {
            self.drain(o);
        }
        self.after_attempt();
    }

    /// Asks a generation to finish and exit before the drain deadline.
    fn drain(&mut self, id: u64) {
        let timeout = self.cfg.drain_timeout;
        let sig = self.cfg.drain_signal;
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.state = State::Draining {
            deadline: Instant::now() + timeout,
        };
        let pid = g.pid.as_raw_pid();
        let via_protocol = match (&g.channel, g.spoke) {
            (Some(chan), true) => match handoff::send_drain(chan, timeout) {
                Ok(()) => true,
                Err(e) => {
                    warn!(generation = id, pid, "cannot send DRAIN ({e}); signalling");
                    false
                }
            },
            _ => false,
        };
        if via_protocol {
            info!(generation = id, pid, timeout = %humantime::format_duration(timeout), "draining via protocol");
        } else {
            let _ = rustix::process::kill_process(g.pid, sig);
            info!(generation = id, pid, timeout = %humantime::format_duration(timeout), "draining via {}", signal_name(sig.as_raw()));
        }
    }

    /// Kills a Starting generation that will never be ready.
    fn fail_starting(&mut self, id: u64, reason: &str) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.state = State::Killing;
        kill_group(g.pid, Signal::KILL);
        self.upgrade_failed(Some(id), &format!("{reason}; killed its process group"));
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if self.serving().is_none() && self.starting().is_none() {
                if let Err(e) = self.start_generation("restart") {
                    self.upgrade_failed(None, &e);
                }
            }
        }
        let expired: Vec<(u64, State)> = self
            .gens
            .values()
            .filter(|g| match g.state {
                State::Starting { deadline } | State::Draining { deadline } => deadline <= now,
                _ => false,
            })
            .map(|g| (g.id, g.state))
            .collect();
        for (id, state) in expired {
            match state {
                State::Starting { .. } => {
                    let reason = self.gens.get_mut(&id).and_then(|g| g.doomed.take());
                    let reason = reason.unwrap_or_else(|| {
                        let t = humantime::format_duration(self.cfg.ready_timeout);
                        format!("not ready within {t}")
                    });
                    self.fail_starting(id, &reason);
                }
                State::Draining { .. } => {
                    if let Some(g) = self.gens.get_mut(&id) {
                        g.state = State::Killing;
                        kill_group(g.pid, Signal::KILL);
                        warn!(
                            generation = id,
                            pid = g.pid.as_raw_pid(),
                            "still running at the drain deadline; killed its process group"
                        );
                        if self.shutdown != Shutdown::No {
                            self.exit_code = Some(1);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Collects every exited child. This is the only place hotsup waits.
    fn reap(&mut self) {
        loop {
            // wait(), not waitpid(None): rustix maps None to "my own process group",
            // and every generation runs in a group of its own.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => self.on_exit(pid, status),
                Ok(None) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return, // ECHILD: no children left.
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        let Some(id) = self.gens.values().find(|g| g.pid == pid).map(|g| g.id) else {
            debug!(
                pid = pid.as_raw_pid(),
                "reaped a process that is not a generation"
            );
            return;
        };
        let Some(g) = self.gens.remove(&id) else {
            return;
        };
        let how = describe_status(&status);
        // Whatever the main process left in its group goes with it: a
        // leftover could hold listener copies and accept connections that
        // nobody serves.
        if kill_group(g.pid, Signal::KILL) {
            warn!(
                generation = id,
                "killed processes left in the group of generation {id}"
            );
        }
        let p = pid.as_raw_pid();
        match g.state {
            State::Starting { .. } => {
                drop(g);
                self.upgrade_failed(Some(id), &format!("child {how} before it was ready"));
            }
            State::Killing => {
                info!(generation = id, pid = p, "{how}");
                drop(g);
                if self.shutdown == Shutdown::No {
                    self.after_attempt();
                }
            }
            State::Draining { .. } => {
                info!(generation = id, pid = p, "drained, {how}");
                let clean = status.exit_status() == Some(0)
                    || status.terminating_signal() == Some(self.cfg.drain_signal.as_raw());
                if self.shutdown != Shutdown::No && !clean {
                    self.exit_code = Some(1);
                }
            }
            State::Serving { since } => {
                drop(g);
                if since.elapsed() >= BACKOFF_RESET_AFTER {
                    self.crashes = 0;
                }
                let success = status.exit_status() == Some(0);
                let restart = match self.cfg.restart {
                    Restart::Always => true,
                    Restart::OnFailure => !success,
                    Restart::Never => false,
                };
                if self.starting().is_some() {
                    warn!(
                        generation = id,
                        pid = p,
                        "serving child {how}; the starting generation will take over"
                    );
                } else if restart {
                    error!(generation = id, pid = p, "serving child {how}");
                    self.schedule_restart();
                } else {
                    let code = if success { 0 } else { 1 };
                    info!(
                        generation = id,
                        pid = p,
                        "serving child {how}; --restart {} leaves it down, exiting {code}",
                        self.cfg.restart.name()
                    );
                    self.exit_code = Some(code);
                    self.begin_shutdown(Shutdown::Graceful);
                }
            }
        }
    }

    fn request_shutdown(&mut self, source: &str) {
        if self.shutdown == Shutdown::No {
            info!("{source}: graceful shutdown; send it again to kill at once");
            self.begin_shutdown(Shutdown::Graceful);
        } else {
            warn!("{source} again: killing every generation now");
            self.exit_code = Some(1);
            self.begin_shutdown(Shutdown::Forced);
        }
    }

    fn begin_shutdown(&mut self, how: Shutdown) {
        self.shutdown = how;
        self.pending_upgrade = false;
        self.restart_at = None;
        if self.exit_code.is_none() {
            self.exit_code = Some(0);
        }
        let ids: Vec<(u64, State)> = self.gens.values().map(|g| (g.id, g.state)).collect();
        for (id, state) in ids {
            match (how, state) {
                (_, State::Killing) => {}
                (Shutdown::Forced, _) | (_, State::Starting { .. }) => {
                    if let Some(g) = self.gens.get_mut(&id) {
                        g.state = State::Killing;
                        kill_group(g.pid, Signal::KILL);
                        info!(
                            generation = id,
                            pid = g.pid.as_raw_pid(),
                            "killed its process group"
                        );
                    }
                }
                (_, State::Serving { .. }) => self.drain(id),
                (_, State::Draining { .. }) => {}
            }
        }
    }

    fn forward(&mut self, sig: Signal) {
        match self.serving() {
            Some(g) => {
                info!(
                    generation = g.id,
                    pid = g.pid.as_raw_pid(),
                    "forwarding {}",
                    signal_name(sig.as_raw())
                );
                let _ = rustix::process::kill_process(g.pid, sig);
            }
            None => warn!(
                "{}: no serving child to forward it to",
                signal_name(sig.as_raw())
            ),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
