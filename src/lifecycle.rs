//! The lifecycle core: every rule about generations, with no I/O.
//!
//! [`Core::handle`] takes one [`Input`] (a request, a child's message, an
//! exit, the passing of time) with the time it happened, and returns the
//! [`Effect`]s the shell must carry out: spawn, drain, pause, resume, kill,
//! answer a client, tell the service manager, log an event. The core makes
//! no syscall, reads no clock, spawns no task and logs nothing, so each rule
//! is tested by feeding inputs and reading effects (see `lifecycle/tests.rs`).
//!
//! # Generations and workers
//!
//! A generation is one version of the app: its pinned executable, run as
//! `--workers N` worker processes that share the listeners. Each worker has
//! a slot (0..N, its `HOTSUP_WORKER`) and a state of its own; the
//! generation has a role:
//!
//! ```text
//!            all workers ready, no probation
//!  Rolling ──────────────────────────────────▶ Serving ──▶ Retiring ──▶ (gone)
//!     │  all ready, --probation                  ▲
//!     ├──────────────▶ Probation ────────────────┘ window passed
//!     │                   │ a worker exits, UNHEALTHY, `hotsup rollback`
//!     │                   ▼
//!     └─▶ Retiring ◀──────┘   (the Standby generation resumes, or the
//!           failed             last good executable starts again)
//! ```
//!
//! A rollout starts the new workers in batches of `--rollout-batch K`
//! (all N at once by default). Once a batch is ready, as many old workers
//! are retired: paused when they speak protocol version 2, so that a failed
//! rollout can resume them at once, drained otherwise. With `--canary`, the
//! first new worker serves beside the whole old pool for a while before the
//! rest rolls. Serving and starting workers never exceed N+K; paused and
//! draining ones serve nothing new.
//!
//! The previous generation of one on probation is paused (`Standby`) when
//! all its workers speak protocol version 2; otherwise it drains and a
//! rollback starts its pinned executable again.
//!
//! A serving worker that crashes is restarted in its slot, with a backoff
//! of its own, while the others serve on. Only when every worker of the
//! serving generation is gone is it a crash of the generation, restarted
//! (as a new generation) from the last good executable.
//!
//! # Hooks
//!
//! With `--check`, an upgrade first runs the check ([`Effect::Check`]) and
//! spawns only once it passed ([`Input::CheckDone`]); a failed check
//! refuses the upgrade and nothing else changes. Only upgrades are checked
//! (by signal, control socket or watch mode): not the first start, not a
//! crash restart, which must never wait for a check that may depend on the
//! new code, and not `hotsup rollback`, which goes back to code that
//! served. With `--after-upgrade`, an upgrade that went live (probation
//! passed, if any) asks for the hook ([`Effect::AfterUpgrade`]); its result
//! is only reported.
//!
//! Invariants the core keeps: at most one generation is Rolling or on
//! Probation (an "attempt"), at most one upgrade is being checked, and
//! never both at once from upgrades (a crash restart may start during a
//! check); upgrades asked for during either are coalesced into a single
//! follow-up; at most one generation is Serving or on Probation; at most
//! one is on Standby.

mod event;
mod image;
mod outcome;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::process::Pid;

pub use event::{Event, KillCause, Level, Origin, Source};
pub use image::{Busy, CoreImage, ImportError, WorkerIdImage};
pub use outcome::{ExitInfo, FailureReason, LastResult, ReadyVia, UpgradeOutcome};
use state::{Canary, Gate, Generation, Role, WState, Worker};
pub use state::{Fallback, GenerationSnapshot, LastUpgradeSnapshot, Snapshot, WorkerSnapshot};

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
/// How long after a failed `--ready-probe` the next one starts.
pub const PROBE_RETRY: Duration = Duration::from_millis(250);
/// How long a SIGKILLed generation may take to be reaped before the kill is
/// repeated (a process in uninterruptible sleep dies only when it wakes).
pub const KILL_GRACE: Duration = Duration::from_secs(5);

pub type GenId = u64;

/// An executable hotsup keeps open (pinned) so that it can start exactly it
/// again, whatever happens to the file at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinId(pub u64);

/// One worker process of a generation. `seq` is unique over hotsup's life:
/// a slot's worker that crashed and was restarted, or was replaced, is
/// another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId {
    pub generation: GenId,
    pub slot: u32,
    pub seq: u64,
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
    /// Worker processes per generation (`--workers`), at start.
    pub workers: u32,
    /// New workers started at once in a rollout (`--rollout-batch`); all
    /// of them when `None`.
    pub rollout_batch: Option<u32>,
    /// How long the first new worker serves beside the old pool before the
    /// rest rolls (`--canary`).
    pub canary: Option<Duration>,
    /// Replace a worker after it served this long (`--max-worker-age`), with
    /// up to a tenth more so that a pool does not recycle all at once.
    pub max_worker_age: Option<Duration>,
    /// After the readiness signal, wait this long more (`--ready-settle`).
    pub ready_settle: Option<Duration>,
    /// Then run the shell's `--ready-probe` until it succeeds.
    pub ready_probe: bool,
    /// Run the shell's `--check` before an upgrade spawns anything.
    pub check: bool,
    /// Run the shell's `--after-upgrade` once an upgrade went live.
    pub after_upgrade: bool,
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
    /// Send a signal to the serving generation's workers, or to one slot.
    Forward {
        signal: i32,
        slot: Option<u32>,
        reply: Option<Ticket>,
    },
    /// Change the number of workers (`hotsup scale`).
    Scale { workers: u32, reply: Option<Ticket> },
    /// Replace a worker (`--max-worker-rss`): a new one in its slot first,
    /// then it drains.
    Recycle { worker: WorkerId, why: String },
    /// A `--ready-probe` run for a worker ended.
    ProbeDone {
        worker: WorkerId,
        ok: bool,
        detail: String,
    },
    /// The `--check` of the upgrade to `generation` ended.
    CheckDone {
        generation: GenId,
        ok: bool,
        detail: String,
    },
    /// The `--after-upgrade` hook of `generation` ended; this changes
    /// nothing but the log.
    AfterUpgradeDone {
        generation: GenId,
        ok: bool,
        detail: String,
    },
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
    Scaled { from: u32, to: u32 },
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
    /// Run `--ready-probe` for a worker; answer with [`Input::ProbeDone`].
    Probe {
        worker: WorkerId,
        pid: Pid,
    },
    /// Run `--check` for the upgrade that will start `generation` (no
    /// process of it exists yet); answer with [`Input::CheckDone`].
    Check {
        generation: GenId,
    },
    /// Stop the `--check` of `generation`: its answer no longer matters.
    CancelCheck {
        generation: GenId,
    },
    /// Run `--after-upgrade` for `generation`, which went live with these
    /// workers' pids (in slot order); answer with
    /// [`Input::AfterUpgradeDone`], whenever it ends.
    AfterUpgrade {
        generation: GenId,
        pids: Vec<Pid>,
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
    /// Workers restarted in their slot after a crash.
    pub worker_restarts: u64,
    /// Workers replaced for their age or size.
    pub recycled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Graceful,
    Forced,
}

/// The lifecycle core. See the module docs.
#[derive(Debug)]
pub struct Core {
    policy: Policy,
    /// Workers of the next generation (`--workers`, or `hotsup scale`).
    workers_target: u32,
    gens: BTreeMap<GenId, Generation>,
    next_gen: GenId,
    next_seq: u64,
    next_pin: u64,
    pins: BTreeSet<PinId>,
    /// The executable of the generation that last became ready and passed
    /// probation; crash restarts run it.
    last_good: Option<PinId>,
    /// The one good before it; `hotsup rollback` goes back to it.
    previous_good: Option<PinId>,
    /// An upgrade asked for during an attempt or a check, and who waits
    /// for it.
    pending: Option<Vec<Reply>>,
    /// The upgrade whose `--check` runs.
    checking: Option<Checking>,
    restart_at: Option<Instant>,
    /// Consecutive crashes of whole generations, for the backoff.
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

/// An upgrade waiting for its `--check`: nothing of it runs yet.
#[derive(Debug)]
struct Checking {
    /// The number the new generation gets if it starts now: the one the
    /// check was told.
    generation: GenId,
    waiters: Vec<Reply>,
    since: Instant,
}

/// What a worker's message leads to, beyond the worker itself.
enum Follow {
    Ready(ReadyVia),
    Fail(FailureReason),
    RollBack(FailureReason),
    Retire,
    Replace,
}

/// A deadline that passed.
#[derive(Debug, Clone, Copy)]
enum Due {
    DelayReady(WorkerId),
    NotReady(WorkerId),
    Canary(GenId),
    Probation(GenId),
    Drain(WorkerId),
    Kill(WorkerId),
    SlotRestart(GenId, u32),
    Recycle(WorkerId),
    Settled(WorkerId),
    Probe(WorkerId),
}

impl Core {
    pub fn new(policy: Policy, now: Instant) -> Core {
        Core {
            workers_target: policy.workers.max(1),
            policy,
            gens: BTreeMap::new(),
            next_gen: 1,
            next_seq: 1,
            next_pin: 1,
            pins: BTreeSet::new(),
            last_good: None,
            previous_good: None,
            pending: None,
            checking: None,
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

    /// Whether generation `g` still exists: it has workers, alive or to be
    /// restarted.
    pub fn has_generation(&self, g: GenId) -> bool {
        self.gens.contains_key(&g)
    }

    /// Changes the rules from now on (a config file read for an upgrade):
    /// deadlines already set keep their time, later ones use the new
    /// values. A changed `workers` sizes the next generation, as `hotsup
    /// scale` does; an unchanged one leaves a `hotsup scale` in place.
    pub fn set_policy(&mut self, policy: Policy) {
        if policy.workers != self.policy.workers {
            self.workers_target = policy.workers.max(1);
        }
        self.policy = policy;
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
            Input::Forward {
                signal,
                slot,
                reply,
            } => self.forward(signal, slot, reply, &mut fx),
            Input::Scale { workers, reply } => self.scale(now, workers, reply, &mut fx),
            Input::Recycle { worker, why } => self.recycle(now, worker, why, &mut fx),
            Input::ProbeDone { worker, ok, detail } => {
                self.probe_done(now, worker, ok, detail, &mut fx)
            }
            Input::CheckDone {
                generation,
                ok,
                detail,
            } => self.check_done(now, generation, ok, detail, &mut fx),
            Input::AfterUpgradeDone {
                generation,
                ok,
                detail,
            } => fx.push(Effect::Emit(if ok {
                Event::AfterUpgradeDone { generation }
            } else {
                Event::AfterUpgradeFailed { generation, detail }
            })),
            Input::Tick => {}
        }
        self.expire(now, &mut fx);
        self.release_pins(&mut fx);
        self.check_exit(&mut fx);
        fx
    }

    /// When the shell must feed [`Input::Tick`] next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.restart_at;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.gens.values() {
            match g.role {
                Role::Rolling {
                    canary: Canary::Serving { until, .. },
                    ..
                } => at(until),
                Role::Probation { until, .. } => at(until),
                _ => {}
            }
            for r in g.slot_restarts.values() {
                if let Some(t) = r.at {
                    at(t);
                }
            }
            for w in g.workers.iter().filter(|w| w.present()) {
                match &w.state {
                    WState::Starting {
                        deadline,
                        ready_at,
                        doomed,
                        gate,
                    } => {
                        at(*deadline);
                        match (gate, doomed) {
                            (Gate::Signal, None) => {
                                if let Some(r) = ready_at {
                                    at(*r);
                                }
                            }
                            (Gate::Settling { until, .. }, None) => at(*until),
                            (
                                Gate::Probing {
                                    next: Some(next), ..
                                },
                                None,
                            ) => at(*next),
                            _ => {}
                        }
                    }
                    WState::Draining { deadline, .. } | WState::Killing { deadline } => {
                        at(*deadline)
                    }
                    WState::Serving { .. } | WState::Paused { .. } => {}
                }
                if let Some(t) = w.recycle_at {
                    at(t);
                }
            }
        }
        next
    }

    /// The worker whose main process is `pid`.
    pub fn worker_of(&self, pid: Pid) -> Option<WorkerId> {
        self.gens
            .values()
            .flat_map(Generation::live)
            .find(|(_, p)| *p == pid)
            .map(|(w, _)| w)
    }

    /// Every live worker with its main pid.
    pub fn live_workers(&self) -> Vec<(WorkerId, Pid)> {
        self.gens.values().flat_map(Generation::live).collect()
    }

    /// Whether a `Spawn` the shell is about to carry out is still wanted: a
    /// batch whose first worker failed to start is cancelled.
    pub fn wants_spawn(&self, worker: WorkerId) -> bool {
        self.gens
            .get(&worker.generation)
            .and_then(|g| g.worker(worker))
            .is_some_and(|w| !w.spawned && matches!(w.state, WState::Starting { .. }))
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
        if let Some(attempt) = self.busy() {
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
        self.begin_upgrade(now, reply.into_iter().collect(), fx);
    }

    /// Starts an upgrade to the command as it is now: its `--check` first,
    /// when there is one.
    fn begin_upgrade(&mut self, now: Instant, waiters: Vec<Reply>, fx: &mut Vec<Effect>) {
        if self.policy.check {
            if self.anything_serving() {
                fx.push(Effect::Manager(ManagerMessage::Reloading));
            }
            // A crash restart pending meanwhile stays pending: it must not
            // wait for a check of the new code.
            self.start_check(now, waiters, fx);
            return;
        }
        self.restart_at = None;
        let pin = self.new_pin();
        self.begin_attempt(now, Origin::Upgrade, Exe::Fresh(pin), waiters, fx);
    }

    fn start_check(&mut self, now: Instant, waiters: Vec<Reply>, fx: &mut Vec<Effect>) {
        let generation = self.next_gen;
        self.checking = Some(Checking {
            generation,
            waiters,
            since: now,
        });
        fx.push(Effect::Emit(Event::CheckStarted { generation }));
        fx.push(Effect::Check { generation });
    }

    fn check_done(
        &mut self,
        now: Instant,
        generation: GenId,
        ok: bool,
        detail: String,
        fx: &mut Vec<Effect>,
    ) {
        // An answer for a check that was cancelled (shutdown) counts for
        // nothing.
        let Some(c) = self.checking.take_if(|c| c.generation == generation) else {
            return;
        };
        let after_ms = ms(now.saturating_duration_since(c.since));
        if !ok {
            let serving = self.serving();
            let failure = FailureReason::CheckFailed { detail };
            fx.push(Effect::Emit(Event::CheckFailed {
                generation,
                after_ms,
                failure: failure.clone(),
            }));
            for r in c.waiters {
                answer(
                    fx,
                    ticket_of(r),
                    UpgradeOutcome::failed(None, failure.clone(), serving),
                );
            }
            self.counters.upgrades_failed += 1;
            self.last_upgrade = Some(LastUpgrade {
                generation: None,
                result: LastResult::Failed,
                failure: Some(failure.clone()),
                at: now,
            });
            fx.push(Effect::Emit(Event::UpgradeFailed {
                generation: None,
                failure,
                serving,
            }));
            self.attempt_failed(now, serving.is_some(), fx);
            return;
        }
        fx.push(Effect::Emit(Event::CheckPassed {
            generation,
            after_ms,
        }));
        if let Some(attempt) = self.attempt() {
            // A crash restart started during the check: the upgrade follows
            // it, checked again for the number it will then get.
            fx.push(Effect::Emit(Event::UpgradeQueued {
                source: Source::Supervisor,
                behind: attempt,
            }));
            self.pending.get_or_insert_with(Vec::new).extend(c.waiters);
            return;
        }
        if self.next_gen != generation {
            // A crash restart took the number and already serves: check
            // again, for the number the generation would now get.
            self.start_check(now, c.waiters, fx);
            return;
        }
        self.restart_at = None;
        let pin = self.new_pin();
        self.spawn_generation(now, Origin::Upgrade, Exe::Fresh(pin), c.waiters, fx);
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
        if let Some(id) = self.taken_back_by_rollback() {
            if let (Some(t), Some(g)) = (reply, self.gens.get_mut(&id)) {
                g.waiters.push(t);
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
        if let Some(c) = &self.checking {
            return refuse(
                fx,
                format!(
                    "the upgrade to generation {} is being checked (--check); wait for its \
                     outcome",
                    c.generation
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

    /// The generation `hotsup rollback` takes back at once: one on
    /// probation, or a canary serving.
    fn taken_back_by_rollback(&self) -> Option<GenId> {
        self.gens
            .values()
            .find(|g| {
                matches!(
                    g.role,
                    Role::Probation { .. }
                        | Role::Rolling {
                            canary: Canary::Serving { .. },
                            ..
                        }
                )
            })
            .map(|g| g.id)
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

    fn forward(
        &mut self,
        signal: i32,
        slot: Option<u32>,
        reply: Option<Ticket>,
        fx: &mut Vec<Effect>,
    ) {
        let targets: Vec<(WorkerId, Pid)> = self
            .gens
            .values()
            .filter(|g| g.is_serving())
            .flat_map(|g| g.workers.iter())
            .filter(|w| slot.is_none_or(|s| w.id.slot == s))
            .filter(|w| matches!(w.state, WState::Serving { .. }))
            .filter_map(|w| w.pid.map(|p| (w.id, p)))
            .collect();
        if targets.is_empty() {
            fx.push(Effect::Emit(Event::NothingToSignal { signal }));
            if let Some(t) = reply {
                let why = match slot {
                    Some(s) => format!("no worker serves in slot {s}"),
                    None => "no generation is serving".into(),
                };
                fx.push(Effect::Reply {
                    ticket: t,
                    answer: Answer::Error(why),
                });
            }
            return;
        }
        let last = targets.len() - 1;
        for (i, (worker, pid)) in targets.into_iter().enumerate() {
            fx.push(Effect::Emit(Event::Forwarded {
                generation: worker.generation,
                slot: worker.slot,
                pid: pid.as_raw_pid(),
                signal,
            }));
            fx.push(Effect::Signal {
                worker,
                pid,
                signal,
                // One answer, once every worker was signalled.
                reply: if i == last { reply } else { None },
            });
        }
    }

    fn scale(&mut self, now: Instant, to: u32, reply: Option<Ticket>, fx: &mut Vec<Effect>) {
        let refuse = |fx: &mut Vec<Effect>, why: String| {
            if let Some(t) = reply {
                fx.push(Effect::Reply {
                    ticket: t,
                    answer: Answer::Error(why),
                });
            }
        };
        if to == 0 {
            return refuse(fx, "a pool needs at least one worker".into());
        }
        if self.shutdown.is_some() {
            return refuse(fx, "hotsup is shutting down".into());
        }
        if let Some(id) = self.attempt() {
            return refuse(
                fx,
                format!("generation {id} is rolling out; scale once it serves"),
            );
        }
        let from = self.workers_target;
        self.workers_target = to;
        fx.push(Effect::Emit(Event::Scaled { from, to }));
        if let Some(id) = self.serving() {
            let pin = self.gens.get(&id).map(|g| g.pin);
            let Some(g) = self.gens.get_mut(&id) else {
                return;
            };
            let old = g.slots;
            g.slots = to;
            g.slot_restarts.retain(|slot, _| *slot < to);
            if to > old {
                for slot in old..to {
                    if let Some(pin) = pin {
                        self.spawn_worker(now, id, slot, Exe::Pinned(pin), fx);
                    }
                }
            } else {
                let extra: Vec<WorkerId> = g
                    .workers
                    .iter()
                    .filter(|w| w.present() && w.id.slot >= to)
                    .map(|w| w.id)
                    .collect();
                for w in extra {
                    self.retire_worker(now, w, false, fx);
                }
            }
        }
        if let Some(t) = reply {
            fx.push(Effect::Reply {
                ticket: t,
                answer: Answer::Scaled { from, to },
            });
        }
    }

    fn recycle(&mut self, now: Instant, worker: WorkerId, why: String, fx: &mut Vec<Effect>) {
        if self.shutdown.is_some() || self.attempt().is_some() {
            return;
        }
        let Some(g) = self.gens.get(&worker.generation) else {
            return;
        };
        if !matches!(g.role, Role::Serving { .. }) {
            return;
        }
        let Some(w) = g.worker(worker) else { return };
        if !w.is(state::serving) {
            return;
        }
        // One replacement per slot at a time.
        if g.workers.iter().any(|o| o.replaces == Some(worker)) {
            return;
        }
        let pin = g.pin;
        fx.push(Effect::Emit(Event::Recycling {
            generation: worker.generation,
            slot: worker.slot,
            pid: w.pid.map_or(0, Pid::as_raw_pid),
            why,
        }));
        let new = self.spawn_worker(now, worker.generation, worker.slot, Exe::Pinned(pin), fx);
        if let Some(g) = self.gens.get_mut(&worker.generation) {
            if let Some(n) = g.worker_mut(new) {
                n.replaces = Some(worker);
            }
            if let Some(o) = g.worker_mut(worker) {
                o.recycle_at = None;
            }
        }
    }

    // ----- generations -----

    fn new_pin(&mut self) -> PinId {
        let pin = PinId(self.next_pin);
        self.next_pin += 1;
        pin
    }

    /// The generation whose outcome is pending: Rolling or on Probation.
    fn attempt(&self) -> Option<GenId> {
        self.gens.values().find(|g| g.is_attempt()).map(|g| g.id)
    }

    /// The generation an upgrade request would have to wait for: one
    /// being checked, or an attempt.
    fn busy(&self) -> Option<GenId> {
        self.checking
            .as_ref()
            .map(|c| c.generation)
            .or_else(|| self.attempt())
    }

    fn serving(&self) -> Option<GenId> {
        self.gens
            .values()
            .find(|g| matches!(g.role, Role::Serving { .. }))
            .map(|g| g.id)
    }

    fn anything_serving(&self) -> bool {
        self.gens.values().any(Generation::is_serving)
    }

    fn begin_attempt(
        &mut self,
        now: Instant,
        origin: Origin,
        exe: Exe,
        waiters: Vec<Reply>,
        fx: &mut Vec<Effect>,
    ) {
        if self.anything_serving() {
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
        // A canary only where there is an old pool to serve beside.
        let canary = if self.policy.canary.is_some()
            && origin == Origin::Upgrade
            && self.serving().is_some()
        {
            Canary::Starting
        } else {
            Canary::Off
        };
        let mut g = Generation {
            id,
            pin,
            origin,
            spawned_at: now,
            ready_via: None,
            role: Role::Rolling { started: 0, canary },
            slots: self.workers_target,
            workers: Vec::new(),
            waiters: Vec::new(),
            on_spawn: Vec::new(),
            slot_restarts: BTreeMap::new(),
            last_pid: 0,
        };
        for r in waiters {
            match r {
                Reply::Outcome(t) => g.waiters.push(t),
                Reply::Started(t) => g.on_spawn.push(t),
            }
        }
        self.gens.insert(id, g);
        self.roll(now, id, Some(exe), fx);
        id
    }

    /// Starts the next batch of a rolling generation. `first` is how the
    /// generation's executable is found, for its very first worker; later
    /// ones run what that one pinned.
    fn roll(&mut self, now: Instant, id: GenId, first: Option<Exe>, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get(&id) else { return };
        let Role::Rolling { started, canary } = g.role else {
            return;
        };
        let n = g.slots;
        if started >= n {
            return;
        }
        // Batches keep capacity while an old pool serves; with nothing
        // serving, every worker starts at once.
        let old_pool = self
            .gens
            .values()
            .any(|o| o.id != id && matches!(o.role, Role::Serving { .. }));
        let batch = match canary {
            Canary::Starting => 1,
            _ if !old_pool => n,
            _ => self.policy.rollout_batch.unwrap_or(n).max(1),
        };
        let end = (started + batch).min(n);
        let pin = g.pin;
        if let Some(g) = self.gens.get_mut(&id) {
            g.role = Role::Rolling {
                started: end,
                canary,
            };
        }
        for slot in started..end {
            let exe = match first {
                Some(e) if slot == started => e,
                _ => Exe::Pinned(pin),
            };
            self.spawn_worker(now, id, slot, exe, fx);
        }
    }

    fn spawn_worker(
        &mut self,
        now: Instant,
        id: GenId,
        slot: u32,
        exe: Exe,
        fx: &mut Vec<Effect>,
    ) -> WorkerId {
        let worker = WorkerId {
            generation: id,
            slot,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let ready_at = match self.policy.ready {
            ReadyRule::Delay(d) => Some(now + d),
            _ => None,
        };
        let state = WState::Starting {
            deadline: now + self.policy.ready_timeout,
            ready_at,
            doomed: None,
            gate: Gate::Signal,
        };
        let origin = match self.gens.get_mut(&id) {
            Some(g) => {
                g.workers.push(Worker::new(worker, state, now));
                g.origin
            }
            None => return worker,
        };
        fx.push(Effect::Spawn {
            worker,
            exe,
            origin,
        });
        worker
    }

    fn on_spawned(&mut self, now: Instant, worker: WorkerId, pid: Pid, fx: &mut Vec<Effect>) {
        let exec = self.policy.ready == ReadyRule::Exec;
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            // Cancelled meanwhile: it must not run.
            fx.push(Effect::Kill { worker, pid });
            return;
        };
        let (origin, gid) = (g.origin, g.id);
        let on_spawn = std::mem::take(&mut g.on_spawn);
        g.last_pid = pid.as_raw_pid();
        let Some(w) = g.worker_mut(worker) else {
            fx.push(Effect::Kill { worker, pid });
            return;
        };
        w.pid = Some(pid);
        w.spawned = true;
        // Until its channel closes, a native child's channel is open; a
        // systemd-mode child has none, and never speaks on one.
        w.channel_open = true;
        let killing = matches!(w.state, WState::Killing { .. });
        fx.push(Effect::Emit(Event::Spawned {
            generation: gid,
            slot: worker.slot,
            pid: pid.as_raw_pid(),
            origin,
            pinned: origin != Origin::Start && origin != Origin::Upgrade,
        }));
        if killing {
            fx.push(Effect::Kill { worker, pid });
            return;
        }
        for t in on_spawn {
            answer(
                fx,
                t,
                UpgradeOutcome::Started {
                    generation: gid,
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
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        g.workers.retain(|w| w.id != worker);
        let failure = FailureReason::SpawnFailed { error };
        match g.role {
            Role::Rolling { .. } => {
                // A generation that never got a process does not use up a
                // number.
                if !g.workers.iter().any(|w| w.spawned) && self.next_gen == worker.generation + 1 {
                    self.next_gen = worker.generation;
                }
                self.fail_attempt(now, worker.generation, failure, fx);
            }
            // A slot restart or a replacement that could not start: the
            // slot's backoff tries again.
            Role::Serving { .. } => self.slot_failed(now, worker, fx),
            _ => {}
        }
        self.forget_if_gone(worker.generation);
    }

    /// The worker gave its readiness signal: it is ready, or settles, or is
    /// probed first.
    fn worker_ready(
        &mut self,
        now: Instant,
        worker: WorkerId,
        via: ReadyVia,
        fx: &mut Vec<Effect>,
    ) {
        let settle = self.policy.ready_settle;
        let Some(w) = self
            .gens
            .get_mut(&worker.generation)
            .and_then(|g| g.worker_mut(worker))
        else {
            return;
        };
        let WState::Starting {
            doomed: None,
            gate: gate @ Gate::Signal,
            ..
        } = &mut w.state
        else {
            return;
        };
        if let Some(d) = settle {
            *gate = Gate::Settling {
                until: now + d,
                via,
            };
            return;
        }
        self.worker_settled_via(now, worker, via, fx);
    }

    fn worker_settled(&mut self, now: Instant, worker: WorkerId, fx: &mut Vec<Effect>) {
        let via = self
            .gens
            .get(&worker.generation)
            .and_then(|g| g.worker(worker))
            .and_then(|w| match &w.state {
                WState::Starting {
                    gate: Gate::Settling { via, .. },
                    ..
                } => Some(*via),
                _ => None,
            });
        if let Some(via) = via {
            self.worker_settled_via(now, worker, via, fx);
        }
    }

    /// Signalled and settled: probed, or ready.
    fn worker_settled_via(
        &mut self,
        now: Instant,
        worker: WorkerId,
        via: ReadyVia,
        fx: &mut Vec<Effect>,
    ) {
        if self.policy.ready_probe {
            if let Some(WState::Starting { gate, .. }) = self
                .gens
                .get_mut(&worker.generation)
                .and_then(|g| g.worker_mut(worker))
                .map(|w| &mut w.state)
            {
                *gate = Gate::Probing {
                    via,
                    next: Some(now),
                    last_failure: None,
                };
            }
            self.start_probe(worker, fx);
            return;
        }
        self.worker_serves(now, worker, via, fx);
    }

    fn start_probe(&mut self, worker: WorkerId, fx: &mut Vec<Effect>) {
        let Some(w) = self
            .gens
            .get_mut(&worker.generation)
            .and_then(|g| g.worker_mut(worker))
        else {
            return;
        };
        let Some(pid) = w.pid else { return };
        if let WState::Starting {
            gate: Gate::Probing { next, .. },
            doomed: None,
            ..
        } = &mut w.state
            && next.take().is_some()
        {
            fx.push(Effect::Probe { worker, pid });
        }
    }

    fn probe_done(
        &mut self,
        now: Instant,
        worker: WorkerId,
        ok: bool,
        detail: String,
        fx: &mut Vec<Effect>,
    ) {
        let Some(w) = self
            .gens
            .get_mut(&worker.generation)
            .and_then(|g| g.worker_mut(worker))
        else {
            return;
        };
        let pid = w.pid.map_or(0, Pid::as_raw_pid);
        let WState::Starting {
            gate:
                Gate::Probing {
                    via,
                    next: next @ None,
                    last_failure,
                },
            doomed: None,
            ..
        } = &mut w.state
        else {
            return;
        };
        if ok {
            let via = *via;
            self.worker_serves(now, worker, via, fx);
            return;
        }
        fx.push(Effect::Emit(Event::ProbeFailed {
            generation: worker.generation,
            slot: worker.slot,
            pid,
            detail: detail.clone(),
        }));
        *last_failure = Some(detail);
        *next = Some(now + PROBE_RETRY);
    }

    /// The worker passed the whole readiness rule: it serves.
    fn worker_serves(
        &mut self,
        now: Instant,
        worker: WorkerId,
        via: ReadyVia,
        fx: &mut Vec<Effect>,
    ) {
        let max_age = self.policy.max_worker_age;
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let slots = g.slots;
        let role = g.role.clone();
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        let WState::Starting { doomed: None, .. } = w.state else {
            return;
        };
        w.state = WState::Serving { since: now };
        w.ready_via = Some(via);
        w.recycle_at = max_age.map(|age| now + age + jitter(age, worker.seq));
        let pid = w.pid.map_or(0, Pid::as_raw_pid);
        let after_ms = ms(now.saturating_duration_since(w.started_at));
        let replaces = w.replaces;
        if slots > 1 || !matches!(role, Role::Rolling { .. }) {
            fx.push(Effect::Emit(Event::WorkerReady {
                generation: worker.generation,
                slot: worker.slot,
                pid,
                after_ms,
            }));
        }
        match role {
            Role::Rolling { started, canary } => {
                if g.any(state::starting) {
                    return;
                }
                self.batch_ready(now, worker.generation, started, canary, via, fx);
            }
            Role::Serving { .. } => {
                // A restarted slot serves again; a replacement lets the
                // worker it replaces go.
                if let Some(old) = replaces {
                    self.counters.recycled += 1;
                    self.retire_worker(now, old, false, fx);
                }
            }
            _ => {}
        }
    }

    /// Every worker spawned so far of a rolling generation is ready.
    fn batch_ready(
        &mut self,
        now: Instant,
        id: GenId,
        started: u32,
        canary: Canary,
        via: ReadyVia,
        fx: &mut Vec<Effect>,
    ) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        if canary == Canary::Starting
            && let Some(window) = self.policy.canary
        {
            g.role = Role::Rolling {
                started,
                canary: Canary::Serving {
                    since: now,
                    until: now + window,
                },
            };
            fx.push(Effect::Emit(Event::CanaryStarted {
                generation: id,
                pid: g.pid(),
                canary_ms: ms(window),
            }));
            return;
        }
        if started < g.slots {
            // The old workers of this batch's slots make room, then the next
            // batch starts.
            let batch_start = self
                .policy
                .rollout_batch
                .map_or(0, |k| started.saturating_sub(k));
            let first = if canary == Canary::Passed && started == 1 {
                0
            } else {
                batch_start
            };
            fx.push(Effect::Emit(Event::BatchReady {
                generation: id,
                ready: started,
                of: g.slots,
            }));
            self.retire_old_slots(now, id, first..started, fx);
            self.roll(now, id, None, fx);
            return;
        }
        self.on_ready(now, id, via, fx);
    }

    /// Retires the previous generation's workers of `slots`: paused when
    /// they can be, so that a failed rollout resumes them; drained
    /// otherwise.
    fn retire_old_slots(
        &mut self,
        now: Instant,
        successor: GenId,
        slots: std::ops::Range<u32>,
        fx: &mut Vec<Effect>,
    ) {
        let old: Vec<WorkerId> = self
            .gens
            .values()
            .filter(|g| g.id != successor && matches!(g.role, Role::Serving { .. }))
            .flat_map(|g| g.workers.iter())
            .filter(|w| w.is(state::serving) && slots.contains(&w.id.slot))
            .map(|w| w.id)
            .collect();
        for w in old {
            self.retire_worker(now, w, true, fx);
        }
    }

    /// Takes one worker out of service: pauses it (when `may_pause` and it
    /// can be paused) or drains it.
    fn retire_worker(
        &mut self,
        now: Instant,
        worker: WorkerId,
        may_pause: bool,
        fx: &mut Vec<Effect>,
    ) {
        let timeout = self.policy.drain_timeout;
        let sig = self.policy.drain_signal;
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        g.slot_restarts.remove(&worker.slot);
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        let Some(pid) = w.pid else {
            // Not started yet: it will be killed as it arrives.
            w.state = WState::Killing {
                deadline: now + KILL_GRACE,
            };
            return;
        };
        if may_pause && w.can_pause() {
            w.state = WState::Paused { since: now };
            fx.push(Effect::Pause { worker, pid });
            fx.push(Effect::Emit(Event::WorkerPaused {
                generation: worker.generation,
                slot: worker.slot,
                pid: pid.as_raw_pid(),
            }));
            return;
        }
        drain_worker(w, now, timeout, sig, fx);
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
                if self.pause_generation(now, p, fx) {
                    fallback = Fallback::Standby(p);
                } else {
                    self.drain_generation(now, p, KillCause::Shutdown, fx);
                }
            }
            self.enforce_max_draining(now, fx);
            if let Some(g) = self.gens.get_mut(&id) {
                g.role = Role::Probation {
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
            g.role = Role::Serving { since: now };
        }
        for p in &previous {
            self.drain_generation(now, *p, KillCause::Shutdown, fx);
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
        let mut pids: Vec<(u32, Pid)> = g
            .workers
            .iter()
            .filter(|w| w.is(state::serving))
            .filter_map(|w| w.pid.map(|p| (w.id.slot, p)))
            .collect();
        pids.sort_by_key(|(slot, _)| *slot);
        if self.last_good != Some(pin) {
            self.previous_good = self.last_good;
            self.last_good = Some(pin);
        }
        let upgrade = replaced || matches!(origin, Origin::Upgrade | Origin::Rollback);
        if upgrade {
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
            // Once the upgrade is done, never before: nothing waits for it.
            if upgrade && self.policy.after_upgrade {
                fx.push(Effect::AfterUpgrade {
                    generation: id,
                    pids: pids.into_iter().map(|(_, p)| p).collect(),
                });
            }
        }
        self.after_attempt(now, fx);
    }

    /// Pauses every worker of generation `id` for a successor's probation.
    /// Returns false when one of them cannot be paused (it never spoke
    /// protocol version 2); then nothing is paused.
    fn pause_generation(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) -> bool {
        let Some(g) = self.gens.get_mut(&id) else {
            return false;
        };
        let live: Vec<&Worker> = g.workers.iter().filter(|w| w.pid.is_some()).collect();
        if live.is_empty() || !live.iter().all(|w| w.can_pause() || w.is(state::paused)) {
            return false;
        }
        g.role = Role::Standby { since: now };
        g.slot_restarts.clear();
        for w in g.workers.iter_mut() {
            if let (Some(pid), WState::Serving { .. }) = (w.pid, &w.state) {
                w.state = WState::Paused { since: now };
                fx.push(Effect::Pause { worker: w.id, pid });
            }
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
        let Role::Probation {
            since, fallback, ..
        } = g.role
        else {
            return;
        };
        g.role = Role::Serving { since };
        fx.push(Effect::Emit(Event::ProbationPassed {
            generation: id,
            pid: g.pid(),
        }));
        if let Fallback::Standby(s) = fallback
            && self
                .gens
                .get(&s)
                .is_some_and(|g| matches!(g.role, Role::Standby { .. }))
        {
            self.drain_generation(now, s, KillCause::Shutdown, fx);
            self.enforce_max_draining(now, fx);
        }
        self.went_live(now, id, true, fx);
    }

    fn pass_canary(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let Role::Rolling {
            started,
            canary: Canary::Serving { .. },
        } = g.role
        else {
            return;
        };
        g.role = Role::Rolling {
            started,
            canary: Canary::Passed,
        };
        fx.push(Effect::Emit(Event::CanaryPassed {
            generation: id,
            pid: g.pid(),
        }));
        let via = g
            .workers
            .iter()
            .find_map(|w| w.ready_via)
            .unwrap_or(ReadyVia::Channel);
        self.batch_ready(now, id, started, Canary::Passed, via, fx);
    }

    /// Takes back generation `id` after it went live (on probation, or as a
    /// canary) and goes back to what served before it.
    fn roll_back(&mut self, now: Instant, id: GenId, failure: FailureReason, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let (since, fallback) = match g.role {
            Role::Probation {
                since, fallback, ..
            } => (since, Some(fallback)),
            Role::Rolling {
                canary: Canary::Serving { since, .. },
                ..
            } => (since, None),
            _ => return,
        };
        let lived_ms = ms(now.saturating_duration_since(since));
        let pid = g.pid();
        let waiters = std::mem::take(&mut g.waiters);
        self.kill_generation(now, id, KillCause::RolledBack, fx);

        let serving = match fallback {
            // A canary served beside the old pool, which serves on.
            None => self.serving(),
            Some(Fallback::Standby(s)) if self.resume_generation(now, s, fx) => Some(s),
            Some(fb) => {
                // Nothing to resume: start the executable that served before
                // the upgrade. The listeners queue connections meanwhile.
                let pin = match fb {
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
        fx.push(Effect::Emit(Event::RolledBack {
            generation: id,
            pid,
            failure: failure.clone(),
            lived_ms,
            resumed: serving.filter(|s| self.gens.get(s).is_some_and(Generation::is_serving)),
        }));
        self.counters.rollbacks += 1;
        self.last_upgrade = Some(LastUpgrade {
            generation: Some(id),
            result: LastResult::RolledBack,
            failure: Some(failure.clone()),
            at: now,
        });
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

    /// Resumes a generation on standby. Returns false when nothing of it is
    /// left to resume.
    fn resume_generation(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) -> bool {
        let Some(g) = self.gens.get_mut(&id) else {
            return false;
        };
        if !matches!(g.role, Role::Standby { .. }) || !g.any(state::paused) {
            return false;
        }
        g.role = Role::Serving { since: now };
        let pid = g.pid();
        self.restore_pool(now, id, fx);
        fx.push(Effect::Emit(Event::Resumed {
            generation: id,
            pid,
        }));
        true
    }

    /// After a failed rollout or a rollback: the old pool serves in full
    /// again. Paused workers resume; slots whose worker was drained get a new
    /// one from the generation's executable.
    fn restore_pool(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let mut covered = BTreeSet::new();
        for w in g.workers.iter_mut() {
            match (&w.state, w.pid) {
                (WState::Paused { .. }, Some(pid)) if w.channel_open => {
                    w.state = WState::Serving { since: now };
                    fx.push(Effect::Resume { worker: w.id, pid });
                    covered.insert(w.id.slot);
                }
                (WState::Serving { .. } | WState::Starting { .. }, _) if w.present() => {
                    covered.insert(w.id.slot);
                }
                _ => {}
            }
        }
        let (slots, pin) = (g.slots, g.pin);
        for slot in (0..slots).filter(|s| !covered.contains(s)) {
            self.spawn_worker(now, id, slot, Exe::Pinned(pin), fx);
        }
    }

    /// A generation that had not gone live failed: kill what is left of it,
    /// answer its clients, and decide what follows.
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
        if matches!(
            g.role,
            Role::Rolling {
                canary: Canary::Serving { .. },
                ..
            }
        ) {
            // A canary that served is taken back like a probation.
            return self.roll_back(now, id, failure, fx);
        }
        if !matches!(g.role, Role::Rolling { .. }) {
            return;
        }
        let waiters = std::mem::take(&mut g.waiters);
        let on_spawn = std::mem::take(&mut g.on_spawn);
        let origin = g.origin;
        let spawned = g.workers.iter().any(|w| w.spawned);
        // The old pool takes back the slots it lent to this rollout first,
        // so that its paused workers accept again before any new one stops.
        if let Some(old) = self.serving() {
            self.restore_pool(now, old, fx);
        }
        self.retire_failed_rollout(now, id, fx);
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
        self.attempt_failed(now, serving.is_some(), fx);
    }

    /// After an attempt failed: tell the service manager the reload is over
    /// (or what hotsup is doing), then carry on as after any attempt.
    fn attempt_failed(&mut self, now: Instant, serving: bool, fx: &mut Vec<Effect>) {
        if self.shutdown.is_none() {
            let line = self.status_line();
            if serving {
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
        // While a check runs (a crash restart failed meanwhile), the
        // follow-up waits for it.
        if self.checking.is_none()
            && let Some(waiters) = self.pending.take()
        {
            fx.push(Effect::Emit(Event::UpgradeRequested {
                source: Source::Supervisor,
            }));
            self.begin_upgrade(now, waiters, fx);
            return;
        }
        if !self.anything_serving() {
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
        let delay = backoff(self.crashes);
        self.crashes = self.crashes.saturating_add(1);
        fx.push(Effect::Emit(Event::RestartScheduled {
            delay_ms: ms(delay),
            attempt: self.crashes,
        }));
        self.restart_at = Some(now + delay);
    }

    /// Asks every live worker of a generation to finish and exit before the
    /// drain deadline. A worker that serves, or that said it was ready and
    /// is still in its settle time or `--ready-probe` (it may already accept
    /// from the shared listeners), drains; one still starting serves
    /// nothing yet and is killed with `starting`.
    fn drain_generation(
        &mut self,
        now: Instant,
        id: GenId,
        starting: KillCause,
        fx: &mut Vec<Effect>,
    ) {
        let timeout = self.policy.drain_timeout;
        let sig = self.policy.drain_signal;
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.role = Role::Retiring;
        g.slot_restarts.clear();
        for w in g.workers.iter_mut().filter(|w| w.present()) {
            match w.state {
                WState::Serving { .. }
                | WState::Paused { .. }
                | WState::Starting {
                    doomed: None,
                    gate: Gate::Settling { .. } | Gate::Probing { .. },
                    ..
                } => drain_worker(w, now, timeout, sig, fx),
                WState::Starting { .. } => kill_worker(w, now, starting, fx),
                WState::Draining { .. } | WState::Killing { .. } => {}
            }
        }
        self.forget_if_gone(id);
    }

    /// The new workers of a rollout that failed: drained, not killed, where
    /// they may have accepted (a sibling failed, not they).
    fn retire_failed_rollout(&mut self, now: Instant, id: GenId, fx: &mut Vec<Effect>) {
        self.drain_generation(now, id, KillCause::FailedStart, fx);
        self.enforce_max_draining(now, fx);
    }

    /// SIGKILLs every worker of a generation and waits to reap them.
    fn kill_generation(&mut self, now: Instant, id: GenId, cause: KillCause, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        g.role = Role::Retiring;
        g.slot_restarts.clear();
        for w in g.workers.iter_mut().filter(|w| w.present()) {
            if !matches!(w.state, WState::Killing { .. }) || w.pid.is_none() {
                kill_worker(w, now, cause, fx);
            }
        }
        self.forget_if_gone(id);
    }

    /// Removes a generation none of whose workers is left.
    fn forget_if_gone(&mut self, id: GenId) {
        if let Some(g) = self.gens.get_mut(&id) {
            g.forget_dead();
            if !g.alive() && !matches!(g.role, Role::Serving { .. }) {
                self.gens.remove(&id);
            }
        }
    }

    /// Kills the oldest draining generations beyond `--max-draining`.
    fn enforce_max_draining(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let draining: Vec<GenId> = self
            .gens
            .values()
            .filter(|g| matches!(g.role, Role::Retiring) && g.any(state::draining))
            .map(|g| g.id)
            .collect();
        let excess = draining.len().saturating_sub(self.policy.max_draining);
        for id in draining.into_iter().take(excess) {
            self.kill_generation(now, id, KillCause::MaxDraining, fx);
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
        if let Some(c) = self.checking.take() {
            waiters.extend(c.waiters.into_iter().map(ticket_of));
            fx.push(Effect::CancelCheck {
                generation: c.generation,
            });
        }
        for t in waiters {
            answer(fx, t, UpgradeOutcome::Superseded);
        }
        self.shutdown = Some(how);
        self.restart_at = None;
        if self.exit_code.is_none() {
            self.exit_code = Some(0);
        }
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for id in ids {
            match how {
                Shutdown::Forced => self.kill_generation(now, id, KillCause::Shutdown, fx),
                // Every worker drains at once, under one deadline; one that
                // serves nothing yet is killed.
                Shutdown::Graceful => self.drain_generation(now, id, KillCause::Shutdown, fx),
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
        let role = g.role.clone();
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        w.pid = None;
        let wstate = w.state.clone();
        // Whatever the main process left behind goes with it: a leftover
        // could hold listener copies and accept connections nobody serves.
        fx.push(Effect::KillLeftovers { worker, pid });
        let id = worker.generation;
        let p = pid.as_raw_pid();
        match wstate {
            WState::Killing { .. } => fx.push(Effect::Emit(Event::Reaped {
                generation: id,
                slot: worker.slot,
                pid: p,
                status,
            })),
            WState::Draining { since, .. } => {
                // Exiting by the drain signal, or with 128+signal as JVMs and
                // Node do when they handle it, is a clean drain.
                let sig = self.policy.drain_signal;
                let clean = status.success()
                    || status.code == Some(128 + sig)
                    || status.signal == Some(sig);
                fx.push(Effect::Emit(Event::Drained {
                    generation: id,
                    slot: worker.slot,
                    pid: p,
                    status,
                    clean,
                    drain_ms: ms(now.saturating_duration_since(since)),
                }));
                if self.shutdown.is_some() && !clean && self.exit_code == Some(0) {
                    self.exit_code = Some(1);
                }
            }
            WState::Starting { .. } => match role {
                Role::Rolling { .. } => {
                    self.fail_attempt(now, id, FailureReason::ExitedBeforeReady { status }, fx)
                }
                Role::Serving { .. } => {
                    fx.push(Effect::Emit(Event::WorkerFailed {
                        generation: id,
                        slot: worker.slot,
                        pid: p,
                        failure: FailureReason::ExitedBeforeReady { status },
                    }));
                    self.slot_failed(now, worker, fx);
                }
                _ => {}
            },
            WState::Serving { since } | WState::Paused { since } => match role {
                Role::Rolling { .. } => {
                    self.fail_attempt(now, id, FailureReason::ExitedBeforeReady { status }, fx)
                }
                Role::Probation { .. } => {
                    self.roll_back(now, id, FailureReason::ExitedOnProbation { status }, fx)
                }
                Role::Serving { .. } => {
                    self.on_serving_exit(now, worker, p, since, status, fx);
                }
                Role::Standby { .. } => {
                    // Its successor's rollback will start its executable
                    // instead.
                    fx.push(Effect::Emit(Event::Crashed {
                        generation: id,
                        slot: worker.slot,
                        pid: p,
                        status,
                        successor: self.attempt(),
                    }));
                }
                Role::Retiring => {}
            },
        }
        self.forget_if_gone(id);
    }

    fn on_serving_exit(
        &mut self,
        now: Instant,
        worker: WorkerId,
        pid: i32,
        since: Instant,
        status: ExitInfo,
        fx: &mut Vec<Effect>,
    ) {
        let id = worker.generation;
        let Some(g) = self.gens.get_mut(&id) else {
            return;
        };
        let others = g.workers.iter().any(|w| {
            w.id != worker
                && w.present()
                && !matches!(w.state, WState::Draining { .. } | WState::Killing { .. })
        });
        if self.shutdown.is_none() && others && worker.slot < g.slots {
            // One worker of a pool: only its slot restarts; the generation
            // serves on.
            fx.push(Effect::Emit(Event::Crashed {
                generation: id,
                slot: worker.slot,
                pid,
                status,
                successor: None,
            }));
            let r = g.slot_restarts.entry(worker.slot).or_default();
            if now.saturating_duration_since(since) >= BACKOFF_RESET_AFTER {
                r.crashes = 0;
            }
            self.slot_failed(now, worker, fx);
            return;
        }
        if others {
            // Scaled away meanwhile: nothing to restart.
            return;
        }
        // The whole generation is gone.
        g.role = Role::Retiring;
        g.slot_restarts.clear();
        if now.saturating_duration_since(since) >= BACKOFF_RESET_AFTER {
            self.crashes = 0;
        }
        if self.shutdown.is_some() {
            fx.push(Effect::Emit(Event::Drained {
                generation: id,
                slot: worker.slot,
                pid,
                status,
                clean: status.success(),
                drain_ms: 0,
            }));
            return;
        }
        let successor = self.attempt();
        fx.push(Effect::Emit(Event::Crashed {
            generation: id,
            slot: worker.slot,
            pid,
            status,
            successor,
        }));
        if successor.is_some() {
            // The generation rolling out (or on probation) takes over.
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

    /// A worker of a serving generation crashed or could not start: its
    /// slot tries again after its own backoff.
    fn slot_failed(&mut self, now: Instant, worker: WorkerId, fx: &mut Vec<Effect>) {
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        if worker.slot >= g.slots || self.shutdown.is_some() {
            return;
        }
        // A replacement that failed leaves the worker it was to replace in
        // place.
        let replacing = g
            .workers
            .iter()
            .any(|w| w.id.slot == worker.slot && w.id != worker && w.is(state::serving));
        if replacing {
            return;
        }
        let r = g.slot_restarts.entry(worker.slot).or_default();
        if r.at.is_some() {
            return;
        }
        let delay = backoff(r.crashes);
        r.crashes = r.crashes.saturating_add(1);
        r.at = Some(now + delay);
        fx.push(Effect::Emit(Event::SlotRestartScheduled {
            generation: worker.generation,
            slot: worker.slot,
            delay_ms: ms(delay),
            attempt: r.crashes,
        }));
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
        let role = g.role.clone();
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        let Some(pid) = w.pid.map(Pid::as_raw_pid) else {
            return;
        };
        let wstate = w.state.clone();
        // What the worker's state alone cannot settle is decided below, once
        // the borrow of the generation has ended.
        let follow = match event {
            WorkerEvent::HandedOff {
                listeners,
                elapsed_us,
            } => {
                fx.push(Effect::Emit(Event::HandedOff {
                    generation: id,
                    slot: worker.slot,
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
                    slot: worker.slot,
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
                    slot: worker.slot,
                    pid,
                    text,
                }));
                None
            }
            WorkerEvent::Unhealthy(reason) => {
                w.unhealthy = Some(reason.clone());
                fx.push(Effect::Emit(Event::Unhealthy {
                    generation: id,
                    slot: worker.slot,
                    pid,
                    reason: reason.clone(),
                }));
                let failure = FailureReason::Unhealthy { reason };
                match role {
                    Role::Probation { .. } => Some(Follow::RollBack(failure)),
                    Role::Rolling { .. } => Some(Follow::Fail(failure)),
                    _ => None,
                }
            }
            WorkerEvent::Unknown(_) => None,
            WorkerEvent::Malformed(detail) => {
                fx.push(Effect::Emit(Event::MalformedMessage {
                    generation: id,
                    slot: worker.slot,
                    pid,
                    detail: detail.clone(),
                }));
                match (&role, &wstate) {
                    (Role::Rolling { .. }, WState::Starting { .. }) => {
                        Some(Follow::Fail(FailureReason::MalformedMessage { detail }))
                    }
                    _ => None,
                }
            }
            WorkerEvent::ChannelClosed(detail) => {
                w.channel_open = false;
                w.spoke = false;
                fx.push(Effect::Emit(Event::ChannelClosed {
                    generation: id,
                    slot: worker.slot,
                    pid,
                    detail: detail.clone(),
                }));
                if let WState::Starting {
                    deadline,
                    doomed: ref mut doomed @ None,
                    ..
                } = w.state
                {
                    *doomed = Some(FailureReason::ChannelClosed { detail });
                    if let WState::Starting { deadline: d, .. } = &mut w.state {
                        *d = deadline.min(now + CLOSED_GRACE);
                    }
                }
                None
            }
            WorkerEvent::PauseFailed(_) => {
                // It keeps accepting: no harm while its successor rolls out
                // or is on probation, but it cannot be resumed, only
                // replaced.
                w.channel_open = false;
                matches!(wstate, WState::Paused { .. }).then_some(Follow::Retire)
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
            Some(Follow::Retire) => {
                if let Some(w) = self.gens.get_mut(&id).and_then(|g| g.worker_mut(worker)) {
                    drain_worker(
                        w,
                        now,
                        self.policy.drain_timeout,
                        self.policy.drain_signal,
                        fx,
                    );
                }
                if matches!(role, Role::Standby { .. }) {
                    self.drain_generation(now, id, KillCause::Shutdown, fx);
                    self.enforce_max_draining(now, fx);
                }
            }
            Some(Follow::Replace) => {
                // Paused for good. Killed while it serves, its exit is a
                // crash, which restarts its slot or the last good executable.
                if let Some(w) = self.gens.get(&id).and_then(|g| g.worker(worker))
                    && let Some(p) = w.pid
                {
                    fx.push(Effect::Emit(Event::Killed {
                        generation: id,
                        slot: worker.slot,
                        pid: p.as_raw_pid(),
                        cause: KillCause::ResumeFailed,
                    }));
                    fx.push(Effect::Kill { worker, pid: p });
                }
            }
        }
    }

    // ----- time -----

    fn expire(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if self.shutdown.is_none() && !self.anything_serving() && self.attempt().is_none() {
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
        // Each step may change states; take the due items one at a time
        // until nothing more is due.
        while let Some(due) = self.next_due(now) {
            match due {
                Due::DelayReady(w) => {
                    self.worker_ready(now, w, ReadyVia::Delay, fx);
                    // Still waiting for its signal: it could not be ready
                    // (doomed).
                    let stuck = self
                        .gens
                        .get(&w.generation)
                        .and_then(|g| g.worker(w))
                        .is_some_and(|w| {
                            matches!(
                                w.state,
                                WState::Starting {
                                    gate: Gate::Signal,
                                    ..
                                }
                            )
                        });
                    if stuck {
                        self.worker_not_ready(now, w, fx);
                    }
                }
                Due::NotReady(w) => self.worker_not_ready(now, w, fx),
                Due::Settled(w) => self.worker_settled(now, w, fx),
                Due::Probe(w) => self.start_probe(w, fx),
                Due::Canary(id) => self.pass_canary(now, id, fx),
                Due::Probation(id) => self.pass_probation(now, id, fx),
                Due::Drain(w) => {
                    if let Some(wk) = self
                        .gens
                        .get_mut(&w.generation)
                        .and_then(|g| g.worker_mut(w))
                    {
                        kill_worker(wk, now, KillCause::DrainDeadline, fx);
                    }
                    if self.shutdown.is_some() {
                        self.exit_code = Some(1);
                    }
                }
                Due::Kill(w) => self.kill_again(now, w, fx),
                Due::SlotRestart(id, slot) => {
                    let Some(g) = self.gens.get_mut(&id) else {
                        continue;
                    };
                    if let Some(r) = g.slot_restarts.get_mut(&slot) {
                        r.at = None;
                    }
                    let pin = g.pin;
                    if matches!(g.role, Role::Serving { .. }) && self.shutdown.is_none() {
                        self.counters.worker_restarts += 1;
                        self.spawn_worker(now, id, slot, Exe::Pinned(pin), fx);
                    }
                }
                Due::Recycle(w) => {
                    if let Some(wk) = self
                        .gens
                        .get_mut(&w.generation)
                        .and_then(|g| g.worker_mut(w))
                    {
                        wk.recycle_at = None;
                    }
                    self.recycle(now, w, "max-worker-age".into(), fx);
                }
            }
        }
    }

    fn next_due(&self, now: Instant) -> Option<Due> {
        for g in self.gens.values() {
            match g.role {
                Role::Rolling {
                    canary: Canary::Serving { until, .. },
                    ..
                } if until <= now => return Some(Due::Canary(g.id)),
                Role::Probation { until, .. } if until <= now => {
                    return Some(Due::Probation(g.id));
                }
                _ => {}
            }
            for (slot, r) in &g.slot_restarts {
                if r.at.is_some_and(|t| t <= now) {
                    return Some(Due::SlotRestart(g.id, *slot));
                }
            }
            for w in g.workers.iter().filter(|w| w.present()) {
                let due = match &w.state {
                    WState::Starting { deadline, .. } if *deadline <= now => {
                        Some(Due::NotReady(w.id))
                    }
                    WState::Starting {
                        ready_at: Some(r),
                        doomed: None,
                        gate: Gate::Signal,
                        ..
                    } if *r <= now && w.spawned => Some(Due::DelayReady(w.id)),
                    WState::Starting {
                        doomed: None,
                        gate: Gate::Settling { until, .. },
                        ..
                    } if *until <= now => Some(Due::Settled(w.id)),
                    WState::Starting {
                        doomed: None,
                        gate: Gate::Probing { next: Some(t), .. },
                        ..
                    } if *t <= now && w.spawned => Some(Due::Probe(w.id)),
                    WState::Draining { deadline, .. } if *deadline <= now => Some(Due::Drain(w.id)),
                    WState::Killing { deadline } if *deadline <= now => Some(Due::Kill(w.id)),
                    WState::Serving { .. } if w.recycle_at.is_some_and(|t| t <= now) => {
                        Some(Due::Recycle(w.id))
                    }
                    _ => None,
                };
                if due.is_some() {
                    return due;
                }
            }
        }
        None
    }

    /// A starting worker was not ready in time (or was doomed).
    fn worker_not_ready(&mut self, now: Instant, worker: WorkerId, fx: &mut Vec<Effect>) {
        let timeout_ms = ms(self.policy.ready_timeout);
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let role = g.role.clone();
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        let failure = match &mut w.state {
            WState::Starting { doomed, gate, .. } => match (doomed.take(), gate) {
                (Some(d), _) => d,
                (
                    None,
                    Gate::Probing {
                        last_failure: Some(last),
                        ..
                    },
                ) => FailureReason::ProbeFailed {
                    timeout_ms,
                    last: last.clone(),
                },
                (None, _) => FailureReason::NotReady { timeout_ms },
            },
            _ => return,
        };
        match role {
            Role::Rolling { .. } => self.fail_attempt(now, worker.generation, failure, fx),
            _ => {
                // A slot restart or a replacement.
                let pid = w.pid.map_or(0, Pid::as_raw_pid);
                kill_worker(w, now, KillCause::FailedStart, fx);
                fx.push(Effect::Emit(Event::WorkerFailed {
                    generation: worker.generation,
                    slot: worker.slot,
                    pid,
                    failure,
                }));
                self.slot_failed(now, worker, fx);
            }
        }
    }

    /// A SIGKILLed worker that is still not reaped: its main process sleeps
    /// uninterruptibly, or left its group. Kill again; when shutting down,
    /// stop waiting for it so hotsup can exit.
    fn kill_again(&mut self, now: Instant, worker: WorkerId, fx: &mut Vec<Effect>) {
        let shutting_down = self.shutdown.is_some();
        let Some(g) = self.gens.get_mut(&worker.generation) else {
            return;
        };
        let Some(w) = g.worker_mut(worker) else {
            return;
        };
        let Some(pid) = w.pid else {
            // Never arrived: nothing to wait for.
            w.spawned = true;
            self.forget_if_gone(worker.generation);
            return;
        };
        fx.push(Effect::Kill { worker, pid });
        if shutting_down {
            fx.push(Effect::Emit(Event::Abandoned {
                generation: worker.generation,
                slot: worker.slot,
                pid: pid.as_raw_pid(),
            }));
            w.pid = None;
            self.exit_code = Some(1);
            self.forget_if_gone(worker.generation);
        } else {
            fx.push(Effect::Emit(Event::Killed {
                generation: worker.generation,
                slot: worker.slot,
                pid: pid.as_raw_pid(),
                cause: KillCause::Again,
            }));
            w.state = WState::Killing {
                deadline: now + KILL_GRACE,
            };
        }
    }

    fn release_pins(&mut self, fx: &mut Vec<Effect>) {
        let mut used: BTreeSet<PinId> = self.gens.values().map(|g| g.pin).collect();
        used.extend(self.last_good);
        used.extend(self.previous_good);
        for g in self.gens.values() {
            if let Role::Probation {
                fallback: Fallback::Pin(p),
                ..
            } = g.role
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
        if self.exited {
            return;
        }
        let Some(code) = self.exit_code else { return };
        if self.shutdown.is_none() {
            return;
        }
        // A serving generation with no worker left is gone too.
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for id in ids {
            if self.gens.get(&id).is_some_and(|g| !g.alive()) {
                self.gens.remove(&id);
            }
        }
        if !self.gens.is_empty() {
            return;
        }
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
        let serving = self.gens.values().find(|g| g.is_serving());
        let mut s = match serving {
            Some(g) => {
                let n = g.workers.iter().filter(|w| w.is(state::serving)).count();
                let who = if g.slots > 1 {
                    format!("generation {} ({n} of {} workers) serving", g.id, g.slots)
                } else {
                    format!("generation {} (pid {}) serving", g.id, g.pid())
                };
                match g.role {
                    Role::Probation { .. } => format!("{who}, on probation"),
                    _ => who,
                }
            }
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
        let since = |t: Instant| now.saturating_duration_since(t);
        Snapshot {
            uptime: since(self.started_at),
            generations: self
                .gens
                .values()
                .map(|g| {
                    let live: Vec<&Worker> = g.workers.iter().filter(|w| w.present()).collect();
                    let phase = match g.role {
                        Role::Retiring if live.iter().any(|w| w.is(state::draining)) => "draining",
                        Role::Retiring => "killing",
                        ref r => r.name(),
                    };
                    let deadline = live
                        .iter()
                        .filter_map(|w| match &w.state {
                            WState::Starting { deadline, .. }
                            | WState::Draining { deadline, .. }
                            | WState::Killing { deadline } => Some(*deadline),
                            _ => None,
                        })
                        .min();
                    GenerationSnapshot {
                        id: g.id,
                        pin: g.pin,
                        phase,
                        pids: live
                            .iter()
                            .filter_map(|w| w.pid)
                            .map(Pid::as_raw_pid)
                            .collect(),
                        age: since(g.spawned_at),
                        ready_via: g.ready_via,
                        serving_for: match g.role {
                            Role::Serving { since: s } | Role::Probation { since: s, .. } => {
                                Some(since(s))
                            }
                            _ => None,
                        },
                        deadline_in: match g.role {
                            Role::Probation { until, .. } => {
                                Some(until.saturating_duration_since(now))
                            }
                            _ => deadline.map(|d| d.saturating_duration_since(now)),
                        },
                        protocol: live.iter().map(|w| w.protocol).min().unwrap_or(1),
                        status: live.iter().find_map(|w| w.status.clone()),
                        unhealthy: live.iter().find_map(|w| w.unhealthy.clone()),
                        workers: live
                            .iter()
                            .map(|w| WorkerSnapshot {
                                id: w.id,
                                pid: w.pid.map(Pid::as_raw_pid),
                                state: w.state.name(),
                                age: since(w.started_at),
                                ready_via: w.ready_via,
                                status: w.status.clone(),
                            })
                            .collect(),
                    }
                })
                .collect(),
            last_upgrade: self.last_upgrade.clone().map(|u| LastUpgradeSnapshot {
                generation: u.generation,
                result: u.result,
                failure: u.failure,
                ago: since(u.at),
            }),
            counters: self.counters,
            last_good: self.last_good,
            previous_good: self.previous_good,
            upgrade_pending: self.pending.is_some(),
            checking: self.checking.as_ref().map(|c| c.generation),
            restart_in: self.restart_at.map(|t| t.saturating_duration_since(now)),
            workers_target: self.workers_target,
        }
    }
}

fn drain_worker(w: &mut Worker, now: Instant, timeout: Duration, sig: i32, fx: &mut Vec<Effect>) {
    let Some(pid) = w.pid else { return };
    w.state = WState::Draining {
        since: now,
        deadline: now + timeout,
    };
    let via = if w.spoke && w.channel_open {
        DrainVia::Channel {
            timeout,
            fallback: sig,
        }
    } else {
        DrainVia::Signal(sig)
    };
    fx.push(Effect::Drain {
        worker: w.id,
        pid,
        via,
    });
    fx.push(Effect::Emit(Event::Draining {
        generation: w.id.generation,
        slot: w.id.slot,
        pid: pid.as_raw_pid(),
        via: match via {
            DrainVia::Channel { .. } => "protocol".to_string(),
            DrainVia::Signal(s) => crate::signals::name(s),
        },
        timeout_ms: ms(timeout),
    }));
}

fn kill_worker(w: &mut Worker, now: Instant, cause: KillCause, fx: &mut Vec<Effect>) {
    w.state = WState::Killing {
        deadline: now + KILL_GRACE,
    };
    let Some(pid) = w.pid else {
        // Not spawned yet, or never will be: nothing to wait for once it
        // was (the shell skips a cancelled spawn; a spawn in flight is
        // killed as it arrives).
        w.spawned = true;
        return;
    };
    fx.push(Effect::Kill { worker: w.id, pid });
    fx.push(Effect::Emit(Event::Killed {
        generation: w.id.generation,
        slot: w.id.slot,
        pid: pid.as_raw_pid(),
        cause,
    }));
}

/// Crash-restart delay after `crashes` consecutive crashes.
fn backoff(crashes: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << crashes.min(16))
        .min(BACKOFF_MAX)
}

/// Up to a tenth of `age`, spread by the worker's number, so that a pool
/// started at once is not recycled at once. Deterministic, as the core
/// must be.
fn jitter(age: Duration, seq: u64) -> Duration {
    let spread = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    age / 10 * u32::try_from(spread).unwrap_or(0) / 1024
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
