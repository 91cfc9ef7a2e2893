//! hotsup's log as events: it runs with `--log-format json`, one object per
//! line with a fixed `event` name and typed fields (see hotsup's
//! `src/events.rs` and `src/lifecycle/event.rs`). The bench matches names
//! and fields, never wording. Lines that are not JSON events are the
//! children's own stderr, which they share with hotsup (or the log of a
//! hotsup too old to speak JSON).

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One log event.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// Its fixed name: `spawned`, `ready`, `drained`, ...
    pub event: String,
    /// `info`, `warn`, `error`, ...
    #[serde(default)]
    pub level: String,
    /// When hotsup logged it, RFC 3339 (milliseconds, as of this writing).
    #[serde(default)]
    pub ts: String,
    pub generation: Option<u64>,
    pub pid: Option<i32>,
    /// Every other field.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Event {
    /// Whether this is event `name` of generation `g`.
    pub fn is(&self, name: &str, g: u64) -> bool {
        self.event == name && self.generation == Some(g)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key)?.as_u64()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.fields.get(key)?.as_bool()
    }

    /// `ts` in microseconds since the Unix epoch.
    pub fn wall_us(&self) -> Option<i64> {
        let t = humantime::parse_rfc3339(&self.ts).ok()?;
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(d.as_micros()).ok()
    }

    /// Logged as a warning or an error.
    pub fn is_problem(&self) -> bool {
        matches!(self.level.as_str(), "warn" | "error")
    }
}

/// One line read from hotsup's stderr.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the reader thread read it (the precise local clock).
    pub at: Instant,
    pub raw: String,
    /// The event as JSON, for tests matching fields by value; `None` for a
    /// child's own output.
    pub json: Option<Value>,
    /// The same event, typed.
    pub event: Option<Event>,
}

impl Line {
    pub fn parse(raw: String, at: Instant) -> Line {
        let json = raw
            .starts_with('{')
            .then(|| serde_json::from_str::<Value>(&raw).ok())
            .flatten()
            .filter(|v| v.get("event").is_some_and(Value::is_string));
        let event = json
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        Line {
            at,
            raw,
            json,
            event,
        }
    }

    /// Whether this is event `name` with these field values.
    pub fn matches(&self, name: &str, fields: &[(&str, Value)]) -> bool {
        self.json
            .as_ref()
            .is_some_and(|e| e["event"] == name && fields.iter().all(|(k, v)| &e[*k] == v))
    }

    /// The event, if it is `name`.
    pub fn named(&self, name: &str) -> Option<&Event> {
        self.event.as_ref().filter(|e| e.event == name)
    }
}

/// Milliseconds from event `a` to event `b` by hotsup's own clock.
pub fn ts_ms(a: Option<&Event>, b: Option<&Event>) -> Option<f64> {
    Some((b?.wall_us()? - a?.wall_us()?) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_keeps_foreign_lines() {
        let at = Instant::now();
        let l = Line::parse(
            r#"{"ts":"2026-12-01T13:15:00.250Z","level":"info","event":"handed_off","generation":2,"slot":0,"pid":1096,"listeners":1,"elapsed_us":46}"#.into(),
            at,
        );
        let e = l.named("handed_off").expect("an event");
        assert!(e.is("handed_off", 2));
        assert_eq!((e.u64("slot"), e.pid), (Some(0), Some(1096)));
        assert_eq!(
            (e.u64("elapsed_us"), e.u64("listeners")),
            (Some(46), Some(1))
        );
        // date -u -d 2026-12-01T13:15:00Z +%s = 1796130900
        assert_eq!(e.wall_us(), Some(1_796_130_900_250_000));
        assert!(!e.is_problem());
        assert!(l.named("ready").is_none());

        let l = Line::parse(
            r#"{"ts":"2026-12-01T13:15:00.251Z","level":"warn","event":"drained","generation":1,"slot":0,"pid":7,"status":"killed by SIGKILL","clean":false}"#.into(),
            at,
        );
        let e = l.event.as_ref().unwrap();
        assert_eq!(
            (e.bool("clean"), e.str("status")),
            (Some(false), Some("killed by SIGKILL"))
        );
        assert!(e.is_problem());
        assert_eq!(ts_ms(None, Some(e)), None);

        for foreign in [
            "http example pid=5: draining 4 connections",
            "{not json",
            "{\"a\":1}",
        ] {
            assert!(Line::parse(foreign.into(), at).event.is_none(), "{foreign}");
        }
    }
}
