//! `hotsup-bench`: measures hotsup across upgrades, crashes, pools and
//! scale, next to the restarts people do without it.
//!
//! ```text
//! cargo build --release --bin hotsup --examples
//! cargo run --release -p hotsup-bench -- [--scenarios LIST] [--json PATH] ...
//! ```
//!
//! hotsup runs with `--log-format json`; the bench follows its events
//! (`spawned`, `ready`, `drained`, ...) by name and fields.
//!
//! Exit code: 0 when the hotsup targets are met (0 failed requests in
//! `upgrades`, 0 refused connections in `crash`) and every selected scenario
//! ran; the baselines' failures are expected and never count, and the
//! other figures are measured, not asserted. 1 otherwise, 2 for a usage
//! error.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hotsup::cli::parse_duration;

use bench::suite::{self, Scenario, SuiteOptions};

/// Runs target/release/examples/http (and the other examples) directly and
/// under target/release/hotsup, all next to this executable (build them
/// with `cargo build --release --bin hotsup --examples`), loads them on
/// 127.0.0.1, and compares restarts with and without hotsup. Durations are
/// written as hotsup's: 500ms, 2s, 1m.
#[derive(Debug, Parser)]
#[command(name = "hotsup-bench", args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Exit code: 0 hotsup targets met (0 failed requests in upgrades, 0 refused in crash) \
                        and every selected scenario ran; 1 otherwise; 2 usage error."
)]
struct Cli {
    /// Scenarios to run, comma-separated, in the order listed below
    /// (default: all).
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = Scenario::all(), hide_default_value = true)]
    scenarios: Vec<Scenario>,
    /// Upgrades in `upgrades`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    upgrades: u32,
    /// Restarts in `naive` and `hard`.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    baseline_restarts: u32,
    /// Crash restarts in `crash` (a fresh hotsup every 5, to keep its
    /// backoff at most 1.6 s).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    crash_restarts: u32,
    /// Load workers, split between a new-connection-per-request load and
    /// a keep-alive load; all of them for each throughput run.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=1024))]
    concurrency: u16,
    /// Window of `idle` (60s gives a better bound on rare wakeups).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    idle: Duration,
    /// Length of each run of `throughput` (8 runs) and `pool-throughput`
    /// (6 runs).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    throughput_run: Duration,
    /// Steady-state warm-up before the first restart.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Pause after each upgrade or restart.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    gap: Duration,
    /// Upgrades per pool configuration in `pool-upgrade`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pool_upgrades: u32,
    /// Rollbacks in `probation`.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rollbacks: u32,
    /// How long `notify-flood` floods.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    flood: Duration,
    /// Upgrades per hotsup in `notify-helper`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    helper_upgrades: u32,
    /// A hotsup built from an older commit, measured beside this one in
    /// `footprint`, `notify-flood` and `notify-helper` (with the
    /// `examples/http` next to it).
    #[arg(long, value_name = "PATH")]
    old_hotsup: Option<PathBuf>,
    /// Also write the whole report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write hotsup's log of `upgrades` to PATH.
    #[arg(long, value_name = "PATH")]
    log: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// One of `notify-flood`'s processes: sends 2 KiB datagrams to SOCKET
    /// for DURATION, then prints what it sent as JSON.
    #[command(hide = true)]
    FloodNotify {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
    },
}

impl Cli {
    fn options(self) -> SuiteOptions {
        let mut scenarios = self.scenarios;
        scenarios.sort_unstable();
        scenarios.dedup();
        SuiteOptions {
            scenarios,
            upgrades: self.upgrades,
            baseline_restarts: self.baseline_restarts,
            crash_restarts: self.crash_restarts,
            concurrency: usize::from(self.concurrency),
            idle: self.idle,
            throughput_run: self.throughput_run,
            warmup: self.warmup,
            gap: self.gap,
            pool_upgrades: self.pool_upgrades,
            rollbacks: self.rollbacks,
            flood: self.flood,
            helper_upgrades: self.helper_upgrades,
            old_hotsup: self.old_hotsup,
            json: self.json,
            log: self.log,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Internal::FloodNotify { socket, duration }) = &cli.command {
        let sent = bench::notify::flood(socket, *duration);
        println!("{}", serde_json::to_string(&sent).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let opts = cli.options();
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
        let text = serde_json::to_string_pretty(&suite::json(&outcome, &opts)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("hotsup-bench: cannot write {}: {e}", path.display());
            code = ExitCode::FAILURE;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hotsup-bench").chain(args.iter().copied()))
    }

    #[test]
    fn arguments() {
        let o = parse(&[]).unwrap().options();
        assert_eq!((o.upgrades, o.concurrency), (100, 8));
        assert_eq!((o.baseline_restarts, o.crash_restarts), (20, 20));
        assert_eq!(o.idle, Duration::from_secs(10));
        assert_eq!(o.scenarios, Scenario::all());
        let o = parse(&[
            "--upgrades",
            "10",
            "--concurrency=3",
            "--json",
            "x.json",
            "--scenarios",
            "crash,naive,hard,naive,pool-upgrade",
            "--baseline-restarts",
            "5",
            "--idle",
            "1m",
            "--gap",
            "50ms",
        ])
        .unwrap()
        .options();
        assert_eq!((o.upgrades, o.concurrency), (10, 3));
        assert_eq!((o.close_workers(), o.keepalive_workers()), (1, 2));
        assert_eq!(o.json, Some(PathBuf::from("x.json")));
        assert_eq!(
            o.scenarios,
            vec![
                Scenario::Naive,
                Scenario::Hard,
                Scenario::Crash,
                Scenario::PoolUpgrade
            ]
        );
        assert_eq!(o.baseline_restarts, 5);
        assert_eq!(
            (o.idle, o.gap),
            (Duration::from_secs(60), Duration::from_millis(50))
        );
        for bad in [
            &["--upgrades"][..],
            &["--upgrades", "-1"],
            &["--concurrency", "1"],
            &["--scenarios", "bogus"],
            &["--idle", "0s"],
            &["--idle", "10"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let c = parse(&["flood-notify", "--socket", "/x", "--for", "2s"]).unwrap();
        assert!(
            matches!(c.command, Some(Internal::FloodNotify { duration, .. }) if duration == Duration::from_secs(2))
        );
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
