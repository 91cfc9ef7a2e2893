//! Every transition of the lifecycle core, with no process, no socket and
//! no sleep: a harness feeds inputs at synthetic times, plays the part of
//! the children, and reads the effects.

use super::*;

const SIGTERM: i32 = 15;
const SIGUSR1: i32 = 10;

fn policy() -> Policy {
    Policy {
        ready: ReadyRule::Notify,
        ready_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(30),
        drain_signal: SIGTERM,
        restart: RestartRule::OnFailure,
        max_draining: 4,
        probation: None,
        start_attempts: 3,
        workers: 1,
        rollout_batch: None,
        canary: None,
        max_worker_age: None,
        ready_settle: None,
        ready_probe: false,
        check: false,
        after_upgrade: false,
    }
}

/// The test child: answers every `Spawn` with a fresh pid (or a failure
/// when told to), and records every effect.
struct Harness {
    core: Core,
    now: Instant,
    next_pid: i32,
    fail_spawns: u32,
    /// Every effect so far, in order.
    log: Vec<Effect>,
    /// Which executable each generation was started from.
    exes: BTreeMap<GenId, Exe>,
    next_ticket: u64,
}

impl Harness {
    fn new(policy: Policy) -> Harness {
        let now = Instant::now();
        Harness {
            core: Core::new(policy, now),
            now,
            next_pid: 100,
            fail_spawns: 0,
            log: Vec::new(),
            exes: BTreeMap::new(),
            next_ticket: 1,
        }
    }

    /// Started, with generation 1 ready and serving: through its settle
    /// time and a successful probe, when the policy has them.
    fn serving(policy: Policy) -> Harness {
        let (settle, probe) = (policy.ready_settle, policy.ready_probe);
        let mut h = Harness::new(policy);
        h.feed(Input::Start);
        h.ready(1);
        if let Some(d) = settle {
            h.advance(d);
        }
        if probe {
            let worker = h.w(1);
            h.feed(Input::ProbeDone {
                worker,
                ok: true,
                detail: String::new(),
            });
        }
        assert_eq!(h.phase(1), Some("serving"));
        h
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// Feeds one input; plays the shell for `Spawn`. Returns every effect
    /// that followed, spawn answers included.
    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from(self.core.handle(self.now, input));
        while let Some(e) = queue.pop_front() {
            if let Effect::Spawn { worker, exe, .. } = &e {
                if !self.core.wants_spawn(*worker) {
                    out.push(e);
                    continue;
                }
                self.exes.insert(worker.generation, *exe);
                let answer = if self.fail_spawns > 0 {
                    self.fail_spawns -= 1;
                    Input::SpawnFailed {
                        worker: *worker,
                        error: "no such file".into(),
                    }
                } else {
                    self.next_pid += 1;
                    Input::Spawned {
                        worker: *worker,
                        pid: Pid::from_raw(self.next_pid).unwrap(),
                    }
                };
                queue.extend(self.core.handle(self.now, answer));
            }
            out.push(e);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<Effect> {
        self.now += d;
        self.feed(Input::Tick)
    }

    /// Advances exactly to the core's next deadline.
    fn until_deadline(&mut self) -> Vec<Effect> {
        let next = self.core.next_deadline().expect("a deadline");
        let d = next.saturating_duration_since(self.now);
        self.advance(d)
    }

    /// The live worker of slot 0 of `generation`.
    fn w(&self, generation: GenId) -> WorkerId {
        self.ws(generation, 0)
    }

    /// The live worker of `slot` of `generation`.
    fn ws(&self, generation: GenId, slot: u32) -> WorkerId {
        self.core
            .live_workers()
            .into_iter()
            .map(|(w, _)| w)
            .find(|w| w.generation == generation && w.slot == slot)
            .unwrap_or_else(|| panic!("generation {generation} has no live worker in slot {slot}"))
    }

    fn pid(&self, generation: GenId) -> Pid {
        self.pid_of(self.w(generation))
    }

    fn pid_of(&self, worker: WorkerId) -> Pid {
        self.core
            .live_workers()
            .into_iter()
            .find(|(w, _)| *w == worker)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("{worker:?} has no live process"))
    }

    fn phase(&self, generation: GenId) -> Option<&'static str> {
        self.core
            .snapshot(self.now)
            .generations
            .iter()
            .find(|g| g.id == generation)
            .map(|g| g.phase)
    }

    fn worker(&mut self, generation: GenId, event: WorkerEvent) -> Vec<Effect> {
        let worker = self.w(generation);
        self.feed(Input::Worker { worker, event })
    }

    fn ready(&mut self, generation: GenId) -> Vec<Effect> {
        self.worker(generation, WorkerEvent::Ready(ReadyVia::Channel))
    }

    /// The generation speaks protocol 2: it can be paused.
    fn v2(&mut self, generation: GenId) {
        self.worker(generation, WorkerEvent::Protocol(2));
    }

    fn exit(&mut self, generation: GenId, status: ExitInfo) -> Vec<Effect> {
        let pid = self.pid(generation);
        self.feed(Input::Exited { pid, status })
    }

    fn upgrade(&mut self) -> (Ticket, Vec<Effect>) {
        let t = self.ticket();
        let fx = self.feed(Input::Upgrade {
            source: Source::Signal(12),
            reply: Some(Reply::Outcome(t)),
        });
        (t, fx)
    }

    fn upgrade_quiet(&mut self) -> Vec<Effect> {
        self.feed(Input::Upgrade {
            source: Source::Signal(12),
            reply: None,
        })
    }

    fn term(&mut self) -> Vec<Effect> {
        self.feed(Input::Stop {
            source: Source::Signal(SIGTERM),
            reply: None,
        })
    }
}

fn events(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Emit(ev) => Some(ev.name()),
            _ => None,
        })
        .collect()
}

fn answer_for(fx: &[Effect], ticket: Ticket) -> Option<&Answer> {
    fx.iter().find_map(|e| match e {
        Effect::Reply { ticket: t, answer } if *t == ticket => Some(answer),
        _ => None,
    })
}

fn outcome_for(fx: &[Effect], ticket: Ticket) -> &UpgradeOutcome {
    match answer_for(fx, ticket) {
        Some(Answer::Upgrade(o)) => o,
        other => panic!("no upgrade outcome for {ticket:?}: {other:?} in {fx:#?}"),
    }
}

fn spawns(fx: &[Effect]) -> Vec<(GenId, Exe)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Spawn { worker, exe, .. } => Some((worker.generation, *exe)),
            _ => None,
        })
        .collect()
}

fn drains(fx: &[Effect]) -> Vec<(GenId, DrainVia)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Drain { worker, via, .. } => Some((worker.generation, *via)),
            _ => None,
        })
        .collect()
}

fn kills(fx: &[Effect]) -> Vec<GenId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Kill { worker, .. } => Some(worker.generation),
            _ => None,
        })
        .collect()
}

fn exit_code(fx: &[Effect]) -> Option<u8> {
    fx.iter().find_map(|e| match e {
        Effect::Exit(c) => Some(*c),
        _ => None,
    })
}

fn restart_delay(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::Emit(Event::RestartScheduled { delay_ms, .. }) => Some(*delay_ms),
        _ => None,
    })
}

fn manager(fx: &[Effect]) -> Vec<&ManagerMessage> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Manager(m) => Some(m),
            _ => None,
        })
        .collect()
}

const CRASH: ExitInfo = ExitInfo {
    code: Some(3),
    signal: None,
};
const CLEAN: ExitInfo = ExitInfo {
    code: Some(0),
    signal: None,
};

// ----- start -----

#[test]
fn start_spawns_the_command_looked_up_anew() {
    let mut h = Harness::new(policy());
    let fx = h.feed(Input::Start);
    assert_eq!(spawns(&fx), vec![(1, Exe::Fresh(PinId(1)))]);
    assert_eq!(events(&fx), vec!["spawned"]);
    assert_eq!(h.phase(1), Some("starting"));
    // Nothing serves yet, so the service manager hears nothing.
    assert!(manager(&fx).is_empty());
    assert_eq!(
        h.core.next_deadline(),
        Some(h.now + Duration::from_secs(60))
    );
}

#[test]
fn ready_makes_the_first_generation_serve_and_tells_the_manager() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    let fx = h.ready(1);
    assert_eq!(events(&fx), vec!["ready"]);
    assert_eq!(h.phase(1), Some("serving"));
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Ready(_)]));
    // A first start is not an upgrade.
    assert!(h.core.snapshot(h.now).last_upgrade.is_none());
    // Repeated READY changes nothing.
    let again = h.ready(1);
    assert!(events(&again).is_empty(), "{again:?}");
}

#[test]
fn ready_after_its_timeout_does_not_count() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    // The deadline passed, but no tick reached the core before READY did.
    h.now += Duration::from_secs(61);
    let fx = h.ready(1);
    assert_eq!(h.phase(1), Some("killing"));
    assert!(events(&fx).contains(&"start_failed"));
    assert!(!events(&fx).contains(&"ready"));
    assert_eq!(kills(&fx), vec![1]);
}

#[test]
fn never_ready_is_killed_at_the_timeout_and_restarted_with_backoff() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    let fx = h.until_deadline();
    assert_eq!(kills(&fx), vec![1]);
    let failure = fx.iter().find_map(|e| match e {
        Effect::Emit(Event::StartFailed {
            failure, attempt, ..
        }) => Some((failure.clone(), *attempt)),
        _ => None,
    });
    assert_eq!(
        failure,
        Some((FailureReason::NotReady { timeout_ms: 60_000 }, 1))
    );
    assert_eq!(restart_delay(&fx), Some(100));
    // The killed process is reaped; the restart comes at its time.
    let fx = h.exit(1, ExitInfo::killed(9));
    assert_eq!(events(&fx), vec!["reaped"]);
    let fx = h.advance(Duration::from_millis(100));
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
}

#[test]
fn delay_readiness_counts_once_the_child_stayed_alive() {
    let mut h = Harness::new(Policy {
        ready: ReadyRule::Delay(Duration::from_millis(300)),
        ..policy()
    });
    h.feed(Input::Start);
    assert_eq!(
        h.core.next_deadline(),
        Some(h.now + Duration::from_millis(300))
    );
    let fx = h.advance(Duration::from_millis(299));
    assert!(events(&fx).is_empty());
    let fx = h.advance(Duration::from_millis(1));
    assert_eq!(events(&fx), vec!["ready"]);
    assert_eq!(h.phase(1), Some("serving"));
}

#[test]
fn exec_readiness_is_immediate() {
    let mut h = Harness::new(Policy {
        ready: ReadyRule::Exec,
        ..policy()
    });
    let fx = h.feed(Input::Start);
    assert_eq!(events(&fx), vec!["spawned", "ready"]);
    assert_eq!(h.phase(1), Some("serving"));
}

#[test]
fn a_channel_closed_before_ready_fails_soon_unless_the_exit_explains_it() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    h.worker(1, WorkerEvent::ChannelClosed("child closed its end".into()));
    assert_eq!(h.core.next_deadline(), Some(h.now + CLOSED_GRACE));
    // A READY after the close does not count.
    h.ready(1);
    assert_eq!(h.phase(1), Some("starting"));
    let fx = h.until_deadline();
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::StartFailed {
            failure: FailureReason::ChannelClosed { .. },
            ..
        })
    )));

    // When the exit is reaped within the grace period, it names the cause.
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    h.worker(1, WorkerEvent::ChannelClosed("child closed its end".into()));
    let fx = h.exit(1, CRASH);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::StartFailed {
            failure: FailureReason::ExitedBeforeReady { status: CRASH },
            ..
        })
    )));
}

#[test]
fn garbage_from_a_starting_child_fails_it() {
    let mut h = Harness::serving(policy());
    let (t, _) = h.upgrade();
    let fx = h.worker(2, WorkerEvent::Malformed("unknown message".into()));
    assert_eq!(kills(&fx), vec![2]);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Failed {
            generation: Some(2),
            failure: FailureReason::MalformedMessage { .. },
            serving: Some(1),
            ..
        }
    ));
    assert_eq!(h.phase(1), Some("serving"));
}

// ----- upgrades -----

#[test]
fn an_upgrade_drains_the_old_generation_once_the_new_one_is_ready() {
    let mut h = Harness::serving(policy());
    h.worker(1, WorkerEvent::Protocol(1));
    let (t, fx) = h.upgrade();
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Reloading]));
    assert!(drains(&fx).is_empty());
    let fx = h.ready(2);
    let pid2 = h.pid(2).as_raw_pid();
    assert_eq!(
        outcome_for(&fx, t),
        &UpgradeOutcome::Ready {
            generation: 2,
            pid: pid2
        }
    );
    // Generation 1 spoke the protocol: DRAIN goes on its channel.
    assert_eq!(
        drains(&fx),
        vec![(
            1,
            DrainVia::Channel {
                timeout: Duration::from_secs(30),
                fallback: SIGTERM
            }
        )]
    );
    assert_eq!(h.phase(1), Some("draining"));
    assert_eq!(h.phase(2), Some("serving"));
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.last_upgrade.map(|u| u.result), Some(LastResult::Ready));
    assert_eq!(snap.last_good, Some(PinId(2)));
    assert_eq!(snap.previous_good, Some(PinId(1)));
    // It drains cleanly.
    let fx = h.exit(1, CLEAN);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Emit(Event::Drained { clean: true, .. })))
    );
    assert_eq!(h.phase(1), None);
}

#[test]
fn a_child_that_never_spoke_is_drained_with_the_signal_and_killed_at_the_deadline() {
    let mut h = Harness::new(Policy {
        ready: ReadyRule::Delay(Duration::from_millis(100)),
        ..policy()
    });
    h.feed(Input::Start);
    h.advance(Duration::from_millis(100));
    h.upgrade_quiet();
    let fx = h.advance(Duration::from_millis(100));
    assert_eq!(drains(&fx), vec![(1, DrainVia::Signal(SIGTERM))]);
    let fx = h.advance(Duration::from_secs(30));
    assert_eq!(kills(&fx), vec![1]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::Killed {
            cause: KillCause::DrainDeadline,
            ..
        })
    )));
    // Still not reaped after the kill grace: killed again.
    let fx = h.advance(KILL_GRACE);
    assert_eq!(kills(&fx), vec![1]);
}

#[test]
fn the_new_generation_crashing_during_an_upgrade_leaves_the_old_one_serving() {
    let mut h = Harness::serving(policy());
    let (t, _) = h.upgrade();
    let fx = h.exit(2, CRASH);
    assert_eq!(
        outcome_for(&fx, t),
        &UpgradeOutcome::failed(
            Some(2),
            FailureReason::ExitedBeforeReady { status: CRASH },
            Some(1)
        )
    );
    assert!(events(&fx).contains(&"upgrade_failed"));
    // The reload is over: the manager hears READY=1 again.
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Ready(_)]));
    assert_eq!(h.phase(1), Some("serving"));
    assert!(drains(&fx).is_empty());
    assert!(restart_delay(&fx).is_none());
    assert!(
        h.core
            .status_line()
            .contains("last upgrade to generation 2 failed")
    );
    // Its leftovers are killed with it.
    assert!(fx.iter().any(|e| matches!(e, Effect::KillLeftovers { .. })));
}

#[test]
fn a_spawn_failure_fails_the_upgrade_without_using_a_generation_number() {
    let mut h = Harness::serving(policy());
    h.fail_spawns = 1;
    let (t, fx) = h.upgrade();
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Failed {
            generation: None,
            failure: FailureReason::SpawnFailed { .. },
            serving: Some(1),
            ..
        }
    ));
    let (_, fx) = h.upgrade();
    assert_eq!(spawns(&fx)[0].0, 2);
}

#[test]
fn the_serving_generation_crashing_during_an_upgrade_is_replaced_by_the_new_one() {
    let mut h = Harness::serving(policy());
    let (t, _) = h.upgrade();
    let fx = h.exit(1, CRASH);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::Crashed {
            successor: Some(2),
            ..
        })
    )));
    assert!(restart_delay(&fx).is_none());
    let fx = h.ready(2);
    assert!(matches!(outcome_for(&fx, t), UpgradeOutcome::Ready { .. }));
    assert_eq!(h.phase(2), Some("serving"));
}

#[test]
fn both_generations_failing_restarts_the_last_good_executable() {
    let mut h = Harness::serving(policy());
    h.upgrade();
    h.exit(1, CRASH);
    let fx = h.exit(2, CRASH);
    assert_eq!(restart_delay(&fx), Some(100));
    let fx = h.advance(Duration::from_millis(100));
    // Generation 1 is the last that served well: its pinned executable runs,
    // not whatever sits at the path now.
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
}

#[test]
fn upgrades_during_an_upgrade_are_coalesced_into_one_follow_up() {
    let mut h = Harness::serving(policy());
    let (t1, _) = h.upgrade();
    let (t2, fx2) = h.upgrade();
    let (t3, fx3) = h.upgrade();
    assert!(spawns(&fx2).is_empty() && spawns(&fx3).is_empty());
    assert_eq!(events(&fx2), vec!["upgrade_queued"]);
    // The first answer is for generation 2; the follow-up starts at once.
    let fx = h.ready(2);
    assert!(matches!(
        outcome_for(&fx, t1),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    assert!(answer_for(&fx, t2).is_none());
    assert_eq!(spawns(&fx), vec![(3, Exe::Fresh(PinId(3)))]);
    // Both later clients learn the outcome of generation 3, the one upgrade
    // that covered their requests.
    let fx = h.ready(3);
    assert!(matches!(
        outcome_for(&fx, t2),
        UpgradeOutcome::Ready { generation: 3, .. }
    ));
    assert!(matches!(
        outcome_for(&fx, t3),
        UpgradeOutcome::Ready { generation: 3, .. }
    ));
    // No third upgrade follows.
    assert!(spawns(&fx).is_empty());
    assert_eq!(h.phase(1), Some("draining"));
    assert_eq!(h.phase(2), Some("draining"));
}

#[test]
fn no_wait_upgrades_are_answered_when_started_or_queued() {
    let mut h = Harness::serving(policy());
    let t = h.ticket();
    let fx = h.feed(Input::Upgrade {
        source: Source::Control,
        reply: Some(Reply::Started(t)),
    });
    let pid = h.pid(2).as_raw_pid();
    assert_eq!(
        outcome_for(&fx, t),
        &UpgradeOutcome::Started { generation: 2, pid }
    );
    let t = h.ticket();
    let fx = h.feed(Input::Upgrade {
        source: Source::Control,
        reply: Some(Reply::Started(t)),
    });
    assert_eq!(outcome_for(&fx, t), &UpgradeOutcome::Queued);
}

#[test]
fn max_draining_kills_the_oldest_draining_generation() {
    let mut h = Harness::serving(Policy {
        max_draining: 1,
        ..policy()
    });
    h.upgrade();
    h.ready(2);
    h.upgrade();
    let fx = h.ready(3);
    assert_eq!(kills(&fx), vec![1]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::Killed {
            generation: 1,
            cause: KillCause::MaxDraining,
            ..
        })
    )));
    assert_eq!(h.phase(2), Some("draining"));
}

// ----- crashes and backoff -----

#[test]
fn crash_restarts_back_off_and_reset_after_serving_a_while() {
    let mut h = Harness::serving(policy());
    let mut delays = Vec::new();
    for g in 1..=4 {
        let fx = h.exit(g, CRASH);
        delays.push(restart_delay(&fx).unwrap());
        let fx = h.until_deadline();
        assert_eq!(spawns(&fx), vec![(g + 1, Exe::Pinned(PinId(1)))]);
        h.ready(g + 1);
    }
    assert_eq!(delays, vec![100, 200, 400, 800]);
    // Serving for 10 s resets the backoff.
    h.advance(BACKOFF_RESET_AFTER);
    let fx = h.exit(5, CRASH);
    assert_eq!(restart_delay(&fx), Some(100));
    assert_eq!(h.core.snapshot(h.now).counters.crash_restarts, 4);
}

#[test]
fn the_backoff_is_capped() {
    let mut h = Harness::serving(Policy {
        start_attempts: 100,
        ..policy()
    });
    h.exit(1, CRASH);
    let mut last = 0;
    for g in 2..=12 {
        h.until_deadline();
        let fx = h.exit(g, CRASH);
        last = restart_delay(&fx).unwrap();
    }
    assert_eq!(last, 10_000);
}

#[test]
fn a_failed_start_counts_once_toward_the_backoff() {
    // A crash restart that never becomes ready is killed at the timeout,
    // then reaped: one failure, one doubling.
    let mut h = Harness::serving(policy());
    h.exit(1, CRASH);
    h.until_deadline();
    let fx = h.until_deadline();
    assert_eq!(restart_delay(&fx), Some(200));
    let fx = h.exit(2, ExitInfo::killed(9));
    assert!(restart_delay(&fx).is_none());
}

#[test]
fn restart_policy_decides_what_an_exit_means() {
    // on-failure: exit 0 means the app chose to stop; hotsup exits 0.
    let mut h = Harness::serving(policy());
    let fx = h.exit(1, CLEAN);
    assert_eq!(exit_code(&fx), Some(0));
    // never: hotsup exits with the child's code, or 128+signal.
    let mut h = Harness::serving(Policy {
        restart: RestartRule::Never,
        ..policy()
    });
    let fx = h.exit(1, ExitInfo::killed(9));
    assert_eq!(exit_code(&fx), Some(137));
    // always: even exit 0 restarts.
    let mut h = Harness::serving(Policy {
        restart: RestartRule::Always,
        ..policy()
    });
    let fx = h.exit(1, CLEAN);
    assert_eq!(restart_delay(&fx), Some(100));
}

#[test]
fn restart_wait_leaves_the_next_start_to_an_upgrade() {
    // Watch mode: a crash waits for the next save, without spinning and
    // without exiting.
    let mut h = Harness::serving(Policy {
        restart: RestartRule::Wait,
        start_attempts: u32::MAX,
        ..policy()
    });
    let fx = h.exit(1, CRASH);
    assert!(events(&fx).contains(&"waiting_for_upgrade"));
    assert_eq!(h.core.next_deadline(), None);
    assert!(exit_code(&fx).is_none());
    // A failed start waits too.
    let (_, fx) = h.upgrade();
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
    let fx = h.exit(2, CRASH);
    assert!(events(&fx).contains(&"waiting_for_upgrade"));
    assert!(spawns(&fx).is_empty());
    // The next upgrade starts the fixed build.
    let (t, _) = h.upgrade();
    let fx = h.ready(3);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 3, .. }
    ));
}

#[test]
fn a_first_start_that_never_succeeds_gives_up_after_the_attempts() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    let mut all = h.exit(1, CRASH);
    for g in 2..=3 {
        all.extend(h.until_deadline());
        all.extend(h.exit(g, CRASH));
    }
    assert!(events(&all).contains(&"gave_up"));
    assert_eq!(exit_code(&all), Some(1));
    let attempts: Vec<u32> = all
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(Event::StartFailed { attempt, .. }) => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    // A start failure is not reported as an upgrade.
    assert!(!events(&all).contains(&"upgrade_failed"));
}

#[test]
fn once_something_served_crash_restarts_never_give_up() {
    let mut h = Harness::serving(policy());
    for g in 1..=5 {
        let fx = h.exit(g, CRASH);
        assert!(exit_code(&fx).is_none());
        h.until_deadline();
    }
}

#[test]
fn restart_never_exits_when_the_first_start_fails() {
    let mut h = Harness::new(Policy {
        restart: RestartRule::Never,
        ..policy()
    });
    h.feed(Input::Start);
    let fx = h.exit(1, CRASH);
    assert_eq!(exit_code(&fx), Some(1));
}

// ----- shutdown -----

#[test]
fn sigterm_while_starting_kills_what_never_served() {
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    let fx = h.term();
    assert_eq!(kills(&fx), vec![1]);
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Stopping]));
    let fx = h.exit(1, ExitInfo::killed(9));
    assert_eq!(exit_code(&fx), Some(0));
}

#[test]
fn sigterm_while_serving_drains_and_exits_0() {
    let mut h = Harness::serving(policy());
    let t = h.ticket();
    let fx = h.feed(Input::Stop {
        source: Source::Control,
        reply: Some(t),
    });
    assert_eq!(drains(&fx).len(), 1);
    let fx = h.exit(1, CLEAN);
    assert_eq!(answer_for(&fx, t), Some(&Answer::Stopped { exit_code: 0 }));
    assert_eq!(exit_code(&fx), Some(0));
    // A drain that ends unclean makes the shutdown exit 1.
    let mut h = Harness::serving(policy());
    h.term();
    let fx = h.exit(1, CRASH);
    assert_eq!(exit_code(&fx), Some(1));
}

#[test]
fn sigterm_during_an_upgrade_answers_its_clients_and_stops_both() {
    let mut h = Harness::serving(policy());
    let (t, _) = h.upgrade();
    let (t2, _) = h.upgrade();
    let fx = h.term();
    assert_eq!(outcome_for(&fx, t), &UpgradeOutcome::Superseded);
    assert_eq!(outcome_for(&fx, t2), &UpgradeOutcome::Superseded);
    assert_eq!(kills(&fx), vec![2]);
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    // Upgrades asked for now are refused.
    let (t3, fx) = h.upgrade();
    assert_eq!(outcome_for(&fx, t3), &UpgradeOutcome::Superseded);
    h.exit(2, ExitInfo::killed(9));
    let fx = h.exit(1, CLEAN);
    assert_eq!(exit_code(&fx), Some(0));
}

#[test]
fn sigterm_while_draining_waits_for_the_drain() {
    let mut h = Harness::serving(policy());
    h.upgrade();
    h.ready(2);
    let fx = h.term();
    // Only generation 2 is asked to drain; 1 already drains.
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    h.exit(1, CLEAN);
    let fx = h.exit(2, CLEAN);
    assert_eq!(exit_code(&fx), Some(0));
}

#[test]
fn sigterm_during_a_restart_backoff_cancels_the_restart() {
    let mut h = Harness::serving(policy());
    h.exit(1, CRASH);
    let fx = h.term();
    assert_eq!(exit_code(&fx), Some(0));
    assert_eq!(h.core.next_deadline(), None);
}

#[test]
fn a_second_sigterm_kills_everything_and_exits_1() {
    let mut h = Harness::serving(policy());
    h.term();
    let fx = h.term();
    assert_eq!(kills(&fx), vec![1]);
    let fx = h.exit(1, ExitInfo::killed(9));
    assert_eq!(exit_code(&fx), Some(1));
}

#[test]
fn a_generation_that_cannot_be_killed_is_abandoned_at_shutdown() {
    let mut h = Harness::serving(policy());
    h.term();
    h.term();
    let fx = h.advance(KILL_GRACE);
    assert!(events(&fx).contains(&"abandoned"));
    assert_eq!(exit_code(&fx), Some(1));
}

#[test]
fn signals_are_forwarded_to_the_serving_generation_only() {
    let mut h = Harness::serving(policy());
    h.upgrade();
    let t = h.ticket();
    let fx = h.feed(Input::Forward {
        signal: SIGUSR1,
        slot: None,
        reply: Some(t),
    });
    let targets: Vec<GenId> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { worker, .. } => Some(worker.generation),
            _ => None,
        })
        .collect();
    assert_eq!(targets, vec![1]);
    // With nothing serving, the client hears so.
    let mut h = Harness::new(policy());
    h.feed(Input::Start);
    let t = h.ticket();
    let fx = h.feed(Input::Forward {
        signal: SIGUSR1,
        slot: None,
        reply: Some(t),
    });
    assert!(matches!(answer_for(&fx, t), Some(Answer::Error(_))));
}

// ----- probation -----

fn probation() -> Policy {
    Policy {
        probation: Some(Duration::from_secs(5)),
        ..policy()
    }
}

#[test]
fn probation_puts_a_v2_predecessor_on_standby_and_drains_it_when_passed() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    let (t, _) = h.upgrade();
    let fx = h.ready(2);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Pause { worker, .. } if worker.generation == 1))
    );
    assert!(drains(&fx).is_empty());
    assert_eq!(h.phase(1), Some("standby"));
    assert_eq!(h.phase(2), Some("probation"));
    // The client waits through probation.
    assert!(answer_for(&fx, t).is_none());
    // `systemctl reload` too: no READY=1 before probation ends.
    assert!(
        !manager(&fx)
            .iter()
            .any(|m| matches!(m, ManagerMessage::Ready(_)))
    );
    assert_eq!(h.core.next_deadline(), Some(h.now + Duration::from_secs(5)));
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.last_good, Some(PinId(1)));

    let fx = h.advance(Duration::from_secs(5));
    assert!(events(&fx).contains(&"probation_passed"));
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Ready(_)]));
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.last_good, Some(PinId(2)));
    assert_eq!(snap.previous_good, Some(PinId(1)));
    // Back to one generation once it drained.
    h.exit(1, CLEAN);
    assert_eq!(h.core.live_workers().len(), 1);
}

#[test]
fn a_crash_on_probation_resumes_the_standby_generation() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    let (t, _) = h.upgrade();
    h.ready(2);
    h.now += Duration::from_millis(1200);
    let fx = h.exit(2, ExitInfo::exited(4));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Resume { worker, .. } if worker.generation == 1))
    );
    assert_eq!(
        outcome_for(&fx, t),
        &UpgradeOutcome::rolled_back(
            2,
            FailureReason::ExitedOnProbation {
                status: ExitInfo::exited(4)
            },
            1200,
            Some(1)
        )
    );
    assert_eq!(h.phase(1), Some("serving"));
    assert_eq!(h.phase(2), None);
    assert!(spawns(&fx).is_empty());
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Ready(_)]));
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.counters.rollbacks, 1);
    assert_eq!(
        snap.last_upgrade.map(|u| u.result),
        Some(LastResult::RolledBack)
    );
    assert_eq!(snap.last_good, Some(PinId(1)));
    // The rolled-back executable is no longer needed.
    assert!(h.log.contains(&Effect::Unpin(PinId(2))));
    assert!(h.core.status_line().contains("rolled back"));
}

#[test]
fn a_crash_on_probation_without_standby_restarts_the_pinned_predecessor() {
    // Generation 1 never spoke protocol 2: it cannot pause, so it drains at
    // once, and a rollback starts its executable again.
    let mut h = Harness::serving(probation());
    let (t, _) = h.upgrade();
    let fx = h.ready(2);
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    h.exit(1, CLEAN);
    let fx = h.exit(2, CRASH);
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::RolledBack {
            generation: 2,
            serving: Some(3),
            ..
        }
    ));
    // The rollback generation is not put on probation itself.
    h.ready(3);
    assert_eq!(h.phase(3), Some("serving"));
}

#[test]
fn unhealthy_on_probation_rolls_back() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    let (t, _) = h.upgrade();
    h.ready(2);
    let fx = h.worker(2, WorkerEvent::Unhealthy("database unreachable".into()));
    assert_eq!(kills(&fx), vec![2]);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::RolledBack {
            failure: FailureReason::Unhealthy { .. },
            serving: Some(1),
            ..
        }
    ));
    assert_eq!(h.phase(1), Some("serving"));
    // Unhealthy while simply serving is reported, nothing more.
    let fx = h.worker(1, WorkerEvent::Unhealthy("slow".into()));
    assert_eq!(events(&fx), vec!["unhealthy"]);
    assert_eq!(h.phase(1), Some("serving"));
}

#[test]
fn rollback_requested_during_probation() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    let (t, _) = h.upgrade();
    h.ready(2);
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    for ticket in [t, r] {
        assert!(matches!(
            outcome_for(&fx, ticket),
            UpgradeOutcome::RolledBack {
                failure: FailureReason::RollbackRequested,
                ..
            }
        ));
    }
    assert_eq!(h.phase(1), Some("serving"));
}

#[test]
fn rollback_after_an_upgrade_runs_the_previous_good_executable() {
    let mut h = Harness::serving(policy());
    h.upgrade();
    h.ready(2);
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
    let fx = h.ready(3);
    assert!(matches!(
        outcome_for(&fx, r),
        UpgradeOutcome::Ready { generation: 3, .. }
    ));
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    // Rolling back again undoes the rollback.
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.last_good, Some(PinId(1)));
    assert_eq!(snap.previous_good, Some(PinId(2)));
}

#[test]
fn rollback_with_nothing_to_go_back_to_is_refused() {
    let mut h = Harness::serving(policy());
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    assert!(matches!(answer_for(&fx, r), Some(Answer::Error(_))));
    assert!(spawns(&fx).is_empty());
    // Nor while an upgrade is starting.
    h.upgrade();
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    assert!(matches!(answer_for(&fx, r), Some(Answer::Error(_))));
}

#[test]
fn the_standby_dying_first_makes_a_rollback_start_its_executable() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    h.upgrade();
    h.ready(2);
    h.exit(1, ExitInfo::killed(9));
    let fx = h.exit(2, CRASH);
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
}

#[test]
fn upgrades_during_probation_wait_for_it() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    h.upgrade();
    h.ready(2);
    let (t, fx) = h.upgrade();
    assert!(spawns(&fx).is_empty());
    let fx = h.advance(Duration::from_secs(5));
    assert_eq!(spawns(&fx), vec![(3, Exe::Fresh(PinId(3)))]);
    h.v2(2);
    let fx = h.ready(3);
    // Generation 3 is on probation, with 2 on standby.
    assert!(answer_for(&fx, t).is_none());
    assert_eq!(h.phase(2), Some("standby"));
    assert_eq!(h.phase(3), Some("probation"));
}

#[test]
fn sigterm_during_probation_drains_both() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    let (t, _) = h.upgrade();
    h.ready(2);
    let fx = h.term();
    let mut drained: Vec<GenId> = drains(&fx).iter().map(|d| d.0).collect();
    drained.sort();
    assert_eq!(drained, vec![1, 2]);
    assert_eq!(outcome_for(&fx, t), &UpgradeOutcome::Superseded);
}

#[test]
fn a_standby_that_cannot_be_paused_is_drained_instead() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    h.upgrade();
    h.ready(2);
    let fx = h.worker(1, WorkerEvent::PauseFailed("channel full".into()));
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    let fx = h.exit(2, CRASH);
    // Nothing to resume: the pinned executable starts again.
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
}

#[test]
fn a_first_start_has_no_probation() {
    let mut h = Harness::new(probation());
    h.feed(Input::Start);
    h.ready(1);
    assert_eq!(h.phase(1), Some("serving"));
}

// ----- pins -----

#[test]
fn only_live_and_good_executables_stay_pinned() {
    let mut h = Harness::serving(policy());
    for g in 2..=4 {
        h.upgrade();
        h.ready(g);
        h.exit(g - 1, CLEAN);
    }
    let unpinned: Vec<PinId> = h
        .log
        .iter()
        .filter_map(|e| match e {
            Effect::Unpin(p) => Some(*p),
            _ => None,
        })
        .collect();
    // 4 is serving and last good, 3 is the previous good one.
    assert_eq!(unpinned, vec![PinId(1), PinId(2)]);
    // A failed upgrade's executable goes as soon as it is reaped.
    h.upgrade();
    h.exit(5, CRASH);
    assert!(h.log.contains(&Effect::Unpin(PinId(5))));
}

// ----- worker pools -----

fn pool(n: u32) -> Policy {
    Policy {
        workers: n,
        ..policy()
    }
}

impl Harness {
    /// Every worker of `generation` says READY.
    fn ready_all(&mut self, generation: GenId) -> Vec<Effect> {
        let mut fx = Vec::new();
        let workers: Vec<WorkerId> = self
            .core
            .live_workers()
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| w.generation == generation)
            .collect();
        for w in workers {
            fx.extend(self.feed(Input::Worker {
                worker: w,
                event: WorkerEvent::Ready(ReadyVia::Channel),
            }));
        }
        fx
    }

    fn ready_slot(&mut self, generation: GenId, slot: u32) -> Vec<Effect> {
        let worker = self.ws(generation, slot);
        self.feed(Input::Worker {
            worker,
            event: WorkerEvent::Ready(ReadyVia::Channel),
        })
    }

    /// Every worker of `generation` speaks protocol 2.
    fn v2_all(&mut self, generation: GenId) {
        let workers: Vec<WorkerId> = self
            .core
            .live_workers()
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| w.generation == generation)
            .collect();
        for w in workers {
            self.feed(Input::Worker {
                worker: w,
                event: WorkerEvent::Protocol(2),
            });
        }
    }

    fn exit_slot(&mut self, generation: GenId, slot: u32, status: ExitInfo) -> Vec<Effect> {
        let pid = self.pid_of(self.ws(generation, slot));
        self.feed(Input::Exited { pid, status })
    }

    /// The state of each live worker of `generation`, by slot.
    fn worker_states(&self, generation: GenId) -> Vec<(u32, &'static str)> {
        let snap = self.core.snapshot(self.now);
        let mut v: Vec<(u32, &'static str)> = snap
            .generations
            .iter()
            .filter(|g| g.id == generation)
            .flat_map(|g| g.workers.iter())
            .map(|w| (w.id.slot, w.state))
            .collect();
        v.sort();
        v
    }

    /// Workers serving or starting, in every generation: the N+K bound.
    fn busy(&self) -> usize {
        self.core
            .snapshot(self.now)
            .generations
            .iter()
            .flat_map(|g| g.workers.iter())
            .filter(|w| matches!(w.state, "serving" | "starting"))
            .count()
    }
}

fn spawned_slots(fx: &[Effect]) -> Vec<(GenId, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Spawn { worker, .. } => Some((worker.generation, worker.slot)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pool_is_ready_when_every_worker_is() {
    let mut h = Harness::new(pool(3));
    let fx = h.feed(Input::Start);
    assert_eq!(spawned_slots(&fx), vec![(1, 0), (1, 1), (1, 2)]);
    // Only the first worker looks the command up; the others run what it
    // pinned.
    let exes: Vec<Exe> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { exe, .. } => Some(*exe),
            _ => None,
        })
        .collect();
    assert_eq!(
        exes,
        vec![
            Exe::Fresh(PinId(1)),
            Exe::Pinned(PinId(1)),
            Exe::Pinned(PinId(1))
        ]
    );
    h.ready_slot(1, 0);
    h.ready_slot(1, 1);
    assert_eq!(h.phase(1), Some("starting"));
    let fx = h.ready_slot(1, 2);
    assert!(events(&fx).contains(&"ready"));
    assert_eq!(h.phase(1), Some("serving"));
    assert_eq!(
        h.worker_states(1),
        vec![(0, "serving"), (1, "serving"), (2, "serving")]
    );
}

#[test]
fn a_rolling_upgrade_retires_old_workers_batch_by_batch() {
    let mut h = Harness::new(Policy {
        rollout_batch: Some(1),
        ..pool(3)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.v2_all(1);
    let (t, fx) = h.upgrade();
    // One new worker at a time.
    assert_eq!(spawned_slots(&fx), vec![(2, 0)]);
    assert!(h.busy() <= 3 + 1);
    let fx = h.ready_slot(2, 0);
    // Its old counterpart pauses (a failed rollout resumes it); the next
    // batch starts.
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Pause { worker, .. } if worker.generation == 1 && worker.slot == 0)
    ));
    assert_eq!(spawned_slots(&fx), vec![(2, 1)]);
    assert_eq!(
        h.worker_states(1),
        vec![(0, "paused"), (1, "serving"), (2, "serving")]
    );
    assert!(h.busy() <= 3 + 1);
    let fx = h.ready_slot(2, 1);
    assert_eq!(spawned_slots(&fx), vec![(2, 2)]);
    assert!(h.busy() <= 3 + 1);
    assert!(answer_for(&fx, t).is_none());
    let fx = h.ready_slot(2, 2);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    // Every old worker drains now, the paused ones too.
    let mut drained: Vec<u32> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Drain { worker, .. } if worker.generation == 1 => Some(worker.slot),
            _ => None,
        })
        .collect();
    drained.sort();
    assert_eq!(drained, vec![0, 1, 2]);
    assert_eq!(h.phase(2), Some("serving"));
}

#[test]
fn a_worker_failing_mid_rollout_rolls_the_whole_rollout_back() {
    let mut h = Harness::new(Policy {
        rollout_batch: Some(1),
        ..pool(3)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.v2_all(1);
    let old: Vec<Pid> = (0..3).map(|s| h.pid_of(h.ws(1, s))).collect();
    let (t, _) = h.upgrade();
    h.ready_slot(2, 0);
    // The second batch's worker crashes before it is ready.
    let fx = h.exit_slot(2, 1, CRASH);
    // The first batch's worker served already: it drains, after the old
    // worker it replaced resumed, and loses nothing it accepted.
    assert!(kills(&fx).is_empty(), "{fx:#?}");
    let resumed = fx.iter().position(
        |e| matches!(e, Effect::Resume { worker, .. } if worker.generation == 1 && worker.slot == 0),
    );
    let drained = fx.iter().position(
        |e| matches!(e, Effect::Drain { worker, .. } if worker.generation == 2 && worker.slot == 0),
    );
    assert!(resumed.is_some() && drained.is_some(), "{fx:#?}");
    assert!(resumed < drained, "{fx:#?}");
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Failed {
            generation: Some(2),
            serving: Some(1),
            ..
        }
    ));
    assert!(spawns(&fx).is_empty(), "{fx:#?}");
    assert_eq!(
        h.worker_states(1),
        vec![(0, "serving"), (1, "serving"), (2, "serving")]
    );
    let now: Vec<Pid> = (0..3).map(|s| h.pid_of(h.ws(1, s))).collect();
    assert_eq!(now, old, "the old pool is the same processes");
    assert_eq!(h.phase(2), Some("draining"));
}

#[test]
fn a_failed_rollout_kills_the_new_workers_still_starting() {
    let mut h = Harness::new(Policy {
        rollout_batch: Some(2),
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.v2_all(1);
    h.upgrade();
    let fx = h.exit_slot(2, 1, CRASH);
    // Slot 0 never became ready: nothing to finish, killed.
    assert_eq!(kills(&fx), vec![2]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::Killed {
            cause: KillCause::FailedStart,
            ..
        })
    )));
    assert!(drains(&fx).iter().all(|d| d.0 != 2), "{fx:#?}");
}

#[test]
fn a_failed_rollout_refills_slots_whose_old_worker_drained() {
    // Old workers that cannot pause drain batch by batch; a failed rollout
    // starts their slots again from the old executable.
    let mut h = Harness::new(Policy {
        rollout_batch: Some(1),
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.upgrade();
    let fx = h.ready_slot(2, 0);
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    let fx = h.exit_slot(2, 1, CRASH);
    assert_eq!(spawned_slots(&fx), vec![(1, 0)]);
    assert_eq!(spawns(&fx)[0].1, Exe::Pinned(PinId(1)));
}

#[test]
fn a_canary_serves_beside_the_old_pool_and_can_be_taken_back() {
    let mut h = Harness::new(Policy {
        canary: Some(Duration::from_secs(10)),
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.v2_all(1);
    let (t, fx) = h.upgrade();
    assert_eq!(spawned_slots(&fx), vec![(2, 0)]);
    let fx = h.ready_slot(2, 0);
    assert!(events(&fx).contains(&"canary_started"));
    // The whole old pool serves on beside it.
    assert_eq!(h.worker_states(1), vec![(0, "serving"), (1, "serving")]);
    assert!(drains(&fx).is_empty());
    h.now += Duration::from_secs(3);
    let fx = h.exit_slot(2, 0, CRASH);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::RolledBack {
            generation: 2,
            lived_ms: 3000,
            serving: Some(1),
            ..
        }
    ));
    assert_eq!(h.worker_states(1), vec![(0, "serving"), (1, "serving")]);
    assert_eq!(h.core.snapshot(h.now).counters.rollbacks, 1);
}

#[test]
fn a_canary_that_passes_lets_the_rest_roll() {
    let mut h = Harness::new(Policy {
        canary: Some(Duration::from_secs(10)),
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.v2_all(1);
    let (t, _) = h.upgrade();
    h.ready_slot(2, 0);
    let fx = h.advance(Duration::from_secs(10));
    assert!(events(&fx).contains(&"canary_passed"));
    assert_eq!(spawned_slots(&fx), vec![(2, 1)]);
    // The canary's old counterpart retires.
    assert_eq!(h.worker_states(1), vec![(0, "paused"), (1, "serving")]);
    let fx = h.ready_slot(2, 1);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
}

#[test]
fn a_crashed_worker_restarts_in_its_slot_while_the_others_serve() {
    let mut h = Harness::new(pool(3));
    h.feed(Input::Start);
    h.ready_all(1);
    let others: Vec<Pid> = [0, 2].iter().map(|s| h.pid_of(h.ws(1, *s))).collect();
    let fx = h.exit_slot(1, 1, ExitInfo::killed(9));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::SlotRestartScheduled {
            generation: 1,
            slot: 1,
            delay_ms: 100,
            ..
        })
    )));
    assert_eq!(h.phase(1), Some("serving"));
    let fx = h.advance(Duration::from_millis(100));
    // Same generation, same executable.
    assert_eq!(spawned_slots(&fx), vec![(1, 1)]);
    assert_eq!(spawns(&fx)[0].1, Exe::Pinned(PinId(1)));
    h.ready_slot(1, 1);
    assert_eq!(
        h.worker_states(1),
        vec![(0, "serving"), (1, "serving"), (2, "serving")]
    );
    let now: Vec<Pid> = [0, 2].iter().map(|s| h.pid_of(h.ws(1, *s))).collect();
    assert_eq!(now, others);
    // Its backoff is its own: a second crash waits twice as long, the
    // generation's backoff is untouched.
    let fx = h.exit_slot(1, 1, CRASH);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Event::SlotRestartScheduled { delay_ms: 200, .. })
    )));
    assert!(restart_delay(&fx).is_none());
    assert_eq!(h.core.snapshot(h.now).counters.worker_restarts, 1);
}

#[test]
fn a_pool_whose_every_worker_died_restarts_as_a_new_generation() {
    let mut h = Harness::new(pool(2));
    h.feed(Input::Start);
    h.ready_all(1);
    h.exit_slot(1, 0, CRASH);
    let fx = h.exit_slot(1, 1, CRASH);
    assert_eq!(restart_delay(&fx), Some(100));
    let fx = h.advance(Duration::from_millis(100));
    assert_eq!(spawned_slots(&fx), vec![(2, 0), (2, 1)]);
}

#[test]
fn scaling_adds_and_drains_workers() {
    let mut h = Harness::new(pool(2));
    h.feed(Input::Start);
    h.ready_all(1);
    let t = h.ticket();
    let fx = h.feed(Input::Scale {
        workers: 4,
        reply: Some(t),
    });
    assert_eq!(spawned_slots(&fx), vec![(1, 2), (1, 3)]);
    assert_eq!(answer_for(&fx, t), Some(&Answer::Scaled { from: 2, to: 4 }));
    h.ready_slot(1, 2);
    h.ready_slot(1, 3);
    let fx = h.feed(Input::Scale {
        workers: 1,
        reply: None,
    });
    let mut drained: Vec<u32> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Drain { worker, .. } => Some(worker.slot),
            _ => None,
        })
        .collect();
    drained.sort();
    assert_eq!(drained, vec![1, 2, 3]);
    // A drained worker's exit is not a crash.
    let fx = h.exit_slot(1, 3, CLEAN);
    assert!(events(&fx).contains(&"drained"));
    assert!(!events(&fx).contains(&"slot_restart_scheduled"));
    // Upgrades start the new size.
    let (_, fx) = h.upgrade();
    assert_eq!(spawned_slots(&fx), vec![(2, 0)]);
    // Not during an upgrade.
    let t = h.ticket();
    let fx = h.feed(Input::Scale {
        workers: 3,
        reply: Some(t),
    });
    assert!(matches!(answer_for(&fx, t), Some(Answer::Error(_))));
}

#[test]
fn an_old_worker_is_replaced_before_it_goes() {
    let mut h = Harness::new(Policy {
        max_worker_age: Some(Duration::from_secs(100)),
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    let old = h.ws(1, 0);
    // By RSS: the shell asks.
    let fx = h.feed(Input::Recycle {
        worker: old,
        why: "RSS 600 MiB over 512 MiB".into(),
    });
    assert_eq!(spawned_slots(&fx), vec![(1, 0)]);
    assert!(drains(&fx).is_empty(), "the old one serves until then");
    let replacement = fx
        .iter()
        .find_map(|e| match e {
            Effect::Spawn { worker, .. } => Some(*worker),
            _ => None,
        })
        .unwrap();
    let fx = h.feed(Input::Worker {
        worker: replacement,
        event: WorkerEvent::Ready(ReadyVia::Channel),
    });
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Drain { worker, .. } if *worker == old))
    );
    // By age: within a tenth more than the age, every worker is replaced.
    let fx = h.advance(Duration::from_secs(111));
    assert!(events(&fx).iter().filter(|e| **e == "recycling").count() >= 1);
    assert!(h.core.snapshot(h.now).counters.recycled >= 1);
}

#[test]
fn signals_go_to_every_worker_or_one_slot() {
    let mut h = Harness::new(pool(3));
    h.feed(Input::Start);
    h.ready_all(1);
    let fx = h.feed(Input::Forward {
        signal: SIGUSR1,
        slot: None,
        reply: None,
    });
    let targets: Vec<u32> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { worker, .. } => Some(worker.slot),
            _ => None,
        })
        .collect();
    assert_eq!(targets, vec![0, 1, 2]);
    let t = h.ticket();
    let fx = h.feed(Input::Forward {
        signal: SIGUSR1,
        slot: Some(1),
        reply: Some(t),
    });
    let targets: Vec<(u32, Option<Ticket>)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { worker, reply, .. } => Some((worker.slot, *reply)),
            _ => None,
        })
        .collect();
    assert_eq!(targets, vec![(1, Some(t))]);
}

#[test]
fn shutdown_drains_every_worker_at_once() {
    let mut h = Harness::new(pool(3));
    h.feed(Input::Start);
    h.ready_all(1);
    let fx = h.term();
    assert_eq!(drains(&fx).len(), 3);
    for s in 0..2 {
        let fx = h.exit_slot(1, s, CLEAN);
        assert!(exit_code(&fx).is_none());
    }
    let fx = h.exit_slot(1, 2, CLEAN);
    assert_eq!(exit_code(&fx), Some(0));
}

#[test]
fn a_batch_whose_first_spawn_failed_is_cancelled() {
    let mut h = Harness::new(pool(3));
    h.fail_spawns = 1;
    let fx = h.feed(Input::Start);
    // The harness plays a shell that asks before each spawn.
    let _ = fx;
    assert!(h.core.live_workers().is_empty());
    assert!(events(&h.log).contains(&"start_failed"));
}

// ----- the readiness rule -----

#[test]
fn ready_settle_waits_after_the_signal() {
    let mut h = Harness::serving(Policy {
        ready_settle: Some(Duration::from_millis(300)),
        ..policy()
    });
    let (t, _) = h.upgrade();
    let fx = h.ready(2);
    assert!(!events(&fx).contains(&"ready"));
    assert!(drains(&fx).is_empty());
    let fx = h.advance(Duration::from_millis(299));
    assert!(events(&fx).is_empty());
    let fx = h.advance(Duration::from_millis(1));
    assert!(events(&fx).contains(&"ready"));
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    // A repeated READY during the settle time changes nothing.
    let mut h = Harness::serving(Policy {
        ready_settle: Some(Duration::from_millis(300)),
        ..policy()
    });
    h.upgrade();
    h.ready(2);
    h.advance(Duration::from_millis(200));
    h.ready(2);
    let fx = h.advance(Duration::from_millis(100));
    assert!(events(&fx).contains(&"ready"));
}

#[test]
fn ready_probe_runs_after_the_signal_until_it_succeeds() {
    let mut h = Harness::serving(Policy {
        ready_settle: Some(Duration::from_millis(100)),
        ready_probe: true,
        ..policy()
    });
    let (t, _) = h.upgrade();
    let fx = h.ready(2);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Probe { .. })));
    // Signal, then settle, then the probe.
    let fx = h.advance(Duration::from_millis(100));
    let w = h.w(2);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Probe { worker, .. } if *worker == w))
    );
    let fx = h.feed(Input::ProbeDone {
        worker: w,
        ok: false,
        detail: "exit 7".into(),
    });
    assert!(events(&fx).contains(&"probe_failed"));
    assert_eq!(h.phase(2), Some("starting"));
    // Retried.
    let fx = h.advance(PROBE_RETRY);
    assert!(fx.iter().any(|e| matches!(e, Effect::Probe { .. })));
    let fx = h.feed(Input::ProbeDone {
        worker: w,
        ok: true,
        detail: String::new(),
    });
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
}

#[test]
fn a_probe_that_never_succeeds_fails_the_upgrade_with_its_last_answer() {
    let mut h = Harness::serving(Policy {
        ready_probe: true,
        ready_timeout: Duration::from_secs(1),
        ..policy()
    });
    let (t, fx) = h.upgrade();
    let _ = fx;
    let fx = h.ready(2);
    let w = h.w(2);
    assert!(fx.iter().any(|e| matches!(e, Effect::Probe { .. })));
    h.feed(Input::ProbeDone {
        worker: w,
        ok: false,
        detail: "HTTP 503".into(),
    });
    let fx = h.advance(Duration::from_secs(1));
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Failed {
            failure: FailureReason::ProbeFailed { .. },
            ..
        }
    ));
    // A probe answer after that counts for nothing.
    let fx = h.feed(Input::ProbeDone {
        worker: w,
        ok: true,
        detail: String::new(),
    });
    assert!(!events(&fx).contains(&"ready"));
}

// ----- export and import (`hotsup upgrade --self`) -----

impl Harness {
    /// A harness in the same place whose core went through export, JSON
    /// and import, as across a self-upgrade's exec.
    fn twin(&self) -> Harness {
        let image = self.core.export(self.now);
        let json = serde_json::to_string(&image).expect("serialize the image");
        let back: CoreImage = serde_json::from_str(&json).expect("parse the image");
        assert_eq!(back, image, "the image changed through JSON");
        let core = Core::import(self.core.policy.clone(), &back, self.now).expect("import");
        // Lossless: exporting the imported core gives the same image.
        assert_eq!(core.export(self.now), image);
        Harness {
            core,
            now: self.now,
            next_pid: self.next_pid,
            fail_spawns: self.fail_spawns,
            log: Vec::new(),
            exes: self.exes.clone(),
            next_ticket: self.next_ticket,
        }
    }
}

/// Plays the same inputs on `h` and on its twin through export and import:
/// every effect, and the state after, must be the same.
fn same_after_import(h: &mut Harness, steps: impl Fn(&mut Harness) -> Vec<Effect>) {
    let mut twin = h.twin();
    assert_eq!(twin.core.next_deadline(), h.core.next_deadline());
    assert_eq!(twin.core.busy_for_handover(), h.core.busy_for_handover());
    let want = steps(h);
    let got = steps(&mut twin);
    assert!(!want.is_empty(), "the steps did nothing");
    assert_eq!(got, want);
    assert_eq!(twin.core.export(twin.now), h.core.export(h.now));
}

#[test]
fn a_worker_mid_drain_carries_on_after_import() {
    let mut h = Harness::serving(policy());
    h.upgrade();
    h.ready(2);
    assert_eq!(h.phase(1), Some("draining"));
    assert_eq!(h.core.busy_for_handover(), None);
    // The drain deadline falls due while the new binary starts, then the
    // old generation is reaped.
    same_after_import(&mut h, |h| {
        let mut fx = h.advance(Duration::from_secs(31));
        fx.extend(h.exit(1, ExitInfo::killed(9)));
        fx
    });
    assert_eq!(h.phase(1), None);
}

#[test]
fn probation_with_a_paused_standby_carries_on_after_import() {
    let mut h = Harness::serving(probation());
    h.v2(1);
    h.upgrade();
    h.ready(2);
    assert_eq!(h.phase(1), Some("standby"));
    assert_eq!(h.core.busy_for_handover(), Some(Busy::Probation(2)));
    // A crash on probation resumes the paused standby...
    same_after_import(&mut h, |h| {
        h.now += Duration::from_millis(700);
        h.exit(2, ExitInfo::exited(4))
    });
    assert_eq!(h.phase(1), Some("serving"));

    // ...and probation that passes drains it.
    let mut h = Harness::serving(probation());
    h.v2(1);
    h.upgrade();
    h.ready(2);
    same_after_import(&mut h, |h| h.advance(Duration::from_secs(5)));
}

#[test]
fn a_pending_backoff_carries_on_after_import() {
    let mut h = Harness::serving(policy());
    let fx = h.exit(1, CRASH);
    assert_eq!(restart_delay(&fx), Some(100));
    assert_eq!(h.core.busy_for_handover(), None);
    same_after_import(&mut h, |h| {
        let mut fx = h.advance(Duration::from_millis(100));
        fx.extend(h.ready(2));
        fx
    });
}

#[test]
fn pools_canaries_and_settling_carry_on_after_import() {
    let mut h = Harness::new(Policy {
        canary: Some(Duration::from_secs(3)),
        rollout_batch: Some(1),
        ready_settle: Some(Duration::from_millis(200)),
        max_worker_age: Some(Duration::from_secs(600)),
        ..pool(3)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.phase(1), Some("serving"));
    h.upgrade();
    // The canary is settling.
    let canary = h.ws(2, 0);
    h.feed(Input::Worker {
        worker: canary,
        event: WorkerEvent::Ready(ReadyVia::Notify),
    });
    assert!(matches!(
        h.core.busy_for_handover(),
        Some(Busy::Upgrading(2))
    ));
    same_after_import(&mut h, |h| {
        let mut fx = h.advance(Duration::from_millis(200));
        fx.extend(h.advance(Duration::from_secs(3)));
        fx
    });
    // A slot restart of a serving pool.
    let mut h = Harness::new(pool(2));
    h.feed(Input::Start);
    h.ready_all(1);
    let w = h.ws(1, 1);
    let pid = h.pid_of(w);
    h.feed(Input::Exited { pid, status: CRASH });
    assert_eq!(h.core.busy_for_handover(), None);
    same_after_import(&mut h, |h| h.until_deadline());
    assert!(matches!(
        h.core.busy_for_handover(),
        Some(Busy::WorkerStarting {
            generation: 1,
            slot: 1
        })
    ));
}

#[test]
fn a_shutting_down_core_is_busy_and_inconsistent_images_are_refused() {
    let mut h = Harness::serving(policy());
    h.term();
    assert_eq!(h.core.busy_for_handover(), Some(Busy::ShuttingDown));
    same_after_import(&mut h, |h| h.exit(1, CLEAN));

    let h = Harness::serving(policy());
    let good = h.core.export(h.now);
    let import = |image: &CoreImage| Core::import(policy(), image, h.now);
    assert!(import(&good).is_ok());
    let mut bad = good.clone();
    bad.next_generation = 1;
    assert!(import(&bad).is_err());
    let mut bad = good.clone();
    bad.pins.clear();
    assert!(import(&bad).is_err());
    let mut bad = good.clone();
    bad.generations[0].workers[0].id.generation = 7;
    assert!(import(&bad).is_err());
    let mut bad = good.clone();
    bad.generations[0].workers[0].pid = Some(0);
    assert!(import(&bad).is_err());
    // A field this version does not know is refused, not dropped.
    let mut json: serde_json::Value = serde_json::to_value(&good).unwrap();
    json["generations"][0]["quota"] = serde_json::json!(3);
    assert!(serde_json::from_value::<CoreImage>(json).is_err());
}

/// A config file read at an upgrade: the new rules hold from the upgrade
/// on, for the old generation's drain as for the new generation's size.
#[test]
fn a_new_policy_applies_from_the_upgrade_on() {
    let mut h = Harness::serving(policy());
    h.worker(1, WorkerEvent::Protocol(1));
    h.core.set_policy(Policy {
        drain_timeout: Duration::from_secs(5),
        workers: 2,
        ..policy()
    });
    // Nothing happens to the serving generation until the upgrade.
    assert_eq!(h.phase(1), Some("serving"));
    let (_, fx) = h.upgrade();
    assert_eq!(spawned_slots(&fx), vec![(2, 0), (2, 1)]);
    h.ready_slot(2, 0);
    let fx = h.ready_slot(2, 1);
    assert_eq!(
        drains(&fx),
        vec![(
            1,
            DrainVia::Channel {
                timeout: Duration::from_secs(5),
                fallback: SIGTERM
            }
        )]
    );
}

/// `hotsup scale` is the operator's word: a policy whose `workers` did not
/// change leaves it in place; one whose `workers` changed replaces it.
#[test]
fn a_new_policy_keeps_a_scale_unless_its_workers_changed() {
    let mut h = Harness::serving(policy());
    h.feed(Input::Scale {
        workers: 3,
        reply: None,
    });
    h.ready_slot(1, 1);
    h.ready_slot(1, 2);
    h.core.set_policy(Policy {
        drain_timeout: Duration::from_secs(5),
        ..policy()
    });
    let (_, fx) = h.upgrade();
    assert_eq!(spawned_slots(&fx), vec![(2, 0), (2, 1), (2, 2)]);
    for slot in 0..3 {
        h.ready_slot(2, slot);
    }
    h.core.set_policy(Policy {
        workers: 2,
        ..policy()
    });
    let (_, fx) = h.upgrade();
    assert_eq!(spawned_slots(&fx), vec![(3, 0), (3, 1)]);
}

// ----- --check and --after-upgrade -----

fn checked() -> Policy {
    Policy {
        check: true,
        ..policy()
    }
}

fn checks(fx: &[Effect]) -> Vec<GenId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Check { generation } => Some(*generation),
            _ => None,
        })
        .collect()
}

fn after_upgrades(fx: &[Effect]) -> Vec<(GenId, Vec<Pid>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::AfterUpgrade { generation, pids } => Some((*generation, pids.clone())),
            _ => None,
        })
        .collect()
}

impl Harness {
    fn check_done(&mut self, generation: GenId, ok: bool) -> Vec<Effect> {
        self.feed(Input::CheckDone {
            generation,
            ok,
            detail: if ok {
                String::new()
            } else {
                "exit status: 1: nginx: [emerg] bad".into()
            },
        })
    }
}

#[test]
fn the_first_start_and_crash_restarts_are_not_checked() {
    let mut h = Harness::new(checked());
    let fx = h.feed(Input::Start);
    assert!(checks(&fx).is_empty());
    assert_eq!(spawns(&fx), vec![(1, Exe::Fresh(PinId(1)))]);
    h.ready(1);
    h.exit(1, CRASH);
    let fx = h.until_deadline();
    assert!(checks(&fx).is_empty());
    assert_eq!(spawns(&fx), vec![(2, Exe::Pinned(PinId(1)))]);
}

#[test]
fn an_upgrade_runs_the_check_first_and_spawns_once_it_passed() {
    let mut h = Harness::serving(checked());
    let (t, fx) = h.upgrade();
    // The check is told the number the new generation will get.
    assert_eq!(checks(&fx), vec![2]);
    assert!(spawns(&fx).is_empty());
    assert_eq!(events(&fx), vec!["upgrade_requested", "check_started"]);
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Reloading]));
    assert_eq!(h.core.snapshot(h.now).checking, Some(2));
    h.advance(Duration::from_secs(2));
    let fx = h.check_done(2, true);
    assert!(events(&fx).contains(&"check_passed"));
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
    assert_eq!(h.core.snapshot(h.now).checking, None);
    let fx = h.ready(2);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
}

#[test]
fn a_failed_check_refuses_the_upgrade_and_the_old_generation_serves_on() {
    let mut h = Harness::serving(checked());
    let (t, _) = h.upgrade();
    let fx = h.check_done(2, false);
    assert!(spawns(&fx).is_empty());
    assert_eq!(events(&fx), vec!["check_failed", "upgrade_failed"]);
    match outcome_for(&fx, t) {
        UpgradeOutcome::Failed {
            generation: None,
            failure: FailureReason::CheckFailed { detail },
            reason,
            serving: Some(1),
        } => {
            assert!(detail.contains("nginx: [emerg] bad"));
            assert!(reason.contains("nginx: [emerg] bad"));
        }
        other => panic!("{other:?}"),
    }
    // The reload is over for the manager too.
    assert!(matches!(manager(&fx)[..], [ManagerMessage::Ready(_)]));
    assert_eq!(h.phase(1), Some("serving"));
    assert!(drains(&fx).is_empty() && kills(&fx).is_empty());
    let snap = h.core.snapshot(h.now);
    assert_eq!(snap.checking, None);
    assert!(!snap.upgrade_pending);
    // The number was not used: the next upgrade checks generation 2 again,
    // and works.
    let (t, fx) = h.upgrade();
    assert_eq!(checks(&fx), vec![2]);
    let fx = h.check_done(2, true);
    // Nor was an executable pinned for the refused upgrade.
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
    let fx = h.ready(2);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn upgrades_during_a_check_are_coalesced_into_one_checked_follow_up() {
    let mut h = Harness::serving(checked());
    let (t1, _) = h.upgrade();
    let (t2, fx2) = h.upgrade();
    let (t3, fx3) = h.upgrade();
    assert!(checks(&fx2).is_empty() && checks(&fx3).is_empty());
    assert_eq!(events(&fx2), vec!["upgrade_queued"]);
    let fx = h.check_done(2, true);
    assert_eq!(spawns(&fx), vec![(2, Exe::Fresh(PinId(2)))]);
    // An upgrade during the attempt that followed joins the same follow-up.
    let (t4, _) = h.upgrade();
    let fx = h.ready(2);
    assert!(matches!(
        outcome_for(&fx, t1),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
    // The follow-up is checked too, for its own number.
    assert_eq!(checks(&fx), vec![3]);
    assert!(spawns(&fx).is_empty());
    let fx = h.check_done(3, false);
    for t in [t2, t3, t4] {
        assert!(matches!(
            outcome_for(&fx, t),
            UpgradeOutcome::Failed {
                failure: FailureReason::CheckFailed { .. },
                serving: Some(2),
                ..
            }
        ));
    }
    // Nothing more follows.
    assert!(checks(&fx).is_empty() && spawns(&fx).is_empty());
    assert_eq!(h.phase(2), Some("serving"));
}

#[test]
fn a_failed_check_with_upgrades_queued_checks_again_for_them() {
    let mut h = Harness::serving(checked());
    let (t1, _) = h.upgrade();
    let (t2, _) = h.upgrade();
    let fx = h.check_done(2, false);
    assert!(matches!(
        outcome_for(&fx, t1),
        UpgradeOutcome::Failed { .. }
    ));
    assert!(answer_for(&fx, t2).is_none());
    // The request that came during the check may carry the fix: it gets a
    // check of its own.
    assert_eq!(checks(&fx), vec![2]);
    let fx = h.check_done(2, true);
    assert_eq!(spawns(&fx).len(), 1);
    let fx = h.ready(2);
    assert!(matches!(
        outcome_for(&fx, t2),
        UpgradeOutcome::Ready { generation: 2, .. }
    ));
}

#[test]
fn a_crash_during_a_check_restarts_at_once_and_the_upgrade_follows_checked_again() {
    let mut h = Harness::serving(checked());
    let (t, _) = h.upgrade();
    // The serving generation crashes while the check runs: the restart does
    // not wait for it.
    h.exit(1, CRASH);
    let fx = h.until_deadline();
    assert_eq!(spawns(&fx), vec![(2, Exe::Pinned(PinId(1)))]);
    // The check passes during the restart: the upgrade queues behind it.
    let fx = h.check_done(2, true);
    assert!(spawns(&fx).is_empty());
    assert!(events(&fx).contains(&"upgrade_queued"));
    let fx = h.ready(2);
    // Checked again, for the number it will now get.
    assert_eq!(checks(&fx), vec![3]);
    let fx = h.check_done(3, true);
    assert_eq!(spawns(&fx).iter().map(|s| s.0).collect::<Vec<_>>(), vec![3]);
    let fx = h.ready(3);
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Ready { generation: 3, .. }
    ));
}

#[test]
fn a_restart_that_served_during_a_check_makes_it_run_again_for_the_new_number() {
    let mut h = Harness::serving(checked());
    h.upgrade();
    h.exit(1, CRASH);
    h.until_deadline();
    h.ready(2);
    // The answer is for generation 2, a number the restart took.
    let fx = h.check_done(2, true);
    assert!(spawns(&fx).is_empty());
    assert_eq!(checks(&fx), vec![3]);
    let fx = h.check_done(3, true);
    assert_eq!(spawns(&fx).iter().map(|s| s.0).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn sigterm_during_a_check_cancels_it_and_answers_its_clients() {
    let mut h = Harness::serving(checked());
    let (t, _) = h.upgrade();
    let fx = h.term();
    assert!(fx.contains(&Effect::CancelCheck { generation: 2 }));
    assert_eq!(outcome_for(&fx, t), &UpgradeOutcome::Superseded);
    // Its late answer starts nothing.
    let fx = h.check_done(2, true);
    assert!(spawns(&fx).is_empty());
    assert!(events(&fx).is_empty());
}

#[test]
fn rollback_is_refused_while_a_check_runs() {
    let mut h = Harness::serving(checked());
    h.upgrade();
    h.check_done(2, true);
    h.ready(2);
    h.upgrade();
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    assert!(matches!(answer_for(&fx, r), Some(Answer::Error(_))));
    assert!(spawns(&fx).is_empty());
}

#[test]
fn a_rollback_is_not_checked() {
    let mut h = Harness::serving(checked());
    h.upgrade();
    h.check_done(2, true);
    h.ready(2);
    let r = h.ticket();
    let fx = h.feed(Input::Rollback { reply: Some(r) });
    assert!(checks(&fx).is_empty());
    assert_eq!(spawns(&fx), vec![(3, Exe::Pinned(PinId(1)))]);
}

#[test]
fn after_upgrade_runs_once_an_upgrade_is_done_and_its_failure_changes_nothing() {
    let policy = Policy {
        after_upgrade: true,
        ..probation()
    };
    // Not after the first start.
    let mut h = Harness::serving(policy);
    assert!(after_upgrades(&h.log).is_empty());
    h.v2(1);
    h.upgrade();
    // Not while on probation.
    let fx = h.ready(2);
    assert!(after_upgrades(&fx).is_empty());
    let fx = h.advance(Duration::from_secs(5));
    let pid = h.pid(2);
    assert_eq!(after_upgrades(&fx), vec![(2, vec![pid])]);
    let before = h.core.snapshot(h.now);
    let fx = h.feed(Input::AfterUpgradeDone {
        generation: 2,
        ok: false,
        detail: "timed out after 60s".into(),
    });
    assert_eq!(events(&fx), vec!["after_upgrade_failed"]);
    assert!(fx.iter().all(|e| matches!(e, Effect::Emit(_))));
    assert_eq!(h.phase(2), Some("serving"));
    assert_eq!(h.core.snapshot(h.now).last_good, before.last_good);
    let fx = h.feed(Input::AfterUpgradeDone {
        generation: 2,
        ok: true,
        detail: String::new(),
    });
    assert_eq!(events(&fx), vec!["after_upgrade_done"]);
}

#[test]
fn after_upgrade_is_not_run_after_a_crash_restart_and_gets_every_pid_of_a_pool() {
    let mut h = Harness::new(Policy {
        after_upgrade: true,
        ..pool(2)
    });
    h.feed(Input::Start);
    h.ready_all(1);
    h.exit_slot(1, 0, CRASH);
    h.exit_slot(1, 1, CRASH);
    let fx = h.until_deadline();
    assert_eq!(spawns(&fx).len(), 2);
    let fx = h.ready_all(2);
    assert!(events(&fx).contains(&"ready"));
    assert!(after_upgrades(&fx).is_empty());
    h.upgrade();
    let fx = h.ready_all(3);
    let pids = vec![h.pid_of(h.ws(3, 0)), h.pid_of(h.ws(3, 1))];
    assert_eq!(after_upgrades(&fx), vec![(3, pids)]);
}

#[test]
fn a_worker_that_signalled_but_failed_its_probe_is_drained_not_killed() {
    let mut h = Harness::serving(Policy {
        ready_probe: true,
        ready_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(7),
        ..policy()
    });
    let (t, _) = h.upgrade();
    h.ready(2);
    let w = h.w(2);
    h.feed(Input::ProbeDone {
        worker: w,
        ok: false,
        detail: "HTTP 503".into(),
    });
    let fx = h.advance(Duration::from_secs(1));
    assert!(matches!(
        outcome_for(&fx, t),
        UpgradeOutcome::Failed {
            failure: FailureReason::ProbeFailed { .. },
            serving: Some(1),
            ..
        }
    ));
    // It said READY: it may hold connections it accepted. Drained with the
    // drain timeout, as a generation that served.
    assert!(kills(&fx).is_empty(), "{fx:#?}");
    assert_eq!(drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(h.phase(1), Some("serving"));
    // Killed only at the drain deadline.
    let fx = h.advance(Duration::from_secs(7));
    assert_eq!(kills(&fx), vec![2]);
    h.exit(2, CLEAN);
    assert_eq!(h.core.live_workers().len(), 1);
}

/// A worker in its settle time said it was ready and may already accept:
/// a shutdown drains it rather than killing what it accepted.
#[test]
fn a_shutdown_drains_a_worker_in_its_settle_time() {
    let mut h = Harness::new(Policy {
        ready_settle: Some(Duration::from_secs(5)),
        ..policy()
    });
    h.feed(Input::Start);
    h.ready(1);
    assert_eq!(h.phase(1), Some("starting"));
    let fx = h.term();
    assert!(kills(&fx).is_empty(), "{fx:#?}");
    assert_eq!(
        drains(&fx).iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![1],
        "{fx:#?}"
    );
}
