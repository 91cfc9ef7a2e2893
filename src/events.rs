//! How lifecycle events reach the log: each has a fixed message (its name)
//! and typed fields, so that a reader, a test or a log pipeline matches on
//! `ready generation=2`, never on a sentence.
//!
//! Every line hotsup logs follows that rule, lifecycle event or not
//! (`listening`, `control_socket`, ...). With `--log-format json` each line
//! is one JSON object: `{"ts":…,"level":"info","event":"ready",
//! "generation":2,"pid":4242,…}`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Subscriber, debug, error, info, warn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::lifecycle::{Event, Level};
use crate::signals;

/// Logs one lifecycle event at its level.
pub fn log(ev: &Event) {
    macro_rules! at {
        ($($t:tt)*) => {
            match ev.level() {
                Level::Debug => debug!($($t)*),
                Level::Info => info!($($t)*),
                Level::Warn => warn!($($t)*),
                Level::Error => error!($($t)*),
            }
        };
    }
    match ev {
        Event::UpgradeRequested { source } => {
            at!(source = %source.describe(), "upgrade_requested")
        }
        Event::UpgradeQueued { source, behind } => {
            at!(source = %source.describe(), behind, "upgrade_queued")
        }
        Event::UpgradeIgnored { source } => {
            at!(source = %source.describe(), reason = "shutting down", "upgrade_ignored")
        }
        Event::CheckStarted { generation } => at!(generation, "check_started"),
        Event::CheckPassed {
            generation,
            after_ms,
        } => at!(generation, after_ms, "check_passed"),
        Event::CheckFailed {
            generation,
            after_ms,
            failure,
        } => at!(generation, after_ms, reason = %failure, "check_failed"),
        Event::AfterUpgradeDone { generation } => at!(generation, "after_upgrade_done"),
        Event::AfterUpgradeFailed { generation, detail } => {
            at!(generation, detail = %detail, "after_upgrade_failed")
        }
        Event::Spawned {
            generation,
            slot,
            pid,
            origin,
            pinned,
        } => at!(
            generation,
            slot,
            pid,
            origin = origin.as_str(),
            pinned,
            "spawned"
        ),
        Event::HandedOff {
            generation,
            slot,
            pid,
            listeners,
            elapsed_us,
        } => at!(generation, slot, pid, listeners, elapsed_us, "handed_off"),
        Event::Protocol {
            generation,
            slot,
            pid,
            version,
        } => at!(generation, slot, pid, version, "protocol"),
        Event::Ready {
            generation,
            pid,
            after_ms,
            via,
        } => at!(generation, pid, after_ms, via = via.as_str(), "ready"),
        Event::ProbationStarted {
            generation,
            pid,
            probation_ms,
            standby,
        } => at!(generation, pid, probation_ms, standby, "probation_started"),
        Event::ProbationPassed { generation, pid } => at!(generation, pid, "probation_passed"),
        Event::Standby { generation, pid } => at!(generation, pid, "standby"),
        Event::Resumed { generation, pid } => at!(generation, pid, "resumed"),
        Event::RolledBack {
            generation,
            pid,
            failure,
            lived_ms,
            resumed,
        } => at!(generation, pid, lived_ms, resumed, reason = %failure, "rolled_back"),
        Event::UpgradeFailed {
            generation,
            failure,
            serving,
        } => at!(generation, serving, reason = %failure, "upgrade_failed"),
        Event::StartFailed {
            generation,
            failure,
            attempt,
        } => at!(generation, attempt, reason = %failure, "start_failed"),
        Event::GaveUp { attempts } => at!(
            attempts,
            reason = "no generation ever became ready (--start-attempts)",
            "gave_up"
        ),
        Event::Draining {
            generation,
            slot,
            pid,
            via,
            timeout_ms,
        } => at!(generation, slot, pid, via = %via, timeout_ms, "draining"),
        Event::Drained {
            generation,
            slot,
            pid,
            status,
            clean,
            drain_ms,
        } => at!(generation, slot, pid, status = %status, clean, drain_ms, "drained"),
        Event::Killed {
            generation,
            slot,
            pid,
            cause,
        } => at!(generation, slot, pid, cause = cause.as_str(), "killed"),
        Event::Reaped {
            generation,
            slot,
            pid,
            status,
        } => at!(generation, slot, pid, status = %status, "reaped"),
        Event::Crashed {
            generation,
            slot,
            pid,
            status,
            successor,
        } => at!(generation, slot, pid, status = %status, successor, "crashed"),
        Event::RestartScheduled { delay_ms, attempt } => {
            at!(delay_ms, attempt, "restart_scheduled")
        }
        Event::Abandoned {
            generation,
            slot,
            pid,
        } => at!(
            generation,
            slot,
            pid,
            reason = "still alive after SIGKILL",
            "abandoned"
        ),
        Event::WaitingForUpgrade => at!("waiting_for_upgrade"),
        Event::WorkerReady {
            generation,
            slot,
            pid,
            after_ms,
        } => at!(generation, slot, pid, after_ms, "worker_ready"),
        Event::BatchReady {
            generation,
            ready,
            of,
        } => at!(generation, ready, of, "batch_ready"),
        Event::CanaryStarted {
            generation,
            pid,
            canary_ms,
        } => at!(generation, pid, canary_ms, "canary_started"),
        Event::CanaryPassed { generation, pid } => at!(generation, pid, "canary_passed"),
        Event::WorkerPaused {
            generation,
            slot,
            pid,
        } => at!(generation, slot, pid, "worker_paused"),
        Event::WorkerFailed {
            generation,
            slot,
            pid,
            failure,
        } => at!(generation, slot, pid, reason = %failure, "worker_failed"),
        Event::SlotRestartScheduled {
            generation,
            slot,
            delay_ms,
            attempt,
        } => at!(
            generation,
            slot,
            delay_ms,
            attempt,
            "slot_restart_scheduled"
        ),
        Event::Recycling {
            generation,
            slot,
            pid,
            why,
        } => at!(generation, slot, pid, why = %why, "recycling"),
        Event::Scaled { from, to } => at!(from, to, "scaled"),
        Event::ProbeFailed {
            generation,
            slot,
            pid,
            detail,
        } => at!(generation, slot, pid, detail = %detail, "probe_failed"),
        Event::ShutdownBegan { source, forced } => {
            at!(source = %source.describe(), forced, "shutdown_began")
        }
        Event::Stopped {
            generation,
            status,
            exit_code,
        } => at!(generation, status = %status, exit_code, "stopped"),
        Event::Forwarded {
            generation,
            slot,
            pid,
            signal,
        } => at!(generation, slot, pid, signal = %signals::name(*signal), "forwarded"),
        Event::NothingToSignal { signal } => {
            at!(signal = %signals::name(*signal), "nothing_to_signal")
        }
        Event::Status {
            generation,
            slot,
            pid,
            text,
        } => at!(generation, slot, pid, text = %text, "status"),
        Event::Unhealthy {
            generation,
            slot,
            pid,
            reason,
        } => at!(generation, slot, pid, reason = %reason, "unhealthy"),
        Event::MalformedMessage {
            generation,
            slot,
            pid,
            detail,
        } => at!(generation, slot, pid, detail = %detail, "malformed_message"),
        Event::ChannelClosed {
            generation,
            slot,
            pid,
            detail,
        } => at!(generation, slot, pid, detail = %detail, "channel_closed"),
        Event::Exiting { code } => at!(code, "exiting"),
        Event::ConfigReloaded {
            path,
            changed,
            added,
            removed,
            ignored,
        } => at!(
            path = %path,
            changed = %changed.join(","),
            added = %added.join(","),
            removed = %removed.join(","),
            ignored = %ignored.join(","),
            "config_reloaded"
        ),
        Event::ConfigRejected { path, reason } => {
            at!(path = %path, reason = %reason, "config_rejected")
        }
        Event::ListenerClosed { name, address } => {
            at!(name = %name, address = %address, "listener_closed")
        }
    }
}

/// One event as a JSON line for `hotsup events`: the `event` key first (so
/// that a name filter can look at the start of the line), then the typed
/// fields and `ts`.
pub fn feed_line(ev: &Event) -> Option<std::sync::Arc<str>> {
    let Value::Object(fields) = serde_json::to_value(ev).ok()? else {
        return None;
    };
    let mut line = format!("{{\"event\":{}", Value::from(ev.name()));
    for (k, v) in fields.iter().filter(|(k, _)| *k != "event") {
        line.push(',');
        line.push_str(&Value::from(k.as_str()).to_string());
        line.push(':');
        line.push_str(&v.to_string());
    }
    line.push_str(",\"ts\":");
    line.push_str(
        &Value::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())
            .to_string(),
    );
    line.push_str("}\n");
    Some(line.into())
}

/// `--log-format json`: one object per line, the message as `event`, every
/// field with its type.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        obj.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        obj.insert(
            "event".into(),
            fields.0.remove("message").unwrap_or(Value::Null),
        );
        obj.extend(fields.0);
        writeln!(writer, "{}", Value::Object(obj))
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
