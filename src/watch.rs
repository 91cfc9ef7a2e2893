//! `hotsup run --watch`: the development loop. A save is built (with
//! `--build`) while the serving generation goes on serving, and a good
//! build goes live through the ordinary upgrade path (readiness,
//! `--probation`, coalescing); a failed build leaves everything as it was.
//!
//! - Changes come from [`watcher`] (notify's thread, filtered by
//!   [`filter`]). The debounce is a quiet period: the build starts once no
//!   change has been seen for `--debounce` (100 ms by default), so a burst
//!   of writes (a `git checkout`, a formatter on save) is one build.
//! - One build runs at a time. Saves during a build queue exactly one
//!   follow-up build, started when the running one ends; the running build
//!   is never interrupted. Its result still goes live when it succeeds:
//!   it is newer than what serves, and the follow-up replaces it in turn.
//! - The build is an auxiliary process ([`crate::aux`]): its own process
//!   group, hotsup's stdout and stderr (the compiler's errors reach the
//!   terminal as they are, in colour), reaped by the supervisor's single
//!   wait loop, which hands its exit to [`aux_exited`].
//! - The first generation starts after the first good build; until then the
//!   listeners are bound and connections wait in their backlog. A failed
//!   first build waits for the next save.
//! - The core's `RestartRule::Wait`: a generation that crashes is not
//!   restarted in a loop; the next save (or `hotsup upgrade`) starts one.
//! - After each swap, one `swapped` event (and, on a terminal, the line
//!   `saved src/main.rs -> generation 7 serving in 1.84 s (build 1.80 s,
//!   swap 14 ms)`); `--livereload` clients are told to reload then. Both
//!   wait until the generations the new one replaced have exited (at most
//!   [`SETTLE_MAX`]), so that a request sent after them, or a browser's
//!   reload on its open keep-alive connection, reaches the new code (see
//!   [`Watch::flush`]).
//! - On a terminal (`--log-format text`, stderr a tty), each outcome is
//!   also printed as a human line, `hotsup: ...`, through the log writer:
//!   never a blocking write on the event loop.
//!
//! Without `--watch` none of this exists: no thread, no channel, no
//! allocation; the supervisor holds `None`. Built without the `watch`
//! feature, not even its code does (see `watch_off.rs`).

mod filter;
mod livereload;
mod watcher;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::sync::watch as slot;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::aux::{self, AuxExit, AuxKind, AuxProcesses};
use crate::lifecycle::{Event, Input, Origin, Source};

/// Whether this hotsup was built with watch mode (the `watch` feature).
pub const AVAILABLE: bool = true;

/// The default `--debounce`.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// What `hotsup run --watch` was given.
pub struct Config {
    /// `--watch`, as given.
    pub paths: Vec<PathBuf>,
    /// `--build`, run with `sh -c`.
    pub build: Option<String>,
    pub debounce: Duration,
    /// `--watch-ignore`, gitignore patterns.
    pub ignore: Vec<String>,
    /// `--livereload`, already bound.
    pub livereload: Option<std::net::TcpListener>,
    /// Also print the human line of each outcome (a terminal reads the
    /// log).
    pub human: bool,
    /// COMMAND as given: what a build writes, which never counts as a
    /// save.
    pub command: PathBuf,
    /// The soft RLIMIT_NOFILE hotsup was started with, for the build.
    pub nofile: Option<u64>,
}

/// A change that leads to a build or an upgrade.
#[derive(Debug, Clone)]
struct Trigger {
    /// The newest changed path; `None` for the first build.
    path: Option<PathBuf>,
    /// When it was seen.
    at: Instant,
}

/// A build in progress.
struct Build {
    pid: Pid,
    trigger: Trigger,
    started: Instant,
}

/// Builds in a row started by a change seen while the previous build ran,
/// after which hotsup suspects the build writes a watched file.
const SELF_TRIGGER_HINT: u32 = 3;

/// An upgrade (or the first start) that a save caused, until its outcome.
#[derive(Debug, Clone)]
struct Swap {
    trigger: Trigger,
    build_ms: Option<u64>,
    /// When it was handed to the core.
    asked: Instant,
    /// The generation started for it, once known.
    generation: Option<u64>,
    start: bool,
}

/// The longest a swap's line and reload wait for the generations it
/// replaced to exit.
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Something to log or send once the lifecycle step that caused it is
/// complete.
enum Deferred {
    Line(Line),
    Reload(u64),
}

/// The outcome lines, each one typed event (and a human line on a
/// terminal).
enum Line {
    Swapped(Swap, u64, Instant),
    SwapFailed(Swap, String, Option<u64>),
    Crashed(u64, String),
    Serving(u64),
}

pub struct Watch {
    build_cmd: Option<String>,
    debounce: Duration,
    human: bool,
    nofile: Option<u64>,
    cwd: PathBuf,
    /// `None` only in unit tests of the state machine.
    _watcher: Option<watcher::FsWatcher>,
    /// `None` once notify's thread is gone (it never is, short of a bug).
    changes: Option<slot::Receiver<watcher::Change>>,
    livereload: Option<livereload::Hub>,
    /// The newest change not acted on yet, and when its quiet period ends.
    settling: Option<(Trigger, Instant)>,
    build: Option<Build>,
    /// The build to run once the current one (if any) ends.
    next_build: Option<Trigger>,
    /// Whether the core was given `Input::Start` (or saw a generation).
    started: bool,
    /// An upgrade just handed to the core, until it says what it did.
    asked: Option<Swap>,
    /// The attempt in progress that a save caused.
    attempt: Option<Swap>,
    /// A save's upgrade coalesced behind the attempt in progress.
    queued: Option<Swap>,
    serving: Option<u64>,
    /// In order; the first ones may be held (see [`Watch::flush`]).
    deferred: std::collections::VecDeque<Deferred>,
    /// Held items wait until then at most.
    hold_until: Option<Instant>,
    /// Pids of workers told to drain (or killed) and not reaped yet.
    draining: std::collections::BTreeSet<i32>,
    stopping: bool,
    /// When the last build ran, and how many builds in a row were
    /// triggered by a change seen during the one before.
    last_build: Option<(Instant, Instant)>,
    self_triggered: u32,
}

impl Watch {
    /// Starts watching. Runs on the event loop's runtime (the live-reload
    /// server is a task on it); spawns nothing yet: the first build starts
    /// from [`next`].
    pub fn new(cfg: Config) -> Result<Watch, String> {
        let cwd = std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?;
        let mut roots = Vec::new();
        for p in &cfg.paths {
            let c = p
                .canonicalize()
                .map_err(|e| format!("--watch {}: {e}", p.display()))?;
            roots.push(c);
        }
        // The built COMMAND, by the path given and by its real path.
        let given = cwd.join(&cfg.command);
        let mut outputs = vec![given.clone()];
        if let Ok(real) = given.canonicalize() {
            outputs.push(real);
        } else if let (Some(dir), Some(name)) = (given.parent(), given.file_name())
            && let Ok(d) = dir.canonicalize()
        {
            outputs.push(d.join(name));
        }
        // hotsup's own stdout and stderr, when they are files in a watched
        // directory: every log line (and the app's output) would be a save.
        for fd in [1, 2] {
            if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                && p.is_file()
            {
                outputs.push(p);
            }
        }
        let filter = filter::Filter::new(roots.clone(), outputs, &cfg.ignore, cwd.clone())?;
        let (fs, changes) = watcher::start(&roots, filter)?;
        let livereload = match cfg.livereload {
            Some(l) => {
                let address = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let hub = livereload::Hub::default();
                livereload::serve(l, hub.clone())
                    .map_err(|e| format!("--livereload {address}: {e}"))?;
                info!(
                    address = %address,
                    script = %format!("http://{address}/livereload.js"),
                    "livereload"
                );
                Some(hub)
            }
            None => None,
        };
        info!(
            paths = %roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(" "),
            build = cfg.build.as_deref().unwrap_or(""),
            debounce_ms = ms(cfg.debounce),
            "watching"
        );
        let first = cfg.build.as_ref().map(|_| Trigger {
            path: None,
            at: Instant::now(),
        });
        Ok(Watch {
            build_cmd: cfg.build,
            debounce: cfg.debounce,
            human: cfg.human,
            nofile: cfg.nofile,
            cwd,
            _watcher: Some(fs),
            changes: Some(changes),
            livereload,
            settling: None,
            build: None,
            next_build: first,
            started: false,
            asked: None,
            attempt: None,
            queued: None,
            serving: None,
            deferred: std::collections::VecDeque::new(),
            hold_until: None,
            draining: std::collections::BTreeSet::new(),
            stopping: false,
            last_build: None,
            self_triggered: 0,
        })
    }

    /// Whether the supervisor starts the first generation at once: yes
    /// without `--build`; with it, after the first good build.
    pub fn starts_at_once(&mut self) -> bool {
        if self.build_cmd.is_some() {
            return false;
        }
        self.started = true;
        self.attempt = Some(Swap {
            trigger: Trigger {
                path: None,
                at: Instant::now(),
            },
            build_ms: None,
            asked: Instant::now(),
            generation: None,
            start: true,
        });
        true
    }

    /// Sees every lifecycle event, as the supervisor logs it. What it leads
    /// to (a line, a reload) is deferred to the next poll of [`next`],
    /// after the rest of the step: the event `ready` comes before the
    /// effects that drain the old generation.
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::UpgradeRequested { source } => {
                self.attempt = match source {
                    Source::Watch => self.asked.take(),
                    // The coalesced follow-up: what was queued behind.
                    Source::Supervisor => self.queued.take(),
                    // A manual upgrade is not a save's.
                    _ => None,
                };
            }
            Event::UpgradeQueued {
                source: Source::Watch,
                ..
            } => {
                if let Some(s) = self.asked.take() {
                    // Replaces an older one: the follow-up covers both.
                    self.queued = Some(s);
                }
            }
            Event::UpgradeIgnored {
                source: Source::Watch,
            } => self.asked = None,
            Event::Spawned {
                generation, origin, ..
            } => {
                self.started = true;
                if matches!(origin, Origin::Start | Origin::Upgrade)
                    && let Some(a) = self.attempt.as_mut().filter(|a| a.generation.is_none())
                {
                    a.generation = Some(*generation);
                }
            }
            Event::Ready { generation, .. } => {
                let g = *generation;
                self.serving = Some(g);
                let line = match self.attempt.take() {
                    Some(a) if a.generation == Some(g) => Line::Swapped(a, g, Instant::now()),
                    other => {
                        self.attempt = other;
                        Line::Serving(g)
                    }
                };
                // Held until the generations it replaces are gone: see
                // `flush`.
                self.hold_until = Some(Instant::now() + SETTLE_MAX);
                self.deferred.push_back(Deferred::Line(line));
                self.deferred.push_back(Deferred::Reload(g));
            }
            Event::Resumed { generation, .. } => {
                self.serving = Some(*generation);
                self.deferred.push_back(Deferred::Reload(*generation));
            }
            Event::UpgradeFailed {
                generation,
                failure,
                serving,
            } => self.attempt_failed(*generation, failure.to_string(), *serving),
            Event::StartFailed {
                generation,
                failure,
                ..
            } => self.attempt_failed(*generation, failure.to_string(), None),
            Event::RolledBack {
                generation,
                failure,
                resumed,
                ..
            } => self.attempt_failed(Some(*generation), failure.to_string(), *resumed),
            Event::Crashed {
                generation,
                status,
                successor: None,
                ..
            } => {
                if self.serving == Some(*generation) {
                    self.serving = None;
                    if let Some(h) = &self.livereload {
                        h.stopped();
                    }
                }
                self.deferred.push_back(Deferred::Line(Line::Crashed(
                    *generation,
                    status.to_string(),
                )));
            }
            // By pid: a pool's workers drain one by one.
            Event::Draining { pid, .. } | Event::Killed { pid, .. } => {
                self.draining.insert(*pid);
            }
            Event::Drained { pid, .. } | Event::Reaped { pid, .. } => {
                self.draining.remove(pid);
            }
            Event::ShutdownBegan { .. } => {
                self.stopping = true;
                self.settling = None;
                self.next_build = None;
                if let Some(b) = &self.build {
                    // Not reaped yet (the reaper clears `build` as it
                    // reaps), so the group is the build's.
                    let _ = rustix::process::kill_process_group(b.pid, Signal::KILL);
                }
            }
            _ => {}
        }
    }

    fn attempt_failed(&mut self, generation: Option<u64>, reason: String, serving: Option<u64>) {
        let ours = self.attempt.as_ref().is_some_and(|a| {
            generation.is_none() || a.generation.is_none() || a.generation == generation
        });
        if ours && let Some(a) = self.attempt.take() {
            self.deferred
                .push_back(Deferred::Line(Line::SwapFailed(a, reason, serving)));
        }
    }

    /// A change was published: (re)start the quiet period.
    fn changed(&mut self, change: &watcher::Change) {
        if self.stopping {
            return;
        }
        let trigger = Trigger {
            path: Some(change.path.clone()),
            at: Instant::from_std(change.at),
        };
        self.settling = Some((trigger, Instant::now() + self.debounce));
    }

    /// The quiet period passed: build, or upgrade at once without
    /// `--build`.
    fn settled(&mut self, aux: &mut AuxProcesses) -> Option<Input> {
        let (trigger, _) = self.settling.take()?;
        if self.stopping {
            return None;
        }
        if self.build_cmd.is_none() {
            return Some(self.ask(trigger, None));
        }
        self.check_self_trigger(&trigger);
        if let Some(b) = &self.build {
            info!(
                path = self.show(trigger.path.as_deref()).as_deref(),
                running = b.pid.as_raw_pid(),
                "build_queued"
            );
            self.next_build = Some(trigger);
            return None;
        }
        self.start_build(trigger, aux);
        None
    }

    /// A build that writes a watched file (beyond target/ and COMMAND)
    /// starts the next one, forever: say so once, naming the file.
    fn check_self_trigger(&mut self, trigger: &Trigger) {
        let during = self
            .last_build
            .is_some_and(|(from, to)| trigger.at >= from && trigger.at <= to);
        if !during {
            self.self_triggered = 0;
            return;
        }
        self.self_triggered += 1;
        if self.self_triggered == SELF_TRIGGER_HINT {
            let path = self.show(trigger.path.as_deref()).unwrap_or_default();
            warn!(
                path = %path,
                hint = "if the build writes it, skip it with --watch-ignore or .gitignore",
                "build_triggers_itself"
            );
            if self.human {
                crate::logging::report(format_args!(
                    "{path} changed during each of the last {SELF_TRIGGER_HINT} builds: if the build writes it, skip it with --watch-ignore or .gitignore"
                ));
            }
        }
    }

    fn start_build(&mut self, trigger: Trigger, aux: &mut AuxProcesses) {
        let Some(cmd) = &self.build_cmd else {
            return;
        };
        let path = self.show(trigger.path.as_deref());
        match aux.spawn(AuxKind::Build, aux::shell(cmd), self.nofile) {
            Ok(pid) => {
                info!(
                    path = path.as_deref(),
                    pid = pid.as_raw_pid(),
                    "build_started"
                );
                if self.human {
                    match &path {
                        Some(p) => crate::logging::report(format_args!("saved {p}: building")),
                        None => crate::logging::report(format_args!("building")),
                    }
                }
                self.build = Some(Build {
                    pid,
                    trigger,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                let reason = format!("cannot run /bin/sh: {e}");
                self.build_failed(&trigger, &reason, 0);
            }
        }
    }

    /// A build ended.
    fn build_exited(&mut self, exit: &AuxExit) -> Option<Input> {
        let build = self.build.take_if(|b| b.pid == exit.pid)?;
        let build_ms = ms(exit.elapsed);
        self.last_build = Some((build.started, Instant::now()));
        if self.stopping {
            return None;
        }
        if exit.status.success() {
            return Some(self.ask(build.trigger, Some(build_ms)));
        }
        self.build_failed(&build.trigger, &exit.status.to_string(), build_ms);
        None
    }

    fn build_failed(&mut self, trigger: &Trigger, status: &str, build_ms: u64) {
        let path = self.show(trigger.path.as_deref());
        warn!(
            path = path.as_deref(),
            status = %status,
            build_ms,
            serving = self.serving,
            "build_failed"
        );
        if self.human {
            let what = match self.serving {
                Some(g) => format!("generation {g} keeps serving"),
                None => "nothing serves yet".to_string(),
            };
            crate::logging::report(format_args!(
                "build failed ({status}) after {}: {what}; waiting for the next save",
                human(build_ms)
            ));
        }
    }

    /// Hands a good build (or a save, without `--build`) to the core.
    fn ask(&mut self, trigger: Trigger, build_ms: Option<u64>) -> Input {
        let start = !self.started;
        let swap = Swap {
            trigger,
            build_ms,
            asked: Instant::now(),
            generation: None,
            start,
        };
        if start {
            self.started = true;
            self.attempt = Some(swap);
            return Input::Start;
        }
        self.asked = Some(swap);
        Input::Upgrade {
            source: Source::Watch,
            reply: None,
        }
    }

    /// Logs the outcome lines and sends the reloads that the last
    /// lifecycle step led to, in order.
    ///
    /// A swap's line and reload are held until the generations it replaced
    /// have exited, for at most [`SETTLE_MAX`]: until then an old
    /// generation may still take a new connection (it stops accepting when
    /// it reads its DRAIN, not when hotsup sends it) and answers requests
    /// on its open keep-alive connections, as a browser's reload would
    /// use, with the old code.
    fn flush(&mut self) {
        let now = Instant::now();
        let held = self.hold_until.is_some_and(|t| now < t) && !self.draining.is_empty();
        if held {
            return;
        }
        self.hold_until = None;
        while let Some(d) = self.deferred.pop_front() {
            match d {
                Deferred::Line(l) => self.log_line(l),
                Deferred::Reload(g) => {
                    if let Some(h) = &self.livereload {
                        h.reload(g);
                    }
                }
            }
        }
    }

    /// When [`next`] must look at held items again.
    fn held_until(&self) -> Option<Instant> {
        self.hold_until.filter(|_| !self.deferred.is_empty())
    }

    fn log_line(&self, line: Line) {
        match line {
            Line::Swapped(s, generation, at) => {
                let total_ms = ms(at.saturating_duration_since(s.trigger.at));
                let swap_ms = ms(at.saturating_duration_since(s.asked));
                let path = self.show(s.trigger.path.as_deref());
                info!(
                    path = path.as_deref(),
                    generation,
                    total_ms,
                    build_ms = s.build_ms,
                    swap_ms,
                    first = s.start,
                    "swapped"
                );
                if self.human {
                    let parts = match s.build_ms {
                        Some(b) => format!(
                            "build {}, {} {}",
                            human(b),
                            if s.start { "start" } else { "swap" },
                            human(swap_ms)
                        ),
                        None => format!(
                            "{} {}",
                            if s.start { "start" } else { "swap" },
                            human(swap_ms)
                        ),
                    };
                    let head = match &path {
                        Some(p) => format!("saved {p} -> "),
                        None => String::new(),
                    };
                    crate::logging::report(format_args!(
                        "{head}generation {generation} serving in {} ({parts})",
                        human(total_ms)
                    ));
                }
            }
            Line::SwapFailed(s, reason, serving) => {
                let path = self.show(s.trigger.path.as_deref());
                warn!(
                    path = path.as_deref(),
                    generation = s.generation,
                    reason = %reason,
                    serving,
                    "swap_failed"
                );
                if self.human {
                    let g = s.generation.map_or_else(
                        || "the new generation".to_string(),
                        |g| format!("generation {g}"),
                    );
                    let what = match serving {
                        Some(s) => format!("generation {s} keeps serving"),
                        None => "nothing serves: waiting for the next save".to_string(),
                    };
                    crate::logging::report(format_args!("{g} failed: {reason}; {what}"));
                }
            }
            Line::Crashed(generation, status) => {
                if self.human {
                    crate::logging::report(format_args!(
                        "generation {generation} {status}; waiting for the next save (or hotsup upgrade)"
                    ));
                }
            }
            Line::Serving(generation) => {
                if self.human {
                    crate::logging::report(format_args!("generation {generation} serving"));
                }
            }
        }
    }

    /// A path as the developer knows it: relative to the working directory
    /// when under it.
    fn show(&self, path: Option<&Path>) -> Option<String> {
        path.map(|p| p.strip_prefix(&self.cwd).unwrap_or(p).display().to_string())
    }
}

/// The supervisor's `select!` branch: waits for a change, the end of its
/// quiet period, or a queued build, and returns only when the core must
/// be told something (a good build: start or upgrade). Never completes
/// without `--watch`.
///
/// Cancel-safe: every state change happens between awaits, and the awaits
/// (`changed()`, a sleep) lose nothing when dropped.
pub async fn next(watch: &mut Option<Watch>, aux: &mut AuxProcesses) -> Input {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    loop {
        w.flush();
        if w.build.is_none()
            && !w.stopping
            && let Some(t) = w.next_build.take()
        {
            w.start_build(t, aux);
        }
        let settle = w.settling.as_ref().map(|(_, d)| *d);
        let wake = match (settle, w.held_until()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            r = changed(&mut w.changes) => match r {
                Some(c) => w.changed(&c),
                None => {
                    warn!(reason = "the file watcher stopped", "watch_error");
                    w.changes = None;
                }
            },
            () = sleep_until(wake) => {
                if settle.is_some_and(|d| d <= Instant::now())
                    && let Some(input) = w.settled(aux) {
                        return input;
                    }
            }
        }
    }
}

/// Routes an auxiliary process's exit (from the supervisor's reaper) to
/// its owner; returns what the core must be told.
pub fn aux_exited(watch: &mut Option<Watch>, exit: &AuxExit) -> Option<Input> {
    match exit.kind {
        AuxKind::Build => watch.as_mut()?.build_exited(exit),
        // The hooks' (crate::hooks) and the self-upgrade's check, routed
        // by the supervisor.
        _ => None,
    }
}

/// The newest change, once there is one the loop has not seen.
async fn changed(rx: &mut Option<slot::Receiver<watcher::Change>>) -> Option<watcher::Change> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    match rx.changed().await {
        Ok(()) => Some(rx.borrow_and_update().clone()),
        Err(_) => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `14 ms`, `1.84 s`.
fn human(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{:02} s", ms / 1000, (ms % 1000) / 10)
    }
}

#[cfg(test)]
impl Watch {
    /// The state machine alone: no watcher, no live-reload server.
    fn bare(build: bool) -> Watch {
        Watch {
            build_cmd: build.then(|| "true".to_string()),
            debounce: DEFAULT_DEBOUNCE,
            human: false,
            nofile: None,
            cwd: PathBuf::from("/p"),
            _watcher: None,
            changes: None,
            livereload: None,
            settling: None,
            build: None,
            next_build: None,
            started: false,
            asked: None,
            attempt: None,
            queued: None,
            serving: None,
            deferred: std::collections::VecDeque::new(),
            hold_until: None,
            draining: std::collections::BTreeSet::new(),
            stopping: false,
            last_build: None,
            self_triggered: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{ExitInfo, FailureReason, ReadyVia};

    fn save(path: &str) -> Trigger {
        Trigger {
            path: Some(PathBuf::from(path)),
            at: Instant::now(),
        }
    }

    fn ready(generation: u64) -> Event {
        Event::Ready {
            generation,
            pid: 1,
            after_ms: 1,
            via: ReadyVia::Channel,
        }
    }

    fn spawned(generation: u64, origin: Origin) -> Event {
        Event::Spawned {
            generation,
            slot: 0,
            pid: 1,
            origin,
            pinned: false,
        }
    }

    /// The generations of the swap lines waiting to be logged.
    fn swaps(w: &Watch) -> Vec<u64> {
        w.deferred
            .iter()
            .filter_map(|d| match d {
                Deferred::Line(Line::Swapped(_, g, _)) => Some(*g),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_good_build_starts_first_then_upgrades() {
        let mut w = Watch::bare(true);
        assert!(!w.starts_at_once());
        assert_eq!(w.ask(save("/p/src/a.rs"), Some(5)), Input::Start);
        w.on_event(&spawned(1, Origin::Start));
        w.on_event(&ready(1));
        assert_eq!(swaps(&w), [1]);
        w.flush();
        assert!(w.deferred.is_empty());
        let up = w.ask(save("/p/src/a.rs"), Some(5));
        assert!(matches!(
            up,
            Input::Upgrade {
                source: Source::Watch,
                ..
            }
        ));
    }

    #[test]
    fn a_save_coalesced_behind_a_manual_upgrade_is_reported_on_the_follow_up() {
        let mut w = Watch::bare(true);
        w.started = true;
        // `hotsup upgrade` starts generation 2.
        w.on_event(&Event::UpgradeRequested {
            source: Source::Control,
        });
        w.on_event(&spawned(2, Origin::Upgrade));
        // A good build lands meanwhile: queued behind it.
        w.ask(save("/p/src/b.rs"), Some(3));
        w.on_event(&Event::UpgradeQueued {
            source: Source::Watch,
            behind: 2,
        });
        w.on_event(&ready(2));
        assert_eq!(swaps(&w), Vec::<u64>::new(), "2 was not the save's");
        w.on_event(&Event::UpgradeRequested {
            source: Source::Supervisor,
        });
        w.on_event(&spawned(3, Origin::Upgrade));
        w.on_event(&ready(3));
        assert_eq!(swaps(&w), [3]);
    }

    #[test]
    fn a_failed_swap_is_reported_once() {
        let mut w = Watch::bare(true);
        w.started = true;
        w.ask(save("/p/src/c.rs"), Some(3));
        w.on_event(&Event::UpgradeRequested {
            source: Source::Watch,
        });
        w.on_event(&spawned(4, Origin::Upgrade));
        let failure = FailureReason::ExitedBeforeReady {
            status: ExitInfo {
                code: Some(3),
                signal: None,
            },
        };
        w.on_event(&Event::UpgradeFailed {
            generation: Some(4),
            failure: failure.clone(),
            serving: Some(3),
        });
        w.on_event(&Event::UpgradeFailed {
            generation: Some(4),
            failure,
            serving: Some(3),
        });
        let failed = w
            .deferred
            .iter()
            .filter(|d| matches!(d, Deferred::Line(Line::SwapFailed(..))))
            .count();
        assert_eq!(failed, 1);
        assert!(w.attempt.is_none());
    }

    #[test]
    fn the_line_and_reload_wait_for_the_old_generation_to_exit() {
        let mut w = Watch::bare(true);
        w.started = true;
        w.ask(save("/p/src/d.rs"), Some(3));
        w.on_event(&Event::UpgradeRequested {
            source: Source::Watch,
        });
        w.on_event(&spawned(2, Origin::Upgrade));
        w.on_event(&ready(2));
        w.on_event(&Event::Draining {
            generation: 1,
            slot: 0,
            pid: 1,
            via: "protocol".into(),
            timeout_ms: 1000,
        });
        w.flush();
        assert_eq!(swaps(&w), [2], "held while generation 1 drains");
        assert!(w.held_until().is_some());
        w.on_event(&Event::Drained {
            generation: 1,
            slot: 0,
            pid: 1,
            status: ExitInfo {
                code: Some(0),
                signal: None,
            },
            clean: true,
            drain_ms: 1,
        });
        w.flush();
        assert!(w.deferred.is_empty());
        assert!(w.held_until().is_none());
    }

    #[test]
    fn the_hold_ends_at_settle_max() {
        let mut w = Watch::bare(false);
        w.on_event(&ready(2));
        w.on_event(&Event::Draining {
            generation: 1,
            slot: 0,
            pid: 1,
            via: "SIGTERM".into(),
            timeout_ms: 30_000,
        });
        w.hold_until = Some(Instant::now());
        w.flush();
        assert!(w.deferred.is_empty(), "released at the deadline");
    }

    #[test]
    fn durations_read_as_in_the_issue() {
        assert_eq!(human(14), "14 ms");
        assert_eq!(human(1840), "1.84 s");
        assert_eq!(human(1800), "1.80 s");
        assert_eq!(human(1005), "1.00 s");
    }
}
