//! `hotsup-bench`: measures hotsup across many upgrades under load.
//!
//! ```text
//! cargo build --release --bin hotsup --examples
//! cargo run --release -p hotsup-bench -- [--upgrades N] [--concurrency C] [--json PATH]
//! ```
//!
//! Runs the HTTP example under `hotsup run -l 127.0.0.1:0`, drives two loads
//! at it (a new connection per request, and keep-alive), upgrades it N
//! times with SIGUSR2, and reports failures, latency in and out of the
//! upgrade windows, upgrade timings, and the supervisor's own costs.
//! Exit code: 0 when nothing failed, 1 when anything failed (or the bench
//! could not run), 2 for a usage error.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench::scenario::{self, Options};

const USAGE: &str = "\
usage: hotsup-bench [OPTIONS]

Runs target/release/examples/http under target/release/hotsup (both next to
this executable; build them with `cargo build --release --bin hotsup
--examples`), loads it on 127.0.0.1 and upgrades it N times.

options:
  --upgrades N       upgrades to perform (default 100)
  --concurrency C    load workers, split between a new-connection-per-request
                     load and a keep-alive load (default 8, at least 2)
  --json PATH        also write the report as JSON to PATH
  --idle-secs S      idle window after the loads stop (default 5)
  --warmup-secs S    steady-state warm-up before the first upgrade (default 2)
  --gap-ms MS        pause after each upgrade completed (default 200)
  --log PATH         write hotsup's full stderr log to PATH
  -h, --help         this help

exit code: 0 no failure, 1 failures (or the bench could not run), 2 usage";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        upgrades: 100,
        concurrency: 8,
        warmup: Duration::from_secs(2),
        idle: Duration::from_secs(5),
        gap: Duration::from_millis(200),
        json: None,
        log: None,
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
            "--upgrades",
            "--concurrency",
            "--json",
            "--idle-secs",
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
            "--upgrades" => opts.upgrades = number(100_000)? as u32,
            "--concurrency" => {
                opts.concurrency = number(1024)? as usize;
                if opts.concurrency < 2 {
                    return Err("--concurrency must be at least 2 (one worker per load)".into());
                }
            }
            "--idle-secs" => opts.idle = Duration::from_secs(number(3600)?),
            "--warmup-secs" => opts.warmup = Duration::from_secs(number(3600)?),
            "--gap-ms" => opts.gap = Duration::from_millis(number(60_000)?),
            "--json" => opts.json = Some(PathBuf::from(value)),
            "--log" => opts.log = Some(PathBuf::from(value)),
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
    let json_path = opts.json.clone();
    let outcome = match scenario::run(opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hotsup-bench: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", bench::output::text(&outcome));
    if let Some(path) = json_path {
        let text = bench::output::json(&outcome).to_pretty();
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("hotsup-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if outcome.verdict().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!((o.upgrades, o.concurrency), (100, 8));
        assert_eq!(o.idle, Duration::from_secs(5));
        let o = parse(&["--upgrades", "10", "--concurrency=3", "--json", "x.json"])
            .unwrap()
            .unwrap();
        assert_eq!((o.upgrades, o.concurrency), (10, 3));
        assert_eq!((o.close_workers(), o.keepalive_workers()), (1, 2));
        assert_eq!(o.json, Some(PathBuf::from("x.json")));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--upgrades"]).is_err());
        assert!(parse(&["--upgrades", "-1"]).is_err());
        assert!(parse(&["--concurrency", "1"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
