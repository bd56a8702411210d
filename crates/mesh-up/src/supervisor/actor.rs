//! The supervisor task: owns every service's state machine, process and
//! log; handlers never await.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Instant,
};

use mesh_config::Prefer;
use mesh_core::{health::Tracker, record::Health};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use super::{Command, Event, HealthProbe, Options, Resolver, Selection};
use crate::{
    Action, Condition, Graph, Input, Machine, ProjectSpec, ServiceSpec, State, SupervisorError,
    Verdict, evaluate,
    logs::{LogLine, Ring},
    process::{self, ProcessEvent, RunHandle},
};

/// Room of the channel the service processes report on.
const PROCESS_EVENTS: usize = 256;
/// Room of the channel of health flips and restart timers.
const INTERNAL: usize = 64;
/// Output lines a crash loop's failure quotes.
const LAST_LINES: usize = 5;

mod project;

use project::check_probe;

/// Reports of the supervisor's own tasks.
enum Internal {
    Health {
        service: String,
        run: u64,
        healthy: bool,
    },
    RestartDue {
        service: String,
        run: u64,
    },
}

struct Running {
    handle: RunHandle,
    health: Option<JoinHandle<()>>,
}

struct Entry {
    spec: Arc<ServiceSpec>,
    machine: Machine,
    /// The current run's number; reports of other runs are stale.
    run_id: u64,
    run: Option<Running>,
    ring: Ring,
    /// A reload changed the service: the spec it restarts with once down.
    next: Option<ServiceSpec>,
    /// A reload removed the service: dropped once down.
    removed: bool,
}

impl Entry {
    fn new(spec: ServiceSpec, now: Instant) -> Self {
        Self {
            machine: Machine::new(&spec, now),
            spec: Arc::new(spec),
            run_id: 0,
            run: None,
            ring: Ring::default(),
            next: None,
            removed: false,
        }
    }

    /// Nothing runs and nothing will without a new start.
    fn is_down(&self) -> bool {
        self.run.is_none() && matches!(self.machine.state(), State::Exited | State::Failed)
    }
}

pub(super) struct Inbox {
    process: mpsc::Receiver<ProcessEvent>,
    internal: mpsc::Receiver<Internal>,
}

pub(super) struct Actor {
    project: ProjectSpec,
    graph: Graph,
    selection: Selection,
    selected: BTreeSet<String>,
    /// Every service in start order.
    order: Vec<String>,
    entries: BTreeMap<String, Entry>,
    probe: Option<Arc<dyn HealthProbe>>,
    resolver: Arc<dyn Resolver>,
    environment: Option<Arc<BTreeMap<String, String>>>,
    events: broadcast::Sender<Event>,
    logs: broadcast::Sender<LogLine>,
    process_tx: mpsc::Sender<ProcessEvent>,
    internal_tx: mpsc::Sender<Internal>,
    next_run: u64,
    /// `start` was called.
    started: bool,
    /// `stop_all` callers waiting for the last service to go down.
    stopping: Option<Vec<oneshot::Sender<()>>>,
    stopped: bool,
}

impl Actor {
    pub(super) fn new(
        project: ProjectSpec,
        options: Options,
        events: broadcast::Sender<Event>,
        logs: broadcast::Sender<LogLine>,
    ) -> Result<(Self, Inbox), SupervisorError> {
        let graph = project.graph()?;
        let selected = graph.select(&options.selection.services)?;
        check_probe(&project, &selected, options.probe.is_some())?;
        let now = Instant::now();
        let entries = project
            .services
            .iter()
            .map(|(name, spec)| (name.clone(), Entry::new(spec.clone(), now)))
            .collect();
        let (process_tx, process) = mpsc::channel(PROCESS_EVENTS);
        let (internal_tx, internal) = mpsc::channel(INTERNAL);
        let all = graph.select(&[])?;
        let actor = Self {
            order: graph.start_order(&all),
            project,
            graph,
            selection: options.selection,
            selected,
            entries,
            probe: options.probe,
            resolver: options.resolver,
            environment: options.environment,
            events,
            logs,
            process_tx,
            internal_tx,
            next_run: 0,
            started: false,
            stopping: None,
            stopped: false,
        };
        Ok((actor, Inbox { process, internal }))
    }

    pub(super) async fn run(mut self, mut inbox: Inbox, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(event) = inbox.process.recv() => self.on_process(event),
                Some(internal) = inbox.internal.recv() => self.on_internal(internal),
            }
            self.settle();
            self.advance_stop();
        }
        // The last handle is gone: stop what still runs.
        for entry in self.entries.values_mut() {
            if let Some(run) = &mut entry.run {
                run.handle.stop();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start { reply } => {
                let result = if self.stopped || self.stopping.is_some() {
                    Err(SupervisorError::Stopped)
                } else {
                    self.started = true;
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::Ps { reply } => {
                let _ = reply.send(self.ps());
            }
            Command::Logs {
                service,
                tail,
                reply,
            } => {
                let _ = reply.send(self.logs(service.as_deref(), tail));
            }
            Command::Apply { project, reply } => {
                let _ = reply.send(self.apply(*project));
            }
            Command::MeshChanged { reply } => {
                self.mesh_changed();
                let _ = reply.send(());
            }
            Command::Select { services, reply } => {
                let _ = reply.send(self.select(services));
            }
            Command::Restart { service, reply } => {
                let _ = reply.send(self.restart(&service));
            }
            Command::StopAll { reply } => {
                if self.stopped {
                    let _ = reply.send(());
                } else {
                    self.stopping.get_or_insert_with(Vec::new).push(reply);
                }
            }
        }
    }

    fn on_process(&mut self, event: ProcessEvent) {
        match event {
            ProcessEvent::Line { run, line } => {
                let Some(entry) = self.entries.get_mut(&line.service) else {
                    return;
                };
                entry.ring.push(line.clone());
                let current = entry.run_id == run;
                let _ = self.logs.send(line.clone());
                if current {
                    self.feed(&line.service, Input::Line(&line.line));
                }
            }
            ProcessEvent::Health {
                service,
                run,
                healthy,
            } => {
                if self.entries.get(&service).is_some_and(|e| e.run_id == run) {
                    self.feed(&service, Input::Health { healthy });
                }
            }
            ProcessEvent::Exited { service, run, exit } => {
                let Some(entry) = self.entries.get_mut(&service) else {
                    return;
                };
                if entry.run_id != run {
                    return;
                }
                if let Some(Running {
                    health: Some(health),
                    ..
                }) = entry.run.take()
                {
                    health.abort();
                }
                let tail = entry.ring.tail(LAST_LINES);
                let last_lines = tail.map(|l| l.line.clone()).collect();
                self.feed(&service, Input::Exited { exit, last_lines });
                self.after_down(&service);
            }
        }
    }

    fn on_internal(&mut self, internal: Internal) {
        let (service, run, input) = match internal {
            Internal::Health {
                service,
                run,
                healthy,
            } => (service, run, Input::Health { healthy }),
            Internal::RestartDue { service, run } => (service, run, Input::RestartDue),
        };
        if self.entries.get(&service).is_some_and(|e| e.run_id == run) {
            self.feed(&service, input);
        }
    }

    /// Feeds `input` to `name`'s machine, reports a change of state and
    /// carries out the actions.
    fn feed(&mut self, name: &str, input: Input<'_>) {
        let now = Instant::now();
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        let before = (
            entry.machine.state(),
            entry.machine.provider().map(str::to_owned),
        );
        let actions = entry.machine.handle(input, now);
        let after = entry.machine.state();
        let provider = entry.machine.provider().map(str::to_owned);
        if after != before.0 {
            self.announce(name, after);
        } else if let Some(provider) = provider
            && before.1 != Some(provider.clone())
        {
            // Failed over to another teammate.
            self.emit(Event::Remote {
                service: name.to_owned(),
                provider,
            });
        }
        for action in actions {
            self.perform(name, action);
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn announce(&self, name: &str, state: State) {
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        tracing::info!(service = name, %state, "service state");
        self.emit(Event::State {
            service: name.to_owned(),
            state,
        });
        match state {
            State::Failed => {
                if let Some(failure) = entry.machine.failure() {
                    tracing::warn!(service = name, reason = %failure.reason(), "service failed");
                    self.emit(Event::Failed {
                        service: name.to_owned(),
                        failure: failure.clone(),
                    });
                }
            }
            State::Remote => {
                if let Some(provider) = entry.machine.provider() {
                    self.emit(Event::Remote {
                        service: name.to_owned(),
                        provider: provider.to_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    fn perform(&mut self, name: &str, action: Action) {
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        let (run, port, last_exit) = (entry.run_id, entry.spec.port, entry.machine.last_exit());
        match action {
            Action::Spawn => self.spawn(name),
            Action::Stop => {
                if let Some(run) = self.entries.get_mut(name).and_then(|e| e.run.as_mut()) {
                    run.handle.stop();
                }
            }
            Action::ScheduleRestart { delay } => {
                let tx = self.internal_tx.clone();
                let service = name.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Internal::RestartDue { service, run }).await;
                });
                if let Some(exit) = last_exit {
                    self.emit(Event::Restarting {
                        service: name.to_owned(),
                        exit,
                        delay,
                    });
                }
            }
            Action::Share => self.emit(Event::Ready {
                service: name.to_owned(),
                port,
            }),
            Action::Withdraw => self.emit(Event::Withdrawn {
                service: name.to_owned(),
            }),
        }
    }

    fn spawn(&mut self, name: &str) {
        self.next_run += 1;
        let run = self.next_run;
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        entry.run_id = run;
        let spec = Arc::clone(&entry.spec);
        let environment = self.environment.as_deref();
        match process::spawn(&spec, environment, run, self.process_tx.clone()) {
            Ok(handle) => {
                let pid = handle.pid();
                let health = self.spawn_health(&spec, run);
                if let Some(entry) = self.entries.get_mut(name) {
                    entry.run = Some(Running { handle, health });
                }
                self.feed(name, Input::Spawned { pid });
            }
            Err(e) => {
                tracing::warn!(service = name, error = %e, "cannot start service");
                self.feed(name, Input::SpawnFailed(Arc::new(e)));
            }
        }
    }

    /// The health loop of run `run` of `spec`: reports each flip of its
    /// health (as the thresholds count it).
    fn spawn_health(&self, spec: &ServiceSpec, run: u64) -> Option<JoinHandle<()>> {
        let check = spec.health.clone()?;
        let port = spec.port?;
        let probe = self.probe.clone()?;
        let tx = self.internal_tx.clone();
        let service = spec.name.clone();
        Some(tokio::spawn(async move {
            let mut tracker = Tracker::new(&check);
            let mut tick = tokio::time::interval(check.interval);
            loop {
                tick.tick().await;
                let passed =
                    tokio::time::timeout(check.timeout, probe.check(&service, port, &check))
                        .await
                        .unwrap_or(false);
                if let Some(health) = tracker.record(passed) {
                    let healthy = health == Health::Healthy;
                    let report = Internal::Health {
                        service: service.clone(),
                        run,
                        healthy,
                    };
                    if tx.send(report).await.is_err() {
                        return;
                    }
                }
            }
        }))
    }

    /// Whether a teammate's provider may stand in for `name`: it prefers
    /// the mesh, was not named on the command line, and a selected service
    /// depends on it without waiting for it to complete.
    fn may_be_remote(&self, name: &str) -> bool {
        let Some(entry) = self.entries.get(name) else {
            return false;
        };
        if entry.spec.prefer == Prefer::Local
            || self.selection.local
            || self.selection.services.iter().any(|s| s == name)
        {
            return false;
        }
        let mut dependents = self
            .graph
            .dependents(name)
            .iter()
            .filter(|d| self.selected.contains(*d))
            .peekable();
        dependents.peek().is_some()
            && dependents.all(|d| {
                self.graph
                    .dependencies(d)
                    .iter()
                    .all(|(dep, c)| dep != name || *c != Condition::CompletedSuccessfully)
            })
    }

    /// Whether `name` must run here: it was named, or (with every service
    /// selected) nothing depends on it, or a selected dependent that is not
    /// on the mesh needs it. What only a remote service needs waits.
    fn needed(&self, name: &str) -> bool {
        let dependents: Vec<&String> = self
            .graph
            .dependents(name)
            .iter()
            .filter(|d| self.selected.contains(*d))
            .collect();
        if self.selection.services.iter().any(|s| s == name)
            || (self.selection.services.is_empty() && dependents.is_empty())
        {
            return true;
        }
        dependents.into_iter().any(|d| {
            self.entries
                .get(d)
                .is_some_and(|e| e.machine.state() != State::Remote)
                && self.needed(d)
        })
    }

    /// Moves every waiting selected service on: to the mesh, started, or
    /// failed with its dependency's reason; until nothing changes.
    fn settle(&mut self) {
        if !self.started || self.stopping.is_some() || self.stopped {
            return;
        }
        let order: Vec<String> = self
            .order
            .iter()
            .filter(|n| self.selected.contains(*n))
            .cloned()
            .collect();
        let pending = |actor: &Self, name: &str| {
            actor.entries.get(name).map(|e| e.machine.state()) == Some(State::Pending)
        };
        // First what the mesh provides, so that nothing starts only for it.
        for name in &order {
            if pending(self, name) && self.may_be_remote(name) {
                let requirement = self.project.requirement_for(name);
                if let Some(peer) = self.resolver.provider_for(name, &requirement) {
                    self.feed(name, Input::Provider(Some(peer)));
                }
            }
        }
        loop {
            let mut changed = false;
            for name in &order {
                if !pending(self, name) || !self.needed(name) {
                    continue;
                }
                let verdict = evaluate(self.graph.dependencies(name), |d| {
                    self.entries.get(d).map(|e| &e.machine)
                });
                match verdict {
                    Verdict::Go => self.feed(name, Input::DependenciesMet),
                    Verdict::Blocked {
                        dependency,
                        blocked,
                    } => self.feed(
                        name,
                        Input::DependencyFailed {
                            dependency,
                            blocked,
                        },
                    ),
                    _ => continue,
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
    }

    /// During `stop_all`: stops each service whose dependents are all down;
    /// answers the callers once everything is.
    fn advance_stop(&mut self) {
        if self.stopping.is_none() {
            return;
        }
        let mut reverse = self.order.clone();
        reverse.reverse();
        for name in &reverse {
            let dependents_down = self
                .graph
                .dependents(name)
                .iter()
                .all(|d| self.entries.get(d).is_none_or(Entry::is_down));
            if dependents_down {
                self.feed(name, Input::Stop);
            }
        }
        if self.entries.values().all(Entry::is_down) {
            for reply in self.stopping.take().unwrap_or_default() {
                let _ = reply.send(());
            }
            self.stopped = true;
        }
    }

    fn mesh_changed(&mut self) {
        let remote: Vec<(String, Option<String>)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.machine.state() == State::Remote)
            .map(|(name, e)| (name.clone(), e.machine.provider().map(str::to_owned)))
            .collect();
        for (name, current) in remote {
            let requirement = self.project.requirement_for(&name);
            let peer = self.resolver.provider_for(&name, &requirement);
            if peer != current {
                self.feed(&name, Input::Provider(peer));
            }
        }
        // A teammate may now provide what nobody did.
        self.retry_blocked();
    }
}
