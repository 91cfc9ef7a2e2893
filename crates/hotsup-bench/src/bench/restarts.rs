//! The restart scenarios compared with "hotsup upgrades", under the same two
//! loads as it:
//!
//! - "naive restart": the HTTP example run directly, stopped with SIGTERM
//!   and started again on the same port;
//! - "held socket, hard restart": the bench holds the listening socket (the
//!   `systemfd --no-pid` role), the app receives it at fd 3 with
//!   `LISTEN_FDS=1`, and each restart SIGKILLs it and starts a new one with
//!   the same socket;
//! - "hotsup crash restart": the HTTP example under hotsup, its serving
//!   child SIGKILLed, hotsup restarting it.
//!
//! Each restart waits for the new process to answer a probe (identified by
//! the `pid=` of its responses) before the next one; every wait is bounded.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::{FailureKind, Load, LoadConfig, Report, request_once};
use rustix::process::{Pid, Signal};

use super::logline::Kind;
use super::output::ms;
use super::procfs;
use super::procs::{self, Server};
use super::scenario::{
    DRAIN_TIMEOUT, LOAD_TIMEOUT, MAX_PROBES, PROBE_TIMEOUT, ProbeTotals, START_TIMEOUT,
    WINDOW_TAIL, now_wall_us, record_probe_failure,
};
use super::supervised::{Binaries, Hotsup};

/// How long a SIGTERMed naive server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restarted process may take to answer its first probe.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between probes (a refused connect returns at once: do not spin).
const PROBE_PAUSE: Duration = Duration::from_micros(500);
/// How often a probe loop checks that the new process is still alive.
const ALIVE_EVERY: Duration = Duration::from_millis(20);
/// Crash restarts per hotsup instance. hotsup backs off 100 ms, 200 ms,
/// 400 ms, ... between crash restarts, and resets the backoff only after a
/// generation served for 10 s: with 5 crashes per instance the longest
/// backoff is 1.6 s, below the loads' 5 s request timeout.
pub const CRASHES_PER_HOTSUP: u32 = 5;
/// Warm-up of the second and later crash rounds.
const ROUND_WARMUP: Duration = Duration::from_millis(500);

/// Which restart scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Naive,
    Hard,
    Crash,
}

impl Which {
    pub fn key(self) -> &'static str {
        match self {
            Which::Naive => "naive",
            Which::Hard => "hard",
            Which::Crash => "crash",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Which::Naive => "naive restart",
            Which::Hard => "held socket, hard restart",
            Which::Crash => "hotsup crash restart",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    pub restarts: u32,
    pub close_workers: usize,
    pub keepalive_workers: usize,
    pub warmup: Duration,
    /// Pause after each restart's new process answered.
    pub gap: Duration,
}

/// One restart, as observed.
#[derive(Debug, Clone)]
pub struct RestartRecord {
    pub index: u32,
    /// hotsup instance (crash restarts), 1-based; 1 otherwise.
    pub round: u32,
    pub old_pid: i32,
    pub new_pid: i32,
    /// Just before the kill(2) that triggers the restart.
    pub t_trigger: Instant,
    /// When a probe first got a response from the new process.
    pub t_first_probe: Option<Instant>,
    /// When the load first completed a response from the new process.
    pub t_first_load: Option<Instant>,
    /// Trigger -> old process reaped by the bench (naive, hard).
    pub old_exit_ms: Option<f64>,
    /// Trigger -> new process spawned (by the bench; by hotsup's log
    /// timestamp for crash restarts).
    pub spawn_ms: Option<f64>,
    /// The backoff hotsup announced (`restarting in ...`).
    pub backoff_ms: Option<f64>,
    /// Trigger -> hotsup's `ready` line read (crash restarts).
    pub ready_read_ms: Option<f64>,
    /// Anything unusual (the old process had to be killed, ...).
    pub note: Option<String>,
    pub probes: u64,
}

impl RestartRecord {
    fn new(index: u32, round: u32, old_pid: i32) -> RestartRecord {
        RestartRecord {
            index,
            round,
            old_pid,
            new_pid: 0,
            t_trigger: Instant::now(),
            t_first_probe: None,
            t_first_load: None,
            old_exit_ms: None,
            spawn_ms: None,
            backoff_ms: None,
            ready_read_ms: None,
            note: None,
            probes: 0,
        }
    }

    pub fn trigger_to_first_probe_ms(&self) -> Option<f64> {
        Some(ms(self.t_first_probe?.duration_since(self.t_trigger)))
    }

    pub fn trigger_to_first_load_ms(&self) -> Option<f64> {
        Some(ms(self
            .t_first_load?
            .saturating_duration_since(self.t_trigger)))
    }

    /// Trigger .. new process answered (+ [`WINDOW_TAIL`]).
    pub fn window(&self) -> (Instant, Instant) {
        let end = self
            .t_first_probe
            .into_iter()
            .chain(self.t_first_load)
            .max()
            .unwrap_or(self.t_trigger);
        (self.t_trigger, end + WINDOW_TAIL)
    }
}

/// Everything one restart scenario measured.
#[derive(Debug)]
pub struct RestartOutcome {
    pub which: Which,
    /// How the server was run and restarted.
    pub how: String,
    pub app: String,
    pub addr: Option<SocketAddr>,
    pub requested: u32,
    pub rounds: u32,
    pub restarts: Vec<RestartRecord>,
    /// Why the scenario stopped early, if it did.
    pub error: Option<String>,
    pub close: Report,
    pub keepalive: Report,
    pub probes: ProbeTotals,
    /// WARN and ERROR lines hotsup logged (crash restarts).
    pub hotsup_problems: Vec<String>,
    pub elapsed: Duration,
}

impl RestartOutcome {
    fn new(which: Which, requested: u32, how: String, app: String) -> RestartOutcome {
        RestartOutcome {
            which,
            how,
            app,
            addr: None,
            requested,
            rounds: 0,
            restarts: Vec::new(),
            error: None,
            close: Report::default(),
            keepalive: Report::default(),
            probes: ProbeTotals::default(),
            hotsup_problems: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn windows(&self) -> Vec<(Instant, Instant)> {
        self.restarts.iter().map(RestartRecord::window).collect()
    }

    /// Failures of the loads (not the probes) of this kind.
    pub fn load_failures_of(&self, kind: &FailureKind) -> u64 {
        self.close.failures_of(kind) + self.keepalive.failures_of(kind)
    }

    pub fn load_failures(&self) -> u64 {
        self.close.total_failures() + self.keepalive.total_failures()
    }

    pub fn load_requests(&self) -> u64 {
        self.close.total_requests() + self.keepalive.total_requests()
    }

    /// Both loads' successful requests in one report (for latency only).
    pub fn combined(&self) -> Report {
        Report {
            records: [
                self.close.records.as_slice(),
                self.keepalive.records.as_slice(),
            ]
            .concat(),
            ..Report::default()
        }
    }
}

/// Adds `r` to `into` (counts, samples, records).
pub fn merge_report(into: &mut Report, r: Report) {
    into.ok += r.ok;
    for (k, n) in r.failures {
        *into.failures.entry(k).or_default() += n;
    }
    let room = hotsup_bench::MAX_FAILURE_SAMPLES.saturating_sub(into.samples.len());
    into.samples.extend(r.samples.into_iter().take(room));
    into.records.extend(r.records);
    into.records.sort_unstable_by_key(|s| s.started);
    into.connections += r.connections;
    into.server_closes += r.server_closes;
    into.elapsed += r.elapsed;
}

/// A server that can be restarted.
trait Target {
    /// The pid that serves now.
    fn pid(&self) -> i32;
    /// Triggers one restart (sets `rec.t_trigger` just before the kill) and
    /// returns once the new process exists; returns its pid.
    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32>;
    /// `Some(why)` if the new process (or its supervisor) is gone.
    fn gone(&mut self) -> Option<String>;
}

/// Sends probes until one is answered by process `pid`; returns when that
/// response was complete and how many probes were sent.
fn probe_pid(
    addr: SocketAddr,
    pid: i32,
    timeout: Duration,
    target: &mut dyn Target,
    totals: &mut ProbeTotals,
) -> Result<(Instant, u64)> {
    let deadline = Instant::now() + timeout;
    let mut sent = 0;
    let mut next_check = Instant::now() + ALIVE_EVERY;
    while sent < MAX_PROBES && Instant::now() < deadline {
        sent += 1;
        totals.requests += 1;
        match request_once(addr, "/", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let done = Instant::now();
                totals.ok += 1;
                if r.identity().pid == Some(pid as u32) {
                    return Ok((done, sent));
                }
            }
            Ok(r) => record_probe_failure(
                totals,
                FailureKind::BadStatus(r.status),
                format!("status {}", r.status),
            ),
            Err(f) => record_probe_failure(totals, f.kind, f.message),
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + ALIVE_EVERY;
            if let Some(why) = target.gone() {
                bail!("pid {pid} never answered: {why}");
            }
        }
        thread::sleep(PROBE_PAUSE);
    }
    bail!(
        "pid {pid} did not answer within {:.1}s ({sent} probes)",
        timeout.as_secs_f64()
    )
}

/// Starts both loads at `addr`, warms up, restarts `count` times, stops the
/// loads and adds everything to `out`. An error stops the restarts; what was
/// measured until then is kept.
fn drive(
    target: &mut dyn Target,
    addr: SocketAddr,
    opts: &RestartOptions,
    count: u32,
    round: u32,
    warmup: Duration,
    out: &mut RestartOutcome,
) -> Result<()> {
    let bound = warmup + (ANSWER_TIMEOUT + STOP_TIMEOUT + opts.gap) * (count + 1);
    let config = |concurrency, keep_alive| LoadConfig {
        concurrency,
        keep_alive,
        max_duration: bound,
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    };
    let close = Load::start(config(opts.close_workers, false));
    let keepalive = Load::start(config(opts.keepalive_workers, true));
    let result = (|| -> Result<()> {
        for (name, load) in [("new-connection", &close), ("keep-alive", &keepalive)] {
            if !load.wait_for_ok(1, Duration::from_secs(10)) {
                bail!(
                    "the {name} load got no successful response within 10s ({:?})",
                    load.snapshot()
                );
            }
        }
        thread::sleep((close.started() + warmup).saturating_duration_since(Instant::now()));
        for _ in 0..count {
            let index = out.restarts.len() as u32 + 1;
            let mut rec = RestartRecord::new(index, round, target.pid());
            let new_pid = target
                .restart(&mut rec)
                .with_context(|| format!("restart {index}"))?;
            rec.new_pid = new_pid;
            let (t, n) = probe_pid(addr, new_pid, ANSWER_TIMEOUT, target, &mut out.probes)
                .with_context(|| format!("restart {index}"))?;
            rec.t_first_probe = Some(t);
            rec.probes = n;
            out.restarts.push(rec);
            thread::sleep(opts.gap);
        }
        Ok(())
    })();
    let close = close.stop();
    let keepalive = keepalive.stop();
    for rec in out.restarts.iter_mut().filter(|r| r.round == round) {
        rec.t_first_load = close
            .records
            .iter()
            .chain(&keepalive.records)
            .filter(|s| s.pid == Some(rec.new_pid as u32) && s.started >= rec.t_trigger)
            .map(|s| s.completed())
            .min();
    }
    merge_report(&mut out.close, close);
    merge_report(&mut out.keepalive, keepalive);
    result
}

// ---------------------------------------------------------------- naive

struct Naive {
    program: PathBuf,
    addr: SocketAddr,
    server: Server,
}

impl Target for Naive {
    fn pid(&self) -> i32 {
        self.server.pid()
    }

    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32> {
        rec.t_trigger = Instant::now();
        self.server.signal(Signal::TERM)?;
        if self.server.wait_exit(STOP_TIMEOUT).is_none() {
            rec.note = Some(format!(
                "did not exit within {}s of SIGTERM: killed",
                STOP_TIMEOUT.as_secs()
            ));
            self.server.kill();
        }
        rec.old_exit_ms = Some(ms(rec.t_trigger.elapsed()));
        let new = Server::spawn(&self.program, &[self.addr.to_string()], &[], None)?;
        rec.spawn_ms = Some(ms(rec.t_trigger.elapsed()));
        // The old one is reaped: dropping its handle signals nothing.
        self.server = new;
        Ok(self.server.pid())
    }

    fn gone(&mut self) -> Option<String> {
        self.server
            .exited()
            .map(|s| format!("it exited ({})", procs::describe_status(&s)))
    }
}

/// Waits until the first process answers at `addr`, then runs all the
/// restarts in one round (naive, hard).
fn start_and_drive(
    t: &mut dyn Target,
    addr: SocketAddr,
    opts: &RestartOptions,
    out: &mut RestartOutcome,
) -> Result<()> {
    let pid = t.pid();
    probe_pid(addr, pid, START_TIMEOUT, t, &mut ProbeTotals::default()).context("first start")?;
    drive(t, addr, opts, opts.restarts, 1, opts.warmup, out)
}

pub fn run_naive(bins: &Binaries, opts: &RestartOptions) -> RestartOutcome {
    let started = Instant::now();
    let mut out = RestartOutcome::new(
        Which::Naive,
        opts.restarts,
        "examples/http run directly on 127.0.0.1:PORT; restart = SIGTERM, wait for exit, start again"
            .into(),
        bins.http.display().to_string(),
    );
    out.rounds = 1;
    let r = (|| -> Result<()> {
        let addr = procs::free_loopback_addr()?;
        out.addr = Some(addr);
        let server = Server::spawn(&bins.http, &[addr.to_string()], &[], None)?;
        let mut t = Naive {
            program: bins.http.clone(),
            addr,
            server,
        };
        start_and_drive(&mut t, addr, opts, &mut out)
    })();
    out.error = r.err().map(|e| format!("{e:#}"));
    out.elapsed = started.elapsed();
    out
}

// ----------------------------------------------------------------- hard

struct Hard {
    program: PathBuf,
    listener: TcpListener,
    server: Server,
}

impl Hard {
    fn spawn(&self) -> Result<Server> {
        Server::spawn(&self.program, &[], &[], Some(procs::fd_of(&self.listener)))
    }
}

impl Target for Hard {
    fn pid(&self) -> i32 {
        self.server.pid()
    }

    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32> {
        rec.t_trigger = Instant::now();
        if self.server.kill().is_none() {
            bail!("pid {} was not reaped after SIGKILL", self.server.pid());
        }
        rec.old_exit_ms = Some(ms(rec.t_trigger.elapsed()));
        let new = self.spawn()?;
        rec.spawn_ms = Some(ms(rec.t_trigger.elapsed()));
        self.server = new;
        Ok(self.server.pid())
    }

    fn gone(&mut self) -> Option<String> {
        self.server
            .exited()
            .map(|s| format!("it exited ({})", procs::describe_status(&s)))
    }
}

pub fn run_hard(bins: &Binaries, opts: &RestartOptions) -> RestartOutcome {
    let started = Instant::now();
    // The listenfd crate's app if it was built; otherwise the HTTP example,
    // which adopts LISTEN_FDS through hotsup-child's systemd mode.
    let (program, fallback) = match &bins.listenfd_app {
        Some(p) => (p.clone(), false),
        None => (bins.http.clone(), true),
    };
    let how = format!(
        "the bench binds 127.0.0.1:0 and holds it; {} gets it at fd 3 with LISTEN_FDS=1, \
         LISTEN_PID unset (as systemfd --no-pid); restart = SIGKILL, reap, start again{}",
        if fallback {
            "examples/http"
        } else {
            "examples/listenfd_app"
        },
        if fallback {
            " (examples/listenfd_app not built: fell back to examples/http)"
        } else {
            ""
        }
    );
    let mut out = RestartOutcome::new(
        Which::Hard,
        opts.restarts,
        how,
        program.display().to_string(),
    );
    out.rounds = 1;
    let r = (|| -> Result<()> {
        let listener = procs::held_listener()?;
        let addr = listener.local_addr()?;
        out.addr = Some(addr);
        let server = Server::spawn(&program, &[], &[], Some(procs::fd_of(&listener)))?;
        let mut t = Hard {
            program,
            listener,
            server,
        };
        start_and_drive(&mut t, addr, opts, &mut out)
    })();
    out.error = r.err().map(|e| format!("{e:#}"));
    out.elapsed = started.elapsed();
    out
}

// ---------------------------------------------------------------- crash

struct Crash {
    hs: Hotsup,
    pid: i32,
    generation: u64,
}

/// Milliseconds of a humantime duration such as `1s 600ms` or `100ms`.
pub fn parse_humantime_ms(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for tok in s.split_ascii_whitespace() {
        let split = tok.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = tok.split_at(split);
        let n: f64 = num.parse().ok()?;
        total += n * match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        any = true;
    }
    any.then_some(total)
}

impl Target for Crash {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32> {
        self.hs.pump();
        let from = self.hs.lines.len();
        // Only a live child of this hotsup is ours to kill.
        let st =
            procfs::stat(self.pid).with_context(|| format!("serving pid {} is gone", self.pid))?;
        if st.ppid != self.hs.pid() || st.state == 'Z' {
            bail!(
                "pid {} is not a live child of hotsup {} (ppid {}, state {})",
                self.pid,
                self.hs.pid(),
                st.ppid,
                st.state
            );
        }
        let pid = Pid::from_raw(self.pid).context("pid 0")?;
        let wall_trigger_us = now_wall_us();
        rec.t_trigger = Instant::now();
        rustix::process::kill_process(pid, Signal::KILL)
            .with_context(|| format!("cannot SIGKILL pid {}", self.pid))?;
        let g = self.generation;
        let ready = self.hs.expect(
            from,
            ANSWER_TIMEOUT,
            &format!("`ready` of a generation after {g}"),
            |l| l.kind == Kind::Ready && l.generation.is_some_and(|n| n > g),
        )?;
        let line = &self.hs.lines[ready];
        rec.ready_read_ms = Some(ms(line.at.saturating_duration_since(rec.t_trigger)));
        let new_g = line.generation.context("`ready` without generation")?;
        let new_pid = line.pid.context("`ready` without pid")?;
        let lines = &self.hs.lines[from..=ready];
        rec.backoff_ms = lines.iter().find_map(|l| {
            let rest = l.raw.split("restarting in ").nth(1)?;
            let value = rest.split(" attempt=").next()?;
            parse_humantime_ms(value.trim())
        });
        rec.spawn_ms = lines
            .iter()
            .find(|l| l.kind == Kind::Spawned && l.generation == Some(new_g))
            .and_then(|l| l.wall_us)
            .map(|us| (us - wall_trigger_us) as f64 / 1000.0);
        self.pid = new_pid;
        self.generation = new_g;
        Ok(new_pid)
    }

    fn gone(&mut self) -> Option<String> {
        self.hs
            .exited()
            .map(|s| format!("hotsup exited ({})", procs::describe_status(&s)))
    }
}

pub fn run_crash(bins: &Binaries, opts: &RestartOptions) -> RestartOutcome {
    let started = Instant::now();
    let rounds = opts.restarts.div_ceil(CRASHES_PER_HOTSUP);
    let mut out = RestartOutcome::new(
        Which::Crash,
        opts.restarts,
        format!(
            "hotsup run -l 127.0.0.1:0 -- examples/http; restart = SIGKILL of the serving child \
             (pid from `ready`), hotsup restarts it; a fresh hotsup every {CRASHES_PER_HOTSUP} \
             crashes, so its backoff (100 ms doubling, reset after 10 s of service) stays at most \
             1.6 s"
        ),
        bins.http.display().to_string(),
    );
    let mut done = 0;
    for round in 1..=rounds.max(1) {
        if done >= opts.restarts {
            break;
        }
        let count = (opts.restarts - done).min(CRASHES_PER_HOTSUP);
        out.rounds = round;
        let mut hs_slot: Option<Hotsup> = None;
        let r = (|| -> Result<()> {
            let hs = hs_slot.insert(Hotsup::start(&bins.hotsup, &bins.http, DRAIN_TIMEOUT)?);
            let (i, addr) = hs.expect_listening(START_TIMEOUT, "the `listening` line")?;
            out.addr = Some(addr);
            let ready = hs.expect_first_ready(i, START_TIMEOUT)?;
            let pid = hs.lines[ready].pid.context("`ready` without pid")?;
            let Some(hs) = hs_slot.take() else {
                unreachable!("inserted above")
            };
            let mut t = Crash {
                hs,
                pid,
                generation: 1,
            };
            let warmup = if round == 1 {
                opts.warmup
            } else {
                ROUND_WARMUP
            };
            let r = drive(&mut t, addr, opts, count, round, warmup, &mut out);
            t.hs.pump();
            out.hotsup_problems.extend(
                t.hs.lines
                    .iter()
                    .filter(|l| l.is_problem())
                    .map(|l| l.raw.clone()),
            );
            hs_slot = Some(t.hs);
            r
        })();
        // Dropping hotsup shuts it down and kills what it left behind.
        drop(hs_slot);
        done = out.restarts.len() as u32;
        if let Err(e) = r {
            out.error = Some(format!("round {round}: {e:#}"));
            break;
        }
    }
    out.elapsed = started.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime() {
        assert_eq!(parse_humantime_ms("100ms"), Some(100.0));
        assert_eq!(parse_humantime_ms("1s 600ms"), Some(1600.0));
        assert_eq!(parse_humantime_ms("10s"), Some(10_000.0));
        assert_eq!(parse_humantime_ms(""), None);
        assert_eq!(parse_humantime_ms("soon"), None);
    }
}
