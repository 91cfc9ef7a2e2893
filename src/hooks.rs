//! The commands hotsup runs around the lifecycle: `--ready-probe`,
//! `--check` and `--after-upgrade`. The core decides when each runs
//! ([`Effect::Probe`](crate::lifecycle::Effect::Probe), `Check`,
//! `AfterUpgrade`); this module runs it and turns its end into the input
//! the core waits for.
//!
//! Each run is `sh -c CMD`, an auxiliary process ([`crate::aux`]): a
//! process group of its own, reaped by the supervisor's one reaper. Its
//! stdout and stderr go to a pipe that a task of its own drains without
//! blocking the loop, keeping only the last bytes (a bounded tail), so
//! that a chatty command neither blocks on a full pipe nor floods the log.
//! Each run is bounded by its timeout: past it, its process group is
//! SIGKILLed and the run counts as failed. When the main process exits,
//! whatever it left in its group is killed too: a hook leaves nothing
//! running.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aux::{self, AuxExit, AuxKind, AuxProcesses};
use crate::lifecycle::{GenId, Input, WorkerId};

/// What is kept of a probe's output: its last lines, logged with every
/// failed try (one every `PROBE_RETRY` at most).
const PROBE_TAIL: usize = 1024;
/// What is kept of a check's or an after-upgrade hook's output.
const TAIL: usize = 4096;
/// Reads of what is left in the pipe once the hook exited, at most: a
/// process that escaped its group could write forever.
const FINAL_READS: usize = 64;
const CHUNK: usize = 4096;

/// One hook: the command and how long a run of it may take.
#[derive(Debug, Clone)]
pub struct Hook {
    pub command: String,
    pub timeout: Duration,
}

/// The hooks given on the command line.
#[derive(Debug, Clone, Default)]
pub struct HookCommands {
    pub ready_probe: Option<Hook>,
    pub check: Option<Hook>,
    pub after_upgrade: Option<Hook>,
}

/// What a run is for; its end goes to the core as the matching input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Probe(WorkerId),
    Check(GenId),
    AfterUpgrade(GenId),
}

impl Purpose {
    fn kind(self) -> AuxKind {
        match self {
            Purpose::Probe(_) => AuxKind::Probe,
            Purpose::Check(_) => AuxKind::Check,
            Purpose::AfterUpgrade(_) => AuxKind::AfterUpgrade,
        }
    }

    fn tail(self) -> usize {
        match self {
            Purpose::Probe(_) => PROBE_TAIL,
            _ => TAIL,
        }
    }

    /// The input that reports a run's end to the core.
    fn done(self, ok: bool, detail: String) -> Input {
        match self {
            Purpose::Probe(worker) => Input::ProbeDone { worker, ok, detail },
            Purpose::Check(generation) => Input::CheckDone {
                generation,
                ok,
                detail,
            },
            Purpose::AfterUpgrade(generation) => Input::AfterUpgradeDone {
                generation,
                ok,
                detail,
            },
        }
    }
}

/// Why a run was stopped before it ended by itself.
#[derive(Debug, Clone)]
enum Stopped {
    TimedOut(Duration),
    /// By hotsup, for this reason (its worker was killed, a newer run
    /// replaced it, hotsup is stopping).
    Cancelled(&'static str),
}

struct Run {
    purpose: Purpose,
    timeout: Duration,
    deadline: Instant,
    stopped: Option<Stopped>,
    output: Output,
}

/// The last bytes a run wrote.
#[derive(Debug, Default)]
struct Tail {
    bytes: std::collections::VecDeque<u8>,
    cap: usize,
    /// Whether earlier bytes were dropped.
    cut: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        if data.len() > self.cap {
            self.cut = true;
        }
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        if over > 0 {
            self.cut = true;
            self.bytes.drain(..over.min(self.bytes.len()));
        }
        self.bytes.extend(data);
    }

    /// One line: the output's lines, trimmed, joined with ` | `, control
    /// characters as spaces, so that a log line stays one line.
    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let raw = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let mut lines = raw.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut out = String::new();
        if self.cut {
            out.push('…');
        }
        if let Some(first) = lines.next() {
            out.push_str(first);
        }
        for l in lines {
            out.push_str(" | ");
            out.push_str(l);
        }
        out.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

/// A run's stdout and stderr, read by a task of its own.
struct Output {
    fd: Arc<AsyncFd<OwnedFd>>,
    tail: Arc<Mutex<Tail>>,
    reader: JoinHandle<()>,
}

impl Drop for Output {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The hooks running now, by pid.
pub struct Hooks {
    cfg: HookCommands,
    /// The soft RLIMIT_NOFILE hotsup started with, restored for the hooks.
    nofile: Option<u64>,
    runs: BTreeMap<i32, Run>,
}

impl Hooks {
    pub fn new(cfg: HookCommands, nofile: Option<u64>) -> Hooks {
        Hooks {
            cfg,
            nofile,
            runs: BTreeMap::new(),
        }
    }

    /// The commands a config file read at an upgrade gives: for the runs
    /// that start from now on (those running finish as they began).
    pub fn set_commands(&mut self, cfg: HookCommands) {
        self.cfg = cfg;
    }

    fn hook(&self, purpose: Purpose) -> Option<&Hook> {
        match purpose {
            Purpose::Probe(_) => self.cfg.ready_probe.as_ref(),
            Purpose::Check(_) => self.cfg.check.as_ref(),
            Purpose::AfterUpgrade(_) => self.cfg.after_upgrade.as_ref(),
        }
    }

    /// Starts the hook for `purpose` with `env` added to hotsup's
    /// environment. On error nothing runs, and the returned input reports
    /// the failure to the core at once.
    pub fn start(
        &mut self,
        aux: &mut AuxProcesses,
        purpose: Purpose,
        env: &[(&str, String)],
    ) -> Result<Pid, Input> {
        let Some(hook) = self.hook(purpose).cloned() else {
            let flag = match purpose {
                Purpose::Probe(_) => "--ready-probe",
                Purpose::Check(_) => "--check",
                Purpose::AfterUpgrade(_) => "--after-upgrade",
            };
            return Err(purpose.done(false, format!("no {flag} command")));
        };
        match self.spawn(aux, purpose, &hook, env) {
            Ok(pid) => Ok(pid),
            Err(e) => Err(purpose.done(false, format!("cannot run /bin/sh: {e}"))),
        }
    }

    fn spawn(
        &mut self,
        aux: &mut AuxProcesses,
        purpose: Purpose,
        hook: &Hook,
        env: &[(&str, String)],
    ) -> io::Result<Pid> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // Only hotsup's end: the hook writes to a blocking pipe, as to a
        // terminal.
        rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: an OwnedFd is open and keeps returning the same fd until
        // it is dropped, which happens only when the AsyncFd that owns it is
        // dropped.
        let fd = Arc::new(unsafe { AsyncFd::register_with_interest(read, Interest::READABLE) }?);
        let mut cmd = aux::shell(&hook.command);
        cmd.stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `cmd`, and with it hotsup's copies of the write end, is dropped
        // once the hook started: its end of file is the hook's.
        let pid = aux.spawn(purpose.kind(), cmd, self.nofile)?;
        let tail = Arc::new(Mutex::new(Tail {
            cap: purpose.tail(),
            ..Tail::default()
        }));
        let reader = tokio::spawn(read_tail(fd.clone(), tail.clone()));
        self.runs.insert(
            pid.as_raw_pid(),
            Run {
                purpose,
                timeout: hook.timeout,
                deadline: Instant::now() + hook.timeout,
                stopped: None,
                output: Output { fd, tail, reader },
            },
        );
        Ok(pid)
    }

    /// When the next run is over its timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter(|r| r.stopped.is_none())
            .map(|r| r.deadline)
            .min()
    }

    /// Kills the runs that are over their timeout; each is reported as
    /// failed once reaped.
    pub fn expire(&mut self, aux: &AuxProcesses) {
        let now = Instant::now();
        for (pid, run) in &mut self.runs {
            if run.stopped.is_none() && run.deadline <= now {
                run.stopped = Some(Stopped::TimedOut(run.timeout));
                if let Some(p) = Pid::from_raw(*pid) {
                    aux.kill(p);
                }
            }
        }
    }

    /// Kills the runs `which` picks; each is reported, as failed, once
    /// reaped.
    pub fn cancel(
        &mut self,
        aux: &AuxProcesses,
        why: &'static str,
        which: impl Fn(Purpose) -> bool,
    ) {
        for (pid, run) in &mut self.runs {
            if run.stopped.is_none() && which(run.purpose) {
                run.stopped = Some(Stopped::Cancelled(why));
                if let Some(p) = Pid::from_raw(*pid) {
                    aux.kill(p);
                }
            }
        }
    }

    /// A hook's main process was reaped: what the core must be told.
    pub fn reaped(&mut self, exit: &AuxExit) -> Option<Input> {
        let run = self.runs.remove(&exit.pid.as_raw_pid())?;
        // What it left in its group goes with it (the group outlives its
        // leader only through such processes, so the id is still its).
        let _ = rustix::process::kill_process_group(exit.pid, Signal::KILL);
        let output = finish(&run.output);
        let (ok, how) = match &run.stopped {
            Some(Stopped::TimedOut(t)) => (
                false,
                format!("timed out after {}", humantime::format_duration(*t)),
            ),
            Some(Stopped::Cancelled(why)) => (false, format!("cancelled: {why}")),
            None if exit.status.success() => (true, String::new()),
            None => (false, exit.status.to_string()),
        };
        let detail = match (how.is_empty(), output.is_empty()) {
            (_, true) => how,
            (true, false) => output,
            (false, false) => format!("{how}: {output}"),
        };
        Some(run.purpose.done(ok, detail))
    }
}

/// Whatever is still in the pipe, then the tail as one line.
fn finish(out: &Output) -> String {
    let mut buf = [0u8; CHUNK];
    let Ok(mut tail) = out.tail.lock() else {
        return String::new();
    };
    for _ in 0..FINAL_READS {
        match rustix::io::read(out.fd.get_ref(), &mut buf) {
            Ok(0) => break,
            Ok(n) => tail.push(&buf[..n]),
            Err(rustix::io::Errno::INTR) => continue,
            // EAGAIN: nothing more for now; the hook is gone.
            Err(_) => break,
        }
    }
    tail.text()
}

/// Reads a hook's output as it comes, keeping its tail, until end of file.
async fn read_tail(fd: Arc<AsyncFd<OwnedFd>>, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; CHUNK];
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        match rustix::io::read(fd.get_ref(), &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf[..n]);
                }
            }
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        // AsyncFd readiness does not use up the task's budget: a hook that
        // writes without pause must not starve the supervisor.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(cap: usize, chunks: &[&str]) -> String {
        let mut t = Tail {
            cap,
            ..Tail::default()
        };
        for c in chunks {
            t.push(c.as_bytes());
        }
        t.text()
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_as_one_line() {
        assert_eq!(tail(100, &["a\n", "\n  b \r\nc"]), "a | b | c");
        assert_eq!(tail(4, &["abcdef"]), "…cdef");
        assert_eq!(tail(4, &["ab", "cdef", "g"]), "…defg");
        assert_eq!(tail(8, &["x\x1b[31my"]), "x [31my");
        assert_eq!(tail(8, &[]), "");
    }
}
