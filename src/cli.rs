//! The command line, as clap definitions.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rustix::process::Signal;

use crate::listeners::ListenSpec;

/// Zero-downtime restarts for network servers: hotsup binds the listening
/// sockets once, holds them, and hands them to each new generation of your
/// server, so an upgrade never refuses a connection.
#[derive(Debug, Parser)]
#[command(name = "hotsup", version, propagate_version = true)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "\
Exit codes:
  0  clean exit: a graceful shutdown completed, or the child exited 0 and
     the restart policy did not restart it
  1  runtime failure: a socket could not be bound, the child failed and was
     not restarted, or a shutdown had to kill
  2  usage error: bad arguments, or COMMAND not found or not executable";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bind the listeners and run COMMAND under supervision.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
}

const RUN_HELP: &str = "\
Signals:
  SIGUSR2, SIGHUP   upgrade: start a new generation, drain the old one when
                    the new one is ready
  SIGTERM, SIGINT   graceful shutdown; a second one kills at once
  SIGQUIT, SIGUSR1  forwarded to the serving child

Examples:
  hotsup run -l 127.0.0.1:8080 -- ./server
  hotsup run -l http=[::]:80 -l admin=unix:/run/app.sock --unix-mode 660 -- ./server --flag
  kill -USR2 $(pidof hotsup)

Exit codes:
  0  clean exit, 1  runtime failure, 2  usage error";

/// When to restart a child that exits while serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Restart {
    /// Restart whatever the exit status.
    Always,
    /// Restart unless the child exited with status 0.
    OnFailure,
    /// Never restart; hotsup exits when the serving child does.
    Never,
}

impl Restart {
    /// The spelling used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Listen on ADDR, optionally naming it: HOST:PORT, [V6]:PORT,
    /// tcp://HOST:PORT, udp://HOST:PORT or unix:/path. Repeatable. Port 0
    /// picks a free port; the bound address is logged and passed to the
    /// child. Unnamed listeners are named after kind and position: tcp0,
    /// udp1, unix2, ...
    #[arg(
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        help_heading = "Listeners"
    )]
    pub listen: Vec<ListenSpec>,

    /// listen(2) backlog of stream listeners.
    #[arg(
        long,
        default_value_t = 1024,
        value_name = "N",
        help_heading = "Listeners"
    )]
    pub backlog: i32,

    /// Set SO_REUSEPORT on TCP and UDP listeners (off by default: hotsup's
    /// single socket already serves every generation).
    #[arg(long, help_heading = "Listeners")]
    pub reuseport: bool,

    /// Set IPV6_V6ONLY on IPv6 listeners, so [::] does not also take IPv4.
    #[arg(long, help_heading = "Listeners")]
    pub ipv6_only: bool,

    /// File mode of Unix socket files, in octal (e.g. 660).
    #[arg(long, value_name = "MODE", value_parser = parse_mode, help_heading = "Listeners")]
    pub unix_mode: Option<u32>,

    /// How long a new generation may take to report ready before the
    /// upgrade is abandoned.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Lifecycle")]
    pub ready_timeout: Duration,

    /// How long a draining generation may take to exit before its process
    /// group is killed.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Lifecycle")]
    pub drain_timeout: Duration,

    /// Signal that asks a child to drain when it never spoke the hotsup
    /// protocol.
    #[arg(long, default_value = "TERM", value_name = "SIGNAL", value_parser = parse_signal, help_heading = "Lifecycle")]
    pub drain_signal: Signal,

    /// When to restart a serving child that exits on its own. Restarts back
    /// off exponentially from 100ms to 10s.
    #[arg(long, value_enum, default_value_t = Restart::OnFailure, help_heading = "Lifecycle")]
    pub restart: Restart,

    /// The server to run, and its arguments. It is looked up in PATH again
    /// at every upgrade, so a binary replaced in place is picked up.
    #[arg(trailing_var_arg = true, value_name = "COMMAND", num_args = 0..)]
    pub command: Vec<OsString>,
}

/// Parses `500ms`, `2s`, `1m`, `1h 30m`; zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (write durations like 500ms, 2s or 1m)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| "not an octal file mode such as 660".to_string())?;
    if m > 0o7777 {
        return Err("not an octal file mode such as 660".into());
    }
    Ok(m)
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or a number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match name {
        "HUP" => Some(Signal::HUP),
        "INT" => Some(Signal::INT),
        "QUIT" => Some(Signal::QUIT),
        "KILL" => Some(Signal::KILL),
        "USR1" => Some(Signal::USR1),
        "USR2" => Some(Signal::USR2),
        "TERM" => Some(Signal::TERM),
        "WINCH" => Some(Signal::WINCH),
        "CONT" => Some(Signal::CONT),
        "STOP" => Some(Signal::STOP),
        n => n.parse::<i32>().ok().and_then(Signal::from_named_raw),
    };
    sig.ok_or_else(|| "not a signal name or number, such as TERM or 15".to_string())
}

/// A signal's conventional name, for logs.
pub fn signal_name(raw: i32) -> String {
    let known = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
    ];
    known
        .iter()
        .find(|(s, _)| s.as_raw() == raw)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("signal {raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::TERM));
        assert_eq!(parse_signal("sigquit"), Ok(Signal::QUIT));
        assert_eq!(parse_signal("10"), Ok(Signal::USR1));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
