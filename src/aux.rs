//! Auxiliary processes: commands hotsup runs beside the generations: watch
//! mode's `--build`, and the hooks (`--ready-probe`, `--check`,
//! `--after-upgrade`, see [`crate::hooks`]).
//!
//! hotsup has one reaper, the supervisor's `wait()` loop, so these are not
//! waited for by their owners (nor by `tokio::process`, whose own reaper
//! and hotsup's would steal each other's exit statuses). They are spawned
//! with std's `Command` from the runtime's thread, registered here by pid,
//! and the reaper asks this registry about every pid before it hands an
//! exit to the lifecycle core.
//!
//! Each runs in a process group of its own (its pid), so that it can be
//! stopped with everything it started; it gets SIGTERM if hotsup dies, the
//! signal state of a fresh process, and hotsup's stdout and stderr, so that
//! what it prints (a compiler's errors, in colour on a terminal) reaches
//! the terminal unchanged.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::lifecycle::ExitInfo;

/// What an auxiliary process is for; its exit goes to that owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuxKind {
    /// Watch mode's `--build`.
    Build,
    /// The new binary's check before `hotsup upgrade --self`.
    SelfCheck,
    /// A `--ready-probe` run.
    Probe,
    /// A `--check` run.
    Check,
    /// An `--after-upgrade` run.
    AfterUpgrade,
}

/// An auxiliary process that was reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxExit {
    pub kind: AuxKind,
    pub pid: Pid,
    pub status: ExitInfo,
    /// From spawn to reap.
    pub elapsed: Duration,
}

#[derive(Debug)]
struct Aux {
    kind: AuxKind,
    started: Instant,
}

/// The auxiliary processes alive (not yet reaped). Empty, it allocates
/// nothing.
#[derive(Debug, Default)]
pub struct AuxProcesses {
    /// By raw pid (rustix's `Pid` is not `Ord`).
    by_pid: BTreeMap<i32, Aux>,
}

impl AuxProcesses {
    /// Starts `cmd` as an auxiliary process of `kind`. stdin is
    /// `/dev/null`; stdout and stderr are hotsup's unless `cmd` sets them
    /// (the hooks capture theirs). `nofile` is the soft
    /// RLIMIT_NOFILE hotsup was started with (it raises its own).
    pub fn spawn(&mut self, kind: AuxKind, cmd: Command, nofile: Option<u64>) -> io::Result<Pid> {
        self.spawn_with_stdin(kind, cmd, nofile, Stdio::null())
    }

    /// [`AuxProcesses::spawn`], with `stdin` as its stdin.
    pub fn spawn_with_stdin(
        &mut self,
        kind: AuxKind,
        mut cmd: Command,
        nofile: Option<u64>,
        stdin: Stdio,
    ) -> io::Result<Pid> {
        let hotsup_pid = rustix::process::getpid();
        cmd.stdin(stdin).process_group(0);
        // SAFETY: the closure runs between fork and exec in the child;
        // `prepare_aux` makes only async-signal-safe raw syscalls on the
        // two copied values and allocates nothing.
        unsafe {
            cmd.pre_exec(move || crate::child::prepare_aux(hotsup_pid, nofile));
        }
        let child = cmd.spawn()?;
        let raw = i32::try_from(child.id()).map_err(io::Error::other)?;
        let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::other("spawn returned pid 0"))?;
        // Dropped without waiting: the supervisor's wait() loop reaps it.
        drop(child);
        self.by_pid.insert(
            pid.as_raw_pid(),
            Aux {
                kind,
                started: Instant::now(),
            },
        );
        Ok(pid)
    }

    /// Called by the reaper for every pid it collects: the exit, if `pid`
    /// was an auxiliary process (it is forgotten here).
    pub fn reaped(&mut self, pid: Pid, status: ExitInfo) -> Option<AuxExit> {
        let aux = self.by_pid.remove(&pid.as_raw_pid())?;
        Some(AuxExit {
            kind: aux.kind,
            pid,
            status,
            elapsed: aux.started.elapsed(),
        })
    }

    /// SIGKILLs the process group of `pid`, if it is a live auxiliary
    /// process. Its exit is still reaped and reported as usual.
    pub fn kill(&self, pid: Pid) {
        // Not reaped yet, so the group id cannot belong to anyone else.
        if self.by_pid.contains_key(&pid.as_raw_pid()) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

impl Drop for AuxProcesses {
    /// hotsup is exiting: nothing it started may outlive it.
    fn drop(&mut self) {
        for pid in self.by_pid.keys().filter_map(|p| Pid::from_raw(*p)) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

/// `sh -c COMMAND`, without the variables meant for hotsup itself (its
/// `NOTIFY_SOCKET`, `LISTEN_FDS`, ...).
pub fn shell(command: &str) -> Command {
    let mut cmd = crate::child::scrubbed(std::path::Path::new("/bin/sh"));
    cmd.arg("-c").arg(command);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reap(pid: Pid) -> ExitInfo {
        let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
            .expect("waitpid")
            .expect("status")
            .1;
        ExitInfo {
            code: status.exit_status(),
            signal: status.terminating_signal(),
        }
    }

    #[test]
    fn spawns_registers_and_routes_the_exit() {
        let mut aux = AuxProcesses::default();
        let pid = aux
            .spawn(AuxKind::Build, shell("exit 7"), None)
            .expect("spawn");
        // Its own process group.
        assert_eq!(rustix::process::getpgid(Some(pid)).ok(), Some(pid));
        let status = reap(pid);
        let exit = aux.reaped(pid, status).expect("registered");
        assert_eq!(exit.kind, AuxKind::Build);
        assert_eq!(exit.status.code, Some(7));
        assert!(aux.is_empty());
        // A pid it does not know is someone else's.
        assert_eq!(aux.reaped(pid, status), None);
    }

    /// Alive and not a zombie.
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !matches!(
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next()),
                Some("Z" | "X")
            )
        })
    }

    #[test]
    fn kill_takes_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("grandchild");
        let mut aux = AuxProcesses::default();
        // A shell that starts a grandchild in its group and waits for it.
        let script = format!("sleep 30 & echo $! > {}; wait", file.display());
        let pid = aux
            .spawn(AuxKind::Build, shell(&script), None)
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: i32 = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "no grandchild pid");
            std::thread::sleep(Duration::from_millis(5));
        };
        aux.kill(pid);
        let status = reap(pid);
        assert_eq!(status.signal, Some(libc::SIGKILL));
        while running(grandchild) {
            assert!(
                Instant::now() < deadline,
                "the build's grandchild outlived it"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(aux.reaped(pid, status).is_some());
    }
}
