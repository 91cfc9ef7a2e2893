//! What the core knows about generations and their workers. Each state
//! variant owns the data that is meaningful in it; nothing here does I/O.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustix::process::Pid;

use super::{FailureReason, GenId, Origin, PinId, ReadyVia, Ticket, WorkerId};

/// What a generation is for, at the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// Being rolled out: workers of slots below `started` were spawned, in
    /// batches; with `--canary`, the first one serves alone for a while.
    Rolling {
        started: u32,
        canary: Canary,
    },
    /// Every worker is ready; the previous generation waits on standby (or
    /// drained) until `until`.
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
    },
    /// On its way out: its workers drain or are killed.
    Retiring,
}

impl Role {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Role::Rolling { .. } => "starting",
            Role::Probation { .. } => "probation",
            Role::Serving { .. } => "serving",
            Role::Standby { .. } => "standby",
            Role::Retiring => "retiring",
        }
    }
}

/// The canary of a rollout (`--canary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Canary {
    /// No canary for this rollout.
    Off,
    /// The canary worker is starting.
    Starting,
    /// It serves beside the whole previous pool until `until`.
    Serving { since: Instant, until: Instant },
    /// It passed; the rest rolls.
    Passed,
}

/// What a rollback from probation goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Resume this paused generation.
    Standby(GenId),
    /// Start this pinned executable again.
    Pin(PinId),
}

/// The readiness rule, in order: the signal (`--ready`), then
/// `--ready-settle`, then `--ready-probe` until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// Waiting for the signal.
    Signal,
    /// Signalled; settling until `until`.
    Settling { until: Instant, via: ReadyVia },
    /// Signalled and settled; a probe runs (`next: None`), or the next one
    /// starts at `next`.
    Probing {
        via: ReadyVia,
        next: Option<Instant>,
        last_failure: Option<String>,
    },
}

/// One worker's state; each variant owns its deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WState {
    Starting {
        deadline: Instant,
        /// `--ready delay:…`: when it counts as ready.
        ready_at: Option<Instant>,
        /// Why it can no longer become ready, reported if it has not
        /// exited by its (shortened) deadline.
        doomed: Option<FailureReason>,
        /// How far it got through the readiness rule.
        gate: Gate,
    },
    Serving {
        since: Instant,
    },
    Paused {
        since: Instant,
    },
    Draining {
        since: Instant,
        deadline: Instant,
    },
    /// SIGKILL sent; past `deadline` it is sent again (or, during shutdown,
    /// the worker is abandoned).
    Killing {
        deadline: Instant,
    },
}

impl WState {
    pub(super) fn name(&self) -> &'static str {
        match self {
            WState::Starting { .. } => "starting",
            WState::Serving { .. } => "serving",
            WState::Paused { .. } => "paused",
            WState::Draining { .. } => "draining",
            WState::Killing { .. } => "killing",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub(super) id: WorkerId,
    /// Set once spawned; cleared when reaped.
    pub(super) pid: Option<Pid>,
    /// Whether `Spawned` arrived (a reaped worker has `pid: None` too).
    pub(super) spawned: bool,
    pub(super) state: WState,
    /// Whether it sent a valid message on its channel: then DRAIN goes
    /// there rather than the drain signal.
    pub(super) spoke: bool,
    /// The protocol version it answered HELLO with (1 if it never did).
    pub(super) protocol: u32,
    pub(super) channel_open: bool,
    pub(super) status: Option<String>,
    pub(super) unhealthy: Option<String>,
    pub(super) started_at: Instant,
    pub(super) ready_via: Option<ReadyVia>,
    /// `--max-worker-age`: when it is replaced.
    pub(super) recycle_at: Option<Instant>,
    /// The worker of the same slot this one replaces once ready.
    pub(super) replaces: Option<WorkerId>,
}

impl Worker {
    pub(super) fn new(id: WorkerId, state: WState, now: Instant) -> Worker {
        Worker {
            id,
            pid: None,
            spawned: false,
            state,
            spoke: false,
            protocol: 1,
            channel_open: false,
            status: None,
            unhealthy: None,
            started_at: now,
            ready_via: None,
            recycle_at: None,
            replaces: None,
        }
    }

    /// Spawned and not reaped, or about to be spawned.
    pub(super) fn present(&self) -> bool {
        self.pid.is_some() || !self.spawned
    }

    pub(super) fn can_pause(&self) -> bool {
        self.pid.is_some() && self.channel_open && self.protocol >= 2
    }

    pub(super) fn is(&self, f: fn(&WState) -> bool) -> bool {
        self.present() && f(&self.state)
    }
}

pub(super) fn starting(s: &WState) -> bool {
    matches!(s, WState::Starting { .. })
}
pub(super) fn serving(s: &WState) -> bool {
    matches!(s, WState::Serving { .. })
}
pub(super) fn paused(s: &WState) -> bool {
    matches!(s, WState::Paused { .. })
}
pub(super) fn draining(s: &WState) -> bool {
    matches!(s, WState::Draining { .. })
}

/// A slot whose worker crashed, restarting after its own backoff.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SlotRestart {
    pub(super) crashes: u32,
    pub(super) at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(super) struct Generation {
    pub(super) id: GenId,
    pub(super) pin: PinId,
    pub(super) origin: Origin,
    pub(super) spawned_at: Instant,
    pub(super) ready_via: Option<ReadyVia>,
    pub(super) role: Role,
    /// How many worker slots it has (`--workers`, or `hotsup scale`).
    pub(super) slots: u32,
    pub(super) workers: Vec<Worker>,
    /// Clients waiting for the outcome of the attempt this generation is.
    pub(super) waiters: Vec<Ticket>,
    /// `--no-wait` clients, answered once its first worker has started.
    pub(super) on_spawn: Vec<Ticket>,
    pub(super) slot_restarts: BTreeMap<u32, SlotRestart>,
    /// The pid of its most recently started worker, for logs once its
    /// workers are gone.
    pub(super) last_pid: i32,
}

impl Generation {
    /// Whether any of its workers is spawned and not reaped, or about to be
    /// spawned.
    pub(super) fn alive(&self) -> bool {
        self.workers.iter().any(Worker::present)
    }

    /// The pid of its first live worker, or of the last one that lived
    /// (for logs and status).
    pub(super) fn pid(&self) -> i32 {
        self.workers
            .iter()
            .find_map(|w| w.pid)
            .map_or(self.last_pid, Pid::as_raw_pid)
    }

    pub(super) fn live(&self) -> impl Iterator<Item = (WorkerId, Pid)> + '_ {
        self.workers.iter().filter_map(|w| w.pid.map(|p| (w.id, p)))
    }

    pub(super) fn worker(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.iter().find(|w| w.id == id)
    }

    pub(super) fn worker_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    pub(super) fn is_attempt(&self) -> bool {
        matches!(self.role, Role::Rolling { .. } | Role::Probation { .. })
    }

    pub(super) fn is_serving(&self) -> bool {
        matches!(self.role, Role::Serving { .. } | Role::Probation { .. })
    }

    pub(super) fn any(&self, f: fn(&WState) -> bool) -> bool {
        self.workers.iter().any(|w| w.is(f))
    }

    /// Drops the workers that are gone for good.
    pub(super) fn forget_dead(&mut self) {
        self.workers.retain(Worker::present);
    }
}

/// The core's state as `status` shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime: Duration,
    pub generations: Vec<GenerationSnapshot>,
    pub last_upgrade: Option<LastUpgradeSnapshot>,
    pub counters: super::Counters,
    pub last_good: Option<PinId>,
    pub previous_good: Option<PinId>,
    pub upgrade_pending: bool,
    /// The generation whose upgrade is being checked (`--check`).
    pub checking: Option<GenId>,
    pub restart_in: Option<Duration>,
    /// `--workers`, or what `hotsup scale` set.
    pub workers_target: u32,
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
    pub workers: Vec<WorkerSnapshot>,
}

#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub id: WorkerId,
    pub pid: Option<i32>,
    /// `starting`, `serving`, `paused`, `draining` or `killing`.
    pub state: &'static str,
    pub age: Duration,
    pub ready_via: Option<ReadyVia>,
    pub status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LastUpgradeSnapshot {
    pub generation: Option<GenId>,
    pub result: super::LastResult,
    pub failure: Option<FailureReason>,
    pub ago: Duration,
}
