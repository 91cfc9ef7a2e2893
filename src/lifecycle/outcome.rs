//! Typed results of the lifecycle: how a process ended, why a generation
//! failed, and what became of an upgrade. The control protocol,
//! `status --json`, the service manager's `STATUS=` and the logs all carry
//! these, so no tool has to parse a sentence.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a process ended, as `wait` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn exited(code: i32) -> ExitInfo {
        ExitInfo {
            code: Some(code),
            signal: None,
        }
    }

    pub fn killed(signal: i32) -> ExitInfo {
        ExitInfo {
            code: None,
            signal: Some(signal),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The code hotsup exits with when this process's end ends hotsup too:
    /// its own code, or 128+signal, as tini reports it.
    pub fn as_exit_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => c.clamp(0, 255) as u8,
            (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
            (None, None) => 1,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited with code {c}"),
            (None, Some(s)) => write!(f, "killed by {}", crate::signals::name(s)),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// How a generation showed it was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyVia {
    /// `READY` on the hotsup channel.
    Channel,
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// It stayed alive for `--ready delay:…`.
    Delay,
    /// `--ready exec`: at once.
    Exec,
}

impl ReadyVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyVia::Channel => "READY",
            ReadyVia::Notify => "READY=1",
            ReadyVia::Delay => "delay",
            ReadyVia::Exec => "exec",
        }
    }
}

/// Why a generation failed, or was taken back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureReason {
    /// It could not be started at all.
    SpawnFailed { error: String },
    /// It exited before it was ready.
    ExitedBeforeReady { status: ExitInfo },
    /// It closed its hotsup channel before it was ready.
    ChannelClosed { detail: String },
    /// It sent something that is not a protocol message.
    MalformedMessage { detail: String },
    /// It did not report ready within `--ready-timeout`.
    NotReady { timeout_ms: u64 },
    /// It said it was ready, but `--ready-probe` did not succeed within
    /// `--ready-timeout`.
    ProbeFailed { timeout_ms: u64, last: String },
    /// `--check` failed, so it was never started: how the check ended and
    /// the tail of what it printed.
    CheckFailed { detail: String },
    /// It exited while on probation.
    ExitedOnProbation { status: ExitInfo },
    /// It reported itself unhealthy (`UNHEALTHY`, or `ERRNO=` on
    /// `NOTIFY_SOCKET`).
    Unhealthy { reason: String },
    /// `hotsup rollback` took it back.
    RollbackRequested,
    /// The generation it was rolled back to could not be resumed.
    ResumeFailed { detail: String },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::SpawnFailed { error } => write!(f, "cannot start it: {error}"),
            FailureReason::ExitedBeforeReady { status } => {
                write!(f, "child {status} before it was ready")
            }
            FailureReason::ChannelClosed { detail } => {
                write!(f, "it closed the hotsup channel before READY ({detail})")
            }
            FailureReason::MalformedMessage { detail } => {
                write!(f, "it sent a malformed message: {detail}")
            }
            FailureReason::NotReady { timeout_ms } => write!(
                f,
                "not ready within {} (it never reported ready; for an app that cannot, \
                 use --ready delay:DURATION, e.g. --ready delay:2s)",
                humantime::format_duration(std::time::Duration::from_millis(*timeout_ms))
            ),
            FailureReason::ProbeFailed { timeout_ms, last } => write!(
                f,
                "--ready-probe did not succeed within {}: {last}",
                humantime::format_duration(std::time::Duration::from_millis(*timeout_ms))
            ),
            FailureReason::CheckFailed { detail } => write!(f, "--check failed: {detail}"),
            FailureReason::ExitedOnProbation { status } => {
                write!(f, "child {status} on probation")
            }
            FailureReason::Unhealthy { reason } => write!(f, "it reported unhealthy: {reason}"),
            FailureReason::RollbackRequested => f.write_str("rollback requested"),
            FailureReason::ResumeFailed { detail } => {
                write!(f, "the standby generation could not be resumed: {detail}")
            }
        }
    }
}

/// What became of an upgrade (or of `hotsup rollback`), as its clients learn
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum UpgradeOutcome {
    /// The new generation serves: it became ready and, with `--probation`,
    /// passed it.
    Ready { generation: u64, pid: i32 },
    /// The new generation never became ready; the one that served before
    /// (if any) serves on.
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        failure: FailureReason,
        /// The human form of `failure`.
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serving: Option<u64>,
    },
    /// The new generation became ready, then failed on probation (or was
    /// rolled back by request); hotsup went back to the previous one.
    RolledBack {
        generation: u64,
        failure: FailureReason,
        reason: String,
        /// How long it served before it was taken back.
        lived_ms: u64,
        /// The generation that serves instead (resumed, or started from the
        /// last good executable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serving: Option<u64>,
    },
    /// hotsup began shutting down first.
    Superseded,
    /// `--no-wait`: the new generation was started.
    Started { generation: u64, pid: i32 },
    /// `--no-wait`: it will follow the upgrade in progress.
    Queued,
}

impl UpgradeOutcome {
    pub fn failed(generation: Option<u64>, failure: FailureReason, serving: Option<u64>) -> Self {
        UpgradeOutcome::Failed {
            generation,
            reason: failure.to_string(),
            failure,
            serving,
        }
    }

    pub fn rolled_back(
        generation: u64,
        failure: FailureReason,
        lived_ms: u64,
        serving: Option<u64>,
    ) -> Self {
        UpgradeOutcome::RolledBack {
            generation,
            reason: failure.to_string(),
            failure,
            lived_ms,
            serving,
        }
    }

    /// Whether the client should count this as success.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            UpgradeOutcome::Ready { .. } | UpgradeOutcome::Started { .. } | UpgradeOutcome::Queued
        )
    }
}

/// The result of the last upgrade, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastResult {
    Ready,
    Failed,
    RolledBack,
}
