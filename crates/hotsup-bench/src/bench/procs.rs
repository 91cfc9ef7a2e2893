//! Servers the bench starts directly (without hotsup): spawned with a parent
//! death signal, signalled by pid only, and always killed and reaped when
//! their handle is dropped, on every path (errors and panics included).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use command_fds::{CommandFdExt, FdMapping};
use rustix::process::{Pid, Signal};

/// How long a SIGKILLed process may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets `PR_SET_PDEATHSIG` to `sig` in the child of `cmd`, so that the
/// process dies with the bench even if the bench is SIGKILLed. Must be
/// called on the thread that will live as long as the process (the main
/// thread): the death signal fires when the spawning thread ends.
pub fn die_with_bench(cmd: &mut Command, sig: Signal) {
    let bench_pid = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes two raw syscalls (prctl,
    // getppid) on values captured by copy, and allocates nothing (a raw OS
    // error needs no allocation).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(sig))?;
            if rustix::process::getppid() != Some(bench_pid) {
                // The bench died before the prctl took effect.
                return Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

/// A server process started by the bench.
pub struct Server {
    child: Child,
    pid: i32,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Starts `program args...` with stdin, stdout and stderr on /dev/null,
    /// and `env` added. With `fd3`, that socket is placed at fd 3 (and only
    /// there) with `LISTEN_FDS=1` and `LISTEN_PID` unset, as `systemfd
    /// --no-pid` does.
    pub fn spawn(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        fd3: Option<BorrowedFd<'_>>,
    ) -> Result<Server> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Whatever the bench was started with: the server must not
            // mistake itself for a hotsup or systemd child.
            .env_remove("HOTSUP_FD")
            .env_remove("HOTSUP_GENERATION")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_FDS_FIRST_FD")
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(fd) = fd3 {
            let owned = fd
                .try_clone_to_owned()
                .context("cannot duplicate the held listening socket")?;
            cmd.fd_mappings(vec![FdMapping {
                parent_fd: owned,
                child_fd: 3,
            }])
            .context("cannot map the listening socket to fd 3")?;
            cmd.env("LISTEN_FDS", "1");
        }
        die_with_bench(&mut cmd, Signal::KILL);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id() as i32;
        Ok(Server {
            child,
            pid,
            exit: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.exit = Some(s);
        }
        self.exit
    }

    /// Sends `sig` to the process (never to a group); refuses once it has
    /// been reaped, so a recycled pid is never signalled.
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if let Some(s) = self.exited() {
            bail!("pid {} already exited ({s})", self.pid);
        }
        let pid = Pid::from_raw(self.pid).context("pid 0")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("cannot signal pid {}", self.pid))
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGKILL (if still running) and reap, bounded.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exited().is_none() {
            let _ = self.signal(Signal::KILL);
        }
        self.wait_exit(REAP_TIMEOUT)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.kill().is_none() {
            eprintln!(
                "hotsup-bench: pid {} did not exit within {:?} of SIGKILL",
                self.pid, REAP_TIMEOUT
            );
        }
    }
}

/// `exit code N` or `killed by signal N`.
pub fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released, so that a server can
/// bind it by itself).
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    l.local_addr().context("getsockname")
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard)
/// after the change.
pub fn raise_nofile() -> (Option<u64>, Option<u64>) {
    let limit = hotsup_os::raise_nofile_limit();
    (limit.now, limit.hard)
}
