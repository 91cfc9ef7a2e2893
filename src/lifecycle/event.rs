//! Lifecycle events: what the core decided and why, each with a fixed name
//! and typed fields. The shell logs them (text or JSON) and streams them to
//! `hotsup events` clients; tests and tools match on names and fields, never
//! on wording.

use serde::{Deserialize, Serialize};

use super::outcome::{ExitInfo, FailureReason, ReadyVia};

/// How loudly an event is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a generation was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The first generation.
    Start,
    /// An upgrade: the command is looked up anew.
    Upgrade,
    /// A crash restart: the last good executable, or the command anew if
    /// none was ever good.
    Restart,
    /// A rollback: the previous (or last) good executable.
    Rollback,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Start => "start",
            Origin::Upgrade => "upgrade",
            Origin::Restart => "restart",
            Origin::Rollback => "rollback",
        }
    }
}

/// Why hotsup killed a generation's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillCause {
    /// It failed before it was ready.
    FailedStart,
    /// It was still running at the drain deadline.
    DrainDeadline,
    /// More than `--max-draining` generations were draining.
    MaxDraining,
    /// It was taken back from probation.
    RolledBack,
    /// A forced shutdown, or a generation that had not started serving when
    /// the shutdown began.
    Shutdown,
    /// It did not die from an earlier SIGKILL.
    Again,
    /// It could not be resumed from standby.
    ResumeFailed,
}

impl KillCause {
    pub fn as_str(self) -> &'static str {
        match self {
            KillCause::FailedStart => "failed_start",
            KillCause::DrainDeadline => "drain_deadline",
            KillCause::MaxDraining => "max_draining",
            KillCause::RolledBack => "rolled_back",
            KillCause::Shutdown => "shutdown",
            KillCause::Again => "again",
            KillCause::ResumeFailed => "resume_failed",
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A signal sent to hotsup, by number.
    Signal(i32),
    /// A control-socket client.
    Control,
    /// hotsup itself (a coalesced follow-up upgrade).
    Supervisor,
    /// `run --watch`: a change was saved (and built, with `--build`).
    Watch,
}

impl Source {
    pub fn describe(self) -> String {
        match self {
            Source::Signal(s) => crate::signals::name(s),
            Source::Control => "control socket".into(),
            Source::Supervisor => "hotsup".into(),
            Source::Watch => "watch".into(),
        }
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    UpgradeRequested {
        source: Source,
    },
    /// An upgrade was asked for while one is in progress; it follows that
    /// one.
    UpgradeQueued {
        source: Source,
        behind: u64,
    },
    UpgradeIgnored {
        source: Source,
    },
    /// An upgrade's `--check` started; `generation` is the number the new
    /// generation gets if it passes.
    CheckStarted {
        generation: u64,
    },
    /// The check passed: the new generation starts.
    CheckPassed {
        generation: u64,
        after_ms: u64,
    },
    /// The check failed: the upgrade is refused and nothing else changes
    /// (`upgrade_failed` follows, with the same failure).
    CheckFailed {
        generation: u64,
        after_ms: u64,
        failure: FailureReason,
    },
    /// `--after-upgrade` succeeded.
    AfterUpgradeDone {
        generation: u64,
    },
    /// `--after-upgrade` failed or timed out; nothing else changes.
    AfterUpgradeFailed {
        generation: u64,
        detail: String,
    },
    /// A generation's process was started.
    Spawned {
        generation: u64,
        slot: u32,
        pid: i32,
        origin: Origin,
        /// Whether it runs a pinned executable rather than the command
        /// looked up anew.
        pinned: bool,
    },
    HandedOff {
        generation: u64,
        slot: u32,
        pid: i32,
        listeners: usize,
        elapsed_us: u64,
    },
    /// A generation answered HELLO with protocol version 2 or later.
    Protocol {
        generation: u64,
        slot: u32,
        pid: i32,
        version: u32,
    },
    /// One worker of a pool is ready (every worker of a generation that
    /// has more than one; for one of a single worker, `ready` says it).
    WorkerReady {
        generation: u64,
        slot: u32,
        pid: i32,
        after_ms: u64,
    },
    /// Every worker of a generation is ready.
    Ready {
        generation: u64,
        pid: i32,
        after_ms: u64,
        via: ReadyVia,
    },
    /// A batch of a rolling upgrade is ready; as many old workers retire.
    BatchReady {
        generation: u64,
        ready: u32,
        of: u32,
    },
    CanaryStarted {
        generation: u64,
        pid: i32,
        canary_ms: u64,
    },
    CanaryPassed {
        generation: u64,
        pid: i32,
    },
    /// An old worker paused during a rollout: a failed rollout resumes it.
    WorkerPaused {
        generation: u64,
        slot: u32,
        pid: i32,
    },
    /// A worker of a serving generation (a slot restart, a replacement)
    /// failed before it was ready.
    WorkerFailed {
        generation: u64,
        slot: u32,
        pid: i32,
        failure: FailureReason,
    },
    /// A `--ready-probe` run failed; it is tried again.
    ProbeFailed {
        generation: u64,
        slot: u32,
        pid: i32,
        detail: String,
    },
    SlotRestartScheduled {
        generation: u64,
        slot: u32,
        delay_ms: u64,
        attempt: u32,
    },
    /// A worker is being replaced (`--max-worker-age`, `--max-worker-rss`).
    Recycling {
        generation: u64,
        slot: u32,
        pid: i32,
        why: String,
    },
    Scaled {
        from: u32,
        to: u32,
    },
    ProbationStarted {
        generation: u64,
        pid: i32,
        probation_ms: u64,
        /// The paused generation that takes over if this one fails.
        #[serde(skip_serializing_if = "Option::is_none")]
        standby: Option<u64>,
    },
    ProbationPassed {
        generation: u64,
        pid: i32,
    },
    /// The previous generation was paused: it keeps its connections and can
    /// resume at once.
    Standby {
        generation: u64,
        pid: i32,
    },
    Resumed {
        generation: u64,
        pid: i32,
    },
    RolledBack {
        generation: u64,
        pid: i32,
        failure: FailureReason,
        lived_ms: u64,
        /// The standby generation that serves again, if there was one;
        /// otherwise a new generation starts from the last good executable.
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed: Option<u64>,
    },
    /// An upgrade's new generation failed before it was ready.
    UpgradeFailed {
        #[serde(skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        failure: FailureReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        serving: Option<u64>,
    },
    /// A start (first start, crash restart or rollback start) failed before
    /// the generation was ready, with nothing serving.
    StartFailed {
        #[serde(skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        failure: FailureReason,
        attempt: u32,
    },
    /// No generation ever became ready within `--start-attempts`.
    GaveUp {
        attempts: u32,
    },
    Draining {
        generation: u64,
        slot: u32,
        pid: i32,
        /// `protocol` (DRAIN on the channel) or the signal's name.
        via: String,
        timeout_ms: u64,
    },
    Drained {
        generation: u64,
        slot: u32,
        pid: i32,
        status: ExitInfo,
        clean: bool,
        /// From the drain request to the exit.
        drain_ms: u64,
    },
    Killed {
        generation: u64,
        slot: u32,
        pid: i32,
        cause: KillCause,
    },
    /// A killed (or failed) generation's process was reaped.
    Reaped {
        generation: u64,
        slot: u32,
        pid: i32,
        status: ExitInfo,
    },
    /// The serving generation exited on its own.
    Crashed {
        generation: u64,
        slot: u32,
        pid: i32,
        status: ExitInfo,
        /// The generation starting or on probation that takes over.
        #[serde(skip_serializing_if = "Option::is_none")]
        successor: Option<u64>,
    },
    /// A pending crash restart, after the backoff delay.
    RestartScheduled {
        delay_ms: u64,
        attempt: u32,
    },
    Abandoned {
        generation: u64,
        slot: u32,
        pid: i32,
    },
    /// Nothing serves, and `--restart` (watch mode) leaves the next start
    /// to the next upgrade.
    WaitingForUpgrade,
    ShutdownBegan {
        source: Source,
        forced: bool,
    },
    /// The serving generation exited and `--restart` leaves it down.
    Stopped {
        generation: u64,
        status: ExitInfo,
        exit_code: u8,
    },
    Forwarded {
        generation: u64,
        slot: u32,
        pid: i32,
        signal: i32,
    },
    NothingToSignal {
        signal: i32,
    },
    Status {
        generation: u64,
        slot: u32,
        pid: i32,
        text: String,
    },
    Unhealthy {
        generation: u64,
        slot: u32,
        pid: i32,
        reason: String,
    },
    MalformedMessage {
        generation: u64,
        slot: u32,
        pid: i32,
        detail: String,
    },
    ChannelClosed {
        generation: u64,
        slot: u32,
        pid: i32,
        detail: String,
    },
    Exiting {
        code: u8,
    },
    /// `--config`, read again for an upgrade: what changed. The upgrade
    /// follows.
    ConfigReloaded {
        path: String,
        /// Keys whose value changed.
        changed: Vec<String>,
        /// Listeners bound for the new generation on.
        added: Vec<String>,
        /// Listeners new generations no longer get; each is closed once no
        /// generation uses it ([`Event::ListenerClosed`]).
        removed: Vec<String>,
        /// Changed keys that apply only when hotsup itself restarts.
        ignored: Vec<String>,
    },
    /// `--config` could not be used: the upgrade is refused, nothing
    /// changed.
    ConfigRejected {
        path: String,
        reason: String,
    },
    /// A listener removed from the config file was closed: no generation
    /// uses it any more.
    ListenerClosed {
        name: String,
        address: String,
    },
}

impl Event {
    /// The event's fixed name, as in its JSON `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::UpgradeRequested { .. } => "upgrade_requested",
            Event::UpgradeQueued { .. } => "upgrade_queued",
            Event::UpgradeIgnored { .. } => "upgrade_ignored",
            Event::CheckStarted { .. } => "check_started",
            Event::CheckPassed { .. } => "check_passed",
            Event::CheckFailed { .. } => "check_failed",
            Event::AfterUpgradeDone { .. } => "after_upgrade_done",
            Event::AfterUpgradeFailed { .. } => "after_upgrade_failed",
            Event::Spawned { .. } => "spawned",
            Event::HandedOff { .. } => "handed_off",
            Event::Protocol { .. } => "protocol",
            Event::WorkerReady { .. } => "worker_ready",
            Event::Ready { .. } => "ready",
            Event::BatchReady { .. } => "batch_ready",
            Event::CanaryStarted { .. } => "canary_started",
            Event::CanaryPassed { .. } => "canary_passed",
            Event::WorkerPaused { .. } => "worker_paused",
            Event::WorkerFailed { .. } => "worker_failed",
            Event::SlotRestartScheduled { .. } => "slot_restart_scheduled",
            Event::ProbeFailed { .. } => "probe_failed",
            Event::Recycling { .. } => "recycling",
            Event::Scaled { .. } => "scaled",
            Event::ProbationStarted { .. } => "probation_started",
            Event::ProbationPassed { .. } => "probation_passed",
            Event::Standby { .. } => "standby",
            Event::Resumed { .. } => "resumed",
            Event::RolledBack { .. } => "rolled_back",
            Event::UpgradeFailed { .. } => "upgrade_failed",
            Event::StartFailed { .. } => "start_failed",
            Event::GaveUp { .. } => "gave_up",
            Event::Draining { .. } => "draining",
            Event::Drained { .. } => "drained",
            Event::Killed { .. } => "killed",
            Event::Reaped { .. } => "reaped",
            Event::Crashed { .. } => "crashed",
            Event::RestartScheduled { .. } => "restart_scheduled",
            Event::Abandoned { .. } => "abandoned",
            Event::WaitingForUpgrade => "waiting_for_upgrade",
            Event::ShutdownBegan { .. } => "shutdown_began",
            Event::Stopped { .. } => "stopped",
            Event::Forwarded { .. } => "forwarded",
            Event::NothingToSignal { .. } => "nothing_to_signal",
            Event::Status { .. } => "status",
            Event::Unhealthy { .. } => "unhealthy",
            Event::MalformedMessage { .. } => "malformed_message",
            Event::ChannelClosed { .. } => "channel_closed",
            Event::Exiting { .. } => "exiting",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::ListenerClosed { .. } => "listener_closed",
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Event::UpgradeFailed { .. }
            | Event::StartFailed { .. }
            | Event::GaveUp { .. }
            | Event::RolledBack { .. }
            | Event::Abandoned { .. }
            | Event::ConfigRejected { .. } => Level::Error,
            Event::Crashed {
                successor: None, ..
            } => Level::Error,
            Event::Crashed { .. }
            | Event::UpgradeIgnored { .. }
            | Event::RestartScheduled { .. }
            | Event::SlotRestartScheduled { .. }
            | Event::WorkerFailed { .. }
            | Event::WaitingForUpgrade
            | Event::NothingToSignal { .. }
            | Event::Unhealthy { .. }
            | Event::MalformedMessage { .. }
            | Event::CheckFailed { .. }
            | Event::AfterUpgradeFailed { .. } => Level::Warn,
            Event::Killed { cause, .. } => match cause {
                KillCause::FailedStart | KillCause::RolledBack | KillCause::Shutdown => Level::Info,
                _ => Level::Warn,
            },
            Event::ChannelClosed { .. } => Level::Debug,
            _ => Level::Info,
        }
    }
}
