//! `gunicorn-reload`: gunicorn's own reload (`kill -HUP` of its arbiter)
//! side by side with upgrades of gunicorn under `hotsup run --fds systemd`,
//! under the same keep-alive load, in one run.
//!
//! ```text
//! cargo build --release --bin hotsup
//! HOTSUP_RECIPES_PYTHON=target/recipes-venv/bin/python \
//!     cargo run --release -p hotsup-bench --bin gunicorn-reload -- --rounds 3
//! ```
//!
//! Every mode runs the recipe's app and `gunicorn.conf.py` (gthread, 2
//! workers, 4 threads) from `examples/recipes/gunicorn`:
//!
//! - `hup`: gunicorn alone on a port, reloaded with SIGHUP (it starts new
//!   workers and stops the old ones gracefully);
//! - `hotsup-arbiter`: under hotsup, gunicorn's own READY=1, sent by the
//!   arbiter before any worker exists (`GUNICORN_READY_FROM=arbiter`);
//! - `hotsup-recipe`: under hotsup, READY=1 from the first worker that
//!   loaded the app (the recipe's default);
//! - `hotsup-probe`: as `hotsup-recipe`, plus `--ready-probe
//!   all-workers-ready.sh`: ready once every worker serves;
//! - `hotsup-settle`: as `hotsup-arbiter`, plus `--ready-settle 1s`.
//!
//! Each run: a keep-alive load of fixed concurrency, a steady period, then
//! N reloads, one every few seconds. A reload's window runs from the moment
//! the old workers are told to stop (gunicorn: at the SIGHUP, it stops them
//! as soon as it forked the new ones; hotsup: at the new generation's
//! `ready`, before which the old one serves alone, undisturbed) to the exit
//! of the last old process plus 100 ms (gunicorn: the old workers; hotsup:
//! the old generation's `drained`). Latencies are per request, by the
//! instant it started: in a window ("during reloads") or not ("steady"). Rounds run the modes one after the other; the table
//! gives each mode's median over the rounds. Nothing is retried; every
//! failed request is counted.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::loadgen::{Load, LoadConfig, Report, Window};
use hotsup_bench::recipes::{examples_dir, python};
use hotsup_bench::request_once;
use rustix::process::{Pid, Signal};

const USAGE: &str = "\
usage: gunicorn-reload [--rounds N] [--reloads N] [--concurrency N] [--modes LIST]

  --rounds N       rounds, each running every mode once (default 3)
  --reloads N      reloads per run (default 8)
  --concurrency N  keep-alive clients (default 8)
  --modes LIST     comma-separated: hup,hotsup-arbiter,hotsup-recipe,
                   hotsup-probe,hotsup-settle (default all)

Uses target/<profile>/hotsup next to this executable and
$HOTSUP_RECIPES_PYTHON (default python3) with gunicorn installed.";

const START: Duration = Duration::from_secs(60);
const STEADY: Duration = Duration::from_secs(3);
/// Between the end of a reload's window and the next trigger.
const GAP: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hup,
    HotsupArbiter,
    HotsupRecipe,
    HotsupProbe,
    HotsupSettle,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Hup,
        Mode::HotsupArbiter,
        Mode::HotsupRecipe,
        Mode::HotsupProbe,
        Mode::HotsupSettle,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Hup => "hup",
            Mode::HotsupArbiter => "hotsup-arbiter",
            Mode::HotsupRecipe => "hotsup-recipe",
            Mode::HotsupProbe => "hotsup-probe",
            Mode::HotsupSettle => "hotsup-settle",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Hup => "gunicorn alone, `kill -HUP`",
            Mode::HotsupArbiter => "hotsup, gunicorn's own READY=1 (arbiter)",
            Mode::HotsupRecipe => "hotsup, READY=1 from the first worker",
            Mode::HotsupProbe => "hotsup, first worker's READY=1 + `--ready-probe` (all workers)",
            Mode::HotsupSettle => "hotsup, arbiter's READY=1 + `--ready-settle 1s`",
        }
    }
}

struct Options {
    rounds: usize,
    reloads: usize,
    concurrency: usize,
    modes: Vec<Mode>,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut o = Options {
        rounds: 3,
        reloads: 8,
        concurrency: 8,
        modes: Mode::ALL.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    let number = |arg: &str, v: &str, max: usize| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or(format!("{arg}: expected 1 to {max}, got {v:?}"))
    };
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let v = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--rounds" => o.rounds = number(&arg, &v, 100)?,
            "--reloads" => o.reloads = number(&arg, &v, 1000)?,
            "--concurrency" => o.concurrency = number(&arg, &v, 256)?,
            "--modes" => {
                o.modes = v
                    .split(',')
                    .map(|s| {
                        Mode::ALL
                            .into_iter()
                            .find(|m| m.name() == s.trim())
                            .ok_or(format!("unknown mode {s:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gunicorn-reload: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gunicorn-reload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What one run of one mode measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    requests: u64,
    failed: u64,
    /// Before the first reload: every worker took its share of the
    /// connections.
    before_p99_ms: f64,
    steady_p99_ms: f64,
    reload_p99_ms: f64,
    /// Requests per second, steady and during reloads.
    steady_rps: f64,
    reload_rps: f64,
    /// Requests per second over the whole run.
    rps: f64,
    /// The median window: the old workers told to stop to their exit.
    window_ms: f64,
    /// The median reload: trigger to the old processes' exit.
    reload_ms: f64,
}

fn run(o: &Options) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let hotsup = exe
        .parent()
        .context("this executable has no directory")?
        .join("hotsup");
    if o.modes.iter().any(|m| *m != Mode::Hup) && !hotsup.is_file() {
        bail!(
            "{} not found: cargo build --release --bin hotsup",
            hotsup.display()
        );
    }
    let mut all: Vec<(Mode, Vec<Figures>)> = o.modes.iter().map(|m| (*m, Vec::new())).collect();
    for round in 1..=o.rounds {
        for (mode, figs) in &mut all {
            let f = measure(*mode, &hotsup, o)
                .with_context(|| format!("round {round}, {}", mode.name()))?;
            eprintln!(
                "round {round} {:<15} requests {} failed {} p99 before reloads {:.2} ms, steady {:.2} ms, reloads {:.2} ms (x{:.2}); req/s steady {:.0}, reloads {:.0} (x{:.2}), whole run {:.0}; old stopping to gone p50 {:.0} ms, trigger to old gone p50 {:.0} ms",
                mode.name(),
                f.requests,
                f.failed,
                f.before_p99_ms,
                f.steady_p99_ms,
                f.reload_p99_ms,
                f.reload_p99_ms / f.steady_p99_ms,
                f.steady_rps,
                f.reload_rps,
                f.reload_rps / f.steady_rps,
                f.rps,
                f.window_ms,
                f.reload_ms
            );
            figs.push(f);
        }
    }
    let base = all
        .iter()
        .find(|(m, _)| *m == Mode::Hup)
        .map(|(_, f)| median(f, |x| x.rps));
    println!(
        "| mode | requests | failed | p99 before the first reload | p99 steady (outside reloads) | p99 during reloads | ratio | req/s during reloads / steady | req/s, whole run | vs `kill -HUP` | old stopping → gone | trigger → old gone |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (mode, f) in &all {
        let rps = median(f, |x| x.rps);
        println!(
            "| {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {:.2} | {:.0} | {} | {:.0} ms | {:.0} ms |",
            mode.describe(),
            median(f, |x| x.requests as f64),
            f.iter().map(|x| x.failed).sum::<u64>(),
            median(f, |x| x.before_p99_ms),
            median(f, |x| x.steady_p99_ms),
            median(f, |x| x.reload_p99_ms),
            median(f, |x| x.reload_p99_ms / x.steady_p99_ms),
            median(f, |x| x.reload_rps / x.steady_rps),
            rps,
            base.map_or("-".into(), |b| format!("{:.2}", rps / b)),
            median(f, |x| x.window_ms),
            median(f, |x| x.reload_ms),
        );
    }
    Ok(())
}

/// The median of `f` over the rounds (the lower middle for an even count).
fn median(figs: &[Figures], f: impl Fn(&Figures) -> f64) -> f64 {
    let mut v: Vec<f64> = figs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(f64::NAN)
}

fn measure(mode: Mode, hotsup: &Path, o: &Options) -> Result<Figures> {
    let ready_dir = tempfile_dir()?;
    let mut server = Server::start(mode, hotsup, &ready_dir)?;
    let addr = server.addr;
    // Both workers up before the load starts.
    server.settle()?;
    let load = Load::start(LoadConfig {
        keep_alive: true,
        concurrency: o.concurrency,
        path: "/".into(),
        max_duration: Duration::from_secs(3600),
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(addr)
    });
    if !load.wait_for_ok(200, START) {
        bail!("the load made no progress");
    }
    let load_started = load.started();
    thread::sleep(STEADY);
    let first_trigger = Instant::now();
    let mut windows = Vec::new();
    let mut whole = Vec::new();
    for n in 1..=o.reloads {
        let trigger = Instant::now();
        let stop = server.reload(n as u64 + 1)?;
        let gone = Instant::now();
        windows.push((stop, gone + AFTER));
        whole.push(gone - trigger);
        thread::sleep(AFTER + GAP);
    }
    let report = load.stop();
    server.stop()?;
    let _ = std::fs::remove_dir_all(&ready_dir);
    whole.sort_unstable();
    let mut f = figures(&report, &windows)?;
    f.before_p99_ms = report
        .latency_percentiles(Window::Inside(&[(load_started, first_trigger)]))
        .context("no request before the first reload")?
        .p99
        .as_secs_f64()
        * 1e3;
    f.reload_ms = whole
        .get(whole.len().saturating_sub(1) / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    Ok(f)
}

fn figures(r: &Report, windows: &[(Instant, Instant)]) -> Result<Figures> {
    let steady = r
        .latency_percentiles(Window::Outside(windows))
        .context("no steady request")?;
    let during = r
        .latency_percentiles(Window::Inside(windows))
        .context("no request during a reload")?;
    let in_windows: Duration = windows.iter().map(|(a, b)| *b - *a).sum();
    let mut lengths: Vec<Duration> = windows.iter().map(|(a, b)| *b - *a - AFTER).collect();
    lengths.sort_unstable();
    let steady_time = r.elapsed.saturating_sub(in_windows);
    Ok(Figures {
        requests: r.total_requests(),
        failed: r.total_failures(),
        before_p99_ms: f64::NAN,
        steady_p99_ms: steady.p99.as_secs_f64() * 1e3,
        reload_p99_ms: during.p99.as_secs_f64() * 1e3,
        steady_rps: steady.count as f64 / steady_time.as_secs_f64(),
        reload_rps: during.count as f64 / in_windows.as_secs_f64(),
        rps: r.ok as f64 / r.elapsed.as_secs_f64(),
        window_ms: lengths
            .get(lengths.len().saturating_sub(1) / 2)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        reload_ms: f64::NAN,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!(
            "gunicorn-reload-{}-{i}",
            rustix::process::getpid().as_raw_pid()
        ));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!("cannot create a directory in {}", base.display())
}

/// gunicorn, alone or under hotsup.
struct Server {
    mode: Mode,
    child: Child,
    pid: Pid,
    addr: SocketAddr,
    /// hotsup's log lines (text format), when under hotsup.
    lines: Option<Receiver<String>>,
    log: Vec<String>,
}

impl Server {
    fn start(mode: Mode, hotsup: &Path, ready_dir: &Path) -> Result<Server> {
        let dir = examples_dir().join("gunicorn");
        let gunicorn = ["-m", "gunicorn", "-c", "gunicorn.conf.py"];
        let me = rustix::process::getpid();
        let mut cmd;
        let mut addr = None;
        if mode == Mode::Hup {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let a: SocketAddr = ([127, 0, 0, 1], port).into();
            cmd = Command::new(python());
            cmd.args(gunicorn)
                .args(["-b", &a.to_string(), "app:app"])
                .current_dir(&dir)
                .env_remove("NOTIFY_SOCKET")
                .stderr(Stdio::null());
            addr = Some(a);
        } else {
            cmd = Command::new(hotsup);
            cmd.args(["run", "--fds", "systemd", "-l", "http=127.0.0.1:0"])
                .args(["--drain-timeout", "30s", "--chdir"])
                .arg(&dir);
            match mode {
                Mode::HotsupArbiter => {
                    cmd.args(["--env", "GUNICORN_READY_FROM=arbiter"]);
                }
                Mode::HotsupSettle => {
                    cmd.args(["--env", "GUNICORN_READY_FROM=arbiter"])
                        .args(["--ready-settle", "1s"]);
                }
                Mode::HotsupProbe => {
                    cmd.arg("--ready-probe")
                        .arg(dir.join("all-workers-ready.sh"))
                        .env("GUNICORN_READY_DIR", ready_dir);
                }
                Mode::HotsupRecipe | Mode::Hup => {}
            }
            cmd.arg("--")
                .arg(python())
                .args(gunicorn)
                .arg("app:app")
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped());
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: runs between fork and exec: two raw syscalls (prctl,
        // getppid) on a value captured by copy; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                // The server goes when we go.
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
                if rustix::process::getppid() != Some(me) {
                    return Err(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::SRCH.raw_os_error(),
                    ));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("cannot start the server")?;
        let pid = Pid::from_raw(child.id() as i32).context("pid 0")?;
        let lines = child.stderr.take().map(|stderr| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let mut s = Server {
            mode,
            child,
            pid,
            addr: addr.unwrap_or(([127, 0, 0, 1], 0).into()),
            lines,
            log: Vec::new(),
        };
        if mode != Mode::Hup {
            let l = s.wait("listening", None)?;
            s.addr = field(&l, "address")
                .context("no address")?
                .parse()
                .context("bad address")?;
            s.wait("ready", Some(1))?;
        }
        Ok(s)
    }

    /// Waits until the server answers and every worker of it has started.
    fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + START;
        loop {
            if request_once(self.addr, "/", Duration::from_secs(5)).is_ok_and(|r| r.status == 200)
                && self.workers().len() >= 2
            {
                // Time for the workers to load the app.
                thread::sleep(Duration::from_secs(1));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server does not answer");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// gunicorn's workers: the arbiter's children.
    fn workers(&self) -> Vec<i32> {
        let arbiter = if self.mode == Mode::Hup {
            self.pid.as_raw_pid()
        } else {
            match children_of(self.pid.as_raw_pid()).first() {
                Some(p) => *p,
                None => return Vec::new(),
            }
        };
        children_of(arbiter)
    }

    /// Reloads once; returns when the old processes have exited, with the
    /// instant they were told to stop.
    fn reload(&mut self, generation: u64) -> Result<Instant> {
        if self.mode == Mode::Hup {
            let old = self.workers();
            // gunicorn stops the old workers as soon as it has forked the
            // new ones, without waiting for them to load the app.
            let stop = Instant::now();
            rustix::process::kill_process(self.pid, Signal::HUP)?;
            let deadline = Instant::now() + START;
            while old.iter().any(|p| alive(*p)) {
                if Instant::now() > deadline {
                    bail!("old workers still alive");
                }
                thread::sleep(Duration::from_millis(2));
            }
            return Ok(stop);
        }
        rustix::process::kill_process(self.pid, Signal::USR2)?;
        // hotsup drains the old generation when the new one is ready; the
        // old one serves alone until then.
        self.wait("ready", Some(generation))?;
        let stop = Instant::now();
        self.wait("drained", Some(generation - 1))?;
        Ok(stop)
    }

    fn wait(&mut self, event: &str, generation: Option<u64>) -> Result<String> {
        let g = generation.map(|g| format!("generation={g}"));
        let hit = |l: &str| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.get(2) == Some(&event) && g.as_deref().is_none_or(|f| t.contains(&f))
        };
        if let Some(l) = self.log.iter().find(|l| hit(l)) {
            return Ok(l.clone());
        }
        let lines = self.lines.as_ref().context("no log")?;
        let deadline = Instant::now() + START;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if hit(&l) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!("no {event} {g:?}"),
                Err(RecvTimeoutError::Disconnected) => bail!("hotsup exited before {event}"),
            }
        }
    }

    fn stop(&mut self) -> Result<()> {
        rustix::process::kill_process(self.pid, Signal::TERM)?;
        let deadline = Instant::now() + START;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the server did not stop");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = rustix::process::kill_process(self.pid, Signal::TERM);
            let _ = rustix::process::kill_process(self.pid, Signal::TERM);
            thread::sleep(Duration::from_millis(500));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a text log line.
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ppid(*p) == Some(pid))
        .collect();
    v.sort_unstable();
    v
}

fn stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

fn ppid(pid: i32) -> Option<i32> {
    stat(pid)?
        .rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| {
        !matches!(
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}
