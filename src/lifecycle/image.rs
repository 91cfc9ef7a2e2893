//! The core's whole state as plain data, for `hotsup upgrade --self`: the
//! running hotsup exports it, the new binary imports it after `execve`, and
//! goes on exactly where the old one stopped.
//!
//! The image mirrors the state types field by field instead of serializing
//! them directly, so that the format is explicit: a change of the core's
//! internals cannot silently change what a self-upgrade carries, and a
//! reader that does not know a field refuses the image (every struct denies
//! unknown fields) instead of dropping it.
//!
//! `Instant`s do not survive `execve` as values, but the clock does
//! (`CLOCK_MONOTONIC` is system-wide): every instant is stored as signed
//! nanoseconds from the moment of the export ([`At`]), and the importer
//! gives the instant that moment is in its own process. A deadline that fell
//! due during the exec is due at once after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::process::Pid;
use serde::{Deserialize, Serialize};

use super::state::{Canary, Gate, Generation, Role, SlotRestart, WState, Worker};
use super::{
    Core, Counters, FailureReason, Fallback, GenId, LastResult, LastUpgrade, Origin, PinId,
    ReadyVia, Reply, Shutdown, Ticket, WorkerId,
};

/// An instant, as nanoseconds after (or, negative, before) the export.
pub type At = i64;

/// Why the core cannot be handed over right now: something is in progress
/// whose outcome a client or a process of the old hotsup waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    ShuttingDown,
    /// An upgrade (or a rollback, or a crash restart) is rolling out.
    Upgrading(GenId),
    /// The generation is on probation (its predecessor may be on standby).
    Probation(GenId),
    /// A worker of a serving generation is starting: a slot restart, a
    /// replacement or a scale-up, whose handoff may be under way.
    WorkerStarting {
        generation: GenId,
        slot: u32,
    },
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::ShuttingDown => f.write_str("hotsup is shutting down"),
            Busy::Upgrading(g) => {
                write!(f, "an upgrade is in progress (generation {g} is starting)")
            }
            Busy::Probation(g) => write!(f, "generation {g} is on probation"),
            Busy::WorkerStarting { generation, slot } => write!(
                f,
                "a worker of generation {generation} (slot {slot}) is starting"
            ),
        }
    }
}

/// Why an image cannot become a core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent lifecycle state: {0}")]
pub struct ImportError(String);

impl Core {
    /// What keeps the core from being handed over now, if anything. Such a
    /// state is exported losslessly all the same; the shell refuses to
    /// hand it over, because the old process's clients and helper
    /// processes that wait on it cannot follow.
    pub fn busy_for_handover(&self) -> Option<Busy> {
        if self.shutdown.is_some() {
            return Some(Busy::ShuttingDown);
        }
        // An upgrade's `--check` runs (its waiters and its process are the
        // old hotsup's): not in the image.
        if let Some(c) = &self.checking {
            return Some(Busy::Upgrading(c.generation));
        }
        for g in self.gens.values() {
            match g.role {
                Role::Rolling { .. } => return Some(Busy::Upgrading(g.id)),
                Role::Probation { .. } => return Some(Busy::Probation(g.id)),
                _ => {}
            }
            if let Some(w) = g.workers.iter().find(|w| w.is(super::state::starting)) {
                return Some(Busy::WorkerStarting {
                    generation: g.id,
                    slot: w.id.slot,
                });
            }
        }
        None
    }

    /// The whole state, with instants relative to `now`.
    pub fn export(&self, now: Instant) -> CoreImage {
        let at = |t: Instant| at(now, t);
        CoreImage {
            workers_target: self.workers_target,
            generations: self.gens.values().map(|g| export_gen(g, now)).collect(),
            next_generation: self.next_gen,
            next_seq: self.next_seq,
            next_pin: self.next_pin,
            pins: self.pins.iter().map(|p| p.0).collect(),
            last_good: self.last_good.map(|p| p.0),
            previous_good: self.previous_good.map(|p| p.0),
            pending: self
                .pending
                .as_ref()
                .map(|v| v.iter().map(|r| ReplyImage::from(*r)).collect()),
            restart_at: self.restart_at.map(at),
            crashes: self.crashes,
            ever_ready: self.ever_ready,
            failed_starts: self.failed_starts,
            shutdown: self.shutdown.map(|s| match s {
                Shutdown::Graceful => ShutdownImage::Graceful,
                Shutdown::Forced => ShutdownImage::Forced,
            }),
            exit_code: self.exit_code,
            exited: self.exited,
            stop_waiters: self.stop_waiters.iter().map(|t| t.0).collect(),
            last_upgrade: self.last_upgrade.as_ref().map(|u| LastUpgradeImage {
                generation: u.generation,
                result: u.result,
                failure: u.failure.clone(),
                at: at(u.at),
            }),
            counters: CountersImage::from(self.counters),
            started_at: at(self.started_at),
        }
    }

    /// A core in the state `image` describes, with `now` the instant the
    /// export's moment is in this process. The policy is this process's own
    /// (from the command line, parsed anew).
    pub fn import(
        policy: super::Policy,
        image: &CoreImage,
        now: Instant,
    ) -> Result<Core, ImportError> {
        let t = |a: At| instant(now, a);
        if image.workers_target == 0 {
            return Err(bad("a pool of no worker"));
        }
        let mut gens = BTreeMap::new();
        for g in &image.generations {
            let g = import_gen(g, now)?;
            if gens.insert(g.id, g).is_some() {
                return Err(bad("a generation appears twice"));
            }
        }
        let max_gen = gens.keys().max().copied().unwrap_or(0);
        if image.next_generation <= max_gen {
            return Err(bad("the next generation number is already used"));
        }
        let seqs: Vec<u64> = gens
            .values()
            .flat_map(|g| g.workers.iter().map(|w| w.id.seq))
            .collect();
        if seqs.iter().any(|s| *s >= image.next_seq) {
            return Err(bad("the next worker number is already used"));
        }
        let pins: BTreeSet<PinId> = image.pins.iter().copied().map(PinId).collect();
        let used = gens
            .values()
            .map(|g| g.pin)
            .chain(image.last_good.map(PinId))
            .chain(image.previous_good.map(PinId));
        for p in used {
            if !pins.contains(&p) {
                return Err(bad(&format!("executable {} is used but not pinned", p.0)));
            }
        }
        if pins.iter().any(|p| p.0 >= image.next_pin) {
            return Err(bad("the next pin number is already used"));
        }
        Ok(Core {
            checking: None,
            policy,
            workers_target: image.workers_target,
            gens,
            next_gen: image.next_generation,
            next_seq: image.next_seq,
            next_pin: image.next_pin,
            pins,
            last_good: image.last_good.map(PinId),
            previous_good: image.previous_good.map(PinId),
            pending: image
                .pending
                .as_ref()
                .map(|v| v.iter().map(|r| Reply::from(*r)).collect()),
            restart_at: image.restart_at.map(t),
            crashes: image.crashes,
            ever_ready: image.ever_ready,
            failed_starts: image.failed_starts,
            shutdown: image.shutdown.map(|s| match s {
                ShutdownImage::Graceful => Shutdown::Graceful,
                ShutdownImage::Forced => Shutdown::Forced,
            }),
            exit_code: image.exit_code,
            exited: image.exited,
            stop_waiters: image.stop_waiters.iter().copied().map(Ticket).collect(),
            last_upgrade: image.last_upgrade.as_ref().map(|u| LastUpgrade {
                generation: u.generation,
                result: u.result,
                failure: u.failure.clone(),
                at: t(u.at),
            }),
            counters: Counters::from(image.counters),
            started_at: t(image.started_at),
        })
    }
}

fn bad(why: &str) -> ImportError {
    ImportError(why.to_string())
}

/// `t` as nanoseconds from `now`, saturating at about 292 years.
fn at(now: Instant, t: Instant) -> At {
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if t >= now { ns(t - now) } else { -ns(now - t) }
}

/// The instant `a` nanoseconds from `now`. An instant before the clock's
/// zero (which an export on the same boot cannot produce) becomes `now`.
fn instant(now: Instant, a: At) -> Instant {
    let d = Duration::from_nanos(a.unsigned_abs());
    if a >= 0 {
        now.checked_add(d).unwrap_or(now)
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

fn pid(raw: i32) -> Result<Pid, ImportError> {
    Pid::from_raw(raw).ok_or_else(|| bad(&format!("{raw} is not a pid")))
}

fn export_gen(g: &Generation, now: Instant) -> GenerationImage {
    let at = |t: Instant| at(now, t);
    GenerationImage {
        id: g.id,
        pin: g.pin.0,
        origin: g.origin,
        spawned_at: at(g.spawned_at),
        ready_via: g.ready_via,
        role: match &g.role {
            Role::Rolling { started, canary } => RoleImage::Rolling {
                started: *started,
                canary: match canary {
                    Canary::Off => CanaryImage::Off,
                    Canary::Starting => CanaryImage::Starting,
                    Canary::Serving { since, until } => CanaryImage::Serving {
                        since: at(*since),
                        until: at(*until),
                    },
                    Canary::Passed => CanaryImage::Passed,
                },
            },
            Role::Probation {
                since,
                until,
                fallback,
            } => RoleImage::Probation {
                since: at(*since),
                until: at(*until),
                fallback: match fallback {
                    Fallback::Standby(g) => FallbackImage::Standby(*g),
                    Fallback::Pin(p) => FallbackImage::Pin(p.0),
                },
            },
            Role::Serving { since } => RoleImage::Serving { since: at(*since) },
            Role::Standby { since } => RoleImage::Standby { since: at(*since) },
            Role::Retiring => RoleImage::Retiring,
        },
        slots: g.slots,
        workers: g.workers.iter().map(|w| export_worker(w, now)).collect(),
        waiters: g.waiters.iter().map(|t| t.0).collect(),
        on_spawn: g.on_spawn.iter().map(|t| t.0).collect(),
        slot_restarts: g
            .slot_restarts
            .iter()
            .map(|(slot, r)| SlotRestartImage {
                slot: *slot,
                crashes: r.crashes,
                at: r.at.map(at),
            })
            .collect(),
        last_pid: g.last_pid,
    }
}

fn import_gen(g: &GenerationImage, now: Instant) -> Result<Generation, ImportError> {
    let t = |a: At| instant(now, a);
    let mut workers = Vec::with_capacity(g.workers.len());
    for w in &g.workers {
        if w.id.generation != g.id {
            return Err(bad(&format!(
                "worker {} is listed under generation {}",
                w.id.seq, g.id
            )));
        }
        workers.push(import_worker(w, now)?);
    }
    let mut slot_restarts = BTreeMap::new();
    for r in &g.slot_restarts {
        slot_restarts.insert(
            r.slot,
            SlotRestart {
                crashes: r.crashes,
                at: r.at.map(t),
            },
        );
    }
    Ok(Generation {
        id: g.id,
        pin: PinId(g.pin),
        origin: g.origin,
        spawned_at: t(g.spawned_at),
        ready_via: g.ready_via,
        role: match &g.role {
            RoleImage::Rolling { started, canary } => Role::Rolling {
                started: *started,
                canary: match canary {
                    CanaryImage::Off => Canary::Off,
                    CanaryImage::Starting => Canary::Starting,
                    CanaryImage::Serving { since, until } => Canary::Serving {
                        since: t(*since),
                        until: t(*until),
                    },
                    CanaryImage::Passed => Canary::Passed,
                },
            },
            RoleImage::Probation {
                since,
                until,
                fallback,
            } => Role::Probation {
                since: t(*since),
                until: t(*until),
                fallback: match fallback {
                    FallbackImage::Standby(g) => Fallback::Standby(*g),
                    FallbackImage::Pin(p) => Fallback::Pin(PinId(*p)),
                },
            },
            RoleImage::Serving { since } => Role::Serving { since: t(*since) },
            RoleImage::Standby { since } => Role::Standby { since: t(*since) },
            RoleImage::Retiring => Role::Retiring,
        },
        slots: g.slots,
        workers,
        waiters: g.waiters.iter().copied().map(Ticket).collect(),
        on_spawn: g.on_spawn.iter().copied().map(Ticket).collect(),
        slot_restarts,
        last_pid: g.last_pid,
    })
}

fn export_worker(w: &Worker, now: Instant) -> WorkerImage {
    let at = |t: Instant| at(now, t);
    WorkerImage {
        id: w.id.into(),
        pid: w.pid.map(Pid::as_raw_pid),
        spawned: w.spawned,
        state: match &w.state {
            WState::Starting {
                deadline,
                ready_at,
                doomed,
                gate,
            } => WStateImage::Starting {
                deadline: at(*deadline),
                ready_at: ready_at.map(at),
                doomed: doomed.clone(),
                gate: match gate {
                    Gate::Signal => GateImage::Signal,
                    Gate::Settling { until, via } => GateImage::Settling {
                        until: at(*until),
                        via: *via,
                    },
                    Gate::Probing {
                        via,
                        next,
                        last_failure,
                    } => GateImage::Probing {
                        via: *via,
                        next: next.map(at),
                        last_failure: last_failure.clone(),
                    },
                },
            },
            WState::Serving { since } => WStateImage::Serving { since: at(*since) },
            WState::Paused { since } => WStateImage::Paused { since: at(*since) },
            WState::Draining { since, deadline } => WStateImage::Draining {
                since: at(*since),
                deadline: at(*deadline),
            },
            WState::Killing { deadline } => WStateImage::Killing {
                deadline: at(*deadline),
            },
        },
        spoke: w.spoke,
        protocol: w.protocol,
        channel_open: w.channel_open,
        status: w.status.clone(),
        unhealthy: w.unhealthy.clone(),
        started_at: at(w.started_at),
        ready_via: w.ready_via,
        recycle_at: w.recycle_at.map(at),
        replaces: w.replaces.map(WorkerIdImage::from),
    }
}

fn import_worker(w: &WorkerImage, now: Instant) -> Result<Worker, ImportError> {
    let t = |a: At| instant(now, a);
    Ok(Worker {
        id: w.id.into(),
        pid: w.pid.map(pid).transpose()?,
        spawned: w.spawned,
        state: match &w.state {
            WStateImage::Starting {
                deadline,
                ready_at,
                doomed,
                gate,
            } => WState::Starting {
                deadline: t(*deadline),
                ready_at: ready_at.map(t),
                doomed: doomed.clone(),
                gate: match gate {
                    GateImage::Signal => Gate::Signal,
                    GateImage::Settling { until, via } => Gate::Settling {
                        until: t(*until),
                        via: *via,
                    },
                    GateImage::Probing {
                        via,
                        next,
                        last_failure,
                    } => Gate::Probing {
                        via: *via,
                        next: next.map(t),
                        last_failure: last_failure.clone(),
                    },
                },
            },
            WStateImage::Serving { since } => WState::Serving { since: t(*since) },
            WStateImage::Paused { since } => WState::Paused { since: t(*since) },
            WStateImage::Draining { since, deadline } => WState::Draining {
                since: t(*since),
                deadline: t(*deadline),
            },
            WStateImage::Killing { deadline } => WState::Killing {
                deadline: t(*deadline),
            },
        },
        spoke: w.spoke,
        protocol: w.protocol,
        channel_open: w.channel_open,
        status: w.status.clone(),
        unhealthy: w.unhealthy.clone(),
        started_at: t(w.started_at),
        ready_via: w.ready_via,
        recycle_at: w.recycle_at.map(t),
        replaces: w.replaces.map(WorkerId::from),
    })
}

/// The core's state; see [`Core::export`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreImage {
    pub workers_target: u32,
    pub generations: Vec<GenerationImage>,
    pub next_generation: GenId,
    pub next_seq: u64,
    pub next_pin: u64,
    pub pins: Vec<u64>,
    pub last_good: Option<u64>,
    pub previous_good: Option<u64>,
    pub pending: Option<Vec<ReplyImage>>,
    pub restart_at: Option<At>,
    pub crashes: u32,
    pub ever_ready: bool,
    pub failed_starts: u32,
    pub shutdown: Option<ShutdownImage>,
    pub exit_code: Option<u8>,
    pub exited: bool,
    pub stop_waiters: Vec<u64>,
    pub last_upgrade: Option<LastUpgradeImage>,
    pub counters: CountersImage,
    pub started_at: At,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyImage {
    Outcome(u64),
    Started(u64),
}

impl From<Reply> for ReplyImage {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Outcome(t) => ReplyImage::Outcome(t.0),
            Reply::Started(t) => ReplyImage::Started(t.0),
        }
    }
}

impl From<ReplyImage> for Reply {
    fn from(r: ReplyImage) -> Self {
        match r {
            ReplyImage::Outcome(t) => Reply::Outcome(Ticket(t)),
            ReplyImage::Started(t) => Reply::Started(Ticket(t)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownImage {
    Graceful,
    Forced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastUpgradeImage {
    pub generation: Option<GenId>,
    pub result: LastResult,
    pub failure: Option<FailureReason>,
    pub at: At,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersImage {
    pub upgrades_ready: u64,
    pub upgrades_failed: u64,
    pub rollbacks: u64,
    pub crash_restarts: u64,
    pub worker_restarts: u64,
    pub recycled: u64,
}

impl From<Counters> for CountersImage {
    fn from(c: Counters) -> Self {
        CountersImage {
            upgrades_ready: c.upgrades_ready,
            upgrades_failed: c.upgrades_failed,
            rollbacks: c.rollbacks,
            crash_restarts: c.crash_restarts,
            worker_restarts: c.worker_restarts,
            recycled: c.recycled,
        }
    }
}

impl From<CountersImage> for Counters {
    fn from(c: CountersImage) -> Self {
        Counters {
            upgrades_ready: c.upgrades_ready,
            upgrades_failed: c.upgrades_failed,
            rollbacks: c.rollbacks,
            crash_restarts: c.crash_restarts,
            worker_restarts: c.worker_restarts,
            recycled: c.recycled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationImage {
    pub id: GenId,
    pub pin: u64,
    pub origin: Origin,
    pub spawned_at: At,
    pub ready_via: Option<ReadyVia>,
    pub role: RoleImage,
    pub slots: u32,
    pub workers: Vec<WorkerImage>,
    pub waiters: Vec<u64>,
    pub on_spawn: Vec<u64>,
    pub slot_restarts: Vec<SlotRestartImage>,
    pub last_pid: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoleImage {
    Rolling {
        started: u32,
        canary: CanaryImage,
    },
    Probation {
        since: At,
        until: At,
        fallback: FallbackImage,
    },
    Serving {
        since: At,
    },
    Standby {
        since: At,
    },
    Retiring,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CanaryImage {
    Off,
    Starting,
    Serving { since: At, until: At },
    Passed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackImage {
    Standby(GenId),
    Pin(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRestartImage {
    pub slot: u32,
    pub crashes: u32,
    pub at: Option<At>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerIdImage {
    pub generation: GenId,
    pub slot: u32,
    pub seq: u64,
}

impl From<WorkerId> for WorkerIdImage {
    fn from(w: WorkerId) -> Self {
        WorkerIdImage {
            generation: w.generation,
            slot: w.slot,
            seq: w.seq,
        }
    }
}

impl From<WorkerIdImage> for WorkerId {
    fn from(w: WorkerIdImage) -> Self {
        WorkerId {
            generation: w.generation,
            slot: w.slot,
            seq: w.seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerImage {
    pub id: WorkerIdImage,
    pub pid: Option<i32>,
    pub spawned: bool,
    pub state: WStateImage,
    pub spoke: bool,
    pub protocol: u32,
    pub channel_open: bool,
    pub status: Option<String>,
    pub unhealthy: Option<String>,
    pub started_at: At,
    pub ready_via: Option<ReadyVia>,
    pub recycle_at: Option<At>,
    pub replaces: Option<WorkerIdImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WStateImage {
    Starting {
        deadline: At,
        ready_at: Option<At>,
        doomed: Option<FailureReason>,
        gate: GateImage,
    },
    Serving {
        since: At,
    },
    Paused {
        since: At,
    },
    Draining {
        since: At,
        deadline: At,
    },
    Killing {
        deadline: At,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GateImage {
    Signal,
    Settling {
        until: At,
        via: ReadyVia,
    },
    Probing {
        via: ReadyVia,
        next: Option<At>,
        last_failure: Option<String>,
    },
}
