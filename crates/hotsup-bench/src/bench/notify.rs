//! The children's `NOTIFY_SOCKET`, before and after it became one socket
//! per worker with bounded reading (issue 8), measured side by side with a
//! hotsup built from an older commit (`--old-hotsup`) when one is given:
//!
//! - "notify-flood": 3 processes that are no generation send 2 KiB
//!   datagrams as fast as they can, for 10 s, to the socket the serving
//!   child was given (its `NOTIFY_SOCKET`, read from /proc/PID/environ):
//!   hotsup's RSS, the log lines it wrote, and whether the app kept
//!   serving;
//! - "notify-helper": upgrades of an app whose `READY=1` comes from a
//!   helper that exits at once (a shell script that runs python3 to send
//!   it and `os._exit(0)`, then execs `sleep`), by `hotsup upgrade
//!   --control`: how many fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs;
use hotsup_bench::{Load, LoadConfig, request_once};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::procs::{self, die_with_bench};
use super::report::{Dist, LOAD_TIMEOUT, Lat, PROBE_TIMEOUT, Table, dist, f, ms};
use super::supervised::{Binaries, Launch};
use super::throughput::wait_answer;

/// Processes flooding the socket.
pub const FLOODERS: usize = 3;
/// Size of each datagram.
const DATAGRAM: usize = 2048;
/// Time given to hotsup to write the lines the flood caused.
const LOG_SETTLE: Duration = Duration::from_secs(2);

/// A hotsup to measure: label, binary, its HTTP example, JSON log or not.
struct Build<'a> {
    label: String,
    hotsup: &'a Path,
    http: &'a Path,
    json: bool,
}

fn builds(bins: &Binaries) -> Vec<Build<'_>> {
    let mut v = Vec::new();
    if let Some(o) = &bins.old {
        v.push(Build {
            label: format!("old ({})", o.hotsup.display()),
            hotsup: &o.hotsup,
            http: &o.http,
            json: false,
        });
    }
    v.push(Build {
        label: "this hotsup".into(),
        hotsup: &bins.hotsup,
        http: &bins.http,
        json: true,
    });
    v
}

// ---------------------------------------------------------------- flood

/// What one flooding process did.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Sent {
    pub datagrams: u64,
    /// Sends that waited 100 ms without the socket taking them.
    pub timeouts: u64,
    pub errors: u64,
}

/// `hotsup-bench flood-notify`: sends 2 KiB datagrams to `socket` for
/// `duration`, as fast as it takes them.
pub fn flood(socket: &Path, duration: Duration) -> Sent {
    let mut sent = Sent::default();
    let Ok(sock) = UnixDatagram::unbound() else {
        sent.errors += 1;
        return sent;
    };
    // Bounded: a receiver that stops reading costs 100 ms per send.
    let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
    let payload = [b'x'; DATAGRAM];
    let until = Instant::now() + duration;
    while Instant::now() < until {
        match sock.send_to(&payload, socket) {
            Ok(_) => sent.datagrams += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                sent.timeouts += 1
            }
            Err(_) => {
                sent.errors += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    sent
}

#[derive(Debug, Default, Serialize)]
pub struct FloodRow {
    pub build: String,
    pub seconds: f64,
    pub sent: Sent,
    pub rss_kib_before: u64,
    pub rss_kib_max: u64,
    pub rss_kib_after: u64,
    /// Lines on hotsup's stderr from the flood's start to 2 s after its end.
    pub log_lines: u64,
    /// The app under a keep-alive load meanwhile.
    pub served_ok: u64,
    pub served_failed: u64,
    pub latency: Option<Lat>,
    /// hotsup answered (through its app) and was alive after the flood.
    pub serving_after: bool,
    /// hotsup's graceful shutdown after the flood, ms.
    pub shutdown_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct FloodOutcome {
    pub rows: Vec<FloodRow>,
}

impl FloodOutcome {
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "NOTIFY_SOCKET flood",
            "datagrams sent",
            "RSS KiB before",
            "max",
            "after",
            "log lines",
            "app ok / failed",
            "app p99 ms",
            "serving after",
            "shutdown ms",
        ]);
        for r in &self.rows {
            t.row([
                r.build.clone(),
                r.sent.datagrams.to_string(),
                r.rss_kib_before.to_string(),
                r.rss_kib_max.to_string(),
                r.rss_kib_after.to_string(),
                r.log_lines.to_string(),
                format!("{} / {}", r.served_ok, r.served_failed),
                f(r.latency.map(|l| l.p99_ms), 2),
                r.serving_after.to_string(),
                f(r.shutdown_ms, 0),
            ]);
        }
        t.render(out);
        let _ = writeln!(
            out,
            "  {FLOODERS} processes, {DATAGRAM}-byte datagrams, as fast as the socket takes them, to the serving \
             child's NOTIFY_SOCKET; log lines counted until {}s after the flood",
            LOG_SETTLE.as_secs()
        );
        for r in self.rows.iter().filter(|r| r.error.is_some()) {
            let _ = writeln!(
                out,
                "  {}: ERROR {}",
                r.build,
                r.error.as_deref().unwrap_or_default()
            );
        }
    }
}

pub fn run_flood(bins: &Binaries, secs: Duration) -> FloodOutcome {
    let mut o = FloodOutcome::default();
    for b in builds(bins) {
        let mut row = FloodRow {
            build: b.label.clone(),
            ..FloodRow::default()
        };
        if let Err(e) = flood_one(&b, secs, &mut row) {
            row.error = Some(format!("{e:#}"));
        }
        o.rows.push(row);
    }
    o
}

fn flood_one(b: &Build<'_>, secs: Duration, row: &mut FloodRow) -> Result<()> {
    let addr = procs::free_loopback_addr()?;
    let mut launch = Launch::new(b.hotsup, b.http);
    launch.listen = vec![addr.to_string()];
    launch.json = b.json;
    let mut hs = launch.start()?;
    wait_answer(addr, || None)?;
    let child = request_once(addr, "/", PROBE_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .identity()
        .pid
        .context("the app's response has no pid")? as i32;
    let socket =
        procfs::environ_var(child, "NOTIFY_SOCKET")?.context("the app has no NOTIFY_SOCKET")?;
    thread::sleep(Duration::from_millis(300));
    let pid = hs.pid();
    row.rss_kib_before = procfs::rss_kib(pid)?;
    let load = Load::start(LoadConfig {
        concurrency: 2,
        max_duration: secs + Duration::from_secs(30),
        timeout: LOAD_TIMEOUT,
        ..LoadConfig::new(addr)
    });
    let lines_before = hs.log.len();
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let mut flooders = Vec::new();
    for _ in 0..FLOODERS {
        let mut cmd = Command::new(&exe);
        cmd.args(["flood-notify", "--socket", &socket, "--for"])
            .arg(format!("{}ms", secs.as_millis()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        die_with_bench(&mut cmd, Signal::KILL);
        flooders.push(cmd.spawn().context("cannot start a flooding process")?);
    }
    let deadline = started + secs + Duration::from_secs(10);
    row.rss_kib_max = row.rss_kib_before;
    let mut running = flooders.len();
    while running > 0 && Instant::now() < deadline {
        row.rss_kib_max = row.rss_kib_max.max(procfs::rss_kib(pid).unwrap_or(0));
        thread::sleep(Duration::from_millis(100));
        running = flooders
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|w| matches!(w, Ok(None)))
            .count();
    }
    row.seconds = started.elapsed().as_secs_f64();
    for mut c in flooders {
        let _ = c.kill();
        let _ = c.wait();
        let mut text = String::new();
        if let Some(mut out) = c.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let s: Sent = serde_json::from_str(text.trim()).unwrap_or_default();
        row.sent.datagrams += s.datagrams;
        row.sent.timeouts += s.timeouts;
        row.sent.errors += s.errors;
    }
    let report = load.stop();
    row.served_ok = report.ok;
    row.served_failed = report.total_failures();
    row.latency = Lat::of(&report, hotsup_bench::Window::All);
    let settle_until = Instant::now() + LOG_SETTLE;
    while Instant::now() < settle_until {
        row.rss_kib_max = row.rss_kib_max.max(procfs::rss_kib(pid).unwrap_or(0));
        thread::sleep(Duration::from_millis(100));
    }
    row.log_lines = (hs.log.len() - lines_before) as u64;
    row.rss_kib_after = procfs::rss_kib(pid).unwrap_or(0);
    row.serving_after = hs.exited().is_none()
        && request_once(addr, "/", PROBE_TIMEOUT).is_ok_and(|r| r.status == 200);
    let s = hs.stop(Duration::from_secs(30));
    row.shutdown_ms = (!s.forced).then(|| ms(s.took));
    Ok(())
}

// --------------------------------------------------------------- helper

#[derive(Debug, Default, Serialize)]
pub struct HelperRow {
    pub build: String,
    pub upgrades: u32,
    pub ready: u32,
    pub failed: u32,
    /// `hotsup upgrade` exit codes and how often.
    pub exit_codes: BTreeMap<String, u32>,
    /// Why the failed ones failed, as the client said (numbers as N).
    pub reasons: BTreeMap<String, u32>,
    /// How long each `hotsup upgrade` took, ms.
    pub duration: Option<Dist>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct HelperOutcome {
    pub ready_timeout: String,
    pub rows: Vec<HelperRow>,
}

impl HelperOutcome {
    pub fn text(&self, out: &mut String) {
        let mut t = Table::new([
            "READY=1 from a helper",
            "upgrades",
            "ready",
            "failed",
            "exit codes",
            "took p50 / max ms",
        ]);
        for r in &self.rows {
            t.row([
                r.build.clone(),
                r.upgrades.to_string(),
                r.ready.to_string(),
                r.failed.to_string(),
                format!("{:?}", r.exit_codes),
                r.duration
                    .map_or_else(|| "-".into(), |d| format!("{:.0} / {:.0}", d.p50, d.max)),
            ]);
        }
        t.render(out);
        let _ = writeln!(
            out,
            "  app: sh script, `python3 -c <send READY=1 to $NOTIFY_SOCKET, os._exit(0)>; exec sleep 600`; \
             `hotsup upgrade --control`, --ready-timeout {}",
            self.ready_timeout
        );
        for r in &self.rows {
            for (why, n) in &r.reasons {
                let _ = writeln!(out, "  {}: {n} x {why}", r.build);
            }
            if let Some(e) = &r.error {
                let _ = writeln!(out, "  {}: ERROR {e}", r.build);
            }
        }
    }
}

/// `--ready-timeout` of "notify-helper": a failure costs this much.
const HELPER_READY_TIMEOUT: &str = "5s";

pub fn run_helper(bins: &Binaries, upgrades: u32) -> HelperOutcome {
    let mut o = HelperOutcome {
        ready_timeout: HELPER_READY_TIMEOUT.into(),
        rows: Vec::new(),
    };
    for b in builds(bins) {
        let mut row = HelperRow {
            build: b.label.clone(),
            ..HelperRow::default()
        };
        if let Err(e) = helper_one(&b, upgrades, &mut row) {
            row.error = Some(format!("{e:#}"));
        }
        o.rows.push(row);
    }
    o
}

/// The Python interpreter itself: `python3` on PATH may be a wrapper
/// (pyenv's shim costs 150 ms a start, which a loaded machine can stretch
/// past the ready timeout).
fn python3() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run python3")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!("python3 did not name its interpreter");
    }
    Ok(path)
}

/// Runs `hotsup ARGS --control SOCK` to completion, at most `timeout`;
/// returns its exit code (`None`: killed by a signal or timed out), its
/// stdout and its stderr (a line or two each: the pipes never fill).
fn client(
    hotsup: &Path,
    args: &[&str],
    sock: &Path,
    timeout: Duration,
) -> Result<(Option<i32>, String, String)> {
    let mut child = Command::new(hotsup)
        .args(args)
        .arg("--control")
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", hotsup.display()))?;
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(s) = child.try_wait()? {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    Ok((code, out, err))
}

fn helper_one(b: &Build<'_>, upgrades: u32, row: &mut HelperRow) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("hotsup-bench-").tempdir()?;
    let app = dir.path().join("app");
    let body = format!(
        "#!/bin/sh\n'{}' -S -c 'import os, socket\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])\n\
         os._exit(0)'\nexec sleep 600\n",
        python3()?.display()
    );
    std::fs::write(&app, body)?;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755))?;
    let sock = dir.path().join("control.sock");
    let mut launch = Launch::new(b.hotsup, &app);
    launch.json = b.json;
    launch.drain_timeout = Duration::from_secs(2);
    launch.args = vec![
        "--control".into(),
        sock.display().to_string(),
        "--ready-timeout".into(),
        HELPER_READY_TIMEOUT.into(),
    ];
    let mut hs = launch.start()?;
    // The first start may fail the same way; hotsup retries it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, out, _) = client(
            b.hotsup,
            &["status", "--json"],
            &sock,
            Duration::from_secs(10),
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if v["serving"].is_object() {
            break;
        }
        if hs.exited().is_some() || Instant::now() > deadline {
            bail!("no generation ever served\n{}", hs.log.tail(10));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut took = Vec::new();
    for _ in 0..upgrades {
        let t = Instant::now();
        let (code, out, err) = client(b.hotsup, &["upgrade"], &sock, Duration::from_secs(60))?;
        took.push(ms(t.elapsed()));
        row.upgrades += 1;
        if code == Some(0) {
            row.ready += 1;
        } else {
            row.failed += 1;
            // The client's reason, with generation numbers and pids as N.
            let reason = format!("{out}{err}").trim().to_owned();
            let reason: String = reason
                .split(|c: char| c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("N");
            *row.reasons.entry(reason).or_default() += 1;
        }
        let key = code.map_or_else(|| "none".into(), |c| c.to_string());
        *row.exit_codes.entry(key).or_default() += 1;
    }
    row.duration = dist(took);
    hs.stop(Duration::from_secs(10));
    Ok(())
}
