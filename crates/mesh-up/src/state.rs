//! The state machine of one supervised service (pure).
//!
//! [`Machine::handle`] takes what happened ([`Input`]) and returns what the
//! supervisor must do ([`Action`]); it never touches a process. Whether a
//! waiting service may start is [`evaluate`], from the states of its
//! dependencies.

use std::{fmt, sync::Arc, time::Duration, time::Instant};

use crate::{Condition, Decision, Exit, Launch, Restarts, ServiceSpec, SpawnError};

/// The state `devmesh ps` shows for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Waiting for its dependencies.
    Pending,
    /// Its process runs but is not ready yet.
    Starting,
    /// Running and ready; shared with the mesh when it has a port.
    Ready,
    /// Running, but its health check fails; not shared.
    Unhealthy,
    /// It ended and waits for its restart.
    Restarting,
    /// It ended (or was stopped) and is not restarted.
    Exited,
    /// It cannot run: see its [`Failure`].
    Failed,
    /// A teammate's node provides it; nothing runs here.
    Remote,
}

impl State {
    /// The name `devmesh ps` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Unhealthy => "unhealthy",
            State::Restarting => "restarting",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Remote => "remote",
        }
    }

    /// Its process runs (or is being stopped).
    pub fn is_running(self) -> bool {
        matches!(self, State::Starting | State::Ready | State::Unhealthy)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a service is `failed`, as `devmesh ps` and `devmesh up` say it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Its process could not be started.
    #[error(transparent)]
    Spawn(Arc<SpawnError>),
    /// It kept crashing: `max_restarts` restarts in a row did not help.
    #[error("{}", crash_loop(*restarts, *exit, last_lines))]
    CrashLoop {
        /// Restarts made in a row.
        restarts: u32,
        /// How its last run ended.
        exit: Exit,
        /// The last lines of its output.
        last_lines: Vec<String>,
    },
    /// A dependency will never meet its condition.
    #[error("dependency `{dependency}` {blocked}")]
    Dependency {
        /// The dependency.
        dependency: String,
        /// What happened to it.
        blocked: Blocked,
    },
    /// Nothing can start it here (no `command` or `run`) and no teammate
    /// provides it.
    #[error("no teammate provides it and it has no `command` or `run` to start it here")]
    NoProvider,
}

impl Failure {
    /// The whole reason on one line, each cause after `: `, as `devmesh ps`
    /// shows it: `cannot start `sh` in /p/web: No such file or directory (os
    /// error 2)`.
    pub fn reason(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

fn crash_loop(restarts: u32, exit: Exit, last_lines: &[String]) -> String {
    let mut text = format!("gave up after {restarts} restarts in a row: exited with {exit}");
    if !last_lines.is_empty() {
        text.push_str("; last output:");
        for line in last_lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}

/// Why a dependency can no longer meet a dependent's condition.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Blocked {
    /// It failed.
    #[error("failed: {}", .0.reason())]
    Failed(Box<Failure>),
    /// It ended without meeting the condition.
    #[error("exited with {exit} before it was {}", wanted_text(*wanted))]
    Exited {
        /// How it ended.
        exit: Exit,
        /// The condition it did not meet.
        wanted: Condition,
    },
    /// It was stopped before it met the condition.
    #[error("was stopped before it was {}", wanted_text(*wanted))]
    Stopped {
        /// The condition it did not meet.
        wanted: Condition,
    },
    /// It runs on a teammate's node, where it never completes for us.
    #[error("runs on a teammate's node and never completes here")]
    Remote,
}

fn wanted_text(condition: Condition) -> &'static str {
    match condition {
        Condition::Healthy => "healthy",
        Condition::CompletedSuccessfully => "completed successfully",
        _ => "started",
    }
}

/// What happened to a service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input<'a> {
    /// Its dependencies meet their conditions: start it.
    DependenciesMet,
    /// A dependency can never meet its condition.
    DependencyFailed {
        /// The dependency.
        dependency: String,
        /// Why.
        blocked: Blocked,
    },
    /// A teammate's node provides it (or, for one already remote, another
    /// one does now); `None` when no peer does any more.
    Provider(Option<String>),
    /// Its process started.
    Spawned {
        /// The process id, also its process group.
        pid: u32,
    },
    /// Its process could not be started.
    SpawnFailed(Arc<SpawnError>),
    /// A line of its output.
    Line(&'a str),
    /// Its health check flipped.
    Health {
        /// Passing now.
        healthy: bool,
    },
    /// Its process ended.
    Exited {
        /// How.
        exit: Exit,
        /// The last lines of its output, for a crash loop's failure.
        last_lines: Vec<String>,
    },
    /// Stop it (`devmesh down`, Ctrl-C, a reload).
    Stop,
    /// Its restart delay is over.
    RestartDue,
}

/// What the supervisor must do for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Start its process.
    Spawn,
    /// Send its stop signal to its process group, SIGKILL after its
    /// `stop_timeout`.
    Stop,
    /// Feed it [`Input::RestartDue`] after `delay`.
    ScheduleRestart {
        /// The back-off delay.
        delay: Duration,
    },
    /// It is ready: share it with the mesh (when it has a port).
    Share,
    /// It is no longer ready: withdraw it from the mesh.
    Withdraw,
}

/// One service's supervision state.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    since: Instant,
    started: Option<Instant>,
    pid: Option<u32>,
    provider: Option<String>,
    failure: Option<Failure>,
    last_exit: Option<Exit>,
    completed: bool,
    shared: bool,
    stopping: bool,
    ready_line: Option<String>,
    health_gate: bool,
    launchable: bool,
    restarts: Restarts,
}

impl Machine {
    /// A `pending` service described by `spec`.
    pub fn new(spec: &ServiceSpec, now: Instant) -> Self {
        Self {
            state: State::Pending,
            since: now,
            started: None,
            pid: None,
            provider: None,
            failure: None,
            last_exit: None,
            completed: false,
            shared: false,
            stopping: false,
            ready_line: spec.ready_log_line.clone(),
            health_gate: spec.ready_log_line.is_none()
                && (spec.health.is_some()
                    || matches!(&spec.launch, Some(Launch::Container(c)) if c.has_healthcheck())),
            launchable: spec.launch.is_some(),
            restarts: Restarts::new(spec.restart, spec.max_restarts, spec.backoff),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// When the running process started.
    pub fn started(&self) -> Option<Instant> {
        self.started.filter(|_| self.state.is_running())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The teammate's peer id while `remote`.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// Why it is `failed`.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// How its latest run ended.
    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts.total()
    }

    /// It has exited with status 0 since it was started.
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// Its process runs or it waits for a restart: stopping it takes an
    /// action.
    pub fn is_active(&self) -> bool {
        self.state.is_running()
    }

    /// Takes `input`, returns what to do.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) -> Vec<Action> {
        match input {
            Input::DependenciesMet => self.on_dependencies_met(now),
            Input::DependencyFailed {
                dependency,
                blocked,
            } => {
                if self.state == State::Pending {
                    self.fail(
                        Failure::Dependency {
                            dependency,
                            blocked,
                        },
                        now,
                    );
                }
                Vec::new()
            }
            Input::Provider(peer) => self.on_provider(peer, now),
            Input::Spawned { pid } => {
                if self.state != State::Starting {
                    return Vec::new();
                }
                self.pid = Some(pid);
                self.started = Some(now);
                if self.ready_line.is_none() && !self.health_gate {
                    return self.become_ready(now);
                }
                Vec::new()
            }
            Input::SpawnFailed(error) => {
                if self.state == State::Starting {
                    self.fail(Failure::Spawn(error), now);
                }
                Vec::new()
            }
            Input::Line(line) => {
                let matched = self.ready_line.as_deref().is_some_and(|l| line.contains(l));
                if self.state == State::Starting && self.pid.is_some() && matched {
                    return self.become_ready(now);
                }
                Vec::new()
            }
            Input::Health { healthy } => self.on_health(healthy, now),
            Input::Exited { exit, last_lines } => self.on_exit(exit, last_lines, now),
            Input::Stop => self.on_stop(now),
            Input::RestartDue => {
                if self.state != State::Restarting {
                    return Vec::new();
                }
                self.enter(State::Starting, now);
                vec![Action::Spawn]
            }
        }
    }

    fn enter(&mut self, state: State, now: Instant) {
        if state != self.state {
            self.state = state;
            self.since = now;
        }
    }

    fn fail(&mut self, failure: Failure, now: Instant) {
        self.failure = Some(failure);
        self.pid = None;
        self.enter(State::Failed, now);
    }

    fn withdraw(&mut self, actions: &mut Vec<Action>) {
        if std::mem::take(&mut self.shared) {
            actions.push(Action::Withdraw);
        }
    }

    fn become_ready(&mut self, now: Instant) -> Vec<Action> {
        self.enter(State::Ready, now);
        self.shared = true;
        vec![Action::Share]
    }

    fn on_dependencies_met(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Pending {
            return Vec::new();
        }
        if !self.launchable {
            self.fail(Failure::NoProvider, now);
            return Vec::new();
        }
        self.enter(State::Starting, now);
        vec![Action::Spawn]
    }

    fn on_provider(&mut self, peer: Option<String>, now: Instant) -> Vec<Action> {
        match (self.state, peer) {
            (State::Pending | State::Remote, Some(peer)) => {
                self.provider = Some(peer);
                self.enter(State::Remote, now);
            }
            (State::Remote, None) => {
                // The provider left: start it here if we can, after its own
                // dependencies (the supervisor evaluates them again).
                self.provider = None;
                if self.launchable {
                    self.enter(State::Pending, now);
                } else {
                    self.fail(Failure::NoProvider, now);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn on_health(&mut self, healthy: bool, now: Instant) -> Vec<Action> {
        match (self.state, healthy) {
            (State::Starting, true) if self.health_gate && self.pid.is_some() => {
                self.become_ready(now)
            }
            (State::Unhealthy, true) => self.become_ready(now),
            (State::Ready, false) => {
                self.enter(State::Unhealthy, now);
                let mut actions = Vec::new();
                self.withdraw(&mut actions);
                actions
            }
            _ => Vec::new(),
        }
    }

    fn on_exit(&mut self, exit: Exit, last_lines: Vec<String>, now: Instant) -> Vec<Action> {
        if !self.state.is_running() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        self.withdraw(&mut actions);
        let uptime = self.started.map_or(Duration::ZERO, |s| now - s);
        self.pid = None;
        self.last_exit = Some(exit);
        self.completed |= exit.success();
        if std::mem::take(&mut self.stopping) {
            self.enter(State::Exited, now);
            return actions;
        }
        match self.restarts.on_exit(exit, uptime) {
            Decision::Restart { delay, .. } => {
                self.enter(State::Restarting, now);
                actions.push(Action::ScheduleRestart { delay });
            }
            Decision::GiveUp { restarts } => self.fail(
                Failure::CrashLoop {
                    restarts,
                    exit,
                    last_lines,
                },
                now,
            ),
            Decision::Stay => self.enter(State::Exited, now),
        }
        actions
    }

    fn on_stop(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Starting | State::Ready | State::Unhealthy => {
                let mut actions = Vec::new();
                self.withdraw(&mut actions);
                if !std::mem::replace(&mut self.stopping, true) {
                    actions.push(Action::Stop);
                }
                actions
            }
            State::Pending | State::Restarting | State::Remote => {
                self.provider = None;
                self.enter(State::Exited, now);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// Whether a waiting service may start, from its dependencies.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Verdict {
    /// Every dependency meets its condition.
    Go,
    /// Some dependency may still meet its condition.
    Wait,
    /// A dependency never will.
    Blocked {
        /// The dependency.
        dependency: String,
        /// Why.
        blocked: Blocked,
    },
}

/// Whether one dependency in `machine`'s state meets `condition`: `true`
/// met, `false` not yet, an error when it never will.
fn meets(machine: &Machine, condition: Condition) -> Result<bool, Blocked> {
    let state = machine.state();
    if state == State::Failed {
        let failure = machine.failure().cloned().unwrap_or(Failure::NoProvider);
        return Err(Blocked::Failed(Box::new(failure)));
    }
    match condition {
        Condition::CompletedSuccessfully => {
            if machine.completed() {
                return Ok(true);
            }
            match (state, machine.last_exit()) {
                (State::Remote, _) => Err(Blocked::Remote),
                (State::Exited, Some(exit)) => Err(Blocked::Exited {
                    exit,
                    wanted: condition,
                }),
                (State::Exited, None) => Err(Blocked::Stopped { wanted: condition }),
                _ => Ok(false),
            }
        }
        Condition::Healthy => match (state, machine.last_exit()) {
            (State::Ready | State::Remote, _) => Ok(true),
            (State::Exited, Some(exit)) => Err(Blocked::Exited {
                exit,
                wanted: condition,
            }),
            (State::Exited, None) => Err(Blocked::Stopped { wanted: condition }),
            _ => Ok(false),
        },
        _ => match (state, machine.last_exit()) {
            (State::Pending, _) => Ok(false),
            (State::Exited, None) => Err(Blocked::Stopped { wanted: condition }),
            _ => Ok(true),
        },
    }
}

/// Whether a service waiting on `dependencies` may start; `lookup` gives a
/// dependency's machine (a missing one is waited for).
pub fn evaluate<'a>(
    dependencies: &[(String, Condition)],
    lookup: impl Fn(&str) -> Option<&'a Machine>,
) -> Verdict {
    let mut verdict = Verdict::Go;
    for (dependency, condition) in dependencies {
        let Some(machine) = lookup(dependency) else {
            verdict = Verdict::Wait;
            continue;
        };
        match meets(machine, *condition) {
            Ok(true) => {}
            Ok(false) => verdict = Verdict::Wait,
            Err(blocked) => {
                return Verdict::Blocked {
                    dependency: dependency.clone(),
                    blocked,
                };
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
