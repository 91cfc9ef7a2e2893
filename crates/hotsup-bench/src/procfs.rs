//! Everything the bench and the end-to-end tests read from
//! /proc, in one place: a process's memory, CPU time, fds, threads and
//! context switches, its children and environment, and the machine.

use std::fs;
use std::io;

/// A point-in-time sample of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcSample {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// `Threads`.
    pub threads: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU time in nanoseconds: the first field of /proc/PID/task/*/schedstat
    /// (`sum_exec_runtime`), summed over the threads; `None` where the
    /// kernel does not provide it.
    pub cpu_ns: Option<u64>,
    /// Entries of /proc/PID/fd.
    pub fds: u64,
    /// `voluntary_ctxt_switches`, summed over the threads.
    pub voluntary_ctxt: u64,
    /// `nonvoluntary_ctxt_switches`, summed over the threads.
    pub nonvoluntary_ctxt: u64,
}

impl ProcSample {
    pub fn ctxt_switches(&self) -> u64 {
        self.voluntary_ctxt + self.nonvoluntary_ctxt
    }

    /// CPU milliseconds from `self` to `later` (schedstat ns where
    /// available, clock ticks otherwise).
    pub fn cpu_ms_until(&self, later: &ProcSample) -> f64 {
        match (self.cpu_ns, later.cpu_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6,
            _ => ticks_to_ms(later.cpu_ticks.saturating_sub(self.cpu_ticks)),
        }
    }

    /// Context switches from `self` to `later`.
    pub fn ctxt_until(&self, later: &ProcSample) -> u64 {
        later.ctxt_switches().saturating_sub(self.ctxt_switches())
    }
}

/// Clock ticks per second for /proc CPU times: `sysconf(_SC_CLK_TCK)`, read
/// by rustix from the auxiliary vector (the kernel's `USER_HZ`, 100 on
/// every mainstream Linux architecture); 100 if it reports nothing.
pub fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        n => n,
    }
}

/// Converts clock ticks to milliseconds.
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / clock_ticks_per_second() as f64
}

/// The fields of /proc/PID/stat that the bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot when the process started: with the pid, it
    /// names one process even after the pid is reused.
    pub starttime: u64,
}

/// Parses the text of /proc/PID/stat. `comm` may contain spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: i32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

/// Whether `pid` runs: it exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// The number in a `Key:   value [kB]` line of a /proc status file.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// `VmRSS` of `pid`, in KiB.
pub fn rss_kib(pid: i32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, "VmRSS")
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Samples process `pid`.
pub fn sample(pid: i32) -> io::Result<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let st = stat(pid)?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    // /proc/PID/status counts the switches of the main thread only.
    let (mut voluntary, mut nonvoluntary) = (0, 0);
    let mut cpu_ns = Some(0u64);
    for task in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let run_ns = fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok());
        cpu_ns = cpu_ns.zip(run_ns).map(|(a, b)| a + b);
        // A thread may exit while being read: skip it.
        if let Ok(s) = fs::read_to_string(task.path().join("status")) {
            voluntary += status_field(&s, "voluntary_ctxt_switches").unwrap_or(0);
            nonvoluntary += status_field(&s, "nonvoluntary_ctxt_switches").unwrap_or(0);
        }
    }
    Ok(ProcSample {
        rss_kib: status_field(&status, "VmRSS").unwrap_or(0),
        threads: status_field(&status, "Threads").unwrap_or(0),
        cpu_ticks: st.utime + st.stime,
        cpu_ns,
        fds,
        voluntary_ctxt: voluntary,
        nonvoluntary_ctxt: nonvoluntary,
    })
}

/// Every process whose /proc/PID/stat satisfies `pred`, with its stat.
fn processes(pred: impl Fn(&Stat) -> bool) -> Vec<(i32, Stat)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid).ok()?)))
        .filter(|(_, st)| pred(st))
        .collect()
}

/// The live (not zombie) children of `parent`, with their start times.
pub fn children(parent: i32) -> Vec<(i32, u64)> {
    processes(|st| st.ppid == parent && !matches!(st.state, 'Z' | 'X'))
        .into_iter()
        .map(|(pid, st)| (pid, st.starttime))
        .collect()
}

/// Pids of the zombie children of `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    processes(|st| st.ppid == parent && st.state == 'Z')
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// A variable of `pid`'s environment as it was at exec.
pub fn environ_var(pid: i32, name: &str) -> io::Result<Option<String>> {
    let env = fs::read(format!("/proc/{pid}/environ"))?;
    Ok(env.split(|b| *b == 0).find_map(|kv| {
        let value = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    }))
}

/// How many of `pid`'s fds are connections accepted on the unix stream
/// socket bound at `path` (/proc/net/unix names an accepted socket by its
/// listener's path; the listener itself has the `__SO_ACCEPTCON` flag).
pub fn unix_connections(pid: i32, path: &std::path::Path) -> usize {
    const ACCEPTCON: u32 = 1 << 16;
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return 0;
    };
    let path = path.to_string_lossy();
    let accepted: std::collections::HashSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            (f.get(7) == Some(&&*path) && flags & ACCEPTCON == 0).then_some(*f.get(6)?)
        })
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']'))
                .is_some_and(|inode| accepted.contains(inode))
        })
        .count()
}

/// The machine a run happened on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub clk_tck: u64,
    /// /proc/loadavg when detected (other work on the machine skews every
    /// number).
    pub loadavg: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = ["model name", "Hardware", "cpu model", "uarch", "cpu"]
            .iter()
            .find_map(|key| {
                cpuinfo.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            cpu_model,
            clk_tck: clock_ticks_per_second(),
            loadavg: loadavg(),
        }
    }
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_ascii_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accepted_unix_connections_only() {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let listener = UnixListener::bind(&path).unwrap();
        // The listener and the unbound client end are not counted.
        let client = UnixStream::connect(&path).unwrap();
        assert_eq!(unix_connections(me, &path), 0, "before accept");
        let (accepted, _) = listener.accept().unwrap();
        let other = UnixStream::connect(&path).unwrap();
        let (accepted2, _) = listener.accept().unwrap();
        assert_eq!(unix_connections(me, &path), 2);
        assert_eq!(unix_connections(me, &dir.path().join("other.sock")), 0);
        drop(accepted);
        assert_eq!(unix_connections(me, &path), 1);
        drop((accepted2, client, other));
        assert_eq!(unix_connections(me, &path), 0);
    }

    #[test]
    fn parses_stat() {
        let text =
            "1096 (we(ird) name) S 1088 1096 1000 0 -1 4194560 120 0 0 0 7 3 0 0 20 0 4 0 123 0 0";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.comm, "we(ird) name");
        assert_eq!(st.state, 'S');
        assert_eq!((st.ppid, st.pgrp), (1088, 1096));
        assert_eq!((st.utime, st.stime, st.starttime), (7, 3, 123));
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn parses_status() {
        let s = "Name:\thotsup\nVmRSS:\t    5120 kB\nThreads:\t1\nvoluntary_ctxt_switches:\t42\n";
        assert_eq!(status_field(s, "VmRSS"), Some(5120));
        assert_eq!(status_field(s, "Threads"), Some(1));
        assert_eq!(status_field(s, "voluntary_ctxt_switches"), Some(42));
        assert_eq!(status_field(s, "nonvoluntary_ctxt_switches"), None);
    }

    #[test]
    fn samples_self() {
        let me = std::process::id() as i32;
        let s = sample(me).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1 && s.fds >= 3, "{s:?}");
        assert_eq!(rss_kib(me).map(|r| r > 0).ok(), Some(true));
        assert!(clock_ticks_per_second() > 0);
        assert!(s.cpu_ns.is_none_or(|ns| ns > 0), "{s:?}");
        assert!(zombie_children(me).is_empty());
        assert!(alive(me));
        assert!(environ_var(me, "PATH").unwrap().is_some());
        assert_eq!(
            environ_var(me, "HOTSUP_BENCH_NO_SUCH_VARIABLE").unwrap(),
            None
        );
    }

    #[test]
    fn finds_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let found = children(std::process::id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|(p, _)| *p == pid), "{found:?}");
    }
}
