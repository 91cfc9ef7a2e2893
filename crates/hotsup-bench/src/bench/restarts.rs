//! The restart scenarios compared with "upgrades", under the same two
//! loads:
//!
//! - "naive": the HTTP example run directly, stopped with SIGTERM and
//!   started again on the same port;
//! - "hard": the bench holds the listening socket (the `systemfd --no-pid`
//!   role), the app receives it at fd 3 with `LISTEN_FDS=1`, and each
//!   restart SIGKILLs it and starts a new one with the same socket;
//! - "crash": the HTTP example under hotsup, its serving child SIGKILLed,
//!   hotsup restarting it.
//!
//! Each restart waits for the new process to answer a probe (identified by
//! the `pid=` of its responses) before the next one; every wait is bounded.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs;
use rustix::process::{Pid, Signal};
use serde::Serialize;

use super::procs::{self, Server};
use super::report::{Dist, Loads, Probes, Table, TwoLoads, dist, ms, probe_until};
use super::supervised::{Binaries, Hotsup, Launch};
use super::upgrades::{START_TIMEOUT, WINDOW_TAIL};

/// How long a SIGTERMed naive server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restarted process may take to answer its first probe.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Crash restarts per hotsup instance. hotsup backs off 100 ms, 200 ms,
/// 400 ms, ... between crash restarts, and resets the backoff only after a
/// generation served for 10 s: with 5 crashes per instance the longest
/// backoff is 1.6 s, below the loads' 5 s request timeout.
pub const CRASHES_PER_HOTSUP: u32 = 5;
/// Warm-up of the second and later crash rounds.
const ROUND_WARMUP: Duration = Duration::from_millis(500);

/// Which restart scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Naive,
    Hard,
    Crash,
}

impl Which {
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

/// One restart, as observed; times in ms from the trigger (the kill(2)).
#[derive(Debug, Clone, Serialize)]
pub struct RestartRecord {
    /// hotsup instance (crash restarts), 1-based; 1 otherwise.
    pub round: u32,
    pub old_pid: i32,
    pub new_pid: i32,
    #[serde(skip)]
    pub t_trigger: Instant,
    #[serde(skip)]
    pub window_end: Instant,
    /// A probe got a response from the new process.
    pub first_probe_ms: Option<f64>,
    /// The load first completed a response from it.
    pub first_load_ms: Option<f64>,
    /// The old process was reaped by the bench (naive, hard).
    pub old_exit_ms: Option<f64>,
    /// The new process was spawned (by the bench; for crash restarts by
    /// hotsup's `spawned` timestamp, in 1 ms steps).
    pub spawn_ms: Option<f64>,
    /// The backoff hotsup scheduled (`restart_scheduled` delay_ms).
    pub backoff_ms: Option<f64>,
    /// hotsup's `ready` read (crash restarts).
    pub ready_ms: Option<f64>,
    /// Anything unusual (the old process had to be killed, ...).
    pub note: Option<String>,
    pub probes: u64,
}

type Series = (
    &'static str,
    &'static str,
    fn(&RestartRecord) -> Option<f64>,
);

const SERIES: &[Series] = &[
    (
        "trigger_to_first_response_probe_ms",
        "trigger -> first response of new process (probe)",
        |r| r.first_probe_ms,
    ),
    (
        "trigger_to_first_response_load_ms",
        "trigger -> first response of new process (load)",
        |r| r.first_load_ms,
    ),
    (
        "trigger_to_old_reaped_ms",
        "trigger -> old process reaped by the bench",
        |r| r.old_exit_ms,
    ),
    (
        "trigger_to_spawned_ms",
        "trigger -> new process spawned",
        |r| r.spawn_ms,
    ),
    ("hotsup_backoff_ms", "  of which hotsup's backoff", |r| {
        r.backoff_ms
    }),
    (
        "first_response_minus_backoff_ms",
        "trigger -> first response, minus the backoff",
        |r| Some(r.first_probe_ms? - r.backoff_ms?),
    ),
    (
        "trigger_to_ready_read_ms",
        "trigger -> hotsup's `ready` read",
        |r| r.ready_ms,
    ),
];

/// Everything one restart scenario measured.
#[derive(Debug, Serialize)]
pub struct RestartOutcome {
    pub which: Which,
    /// How the server was run and restarted.
    pub how: String,
    pub app: String,
    pub address: Option<String>,
    pub requested: u32,
    pub rounds: u32,
    pub restarts: Vec<RestartRecord>,
    pub loads: Loads,
    pub series: Vec<(&'static str, Option<Dist>)>,
    /// Warnings and errors hotsup logged (crash restarts).
    pub hotsup_problems: Vec<String>,
    /// Why the scenario stopped early, if it did.
    pub error: Option<String>,
    pub elapsed_s: f64,
}

impl RestartOutcome {
    fn new(which: Which, requested: u32, how: String, app: String) -> RestartOutcome {
        RestartOutcome {
            which,
            how,
            app,
            address: None,
            requested,
            rounds: 1,
            restarts: Vec::new(),
            loads: Loads::default(),
            series: Vec::new(),
            hotsup_problems: Vec::new(),
            error: None,
            elapsed_s: 0.0,
        }
    }

    pub fn first_response(&self) -> Option<Dist> {
        self.series.first().and_then(|(_, d)| *d)
    }

    pub fn text(&self, out: &mut String) {
        let _ = writeln!(out, "  how: {}", self.how);
        let _ = writeln!(
            out,
            "  app: {}; address {}; {} of {} restarts{}; took {:.1}s",
            self.app,
            self.address.as_deref().unwrap_or("-"),
            self.restarts.len(),
            self.requested,
            if self.which == Which::Crash {
                format!(" over {} hotsup instances", self.rounds)
            } else {
                String::new()
            },
            self.elapsed_s
        );
        self.loads.text(out);
        let mut t = Table::new(["restarts (ms)", "p50", "p99", "max"]);
        for (key, d) in &self.series {
            if d.is_some() {
                let label = SERIES.iter().find(|s| s.0 == *key).map_or(*key, |s| s.1);
                t.dist_row(label, *d, 3);
            }
        }
        t.render(out);
        for r in self.restarts.iter().filter(|r| r.note.is_some()) {
            let _ = writeln!(
                out,
                "  pid {}: {}",
                r.old_pid,
                r.note.as_deref().unwrap_or_default()
            );
        }
        if !self.hotsup_problems.is_empty() {
            let _ = writeln!(
                out,
                "  hotsup warnings/errors: {} (`crashed` and `restart_scheduled` are this scenario's own doing)",
                self.hotsup_problems.len()
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  STOPPED EARLY: {e}");
        }
    }
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

/// Waits until process `pid` answers at `addr`; returns when.
fn answered(
    target: &mut dyn Target,
    addr: SocketAddr,
    pid: i32,
    timeout: Duration,
    probes: &mut Probes,
) -> Result<(Instant, u64)> {
    probe_until(
        addr,
        Instant::now() + timeout,
        probes,
        |id| id.pid == Some(pid as u32),
        || target.gone(),
    )
    .with_context(|| format!("pid {pid} did not answer"))
}

/// Starts both loads at `addr`, warms up, restarts `count` times, stops the
/// loads and keeps their reports. An error stops the restarts; what was
/// measured until then is kept.
struct Driver {
    close: Vec<hotsup_bench::Report>,
    keepalive: Vec<hotsup_bench::Report>,
    probes: Probes,
}

impl Driver {
    fn drive(
        &mut self,
        target: &mut dyn Target,
        addr: SocketAddr,
        opts: &RestartOptions,
        (count, round, warmup): (u32, u32, Duration),
        out: &mut RestartOutcome,
    ) -> Result<()> {
        let bound = warmup + (ANSWER_TIMEOUT + STOP_TIMEOUT + opts.gap) * (count + 1);
        let loads = TwoLoads::start(addr, opts.close_workers, opts.keepalive_workers, bound)?;
        let first = out.restarts.len();
        let result = (|| -> Result<()> {
            loads.warm_up(warmup);
            for _ in 0..count {
                let index = out.restarts.len() + 1;
                let mut rec = RestartRecord {
                    round,
                    old_pid: target.pid(),
                    new_pid: 0,
                    t_trigger: Instant::now(),
                    window_end: Instant::now(),
                    first_probe_ms: None,
                    first_load_ms: None,
                    old_exit_ms: None,
                    spawn_ms: None,
                    backoff_ms: None,
                    ready_ms: None,
                    note: None,
                    probes: 0,
                };
                rec.new_pid = target
                    .restart(&mut rec)
                    .with_context(|| format!("restart {index}"))?;
                let (t, n) = answered(target, addr, rec.new_pid, ANSWER_TIMEOUT, &mut self.probes)
                    .with_context(|| format!("restart {index}"))?;
                rec.first_probe_ms = Some(ms(t.duration_since(rec.t_trigger)));
                rec.window_end = t + WINDOW_TAIL;
                rec.probes = n;
                out.restarts.push(rec);
                thread::sleep(opts.gap);
            }
            Ok(())
        })();
        let (close, keepalive) = loads.stop();
        for rec in &mut out.restarts[first..] {
            rec.first_load_ms = close
                .records
                .iter()
                .chain(&keepalive.records)
                .filter(|s| s.pid == Some(rec.new_pid as u32) && s.started >= rec.t_trigger)
                .map(|s| s.completed())
                .min()
                .map(|t| ms(t.duration_since(rec.t_trigger)));
            if let Some(t) = rec.first_load_ms {
                rec.window_end = rec
                    .window_end
                    .max(rec.t_trigger + Duration::from_secs_f64(t / 1000.0) + WINDOW_TAIL);
            }
        }
        self.close.push(close);
        self.keepalive.push(keepalive);
        result
    }

    fn finish(self, out: &mut RestartOutcome) {
        let windows: Vec<_> = out
            .restarts
            .iter()
            .map(|r| (r.t_trigger, r.window_end))
            .collect();
        let merge = |rs: Vec<hotsup_bench::Report>| {
            let mut all = hotsup_bench::Report::default();
            for r in rs {
                all.ok += r.ok;
                for (k, n) in r.failures {
                    *all.failures.entry(k).or_default() += n;
                }
                let room = hotsup_bench::MAX_FAILURE_SAMPLES.saturating_sub(all.samples.len());
                all.samples.extend(r.samples.into_iter().take(room));
                all.records.extend(r.records);
                all.connections += r.connections;
                all.elapsed += r.elapsed;
            }
            all.records.sort_unstable_by_key(|s| s.started);
            all
        };
        out.loads = Loads::of(
            &merge(self.close),
            &merge(self.keepalive),
            self.probes,
            &windows,
        );
        out.series = SERIES
            .iter()
            .map(|(key, _, f)| (*key, dist(out.restarts.iter().filter_map(f).collect())))
            .collect();
    }
}

/// Runs `body` with a fresh driver and fills `out` from it.
fn scenario(
    which: Which,
    opts: &RestartOptions,
    how: String,
    app: String,
    body: impl FnOnce(&mut Driver, &mut RestartOutcome) -> Result<()>,
) -> RestartOutcome {
    let started = Instant::now();
    let mut out = RestartOutcome::new(which, opts.restarts, how, app);
    let mut driver = Driver {
        close: Vec::new(),
        keepalive: Vec::new(),
        probes: Probes::default(),
    };
    out.error = body(&mut driver, &mut out).err().map(|e| format!("{e:#}"));
    driver.finish(&mut out);
    out.elapsed_s = started.elapsed().as_secs_f64();
    out
}

// ------------------------------------------------------- naive and hard

/// A server the bench runs directly: `fd3` is the held socket (hard) or
/// `None` (naive: it binds `addr` itself).
struct Direct {
    program: PathBuf,
    addr: SocketAddr,
    held: Option<TcpListener>,
    server: Server,
}

impl Direct {
    fn spawn(
        program: &std::path::Path,
        addr: SocketAddr,
        held: Option<&TcpListener>,
    ) -> Result<Server> {
        match held {
            Some(l) => Server::spawn(program, &[], &[], Some(l.as_fd())),
            None => Server::spawn(program, &[addr.to_string()], &[], None),
        }
    }
}

impl Target for Direct {
    fn pid(&self) -> i32 {
        self.server.pid()
    }

    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32> {
        rec.t_trigger = Instant::now();
        if self.held.is_some() {
            if self.server.kill().is_none() {
                bail!("pid {} was not reaped after SIGKILL", self.server.pid());
            }
        } else {
            self.server.signal(Signal::TERM)?;
            if self.server.wait_exit(STOP_TIMEOUT).is_none() {
                rec.note = Some(format!(
                    "did not exit within {}s of SIGTERM: killed",
                    STOP_TIMEOUT.as_secs()
                ));
                self.server.kill();
            }
        }
        rec.old_exit_ms = Some(ms(rec.t_trigger.elapsed()));
        // The old one is reaped: dropping its handle signals nothing.
        self.server = Direct::spawn(&self.program, self.addr, self.held.as_ref())?;
        rec.spawn_ms = Some(ms(rec.t_trigger.elapsed()));
        Ok(self.server.pid())
    }

    fn gone(&mut self) -> Option<String> {
        self.server
            .exited()
            .map(|s| format!("it exited ({})", procs::describe_status(&s)))
    }
}

fn run_direct(
    which: Which,
    program: PathBuf,
    how: String,
    opts: &RestartOptions,
) -> RestartOutcome {
    scenario(which, opts, how, program.display().to_string(), |d, out| {
        let (addr, held) = if which == Which::Hard {
            let l = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
            (l.local_addr()?, Some(l))
        } else {
            (procs::free_loopback_addr()?, None)
        };
        out.address = Some(addr.to_string());
        let server = Direct::spawn(&program, addr, held.as_ref())?;
        let mut t = Direct {
            program: program.clone(),
            addr,
            held,
            server,
        };
        let pid = t.pid();
        answered(&mut t, addr, pid, START_TIMEOUT, &mut Probes::default())
            .context("first start")?;
        d.drive(&mut t, addr, opts, (opts.restarts, 1, opts.warmup), out)
    })
}

pub fn run_naive(bins: &Binaries, opts: &RestartOptions) -> RestartOutcome {
    let how = "examples/http run directly on 127.0.0.1:PORT; restart = SIGTERM, wait for exit, start again";
    run_direct(Which::Naive, bins.http.clone(), how.into(), opts)
}

pub fn run_hard(bins: &Binaries, opts: &RestartOptions) -> RestartOutcome {
    // The listenfd crate's app if it was built; otherwise the HTTP example,
    // which adopts LISTEN_FDS through hotsup-child's systemd mode.
    let (program, name) = match &bins.listenfd_app {
        Some(p) => (p.clone(), "examples/listenfd_app"),
        None => (bins.http.clone(), "examples/http (listenfd_app not built)"),
    };
    let how = format!(
        "the bench binds 127.0.0.1:0 and holds it; {name} gets it at fd 3 with LISTEN_FDS=1, \
         LISTEN_PID unset (as systemfd --no-pid); restart = SIGKILL, reap, start again"
    );
    run_direct(Which::Hard, program, how, opts)
}

// ---------------------------------------------------------------- crash

struct Crash {
    hs: Hotsup,
    pid: i32,
    generation: u64,
}

impl Target for Crash {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn restart(&mut self, rec: &mut RestartRecord) -> Result<i32> {
        let from = self.hs.log.len();
        // Only a live child of this hotsup is ours to kill.
        let st =
            procfs::stat(self.pid).with_context(|| format!("serving pid {} is gone", self.pid))?;
        if st.ppid != self.hs.pid() || st.state == 'Z' {
            bail!(
                "pid {} is not a live child of hotsup {}",
                self.pid,
                self.hs.pid()
            );
        }
        let pid = Pid::from_raw(self.pid).context("pid 0")?;
        let wall_trigger = std::time::SystemTime::now();
        rec.t_trigger = Instant::now();
        rustix::process::kill_process(pid, Signal::KILL)
            .with_context(|| format!("cannot SIGKILL pid {}", self.pid))?;
        let g = self.generation;
        let (i, ready) = self
            .hs
            .expect_event(from, ANSWER_TIMEOUT, "ready", |e| e.generation > Some(g))?;
        rec.ready_ms = Some(ms(self
            .hs
            .log
            .line(i)
            .at
            .saturating_duration_since(rec.t_trigger)));
        let new_g = ready.generation.unwrap_or(g + 1);
        let new_pid = ready.pid.context("`ready` without pid")?;
        let events: Vec<_> = self.hs.log.events_from(from).collect();
        rec.backoff_ms = events
            .iter()
            .find(|e| e.event == "restart_scheduled")
            .and_then(|e| e.u64("delay_ms"))
            .map(|v| v as f64);
        let trigger_us = wall_trigger
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        rec.spawn_ms = events
            .iter()
            .find(|e| e.is("spawned", new_g))
            .and_then(|e| e.wall_us())
            .map(|us| (us - trigger_us) as f64 / 1000.0);
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
    let how = format!(
        "hotsup run -l 127.0.0.1:0 -- examples/http; restart = SIGKILL of the serving child \
         (pid from `ready`), hotsup restarts it; a fresh hotsup every {CRASHES_PER_HOTSUP} crashes, \
         so its backoff (100 ms doubling, reset after 10 s of service) stays at most 1.6 s"
    );
    scenario(
        Which::Crash,
        opts,
        how,
        bins.http.display().to_string(),
        |d, out| {
            let rounds = opts.restarts.div_ceil(CRASHES_PER_HOTSUP).max(1);
            for round in 1..=rounds {
                let count = (opts.restarts - out.restarts.len() as u32).min(CRASHES_PER_HOTSUP);
                if count == 0 {
                    break;
                }
                out.rounds = round;
                let mut hs = Launch::new(&bins.hotsup, &bins.http).start()?;
                let addr = hs.expect_listening(START_TIMEOUT)?;
                out.address = Some(addr.to_string());
                let (_, ready) = hs.expect_ready(0, 1, START_TIMEOUT)?;
                let pid = ready.pid.context("`ready` without pid")?;
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
                let r = d.drive(&mut t, addr, opts, (count, round, warmup), out);
                t.hs.log.len();
                out.hotsup_problems.extend(
                    t.hs.log
                        .events_from(0)
                        .filter(|e| e.is_problem())
                        .map(|e| format!("{} {:?}", e.event, e.fields)),
                );
                // Dropping hotsup shuts it down and kills what it left behind.
                drop(t);
                r.with_context(|| format!("round {round}"))?;
            }
            Ok(())
        },
    )
}
