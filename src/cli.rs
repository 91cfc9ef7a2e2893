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

    /// How log lines are written: `text` for people, `json` for machines
    /// (one object per line: `event`, `level`, `ts` and typed fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub const EXIT_CODES: &str = "\
Exit codes:
  0  clean exit: a graceful shutdown completed
  1  runtime failure: a socket could not be bound, nothing could be started,
     or a shutdown had to kill
  2  usage error: bad arguments, COMMAND not found or not executable, or
     an unknown --user/--group or one hotsup cannot switch to
  N  the serving child exited with code N (or 128+signal) and the restart
     policy left it down, as tini reports it";

pub const CLIENT_EXIT_CODES: &str = "\
Exit codes:
  0  the new generation serves (probation passed, if any)
  1  it failed before it was ready, or its --check refused it; the
     previous generation serves on
  2  usage error, or several hotsups run and neither --name nor --control
     picks one
  3  it was rolled back after it was ready
  4  refused: hotsup began shutting down, or there is nothing to roll back
  5  hotsup cannot be reached (none runs, no control socket, or a bad reply)
  6  --timeout ran out before the outcome (the upgrade goes on)";

// Parsed once at start-up: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bind the listeners and run COMMAND under supervision.
    #[command(
        after_help = RUN_HELP,
        override_usage = "hotsup run [OPTIONS] [--] <COMMAND> [ARGS]..."
    )]
    Run(Box<RunArgs>),
    /// Upgrade a running hotsup and wait for the outcome.
    ///
    /// Waits through --probation. Exits 0 when the new generation serves,
    /// 1 when it failed before it was ready (or --check refused it), 3 when
    /// it was rolled back after
    /// it was ready, 4 when hotsup began shutting down first, 5 when hotsup
    /// cannot be reached, 6 when --timeout ran out; the reason is printed.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Upgrade {
        #[command(flatten)]
        target: Target,
        /// Return as soon as the upgrade has started.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (the upgrade goes on).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Upgrade hotsup itself, not the app: exec the hotsup binary now
        /// at the path it was started from, in place (same pid; the
        /// children and listeners are untouched). The new binary first
        /// checks it can take over; if not, it is refused (exit 4) with the
        /// reason and nothing changes. Refused, not queued, while an
        /// upgrade, rollback, probation or restart is in progress.
        #[arg(long = "self", conflicts_with = "no_wait")]
        self_: bool,
        /// With --self: the new binary, instead of the install path.
        #[arg(long, requires = "self_", value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
    },
    /// Take back the upgrade on probation, or go back to the previous good
    /// executable.
    ///
    /// During --probation, the new generation is killed and the previous one
    /// resumes at once. Otherwise hotsup upgrades to the executable that
    /// served before the last upgrade, even if the file at the path was
    /// replaced since. Exit codes as for upgrade.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Rollback {
        #[command(flatten)]
        target: Target,
        /// Give up waiting after this long (the rollback goes on).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show a running hotsup's listeners and generations.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output (a stable schema, see the README).
        #[arg(long)]
        json: bool,
    },
    /// Gracefully stop a running hotsup and wait until it exits.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Return once the shutdown has begun.
        #[arg(long)]
        no_wait: bool,
    },
    /// Send SIGNAL to the serving workers of a running hotsup.
    Signal {
        #[command(flatten)]
        target: Target,
        /// Only the worker of this slot (0 to N-1; default: every worker).
        #[arg(long, value_name = "INDEX")]
        worker: Option<u32>,
        /// Name or number, e.g. USR1 or 10.
        signal: String,
    },
    /// Print a running hotsup's lifecycle events as JSON lines, as they
    /// happen, until it exits.
    ///
    /// Each line is one object with `event` (its name: spawned, ready,
    /// draining, drained, upgrade_failed, rolled_back, ...), `ts` and typed
    /// fields; the same objects `--log-format json` logs. For deploy tools
    /// and dashboards.
    Events {
        #[command(flatten)]
        target: Target,
        /// Only these events (repeatable; default: all).
        #[arg(long = "event", value_name = "NAME")]
        names: Vec<String>,
    },
    /// Change the number of worker processes of a running hotsup.
    ///
    /// New workers start from the serving generation's executable; with
    /// fewer, the highest slots drain. Refused while an upgrade rolls out.
    Scale {
        #[command(flatten)]
        target: Target,
        /// The new number of workers.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
        workers: u32,
    },
    /// Print the man page or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// The man pages (hotsup.1, hotsup-run.1, ...), in roff, into DIR.
    Man { dir: std::path::PathBuf },
    /// Completions for SHELL.
    Completions { shell: clap_complete::Shell },
}

/// Which running hotsup a client subcommand talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// The control socket's path.
    #[arg(long, value_name = "PATH", conflicts_with = "name")]
    pub control: Option<std::path::PathBuf>,
    /// The name given to `hotsup run --name` (by default, the file name of
    /// its COMMAND); the socket is found at the default path for it.
    /// Without --name or --control: the only hotsup of this user that is
    /// running (with a live socket in the default directory).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// How children receive the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fds {
    /// hotsup's own protocol on a private channel (see hotsup-child).
    Native,
    /// systemd socket activation: fds 3, 4, ... with LISTEN_FDS,
    /// LISTEN_FDNAMES and LISTEN_PID, for unmodified apps.
    Systemd,
}

/// How hotsup decides that a new generation is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// The child says so: READY on the hotsup channel, or READY=1 on
    /// NOTIFY_SOCKET.
    Notify,
    /// The child stayed alive this long (it may also say so sooner).
    Delay(Duration),
    /// At once, as soon as it is started.
    Exec,
}

/// Parses `notify`, `exec` or `delay:DURATION`.
pub fn parse_ready(s: &str) -> Result<ReadyMode, String> {
    match s {
        "notify" => Ok(ReadyMode::Notify),
        "exec" => Ok(ReadyMode::Exec),
        _ => match s.strip_prefix("delay:") {
            Some(d) => parse_duration(d).map(ReadyMode::Delay),
            None => Err("expected notify, exec or delay:DURATION (e.g. delay:2s)".into()),
        },
    }
}

/// `run --help`'s epilogue; the watch examples only in a build that has
/// watch mode.
macro_rules! run_help {
    ($watch:literal) => {
        concat!(
            "\
Signals:
  SIGUSR2, SIGHUP   upgrade: start a new generation, drain the old one when
                    the new one is ready
  SIGTERM, SIGINT,  graceful shutdown; a second one kills at once. SIGQUIT
  SIGQUIT           stops gracefully, as for nginx, instead of reaching the
                    app (a Go app dies of it with a goroutine dump, and would
                    be restarted as a crash); `hotsup signal QUIT` sends it
  SIGUSR1           forwarded to the serving child

Readiness, in order, each worker (all within --ready-timeout, counted
from its spawn; past it, the worker fails to start):
  1. the signal, by --ready: READY on the channel or READY=1 on
     NOTIFY_SOCKET (notify); the delay, or READY/READY=1 if it comes
     sooner (delay:DURATION); at once (exec). The first signal wins: a
     later READY, or the end of the delay after a READY, changes nothing
  2. then --ready-settle, if given, counted from that signal
  3. then --ready-probe, if given, run until one run exits 0 (250ms
     between a failed run and the next; each run within
     --ready-probe-timeout)

Upgrade hooks (sh -c CMD, as hotsup's user, in hotsup's directory):
  --check CMD runs before an upgrade spawns anything (not at the first
  start, nor before crash restarts or `hotsup rollback`): failing, it
  refuses the upgrade. --after-upgrade CMD runs once an upgrade is done:
  failing, it is logged. A hook over its timeout is killed with its
  process group and counts as failed.

Examples:
  hotsup run -l 127.0.0.1:8080 -- ./server
  hotsup run -l http=[::]:80 -l admin=unix:/run/app.sock --unix-mode 660 -- ./server --flag
  hotsup upgrade                 # from another terminal: upgrade and wait
  hotsup upgrade --name server   # the same, when several hotsups run
",
            $watch,
            "
Exit codes:
  0  clean exit, 1  runtime failure, 2  usage error, or the child's own code
  (128+signal) when it stopped and was not restarted",
        )
    };
}
#[cfg(feature = "watch")]
const RUN_HELP: &str = run_help!(
    "  hotsup run --watch src --watch templates --build 'cargo build' \\
      -l 127.0.0.1:8080 -- ./target/debug/myapp
  hotsup run --watch src --build 'cargo build' --livereload 127.0.0.1:35729 \\
      -l 127.0.0.1:8080 -- ./target/debug/myapp
"
);
#[cfg(not(feature = "watch"))]
const RUN_HELP: &str = run_help!("");

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
    /// Read these options from FILE (TOML: each key a long option without
    /// its dashes, `command = ["./app", "arg"]` for COMMAND; see the
    /// README). Options on the command line win. hotsup reads it again at
    /// every upgrade: listeners are added and removed, and the command,
    /// environment and timeouts apply from the new generation on; a file
    /// that does not parse refuses the upgrade.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Listen on ADDR, optionally naming it: HOST:PORT, [V6]:PORT,
    /// tcp://HOST:PORT, udp://HOST:PORT or unix:/path. Repeatable. Port 0
    /// picks a free port; the bound address is logged and passed to the
    /// child. A HOST with several addresses (localhost: 127.0.0.1, ::1)
    /// binds the first one, with a warning naming the others; give one
    /// --listen per address to serve them all. Unnamed listeners are named
    /// after kind and position: tcp0, udp1, unix2, ...
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

    /// How children receive the listeners: `native` (hotsup's protocol,
    /// for apps using hotsup-child) or `systemd` (LISTEN_FDS, for apps
    /// written for systemd socket activation, unmodified).
    #[arg(long, value_enum, default_value_t = Fds::Native, help_heading = "Children")]
    pub fds: Fds,

    /// How a new generation counts as ready: `notify` (it says so, natively
    /// or with READY=1 on NOTIFY_SOCKET), `delay:DURATION` (it stayed alive
    /// that long) or `exec` (at once).
    #[arg(long, default_value = "notify", value_name = "MODE", value_parser = parse_ready, help_heading = "Children")]
    pub ready: ReadyMode,

    /// Run the children as USER (a name or a uid), with the user's groups;
    /// hotsup itself keeps its privileges to bind, for example, port 80.
    /// Needs root (CAP_SETUID, CAP_SETGID and CAP_CHOWN). See "Privilege
    /// separation" in the README.
    #[arg(long, value_name = "USER", help_heading = "Children")]
    pub user: Option<String>,

    /// Run the children with GROUP (a name or a gid) as their group;
    /// default with --user: the user's primary group.
    #[arg(long, value_name = "GROUP", help_heading = "Children")]
    pub group: Option<String>,

    /// After a new worker's readiness signal (--ready), wait DURATION more
    /// before it counts as ready: for apps, such as gunicorn under --fds
    /// systemd, that say READY before their workers can serve. The
    /// signal comes first, then the settle time, then --ready-probe; all
    /// must happen within --ready-timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Children")]
    pub ready_settle: Option<Duration>,

    /// After a new worker's readiness signal and --ready-settle, run CMD
    /// (with sh -c) until it exits 0; only then is the worker ready. A
    /// failed run is tried again 250ms after it ended, until
    /// --ready-timeout. CMD gets HOTSUP_GENERATION, HOTSUP_PID (the
    /// worker's pid) and HOTSUP_SLOT; its output is not shown but kept (the
    /// last 1 KiB) for the probe_failed event. It runs as hotsup's user, in
    /// hotsup's directory.
    #[arg(long, value_name = "CMD", help_heading = "Children")]
    pub ready_probe: Option<String>,

    /// How long one --ready-probe run may take; then its process group is
    /// killed and the run counts as failed.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration, requires = "ready_probe", help_heading = "Children")]
    pub ready_probe_timeout: Duration,

    /// Before an upgrade starts anything, run CMD (with sh -c), as `nginx
    /// -t`, `haproxy -c` or a migration step. If it fails, the upgrade is
    /// refused with its output (`hotsup upgrade` exits 1) and the serving
    /// generation serves on. Upgrades asked for while it runs follow it,
    /// coalesced into one. Not run at the first start, at crash restarts,
    /// nor for `hotsup rollback`. CMD gets HOTSUP_GENERATION, the number the
    /// new generation will have (it has no pid yet). It runs as hotsup's
    /// user, in hotsup's directory; the last 4 KiB of its output are kept.
    #[arg(long, value_name = "CMD", help_heading = "Hooks")]
    pub check: Option<String>,

    /// How long --check may take; then its process group is killed and the
    /// upgrade is refused.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration, requires = "check", help_heading = "Hooks")]
    pub check_timeout: Duration,

    /// Once an upgrade is done (its new generation serves, --probation
    /// passed), run CMD (with sh -c), for a cache warm-up or a chat
    /// notification. Nothing waits for it; a failure is logged
    /// (after_upgrade_failed) and changes nothing. CMD gets
    /// HOTSUP_GENERATION, HOTSUP_PID (the first worker's pid) and
    /// HOTSUP_PIDS (every worker's, in slot order). One runs at a time: the
    /// next upgrade's replaces one still running. Also run after `hotsup
    /// rollback`, never after the first start or a crash restart.
    #[arg(long, value_name = "CMD", help_heading = "Hooks")]
    pub after_upgrade: Option<String>,

    /// How long --after-upgrade may take; then its process group is
    /// killed.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration, requires = "after_upgrade", help_heading = "Hooks")]
    pub after_upgrade_timeout: Duration,

    /// Give systemd a copy of each listener (FDSTORE=1), so that a crash of
    /// hotsup queues connections instead of refusing them; at the next
    /// start hotsup takes them back. `auto` when systemd says the unit has
    /// FileDescriptorStoreMax= (systemd 254+); `on` for older systemd.
    #[arg(long, value_enum, default_value_t = crate::fdstore::Mode::Auto, value_name = "MODE", help_heading = "Listeners")]
    pub fd_store: crate::fdstore::Mode,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9100): upgrades by outcome, rollbacks, crash and worker
    /// restarts, the serving generation, time to ready and drain
    /// durations, dropped log lines and notify datagrams, workers' memory.
    /// Nothing listens without it.
    #[arg(long, value_name = "ADDR", help_heading = "Control")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Working directory of the children, entered as --user if given.
    /// COMMAND is still found from hotsup's own directory and PATH.
    #[arg(long, value_name = "DIR", help_heading = "Children")]
    pub chdir: Option<std::path::PathBuf>,

    /// Set KEY=VALUE in the children's environment. Repeatable; overrides
    /// --env-file. hotsup's own variables (NOTIFY_SOCKET, LISTEN_*,
    /// WATCHDOG_*, HOTSUP_*) are refused.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = crate::exec_env::parse_assignment, help_heading = "Children")]
    pub env: Vec<(String, String)>,

    /// Read KEY=VALUE lines from FILE, in systemd's EnvironmentFile=
    /// syntax, once at start-up. Repeatable: a later file overrides an
    /// earlier one. -FILE ignores a missing file.
    #[arg(
        long = "env-file",
        value_name = "FILE",
        allow_hyphen_values = true,
        help_heading = "Children"
    )]
    pub env_file: Vec<OsString>,

    /// File mode creation mask of the children, in octal (e.g. 027).
    #[arg(long, value_name = "MODE", value_parser = crate::exec_env::parse_umask, help_heading = "Children")]
    pub umask: Option<u32>,

    /// Resource limit of the children, repeatable: NAME=SOFT[:HARD], NAME
    /// as prlimit or systemd spell it (nofile, LimitNOFILE, core, as, ...),
    /// values a number or infinity; one value sets both. An explicit
    /// nofile replaces hotsup's restoring of the soft limit it started
    /// with.
    #[arg(long = "rlimit", value_name = "NAME=SOFT[:HARD]", value_parser = crate::exec_env::parse_rlimit, help_heading = "Children")]
    pub rlimit: Vec<crate::exec_env::Limit>,

    /// Serve the control socket at PATH (default: see --name).
    #[arg(long, value_name = "PATH", help_heading = "Control")]
    pub control: Option<std::path::PathBuf>,

    /// Name of this supervisor, for the default control socket
    /// $XDG_RUNTIME_DIR/hotsup/NAME.sock (/run/hotsup/NAME.sock for root;
    /// $HOTSUP_RUNTIME_DIR/NAME.sock when that is set). Default: the file
    /// name of COMMAND.
    #[arg(long, value_name = "NAME", help_heading = "Control")]
    pub name: Option<String>,

    /// Most generations draining at once; an upgrade beyond it kills the
    /// oldest draining generation early.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), help_heading = "Lifecycle")]
    pub max_draining: u16,

    /// Become a child subreaper, so orphans of the children are re-parented
    /// to hotsup and reaped (automatic when hotsup runs as PID 1).
    #[arg(long, help_heading = "Children")]
    pub subreaper: bool,

    /// Put each generation in a cgroup of its own, so that a process that
    /// leaves its process group (setsid, a double fork) is still killed
    /// with its generation and cannot report ready for another one.
    #[arg(long, value_enum, default_value_t = crate::cgroup::Mode::Auto, value_name = "MODE", help_heading = "Children")]
    pub cgroup: crate::cgroup::Mode,

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

    /// Run N worker processes per generation, all on the same listeners
    /// (each gets HOTSUP_WORKER=0..N-1). A worker that crashes restarts in
    /// its slot, with a backoff of its own, while the others serve.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64), help_heading = "Workers")]
    pub workers: u32,

    /// Roll an upgrade out K workers at a time: each batch must be ready
    /// before as many old workers retire (paused if they speak protocol 2,
    /// drained otherwise). Default: all N at once, the fastest upgrade,
    /// with 2N processes for a moment.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64), help_heading = "Workers")]
    pub rollout_batch: Option<u32>,

    /// Let the first new worker of an upgrade serve beside the whole old
    /// pool for DURATION before the rest rolls out; its crash or UNHEALTHY
    /// takes the upgrade back.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Workers")]
    pub canary: Option<Duration>,

    /// Replace a worker whose resident memory exceeds SIZE (e.g. 512M,
    /// 2G): a new worker starts in its slot first, then it drains.
    /// Checked every 5 s.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Workers")]
    pub max_worker_rss: Option<u64>,

    /// Replace a worker once it has served DURATION (plus up to a tenth,
    /// so that a pool is not replaced all at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Workers")]
    pub max_worker_age: Option<Duration>,

    /// Keep the previous generation on standby for DURATION after a new one
    /// is ready: if the new one exits or reports itself unhealthy within
    /// the window, hotsup rolls back to the previous one at once. Costs
    /// the previous generation's memory for the window. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Lifecycle")]
    pub probation: Option<Duration>,

    /// Give up, exiting 1, when this many starts in a row fail before any
    /// generation was ever ready (each start may take up to
    /// --ready-timeout). Crash restarts after something served are never
    /// given up.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Lifecycle")]
    pub start_attempts: u32,

    /// Development: watch PATH (recursively) and upgrade to the new code on
    /// every save. Repeatable. Skips target/, .git/, COMMAND itself, editor
    /// scratch files, and what .gitignore and .ignore files ignore. A
    /// crashed generation is not restarted (whatever --restart says) but
    /// waits for the next save or `hotsup upgrade`; nothing is given up
    /// (--start-attempts does not apply).
    #[arg(
        long = "watch",
        value_name = "PATH",
        help_heading = "Watch (development)",
        hide = !crate::watch::AVAILABLE
    )]
    pub watch: Vec<std::path::PathBuf>,

    /// Run CMD (with sh -c) after each save while the serving generation
    /// serves on, and upgrade only when it succeeds. A failed build prints
    /// its output and changes nothing. Saves during a build queue one
    /// follow-up build. The first generation starts after the first good
    /// build; connections wait in the backlog until then.
    #[arg(
        long,
        value_name = "CMD",
        requires = "watch",
        help_heading = "Watch (development)",
        hide = !crate::watch::AVAILABLE
    )]
    pub build: Option<String>,

    /// How long the watched files must stay quiet before a build (or an
    /// upgrade) starts, so that a burst of writes is one build [default:
    /// 100ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "watch", help_heading = "Watch (development)",
        hide = !crate::watch::AVAILABLE)]
    pub debounce: Option<Duration>,

    /// Also skip changes to paths matching GLOB (a .gitignore pattern,
    /// relative to the working directory). Repeatable.
    #[arg(
        long,
        value_name = "GLOB",
        requires = "watch",
        help_heading = "Watch (development)",
        hide = !crate::watch::AVAILABLE
    )]
    pub watch_ignore: Vec<String>,

    /// Serve live reload on ADDR: include
    /// <script src="http://ADDR/livereload.js"></script> in your pages and
    /// they reload once a new generation is ready, never before.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "watch",
        help_heading = "Watch (development)",
        hide = !crate::watch::AVAILABLE
    )]
    pub livereload: Option<std::net::SocketAddr>,

    /// The server to run, and its arguments. Everything from COMMAND on is
    /// the server's: hotsup's own options go before it. It is looked up in
    /// PATH again at every upgrade, so a binary replaced in place is picked
    /// up.
    #[arg(trailing_var_arg = true, value_name = "COMMAND", num_args = 0..)]
    pub command: Vec<OsString>,
}

/// Most workers per generation.
pub const MAX_WORKERS: u32 = 1024;

/// Parses `512M`, `2G`, `100k` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, ""), |i| t.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| "not a size such as 512M or 2G".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err("not a size such as 512M or 2G (units: K, M, G)".into()),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err("must be more than zero and less than 16 EiB".into()),
        Some(b) => Ok(b),
    }
}

/// Longest duration accepted: deadlines computed from it cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `500ms`, `2s`, `1m`, `1h 30m`; zero and more than a year are
/// refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| match e {
        // humantime's own message for a bare number already suggests units:
        // say it once, in the spelling hotsup documents.
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("a unit is needed, for example {value}s or {value}ms")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit {unit:?} (write durations like 500ms, 2s, 1m or 1h)")
        }
        e => format!("{e} (write durations like 500ms, 2s or 1m)"),
    })?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most a year (365d)".into());
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
    crate::signals::parse(s)
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
        assert!(parse_duration("9223372036854775807s").is_err());
        assert!(parse_duration("366d").is_err());
    }

    #[test]
    fn a_missing_unit_is_reported_once() {
        let e = parse_duration("30").unwrap_err();
        assert_eq!(e, "a unit is needed, for example 30s or 30ms");
        let e = parse_duration("3 parsecs").unwrap_err();
        assert_eq!(e.matches("unit").count(), 1, "{e}");
    }

    #[test]
    fn ready_modes() {
        assert_eq!(parse_ready("notify"), Ok(ReadyMode::Notify));
        assert_eq!(parse_ready("exec"), Ok(ReadyMode::Exec));
        assert_eq!(
            parse_ready("delay:300ms"),
            Ok(ReadyMode::Delay(Duration::from_millis(300)))
        );
        assert!(parse_ready("delay:").is_err());
        assert!(parse_ready("later").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("100k"), Ok(100 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
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
