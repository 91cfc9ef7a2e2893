//! hotsup: a zero-downtime restart supervisor for network servers.
//!
//! Exit codes: 0 clean exit, 1 runtime failure, 2 usage error (see
//! [`cli::EXIT_CODES`]).

use std::process::ExitCode;

use clap::Parser;

use hotsup::cli::{self, Cli, Command, RunArgs};
use hotsup::listeners::{self, BindOptions};
use hotsup::{
    child, client, config, control, handoff, identity, lifecycle, logging, notify, reload,
    settings, signals, state, supervisor, watch,
};

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // The trampoline of `--fds systemd` runs in the child, before anything
    // else touches the process.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == child::EXEC_LISTEN_PID) {
        child::exec_listen_pid(&argv[2..]);
    }
    // SAFETY: first thing in main, with no other thread yet.
    let inherited = unsafe { state::take_env_fd() };
    if argv.get(1).is_some_and(|a| a == state::CHECK_COMMAND) {
        return ExitCode::from(self_check());
    }
    close_inherited_fds_on_exec();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(e, &argv)),
    };
    match cli.command {
        Command::Run(args) => {
            let log = logging::init(cli.verbose, cli.quiet, cli.log_format);
            let separated = separated_by_dashes(&argv, &args.command);
            let inherited = match inherited.map(|r| r.and_then(state::read)) {
                None => None,
                Some(Ok(st)) => Some(st),
                // Past the exec: nothing to go back to.
                Some(Err(e)) => {
                    drop(log);
                    return ExitCode::from(runtime_failure(format!(
                        "cannot take over from the hotsup that exec'd this one: {e}"
                    )));
                }
            };
            let code = match with_config(*args, &argv) {
                Ok((args, reload)) => {
                    // COMMAND from the file is its own: nothing misplaced.
                    let separated = separated || reload.is_some();
                    run(args, reload, separated, cli.log_format, inherited)
                }
                Err(e) => usage(e),
            };
            // Writes what is still queued, `exiting` included.
            drop(log);
            ExitCode::from(code)
        }
        Command::Generate { what } => ExitCode::from(generate(what)),
        Command::Upgrade {
            target,
            self_: true,
            binary,
            timeout,
            ..
        } => ExitCode::from(client::self_upgrade(&target, binary, timeout)),
        Command::Upgrade {
            target,
            no_wait,
            timeout,
            ..
        } => ExitCode::from(client::upgrade(&target, no_wait, timeout)),
        Command::Rollback { target, timeout } => ExitCode::from(client::rollback(&target, timeout)),
        Command::Status { target, json } => ExitCode::from(client::status(&target, json)),
        Command::Stop { target, no_wait } => ExitCode::from(client::stop(&target, no_wait)),
        Command::Signal {
            target,
            worker,
            signal,
        } => ExitCode::from(client::signal(&target, &signal, worker)),
        Command::Scale { target, workers } => ExitCode::from(client::scale(&target, workers)),
        Command::Events { target, names } => ExitCode::from(client::events(&target, names)),
    }
}

/// Man page and completions, generated from the clap definitions.
fn generate(what: cli::Generate) -> u8 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match what {
        cli::Generate::Man { dir } => {
            // One page per visible subcommand. clap_mangen leaves out the
            // `help` subcommand only if the command is not built yet: built,
            // it got pages for `help` and each `help SUBCOMMAND`.
            if let Err(e) = clap_mangen::generate_to(cmd, &dir) {
                return runtime_failure(format!(
                    "cannot write man pages to {}: {e}",
                    dir.display()
                ));
            }
        }
        cli::Generate::Completions { shell } => {
            // Generated in memory: clap_complete panics when its writer
            // fails, as stdout does when its reader went away.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "hotsup", &mut out);
            if let Err(e) = logging::print(&String::from_utf8_lossy(&out)) {
                return runtime_failure(format!("cannot write the completions: {e}"));
            }
        }
    }
    0
}

/// Prints a clap error as one line (help and version print in full),
/// keeping clap's tips and pointing to the help of the subcommand at fault.
fn usage_error(e: clap::Error, argv: &[std::ffi::OsString]) -> u8 {
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
    logging::report(one_line(&e.render().to_string(), &subcommand_of(argv)));
    EXIT_USAGE
}

/// The subcommand an argument list is for, as `hotsup upgrade` (or
/// `hotsup` when none is recognized): the help a usage error points to.
fn subcommand_of(argv: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let root = Cli::command();
    let mut cmd = &root;
    let mut path = vec![root.get_name().to_string()];
    for arg in argv.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = cmd.find_subcommand(arg) {
            path.push(sub.get_name().to_string());
            cmd = sub;
        }
    }
    path.join(" ")
}

/// clap's rendered error in one line: the cause, then its tips, then which
/// help to read.
fn one_line(rendered: &str, subcommand: &str) -> String {
    let mut line = hotsup::config::clap_cause(rendered);
    for tip in rendered
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
    {
        line.push_str("; ");
        line.push_str(tip);
    }
    line.push_str(&format!(" (see {subcommand} --help)"));
    line
}

/// A usage error found after parsing: one line, exit 2.
fn usage(msg: impl std::fmt::Display) -> u8 {
    logging::report(msg);
    EXIT_USAGE
}

fn runtime_failure(msg: impl std::fmt::Display) -> u8 {
    logging::report(msg);
    EXIT_RUNTIME
}

/// Whether COMMAND was set off from hotsup's options with `--`: COMMAND
/// takes everything to the end, so it is the tail of `argv`.
fn separated_by_dashes(argv: &[std::ffi::OsString], command: &[std::ffi::OsString]) -> bool {
    argv.len() > command.len() && argv[argv.len() - command.len() - 1] == "--"
}

/// The arguments of COMMAND that are spelled like an option of `hotsup
/// run` (`-l`, `--listen`, `--fds=systemd`, ...): options written after
/// COMMAND belong to COMMAND, which may not be what was meant.
fn hotsup_options_among(args: &[std::ffi::OsString]) -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let Some(run) = cli.find_subcommand("run") else {
        return Vec::new();
    };
    // Only `run`'s own options: the global ones (-v, -q) are too common
    // among apps' options to mean anything.
    let mut names: Vec<String> = Vec::new();
    for a in run.get_arguments().filter(|a| !a.is_positional()) {
        names.extend(
            a.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        names.extend(
            a.get_short_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|c| format!("-{c}")),
        );
    }
    args.iter()
        .filter_map(|a| a.to_str())
        .filter(|a| {
            let flag = if a.starts_with("--") {
                a.split('=').next().unwrap_or(a)
            } else {
                a
            };
            names.iter().any(|n| n == flag)
        })
        .map(str::to_string)
        .collect()
}

/// `run`'s options, with those of `--config FILE` if given.
fn with_config(
    args: RunArgs,
    argv: &[std::ffi::OsString],
) -> Result<(RunArgs, Option<reload::Reload>), config::Error> {
    let Some(path) = args.config.clone() else {
        return Ok((args, None));
    };
    let file = config::ConfigFile::new(argv, &path);
    let loaded = file.load()?;
    let args = file.run_args(&loaded)?;
    Ok((args, Some(reload::Reload { file, loaded })))
}

fn run(
    args: RunArgs,
    reload: Option<reload::Reload>,
    separated: bool,
    log_format: cli::LogFormat,
    inherited: Option<state::State>,
) -> u8 {
    let Some((program, rest)) = args.command.split_first() else {
        return usage(
            "no COMMAND given: hotsup run [OPTIONS] [--] COMMAND [ARGS]... (see hotsup run --help)",
        );
    };
    let misplaced = hotsup_options_among(rest);
    // From here on, a SIGTERM must run hotsup's shutdown, not kill it before
    // its handlers exist.
    signals::hold();
    // Sockets handed to hotsup itself by socket activation come first;
    // after a self-upgrade, the old process's are all there is.
    let adopted = match &inherited {
        Some(st) => match listeners::Listener::adopt_all(&st.listeners) {
            Ok(l) => l,
            Err(e) => return runtime_failure(format!("self-upgrade: {e}")),
        },
        None => match listeners::adopt_activated() {
            Ok(a) => a,
            Err(e) => return runtime_failure(format!("socket activation: {e}")),
        },
    };
    let taking_over = inherited.is_some();
    // Ours from systemd's fd store (hotsup died, systemd kept the sockets)
    // apart from those a .socket unit passes.
    let (mut stored, adopted) = if taking_over {
        (Vec::new(), adopted)
    } else {
        hotsup::fdstore::split(adopted)
    };
    let fd_store = hotsup::fdstore::FdStore::detect(args.fd_store);
    let taken: Vec<String> = adopted.iter().map(|l| l.info.name.clone()).collect();
    if !taking_over && let Err(e) = listeners::name_all(&args.listen, &taken) {
        return usage(e);
    }
    if adopted.is_empty() && args.listen.is_empty() {
        if !misplaced.is_empty() {
            return usage(format!(
                "no listeners: {} after COMMAND went to COMMAND; hotsup's options must come before it: hotsup run [OPTIONS] [--] COMMAND [ARGS]...",
                misplaced.join(" ")
            ));
        }
        return usage("no listeners: give --listen ADDR, or start hotsup with socket activation");
    }
    if !misplaced.is_empty() && !separated {
        tracing::warn!(options = %misplaced.join(" "), "options_after_command");
    }
    let watching = !args.watch.is_empty();
    if watching && !watch::AVAILABLE {
        return usage(
            "--watch: this hotsup was built without watch mode; build it with the `watch` feature (cargo install --path . --features watch)",
        );
    }
    // With --watch --build, the first build may be what creates COMMAND;
    // after a self-upgrade, the pinned executables are what runs.
    if let Err(e) = child::resolve(program)
        && !(taking_over || watching && args.build.is_some())
    {
        return usage(e);
    }
    for p in &args.watch {
        if let Err(e) = std::fs::metadata(p) {
            return usage(format!("--watch {}: {e}", p.display()));
        }
    }
    let identity = match resolve_identity(&args) {
        Ok(id) => id,
        Err(e) => return usage(e),
    };
    let listener_count = if taking_over {
        adopted.len()
    } else {
        adopted.len() + args.listen.len()
    };
    let derived = match settings::derive(&args, identity.as_ref(), listener_count) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let exec = &derived.launch.exec;
    // Logged once every check passed, so that a usage error stays one line.
    if let Some(id) = &identity {
        tracing::info!(user = %id.describe(), given = %id.given, "identity");
    }
    if !exec.is_empty() {
        // Names only: values may be secrets.
        let names: Vec<&str> = exec.env.keys().map(String::as_str).collect();
        let limits: Vec<String> = exec.rlimits.iter().map(ToString::to_string).collect();
        tracing::info!(
            chdir = exec.chdir.as_ref().map(|d| d.display().to_string()),
            env = names.join(","),
            umask = exec.umask.map(|m| format!("{m:03o}")),
            rlimits = limits.join(" "),
            "exec_env"
        );
    }
    // Many listeners need many fds; the hard limit is ours to take. The
    // children get back the soft limit hotsup started with (which, after a
    // self-upgrade, the old process had raised already).
    let original_nofile = match &inherited {
        Some(st) => st.child_nofile,
        None => hotsup_os::raise_nofile_limit().before,
    };
    let opts = BindOptions {
        backlog: args.backlog,
        reuseport: args.reuseport,
        ipv6_only: args.ipv6_only,
        unix_mode: args.unix_mode,
    };
    // Dropping `bound` (on every return path) closes the sockets and removes
    // the Unix socket files hotsup created.
    let mut bound = adopted;
    let reusing =
        |spec: &listeners::ListenSpec, name: &str| hotsup::fdstore::take(&mut stored, spec, name);
    let to_bind: &[listeners::ListenSpec] = if taking_over { &[] } else { &args.listen };
    match listeners::bind_all_reusing(to_bind, &taken, &opts, reusing) {
        Ok(b) => {
            for (mut l, reused) in b {
                match (&fd_store, reused) {
                    (_, true) => {
                        l.claim_file();
                        tracing::info!(name = %l.info.name, address = %l.info.address, "fd_restored")
                    }
                    (Some(store), false) => store.keep(&l),
                    (None, false) => {}
                }
                bound.push(l);
            }
        }
        Err(e) => return runtime_failure(e),
    };
    // Stored sockets no --listen describes any more: closed, and dropped
    // from the store.
    for l in stored.drain(..) {
        if let Some(store) = &fd_store {
            // The removal is by name: a listener taken back under the same
            // name (its address changed) is stored again.
            store.forget(&l.info.name);
            for kept in bound.iter().filter(|b| b.info.name == l.info.name) {
                store.keep(kept);
            }
        }
        tracing::info!(name = %l.info.name, address = %l.info.address, "fd_store_dropped");
    }
    for l in bound.iter().filter(|_| !taking_over) {
        tracing::info!(name = %l.info.name, kind = %l.info.kind, address = %l.info.address, "listening");
    }
    let livereload = match args.livereload.map(std::net::TcpListener::bind) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            return runtime_failure(format!(
                "cannot bind --livereload {}: {e}",
                args.livereload.map(|a| a.to_string()).unwrap_or_default()
            ));
        }
        None => None,
    };
    let watch_cfg = watching.then(|| watch::Config {
        paths: args.watch.clone(),
        build: args.build.clone(),
        debounce: args.debounce.unwrap_or(watch::DEFAULT_DEBOUNCE),
        ignore: args.watch_ignore.clone(),
        livereload,
        human: log_format == cli::LogFormat::Text && rustix::termios::isatty(std::io::stderr()),
        command: program.into(),
        nofile: original_nofile,
    });
    let outbox = match handoff::Outbox::new(bound.into_iter().map(std::sync::Arc::new).collect()) {
        Ok(o) => o,
        Err(e) => return runtime_failure(format!("cannot describe listeners: {e}")),
    };
    let cgroups = match inherited.as_ref().map(|st| st.cgroups.as_ref()) {
        Some(None) => Ok(None),
        Some(Some(c)) => match hotsup::cgroup::Cgroups::adopt(c) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(reason = %e, "self_upgrade_lost_cgroups");
                Ok(None)
            }
        },
        None => hotsup::cgroup::Cgroups::detect(args.cgroup),
    };
    let cgroups = match cgroups {
        Ok(Some(c)) if taking_over => Some(c),
        Ok(Some(c)) => {
            tracing::info!(
                base = %c.base().display(),
                kill = c.kill_supported(),
                "cgroups"
            );
            for stale in c.stale_populated() {
                tracing::warn!(cgroup = %stale.display(), "stale_cgroup");
            }
            Some(c)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::info!(reason = %e, "cgroups_unavailable");
            None
        }
    };
    if (args.subreaper || rustix::process::getpid().is_init())
        && let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
    {
        return runtime_failure(format!("cannot become a child subreaper: {e}"));
    }
    // Resolved once: a package upgrade replaces the file at this path, and
    // /proc/self/exe then names the deleted old one.
    let install_path = match &inherited {
        Some(st) => st.install_path.to_path(),
        None => std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
    };
    let unsupported = if watching {
        Some("watch mode (--watch) does not self-upgrade: restart it".to_string())
    } else if reload.is_some() {
        Some(
            "this version does not self-upgrade a hotsup run with --config (each generation's \
             launch and listeners are not in the handed-over state yet): restart it"
                .to_string(),
        )
    } else {
        None
    };
    let selfup = supervisor::Setup {
        argv: inherited
            .as_ref()
            .map(|st| st.argv.iter().map(state::Os::to_os).collect())
            .unwrap_or_else(|| std::env::args_os().collect()),
        binary: state::Binary::current(&install_path),
        install_path,
        count: inherited.as_ref().map_or(0, |st| st.self_upgrades + 1),
        control: None,
        unsupported,
    };
    let cfg = supervisor::Config {
        selfup: Some(selfup),
        reload,
        fd_store,
        notify: None,
        child_nofile: original_nofile,
        metrics: None,
        cgroups,
        identity,
        watch: None,
    };
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hotsup".into())
    });
    let metrics_addr = args.metrics;
    let explicit_control = args.control.is_some();
    let control_path = args
        .control
        .clone()
        .unwrap_or_else(|| control::default_path(&name));
    // One thread: spawning from the thread that lives as long as hotsup
    // keeps PR_SET_PDEATHSIG meaningful, and the supervisor does no
    // per-request work that could use more. The blocking pool only closes
    // replaced executables and reads files: one thread, gone a second
    // after its last job, so hotsup at rest runs its loop and log writer.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .on_thread_start(signals::hold_in_this_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return runtime_failure(format!("cannot start the event loop: {e}")),
    };
    let result = rt.block_on(async move {
        let owner = cfg
            .identity
            .as_ref()
            .map(|i| (i.uid.unwrap_or_else(rustix::process::geteuid), i.gid));
        let notify = match inherited.as_ref().and_then(|st| st.notify_dir.as_ref()) {
            Some(dir) => notify::ChildNotify::adopt(dir.to_path(), owner),
            None => notify::ChildNotify::create(owner),
        }
        .map_err(|e| format!("cannot create the children's NOTIFY_SOCKET directory: {e}"))?;
        if !taking_over {
            tracing::info!(path = %notify.dir().display(), "notify_dir");
        }
        let watch = watch_cfg.map(watch::Watch::new).transpose()?;
        let cfg = supervisor::Config {
            notify: Some(notify),
            watch,
            ..cfg
        };
        let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (feed, _) = tokio::sync::broadcast::channel(control::EVENT_BACKLOG);
        let inherited_metrics = inherited.as_ref().and_then(|st| st.metrics);
        let metrics = match (metrics_addr, inherited_metrics) {
            (None, _) => None,
            (Some(addr), Some(fd)) => {
                let served = state::adopt_fd(fd, "--metrics")
                    .map(std::net::TcpListener::from)
                    .and_then(|l| hotsup::metrics::Metrics::serve_on(l).map_err(|e| e.to_string()));
                match served {
                    Ok((m, _)) => Some(m),
                    Err(e) => {
                        tracing::warn!(address = %addr, error = %e, "self_upgrade_lost_metrics");
                        None
                    }
                }
            }
            (Some(addr), None) => {
                let (m, bound) = hotsup::metrics::Metrics::serve(addr)
                    .map_err(|e| format!("cannot serve --metrics {addr}: {e}"))?;
                tracing::info!(address = %bound, "metrics");
                Some(m)
            }
        };
        let cfg = supervisor::Config { metrics, ..cfg };
        // An explicit --control must work; the default one is a convenience
        // that must not stop a supervisor from starting.
        let server = match inherited.as_ref().and_then(|st| st.control.as_ref()) {
            Some(c) => control::Server::adopt(c).map_err(|e| control::ControlError::Io {
                path: c.file.path.to_path().display().to_string(),
                source: std::io::Error::other(e),
            }),
            None => control::Server::bind(&control_path),
        };
        let control = match server {
            Ok(mut server) => {
                if !taking_over {
                    tracing::info!(path = %server.path.display(), "control_socket");
                }
                server.spawn(control_tx, feed.clone());
                Some(server)
            }
            Err(e) if explicit_control => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "no_control_socket");
                None
            }
        };
        let mut cfg = cfg;
        if let Some(setup) = cfg.selfup.as_mut() {
            setup.control = control.as_ref().map(control::Server::to_state);
        }
        // Start-up is over: what it alone used need not stay resident.
        hotsup::resident::release_startup_pages();
        let sup = match inherited {
            Some(st) => supervisor::Supervisor::adopt(cfg, derived, outbox, control_rx, feed, st)
                .map_err(|e| {
                format!("cannot take over from the hotsup that exec'd this one: {e}")
            })?,
            None => supervisor::Supervisor::new(cfg, derived, outbox, control_rx, feed),
        };
        let code = sup
            .run()
            .await
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        if let Some(c) = &control {
            c.quiesce(std::time::Duration::from_secs(1)).await;
        }
        drop(control);
        Ok::<u8, String>(code)
    });
    match result {
        Ok(code) => code,
        Err(e) => runtime_failure(e),
    }
}

/// `hotsup __self-check`, run by a hotsup about to exec this binary: reads
/// its state from stdin and says whether this binary can take it over,
/// without touching anything: the document (its format first), the command
/// line, the children's settings (`--user`, `--env-file`, ...) and the
/// lifecycle state. Prints `hotsup VERSION` and exits 0, or the reason and
/// exits 1.
fn self_check() -> u8 {
    let answer = |line: String, code: u8| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
        code
    };
    let st = match std::os::fd::AsFd::as_fd(&std::io::stdin())
        .try_clone_to_owned()
        .map_err(state::StateError::from)
        .and_then(state::read)
    {
        Ok(st) => st,
        Err(e) => return answer(e.to_string(), 1),
    };
    let argv: Vec<std::ffi::OsString> = st.argv.iter().map(state::Os::to_os).collect();
    let args = match Cli::try_parse_from(&argv).map(|c| c.command) {
        Ok(Command::Run(args)) => args,
        Ok(_) => return answer("the state's command line is not `hotsup run`".into(), 1),
        Err(e) => {
            return answer(
                format!(
                    "this hotsup does not accept the running one's options: {}",
                    one_line(&e.render().to_string(), "hotsup run")
                ),
                1,
            );
        }
    };
    if !args.watch.is_empty() || args.config.is_some() {
        return answer("watch mode and --config do not self-upgrade".into(), 1);
    }
    let derived = resolve_identity(&args)
        .and_then(|id| settings::derive(&args, id.as_ref(), st.listeners.len()));
    let derived = match derived {
        Ok(d) => d,
        Err(e) => return answer(e, 1),
    };
    let now = std::time::Instant::now();
    if let Err(e) = lifecycle::Core::import(derived.policy, &st.core, now) {
        return answer(e.to_string(), 1);
    }
    answer(format!("hotsup {}", env!("CARGO_PKG_VERSION")), 0)
}

/// `--user`/`--group`, resolved and checked before anything is bound: an
/// unknown name, or credentials hotsup cannot switch to, is a usage error
/// (exit 2) since no child could ever start.
fn resolve_identity(args: &RunArgs) -> Result<Option<identity::Identity>, String> {
    let Some(id) = identity::resolve(args.user.as_deref(), args.group.as_deref())
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    id.check_privileges()?;
    if args.fds == cli::Fds::Systemd {
        // The child re-executes hotsup (/proc/self/exe) to set LISTEN_PID,
        // already as the new user: it must be allowed to. Reaching the file
        // through /proc/self/exe needs no search permission on its
        // directories, only the file's own x bit for that user.
        let exe = std::path::Path::new("/proc/self/exe");
        let meta = std::fs::metadata(exe)
            .map_err(|e| format!("{}: cannot inspect hotsup's binary: {e}", id.given))?;
        let has_acl = rustix::fs::getxattr_query(exe, "system.posix_acl_access").is_ok();
        if !id.may_execute(&meta, has_acl) {
            let path = std::fs::read_link(exe).unwrap_or_else(|_| exe.to_path_buf());
            return Err(format!(
                "{} with --fds systemd: the children ({}) may not execute {} (mode {:o}), which each of them runs to set LISTEN_PID; make it executable for them (chmod o+x)",
                id.given,
                id.describe(),
                path.display(),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
            ));
        }
    }
    Ok(Some(id))
}

/// fds hotsup inherited (a shell's, a CI runner's) must not reach the
/// children: only stdio and the sockets hotsup passes on purpose do.
fn close_inherited_fds_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: only used for F_SETFD, which changes that fd's flags; one
        // that is no longer open (the directory's own) gives EBADF. No Rust
        // object owns or borrows it here.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
}
