//! What a cgroup per generation costs the supervisor, next to a process
//! group: N rounds of starting `sleep 60` and killing it, both ways.
//!
//! ```text
//! cargo run --release --example cgroup_cost [N]     # as root; N defaults to 100
//! ```
//!
//! Per round, process group: spawn in a new group, `killpg`, reap.
//! Per round, cgroup: create `gen-N`, open its `cgroup.procs`, spawn
//! (the child enters in `pre_exec`), `cgroup.kill`, reap, wait until the
//! cgroup is empty, remove it.

use std::error::Error;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use hotsup::cgroup::{self, Cgroups, Mode};
use rustix::process::{Pid, Signal};

/// Per-round times of each phase.
#[derive(Default)]
struct Phases {
    create: Vec<Duration>,
    spawn: Vec<Duration>,
    kill: Vec<Duration>,
    reap: Vec<Duration>,
    remove: Vec<Duration>,
    total: Vec<Duration>,
}

/// `median / p90 / max` in µs.
fn summary(times: &[Duration]) -> String {
    if times.is_empty() {
        return "-".into();
    }
    let mut t: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    format!("{:.0} / {:.0} / {:.0}", at(0.5), at(0.9), at(1.0))
}

fn main() -> Result<(), Box<dyn Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let cgroups = Cgroups::detect(Mode::Auto)?.ok_or("cgroups are off")?;

    let mut group = Phases::default();
    for _ in 0..n {
        let round = Instant::now();
        let t = Instant::now();
        let mut child = Command::new("sleep").arg("60").process_group(0).spawn()?;
        group.spawn.push(t.elapsed());
        let t = Instant::now();
        let pid = Pid::from_raw(child.id() as i32).ok_or("pid 0")?;
        rustix::process::kill_process_group(pid, Signal::KILL)?;
        group.kill.push(t.elapsed());
        let t = Instant::now();
        child.wait()?;
        group.reap.push(t.elapsed());
        group.total.push(round.elapsed());
    }

    let mut cg = Phases::default();
    for id in 1..=u64::from(n) {
        let round = Instant::now();
        let t = Instant::now();
        let g = cgroups.create(id)?;
        cg.create.push(t.elapsed());
        let t = Instant::now();
        let enter = g.open_enter()?;
        let raw = enter.as_raw_fd();
        let mut cmd = Command::new("sleep");
        cmd.arg("60").process_group(0);
        // SAFETY: enter_in_child makes one raw write on an fd the child
        // inherited open (`enter` lives until spawn returns).
        unsafe {
            cmd.pre_exec(move || cgroup::enter_in_child(raw));
        }
        let mut child = cmd.spawn()?;
        drop(enter);
        cg.spawn.push(t.elapsed());
        let t = Instant::now();
        g.kill()?;
        cg.kill.push(t.elapsed());
        let t = Instant::now();
        child.wait()?;
        if !g.wait_empty(Duration::from_secs(10))? {
            return Err(format!("{} still populated", g.dir().display()).into());
        }
        cg.reap.push(t.elapsed());
        let t = Instant::now();
        g.remove()?;
        cg.remove.push(t.elapsed());
        cg.total.push(round.elapsed());
    }

    println!("{n} rounds of sleep 60; µs per round, median / p90 / max");
    println!("{:<16}{:<24}cgroup", "phase", "process group");
    let rows = [
        ("create", &group.create, &cg.create),
        ("spawn (+enter)", &group.spawn, &cg.spawn),
        ("kill", &group.kill, &cg.kill),
        ("reap (+empty)", &group.reap, &cg.reap),
        ("remove", &group.remove, &cg.remove),
        ("round", &group.total, &cg.total),
    ];
    for (name, a, b) in rows {
        println!("{name:<16}{:<24}{}", summary(a), summary(b));
    }
    Ok(())
}
