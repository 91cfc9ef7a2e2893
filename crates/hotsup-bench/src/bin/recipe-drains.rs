//! `recipe-drains`: failed requests per N upgrades for each app of
//! `examples/recipes/`, with the framework's default drain and with the
//! recipe, under the same load.
//!
//! ```text
//! cargo build --release --bin hotsup
//! cargo run --release -p hotsup-bench --bin recipe-drains -- --upgrades 10
//! ```
//!
//! Each run: `hotsup run --fds systemd -l http=127.0.0.1:0 --drain-timeout
//! 10s ...` with the app's command line from `hotsup_bench::recipes`, the
//! same three loads as the end-to-end tests' `Traffic` (3 workers opening a
//! connection per request, 3 on keep-alive connections, 2 on keep-alive
//! connections with requests of 150 ms), then N upgrades by SIGUSR2, each
//! waited for until the new generation is ready, the old one has exited and
//! every load has had 20 more successful requests. Every failed request is
//! counted (the load generator never retries).
//!
//! Exit code: 0 when every recipe run had no failure, 1 otherwise (the
//! defaults' failures are what is being measured and never count), 2 for a
//! usage error.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::loadgen::{Load, LoadConfig, Report};
use hotsup_bench::recipes::{App, Drain, Runtime, Setup, Unavailable};
use rustix::process::{Pid, Signal};

const USAGE: &str = "\
usage: recipe-drains [--upgrades N] [--apps LIST] [--drains LIST] [-v]

Runs each app of examples/recipes/ under target/<profile>/hotsup (next to
this executable; build it with `cargo build --release --bin hotsup`), with
its framework's default drain and with the recipe, under the same load and
the same number of upgrades, and prints failed requests per run.

  --upgrades N   upgrades per run (default 10)
  --apps LIST    comma-separated: node,go,gunicorn,uvicorn (default all)
  --drains LIST  comma-separated: default,recipe (default both)
  -v, --verbose  print the first failures of every run, not only of recipes

Python apps use $HOTSUP_RECIPES_PYTHON (default python3).";

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const START: Duration = Duration::from_secs(60);
/// Successful requests each load must make between two upgrades.
const PROGRESS: u64 = 20;

struct Options {
    upgrades: u64,
    verbose: bool,
    apps: Vec<App>,
    drains: Vec<Drain>,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut opts = Options {
        upgrades: 10,
        verbose: false,
        apps: App::ALL.to_vec(),
        drains: vec![Drain::Default, Drain::Recipe],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "-v" || arg == "--verbose" {
            opts.verbose = true;
            continue;
        }
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--upgrades" => {
                opts.upgrades = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or(format!("--upgrades: expected 1 to 1000, got {value:?}"))?;
            }
            "--apps" => {
                opts.apps = value
                    .split(',')
                    .map(|s| App::parse(s.trim()).ok_or(format!("unknown app {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--drains" => {
                opts.drains = value
                    .split(',')
                    .map(|s| match s.trim() {
                        "default" => Ok(Drain::Default),
                        "recipe" => Ok(Drain::Recipe),
                        other => Err(format!("unknown drain {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("recipe-drains: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("recipe-drains: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let hotsup = dir.join("hotsup");
    if !hotsup.is_file() {
        bail!(
            "{} not found: cargo build --release --bin hotsup",
            hotsup.display()
        );
    }
    let build_dir = dir.join("recipe-build");
    println!(
        "| app | drain | upgrades | requests | failed | failed on keep-alive loads | failure kinds | killed at --drain-timeout |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut recipes_clean = true;
    for &app in &opts.apps {
        let rt = match Runtime::find(app, &build_dir) {
            Ok(rt) => rt,
            Err(Unavailable::Missing(why)) => {
                eprintln!("skipped: {}: {why}", app.name());
                continue;
            }
            Err(Unavailable::Broken(why)) => bail!("{}: {why}", app.name()),
        };
        for &drain in &opts.drains {
            let (reports, killed) = measure(&hotsup, &rt.setup(drain), opts.upgrades)
                .with_context(|| format!("{} with the {} drain", app.name(), drain.name()))?;
            let total: u64 = reports.iter().map(|(_, r)| r.total_failures()).sum();
            let requests: u64 = reports.iter().map(|(_, r)| r.total_requests()).sum();
            let keep_alive: u64 = reports
                .iter()
                .filter(|(n, _)| *n != NEW_CONNECTION)
                .map(|(_, r)| r.total_failures())
                .sum();
            let mut kinds = std::collections::BTreeMap::new();
            for (_, r) in &reports {
                for (k, n) in r.failures_by_label() {
                    *kinds.entry(k).or_insert(0) += n;
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "| {} | {} | {} | {requests} | {total} | {keep_alive} | {} | {killed} |",
                rt.version,
                drain.name(),
                opts.upgrades,
                if kinds.is_empty() {
                    "-".to_string()
                } else {
                    kinds.join(", ")
                }
            );
            if drain == Drain::Recipe && total > 0 {
                recipes_clean = false;
            }
            if opts.verbose || (drain == Drain::Recipe && total > 0) {
                for (name, r) in &reports {
                    for s in &r.samples {
                        eprintln!("{} {}, {name}: {s}", app.name(), drain.name());
                    }
                }
            }
        }
    }
    Ok(recipes_clean)
}

const NEW_CONNECTION: &str = "new connection per request";

/// The loads of `tests/e2e/upgrade.rs`'s `Traffic`.
fn loads(addr: SocketAddr) -> Vec<(&'static str, Load)> {
    let cfg = |keep_alive, concurrency, path: &str| LoadConfig {
        keep_alive,
        concurrency,
        path: path.to_string(),
        max_duration: Duration::from_secs(600),
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(addr)
    };
    vec![
        (NEW_CONNECTION, Load::start(cfg(false, 3, "/"))),
        ("keep-alive", Load::start(cfg(true, 3, "/"))),
        (
            "slow, in flight",
            Load::start(cfg(true, 2, "/?sleep_ms=150")),
        ),
    ]
}

fn wait_progress(loads: &[(&'static str, Load)]) -> Result<()> {
    for (name, l) in loads {
        if !l.wait_for_more_ok(PROGRESS, START) {
            bail!("load {name:?} made no progress");
        }
    }
    Ok(())
}

/// The loads' reports, and how many old generations were killed at the
/// drain deadline.
fn measure(
    hotsup: &Path,
    setup: &Setup,
    upgrades: u64,
) -> Result<(Vec<(&'static str, Report)>, usize)> {
    let mut h = Supervised::start(hotsup, setup)?;
    let listening = h.wait(&["listening"], None, START)?;
    let addr: SocketAddr = field(&listening, "address")
        .context("no address in the listening line")?
        .parse()
        .context("unparsable listening address")?;
    h.wait(&["ready"], Some(1), START)?;
    let loads = loads(addr);
    wait_progress(&loads)?;
    for g in 2..=upgrades + 1 {
        h.signal(Signal::USR2)?;
        h.wait(&["ready"], Some(g), START)?;
        // `drained` when it exits by itself, `reaped` when killed at the
        // drain deadline.
        h.wait(&["drained", "reaped"], Some(g - 1), DRAIN_TIMEOUT + START)?;
        wait_progress(&loads)?;
    }
    let reports = loads.into_iter().map(|(n, l)| (n, l.stop())).collect();
    let killed = h
        .log
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some("killed"))
        .count();
    h.stop()?;
    Ok((reports, killed))
}

/// The value of `key=` in a text log line.
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

/// A running `hotsup run`, killed with its generations when dropped.
struct Supervised {
    child: Child,
    pid: Pid,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Supervised {
    fn start(hotsup: &Path, setup: &Setup) -> Result<Supervised> {
        let me = rustix::process::getpid();
        let mut cmd = Command::new(hotsup);
        cmd.arg("run")
            .args(["-l", "http=127.0.0.1:0", "--drain-timeout"])
            .arg(format!("{}s", DRAIN_TIMEOUT.as_secs()))
            .args(&setup.hotsup_args)
            .arg("--")
            .args(&setup.command)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: runs between fork and exec: two raw syscalls (prctl,
        // getppid) on a value captured by copy; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                // hotsup, and with it its generations, goes when we go.
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
                if rustix::process::getppid() != Some(me) {
                    return Err(std::io::Error::from_raw_os_error(libc_esrch()));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", hotsup.display()))?;
        let pid = Pid::from_raw(child.id() as i32).context("hotsup has pid 0")?;
        let stderr = child.stderr.take().context("stderr not piped")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Supervised {
            child,
            pid,
            lines,
            log: Vec::new(),
        })
    }

    /// Waits for the log line of one of `events` (for `generation`, if
    /// given).
    fn wait(
        &mut self,
        events: &[&str],
        generation: Option<u64>,
        timeout: Duration,
    ) -> Result<String> {
        let event = events.join(" or ");
        let deadline = Instant::now() + timeout;
        let gen_field = generation.map(|g| format!("generation={g}"));
        let matches = |l: &str| {
            let toks: Vec<&str> = l.split_whitespace().collect();
            toks.get(2).is_some_and(|e| events.contains(e))
                && gen_field.as_deref().is_none_or(|f| toks.contains(&f))
        };
        if let Some(l) = self.log.iter().find(|l| matches(l)) {
            return Ok(l.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = matches(&line);
                    self.log.push(line.clone());
                    if hit {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!(
                    "no {event} {} within {timeout:?}; last lines:\n{}",
                    gen_field.unwrap_or_default(),
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "hotsup exited before {event} {}; last lines:\n{}",
                    gen_field.unwrap_or_default(),
                    self.tail()
                ),
            }
        }
    }

    fn tail(&self) -> String {
        let start = self.log.len().saturating_sub(20);
        self.log[start..].join("\n")
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        rustix::process::kill_process(self.pid, sig).context("cannot signal hotsup")
    }

    /// Graceful shutdown, bounded.
    fn stop(&mut self) -> Result<()> {
        self.signal(Signal::TERM)?;
        let deadline = Instant::now() + DRAIN_TIMEOUT + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("hotsup did not exit after SIGTERM")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A second SIGTERM kills every generation's group at once.
            let _ = self.signal(Signal::TERM);
            let _ = self.signal(Signal::TERM);
            thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn libc_esrch() -> i32 {
    rustix::io::Errno::SRCH.raw_os_error()
}
