//! Helpers of the supervisor tests: services as sh scripts in a temp dir,
//! and waits on events with a deadline.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_up::{Event, Launch, LogLine, Options, ProjectSpec, ServiceSpec, State, Supervisor};
use tokio::sync::broadcast;

/// Every wait of these tests ends after this.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A service that runs `script` with `sh -c` in `dir`.
pub fn sh(name: &str, dir: &Path, script: &str) -> ServiceSpec {
    ServiceSpec::new(name, Some(Launch::Shell(script.to_owned())), dir)
}

/// The project of `services`.
pub fn project(services: impl IntoIterator<Item = ServiceSpec>) -> ProjectSpec {
    ProjectSpec {
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
    }
}

/// A started supervisor with its event and log streams, subscribed
/// before anything started.
pub struct Up {
    pub supervisor: Supervisor,
    pub events: broadcast::Receiver<Event>,
    pub logs: broadcast::Receiver<LogLine>,
    /// Every event seen so far, in order.
    pub seen: Vec<Event>,
}

impl Up {
    pub async fn start(project: ProjectSpec, options: Options) -> Self {
        let supervisor = Supervisor::spawn(project, options).expect("supervisor");
        let events = supervisor.subscribe();
        let logs = supervisor.follow();
        supervisor.start().await.expect("start");
        Self {
            supervisor,
            events,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event (from now) that `pick` maps to `Some`.
    pub async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Ok(event) => {
                        self.seen.push(event.clone());
                        if let Some(found) = pick(&event) {
                            return found;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => panic!("lagged {n} events"),
                    Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
                }
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(found) => found,
            Err(_) => panic!("no {what} within {DEADLINE:?}; saw {:#?}", self.seen),
        }
    }

    /// Waits until `service` enters `state`.
    pub async fn state(&mut self, service: &str, state: State) {
        let what = format!("{service} {state}");
        self.until(&what, |e| match e {
            Event::State {
                service: s,
                state: st,
            } if s == service && *st == state => Some(()),
            _ => None,
        })
        .await;
    }

    /// Waits until each of `services` has entered `state`, in any order.
    pub async fn all(&mut self, services: &[&str], state: State) {
        let mut waiting: Vec<&str> = services.to_vec();
        let what = format!("{services:?} {state}");
        self.until(&what, |e| {
            if let Event::State { service, state: st } = e
                && *st == state
            {
                waiting.retain(|w| w != service);
            }
            waiting.is_empty().then_some(())
        })
        .await;
    }

    /// Waits for a line of `service` that contains `text`; returns it.
    pub async fn line(&mut self, service: &str, text: &str) -> String {
        let wait = async {
            loop {
                let line = self.logs.recv().await.expect("log stream");
                if line.service == service && line.line.contains(text) {
                    return line.line;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{service} never printed {text:?}"))
    }

    /// The states `service` went through, as seen so far.
    pub fn states_of(&self, service: &str) -> Vec<State> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::State { service: s, state } if s == service => Some(*state),
                _ => None,
            })
            .collect()
    }

    /// Position of the first `service` `state` event seen.
    pub fn position(&self, service: &str, state: State) -> usize {
        self.seen
            .iter()
            .position(|e| {
                matches!(e, Event::State { service: s, state: st } if s == service && *st == state)
            })
            .unwrap_or_else(|| panic!("{service} never {state}: {:#?}", self.seen))
    }

    pub async fn stop_all(&self) {
        tokio::time::timeout(DEADLINE, self.supervisor.stop_all())
            .await
            .expect("stop_all in time")
            .expect("stop_all");
    }

    pub async fn status(&self, service: &str) -> mesh_up::ServiceStatus {
        self.supervisor
            .ps()
            .await
            .expect("ps")
            .into_iter()
            .find(|s| s.name == service)
            .unwrap_or_else(|| panic!("{service} not in ps"))
    }
}

/// Whether process `pid` is gone (a zombie waiting for its reaper counts as
/// gone: it runs nothing).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat_field(&stat, 0) == Some("Z"),
    }
}

/// Field `n` after the command of a `/proc/<pid>/stat` line (0: state).
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(n)
}

/// Live (not zombie) processes whose process group is `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            stat_field(&stat, 0) != Some("Z")
                && stat_field(&stat, 2).and_then(|g| g.parse::<u32>().ok()) == Some(group)
        })
        .collect()
}

/// Polls `check` every 20 ms until it holds, at most [`DEADLINE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let wait = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {DEADLINE:?}"));
}

/// A temp dir for one test's scripts and files.
pub fn workdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    (dir, path)
}
