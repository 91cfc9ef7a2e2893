//! hotsup: a zero-downtime restart supervisor for network servers.
//!
//! Exit codes: 0 clean exit, 1 runtime failure, 2 usage error (see
//! [`cli::EXIT_CODES`]).

use std::process::ExitCode;

use clap::Parser;

use hotsup::cli::{self, Cli, Command, RunArgs};
use hotsup::listeners::{self, BindOptions};
use hotsup::{
    child, client, config, control, handoff, identity, logging, notify, reload, settings, signals,
    supervisor, watch,
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
    close_inherited_fds_on_exec();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(e, &argv)),
    };
    match cli.command {
        Command::Run(args) => {
            let log = logging::init(cli.verbose, cli.quiet, cli.log_format);
            let separated = separated_by_dashes(&argv, &args.command);
            let code = match with_config(*args, &argv) {
                Ok((args, reload)) => {
                    // COMMAND from the file is its own: nothing misplaced.
                    let separated = separated || reload.is_some();
                    run(args, reload, separated, cli.log_format)
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
            no_wait,
            timeout,
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
    // Sockets handed to hotsup itself by socket activation come first.
    let adopted = match listeners::adopt_activated() {
        Ok(a) => a,
        Err(e) => return runtime_failure(format!("socket activation: {e}")),
    };
    // Ours from systemd's fd store (hotsup died, systemd kept the sockets)
    // apart from those a .socket unit passes.
    let (mut stored, adopted) = hotsup::fdstore::split(adopted);
    let fd_store = hotsup::fdstore::FdStore::detect(args.fd_store);
    let taken: Vec<String> = adopted.iter().map(|l| l.info.name.clone()).collect();
    if let Err(e) = listeners::name_all(&args.listen, &taken) {
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
    // With --watch --build, the first build may be what creates COMMAND.
    if let Err(e) = child::resolve(program)
        && !(watching && args.build.is_some())
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
    let derived =
        match settings::derive(&args, identity.as_ref(), adopted.len() + args.listen.len()) {
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
    // children get back the soft limit hotsup started with.
    let original_nofile = hotsup_os::raise_nofile_limit().before;
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
    match listeners::bind_all_reusing(&args.listen, &taken, &opts, reusing) {
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
            store.forget(&l.info.name);
        }
        tracing::info!(name = %l.info.name, address = %l.info.address, "fd_store_dropped");
    }
    for l in &bound {
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
    let cgroups = match hotsup::cgroup::Cgroups::detect(args.cgroup) {
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
    let cfg = supervisor::Config {
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
        let notify = notify::ChildNotify::create(owner)
            .map_err(|e| format!("cannot create the children's NOTIFY_SOCKET directory: {e}"))?;
        tracing::info!(path = %notify.dir().display(), "notify_dir");
        let watch = watch_cfg.map(watch::Watch::new).transpose()?;
        let cfg = supervisor::Config {
            notify: Some(notify),
            watch,
            ..cfg
        };
        let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (feed, _) = tokio::sync::broadcast::channel(control::EVENT_BACKLOG);
        let metrics = match metrics_addr {
            None => None,
            Some(addr) => {
                let (m, bound) = hotsup::metrics::Metrics::serve(addr)
                    .map_err(|e| format!("cannot serve --metrics {addr}: {e}"))?;
                tracing::info!(address = %bound, "metrics");
                Some(m)
            }
        };
        let cfg = supervisor::Config { metrics, ..cfg };
        // An explicit --control must work; the default one is a convenience
        // that must not stop a supervisor from starting.
        let control = match control::Server::bind(&control_path) {
            Ok(mut server) => {
                tracing::info!(path = %server.path.display(), "control_socket");
                server.spawn(control_tx, feed.clone());
                Some(server)
            }
            Err(e) if explicit_control => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "no_control_socket");
                None
            }
        };
        // Start-up is over: what it alone used need not stay resident.
        hotsup::resident::release_startup_pages();
        let code = supervisor::Supervisor::new(cfg, derived, outbox, control_rx, feed)
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
