//! What starting a child in a cgroup costs the supervisor's thread: N rounds
//! of starting `sleep 60` and killing it, three ways, with the time each
//! start blocked the caller (until the child exec'd).
//!
//! ```text
//! cargo run --release --example cgroup_cost [N]     # as root; N defaults to 100
//! ```
//!
//! - `std + write`: std's `Command`, the child writing itself into
//!   `cgroup.procs` in `pre_exec` (how hotsup started children before it
//!   had its own fork);
//! - `clone3`: hotsup's spawn, the child born in its cgroup
//!   (`clone3(CLONE_INTO_CGROUP)`);
//! - `fork + write`: hotsup's spawn as on kernels without
//!   `CLONE_INTO_CGROUP`, the child writing itself into `cgroup.procs`.
//!
//! Each round creates the cgroup, spawns, `cgroup.kill`s, reaps, waits
//! until the cgroup is empty and removes it; only the spawn is timed.

use std::error::Error;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use hotsup::cgroup::{Cgroups, GenCgroup, Mode};
use hotsup::fork::{CStrings, Plan};
use rustix::process::{Pid, WaitOptions};

#[derive(Clone, Copy, PartialEq)]
enum Way {
    StdWrite,
    Clone3,
    ForkWrite,
}

/// `p50 / p99 / max` in µs.
fn summary(times: &[Duration]) -> String {
    let mut t: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    format!("{:.0} / {:.0} / {:.0}", at(0.5), at(0.99), at(1.0))
}

fn spawn(g: &GenCgroup, way: Way) -> Result<Pid, Box<dyn Error>> {
    let dir = g.open_enter()?;
    if way == Way::StdWrite {
        let procs = rustix::fs::open(
            g.dir().join("cgroup.procs"),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let raw = procs.as_raw_fd();
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("60").process_group(0);
        // SAFETY: one raw write on an fd the child inherited open (`procs`
        // lives until spawn returns).
        unsafe {
            cmd.pre_exec(move || {
                rustix::io::write(BorrowedFd::borrow_raw(raw), b"0")?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        return Ok(Pid::from_raw(child.id() as i32).ok_or("pid 0")?);
    }
    let argv = CStrings::new(["sleep", "60"])?;
    let envp = CStrings::new::<_, &str>([])?;
    let plan = Plan {
        path: c"/bin/sleep",
        argv: &argv,
        envp: &envp,
        cgroup: Some(dir.as_fd()),
        place: &[],
        keep: &[],
        nofile: None,
        rlimits: &[],
        umask: None,
        creds: None,
        chdir: None,
        parent: rustix::process::getpid(),
    };
    Ok(hotsup::fork::spawn_with(&plan, way == Way::ForkWrite)?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let cgroups = Cgroups::detect(Mode::Auto)?.ok_or("cgroups are off")?;
    let ways = [
        (Way::StdWrite, "std + write"),
        (Way::Clone3, "clone3"),
        (Way::ForkWrite, "fork + write"),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut id = 0;
    // Interleaved, so that load changes hit every way alike.
    for _ in 0..n {
        for (i, (way, _)) in ways.iter().enumerate() {
            id += 1;
            let g = cgroups.create(id)?;
            let t = Instant::now();
            let pid = spawn(&g, *way)?;
            times[i].push(t.elapsed());
            g.kill()?;
            rustix::process::waitpid(Some(pid), WaitOptions::empty())?;
            if !g.wait_empty(Duration::from_secs(10))? {
                return Err(format!("{} still populated", g.dir().display()).into());
            }
            g.remove()?;
        }
    }
    println!("{n} spawns of sleep 60 each way; µs the caller was blocked, p50 / p99 / max");
    for (i, (_, name)) in ways.iter().enumerate() {
        println!("{name:<14}{}", summary(&times[i]));
    }
    Ok(())
}
