use std::time::{Duration, Instant};

use mesh_core::health::{HealthCheck, Probe};

use super::*;
use crate::{Launch, RestartPolicy};

const CRASH: Exit = Exit::status(1);
const CLEAN: Exit = Exit::status(0);

fn spec() -> ServiceSpec {
    ServiceSpec::new("api", Some(Launch::Shell("true".into())), "/")
}

/// A machine and a clock that advances one second per input.
struct Run {
    machine: Machine,
    now: Instant,
}

impl Run {
    fn new(spec: &ServiceSpec) -> Self {
        let now = Instant::now();
        Self {
            machine: Machine::new(spec, now),
            now,
        }
    }

    fn feed(&mut self, input: Input<'_>) -> Vec<Action> {
        self.now += Duration::from_secs(1);
        self.machine.handle(input, self.now)
    }

    fn state(&self) -> State {
        self.machine.state()
    }

    fn start(&mut self) {
        assert_eq!(self.feed(Input::DependenciesMet), [Action::Spawn]);
        assert_eq!(self.state(), State::Starting);
    }

    fn exit(&mut self, exit: Exit) -> Vec<Action> {
        self.feed(Input::Exited {
            exit,
            last_lines: vec!["boom".into()],
        })
    }
}

#[test]
fn without_a_readiness_gate_it_is_ready_once_spawned() {
    let mut r = Run::new(&spec());
    assert_eq!(r.state(), State::Pending);
    r.start();
    assert_eq!(r.feed(Input::Spawned { pid: 42 }), [Action::Share]);
    assert_eq!((r.state(), r.machine.pid()), (State::Ready, Some(42)));
    assert!(r.machine.started().is_some());
}

#[test]
fn ready_log_line_makes_it_ready() {
    let mut s = spec();
    s.ready_log_line = Some("listening on".into());
    let mut r = Run::new(&s);
    r.start();
    assert!(r.feed(Input::Spawned { pid: 1 }).is_empty());
    assert!(r.feed(Input::Line("booting")).is_empty());
    assert_eq!(r.state(), State::Starting);
    assert_eq!(
        r.feed(Input::Line("api listening on :3000")),
        [Action::Share]
    );
    assert_eq!(r.state(), State::Ready);
    // A second match changes nothing.
    assert!(r.feed(Input::Line("listening on")).is_empty());
}

#[test]
fn health_gates_readiness_and_turns_it_unhealthy_and_back() {
    let mut s = spec();
    s.health = Some(HealthCheck::new(Probe::Tcp));
    let mut r = Run::new(&s);
    r.start();
    assert!(r.feed(Input::Spawned { pid: 1 }).is_empty());
    assert!(r.feed(Input::Health { healthy: false }).is_empty());
    assert_eq!(r.state(), State::Starting);
    assert_eq!(r.feed(Input::Health { healthy: true }), [Action::Share]);
    assert_eq!(r.feed(Input::Health { healthy: false }), [Action::Withdraw]);
    assert_eq!(r.state(), State::Unhealthy);
    assert_eq!(r.feed(Input::Health { healthy: true }), [Action::Share]);
    assert_eq!(r.state(), State::Ready);
}

#[test]
fn a_crash_is_restarted_with_back_off_then_fails_at_max_restarts() {
    let mut s = spec();
    s.restart = RestartPolicy::OnFailure;
    s.max_restarts = Some(1);
    let mut r = Run::new(&s);
    r.start();
    r.feed(Input::Spawned { pid: 1 });
    assert_eq!(
        r.exit(CRASH),
        [
            Action::Withdraw,
            Action::ScheduleRestart {
                delay: Duration::from_secs(1)
            }
        ]
    );
    assert_eq!((r.state(), r.machine.restarts()), (State::Restarting, 1));
    assert_eq!(r.feed(Input::RestartDue), [Action::Spawn]);
    assert_eq!(r.state(), State::Starting);
    r.feed(Input::Spawned { pid: 2 });
    assert_eq!(r.exit(CRASH), [Action::Withdraw]);
    assert_eq!(r.state(), State::Failed);
    let failure = r.machine.failure().unwrap().to_string();
    assert_eq!(
        failure,
        "gave up after 1 restarts in a row: exited with status 1; last output:\n  boom"
    );
    assert_eq!(r.machine.pid(), None);
}

#[test]
fn without_restart_an_exit_stays_exited() {
    let mut r = Run::new(&spec());
    r.start();
    r.feed(Input::Spawned { pid: 1 });
    assert_eq!(r.exit(CLEAN), [Action::Withdraw]);
    assert_eq!(r.state(), State::Exited);
    assert!(r.machine.completed());
    assert_eq!(r.machine.last_exit(), Some(CLEAN));
    // A late timer of an earlier run does nothing.
    assert!(r.feed(Input::RestartDue).is_empty());
}

#[test]
fn stop_signals_once_then_exits_without_restart() {
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    let mut r = Run::new(&s);
    r.start();
    r.feed(Input::Spawned { pid: 1 });
    assert_eq!(r.feed(Input::Stop), [Action::Withdraw, Action::Stop]);
    assert!(r.feed(Input::Stop).is_empty(), "stop is sent once");
    let killed = Exit {
        code: None,
        signal: Some(15),
    };
    assert!(r.exit(killed).is_empty());
    assert_eq!(r.state(), State::Exited);
}

#[test]
fn stop_while_waiting_needs_no_process() {
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    let mut r = Run::new(&s);
    assert!(r.feed(Input::Stop).is_empty());
    assert_eq!(r.state(), State::Exited);

    let mut r = Run::new(&s);
    r.start();
    r.feed(Input::Spawned { pid: 1 });
    r.exit(CLEAN);
    assert_eq!(r.state(), State::Restarting);
    assert!(r.feed(Input::Stop).is_empty());
    assert_eq!(r.state(), State::Exited);
    assert!(r.feed(Input::RestartDue).is_empty(), "the timer is stale");
}

#[test]
fn spawn_failure_and_missing_launch_fail() {
    let mut r = Run::new(&spec());
    r.start();
    r.feed(Input::SpawnFailed(Arc::new(SpawnError::NoCommand)));
    assert_eq!(r.state(), State::Failed);
    assert_eq!(
        r.machine.failure().unwrap().reason(),
        "it has no `command` or `run` to start it with"
    );

    let mut r = Run::new(&ServiceSpec::new("auth", None, "/"));
    assert!(r.feed(Input::DependenciesMet).is_empty());
    assert_eq!(r.state(), State::Failed);
    assert!(matches!(r.machine.failure(), Some(Failure::NoProvider)));
}

#[test]
fn a_provider_makes_it_remote_and_its_loss_starts_it_here() {
    let mut r = Run::new(&spec());
    r.feed(Input::Provider(Some("peer-a".into())));
    assert_eq!(
        (r.state(), r.machine.provider()),
        (State::Remote, Some("peer-a"))
    );
    r.feed(Input::Provider(Some("peer-b".into())));
    assert_eq!(r.machine.provider(), Some("peer-b"));
    r.feed(Input::Provider(None));
    assert_eq!((r.state(), r.machine.provider()), (State::Pending, None));
    r.start();

    let mut r = Run::new(&ServiceSpec::new("auth", None, "/"));
    r.feed(Input::Provider(Some("peer-a".into())));
    r.feed(Input::Provider(None));
    assert_eq!(r.state(), State::Failed);
}

#[test]
fn a_failed_dependency_fails_a_waiting_dependent() {
    let mut r = Run::new(&spec());
    r.feed(Input::DependencyFailed {
        dependency: "db".into(),
        blocked: Blocked::Failed(Box::new(Failure::NoProvider)),
    });
    assert_eq!(r.state(), State::Failed);
    assert_eq!(
        r.machine.failure().unwrap().to_string(),
        "dependency `db` failed: no teammate provides it and it has no `command` or `run` to start it here"
    );
}

/// A dependency machine brought to `state` through its inputs.
fn dependency(steps: &[Input<'static>]) -> Machine {
    let mut s = spec();
    s.ready_log_line = Some("ready".into());
    let mut r = Run::new(&s);
    for step in steps {
        r.feed(step.clone());
    }
    r.machine
}

#[test]
fn evaluate_checks_each_condition() {
    use Condition::*;
    let pending = dependency(&[]);
    let starting = dependency(&[Input::DependenciesMet, Input::Spawned { pid: 1 }]);
    let ready = dependency(&[
        Input::DependenciesMet,
        Input::Spawned { pid: 1 },
        Input::Line("ready"),
    ]);
    let exit = |exit| Input::Exited {
        exit,
        last_lines: Vec::new(),
    };
    let done = dependency(&[
        Input::DependenciesMet,
        Input::Spawned { pid: 1 },
        exit(CLEAN),
    ]);
    let crashed = dependency(&[
        Input::DependenciesMet,
        Input::Spawned { pid: 1 },
        exit(CRASH),
    ]);
    let stopped = dependency(&[Input::Stop]);
    let remote = dependency(&[Input::Provider(Some("peer".into()))]);
    let verdict = |machine: &Machine, condition| {
        let deps = [("db".to_owned(), condition)];
        match evaluate(&deps, |_| Some(machine)) {
            Verdict::Go => "go".to_owned(),
            Verdict::Wait => "wait".to_owned(),
            Verdict::Blocked {
                dependency,
                blocked,
            } => format!("dependency `{dependency}` {blocked}"),
        }
    };
    let table = [
        (&pending, Started, "wait"),
        (&starting, Started, "go"),
        (&remote, Started, "go"),
        (
            &stopped,
            Started,
            "dependency `db` was stopped before it was started",
        ),
        (&starting, Healthy, "wait"),
        (&ready, Healthy, "go"),
        (&remote, Healthy, "go"),
        (
            &crashed,
            Healthy,
            "dependency `db` exited with status 1 before it was healthy",
        ),
        (&ready, CompletedSuccessfully, "wait"),
        (&done, CompletedSuccessfully, "go"),
        (
            &crashed,
            CompletedSuccessfully,
            "dependency `db` exited with status 1 before it was completed successfully",
        ),
        (
            &remote,
            CompletedSuccessfully,
            "dependency `db` runs on a teammate's node and never completes here",
        ),
    ];
    for (machine, condition, want) in table {
        assert_eq!(
            verdict(machine, condition),
            want,
            "{:?} {condition:?}",
            machine.state()
        );
    }
    // Waiting on one dependency and blocked on another: blocked wins.
    let deps = [("a".to_owned(), Healthy), ("b".to_owned(), Healthy)];
    let lookup = |name: &str| Some(if name == "a" { &starting } else { &crashed });
    assert!(
        matches!(evaluate(&deps, lookup), Verdict::Blocked { dependency, .. } if dependency == "b")
    );
    assert!(matches!(evaluate(&deps, |_| None), Verdict::Wait));
    assert!(matches!(evaluate(&[], |_| None), Verdict::Go));
}
