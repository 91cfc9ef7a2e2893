//! What the options of `hotsup run` mean to the supervisor: what a new
//! generation runs (its [`Launch`]) and the lifecycle [`Policy`], checked.
//! Derived once at start, and again from the config file at each upgrade.

use std::ffi::OsString;

use crate::cli::{self, Fds, RunArgs};
use crate::exec_env::{self, ExecEnv};
use crate::hooks::{Hook, HookCommands};
use crate::identity::Identity;
use crate::lifecycle::{Policy, ReadyRule, RestartRule};

/// What a generation runs, and how it gets its sockets. Each pinned
/// executable keeps the launch it was started with, so that a crash restart
/// runs exactly what crashed, whatever the config file says since.
#[derive(Debug)]
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub fds: Fds,
    /// `--chdir`, `--env`, `--env-file`, `--umask`, `--rlimit`.
    pub exec: ExecEnv,
}

/// Everything an upgrade can change.
#[derive(Debug)]
pub struct Derived {
    pub launch: Launch,
    pub policy: Policy,
    /// `--max-worker-rss`, in bytes.
    pub max_worker_rss: Option<u64>,
    /// `--ready-probe`, `--check`, `--after-upgrade`: the commands the
    /// policy's `ready_probe`, `check` and `after_upgrade` ask for.
    pub hooks: HookCommands,
}

/// Checks `args` and derives what they mean. Reads `--env-file`s: blocking,
/// so off the event loop's thread once it runs. `listeners` is how many
/// sockets each child inherits.
pub fn derive(
    args: &RunArgs,
    identity: Option<&Identity>,
    listeners: usize,
) -> Result<Derived, String> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(
            "no COMMAND given: hotsup run [OPTIONS] [--] COMMAND [ARGS]... (see hotsup run --help)"
                .into(),
        );
    };
    let exec = exec_env::build(
        &exec_env::Given {
            chdir: args.chdir.as_deref(),
            env: &args.env,
            env_files: &args.env_file,
            umask: args.umask,
            rlimits: &args.rlimit,
        },
        identity,
        listeners,
    )?;
    if let cli::ReadyMode::Delay(d) = args.ready
        && d >= args.ready_timeout
    {
        return Err(format!(
            "--ready delay:{} can never be reached: --ready-timeout is {}",
            humantime::format_duration(d),
            humantime::format_duration(args.ready_timeout)
        ));
    }
    let watching = !args.watch.is_empty();
    let policy = Policy {
        ready: match args.ready {
            cli::ReadyMode::Notify => ReadyRule::Notify,
            cli::ReadyMode::Delay(d) => ReadyRule::Delay(d),
            cli::ReadyMode::Exec => ReadyRule::Exec,
        },
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        drain_signal: args.drain_signal.as_raw(),
        restart: match args.restart {
            // Watch mode waits for the next save instead.
            _ if watching => RestartRule::Wait,
            cli::Restart::Always => RestartRule::Always,
            cli::Restart::OnFailure => RestartRule::OnFailure,
            cli::Restart::Never => RestartRule::Never,
        },
        max_draining: usize::from(args.max_draining),
        probation: args.probation,
        // Watch mode never gives up: the next save may fix it.
        start_attempts: if watching {
            u32::MAX
        } else {
            args.start_attempts
        },
        ready_settle: args.ready_settle,
        ready_probe: args.ready_probe.is_some(),
        check: args.check.is_some(),
        after_upgrade: args.after_upgrade.is_some(),
        workers: args.workers,
        rollout_batch: args.rollout_batch,
        canary: args.canary,
        max_worker_age: args.max_worker_age,
    };
    Ok(Derived {
        launch: Launch {
            program: program.clone(),
            args: rest.to_vec(),
            fds: args.fds,
            exec,
        },
        policy,
        max_worker_rss: args.max_worker_rss,
        hooks: HookCommands {
            ready_probe: args.ready_probe.clone().map(|command| Hook {
                command,
                timeout: args.ready_probe_timeout,
            }),
            check: args.check.clone().map(|command| Hook {
                command,
                timeout: args.check_timeout,
            }),
            after_upgrade: args.after_upgrade.clone().map(|command| Hook {
                command,
                timeout: args.after_upgrade_timeout,
            }),
        },
    })
}
