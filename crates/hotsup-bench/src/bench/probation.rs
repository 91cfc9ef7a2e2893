//! Scenario "probation": `hotsup run --probation 5s` with
//! `examples/testchild` (protocol 2, so the previous generation is paused
//! on standby, not drained). Each round upgrades to a generation that
//! crashes 1 s after it is ready; hotsup rolls back and resumes the paused
//! one. Measured: from the crash (the bench waits on the crashing
//! process's pidfd) to the first response of the resumed generation on a
//! new connection, under a load that opens a new connection per request.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::{Load, LoadConfig, Report};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::Serialize;

use super::report::{Dist, LOAD_TIMEOUT, Table, Traffic, dist, ms};
use super::supervised::{Binaries, Launch};
use super::upgrades::{READY_TIMEOUT, START_TIMEOUT};

/// How long the crashing generation serves after it is ready.
const CRASH_AFTER_MS: u64 = 1000;
/// Pause after each rollback, with the resumed generation serving.
const GAP: Duration = Duration::from_millis(300);

/// One rollback; times in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub crashed_generation: u64,
    pub resumed_generation: u64,
    #[serde(skip)]
    pub t_crash: Instant,
    /// Crash -> first response of the resumed generation on a new
    /// connection.
    pub crash_to_first_response_ms: Option<f64>,
    /// The crashing generation's last response -> the resumed one's first.
    pub last_to_first_response_ms: Option<f64>,
    /// Crash -> `rolled_back` read.
    pub crash_to_rolled_back_read_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ProbationOutcome {
    pub requested: u32,
    pub concurrency: usize,
    pub rollbacks: Vec<Rollback>,
    pub crash_to_first_response: Option<Dist>,
    pub last_to_first_response: Option<Dist>,
    pub crash_to_rolled_back_read: Option<Dist>,
    pub load: Traffic,
    pub error: Option<String>,
}

impl ProbationOutcome {
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new(["rollbacks (ms)", "p50", "p99", "max"]);
        t.dist_row(
            "crash -> first response of the resumed generation",
            self.crash_to_first_response,
            2,
        );
        t.dist_row(
            "last response of the crashed one -> first of the resumed",
            self.last_to_first_response,
            2,
        );
        t.dist_row(
            "crash -> `rolled_back` read",
            self.crash_to_rolled_back_read,
            2,
        );
        t.render(out);
        let _ = writeln!(
            out,
            "  {} of {} rollbacks; load: {} new-connection workers, {} requests, {} failed {:?} \
             (requests cut by the deliberate crash)",
            self.rollbacks.len(),
            self.requested,
            self.concurrency,
            self.load.requests,
            self.load.failed,
            self.load.failures
        );
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  ERROR {e}");
        }
    }
}

/// Waits for the process of `pidfd` to exit; returns when it did.
fn wait_exit(pidfd: OwnedFd, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return Some(Instant::now()),
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

pub fn run(bins: &Binaries, rollbacks: u32, concurrency: usize) -> ProbationOutcome {
    let mut o = ProbationOutcome {
        requested: rollbacks,
        concurrency,
        ..ProbationOutcome::default()
    };
    let mut report = Report::default();
    if let Err(e) = measure(bins, &mut o, &mut report) {
        o.error = Some(format!("{e:#}"));
    }
    for r in &mut o.rollbacks {
        let first = report
            .records
            .iter()
            .filter(|s| s.generation == Some(r.resumed_generation) && s.completed() > r.t_crash)
            .map(|s| s.completed())
            .min();
        let last = report
            .records
            .iter()
            .filter(|s| s.generation == Some(r.crashed_generation))
            .map(|s| s.completed())
            .max();
        r.crash_to_first_response_ms = first.map(|t| ms(t.duration_since(r.t_crash)));
        r.last_to_first_response_ms = first
            .zip(last)
            .map(|(f, l)| ms(f.saturating_duration_since(l)));
    }
    o.crash_to_first_response = dist(
        o.rollbacks
            .iter()
            .filter_map(|r| r.crash_to_first_response_ms)
            .collect(),
    );
    o.last_to_first_response = dist(
        o.rollbacks
            .iter()
            .filter_map(|r| r.last_to_first_response_ms)
            .collect(),
    );
    o.crash_to_rolled_back_read = dist(
        o.rollbacks
            .iter()
            .map(|r| r.crash_to_rolled_back_read_ms)
            .collect(),
    );
    o.load = Traffic::of(&report);
    o
}

/// testchild behind a script: it crashes `CRASH_AFTER_MS` after it is
/// ready when the mode file says `crash-after-ready`.
fn app(dir: &Path, testchild: &Path) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let app = dir.join("app");
    let body = format!(
        "#!/bin/sh\nexec '{}' --mode-file '{}' --crash-after-ms {CRASH_AFTER_MS}\n",
        testchild.display(),
        dir.join("mode").display()
    );
    std::fs::write(&app, body).context("cannot write the app script")?;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755))?;
    Ok(app)
}

fn measure(bins: &Binaries, o: &mut ProbationOutcome, report: &mut Report) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("hotsup-bench-").tempdir()?;
    let mode = dir.path().join("mode");
    let app = app(dir.path(), &bins.testchild)?;
    let mut hs = Launch::new(&bins.hotsup, &app)
        .args(["--probation", "5s"])
        .start()?;
    let addr = hs.expect_listening(START_TIMEOUT)?;
    hs.expect_ready(0, 1, START_TIMEOUT)?;
    hs.expect_event(0, START_TIMEOUT, "protocol", |e| {
        e.generation == Some(1) && e.u64("version") >= Some(2)
    })
    .context("generation 1 must speak protocol 2 to be paused")?;
    let load = Load::start(LoadConfig {
        keep_alive: false,
        concurrency: o.concurrency,
        max_duration: (READY_TIMEOUT + Duration::from_secs(10)) * (o.requested + 1),
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    });
    let result = (|| -> Result<()> {
        if !load.wait_for_ok(1, Duration::from_secs(10)) {
            bail!("the load got no response within 10s");
        }
        // The resumed generation serves again after every rollback.
        let serving = 1;
        // Each upgrade gets the next generation number; the crashed ones are
        // gone.
        for next in (2..).take(o.requested as usize) {
            std::fs::write(&mode, "crash-after-ready")?;
            let from = hs.log.len();
            hs.try_signal(Signal::USR2)?;
            let (_, ready) = hs.expect_ready(from, next, READY_TIMEOUT)?;
            std::fs::write(&mode, "serve")?;
            let pid = ready
                .pid
                .and_then(Pid::from_raw)
                .context("`ready` without pid")?;
            let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
                .with_context(|| format!("pidfd_open({})", pid.as_raw_pid()))?;
            let waiter = thread::spawn(move || wait_exit(pidfd, READY_TIMEOUT));
            hs.expect_event(from, START_TIMEOUT, "standby", |e| {
                e.generation == Some(serving)
            })?;
            let (i, rolled) = hs.expect_event(from, READY_TIMEOUT, "rolled_back", |e| {
                e.generation == Some(next)
            })?;
            let t_crash = waiter
                .join()
                .ok()
                .flatten()
                .context("the crashing generation's exit was not seen")?;
            if rolled.u64("resumed") != Some(serving) {
                bail!(
                    "generation {next} was rolled back without resuming {serving}: {:?}",
                    rolled.fields
                );
            }
            hs.expect_event(from, READY_TIMEOUT, "resumed", |e| {
                e.generation == Some(serving)
            })?;
            o.rollbacks.push(Rollback {
                crashed_generation: next,
                resumed_generation: serving,
                t_crash,
                crash_to_first_response_ms: None,
                last_to_first_response_ms: None,
                crash_to_rolled_back_read_ms: ms(hs
                    .log
                    .line(i)
                    .at
                    .saturating_duration_since(t_crash)),
            });
            thread::sleep(GAP);
        }
        Ok(())
    })();
    *report = load.stop();
    hs.stop(Duration::from_secs(15));
    result
}
