//! `hotsup-bench`: measures hotsup across upgrades, crashes and scale, next
//! to the restarts people do without it.
//!
//! ```text
//! cargo build --release --bin hotsup --examples
//! cargo run --release -p hotsup-bench -- [--scenarios LIST] [--json PATH] ...
//! ```
//!
//! Scenarios (all by default, in this order):
//!
//! 1. `upgrades`: the HTTP example under `hotsup run -l 127.0.0.1:0`, two
//!    loads (a new connection per request, and keep-alive), N upgrades by
//!    SIGUSR2; failures, latency in and out of the upgrade windows, upgrade
//!    timings, and the supervisor's own costs.
//! 2. `naive`: the example run directly and restarted by SIGTERM + start.
//! 3. `hard`: the bench holds the socket (as `systemfd --no-pid`), the app
//!    gets it at fd 3 with `LISTEN_FDS=1`; restarts are SIGKILL + start.
//! 4. `crash`: under hotsup, the serving child is SIGKILLed; hotsup restarts.
//! 5. `handoff`: hotsup with 1, 100, 1000 and 10000 listeners.
//! 6. `idle`: hotsup's CPU and context switches with no load.
//! 7. `throughput`: direct vs under hotsup, alternating.
//!
//! Exit code: 0 when the hotsup targets are met (0 failed requests in
//! `upgrades`, 0 refused connections in `crash`) and every selected scenario
//! ran; the baselines' failures are expected and never count. 1 otherwise,
//! 2 for a usage error.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench::scenario::Options;
use bench::suite::{self, Scenario, SuiteOptions};

/// Scenario 1's own idle window after its loads stop (scenario 6 measures
/// idle cost properly, for `--idle-secs`).
const UPGRADES_IDLE: Duration = Duration::from_secs(2);

const USAGE: &str = "\
usage: hotsup-bench [OPTIONS]

Runs target/release/examples/http (and examples/listenfd_app if built)
directly and under target/release/hotsup (all next to this executable; build
them with `cargo build --release --bin hotsup --examples`), loads them on
127.0.0.1, and compares restarts with and without hotsup.

scenarios (--scenarios, comma-separated, default all, run in this order):
  upgrades     1. N upgrades by SIGUSR2 under load, under hotsup
  naive        2. the example run directly, restarted by SIGTERM + start
  hard         3. socket held by the bench, app SIGKILLed + started again
  crash        4. under hotsup, the serving child SIGKILLed; hotsup restarts it
  handoff      5. hotsup with 1, 100, 1000, 10000 listeners: handoff time, RSS
  idle         6. hotsup's CPU time and context switches with no load
  throughput   7. requests/s direct vs under hotsup, alternating twice

options:
  --scenarios LIST       scenarios to run (default all)
  --upgrades N           upgrades in scenario 1 (default 100)
  --baseline-restarts N  restarts in scenarios 2 and 3 (default 20)
  --crash-restarts N     crash restarts in scenario 4 (default 20; a fresh
                         hotsup every 5, to keep its backoff at most 1.6 s)
  --concurrency C        load workers, split between a new-connection-per-request
                         load and a keep-alive load (default 8, at least 2);
                         all of them for each throughput run
  --idle-secs S          idle window of scenario 6 (default 10; 60 gives a
                         better bound on rare wakeups but a longer run)
  --throughput-secs S    length of each throughput run (default 5; 8 runs)
  --warmup-secs S        steady-state warm-up before the first restart (default 2)
  --gap-ms MS            pause after each upgrade or restart (default 200)
  --json PATH            also write the whole report as JSON to PATH
  --log PATH             write hotsup's full stderr log of scenario 1 to PATH
  -h, --help             this help

exit code: 0 hotsup targets met (0 failed requests in upgrades, 0 refused in
crash) and every selected scenario ran; 1 otherwise; 2 usage error";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<SuiteOptions>, String> {
    let mut opts = SuiteOptions {
        scenarios: Scenario::ALL.to_vec(),
        upgrades: Options {
            upgrades: 100,
            concurrency: 8,
            warmup: Duration::from_secs(2),
            idle: UPGRADES_IDLE,
            gap: Duration::from_millis(200),
            log: None,
        },
        baseline_restarts: 20,
        crash_restarts: 20,
        idle: Duration::from_secs(10),
        throughput: Duration::from_secs(5),
        json: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let known = [
            "--scenarios",
            "--upgrades",
            "--baseline-restarts",
            "--crash-restarts",
            "--concurrency",
            "--json",
            "--idle-secs",
            "--throughput-secs",
            "--warmup-secs",
            "--gap-ms",
            "--log",
        ];
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown argument {arg:?}"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        let number = |max: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    format!("{name}: expected a whole number up to {max}, got {value:?}")
                })
        };
        match name.as_str() {
            "--scenarios" => {
                let mut list = Vec::new();
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if s == "all" {
                        list.extend(Scenario::ALL);
                        continue;
                    }
                    list.push(Scenario::parse(s).ok_or_else(|| {
                        format!(
                            "--scenarios: unknown scenario {s:?} (one of {})",
                            Scenario::ALL.map(Scenario::name).join(",")
                        )
                    })?);
                }
                list.sort_unstable();
                list.dedup();
                if list.is_empty() {
                    return Err("--scenarios: no scenario given".into());
                }
                opts.scenarios = list;
            }
            "--upgrades" => opts.upgrades.upgrades = number(100_000)? as u32,
            "--baseline-restarts" => opts.baseline_restarts = number(10_000)? as u32,
            "--crash-restarts" => opts.crash_restarts = number(10_000)? as u32,
            "--concurrency" => {
                opts.upgrades.concurrency = number(1024)? as usize;
                if opts.upgrades.concurrency < 2 {
                    return Err("--concurrency must be at least 2 (one worker per load)".into());
                }
            }
            "--idle-secs" => opts.idle = Duration::from_secs(number(3600)?),
            "--throughput-secs" => {
                opts.throughput = Duration::from_secs(number(3600)?);
                if opts.throughput.is_zero() {
                    return Err("--throughput-secs must be at least 1".into());
                }
            }
            "--warmup-secs" => opts.upgrades.warmup = Duration::from_secs(number(3600)?),
            "--gap-ms" => opts.upgrades.gap = Duration::from_millis(number(60_000)?),
            "--json" => opts.json = Some(PathBuf::from(value)),
            "--log" => opts.upgrades.log = Some(PathBuf::from(value)),
            _ => unreachable!("checked against `known`"),
        }
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hotsup-bench: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    let outcome = suite::run(&opts);
    for e in &outcome.errors {
        eprintln!("hotsup-bench: error: {e}");
    }
    print!("{}", suite::summary_text(&outcome, &opts));
    let mut code = if suite::verdict(&outcome, &opts).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if let Some(path) = &opts.json {
        let text = suite::json(&outcome, &opts).to_pretty();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("hotsup-bench: cannot write {}: {e}", path.display());
            code = ExitCode::FAILURE;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<SuiteOptions>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!((o.upgrades.upgrades, o.upgrades.concurrency), (100, 8));
        assert_eq!((o.baseline_restarts, o.crash_restarts), (20, 20));
        assert_eq!(o.idle, Duration::from_secs(10));
        assert_eq!(o.scenarios, Scenario::ALL.to_vec());
        let o = parse(&[
            "--upgrades",
            "10",
            "--concurrency=3",
            "--json",
            "x.json",
            "--scenarios",
            "crash,naive,hard,naive",
            "--baseline-restarts",
            "5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!((o.upgrades.upgrades, o.upgrades.concurrency), (10, 3));
        assert_eq!(
            (o.upgrades.close_workers(), o.upgrades.keepalive_workers()),
            (1, 2)
        );
        assert_eq!(o.json, Some(PathBuf::from("x.json")));
        assert_eq!(
            o.scenarios,
            vec![Scenario::Naive, Scenario::Hard, Scenario::Crash]
        );
        assert_eq!(o.baseline_restarts, 5);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--upgrades"]).is_err());
        assert!(parse(&["--upgrades", "-1"]).is_err());
        assert!(parse(&["--concurrency", "1"]).is_err());
        assert!(parse(&["--scenarios", "bogus"]).is_err());
        assert!(parse(&["--scenarios", ""]).is_err());
        assert!(parse(&["--throughput-secs", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
