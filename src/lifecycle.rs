//! The lifecycle core: every rule about generations, with no I/O.
//!
//! [`Core::handle`] takes one [`Input`] (a request, a child's message, an
//! exit, the passing of time) with the time it happened, and returns the
//! [`Effect`]s the shell must carry out: spawn, drain, pause, resume, kill,
//! answer a client, tell the service manager, log an event. The core makes
//! no syscall, reads no clock, spawns no task and logs nothing, so each rule
//! is tested by feeding inputs and reading effects (see `lifecycle/tests.rs`).
//!
//! # Generations
//!
//! A generation is one start of the command: a set of worker processes
//! (one, for now) sharing the listeners. Its [`Phase`] owns the data that is
//! meaningful in it:
//!
//! ```text
//!             ready, no probation
//!  Starting ─────────────────────────────▶ Serving ──▶ Draining ──▶ (reaped)
//!     │  ready, --probation                  ▲
//!     ├──────────────▶ Probation ────────────┘ window passed
//!     │                   │ exits, UNHEALTHY, `hotsup rollback`
//!     │                   ▼
//!     └─▶ Killing ◀───────┘   (the Standby generation resumes, or the
//!           failed             last good executable starts again)
//! ```
//!
//! The previous generation of one on probation is paused (`Standby`) when
//! it speaks protocol version 2; otherwise it drains as usual and a rollback
//! starts its pinned executable again.
//!
//! Invariants the core keeps: at most one generation is Starting or on
//! Probation (an "attempt"), and upgrades asked for during one are coalesced
//! into a single follow-up; at most one generation is Serving or on
//! Probation; at most one is on Standby.

mod event;
mod outcome;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::process::Pid;

pub use event::{Event, KillCause, Level, Origin, Source};
pub use outcome::{ExitInfo, FailureReason, LastResult, ReadyVia, UpgradeOutcome};

/// First crash-restart delay; it doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest crash-restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A generation that served this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long a Starting child that closed its channel may take to exit before
/// it is killed: a crashing child closes its channel just before it becomes
/// reapable, and its exit status is the better reason.
pub const CLOSED_GRACE: Duration = Duration::from_millis(250);
/// How long a SIGKILLed generation may take to be reaped before the kill is
/// repeated (a process in uninterruptible sleep dies only when it wakes).
pub const KILL_GRACE: Duration = Duration::from_secs(5);

pub type GenId = u64;

/// An executable hotsup keeps open (pinned) so that it can start exactly it
/// again, whatever happens to the file at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinId(pub u64);

/// One worker process of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId {
    pub generation: GenId,
    pub slot: u32,
}

/// A client waiting for an answer; the shell keeps where to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// When a new generation counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyRule {
    /// It says so (`READY` or `READY=1`).
    Notify,
    /// It stayed alive this long (or said so sooner).
    Delay(Duration),
    /// At once.
    Exec,
}

/// When a serving generation that exits is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartRule {
    Always,
    OnFailure,
    Never,
    /// Never restart, never exit: wait for the next upgrade (watch mode,
    /// where the next save brings the fix).
    Wait,
}

/// The rules the core applies; fixed for a supervisor's life.
#[derive(Debug, Clone)]
pub struct Policy {
    pub ready: ReadyRule,
    pub ready_timeout: Duration,
    pub drain_timeout: Duration,
    /// Signal that asks a child that never spoke the protocol to drain.
    pub drain_signal: i32,
    pub restart: RestartRule,
    /// Most generations draining at once; beyond it the oldest is killed.
    pub max_draining: usize,
    /// How long a new generation stays on probation after it is ready.
    pub probation: Option<Duration>,
    /// Failed starts, before any generation was ever ready, after which
    /// hotsup gives up and exits 1.
    pub start_attempts: u32,
}

/// What the core learns from the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start the first generation.
    Start,
    /// Upgrade to the command as it is now.
    Upgrade {
        source: Source,
        reply: Option<Reply>,
    },
    /// Take back the upgrade on probation, or go back to the previous good
    /// executable.
    Rollback { reply: Option<Ticket> },
    /// Shut down gracefully; a second signal forces it.
    Stop {
        source: Source,
        reply: Option<Ticket>,
    },
    /// The shell started a worker's process.
    Spawned { worker: WorkerId, pid: Pid },
    /// The shell could not start a worker's process.
    SpawnFailed { worker: WorkerId, error: String },
    /// A child process was reaped.
    Exited { pid: Pid, status: ExitInfo },
    /// A worker said something, on its channel or on `NOTIFY_SOCKET`.
    Worker {
        worker: WorkerId,
        event: WorkerEvent,
    },
    /// Send a signal to the serving generation.
    Forward { signal: i32, reply: Option<Ticket> },
    /// Time passed; deadlines may have expired.
    Tick,
}

/// How an upgrade request wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// When the upgrade has an outcome (probation included).
    Outcome(Ticket),
    /// As soon as the new generation has started (or was queued).
    Started(Ticket),
}

/// What a worker reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// Every listener was sent on its channel.
    HandedOff {
        listeners: usize,
        elapsed_us: u64,
    },
    /// It answered HELLO: it speaks this protocol version.
    Protocol(u32),
    Ready(ReadyVia),
    Status(String),
    Unhealthy(String),
    /// A well-formed message this version does not know.
    Unknown(String),
    Malformed(String),
    ChannelClosed(String),
    /// The shell could not send PAUSE; it keeps accepting.
    PauseFailed(String),
    /// The shell could not send RESUME.
    ResumeFailed(String),
}

/// How the shell asks a worker to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainVia {
    /// `DRAIN` on its channel; the signal if that cannot be sent.
    Channel {
        timeout: Duration,
        fallback: i32,
    },
    Signal(i32),
}

/// Where a worker's executable comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exe {
    /// Look the command up now, and pin what was found as this id.
    Fresh(PinId),
    /// Run this pinned executable again.
    Pinned(PinId),
}

/// An answer to a waiting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Upgrade(UpgradeOutcome),
    Stopped { exit_code: u8 },
    Error(String),
}

/// What the service manager (systemd) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerMessage {
    /// `READY=1` with `STATUS=`.
    Ready(String),
    /// `RELOADING=1`.
    Reloading,
    /// `STATUS=`.
    Status(String),
    /// `STOPPING=1`.
    Stopping,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a worker; answer with [`Input::Spawned`] or
    /// [`Input::SpawnFailed`] before anything else.
    Spawn {
        worker: WorkerId,
        exe: Exe,
        origin: Origin,
    },
    /// Close a pinned executable nobody will run again.
    Unpin(PinId),
    Drain {
        worker: WorkerId,
        pid: Pid,
        via: DrainVia,
    },
    Pause {
        worker: WorkerId,
        pid: Pid,
    },
    Resume {
        worker: WorkerId,
        pid: Pid,
    },
    /// SIGKILL the worker's process, its group and its cgroup.
    Kill {
        worker: WorkerId,
        pid: Pid,
    },
    /// The worker's main process was reaped: kill what it left behind.
    KillLeftovers {
        worker: WorkerId,
        pid: Pid,
    },
    Signal {
        worker: WorkerId,
        pid: Pid,
        signal: i32,
        reply: Option<Ticket>,
    },
    Reply {
        ticket: Ticket,
        answer: Answer,
    },
    Manager(ManagerMessage),
    Emit(Event),
    /// Every generation is gone and hotsup is done: exit with this code.
    Exit(u8),
}

/// A generation's phase; each variant owns what is meaningful in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Starting {
        deadline: Instant,
        /// `--ready delay:…`: when it counts as ready.
        ready_at: Option<Instant>,
        /// Why it can no longer become ready, reported if it has not exited
        /// by its (shortened) deadline.
        doomed: Option<FailureReason>,
    },
    Probation {
        since: Instant,
        until: Instant,
        fallback: Fallback,
    },
    Serving {
        since: Instant,
    },
    /// Paused while its successor is on probation.
    Standby {
        since: Instant,
        successor: GenId,
    },
    Draining {
        since: Instant,
        deadline: Instant,
    },
    /// SIGKILL sent; past `deadline` it is sent again (or, during shutdown,
    /// the generation is abandoned).
    Killing {
        deadline: Instant,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting { .. } => "starting",
            Phase::Probation { .. } => "probation",
            Phase::Serving { .. } => "serving",
            Phase::Standby { .. } => "standby",
            Phase::Draining { .. } => "draining",
            Phase::Killing { .. } => "killing",
        }
    }
}

/// What a rollback from probation goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Resume this paused generation.
    Standby(GenId),
    /// Start this pinned executable again.
    Pin(PinId),
}

#[derive(Debug, Clone)]
struct Worker {
    slot: u32,
    /// Set once spawned; cleared when reaped.
    pid: Option<Pid>,
    /// Whether it was ever spawned (a reaped worker has `pid: None` too).
    spawned: bool,
    ready: bool,
    /// Whether it sent a valid message on its channel: then DRAIN goes
    /// there rather than the drain signal.
    spoke: bool,
    /// The protocol version it answered HELLO with (1 if it never did).
    protocol: u32,
    channel_open: bool,
    status: Option<String>,
    unhealthy: Option<String>,
}

impl Worker {
    fn new(slot: u32) -> Worker {
        Worker {
            slot,
            pid: None,
            spawned: false,
            ready: false,
            spoke: false,
            protocol: 1,
            channel_open: false,
            status: None,
            unhealthy: None,
        }
    }

    fn can_pause(&self) -> bool {
        self.pid.is_some() && self.channel_open && self.protocol >= 2
    }
}

#[derive(Debug, Clone)]
struct Generation {
    id: GenId,
    pin: PinId,
    origin: Origin,
    spawned_at: Instant,
    ready_via: Option<ReadyVia>,
    ready_since: Option<Instant>,
    phase: Phase,
    workers: Vec<Worker>,
    /// Clients waiting for the outcome of the attempt this generation is.
    waiters: Vec<Ticket>,
    /// `--no-wait` clients, answered once it has started.
    on_spawn: Vec<Ticket>,
}

impl Generation {
    fn alive(&self) -> bool {
        self.workers.iter().any(|w| w.pid.is_some())
    }

    fn pid(&self) -> i32 {
        self.workers
            .iter()
            .find_map(|w| w.pid)
            .map_or(0, Pid::as_raw_pid)
    }

    fn live_workers(&self) -> impl Iterator<Item = (WorkerId, Pid)> + '_ {
        self.workers.iter().filter_map(|w| {
            w.pid.map(|pid| {
                (
                    WorkerId {
                        generation: self.id,
                        slot: w.slot,
                    },
                    pid,
                )
            })
        })
    }

    fn is_attempt(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. } | Phase::Probation { .. })
    }

    fn is_serving(&self) -> bool {
        matches!(self.phase, Phase::Serving { .. } | Phase::Probation { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Graceful,
    Forced,
}

/// The last upgrade's result, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUpgrade {
    pub generation: Option<GenId>,
    pub result: LastResult,
    pub failure: Option<FailureReason>,
    pub at: Instant,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub upgrades_ready: u64,
    pub upgrades_failed: u64,
    pub rollbacks: u64,
    pub crash_restarts: u64,
}

/// The lifecycle core. See the module docs.
#[derive(Debug)]
pub struct Core {
    policy: Policy,
    gens: BTreeMap<GenId, Generation>,
    next_gen: GenId,
    next_pin: u64,
    pins: BTreeSet<PinId>,
    /// The executable of the generation that last became ready and passed
    /// probation; crash restarts run it.
    last_good: Option<PinId>,
    /// The one good before it; `hotsup rollback` goes back to it.
    previous_good: Option<PinId>,
    /// An upgrade asked for during an attempt, and who waits for it.
    pending: Option<Vec<Reply>>,
    restart_at: Option<Instant>,
    /// Consecutive crashes, for the backoff.
    crashes: u32,
    ever_ready: bool,
    failed_starts: u32,
    shutdown: Option<Shutdown>,
    exit_code: Option<u8>,
    exited: bool,
    stop_waiters: Vec<Ticket>,
    last_upgrade: Option<LastUpgrade>,
    counters: Counters,
    started_at: Instant,
}

impl Core {
    pub fn new(policy: Policy, now: Instant) -> Core {
        Core {
            policy,
            gens: BTreeMap::new(),
            next_gen: 1,
            next_pin: 1,
            pins: BTreeSet::new(),
            last_good: None,
            previous_good: None,
            pending: None,
            restart_at: None,
            crashes: 0,
            ever_ready: false,
            failed_starts: 0,
            shutdown: None,
            exit_code: None,
            exited: false,
            stop_waiters: Vec::new(),
            last_upgrade: None,
            counters: Counters::default(),
            started_at: now,
        }
    }

    /// Applies one input at time `now` and returns what the shell must do,
    /// in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        // A deadline that passed decides before anything that arrived after
        // it (a READY after the ready timeout does not count). An exit is
        // the exception: the process is already gone, and a kill decided
        // first would be aimed at a reaped pid.
        if !matches!(input, Input::Exited { .. }) {
            self.expire(now, &mut fx);
        }
        match input {
            Input::Start => self.start(now, &mut fx),
            Input::Upgrade { source, reply } => self.request_upgrade(now, source, reply, &mut fx),
            Input::Rollback { reply } => self.request_rollback(now, reply, &mut fx),
            Input::Stop { source, reply } => self.request_stop(now, source, reply, &mut fx),
            Input::Spawned { worker, pid } => self.on_spawned(now, worker, pid, &mut fx),
            Input::SpawnFailed { worker, error } => {
                self.on_spawn_failed(now, worker, error, &mut fx)
            }
            Input::Exited { pid, status } => self.on_exit(now, pid, status, &mut fx),
            Input::Worker { worker, event } => self.on_worker(now, worker, event, &mut fx),
            Input::Forward { signal, reply } => self.forward(signal, reply, &mut fx),
            Input::Tick => {}
        }
        self.expire(now, &mut fx);
        self.release_pins(&mut fx);
        self.check_exit(&mut fx);
        fx
    }

    /// When the shell must feed [`Input::Tick`] next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gens
            .values()
            .filter_map(|g| match &g.phase {
                Phase::Starting {
                    deadline,
                    ready_at,
                    doomed,
                } => match (ready_at, doomed) {
                    (Some(r), None) => Some((*r).min(*deadline)),
                    _ => Some(*deadline),
                },
                Phase::Probation { until, .. } => Some(*until),
                Phase::Draining { deadline, .. } | Phase::Killing { deadline } => Some(*deadline),
                Phase::Serving { .. } | Phase::Standby { .. } => None,
            })
            .chain(self.restart_at)
            .min()
    }

    /// The worker whose main process is `pid`.
    pub fn worker_of(&self, pid: Pid) -> Option<WorkerId> {
        self.gens
            .values()
            .flat_map(Generation::live_workers)
            .find(|(_, p)| *p == pid)
            .map(|(w, _)| w)
    }

    /// Every live worker with its main pid, for attributing notify messages.
    pub fn live_workers(&self) -> Vec<(WorkerId, Pid)> {
        self.gens
            .values()
            .flat_map(Generation::live_workers)
            .collect()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    // ----- requests -----

    fn start(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.gens.is_empty() && self.shutdown.is_none() {
            let pin = self.new_pin();
            self.spawn_generation(now, Origin::Start, Exe::Fresh(pin), Vec::new(), fx);
        }
    }

    fn request_upgrade(
        &mut self,
        now: Instant,
        source: Source,
        reply: Option<Reply>,
        fx: &mut Vec<Effect>,
    ) {
        if self.shutdown.is_some() {
            fx.push(Effect::Emit(Event::UpgradeIgnored { source }));
            if let Some(r) = reply {
                answer(fx, ticket_of(r), UpgradeOutcome::Superseded);
            }
            return;
        }
        if let Some(attempt) = self.attempt() {
            fx.push(Effect::Emit(Event::UpgradeQueued {
                source,
                behind: attempt,
            }));
            let pending = self.pending.get_or_insert_with(Vec::new);
            match reply {
                Some(Reply::Started(t)) => answer(fx, t, UpgradeOutcome::Queued),
                Some(r) => pending.push(r),
                None => {}
            }
            return;
        }
        fx.push(Effect::Emit(Event::UpgradeRequested { source }));
        self.restart_at = None;
        let pin = self.new_pin();
        self.begin_attempt(
            now,
            Origin::Upgrade,
            Exe::Fresh(pin),
            reply.into_iter().collect(),
            fx,
        );
    }

    fn request_rollback(&mut self, now: Instant, reply: Option<Ticket>, fx: &mut Vec<Effect>) {
        let refuse = |fx: &mut Vec<Effect>, why: String| {
            if let Some(t) = reply {
                fx.push(Effect::Reply {
                    ticket: t,
                    answer: Answer::Error(why),
                });
            }
        };
        if self.shutdown.is_some() {
            return refuse(fx, "hotsup is shutting down".into());
        }
        if let Some(id) = self.on_probation() {
            if let Some(t) = reply {
                if let Some(g) = self.gens.get_mut(&id) {
                    g.waiters.push(t);
                }
            }
            self.roll_back(now, id, FailureReason::RollbackRequested, fx);
            return;
        }
        if let Some(id) = self.attempt() {
            return refuse(
                fx,
                format!(
                    "generation {id} is starting and has not gone live; wait for the outcome \
                     of that upgrade (a failed start leaves the serving generation in place)"
                ),
            );
        }
        let Some(pin) = self.previous_good else {
            return refuse(
                fx,
                "nothing to roll back to: no earlier generation has served since hotsup started"
                    .into(),
            );
        };
        fx.push(Effect::Emit(Event::UpgradeRequested {
            source: Source::Control,
        }));
        self.restart_at = None;
        let waiters = reply.map(Reply::Outcome).into_iter().collect();
        self.begin_attempt(now, Origin::Rollback, Exe::Pinned(pin), waiters, fx);
    }

    fn request_stop(
        &mut self,
        now: Instant,
        source: Source,
        reply: Option<Ticket>,
        fx: &mut Vec<Effect>,
    ) {
        self.stop_waiters.extend(reply);
        match (self.shutdown, source) {
            (None, _) => self.begin_shutdown(now, source, Shutdown::Graceful, fx),
            // A second signal means "now"; a second control request only
            // waits with the first.
            (Some(Shutdown::Graceful), Source::Signal(_)) => {
                self.exit_code = Some(1);
                self.begin_shutdown(now, source, Shutdown::Forced, fx);
            }
            _ => {}
        }
    }

    fn forward(&mut self, signal: i32, reply: Option<Ticket>, fx: &mut Vec<Effect>) {
        let targets: Vec<(WorkerId, Pid)> = self
            .gens
            .values()
            .filter(|g| g.is_serving())
            .flat_map(Generation::live_workers)
            .collect();
        if targets.is_empty() {
            fx.push(Effect::Emit(Event::NothingToSignal { signal }));
            if let Some(t) = reply {
                fx.push(Effect::Reply {
                    ticket: t,
                    answer: Answer::Error("no generation is serving".into()),
                });
            }
            return;
        }
        for (worker, pid) in targets {
            fx.push(Effect::Emit(Event::Forwarded {
                generation: worker.generation,
                pid: pid.as_raw_pid(),
                signal,
            }));
            fx.push(Effect::Signal {
                worker,
                pid,
                signal,
                reply,
            });
        }
    }

    // ----- generations -----

    fn new_pin(&mut self) -> PinId {
        let pin = PinId(self.next_pin);
        self.next_pin += 1;
        pin
    }

    /// The generation whose outcome is pending: Starting or on Probation.
    fn attempt(&self) -> Option<GenId> {
        self.gens.values().find(|g| g.is_attempt()).map(|g| g.id)
    }

    fn on_probation(&self) -> Option<GenId> {
        self.gens
            .values()
            .find(|g| matches!(g.phase, Phase::Probation { .. }))
            .map(|g| g.id)
    }

    fn serving(&self) -> Option<GenId> {
        self.gens.values().find(|g| g.is_serving()).map(|g| g.id)
    }

    fn begin_attempt(
        &mut self,
        now: Instant,
        origin: Origin,
        exe: Exe,
        waiters: Vec<Reply>,
        fx: &mut Vec<Effect>,
    ) {
        if self.serving().is_some() {
            fx.push(Effect::Manager(ManagerMessage::Reloading));
        }
        self.spawn_generation(now, origin, exe, waiters, fx);
    }

    fn spawn_generation(
        &mut self,
        now: Instant,
        origin: Origin,
        exe: Exe,
        waiters: Vec<Reply>,
        fx: &mut Vec<Effect>,
    ) -> GenId {
        let id = self.next_gen;
        self.next_gen += 1;
        let pin = match exe {
            Exe::Fresh(p) | Exe::Pinned(p) => p,
        };
        self.pins.insert(pin);
        let ready_at = match self.policy.ready {
            ReadyRule::Delay(d) => Some(now + d),
            _ => None,
        };
        let mut g = Generation {
            id,
            pin,
            origin,
            spawned_at: now,
            ready_via: None,
            ready_since: None,
            phase: Phase::Starting {
                deadline: now + self.policy.ready_timeout,
                ready_at,
                doomed: None,
            },
            workers: vec![Worker::new(0)],
            waiters: Vec::new(),
            on_spawn: Vec::new(),
        };
        for r in waiters {
            match r {
                Reply::Outcome(t) => g.waiters.push(t),
                Reply::Started(t) => g.on_spawn.push(t),
            }
        }
        let slots: Vec<u32> = g.workers.iter().map(|w| w.slot).collect();
        self.gens.insert(id, g);
        for slot in slots {
            fx.push(Effect::Spawn {
                worker: WorkerId {
                    generation: id,
                    slot,
                },
                exe,
                origin,
            });
        }
        id
    }

    fn on_spawned(&mut self, now: Instant, worker: WorkerId, pid: Pid, fx: &mut Vec<Effect>) {
        let exec = self.policy.ready == ReadyRule::Exec;
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let Some(w) = g.workers.iter_mut().find(|w| w.slot == worker.slot) else {
            return;
        };
        w.pid = Some(pid);
        w.spawned = true;
        // Until its channel closes, a native child's channel is open; a
        // systemd-mode child has none, and never speaks on one.
        w.channel_open = true;
        fx.push(Effect::Emit(Event::Spawned {
            generation: g.id,
            pid: pid.as_raw_pid(),
            origin: g.origin,
            pinned: g.origin != Origin::Start && g.origin != Origin::Upgrade,
        }));
        for t in std::mem::take(&mut g.on_spawn) {
            answer(
                fx,
                t,
                UpgradeOutcome::Started {
                    generation: g.id,
                    pid: pid.as_raw_pid(),
                },
            );
        }
        if exec {
            self.worker_ready(now, worker, ReadyVia::Exec, fx);
        }
    }

    fn on_spawn_failed(
        &mut self,
        now: Instant,
        worker: WorkerId,
        error: String,
        fx: &mut Vec<Effect>,
    ) {
        let Some(g) = self.gens.get(&worker.generation) else {
            return;
        };
        // A generation that never got a process does not use up a number.
        if !g.workers.iter().any(|w| w.spawned) && self.next_gen == worker.generation + 1 {
            self.next_gen = worker.generation;
        }
        {
            self.fail_attempt(
                now,
                worker.generation,
                FailureReason::SpawnFailed { error },
                fx,
            );
        }
    }

    fn worker_ready(
        &mut self,
        now: Instant,
        worker: WorkerId,
        via: ReadyVia,
        fx: &mut Vec<Effect>,
    ) {
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let Phase::Starting { doomed: None, .. } = g.phase else {
            return;
        };
        if let Some(w) = g.workers.iter_mut().find(|w| w.slot == worker.slot) {
            w.ready = true;
        }
        if g.workers.iter().all(|w| w.ready) {
            self.on_ready(now, worker.generation, via, fx);
        }
    }

    fn on_ready(&mut self, now: Instant, id: GenId, via: ReadyVia, fx: &mut Vec<Effect>) {
        self.ever_ready = true;
        self.failed_starts = 0;
        let previous: Vec<GenId> = self
            .gens
            .values()
            .filter(|g| g.id != id && g.is_serving())
            .map(|g| g.id)
            .collect();
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.ready_via = Some(via);
        g.ready_since = Some(now);
        let origin = g.origin;
        let pid = g.pid();
        fx.push(Effect::Emit(Event::Ready {
            generation: id,
            pid,
            after_ms: ms(now.saturating_duration_since(g.spawned_at)),
            via,
        }));

        // Probation applies to upgrades that have something good to go back
        // to; a crash restart or a rollback runs an executable that already
        // proved itself.
        let fallback_pin = previous
            .first()
            .and_then(|p| self.gens.get(p))
            .map(|p| p.pin)
            .or(self.last_good);
        if let (Some(window), Origin::Upgrade, Some(pin)) =
            (self.policy.probation, origin, fallback_pin)
        {
            let mut fallback = Fallback::Pin(pin);
            for p in previous {
                if self.pause(now, p, id, fx) {
                    fallback = Fallback::Standby(p);
                } else {
                    self.drain(now, p, fx);
                }
            }
            self.enforce_max_draining(now, fx);
            if let Some(g) = self.gens.get_mut(&id) {
                g.phase = Phase::Probation {
                    since: now,
                    until: now + window,
                    fallback,
                };
            }
            fx.push(Effect::Emit(Event::ProbationStarted {
                generation: id,
                pid,
                probation_ms: ms(window),
                standby: match fallback {
                    Fallback::Standby(s) => Some(s),
                    Fallback::Pin(_) => None,
                },
            }));
            let line = self.status_line();
            fx.push(Effect::Manager(ManagerMessage::Status(line)));
            return;
        }

        if let Some(g) = self.gens.get_mut(&id) {
            g.phase = Phase::Serving { since: now };
        }
        for p in &previous {
            self.drain(now, *p, fx);
        }
        self.enforce_max_draining(now, fx);
        self.went_live(now, id, !previous.is_empty(), fx);
    }

    /// A generation is good: it serves, with probation passed if it had one.
    fn went_live(&mut self, now: Instant, id: GenId, replaced: bool, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let (pin, origin, pid) = (g.pin, g.origin, g.pid());
        let waiters = std::mem::take(&mut g.waiters);
        if self.last_good != Some(pin) {
            self.previous_good = self.last_good;
            self.last_good = Some(pin);
        }
        if replaced || matches!(origin, Origin::Upgrade | Origin::Rollback) {
            self.counters.upgrades_ready += 1;
            self.last_upgrade = Some(LastUpgrade {
                generation: Some(id),
                result: LastResult::Ready,
                failure: None,
                at: now,
            });
        }
        for t in waiters {
            answer(
                fx,
                t,
                UpgradeOutcome::Ready {
                    generation: id,
                    pid,
                },
            );
        }
        if self.shutdown.is_none() {
            let line = self.status_line();
            fx.push(Effect::Manager(ManagerMessage::Ready(line)));
        }
        self.after_attempt(now, fx);
    }

    /// Pauses generation `id` for `successor`'s probation. Returns false
    /// when it cannot pause (it never spoke protocol version 2).
    fn pause(&mut self, now: Instant, id: GenId, successor: GenId, fx: &mut Vec<Effect>) -> bool {
        let Some(g) = self.gens.get_mut(&id) else {
            return false;
        };
        if !g
            .workers
            .iter()
            .filter(|w| w.pid.is_some())
            .all(Worker::can_pause)
            || !g.alive()
        {
            return false;
        }
        g.phase = Phase::Standby {
            since: now,
            successor,
        };
        for (worker, pid) in g.live_workers() {
            fx.push(Effect::Pause { worker, pid });
        }
        fx.push(Effect::Emit(Event::Standby {
            generation: id,
            pid: g.pid(),
        }));
        true
    }

    fn pass_probation(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let Phase::Probation {
            since, fallback, ..
        } = g.phase
        else {
            return;
        };
        g.phase = Phase::Serving { since };
        fx.push(Effect::Emit(Event::ProbationPassed {
            generation: id,
            pid: g.pid(),
        }));
        if let Fallback::Standby(s) = fallback {
            if self
                .gens
                .get(&s)
                .is_some_and(|g| matches!(g.phase, Phase::Standby { .. }))
            {
                self.drain(now, s, fx);
                self.enforce_max_draining(now, fx);
            }
        }
        self.went_live(now, id, true, fx);
    }

    /// Takes generation `id` off probation and goes back to its fallback.
    fn roll_back(&mut self, now: Instant, id: GenId, failure: FailureReason, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let Phase::Probation {
            since, fallback, ..
        } = g.phase
        else {
            return;
        };
        let lived_ms = ms(now.saturating_duration_since(since));
        let pid = g.pid();
        let waiters = std::mem::take(&mut g.waiters);
        self.kill(now, id, KillCause::RolledBack, fx);

        let standby = match fallback {
            Fallback::Standby(s) => self.gens.get(&s).and_then(|g| match g.phase {
                Phase::Standby { .. }
                    if g.workers.iter().all(|w| w.pid.is_none() || w.can_pause()) =>
                {
                    Some((s, g.pin))
                }
                _ => None,
            }),
            Fallback::Pin(_) => None,
        };
        let serving = if let Some((s, _)) = standby {
            if let Some(sg) = self.gens.get_mut(&s) {
                sg.phase = Phase::Serving { since: now };
                for (worker, wpid) in sg.live_workers() {
                    fx.push(Effect::Resume { worker, pid: wpid });
                }
                fx.push(Effect::Emit(Event::Resumed {
                    generation: s,
                    pid: sg.pid(),
                }));
            }
            Some(s)
        } else {
            None
        };
        fx.push(Effect::Emit(Event::RolledBack {
            generation: id,
            pid,
            failure: failure.clone(),
            lived_ms,
            resumed: serving,
        }));
        self.counters.rollbacks += 1;
        self.last_upgrade = Some(LastUpgrade {
            generation: Some(id),
            result: LastResult::RolledBack,
            failure: Some(failure.clone()),
            at: now,
        });
        let serving = match serving {
            Some(s) => Some(s),
            None => {
                // Nothing to resume: start the executable that served before
                // the upgrade. The listeners queue connections meanwhile.
                let pin = match fallback {
                    Fallback::Pin(p) => Some(p),
                    Fallback::Standby(s) => self.gens.get(&s).map(|g| g.pin).or(self.last_good),
                }
                .or(self.last_good);
                match pin {
                    Some(p) if self.shutdown.is_none() => Some(self.spawn_generation(
                        now,
                        Origin::Rollback,
                        Exe::Pinned(p),
                        Vec::new(),
                        fx,
                    )),
                    _ => None,
                }
            }
        };
        for t in waiters {
            answer(
                fx,
                t,
                UpgradeOutcome::rolled_back(id, failure.clone(), lived_ms, serving),
            );
        }
        if self.shutdown.is_none() {
            let line = self.status_line();
            if serving.is_some_and(|s| self.gens.get(&s).is_some_and(Generation::is_serving)) {
                fx.push(Effect::Manager(ManagerMessage::Ready(line)));
            } else {
                fx.push(Effect::Manager(ManagerMessage::Status(line)));
            }
        }
        self.after_attempt(now, fx);
    }

    /// A generation that had not become ready failed: kill what is left of
    /// it, answer its clients, and decide what follows.
    fn fail_attempt(
        &mut self,
        now: Instant,
        id: GenId,
        failure: FailureReason,
        fx: &mut Vec<Effect>,
    ) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        if !matches!(g.phase, Phase::Starting { .. }) {
            return;
        }
        let waiters = std::mem::take(&mut g.waiters);
        let on_spawn = std::mem::take(&mut g.on_spawn);
        let origin = g.origin;
        let spawned = g.workers.iter().any(|w| w.spawned);
        self.kill(now, id, KillCause::FailedStart, fx);
        let generation = spawned.then_some(id);
        let serving = self.serving();
        for t in waiters.into_iter().chain(on_spawn) {
            answer(
                fx,
                t,
                UpgradeOutcome::failed(generation, failure.clone(), serving),
            );
        }
        let upgrade = serving.is_some() || origin == Origin::Upgrade && self.ever_ready;
        if upgrade {
            self.counters.upgrades_failed += 1;
            self.last_upgrade = Some(LastUpgrade {
                generation,
                result: LastResult::Failed,
                failure: Some(failure.clone()),
                at: now,
            });
            fx.push(Effect::Emit(Event::UpgradeFailed {
                generation,
                failure,
                serving,
            }));
        } else {
            if !self.ever_ready {
                self.failed_starts += 1;
            }
            fx.push(Effect::Emit(Event::StartFailed {
                generation,
                failure,
                attempt: self.failed_starts.max(1),
            }));
            if !self.ever_ready && self.failed_starts >= self.policy.start_attempts {
                fx.push(Effect::Emit(Event::GaveUp {
                    attempts: self.failed_starts,
                }));
                self.exit_code = Some(1);
                self.begin_shutdown(now, Source::Supervisor, Shutdown::Graceful, fx);
                return;
            }
        }
        if self.shutdown.is_none() {
            let line = self.status_line();
            if serving.is_some() {
                // The reload is over: the old generation serves on.
                fx.push(Effect::Manager(ManagerMessage::Ready(line)));
            } else {
                fx.push(Effect::Manager(ManagerMessage::Status(line)));
            }
        }
        self.after_attempt(now, fx);
    }

    /// After an attempt resolved: run the coalesced upgrade, or schedule a
    /// crash restart when nothing serves.
    fn after_attempt(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutdown.is_some() || self.attempt().is_some() {
            return;
        }
        if let Some(waiters) = self.pending.take() {
            fx.push(Effect::Emit(Event::UpgradeRequested {
                source: Source::Supervisor,
            }));
            self.restart_at = None;
            let pin = self.new_pin();
            self.begin_attempt(now, Origin::Upgrade, Exe::Fresh(pin), waiters, fx);
            return;
        }
        if self.serving().is_none() {
            self.schedule_restart(now, fx);
        }
    }

    fn schedule_restart(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.restart_at.is_some() || self.shutdown.is_some() {
            return;
        }
        match self.policy.restart {
            RestartRule::Never => {
                self.exit_code = Some(1);
                self.begin_shutdown(now, Source::Supervisor, Shutdown::Graceful, fx);
                return;
            }
            RestartRule::Wait => {
                fx.push(Effect::Emit(Event::WaitingForUpgrade));
                return;
            }
            RestartRule::Always | RestartRule::OnFailure => {}
        }
        let delay = BACKOFF_START
            .saturating_mul(1u32 << self.crashes.min(16))
            .min(BACKOFF_MAX);
        self.crashes = self.crashes.saturating_add(1);
        fx.push(Effect::Emit(Event::RestartScheduled {
            delay_ms: ms(delay),
            attempt: self.crashes,
        }));
        self.restart_at = Some(now + delay);
    }

    /// Asks a generation to finish and exit before the drain deadline.
    fn drain(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        let timeout = self.policy.drain_timeout;
        let sig = self.policy.drain_signal;
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.phase = Phase::Draining {
            since: now,
            deadline: now + timeout,
        };
        let mut via_name = None;
        for w in &g.workers {
            let Some(pid) = w.pid else { continue };
            let via = if w.spoke && w.channel_open {
                DrainVia::Channel {
                    timeout,
                    fallback: sig,
                }
            } else {
                DrainVia::Signal(sig)
            };
            via_name.get_or_insert(match via {
                DrainVia::Channel { .. } => "protocol".to_string(),
                DrainVia::Signal(s) => crate::signals::name(s),
            });
            fx.push(Effect::Drain {
                worker: WorkerId {
                    generation: id,
                    slot: w.slot,
                },
                pid,
                via,
            });
        }
        fx.push(Effect::Emit(Event::Draining {
            generation: id,
            pid: g.pid(),
            via: via_name.unwrap_or_default(),
            timeout_ms: ms(timeout),
        }));
    }

    /// SIGKILLs a generation and waits to reap it.
    fn kill(&mut self, now: Instant, id: GenId, cause: KillCause, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        if !g.alive() {
            // Never started, or already reaped: nothing to kill or wait for.
            self.gens.remove(&id);
            return;
        }
        g.phase = Phase::Killing {
            deadline: now + KILL_GRACE,
        };
        for (worker, pid) in g.live_workers() {
            fx.push(Effect::Kill { worker, pid });
        }
        fx.push(Effect::Emit(Event::Killed {
            generation: id,
            pid: g.pid(),
            cause,
        }));
    }

    /// Kills the oldest draining generations beyond `--max-draining`.
    fn enforce_max_draining(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let draining: Vec<GenId> = self
            .gens
            .values()
            .filter(|g| matches!(g.phase, Phase::Draining { .. }))
            .map(|g| g.id)
            .collect();
        let excess = draining.len().saturating_sub(self.policy.max_draining);
        for id in draining.into_iter().take(excess) {
            self.kill(now, id, KillCause::MaxDraining, fx);
        }
    }

    fn begin_shutdown(
        &mut self,
        now: Instant,
        source: Source,
        how: Shutdown,
        fx: &mut Vec<Effect>,
    ) {
        if self.shutdown.is_none() {
            fx.push(Effect::Manager(ManagerMessage::Stopping));
        }
        fx.push(Effect::Emit(Event::ShutdownBegan {
            source,
            forced: how == Shutdown::Forced,
        }));
        let mut waiters: Vec<Ticket> = self
            .pending
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(ticket_of)
            .collect();
        for g in self.gens.values_mut() {
            waiters.append(&mut g.waiters);
            waiters.append(&mut g.on_spawn);
        }
        for t in waiters {
            answer(fx, t, UpgradeOutcome::Superseded);
        }
        self.shutdown = Some(how);
        self.restart_at = None;
        if self.exit_code.is_none() {
            self.exit_code = Some(0);
        }
        let ids: Vec<(GenId, Phase)> = self
            .gens
            .values()
            .map(|g| (g.id, g.phase.clone()))
            .collect();
        for (id, phase) in ids {
            match (how, phase) {
                (_, Phase::Killing { .. }) => {}
                (Shutdown::Forced, _) | (_, Phase::Starting { .. }) => {
                    self.kill(now, id, KillCause::Shutdown, fx)
                }
                (_, Phase::Serving { .. } | Phase::Probation { .. } | Phase::Standby { .. }) => {
                    self.drain(now, id, fx)
                }
                (_, Phase::Draining { .. }) => {}
            }
        }
    }

    // ----- what happens to processes -----

    fn on_exit(&mut self, now: Instant, pid: Pid, status: ExitInfo, fx: &mut Vec<Effect>) {
        let Some(worker) = self.worker_of(pid) else {
            return;
        };
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        if let Some(w) = g.workers.iter_mut().find(|w| w.slot == worker.slot) {
            w.pid = None;
        }
        // Whatever the main process left behind goes with it: a leftover
        // could hold listener copies and accept connections nobody serves.
        fx.push(Effect::KillLeftovers { worker, pid });
        let id = g.id;
        let p = pid.as_raw_pid();
        let alive = g.alive();
        match g.phase.clone() {
            Phase::Starting { .. } => {
                self.fail_attempt(now, id, FailureReason::ExitedBeforeReady { status }, fx);
            }
            Phase::Probation { .. } => {
                self.roll_back(now, id, FailureReason::ExitedOnProbation { status }, fx);
            }
            Phase::Killing { .. } => fx.push(Effect::Emit(Event::Reaped {
                generation: id,
                pid: p,
                status,
            })),
            Phase::Draining { .. } => {
                // Exiting by the drain signal, or with 128+signal as JVMs and
                // Node do when they handle it, is a clean drain.
                let sig = self.policy.drain_signal;
                let clean = status.success()
                    || status.code == Some(128 + sig)
                    || status.signal == Some(sig);
                fx.push(Effect::Emit(Event::Drained {
                    generation: id,
                    pid: p,
                    status,
                    clean,
                }));
                if self.shutdown.is_some() && !clean && self.exit_code == Some(0) {
                    self.exit_code = Some(1);
                }
            }
            Phase::Standby { .. } => {
                // Its successor's rollback will start its executable instead.
                fx.push(Effect::Emit(Event::Crashed {
                    generation: id,
                    pid: p,
                    status,
                    successor: self.attempt(),
                }));
            }
            Phase::Serving { since } => {
                if alive {
                    // Another worker of this generation still serves.
                } else {
                    self.on_serving_exit(now, id, p, since, status, fx);
                }
            }
        }
        if self.gens.get(&id).is_some_and(|g| !g.alive()) {
            self.gens.remove(&id);
        }
    }

    fn on_serving_exit(
        &mut self,
        now: Instant,
        id: GenId,
        pid: i32,
        since: Instant,
        status: ExitInfo,
        fx: &mut Vec<Effect>,
    ) {
        self.gens.remove(&id);
        if now.saturating_duration_since(since) >= BACKOFF_RESET_AFTER {
            self.crashes = 0;
        }
        if self.shutdown.is_some() {
            fx.push(Effect::Emit(Event::Drained {
                generation: id,
                pid,
                status,
                clean: status.success(),
            }));
            return;
        }
        let successor = self.attempt();
        fx.push(Effect::Emit(Event::Crashed {
            generation: id,
            pid,
            status,
            successor,
        }));
        if successor.is_some() {
            // The generation starting (or on probation) takes over.
            return;
        }
        let restart = match self.policy.restart {
            RestartRule::Always | RestartRule::Wait => true,
            RestartRule::OnFailure => !status.success(),
            RestartRule::Never => false,
        };
        if restart {
            self.schedule_restart(now, fx);
        } else {
            let code = status.as_exit_code();
            fx.push(Effect::Emit(Event::Stopped {
                generation: id,
                status,
                exit_code: code,
            }));
            self.exit_code = Some(code);
            self.begin_shutdown(now, Source::Supervisor, Shutdown::Graceful, fx);
        }
    }

    fn on_worker(
        &mut self,
        now: Instant,
        worker: WorkerId,
        event: WorkerEvent,
        fx: &mut Vec<Effect>,
    ) {
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let id = g.id;
        let pid = g.pid();
        let starting = matches!(g.phase, Phase::Starting { .. });
        let on_probation = matches!(g.phase, Phase::Probation { .. });
        let standby = matches!(g.phase, Phase::Standby { .. });
        let Some(w) = g.workers.iter_mut().find(|w| w.slot == worker.slot) else {
            return;
        };
        if w.pid.is_none() {
            return;
        }
        // What the worker's state alone cannot settle is decided below, once
        // the borrow of the generation has ended.
        let follow = match event {
            WorkerEvent::HandedOff {
                listeners,
                elapsed_us,
            } => {
                fx.push(Effect::Emit(Event::HandedOff {
                    generation: id,
                    pid,
                    listeners,
                    elapsed_us,
                }));
                None
            }
            WorkerEvent::Protocol(version) => {
                w.spoke = true;
                w.protocol = version;
                fx.push(Effect::Emit(Event::Protocol {
                    generation: id,
                    pid,
                    version,
                }));
                None
            }
            WorkerEvent::Ready(via) => {
                if via == ReadyVia::Channel {
                    w.spoke = true;
                }
                Some(Follow::Ready(via))
            }
            WorkerEvent::Status(text) => {
                w.status = Some(text.clone());
                fx.push(Effect::Emit(Event::Status {
                    generation: id,
                    pid,
                    text,
                }));
                None
            }
            WorkerEvent::Unhealthy(reason) => {
                w.unhealthy = Some(reason.clone());
                fx.push(Effect::Emit(Event::Unhealthy {
                    generation: id,
                    pid,
                    reason: reason.clone(),
                }));
                let failure = FailureReason::Unhealthy { reason };
                if on_probation {
                    Some(Follow::RollBack(failure))
                } else if starting {
                    Some(Follow::Fail(failure))
                } else {
                    None
                }
            }
            WorkerEvent::Unknown(_) => None,
            WorkerEvent::Malformed(detail) => {
                fx.push(Effect::Emit(Event::MalformedMessage {
                    generation: id,
                    pid,
                    detail: detail.clone(),
                }));
                starting.then_some(Follow::Fail(FailureReason::MalformedMessage { detail }))
            }
            WorkerEvent::ChannelClosed(detail) => {
                w.channel_open = false;
                w.spoke = false;
                fx.push(Effect::Emit(Event::ChannelClosed {
                    generation: id,
                    pid,
                    detail: detail.clone(),
                }));
                if let Phase::Starting {
                    deadline,
                    ready_at,
                    doomed: None,
                } = g.phase
                {
                    g.phase = Phase::Starting {
                        deadline: deadline.min(now + CLOSED_GRACE),
                        ready_at,
                        doomed: Some(FailureReason::ChannelClosed { detail }),
                    };
                }
                None
            }
            WorkerEvent::PauseFailed(_) => {
                // It keeps accepting: no harm while its successor is on
                // probation, but it cannot be resumed, only replaced.
                w.channel_open = false;
                standby.then_some(Follow::Drain)
            }
            WorkerEvent::ResumeFailed(_) => {
                w.channel_open = false;
                Some(Follow::Replace)
            }
        };
        match follow {
            None => {}
            Some(Follow::Ready(via)) => self.worker_ready(now, worker, via, fx),
            Some(Follow::Fail(failure)) => self.fail_attempt(now, id, failure, fx),
            Some(Follow::RollBack(failure)) => self.roll_back(now, id, failure, fx),
            Some(Follow::Drain) => {
                self.drain(now, id, fx);
                self.enforce_max_draining(now, fx);
            }
            Some(Follow::Replace) => {
                // Paused for good. Killed while it is Serving, its exit is a
                // crash, which restarts the last good executable.
                if let Some(g) = self.gens.get(&id) {
                    fx.push(Effect::Emit(Event::Killed {
                        generation: id,
                        pid,
                        cause: KillCause::ResumeFailed,
                    }));
                    for (worker, wpid) in g.live_workers() {
                        fx.push(Effect::Kill { worker, pid: wpid });
                    }
                }
            }
        }
    }

    // ----- time -----

    fn expire(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if self.shutdown.is_none() && self.serving().is_none() && self.attempt().is_none() {
                self.counters.crash_restarts += 1;
                // A crash restart runs what last served well, not whatever
                // now sits at the path; with nothing good yet, the path.
                let exe = match self.last_good {
                    Some(p) => Exe::Pinned(p),
                    None => Exe::Fresh(self.new_pin()),
                };
                let origin = if self.ever_ready {
                    Origin::Restart
                } else {
                    Origin::Start
                };
                self.spawn_generation(now, origin, exe, Vec::new(), fx);
            }
        }
        // Each pass may change phases; go through them in order of id until
        // nothing more is due.
        loop {
            let due = self.gens.values().find_map(|g| {
                let due = match &g.phase {
                    Phase::Starting {
                        ready_at: Some(r),
                        doomed: None,
                        deadline,
                    } if *r <= now && *r < *deadline => Some(Due::DelayReady),
                    Phase::Starting { deadline, .. } if *deadline <= now => Some(Due::NotReady),
                    Phase::Probation { until, .. } if *until <= now => Some(Due::Probation),
                    Phase::Draining { deadline, .. } if *deadline <= now => Some(Due::Drain),
                    Phase::Killing { deadline } if *deadline <= now => Some(Due::Kill),
                    _ => None,
                };
                due.map(|d| (g.id, d))
            });
            let Some((id, due)) = due else { break };
            match due {
                Due::DelayReady => {
                    let workers: Vec<WorkerId> = self
                        .gens
                        .get(&id)
                        .map(|g| g.live_workers().map(|(w, _)| w).collect())
                        .unwrap_or_default();
                    for w in workers {
                        self.worker_ready(now, w, ReadyVia::Delay, fx);
                    }
                    // A delay-ready generation whose workers did not all
                    // start can never be ready: fail it now.
                    if self
                        .gens
                        .get(&id)
                        .is_some_and(|g| matches!(g.phase, Phase::Starting { .. }))
                    {
                        let timeout_ms = ms(self.policy.ready_timeout);
                        self.fail_attempt(now, id, FailureReason::NotReady { timeout_ms }, fx);
                    }
                }
                Due::NotReady => {
                    let doomed = match self.gens.get_mut(&id).map(|g| &mut g.phase) {
                        Some(Phase::Starting { doomed, .. }) => doomed.take(),
                        _ => None,
                    };
                    let failure = doomed.unwrap_or(FailureReason::NotReady {
                        timeout_ms: ms(self.policy.ready_timeout),
                    });
                    self.fail_attempt(now, id, failure, fx);
                }
                Due::Probation => self.pass_probation(now, id, fx),
                Due::Drain => {
                    self.kill(now, id, KillCause::DrainDeadline, fx);
                    if self.shutdown.is_some() {
                        self.exit_code = Some(1);
                    }
                }
                Due::Kill => self.kill_again(now, id, fx),
            }
        }
    }

    /// A SIGKILLed generation that is still not reaped: its main process
    /// sleeps uninterruptibly, or left its group. Kill again; when shutting
    /// down, stop waiting for it so hotsup can exit.
    fn kill_again(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        for (worker, pid) in g.live_workers() {
            fx.push(Effect::Kill { worker, pid });
        }
        if self.shutdown.is_some() {
            fx.push(Effect::Emit(Event::Abandoned {
                generation: id,
                pid: g.pid(),
            }));
            self.gens.remove(&id);
            self.exit_code = Some(1);
        } else {
            fx.push(Effect::Emit(Event::Killed {
                generation: id,
                pid: g.pid(),
                cause: KillCause::Again,
            }));
            g.phase = Phase::Killing {
                deadline: now + KILL_GRACE,
            };
        }
    }

    fn release_pins(&mut self, fx: &mut Vec<Effect>) {
        let mut used: BTreeSet<PinId> = self.gens.values().map(|g| g.pin).collect();
        used.extend(self.last_good);
        used.extend(self.previous_good);
        for g in self.gens.values() {
            if let Phase::Probation {
                fallback: Fallback::Pin(p),
                ..
            } = g.phase
            {
                used.insert(p);
            }
        }
        let unused: Vec<PinId> = self.pins.difference(&used).copied().collect();
        for p in unused {
            self.pins.remove(&p);
            fx.push(Effect::Unpin(p));
        }
    }

    fn check_exit(&mut self, fx: &mut Vec<Effect>) {
        if self.exited || !self.gens.is_empty() {
            return;
        }
        let Some(code) = self.exit_code else { return };
        self.exited = true;
        for t in std::mem::take(&mut self.stop_waiters) {
            fx.push(Effect::Reply {
                ticket: t,
                answer: Answer::Stopped { exit_code: code },
            });
        }
        fx.push(Effect::Emit(Event::Exiting { code }));
        fx.push(Effect::Exit(code));
    }

    // ----- reading -----

    /// One line for the service manager's `STATUS=`.
    pub fn status_line(&self) -> String {
        let mut s = match self.gens.values().find(|g| g.is_serving()) {
            Some(g) => match g.phase {
                Phase::Probation { .. } => {
                    format!(
                        "generation {} (pid {}) serving, on probation",
                        g.id,
                        g.pid()
                    )
                }
                _ => format!("generation {} (pid {}) serving", g.id, g.pid()),
            },
            None => "nothing serving".to_string(),
        };
        if let Some(LastUpgrade {
            generation,
            result: result @ (LastResult::Failed | LastResult::RolledBack),
            failure: Some(f),
            ..
        }) = &self.last_upgrade
        {
            let what = match result {
                LastResult::RolledBack => "rolled back",
                _ => "failed",
            };
            match generation {
                Some(g) => s.push_str(&format!("; last upgrade to generation {g} {what}: {f}")),
                None => s.push_str(&format!("; last upgrade {what}: {f}")),
            }
        }
        s
    }

    /// What `status` shows, at time `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            uptime: now.saturating_duration_since(self.started_at),
            generations: self
                .gens
                .values()
                .map(|g| GenerationSnapshot {
                    id: g.id,
                    pin: g.pin,
                    phase: g.phase.name(),
                    pids: g
                        .workers
                        .iter()
                        .filter_map(|w| w.pid)
                        .map(Pid::as_raw_pid)
                        .collect(),
                    age: now.saturating_duration_since(g.spawned_at),
                    ready_via: g.ready_via,
                    serving_for: match g.phase {
                        Phase::Serving { since } | Phase::Probation { since, .. } => {
                            Some(now.saturating_duration_since(since))
                        }
                        _ => None,
                    },
                    deadline_in: match g.phase {
                        Phase::Draining { deadline, .. }
                        | Phase::Starting { deadline, .. }
                        | Phase::Killing { deadline } => {
                            Some(deadline.saturating_duration_since(now))
                        }
                        Phase::Probation { until, .. } => {
                            Some(until.saturating_duration_since(now))
                        }
                        _ => None,
                    },
                    protocol: g.workers.iter().map(|w| w.protocol).min().unwrap_or(1),
                    status: g.workers.iter().find_map(|w| w.status.clone()),
                    unhealthy: g.workers.iter().find_map(|w| w.unhealthy.clone()),
                })
                .collect(),
            last_upgrade: self.last_upgrade.clone().map(|u| LastUpgradeSnapshot {
                generation: u.generation,
                result: u.result,
                failure: u.failure,
                ago: now.saturating_duration_since(u.at),
            }),
            counters: self.counters,
            last_good: self.last_good,
            previous_good: self.previous_good,
            upgrade_pending: self.pending.is_some(),
            restart_in: self.restart_at.map(|t| t.saturating_duration_since(now)),
        }
    }
}

/// What a worker's message leads to, beyond the worker itself.
enum Follow {
    Ready(ReadyVia),
    Fail(FailureReason),
    RollBack(FailureReason),
    Drain,
    Replace,
}

#[derive(Debug, Clone, Copy)]
enum Due {
    DelayReady,
    NotReady,
    Probation,
    Drain,
    Kill,
}

/// The core's state as `status` shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime: Duration,
    pub generations: Vec<GenerationSnapshot>,
    pub last_upgrade: Option<LastUpgradeSnapshot>,
    pub counters: Counters,
    pub last_good: Option<PinId>,
    pub previous_good: Option<PinId>,
    pub upgrade_pending: bool,
    pub restart_in: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct GenerationSnapshot {
    pub id: GenId,
    pub pin: PinId,
    /// `starting`, `probation`, `serving`, `standby`, `draining`, `killing`.
    pub phase: &'static str,
    pub pids: Vec<i32>,
    pub age: Duration,
    pub ready_via: Option<ReadyVia>,
    pub serving_for: Option<Duration>,
    /// Until the ready timeout, the end of probation, the drain deadline or
    /// the next SIGKILL.
    pub deadline_in: Option<Duration>,
    pub protocol: u32,
    pub status: Option<String>,
    pub unhealthy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LastUpgradeSnapshot {
    pub generation: Option<GenId>,
    pub result: LastResult,
    pub failure: Option<FailureReason>,
    pub ago: Duration,
}

fn ticket_of(r: Reply) -> Ticket {
    match r {
        Reply::Outcome(t) | Reply::Started(t) => t,
    }
}

fn answer(fx: &mut Vec<Effect>, ticket: Ticket, outcome: UpgradeOutcome) {
    fx.push(Effect::Reply {
        ticket,
        answer: Answer::Upgrade(outcome),
    });
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
