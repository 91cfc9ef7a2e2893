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

use crate::child::{self, Pass, describe_status, kill_group};
use crate::cli::{Fds, ReadyMode, Restart, signal_name};
use crate::control::{self, Outcome, Reply, Request};
use crate::handoff::{self, Channel, ChannelEvent, Outbox};
use crate::notify::{self, Datagram};

/// Clients waiting for an outcome.
type Waiters = Vec<tokio::sync::oneshot::Sender<Reply>>;

/// First crash-restart delay; it doubles per consecutive crash.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest crash-restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a Starting child that closed its channel may take to exit
/// before it is killed.
const CLOSED_GRACE: Duration = Duration::from_millis(250);
/// How long a SIGKILLed generation may take to be reaped before the kill is
/// repeated (a process in uninterruptible sleep dies only when it wakes).
const KILL_GRACE: Duration = Duration::from_secs(5);
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
    pub fds: Fds,
    pub ready: ReadyMode,
    /// The `NOTIFY_SOCKET` every child gets.
    pub notify_path: Option<std::path::PathBuf>,
    /// Most generations draining at once; beyond it the oldest is killed.
    pub max_draining: usize,
    /// The soft RLIMIT_NOFILE hotsup started with, restored for children.
    pub child_nofile: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `ready_at` is set with `--ready delay:…`.
    Starting {
        deadline: Instant,
        ready_at: Option<Instant>,
    },
    Serving {
        since: Instant,
    },
    Draining {
        deadline: Instant,
    },
    /// SIGKILL sent; waiting to reap. Past `deadline` the kill is sent
    /// again (and, during shutdown, the process is abandoned).
    Killing {
        deadline: Instant,
    },
}

struct Generation {
    id: u64,
    pid: Pid,
    spawned_at: Instant,
    state: State,
    channel: Option<Channel>,
    task: Option<JoinHandle<()>>,
    /// Whether the child ever sent a valid message: such a child gets DRAIN
    /// on its channel rather than the drain signal.
    spoke: bool,
    /// Why a Starting generation can no longer become ready, reported if it
    /// has not exited by its (shortened) deadline.
    doomed: Option<String>,
    /// How it became ready, for status.
    ready_via: Option<&'static str>,
    /// The last STATUS it reported (native or `STATUS=`), for status.
    status: Option<String>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
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
    notify_rx: mpsc::UnboundedReceiver<Datagram>,
    manager: notify::Manager,
    /// Why the last upgrade failed, for STATUS=.
    last_failure: Option<String>,
    control_rx: mpsc::UnboundedReceiver<control::Message>,
    /// Upgrade clients, by the generation whose outcome answers them.
    waiters: BTreeMap<u64, Waiters>,
    /// Upgrade clients covered by the coalesced follow-up upgrade.
    pending_waiters: Waiters,
    stop_waiters: Waiters,
    started_at: Instant,
    restarts: u64,
    /// Generation, result, reason and time of the last upgrade.
    last_upgrade: Option<(Option<u64>, &'static str, Option<String>, Instant)>,
}

impl Supervisor {
    pub fn new(
        cfg: Config,
        outbox: Outbox,
        notify_rx: mpsc::UnboundedReceiver<Datagram>,
        control_rx: mpsc::UnboundedReceiver<control::Message>,
    ) -> Supervisor {
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
            notify_rx,
            manager: notify::Manager::from_env(),
            last_failure: None,
            control_rx,
            waiters: BTreeMap::new(),
            pending_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            started_at: Instant::now(),
            restarts: 0,
            last_upgrade: None,
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
        // Pings only when the service manager asked for a watchdog: no
        // periodic wakeups otherwise.
        let mut watchdog = sd_notify::watchdog_enabled()
            .filter(|p| !p.is_zero())
            .map(|period| {
                let mut t = tokio::time::interval(period / 2);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });

        crate::signals::release();
        if let Err(e) = self.start_generation("start", &mut Vec::new()) {
            error!("cannot start COMMAND: {e}");
            return Ok(1);
        }
        loop {
            if self.gens.is_empty() {
                if let Some(code) = self.exit_code {
                    for w in self.stop_waiters.drain(..) {
                        let _ = w.send(Reply {
                            version: control::VERSION,
                            ok: true,
                            stop: Some(control::Stopped { exit_code: code }),
                            ..Reply::default()
                        });
                    }
                    return Ok(code);
                }
            }
            let deadline = self.next_deadline();
            tokio::select! {
                Some((id, ev)) = self.rx.recv() => self.on_channel(id, ev),
                Some(d) = self.notify_rx.recv() => self.on_notify(d),
                () = tick(&mut watchdog) => self.manager.watchdog(),
                Some(()) = sigchld.recv() => self.reap(),
                Some(()) = usr2.recv() => self.request_upgrade("SIGUSR2", None),
                Some(()) = hup.recv() => self.request_upgrade("SIGHUP", None),
                Some(m) = self.control_rx.recv() => self.on_control(m),
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
                // A doomed generation waits only for its deadline.
                State::Starting { deadline, ready_at } if g.doomed.is_none() => {
                    Some(ready_at.map_or(deadline, |r| r.min(deadline)))
                }
                State::Starting { deadline, .. }
                | State::Draining { deadline }
                | State::Killing { deadline } => Some(deadline),
                State::Serving { .. } => None,
            })
            .chain(self.restart_at)
            .min()
    }

    /// Spawns a new generation in the Starting state.
    /// Takes the `waiters` only when the generation was started.
    fn start_generation(&mut self, why: &str, waiters: &mut Waiters) -> Result<(), String> {
        let program = child::resolve(&self.cfg.program).map_err(|e| e.to_string())?;
        let id = self.next_id;
        let spec = child::Spec {
            program: &program,
            argv0: &self.cfg.program,
            args: &self.cfg.args,
            generation: id,
            notify_socket: self.cfg.notify_path.as_deref(),
            nofile: self.cfg.child_nofile.map(|n| {
                // Room for every inherited listener above the usual limit.
                n.max(3 + self.outbox.listeners.len() as u64 + 1024)
            }),
            pass: match self.cfg.fds {
                Fds::Native => Pass::Native,
                Fds::Systemd => Pass::Systemd(&self.outbox.listeners),
            },
        };
        let spawned =
            child::spawn(&spec).map_err(|e| format!("cannot spawn {}: {e}", program.display()))?;
        self.next_id += 1;
        let now = Instant::now();
        let pid = spawned.pid;
        let mut doomed = None;
        let mut state = State::Starting {
            deadline: now + self.cfg.ready_timeout,
            ready_at: match self.cfg.ready {
                ReadyMode::Delay(d) => Some(now + d),
                _ => None,
            },
        };
        let (channel, task) = match spawned.channel.map(handoff::register) {
            None => (None, None),
            Some(Ok(chan)) => {
                let task = tokio::spawn(handoff::run(
                    id,
                    chan.clone(),
                    self.outbox.clone(),
                    self.tx.clone(),
                ));
                (Some(chan), Some(task))
            }
            Some(Err(e)) => {
                // It can never receive its sockets: fail it at once, through
                // the same path as any generation that cannot be ready.
                doomed = Some(format!("cannot register its channel: {e}"));
                state = State::Starting {
                    deadline: now,
                    ready_at: None,
                };
                (None, None)
            }
        };
        info!(
            generation = id,
            pid = pid.as_raw_pid(),
            reason = why,
            "spawned {}",
            program.display()
        );
        if self.cfg.fds == Fds::Systemd {
            info!(
                generation = id,
                pid = pid.as_raw_pid(),
                listeners = self.outbox.listeners.len(),
                "passed listeners as LISTEN_FDS"
            );
        }
        self.gens.insert(
            id,
            Generation {
                id,
                pid,
                spawned_at: now,
                state,
                channel,
                task,
                spoke: false,
                doomed,
                ready_via: None,
                status: None,
            },
        );
        if !waiters.is_empty() {
            self.waiters.insert(id, std::mem::take(waiters));
        }
        if self.cfg.ready == ReadyMode::Exec
            && self.gens.get(&id).is_some_and(|g| g.doomed.is_none())
        {
            self.on_ready(id, "exec");
        }
        Ok(())
    }

    fn request_upgrade(
        &mut self,
        source: &str,
        mut waiter: Option<tokio::sync::oneshot::Sender<Reply>>,
    ) {
        if self.shutdown != Shutdown::No {
            info!("{source}: ignored, shutting down");
            answer(
                waiter.into_iter().collect(),
                "superseded",
                None,
                None,
                Some("hotsup is shutting down"),
            );
            return;
        }
        if self.starting().is_some() {
            self.pending_waiters.extend(waiter.take());
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
        self.begin_upgrade(source, waiter.into_iter().collect());
    }

    fn begin_upgrade(&mut self, why: &str, mut waiters: Waiters) {
        if self.serving().is_some() {
            self.manager.reloading();
        }
        if let Err(e) = self.start_generation(why, &mut waiters) {
            answer(waiters, "failed", None, None, Some(&e));
            self.upgrade_failed(None, &e);
        }
    }

    /// Reports a failed generation and decides what happens next.
    fn upgrade_failed(&mut self, id: Option<u64>, reason: &str) {
        let gen_txt = id
            .map(|i| format!(" to generation {i}"))
            .unwrap_or_default();
        self.last_failure = Some(format!("upgrade{gen_txt} failed: {reason}"));
        self.last_upgrade = Some((id, "failed", Some(reason.to_string()), Instant::now()));
        // A generation that never started had its clients answered by the
        // caller.
        if let Some(i) = id {
            answer(
                self.waiters.remove(&i).unwrap_or_default(),
                "failed",
                id,
                None,
                Some(reason),
            );
        }
        match self.serving() {
            Some(s) => {
                error!(
                    serving = s.id,
                    pid = s.pid.as_raw_pid(),
                    "upgrade{gen_txt} failed: {reason}; rolled back, generation {} keeps serving",
                    s.id
                );
                // The reload is over: the rollback is complete.
                let status = self.status_line();
                self.manager.ready(&status);
            }
            None => {
                error!("start{gen_txt} failed: {reason}; nothing is serving");
                let status = self.status_line();
                self.manager.status(&status);
            }
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
            let waiters = std::mem::take(&mut self.pending_waiters);
            self.begin_upgrade("coalesced upgrade", waiters);
            return;
        }
        if self.serving().is_none() && self.starting().is_none() {
            self.schedule_restart();
        }
    }

    fn schedule_restart(&mut self) {
        if self.restart_at.is_some() {
            return; // one restart at a time; the backoff counts crashes once
        }
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
                g.status = Some(s);
            }
            ChannelEvent::Ready => {
                g.spoke = true;
                if matches!(g.state, State::Starting { .. }) {
                    self.on_ready(id, "READY");
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
                if let State::Starting { deadline, ready_at } = g.state {
                    // A crashing child closes its channel just before it
                    // becomes reapable; wait briefly so the failure can
                    // name the exit status rather than the closed channel.
                    g.doomed = Some(format!("closed the hotsup channel before READY ({why})"));
                    g.state = State::Starting {
                        deadline: deadline.min(Instant::now() + CLOSED_GRACE),
                        ready_at,
                    };
                } else {
                    debug!(generation = id, pid, "channel closed: {why}");
                }
            }
        }
    }

    /// A datagram on the children's NOTIFY_SOCKET counts only when it comes
    /// from a generation's process or its process group, so a stray process
    /// cannot promote a broken generation.
    fn on_notify(&mut self, d: Datagram) {
        let owner = d.pid.and_then(|pid| {
            let pgid = rustix::process::getpgid(Some(pid)).ok();
            self.gens
                .values()
                .find(|g| g.pid == pid || Some(g.pid) == pgid)
                .map(|g| g.id)
        });
        let Some(id) = owner else {
            warn!(
                sender = d.pid.map(|p| p.as_raw_pid()),
                "ignored NOTIFY_SOCKET message from a process that is not a generation"
            );
            return;
        };
        let parsed = notify::parse(&d.text);
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let pid = g.pid.as_raw_pid();
        if let Some(status) = &parsed.status {
            info!(generation = id, pid, "status: {status}");
            g.status = Some(status.clone());
        }
        if parsed.stopping {
            // Noted, never passed on: it would stop hotsup's own unit.
            debug!(generation = id, pid, "child reports STOPPING=1");
        }
        if parsed.ready {
            if matches!(g.state, State::Starting { .. }) {
                self.on_ready(id, "READY=1");
            } else {
                debug!(generation = id, pid, "repeated READY=1 ignored");
            }
        }
    }

    /// One line for the service manager's STATUS=.
    fn status_line(&self) -> String {
        let mut s = match self.serving() {
            Some(g) => format!("generation {} (pid {}) serving", g.id, g.pid.as_raw_pid()),
            None => "nothing serving".to_string(),
        };
        if let Some(f) = &self.last_failure {
            s.push_str("; last ");
            s.push_str(f);
        }
        s
    }

    fn on_ready(&mut self, id: u64, how: &'static str) {
        let now = Instant::now();
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.state = State::Serving { since: now };
        g.ready_via = Some(how);
        let pid = g.pid.as_raw_pid();
        info!(
            generation = id,
            pid = g.pid.as_raw_pid(),
            after_ms = now.duration_since(g.spawned_at).as_millis() as u64,
            via = how,
            "ready"
        );

        let old: Vec<u64> = self
            .gens
            .values()
            .filter(|o| o.id != id && matches!(o.state, State::Serving { .. }))
            .map(|o| o.id)
            .collect();
        let upgrade = !old.is_empty();
        for o in old {
            self.drain(o);
        }
        self.enforce_max_draining();
        answer(
            self.waiters.remove(&id).unwrap_or_default(),
            "ready",
            Some(id),
            Some(pid),
            None,
        );
        if upgrade {
            self.last_upgrade = Some((Some(id), "ready", None, now));
        }
        if self.shutdown == Shutdown::No {
            self.last_failure = None;
            let status = self.status_line();
            self.manager.ready(&status);
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
        if self.kill(id).is_none() {
            return;
        }
        self.upgrade_failed(Some(id), &format!("{reason}; killed its process group"));
    }

    /// SIGKILLs a generation (its group and its main process) and waits to
    /// reap it. Returns its pid, for the caller's log line.
    fn kill(&mut self, id: u64) -> Option<i32> {
        let g = self.gens.get_mut(&id)?;
        g.state = State::Killing {
            deadline: Instant::now() + KILL_GRACE,
        };
        kill_group(g.pid, Signal::KILL);
        Some(g.pid.as_raw_pid())
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if self.serving().is_none() && self.starting().is_none() {
                self.restarts += 1;
                if let Err(e) = self.start_generation("restart", &mut Vec::new()) {
                    self.upgrade_failed(None, &e);
                }
            }
        }
        let delayed: Vec<u64> = self
            .gens
            .values()
            .filter(|g| match g.state {
                State::Starting { deadline, ready_at } => {
                    g.doomed.is_none() && ready_at.is_some_and(|r| r <= now && r < deadline)
                }
                _ => false,
            })
            .map(|g| g.id)
            .collect();
        for id in delayed {
            self.on_ready(id, "delay");
        }
        let expired: Vec<(u64, State)> = self
            .gens
            .values()
            .filter(|g| match g.state {
                State::Starting { deadline, .. }
                | State::Draining { deadline }
                | State::Killing { deadline } => deadline <= now,
                State::Serving { .. } => false,
            })
            .map(|g| (g.id, g.state))
            .collect();
        for (id, state) in expired {
            match state {
                State::Starting { .. } => {
                    let reason = self.gens.get_mut(&id).and_then(|g| g.doomed.take());
                    let reason = reason.unwrap_or_else(|| {
                        let t = humantime::format_duration(self.cfg.ready_timeout);
                        format!(
                            "not ready within {t} (it never reported ready; for an app that \
                             cannot, use --ready delay:DURATION, e.g. --ready delay:2s)"
                        )
                    });
                    self.fail_starting(id, &reason);
                }
                State::Draining { .. } => {
                    if let Some(pid) = self.kill(id) {
                        warn!(
                            generation = id,
                            pid, "still running at the drain deadline; killed its process group"
                        );
                        if self.shutdown != Shutdown::No {
                            self.exit_code = Some(1);
                        }
                    }
                }
                State::Killing { .. } => self.kill_again(id),
                State::Serving { .. } => {}
            }
        }
    }

    /// A SIGKILLed generation that is still not reapable: its main process
    /// left its group, or sleeps uninterruptibly. Kill again; when shutting
    /// down, stop waiting for it so hotsup can exit.
    fn kill_again(&mut self, id: u64) {
        let shutting_down = self.shutdown != Shutdown::No;
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        kill_group(g.pid, Signal::KILL);
        let pid = g.pid.as_raw_pid();
        if shutting_down {
            error!(
                generation = id,
                pid, "did not die from SIGKILL; abandoning it"
            );
            self.gens.remove(&id);
            self.exit_code = Some(1);
        } else {
            warn!(
                generation = id,
                pid, "did not die from SIGKILL yet; sent it again"
            );
            g.state = State::Killing {
                deadline: Instant::now() + KILL_GRACE,
            };
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
        if child::kill_leftovers(g.pid) {
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
            // Whoever killed it already decided what follows.
            State::Killing { .. } => info!(generation = id, pid = p, "{how}"),
            State::Draining { .. } => {
                info!(generation = id, pid = p, "drained, {how}");
                // Exiting by the drain signal, or with 128+signal as JVMs and
                // Node do when they handle it, is a clean drain.
                let sig = self.cfg.drain_signal.as_raw();
                let clean = status.exit_status() == Some(0)
                    || status.exit_status() == Some(128 + sig)
                    || status.terminating_signal() == Some(sig);
                if self.shutdown != Shutdown::No && !clean && self.exit_code == Some(0) {
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
                    // As tini does: the child's own code, or 128+signal.
                    let code = status
                        .exit_status()
                        .or_else(|| status.terminating_signal().map(|s| 128 + s))
                        .map_or(1, |c| c.clamp(0, 255) as u8);
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
        if self.shutdown == Shutdown::No {
            self.manager.stopping();
        }
        let mut waiters = std::mem::take(&mut self.pending_waiters);
        for (_, w) in std::mem::take(&mut self.waiters) {
            waiters.extend(w);
        }
        answer(
            waiters,
            "superseded",
            None,
            None,
            Some("hotsup began shutting down"),
        );
        self.shutdown = how;
        self.pending_upgrade = false;
        self.restart_at = None;
        if self.exit_code.is_none() {
            self.exit_code = Some(0);
        }
        let ids: Vec<(u64, State)> = self.gens.values().map(|g| (g.id, g.state)).collect();
        for (id, state) in ids {
            match (how, state) {
                (_, State::Killing { .. }) => {}
                (Shutdown::Forced, _) | (_, State::Starting { .. }) => {
                    if let Some(pid) = self.kill(id) {
                        info!(generation = id, pid, "killed its process group");
                    }
                }
                (_, State::Serving { .. }) => self.drain(id),
                (_, State::Draining { .. }) => {}
            }
        }
    }

    /// Kills the oldest draining generations beyond `--max-draining`.
    fn enforce_max_draining(&mut self) {
        let draining: Vec<u64> = self
            .gens
            .values()
            .filter(|g| matches!(g.state, State::Draining { .. }))
            .map(|g| g.id)
            .collect();
        let excess = draining.len().saturating_sub(self.cfg.max_draining);
        for id in draining.into_iter().take(excess) {
            if let Some(pid) = self.kill(id) {
                warn!(
                    generation = id,
                    pid,
                    "more than {} generations draining (--max-draining): killed the oldest",
                    self.cfg.max_draining
                );
            }
        }
    }

    fn on_control(&mut self, m: control::Message) {
        match m.request {
            Request::Upgrade { wait } => {
                if wait {
                    self.request_upgrade("control socket", Some(m.reply));
                } else {
                    let queued = self.starting().is_some();
                    let next = self.next_id;
                    self.request_upgrade("control socket", None);
                    // What became of it at once: still starting, already
                    // ready (--ready exec), or failed before it could start.
                    let spawned = self.gens.get(&next);
                    let (result, reason) = match spawned.map(|g| g.state) {
                        _ if self.shutdown != Shutdown::No => {
                            ("superseded", Some("hotsup is shutting down".to_string()))
                        }
                        _ if queued => ("queued", None),
                        Some(State::Starting { .. }) => ("started", None),
                        Some(State::Serving { .. }) => ("ready", None),
                        _ => ("failed", self.last_failure.clone()),
                    };
                    let _ = m.reply.send(Reply::upgrade(Outcome {
                        result: result.into(),
                        generation: spawned.map(|g| g.id),
                        pid: spawned.map(|g| g.pid.as_raw_pid()),
                        reason,
                    }));
                }
            }
            Request::Status => {
                let status = self.status();
                let _ = m.reply.send(Reply {
                    version: control::VERSION,
                    ok: true,
                    status: Some(status),
                    ..Reply::default()
                });
            }
            Request::Stop { wait } => {
                if wait {
                    self.stop_waiters.push(m.reply);
                } else {
                    let _ = m.reply.send(Reply {
                        version: control::VERSION,
                        ok: true,
                        ..Reply::default()
                    });
                }
                if self.shutdown == Shutdown::No {
                    info!("control socket: graceful shutdown");
                    self.begin_shutdown(Shutdown::Graceful);
                }
            }
            Request::Signal { signal } => {
                let reply = match crate::cli::parse_signal(&signal) {
                    Err(e) => Reply::error(format!("{signal:?}: {e}")),
                    Ok(sig) => match self.serving().map(|g| (g.id, g.pid)) {
                        None => Reply::error("no generation is serving"),
                        Some((id, pid)) => {
                            info!(
                                generation = id,
                                pid = pid.as_raw_pid(),
                                "control socket: sending {}",
                                signal_name(sig.as_raw())
                            );
                            match rustix::process::kill_process(pid, sig) {
                                Ok(()) => Reply {
                                    version: control::VERSION,
                                    ok: true,
                                    signal: Some(control::Signalled {
                                        signal: signal_name(sig.as_raw()),
                                        generation: id,
                                        pid: pid.as_raw_pid(),
                                    }),
                                    ..Reply::default()
                                },
                                Err(e) => Reply::error(format!(
                                    "cannot signal pid {}: {e}",
                                    pid.as_raw_pid()
                                )),
                            }
                        }
                    },
                };
                let _ = m.reply.send(reply);
            }
        }
    }

    fn status(&self) -> control::Status {
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis() as u64;
        let describe = |g: &Generation| control::GenerationStatus {
            generation: g.id,
            pid: g.pid.as_raw_pid(),
            age_ms: ms(now.duration_since(g.spawned_at)),
            ready_via: g.ready_via.map(str::to_owned),
            serving_ms: match g.state {
                State::Serving { since } => Some(ms(now.duration_since(since))),
                _ => None,
            },
            deadline_in_ms: match g.state {
                State::Draining { deadline } => Some(ms(deadline.saturating_duration_since(now))),
                _ => None,
            },
            status: g.status.clone(),
        };
        control::Status {
            pid: rustix::process::getpid().as_raw_pid(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: ms(now.duration_since(self.started_at)),
            listeners: self
                .outbox
                .listeners
                .iter()
                .map(|l| control::ListenerStatus {
                    name: l.info.name.clone(),
                    kind: l.info.kind.to_string(),
                    address: l.info.address.clone(),
                })
                .collect(),
            serving: self.serving().map(describe),
            starting: self.starting().map(describe),
            draining: self
                .gens
                .values()
                .filter(|g| matches!(g.state, State::Draining { .. } | State::Killing { .. }))
                .map(describe)
                .collect(),
            last_upgrade: self
                .last_upgrade
                .as_ref()
                .map(|(g, r, why, at)| control::LastUpgrade {
                    generation: *g,
                    result: (*r).to_string(),
                    reason: why.clone(),
                    ago_ms: ms(now.duration_since(*at)),
                }),
            restarts: self.restarts,
            log_lines_dropped: crate::logging::dropped_lines(),
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

/// Answers upgrade clients.
fn answer(
    waiters: Waiters,
    result: &str,
    generation: Option<u64>,
    pid: Option<i32>,
    reason: Option<&str>,
) {
    for w in waiters {
        let _ = w.send(Reply::upgrade(Outcome {
            result: result.to_string(),
            generation,
            pid,
            reason: reason.map(str::to_owned),
        }));
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
