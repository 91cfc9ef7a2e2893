//! The shell around the lifecycle core: it turns signals, exits, channel
//! messages, notify datagrams, control requests and timers into
//! [`Input`]s, and carries out the [`Effect`]s the core returns. Every rule
//! about generations lives in [`crate::lifecycle`]; this module only does
//! the I/O.
//!
//! Everything runs on one thread, the runtime's: children are spawned from
//! it (so `PR_SET_PDEATHSIG` fires only when hotsup itself dies), and it is
//! the only place that waits for children.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cgroup::{Cgroups, GenCgroup};
use crate::child::{self, Pass, kill_group};
use crate::cli::Fds;
use crate::control::{self, Reply, Request};
use crate::handoff::{self, Channel, ChannelEvent, Outbox};
use crate::hooks::Purpose;
use crate::lifecycle::Event;
use crate::lifecycle::{
    self, Answer, Core, DrainVia, Effect, Exe, ExitInfo, Input, ManagerMessage, PinId, ReadyVia,
    Source, Ticket, WorkerEvent, WorkerId,
};
use crate::listeners::Listener;
use crate::notify;
use crate::pinned::Pinned;
use crate::reload::{Prepared, Reload};
use crate::settings::{Derived, Launch};

mod selfup;
pub use selfup::{CHECK_TIMEOUT, Setup};

/// Channel events waiting for the loop; a child that floods its channel is
/// slowed down by this bound instead of growing the supervisor.
const CHANNEL_QUEUE: usize = 64;
/// How often `--max-worker-rss` looks at the workers.
const RSS_EVERY: Duration = Duration::from_secs(5);
/// Notify messages waiting for the loop, from all workers together.
const NOTIFY_QUEUE: usize = 64;

/// Upgrade requests that wait for the config file to be read, at most.
const MAX_WAITING_FOR_CONFIG: usize = 64;

/// What the shell needs besides the settings an upgrade may change.
pub struct Config {
    /// `--config`: read again at every upgrade.
    pub reload: Option<Reload>,
    /// systemd's fd store, when hotsup uses it: listeners a config file adds
    /// and removes are added and removed there too.
    pub fd_store: Option<crate::fdstore::FdStore>,
    /// Where each worker gets its `NOTIFY_SOCKET`.
    pub notify: Option<notify::ChildNotify>,
    /// The soft RLIMIT_NOFILE hotsup started with, restored for children.
    pub child_nofile: Option<u64>,
    /// `--metrics`: where scrapes find the metrics.
    pub metrics: Option<crate::metrics::Metrics>,
    /// Where generations get cgroups of their own; process groups only when
    /// `None`.
    pub cgroups: Option<Cgroups>,
    /// `--user`/`--group`: the credentials children run with.
    pub identity: Option<crate::identity::Identity>,
    /// `--watch`: the development loop; `None` (nothing at all) otherwise.
    pub watch: Option<crate::watch::Watch>,
    /// `hotsup upgrade --self`.
    pub selfup: Option<Setup>,
}

/// A live worker's resources.
struct WorkerHandle {
    channel: Option<Channel>,
    task: Option<JoinHandle<()>>,
    /// Reads its `NOTIFY_SOCKET`; aborting it closes and removes the socket.
    notify_task: Option<JoinHandle<()>>,
    /// Its notify socket's fd (the task owns it) and path.
    notify: Option<(std::os::fd::RawFd, std::path::PathBuf)>,
    cgroup: Option<GenCgroup>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        for t in [&self.task, &self.notify_task].into_iter().flatten() {
            t.abort();
        }
    }
}

/// An executable kept open, and the launch it was started with: a crash
/// restart or a rollback runs exactly that again.
struct Pin {
    exe: Pinned,
    launch: Arc<Launch>,
}

/// `--config` being read again for upgrade requests.
struct Reloading {
    reload: Reload,
    task: Option<JoinHandle<Result<Prepared, String>>>,
    /// The requests the read in progress is for.
    waiting: Vec<(Source, Option<lifecycle::Reply>)>,
    /// Requests that came during it: they get a read of their own.
    next: Vec<(Source, Option<lifecycle::Reply>)>,
}

pub struct Supervisor {
    core: Core,
    cfg: Config,
    /// What a new generation runs.
    launch: Arc<Launch>,
    /// The listeners a new generation gets.
    outbox: Arc<Outbox>,
    /// The listeners each generation got, kept while it exists: a listener
    /// the config file removed closes when the last one using it is gone.
    gen_outboxes: BTreeMap<lifecycle::GenId, Arc<Outbox>>,
    /// `--max-worker-rss`, in bytes.
    max_worker_rss: Option<u64>,
    reloading: Option<Reloading>,
    workers: BTreeMap<WorkerId, WorkerHandle>,
    pins: BTreeMap<PinId, Pin>,
    tickets: BTreeMap<Ticket, oneshot::Sender<Reply>>,
    next_ticket: u64,
    chan_tx: mpsc::Sender<(WorkerId, ChannelEvent)>,
    chan_rx: mpsc::Receiver<(WorkerId, ChannelEvent)>,
    control_rx: mpsc::UnboundedReceiver<control::Message>,
    notify_tx: mpsc::Sender<(WorkerId, notify::Parsed)>,
    notify_rx: mpsc::Receiver<(WorkerId, notify::Parsed)>,
    manager: notify::Manager,
    /// `hotsup events` clients; events are serialized only while one
    /// listens.
    feed: control::EventFeed,
    strangers: Arc<notify::Strangers>,
    /// Cgroups of reaped workers that still held processes; removed once
    /// empty.
    emptying: Vec<GenCgroup>,
    exit: Option<u8>,
    watch: Option<crate::watch::Watch>,
    /// Processes besides the generations (a `--build`, the hooks), reaped
    /// here too.
    aux: crate::aux::AuxProcesses,
    hooks: crate::hooks::Hooks,
    selfup: selfup::SelfUp,
}

impl Supervisor {
    /// `settings`: what new generations run, the core's policy and
    /// `--max-worker-rss`, which an upgrade may change with `--config`.
    pub fn new(
        mut cfg: Config,
        settings: Derived,
        outbox: Outbox,
        control_rx: mpsc::UnboundedReceiver<control::Message>,
        feed: control::EventFeed,
    ) -> Supervisor {
        let (chan_tx, chan_rx) = mpsc::channel(CHANNEL_QUEUE);
        let (notify_tx, notify_rx) = mpsc::channel(NOTIFY_QUEUE);
        let watch = cfg.watch.take();
        let selfup = selfup::SelfUp::new(cfg.selfup.take());
        let reloading = cfg.reload.take().map(|reload| Reloading {
            reload,
            task: None,
            waiting: Vec::new(),
            next: Vec::new(),
        });
        let Derived {
            launch,
            policy,
            max_worker_rss,
            hooks,
        } = settings;
        let hooks = crate::hooks::Hooks::new(hooks, cfg.child_nofile);
        Supervisor {
            core: Core::new(policy, Instant::now().into_std()),
            cfg,
            launch: Arc::new(launch),
            outbox: Arc::new(outbox),
            gen_outboxes: BTreeMap::new(),
            max_worker_rss,
            reloading,
            workers: BTreeMap::new(),
            pins: BTreeMap::new(),
            tickets: BTreeMap::new(),
            next_ticket: 0,
            chan_tx,
            chan_rx,
            control_rx,
            notify_tx,
            notify_rx,
            manager: notify::Manager::from_env(),
            feed,
            strangers: Arc::default(),
            emptying: Vec::new(),
            exit: None,
            watch,
            aux: crate::aux::AuxProcesses::default(),
            hooks,
            selfup,
        }
    }

    /// Runs until shutdown; returns the process exit code.
    pub async fn run(mut self) -> std::io::Result<u8> {
        let mut sigchld = signal(SignalKind::child())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        // Pings only when the service manager asked for a watchdog: no
        // periodic wakeups otherwise.
        let mut watchdog = sd_notify::watchdog_enabled()
            .filter(|p| !p.is_zero())
            .map(|period| {
                let mut t = tokio::time::interval(period / 2);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });

        // `--max-worker-rss` only (or a config file that may set it): no
        // wakeups otherwise.
        let rss_wanted = self.max_worker_rss.is_some() || self.reloading.is_some();
        let mut rss_check = rss_wanted.then(|| {
            let mut t = tokio::time::interval(RSS_EVERY);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });

        crate::signals::release();
        if self.selfup.adopted {
            // Children that exited during the exec wait as zombies.
            self.reap();
        } else if self
            .watch
            .as_mut()
            .is_none_or(crate::watch::Watch::starts_at_once)
        {
            self.feed(Input::Start);
        }
        loop {
            if let Some(code) = self.exit {
                return Ok(code);
            }
            let deadline = self.core.next_deadline().map(Instant::from_std);
            tokio::select! {
                Some((w, ev)) = self.chan_rx.recv() => self.on_channel(w, ev),
                Some((w, msg)) = self.notify_rx.recv() => self.on_notify(w, msg),
                () = tick(&mut watchdog) => self.manager.watchdog(),
                () = tick(&mut rss_check) => self.check_rss(),
                Some(()) = sigchld.recv() => self.reap(),
                Some(()) = usr2.recv() => self.feed(Input::Upgrade {
                    source: Source::Signal(libc::SIGUSR2),
                    reply: None,
                }),
                Some(()) = hup.recv() => self.feed(Input::Upgrade {
                    source: Source::Signal(libc::SIGHUP),
                    reply: None,
                }),
                Some(m) = self.control_rx.recv() => self.on_control(m),
                Some(()) = term.recv() => self.feed(Input::Stop {
                    source: Source::Signal(libc::SIGTERM),
                    reply: None,
                }),
                Some(()) = int.recv() => self.feed(Input::Stop {
                    source: Source::Signal(libc::SIGINT),
                    reply: None,
                }),
                Some(()) = quit.recv() => self.feed(Input::Stop { source: Source::Signal(libc::SIGQUIT), reply: None }),
                Some(()) = usr1.recv() => self.feed(Input::Forward { signal: libc::SIGUSR1, slot: None, reply: None }),
                () = sleep_until(deadline) => {
                    self.sweep_cgroups();
                    self.feed(Input::Tick);
                }
                () = sleep_until(self.hooks.next_deadline()) => self.hooks.expire(&self.aux),
                input = crate::watch::next(&mut self.watch, &mut self.aux) => self.feed(input),
                next = self.selfup.next() => match next {
                    selfup::Next::CheckTimedOut => self.self_check_timed_out(),
                    selfup::Next::Exec => self.exec_self(),
                },
                read = config_read(&mut self.reloading) => self.on_config_read(read),
            }
        }
    }

    /// Hands one input to the core and carries out what follows. With
    /// `--config`, an upgrade waits for the file to be read first.
    fn feed(&mut self, input: Input) {
        match input {
            Input::Upgrade { source, reply }
                if self.reloading.is_some() && !self.core.is_shutting_down() =>
            {
                self.upgrade_after_config(source, reply);
            }
            input => self.feed_core(input),
        }
    }

    fn feed_core(&mut self, input: Input) {
        let now = Instant::now().into_std();
        let mut queue: VecDeque<Effect> = self.core.handle(now, input).into();
        while let Some(effect) = queue.pop_front() {
            // A spawn's result must reach the core before anything else.
            if let Some(next) = self.apply(effect) {
                queue.extend(self.core.handle(now, next));
            }
        }
        if !self.gen_outboxes.is_empty() {
            self.prune_listener_sets();
        }
        if self.cfg.metrics.is_some() {
            self.publish_metrics(now);
        }
    }

    /// Carries out one effect; a spawn returns its result for the core.
    fn apply(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            // A batch whose first worker failed to start is cancelled.
            Effect::Spawn { worker, exe, .. } if self.core.wants_spawn(worker) => {
                Some(self.spawn(worker, exe))
            }
            Effect::Spawn { .. } => None,
            Effect::Unpin(pin) => {
                // Closing the last fd of a replaced binary frees its blocks
                // synchronously (tens of ms on ext4 for a large one): off
                // the loop's thread.
                if let Some(p) = self.pins.remove(&pin) {
                    drop(tokio::task::spawn_blocking(move || drop(p)));
                }
                None
            }
            Effect::Drain { worker, pid, via } => {
                self.drain(worker, pid, via);
                None
            }
            Effect::Pause { worker, .. } => {
                self.send(worker, handoff::Command::Pause)
                    .err()
                    .map(|e| Input::Worker {
                        worker,
                        event: WorkerEvent::PauseFailed(e),
                    })
            }
            Effect::Resume { worker, .. } => {
                self.send(worker, handoff::Command::Resume)
                    .err()
                    .map(|e| Input::Worker {
                        worker,
                        event: WorkerEvent::ResumeFailed(e),
                    })
            }
            Effect::Probe { worker, pid } => self.probe(worker, pid),
            Effect::Check { generation } => self
                .hooks
                .start(
                    &mut self.aux,
                    Purpose::Check(generation),
                    &[("HOTSUP_GENERATION", generation.to_string())],
                )
                .err(),
            Effect::CancelCheck { generation } => {
                self.hooks.cancel(&self.aux, "hotsup is stopping", |p| {
                    p == Purpose::Check(generation)
                });
                None
            }
            Effect::AfterUpgrade { generation, pids } => {
                self.hooks
                    .cancel(&self.aux, "a later upgrade replaced it", |p| {
                        matches!(p, Purpose::AfterUpgrade(_))
                    });
                let pid = pids.first().map_or(0, |p| p.as_raw_pid());
                let all: Vec<String> = pids.iter().map(|p| p.as_raw_pid().to_string()).collect();
                self.hooks
                    .start(
                        &mut self.aux,
                        Purpose::AfterUpgrade(generation),
                        &[
                            ("HOTSUP_GENERATION", generation.to_string()),
                            ("HOTSUP_PID", pid.to_string()),
                            ("HOTSUP_PIDS", all.join(" ")),
                        ],
                    )
                    .err()
            }
            Effect::Kill { worker, pid } => {
                self.hooks.cancel(&self.aux, "its worker was killed", |p| {
                    p == Purpose::Probe(worker)
                });
                kill_group(pid, Signal::KILL);
                if let Some(cg) = self.workers.get(&worker).and_then(|w| w.cgroup.as_ref())
                    && let Err(e) = cg.kill()
                {
                    warn!(generation = worker.generation, error = %e, "cgroup_kill_failed");
                }
                None
            }
            Effect::KillLeftovers { worker, pid } => {
                self.hooks.cancel(&self.aux, "its worker exited", |p| {
                    p == Purpose::Probe(worker)
                });
                let handle = self.workers.remove(&worker);
                // Whatever the main process left behind, in its group or,
                // having left that, in its cgroup.
                let group = child::kill_leftovers(pid);
                if let Some(cg) = handle.and_then(|mut h| h.cgroup.take()) {
                    self.retire_cgroup(worker, cg);
                }
                if group {
                    debug!(
                        generation = worker.generation,
                        pid = pid.as_raw_pid(),
                        "killed_leftovers"
                    );
                }
                None
            }
            Effect::Signal {
                worker,
                pid,
                signal,
                reply,
            } => {
                let sent = Signal::from_named_raw(signal)
                    .ok_or(rustix::io::Errno::INVAL)
                    .and_then(|s| rustix::process::kill_process(pid, s));
                if let Some(t) = reply {
                    let r = match sent {
                        Ok(()) => Reply {
                            version: control::VERSION,
                            ok: true,
                            signal: Some(control::Signalled {
                                signal: crate::signals::name(signal),
                                generation: worker.generation,
                                pid: pid.as_raw_pid(),
                            }),
                            ..Reply::default()
                        },
                        Err(e) => {
                            Reply::error(format!("cannot signal pid {}: {e}", pid.as_raw_pid()))
                        }
                    };
                    self.reply(t, r);
                }
                None
            }
            Effect::Reply { ticket, answer } => {
                let r = match answer {
                    Answer::Upgrade(o) => Reply::upgrade(o),
                    Answer::Stopped { exit_code } => Reply {
                        version: control::VERSION,
                        ok: true,
                        stop: Some(control::Stopped { exit_code }),
                        ..Reply::default()
                    },
                    Answer::Scaled { from, to } => Reply {
                        version: control::VERSION,
                        ok: true,
                        scale: Some(control::Scaled { from, to }),
                        ..Reply::default()
                    },
                    Answer::Error(e) => Reply::error(e),
                };
                self.reply(ticket, r);
                None
            }
            Effect::Manager(m) => {
                match m {
                    ManagerMessage::Ready(s) => self.manager.ready(&s),
                    ManagerMessage::Reloading => self.manager.reloading(),
                    ManagerMessage::Status(s) => self.manager.status(&s),
                    ManagerMessage::Stopping => self.manager.stopping(),
                }
                None
            }
            Effect::Emit(ev) => {
                self.emit(ev);
                None
            }
            Effect::Exit(code) => {
                self.exit = Some(code);
                None
            }
        }
    }

    /// Logs an event, and hands it to metrics, `hotsup events` clients and
    /// watch mode.
    fn emit(&mut self, ev: Event) {
        crate::events::log(&ev);
        if let Some(m) = &self.cfg.metrics {
            m.observe(&ev);
        }
        if self.feed.receiver_count() > 0
            && let Some(line) = crate::events::feed_line(&ev)
        {
            let _ = self.feed.send(line);
        }
        if let Some(w) = &mut self.watch {
            w.on_event(&ev);
        }
    }

    fn reply(&mut self, ticket: Ticket, reply: Reply) {
        if let Some(tx) = self.tickets.remove(&ticket) {
            // The client may have gone; nobody else needs the answer.
            let _ = tx.send(reply);
        }
    }

    fn ticket(&mut self, tx: oneshot::Sender<Reply>) -> Ticket {
        self.next_ticket += 1;
        let t = Ticket(self.next_ticket);
        self.tickets.insert(t, tx);
        t
    }

    /// Starts one worker process, from the command looked up now or from a
    /// pinned executable.
    fn spawn(&mut self, worker: WorkerId, exe: Exe) -> Input {
        let failed = |error: String| Input::SpawnFailed { worker, error };
        let pin = match exe {
            Exe::Fresh(id) => match Pinned::resolve(&self.launch.program) {
                Ok(exe) => {
                    let launch = self.launch.clone();
                    self.pins.insert(id, Pin { exe, launch });
                    id
                }
                Err(e) => return failed(e.to_string()),
            },
            Exe::Pinned(id) => id,
        };
        let Some(Pin {
            exe: pinned,
            launch,
        }) = self.pins.get(&pin)
        else {
            return failed("the pinned executable is gone".into());
        };
        let launch = launch.clone();
        // A generation's workers all get the listeners its first one got.
        let outbox = self
            .gen_outboxes
            .entry(worker.generation)
            .or_insert_with(|| self.outbox.clone())
            .clone();
        // The cgroup exists before the child does, and the child enters it
        // before it runs anything.
        let (cgroup, enter) = match self.cfg.cgroups.as_ref().map(|c| {
            c.create(worker.seq)
                .and_then(|cg| cg.open_enter().map(|fd| (cg, fd)))
        }) {
            Some(Ok((cg, fd))) => (Some(cg), Some(fd)),
            Some(Err(e)) => {
                // Still better than no generation at all: its process group
                // is what holds it, as without cgroups.
                warn!(generation = worker.generation, error = %e, "cgroup_unavailable");
                (None, None)
            }
            None => (None, None),
        };
        let socket = self
            .cfg
            .notify
            .as_ref()
            .map(|n| n.bind(worker.generation, worker.slot, worker.seq));
        let socket = match socket {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                warn!(generation = worker.generation, error = %e, "notify_socket_failed");
                None
            }
            None => None,
        };
        let spec = child::Spec {
            program: pinned.exec_path(),
            argv0: &launch.program,
            args: &launch.args,
            generation: worker.generation,
            worker: worker.slot,
            notify_socket: socket.as_ref().map(|s| s.path.as_path()),
            nofile: self.cfg.child_nofile.map(|n| {
                // Room for every inherited listener above the usual limit.
                n.max(3 + outbox.listeners.len() as u64 + 1024)
            }),
            exe_fd: pinned
                .inherit_fd(launch.fds == Fds::Systemd)
                .map(|fd| child::ExeFd {
                    fd,
                    app_keeps: pinned.is_script(),
                }),
            cgroup: enter.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            pass: match launch.fds {
                Fds::Native => Pass::Native,
                Fds::Systemd => Pass::Systemd(&outbox.listeners),
            },
            identity: self.cfg.identity.as_ref(),
            exec: &launch.exec,
        };
        let spawned = child::spawn(&spec);
        drop(enter);
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                // A child whose exec failed was reaped by std: the cgroup
                // is empty.
                if let Some(cg) = cgroup {
                    let _ = cg.remove();
                }
                return failed(format!("cannot spawn {}: {e}", pinned.path().display()));
            }
        };
        let pid = spawned.pid;
        // A deploy that renamed a new file over the path between pinning and
        // exec: pin what the process really runs. (Not for scripts, whose
        // process runs the interpreter, nor under `--fds systemd`, whose
        // process is hotsup's own exec step at this point.)
        if launch.fds == Fds::Native && !pinned.is_script() && !pinned.runs_in(pid.as_raw_pid()) {
            let path = pinned.path().to_path_buf();
            if let Ok(exe) = Pinned::from_process(pid.as_raw_pid(), &path) {
                self.pins.insert(
                    pin,
                    Pin {
                        exe,
                        launch: launch.clone(),
                    },
                );
            }
        }
        let Some(Pin { exe: pinned, .. }) = self.pins.get(&pin) else {
            return Input::Spawned { worker, pid };
        };
        tracing::info!(
            generation = worker.generation,
            pid = pid.as_raw_pid(),
            path = %pinned.path().display(),
            notify = socket.as_ref().map(|s| s.path.display().to_string()),
            "exec"
        );
        let notify_fd = socket.as_ref().map(|s| (s.raw_fd(), s.path.clone()));
        let notify_task = socket.map(|sock| {
            let owner = notify::Owner {
                pid,
                cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
            };
            tokio::spawn(notify::relay(
                sock,
                owner,
                worker,
                self.notify_tx.clone(),
                self.strangers.clone(),
            ))
        });
        let mut handle = WorkerHandle {
            channel: None,
            task: None,
            notify: notify_fd,
            notify_task,
            cgroup,
        };
        if let Some(fd) = spawned.channel {
            match handoff::register(fd) {
                Ok(chan) => {
                    handle.task = Some(tokio::spawn(handoff::run(
                        worker,
                        chan.clone(),
                        outbox,
                        self.chan_tx.clone(),
                    )));
                    handle.channel = Some(chan);
                }
                Err(e) => {
                    // It can never receive its sockets: it fails through the
                    // same path as any child that closes its channel.
                    self.workers.insert(worker, handle);
                    let _ = self.chan_tx.try_send((
                        worker,
                        ChannelEvent::Closed(format!("cannot register its channel: {e}")),
                    ));
                    return Input::Spawned { worker, pid };
                }
            }
        }
        self.workers.insert(worker, handle);
        Input::Spawned { worker, pid }
    }

    fn drain(&mut self, worker: WorkerId, pid: Pid, via: DrainVia) {
        let signal = match via {
            DrainVia::Signal(s) => s,
            DrainVia::Channel { timeout, fallback } => {
                match self.send(worker, handoff::Command::Drain(timeout)) {
                    Ok(()) => return,
                    Err(e) => {
                        warn!(
                            generation = worker.generation,
                            pid = pid.as_raw_pid(),
                            error = %e,
                            "drain_fallback"
                        );
                        fallback
                    }
                }
            }
        };
        if let Some(sig) = Signal::from_named_raw(signal) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Sends a command on a worker's channel, without waiting.
    fn send(&self, worker: WorkerId, cmd: handoff::Command) -> Result<(), String> {
        let chan = self
            .workers
            .get(&worker)
            .and_then(|w| w.channel.as_ref())
            .ok_or_else(|| "it has no channel".to_string())?;
        handoff::send_now(chan, cmd).map_err(|e| e.to_string())
    }

    fn on_channel(&mut self, worker: WorkerId, ev: ChannelEvent) {
        let event = match ev {
            ChannelEvent::HandedOff { elapsed } => WorkerEvent::HandedOff {
                listeners: self
                    .gen_outboxes
                    .get(&worker.generation)
                    .map_or(0, |o| o.listeners.len()),
                elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            },
            ChannelEvent::Ready => WorkerEvent::Ready(ReadyVia::Channel),
            ChannelEvent::Status(s) => WorkerEvent::Status(s),
            ChannelEvent::Hello(v) => WorkerEvent::Protocol(v),
            ChannelEvent::Unhealthy(s) => WorkerEvent::Unhealthy(s),
            ChannelEvent::Unknown(verb) => {
                debug!(generation = worker.generation, verb = %verb, "unknown_message");
                WorkerEvent::Unknown(verb)
            }
            ChannelEvent::Malformed(why) => WorkerEvent::Malformed(why),
            ChannelEvent::Closed(why) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.channel = None;
                }
                WorkerEvent::ChannelClosed(why)
            }
        };
        self.feed(Input::Worker { worker, event });
    }

    /// Every listener open: those new generations get, then those that
    /// only older generations still use; each with the generations using
    /// it.
    fn listener_status(&self) -> Vec<control::ListenerStatus> {
        let mut open: Vec<&Arc<Listener>> = self.outbox.listeners.iter().collect();
        for o in self.gen_outboxes.values() {
            for l in &o.listeners {
                if !open.iter().any(|m| Arc::ptr_eq(m, l)) {
                    open.push(l);
                }
            }
        }
        open.into_iter()
            .map(|l| control::ListenerStatus {
                name: l.info.name.clone(),
                kind: l.info.kind.to_string(),
                address: l.info.address.clone(),
                source: l.origin.as_str().to_string(),
                generations: self
                    .gen_outboxes
                    .iter()
                    .filter(|(_, o)| o.listeners.iter().any(|m| Arc::ptr_eq(m, l)))
                    .map(|(g, _)| *g)
                    .collect(),
                removed: !self.outbox.listeners.iter().any(|m| Arc::ptr_eq(m, l)),
            })
            .collect()
    }

    /// Forgets the listener sets of generations that are gone, closing
    /// each listener the config file removed that no generation uses now.
    fn prune_listener_sets(&mut self) {
        let gone: Vec<lifecycle::GenId> = self
            .gen_outboxes
            .keys()
            .copied()
            .filter(|g| !self.core.has_generation(*g))
            .collect();
        for g in gone {
            let Some(set) = self.gen_outboxes.remove(&g) else {
                continue;
            };
            for l in &set.listeners {
                if !self.in_use(l) {
                    self.closed(l);
                }
            }
            // Dropping the set closes those.
        }
    }

    /// Whether new generations, or any generation, use `l`.
    fn in_use(&self, l: &Arc<Listener>) -> bool {
        let has = |o: &Outbox| o.listeners.iter().any(|m| Arc::ptr_eq(m, l));
        has(&self.outbox) || self.gen_outboxes.values().any(|o| has(o))
    }

    /// A listener is about to close for good.
    fn closed(&mut self, l: &Listener) {
        if let Some(store) = &self.cfg.fd_store {
            // FDSTOREREMOVE drops every fd stored under the name, and a
            // listener that stays open may have the same name (a changed
            // address, or names that moved): store those again.
            store.forget(&l.info.name);
            let mut open: Vec<&Arc<Listener>> = Vec::new();
            for o in std::iter::once(&self.outbox).chain(self.gen_outboxes.values()) {
                for m in &o.listeners {
                    if m.info.name == l.info.name
                        && !std::ptr::eq(Arc::as_ptr(m), l)
                        && !open.iter().any(|k| Arc::ptr_eq(k, m))
                    {
                        open.push(m);
                    }
                }
            }
            for m in open {
                store.keep(m);
            }
        }
        self.emit(Event::ListenerClosed {
            name: l.info.name.clone(),
            address: l.info.address.clone(),
        });
    }

    /// An upgrade request with `--config`: the file is read first (off the
    /// loop), then the upgrade goes to the core.
    fn upgrade_after_config(&mut self, source: Source, reply: Option<lifecycle::Reply>) {
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        if r.task.is_none() {
            r.waiting.push((source, reply));
            self.read_config();
        } else if r.next.len() < MAX_WAITING_FOR_CONFIG {
            r.next.push((source, reply));
        } else if let Some(t) = reply {
            self.reply(
                reply_ticket(t),
                Reply::error("upgrade refused: too many upgrades waiting for the config file"),
            );
        }
    }

    fn read_config(&mut self) {
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        let reload = r.reload.clone();
        let current = self.outbox.listeners.clone();
        let identity = self.cfg.identity.clone();
        r.task = Some(tokio::task::spawn_blocking(move || {
            crate::reload::prepare(&reload, &current, identity.as_ref())
        }));
    }

    /// The config file was read: switch to what it says and let the
    /// upgrades through, or refuse them and change nothing.
    fn on_config_read(&mut self, read: Result<Prepared, String>) {
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        r.task = None;
        let waiting = std::mem::take(&mut r.waiting);
        let path = r.reload.file.path.display().to_string();
        match read.and_then(|p| self.switch_to(p)) {
            Ok(()) => {
                for (source, reply) in waiting {
                    self.feed_core(Input::Upgrade { source, reply });
                }
            }
            Err(reason) => {
                self.emit(Event::ConfigRejected {
                    path,
                    reason: reason.clone(),
                });
                for (_, reply) in waiting {
                    if let Some(t) = reply {
                        self.reply(
                            reply_ticket(t),
                            Reply::error(format!("upgrade refused: {reason}")),
                        );
                    }
                }
                // For `Type=notify-reload`, which waits for the end of the
                // reload it asked for by signal.
                self.manager.reloading();
                self.manager.ready(&format!(
                    "{}; config rejected: {reason}",
                    self.core.status_line()
                ));
            }
        }
        if let Some(r) = self.reloading.as_mut()
            && !r.next.is_empty()
        {
            r.waiting = std::mem::take(&mut r.next);
            self.read_config();
        }
    }

    /// Applies a config file read: binds its new listeners, then switches
    /// new generations to its listeners, launch and policy.
    fn switch_to(&mut self, p: Prepared) -> Result<(), String> {
        let (set, added) = p.plan.bind()?;
        let removed: Vec<String> = self
            .outbox
            .listeners
            .iter()
            .filter(|l| !set.iter().any(|m| Arc::ptr_eq(m, l)))
            .map(|l| l.info.name.clone())
            .collect();
        let outbox = Outbox::new(set).map_err(|e| format!("cannot describe the listeners: {e}"))?;
        if let Some(store) = &self.cfg.fd_store {
            for l in outbox
                .listeners
                .iter()
                .filter(|l| added.contains(&l.info.name))
            {
                store.keep(l);
            }
        }
        for l in outbox
            .listeners
            .iter()
            .filter(|l| added.contains(&l.info.name))
        {
            tracing::info!(name = %l.info.name, kind = %l.info.kind, address = %l.info.address, "listening");
        }
        let before = std::mem::replace(&mut self.outbox, Arc::new(outbox));
        // Removed, and no generation uses them: closed now.
        for l in &before.listeners {
            if !self.in_use(l) {
                self.closed(l);
            }
        }
        drop(before);
        self.launch = Arc::new(p.derived.launch);
        self.core.set_policy(p.derived.policy);
        self.hooks.set_commands(p.derived.hooks);
        self.max_worker_rss = p.derived.max_worker_rss;
        let path = match self.reloading.as_mut() {
            Some(r) => {
                r.reload.loaded = p.loaded;
                r.reload.file.path.display().to_string()
            }
            None => String::new(),
        };
        self.emit(Event::ConfigReloaded {
            path,
            changed: p.changed,
            added,
            removed,
            ignored: p.ignored,
        });
        // Listeners removed with no generation left using them.
        self.prune_listener_sets();
        Ok(())
    }

    /// Starts `--ready-probe` for a worker; its end is reported when it is
    /// reaped.
    fn probe(&mut self, worker: WorkerId, pid: Pid) -> Option<Input> {
        self.hooks
            .start(
                &mut self.aux,
                Purpose::Probe(worker),
                &[
                    ("HOTSUP_GENERATION", worker.generation.to_string()),
                    ("HOTSUP_PID", pid.as_raw_pid().to_string()),
                    ("HOTSUP_SLOT", worker.slot.to_string()),
                ],
            )
            .err()
    }

    /// What `--metrics` scrapes see of the present.
    fn publish_metrics(&self, now: std::time::Instant) {
        let Some(m) = &self.cfg.metrics else { return };
        let snap = self.core.snapshot(now);
        let serving = snap
            .generations
            .iter()
            .find(|g| matches!(g.phase, "serving" | "probation"));
        m.publish(crate::metrics::Present {
            generation: serving.map_or(0, |g| g.id),
            draining: snap
                .generations
                .iter()
                .filter(|g| g.phase == "draining")
                .count() as u64,
            workers: serving
                .map(|g| {
                    g.workers
                        .iter()
                        .filter_map(|w| w.pid.map(|p| (w.id.slot, p)))
                        .collect()
                })
                .unwrap_or_default(),
            log_lines_dropped: crate::logging::dropped_lines(),
            notify_dropped: self.strangers.total(),
            counters: snap.counters,
        });
    }

    /// Replaces the workers whose resident memory is above
    /// `--max-worker-rss`.
    fn check_rss(&mut self) {
        let Some(limit) = self.max_worker_rss else {
            return;
        };
        for (worker, pid) in self.core.live_workers() {
            let Some(rss) = rss_bytes(pid.as_raw_pid()) else {
                continue;
            };
            if rss > limit {
                let why = format!("RSS {} MiB over {} MiB", rss >> 20, limit >> 20);
                self.feed(Input::Recycle { worker, why });
            }
        }
    }

    /// What a worker's processes said on its `NOTIFY_SOCKET`.
    fn on_notify(&mut self, worker: WorkerId, msg: notify::Parsed) {
        if let Some(status) = msg.status {
            self.feed(Input::Worker {
                worker,
                event: WorkerEvent::Status(status),
            });
        }
        if msg.stopping {
            // Noted, never passed on: it would stop hotsup's own unit.
            debug!(generation = worker.generation, "child_stopping");
        }
        if let Some(errno) = msg.errno {
            let reason = format!(
                "ERRNO={errno} ({})",
                std::io::Error::from_raw_os_error(errno)
            );
            self.feed(Input::Worker {
                worker,
                event: WorkerEvent::Unhealthy(reason),
            });
        }
        if msg.ready {
            self.feed(Input::Worker {
                worker,
                event: WorkerEvent::Ready(ReadyVia::Notify),
            });
        }
    }

    /// Kills what a reaped worker left in its cgroup and removes the cgroup,
    /// or keeps it until it is empty.
    fn retire_cgroup(&mut self, worker: WorkerId, cg: GenCgroup) {
        if cg.remove().is_ok() {
            return;
        }
        if let Err(e) = cg.kill() {
            warn!(generation = worker.generation, error = %e, "cgroup_kill_failed");
        } else {
            debug!(generation = worker.generation, "killed_leftovers");
        }
        self.emptying.push(cg);
    }

    /// Removes the cgroups of retired workers that have emptied since.
    fn sweep_cgroups(&mut self) {
        self.emptying.retain(|cg| cg.remove().is_err());
    }

    /// Collects every exited child. This is the only place hotsup waits.
    fn reap(&mut self) {
        self.sweep_cgroups();
        loop {
            // wait(), not waitpid(None): rustix maps None to "my own process
            // group", and every generation runs in a group of its own.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let status = exit_info(&status);
                    if let Some(exit) = self.aux.reaped(pid, status) {
                        let input = match exit.kind {
                            crate::aux::AuxKind::Build => {
                                crate::watch::aux_exited(&mut self.watch, &exit)
                            }
                            crate::aux::AuxKind::SelfCheck => {
                                self.self_check_exited(&exit);
                                None
                            }
                            _ => self.hooks.reaped(&exit),
                        };
                        if let Some(input) = input {
                            self.feed(input);
                        }
                        continue;
                    }
                    if self.core.worker_of(pid).is_none() {
                        debug!(pid = pid.as_raw_pid(), status = %status, "reaped_orphan");
                        continue;
                    }
                    self.feed(Input::Exited { pid, status });
                }
                Ok(None) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return, // ECHILD: no children left.
            }
        }
    }

    fn on_control(&mut self, m: control::Message) {
        match m.request {
            Request::Upgrade { wait } => {
                let t = self.ticket(m.reply);
                let reply = if wait {
                    lifecycle::Reply::Outcome(t)
                } else {
                    lifecycle::Reply::Started(t)
                };
                self.feed(Input::Upgrade {
                    source: Source::Control,
                    reply: Some(reply),
                });
            }
            Request::Rollback => {
                let t = self.ticket(m.reply);
                self.feed(Input::Rollback { reply: Some(t) });
            }
            Request::Status => {
                let status = self.status();
                let _ = m.reply.send(Reply {
                    version: control::VERSION,
                    ok: true,
                    status: Some(status),
                    ..Reply::default()
                });
            }
            Request::Stop { wait } => {
                let reply = if wait {
                    Some(self.ticket(m.reply))
                } else {
                    let _ = m.reply.send(Reply {
                        version: control::VERSION,
                        ok: true,
                        ..Reply::default()
                    });
                    None
                };
                self.feed(Input::Stop {
                    source: Source::Control,
                    reply,
                });
            }
            Request::Signal { signal, worker } => match crate::signals::parse(&signal) {
                Err(e) => {
                    let _ = m.reply.send(Reply::error(format!("{signal:?}: {e}")));
                }
                Ok(sig) => {
                    let t = self.ticket(m.reply);
                    self.feed(Input::Forward {
                        signal: sig.as_raw(),
                        slot: worker,
                        reply: Some(t),
                    });
                }
            },
            // Served by the control socket itself, from the event feed.
            Request::Events { .. } => {
                let _ = m
                    .reply
                    .send(Reply::error("events are streamed, not answered"));
            }
            Request::SelfUpgrade { binary } => self.self_upgrade(binary, m.reply, m.written),
            Request::Scale { workers } => {
                let t = self.ticket(m.reply);
                self.feed(Input::Scale {
                    workers,
                    reply: Some(t),
                });
            }
        }
    }

    fn status(&self) -> control::Status {
        let now = Instant::now().into_std();
        let snap = self.core.snapshot(now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let describe = |g: &lifecycle::GenerationSnapshot| control::GenerationStatus {
            generation: g.id,
            pid: g.pids.first().copied().unwrap_or(0),
            age_ms: ms(g.age),
            ready_via: g.ready_via.map(|v| v.as_str().to_owned()),
            serving_ms: g.serving_for.map(ms),
            deadline_in_ms: match g.phase {
                "draining" | "killing" => g.deadline_in.map(ms),
                _ => None,
            },
            probation_ends_in_ms: match g.phase {
                "probation" => g.deadline_in.map(ms),
                _ => None,
            },
            state: g.phase.to_string(),
            protocol: g.protocol,
            workers: g
                .workers
                .iter()
                .map(|w| control::WorkerStatus {
                    worker: w.id.slot,
                    pid: w.pid.unwrap_or(0),
                    state: w.state.to_string(),
                    age_ms: ms(w.age),
                    rss_kib: w.pid.and_then(rss_bytes).map(|b| b >> 10),
                })
                .collect(),
            status: g.status.clone(),
            unhealthy: g.unhealthy.clone(),
        };
        let find = |phases: &[&str]| {
            snap.generations
                .iter()
                .find(|g| phases.contains(&g.phase))
                .map(describe)
        };
        let path_of = |p: Option<PinId>| {
            p.and_then(|p| self.pins.get(&p))
                .map(|p| p.exe.path().display().to_string())
        };
        control::Status {
            pid: rustix::process::getpid().as_raw_pid(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: ms(snap.uptime),
            listeners: self.listener_status(),
            serving: find(&["serving", "probation"]),
            starting: find(&["starting"]),
            checking: snap.checking,
            standby: find(&["standby"]),
            draining: snap
                .generations
                .iter()
                .filter(|g| matches!(g.phase, "draining" | "killing"))
                .map(describe)
                .collect(),
            last_upgrade: snap.last_upgrade.as_ref().map(|u| control::LastUpgrade {
                generation: u.generation,
                result: u.result,
                reason: u.failure.as_ref().map(ToString::to_string),
                failure: u.failure.clone(),
                ago_ms: ms(u.ago),
            }),
            restarts: snap.counters.crash_restarts,
            upgrades: control::UpgradeCounts {
                ready: snap.counters.upgrades_ready,
                failed: snap.counters.upgrades_failed,
                rolled_back: snap.counters.rollbacks,
            },
            last_good: path_of(snap.last_good),
            previous_good: path_of(snap.previous_good),
            notify_dropped: self.strangers.total(),
            workers: snap.workers_target,
            log_lines_dropped: crate::logging::dropped_lines(),
            binary: self.selfup.status(),
        }
    }
}

/// Resident memory of `pid`, from its `VmRSS` (one small read).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// A wait status in the core's terms.
fn exit_info(status: &WaitStatus) -> ExitInfo {
    ExitInfo {
        code: status.exit_status(),
        signal: status.terminating_signal(),
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The ticket an upgrade request answers to.
fn reply_ticket(r: lifecycle::Reply) -> Ticket {
    match r {
        lifecycle::Reply::Outcome(t) | lifecycle::Reply::Started(t) => t,
    }
}

/// The config file read in progress, if any; pending otherwise.
async fn config_read(r: &mut Option<Reloading>) -> Result<Prepared, String> {
    match r.as_mut().and_then(|r| r.task.as_mut()) {
        Some(task) => task
            .await
            .unwrap_or_else(|e| Err(format!("reading the config file failed: {e}"))),
        None => std::future::pending().await,
    }
}
