//! hotsup: a zero-downtime restart supervisor for network servers.
//!
//! Exit codes: 0 clean exit, 1 runtime failure, 2 usage error (see
//! [`cli::EXIT_CODES`]).

mod child;
mod cli;
mod handoff;
mod listeners;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, RunArgs};
use crate::listeners::BindOptions;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    ensure_std_fds();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(e)),
    };
    init_logging(cli.verbose, cli.quiet);
    match cli.command {
        Command::Run(args) => ExitCode::from(run(args)),
    }
}

/// Prints a clap error as one line (help and version print in full).
fn usage_error(e: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            EXIT_USAGE
        } else {
            0
        };
    }
    let rendered = e.render().to_string();
    // clap puts the cause on the first line and usage hints after a blank
    // line; missing-argument errors list the arguments on indented lines.
    let mut line = String::new();
    for l in rendered.lines() {
        if l.trim().is_empty() {
            break;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(l.trim());
    }
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("hotsup: {line} (see hotsup run --help)");
    EXIT_USAGE
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(rustix::termios::isatty(std::io::stderr()))
        .with_target(false)
        .init();
}

/// A usage error found after parsing: one line, exit 2.
fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("hotsup: {msg}");
    EXIT_USAGE
}

fn runtime_failure(msg: impl std::fmt::Display) -> u8 {
    eprintln!("hotsup: {msg}");
    EXIT_RUNTIME
}

fn run(args: RunArgs) -> u8 {
    let Some((program, rest)) = args.command.split_first() else {
        return usage("no COMMAND given: usage: hotsup run [OPTIONS] -- COMMAND [ARGS]...");
    };
    if let Err(e) = listeners::name_all(&args.listen) {
        return usage(e);
    }
    if let Err(e) = child::resolve(program) {
        return usage(e);
    }
    raise_nofile_limit();
    let opts = BindOptions {
        backlog: args.backlog,
        reuseport: args.reuseport,
        ipv6_only: args.ipv6_only,
        unix_mode: args.unix_mode,
    };
    // Dropping `bound` (on every return path) closes the sockets and removes
    // the Unix socket files hotsup created.
    let bound = match listeners::bind_all(&args.listen, &opts) {
        Ok(b) => b,
        Err(e) => return runtime_failure(e),
    };
    for l in &bound {
        tracing::info!(name = %l.info.name, kind = %l.info.kind, address = %l.info.address, "listening");
    }
    let outbox = match handoff::Outbox::new(bound) {
        Ok(o) => o,
        Err(e) => return runtime_failure(format!("cannot describe listeners: {e}")),
    };
    let cfg = supervisor::Config {
        program: program.clone(),
        args: rest.to_vec(),
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        drain_signal: args.drain_signal,
        restart: args.restart,
    };
    // One thread: spawning from the thread that lives as long as hotsup
    // keeps PR_SET_PDEATHSIG meaningful, and the supervisor does no
    // per-request work that could use more.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return runtime_failure(format!("cannot start the event loop: {e}")),
    };
    match rt.block_on(supervisor::Supervisor::new(cfg, outbox).run()) {
        Ok(code) => {
            tracing::info!(code, "exiting");
            code
        }
        Err(e) => runtime_failure(format!("cannot install signal handlers: {e}")),
    }
}

/// Many listeners need many fds; the hard limit is ours to take.
fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// With fd 0, 1 or 2 closed, the first socket would land there and a child
/// writing to stdout would write into it.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: only queried, never closed or owned.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                // The lowest free fd is the one that was closed.
                std::mem::forget(null);
            }
        }
    }
}
