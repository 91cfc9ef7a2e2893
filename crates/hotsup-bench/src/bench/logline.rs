//! Parsing hotsup's log lines (tracing-subscriber `fmt`, no ANSI colours,
//! no target), for example:
//!
//! ```text
//! 2026-11-21T05:48:56.436101Z  INFO spawned target/release/examples/http generation=2 pid=1096 reason="SIGUSR2"
//! ```
//!
//! Lines without a leading timestamp (a child's own stderr, which hotsup's
//! children inherit) are kept as [`Kind::Foreign`].

use std::time::Instant;

/// What a log line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `listening name=tcp0 kind=tcp address=127.0.0.1:18080`
    Listening { address: String },
    /// `SIGUSR2: upgrade requested`
    UpgradeRequested,
    /// `spawned PATH generation=2 pid=1096 reason="SIGUSR2"`
    Spawned,
    /// `handed off listeners generation=2 pid=1096 listeners=1 elapsed_us=46`
    HandedOff { elapsed_us: u64 },
    /// `ready generation=2 pid=1096 after_ms=1`
    Ready,
    /// `draining via protocol generation=1 pid=1088 timeout=10s`
    Draining,
    /// `drained, exited with code 0 generation=1 pid=1088`
    Drained { clean: bool, how: String },
    /// `exiting code=0`
    Exiting { code: Option<u8> },
    /// Any other hotsup line.
    Other,
    /// Not a hotsup log line (no timestamp): a child's stderr.
    Foreign,
}

/// One line read from hotsup's stderr.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the bench read the line (the precise local clock).
    pub at: Instant,
    /// hotsup's own timestamp, in microseconds since the Unix epoch (UTC).
    pub wall_us: Option<i64>,
    /// `INFO`, `WARN`, `ERROR`, ... (empty for foreign lines).
    pub level: String,
    pub kind: Kind,
    pub generation: Option<u64>,
    pub pid: Option<i32>,
    pub raw: String,
}

impl LogLine {
    /// Whether hotsup logged this line as a warning or an error.
    pub fn is_problem(&self) -> bool {
        matches!(self.level.as_str(), "WARN" | "ERROR")
    }
}

/// Parses one line; never fails (unknown lines become `Other`/`Foreign`).
pub fn parse(raw: &str, at: Instant) -> LogLine {
    let foreign = || LogLine {
        at,
        wall_us: None,
        level: String::new(),
        kind: Kind::Foreign,
        generation: None,
        pid: None,
        raw: raw.to_owned(),
    };
    let line = raw.trim_start();
    let Some((ts, rest)) = line.split_once(' ') else {
        return foreign();
    };
    let Some(wall_us) = parse_rfc3339_us(ts) else {
        return foreign();
    };
    let rest = rest.trim_start();
    let (level, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    let msg = msg.trim_start();

    let field = |key: &str| -> Option<&str> {
        msg.split_ascii_whitespace()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    };
    let generation = field("generation").and_then(|v| v.parse().ok());
    let pid = field("pid").and_then(|v| v.parse().ok());

    let kind = if msg.starts_with("listening ") {
        match field("address") {
            Some(a) => Kind::Listening {
                address: a.to_owned(),
            },
            None => Kind::Other,
        }
    } else if msg.contains(": upgrade requested") {
        Kind::UpgradeRequested
    } else if msg.starts_with("spawned ") {
        Kind::Spawned
    } else if msg.starts_with("handed off listeners") {
        Kind::HandedOff {
            elapsed_us: field("elapsed_us")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    } else if msg == "ready" || msg.starts_with("ready ") {
        Kind::Ready
    } else if msg.starts_with("draining via ") {
        Kind::Draining
    } else if let Some(how) = msg.strip_prefix("drained, ") {
        // The message ends where the structured fields begin.
        let how = how
            .split(" generation=")
            .next()
            .unwrap_or(how)
            .trim()
            .to_owned();
        Kind::Drained {
            clean: how == "exited with code 0",
            how,
        }
    } else if msg == "exiting" || msg.starts_with("exiting ") {
        Kind::Exiting {
            code: field("code").and_then(|v| v.parse().ok()),
        }
    } else {
        Kind::Other
    };
    LogLine {
        at,
        wall_us: Some(wall_us),
        level: level.to_owned(),
        kind,
        generation,
        pid,
        raw: raw.to_owned(),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` to microseconds since the Unix
/// epoch. Only the UTC `Z` form that tracing-subscriber writes is accepted.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = num(d.next()?, 4)?;
    let month: i64 = num(d.next()?, 2)?;
    let day: i64 = num(d.next()?, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let h: i64 = num(t.next()?, 2)?;
    let m: i64 = num(t.next()?, 2)?;
    let sec: i64 = num(t.next()?, 2)?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Microseconds: first six digits, padded on the right.
    let mut us = 0i64;
    for i in 0..6 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        us = us * 10 + digit;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + h * 3_600 + m * 60 + sec) * 1_000_000) + us)
}

fn num(s: &str, len: usize) -> Option<i64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        // date -u -d 2026-11-21T05:48:56Z +%s = 1795240136
        assert_eq!(
            parse_rfc3339_us("2026-11-21T05:48:56.436101Z"),
            Some(1_795_240_136_436_101)
        );
        assert_eq!(
            parse_rfc3339_us("2000-03-01T00:00:00.000000001Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(parse_rfc3339_us("2026-11-21 05:48:56Z"), None);
        assert_eq!(parse_rfc3339_us("http"), None);
    }

    #[test]
    fn lines() {
        let at = Instant::now();
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO listening name=tcp0 kind=tcp address=127.0.0.1:18080",
            at,
        );
        assert_eq!(
            l.kind,
            Kind::Listening {
                address: "127.0.0.1:18080".into()
            }
        );
        assert_eq!(l.level, "INFO");
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO spawned target/release/examples/http generation=2 pid=1096 reason=\"SIGUSR2\"",
            at,
        );
        assert_eq!(
            (l.kind, l.generation, l.pid),
            (Kind::Spawned, Some(2), Some(1096))
        );
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO handed off listeners generation=2 pid=1096 listeners=1 elapsed_us=46",
            at,
        );
        assert_eq!(l.kind, Kind::HandedOff { elapsed_us: 46 });
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO ready generation=2 pid=1096 after_ms=1",
            at,
        );
        assert_eq!((l.kind, l.generation), (Kind::Ready, Some(2)));
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO draining via protocol generation=1 pid=1088 timeout=10s",
            at,
        );
        assert_eq!((l.kind, l.generation), (Kind::Draining, Some(1)));
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO drained, exited with code 0 generation=1 pid=1088",
            at,
        );
        assert_eq!(
            (l.kind, l.generation, l.pid),
            (
                Kind::Drained {
                    clean: true,
                    how: "exited with code 0".into()
                },
                Some(1),
                Some(1088)
            )
        );
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO drained, killed by SIGKILL generation=1 pid=1088",
            at,
        );
        assert!(matches!(l.kind, Kind::Drained { clean: false, .. }));
        let l = parse(
            "2026-11-21T05:48:56.436101Z  INFO SIGUSR2: upgrade requested",
            at,
        );
        assert_eq!(l.kind, Kind::UpgradeRequested);
        let l = parse("2026-11-21T05:48:56.436101Z  INFO exiting code=0", at);
        assert_eq!(l.kind, Kind::Exiting { code: Some(0) });
        let l = parse(
            "2026-11-21T05:48:56.436101Z  WARN generation=3 killed processes left in the group",
            at,
        );
        assert!(l.is_problem());
        let l = parse("http example pid=5: draining 4 connections", at);
        assert_eq!(l.kind, Kind::Foreign);
        assert!(!l.is_problem());
    }
}
