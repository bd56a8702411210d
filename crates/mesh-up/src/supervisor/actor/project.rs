//! The supervisor's project-wide requests: hot reload, `ps` and `logs`.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Instant, SystemTime},
};

use super::{Actor, Entry};
use crate::{
    Diff, Failure, Input, Machine, ProjectSpec, ServiceSpec, State, SupervisorError, Verdict,
    evaluate, logs::LogLine, supervisor::ServiceStatus,
};

impl Actor {
    /// After `name` went down: drop it when a reload removed it, restart it
    /// with its new spec when a reload changed it.
    pub(super) fn after_down(&mut self, name: &str) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if !entry.is_down() {
            return;
        }
        if entry.removed {
            self.entries.remove(name);
        } else if let Some(spec) = entry.next.take() {
            self.replace(name, spec);
        }
    }

    /// Gives `name` a fresh `pending` machine for `spec`.
    pub(super) fn replace(&mut self, name: &str, spec: ServiceSpec) {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(name) {
            entry.machine = Machine::new(&spec, now);
            entry.spec = Arc::new(spec);
            self.announce(name, State::Pending);
        }
    }

    /// Runs `services` (every service when empty) on top of those already
    /// selected, with what they depend on.
    pub(super) fn select(&mut self, services: Vec<String>) -> Result<(), SupervisorError> {
        if self.stopped || self.stopping.is_some() {
            return Err(SupervisorError::Stopped);
        }
        // Unknown names are an error, even when everything runs already.
        self.graph.select(&services)?;
        if self.selection.services.is_empty() {
            return Ok(());
        }
        let mut named = self.selection.services.clone();
        if services.is_empty() {
            named.clear();
        } else {
            named.extend(services);
            named.sort();
            named.dedup();
        }
        let selected = self.graph.select(&named)?;
        check_probe(&self.project, &selected, self.probe.is_some())?;
        self.selection.services = named;
        self.selected = selected;
        Ok(())
    }

    pub(super) fn apply(&mut self, project: ProjectSpec) -> Result<Diff, SupervisorError> {
        if self.stopped || self.stopping.is_some() {
            return Err(SupervisorError::Stopped);
        }
        let graph = project.graph()?;
        let selected = if self.selection.services.is_empty() {
            graph.select(&[])?
        } else {
            let named: Vec<String> = self
                .selection
                .services
                .iter()
                .filter(|s| graph.contains(s))
                .cloned()
                .collect();
            if named.is_empty() {
                BTreeSet::new()
            } else {
                graph.select(&named)?
            }
        };
        check_probe(&project, &selected, self.probe.is_some())?;
        let diff = Diff::between(&self.project, &project);
        self.order = graph.start_order(&graph.select(&[])?);
        self.graph = graph;
        self.selected = selected;
        for name in &diff.removed {
            if let Some(entry) = self.entries.get_mut(name) {
                entry.removed = true;
            }
            self.feed(name, Input::Stop);
            self.after_down(name);
        }
        for name in &diff.changed {
            let spec = project.services[name].clone();
            match self.entries.get_mut(name) {
                Some(entry) if entry.run.is_some() => {
                    entry.next = Some(spec);
                    self.feed(name, Input::Stop);
                }
                _ => self.replace(name, spec),
            }
        }
        let now = Instant::now();
        for name in &diff.added {
            let entry = Entry::new(project.services[name].clone(), now);
            self.entries.insert(name.clone(), entry);
        }
        self.project = project;
        // The edit may have fixed what blocked them.
        self.retry_blocked();
        Ok(diff)
    }

    /// Restarts `name` with its current spec: a running one once it is down,
    /// one that ended at once; one that waits or is remote is left alone.
    pub(super) fn restart(&mut self, name: &str) -> Result<(), SupervisorError> {
        if self.stopped || self.stopping.is_some() {
            return Err(SupervisorError::Stopped);
        }
        let entry = self
            .entries
            .get_mut(name)
            .ok_or_else(|| SupervisorError::UnknownService {
                service: name.to_owned(),
            })?;
        if entry.removed {
            return Ok(());
        }
        let spec = entry.next.take().unwrap_or_else(|| (*entry.spec).clone());
        if entry.run.is_some() || entry.machine.state() == State::Restarting {
            entry.next = Some(spec);
            self.feed(name, Input::Stop);
            self.after_down(name);
        } else if entry.is_down() {
            self.replace(name, spec);
        }
        Ok(())
    }

    /// Puts back to `pending` each service that failed for want of a
    /// provider when a teammate now has one, and each that failed for want
    /// of a dependency that may now meet its condition.
    pub(super) fn retry_blocked(&mut self) {
        for name in self.order.clone() {
            let Some(entry) = self.entries.get(&name) else {
                continue;
            };
            if entry.machine.state() != State::Failed {
                continue;
            }
            let retry = match entry.machine.failure() {
                Some(Failure::NoProvider) => {
                    let requirement = self.project.requirement_for(&name);
                    self.may_be_remote(&name)
                        && self.resolver.provider_for(&name, &requirement).is_some()
                }
                Some(Failure::Dependency { .. }) => !matches!(
                    evaluate(self.graph.dependencies(&name), |d| {
                        self.entries.get(d).map(|e| &e.machine)
                    }),
                    Verdict::Blocked { .. }
                ),
                _ => false,
            };
            if retry {
                let spec = (*entry.spec).clone();
                self.replace(&name, spec);
            }
        }
    }

    pub(super) fn ps(&self) -> Vec<ServiceStatus> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.order
            .iter()
            .filter_map(|name| Some((name, self.entries.get(name)?)))
            .filter(|(name, e)| {
                self.selected.contains(*name) || e.machine.state() != State::Pending
            })
            .map(|(name, e)| {
                let m = &e.machine;
                ServiceStatus {
                    name: name.clone(),
                    state: m.state(),
                    pid: m.pid(),
                    restarts: m.restarts(),
                    since: wall
                        .checked_sub(now.duration_since(m.since()))
                        .unwrap_or(wall),
                    uptime: m.started().map(|s| now.duration_since(s)),
                    provider: m.provider().map(str::to_owned),
                    failure: m.failure().cloned(),
                    last_exit: m.last_exit(),
                    unneeded: m.state() == State::Pending && !self.needed(name),
                }
            })
            .collect()
    }

    pub(super) fn logs(
        &self,
        service: Option<&str>,
        tail: usize,
    ) -> Result<Vec<LogLine>, SupervisorError> {
        if let Some(name) = service {
            let entry = self
                .entries
                .get(name)
                .ok_or_else(|| SupervisorError::UnknownService {
                    service: name.to_owned(),
                })?;
            return Ok(entry.ring.tail(tail).cloned().collect());
        }
        Ok(self
            .order
            .iter()
            .filter_map(|name| self.entries.get(name))
            .flat_map(|e| e.ring.tail(tail).cloned())
            .collect())
    }
}

/// A selected service that checks health needs a probe.
pub(super) fn check_probe(
    project: &ProjectSpec,
    selected: &BTreeSet<String>,
    have_probe: bool,
) -> Result<(), SupervisorError> {
    if have_probe {
        return Ok(());
    }
    match selected.iter().find(|name| {
        project
            .services
            .get(*name)
            .is_some_and(|s| s.health.is_some())
    }) {
        Some(service) => Err(SupervisorError::NoProbe {
            service: service.clone(),
        }),
        None => Ok(()),
    }
}
