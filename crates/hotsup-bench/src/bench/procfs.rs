//! What /proc says about a process: memory, CPU time, fds, threads, context
//! switches, and zombie children.

use std::fs;
use std::io;

/// A point-in-time sample of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    })
}

pub fn stat(pid: i32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

/// The number in a `Key:   value [kB]` line of a /proc status file.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_ascii_whitespace().next()?.parse().ok()
    })
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

/// Pids of the zombie children of `parent` (state `Z` and ppid `parent`).
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok(st) = stat(pid)
            && st.ppid == parent
            && st.state == 'Z'
        {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let text =
            "1096 (we(ird) name) S 1088 1096 1000 0 -1 4194560 120 0 0 0 7 3 0 0 20 0 4 0 123 0 0";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.comm, "we(ird) name");
        assert_eq!(st.state, 'S');
        assert_eq!((st.ppid, st.pgrp), (1088, 1096));
        assert_eq!((st.utime, st.stime), (7, 3));
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
        assert!(clock_ticks_per_second() > 0);
        assert!(s.cpu_ns.is_none_or(|ns| ns > 0), "{s:?}");
        assert!(zombie_children(me).is_empty());
    }
}
