//! Watching a project's files: devmesh.toml for hot reload, and the
//! sources of the services that restart when they change.
//!
//! A `notify` watcher (inotify on Linux) reports raw paths from its own
//! thread into a bounded channel; [`Watcher::next`] sorts them with a
//! [`WatchSet`] and lets each burst settle with a [`Debounce`]. When the
//! channel overflows, the paths are lost, so every watcher fires: a
//! restart too many beats a change missed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::{
    WatchError,
    watch::{Debounce, WatchSet},
};

/// Paths waiting between the notify thread and [`Watcher::next`].
const PATHS: usize = 4096;

/// What changed, once it settled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// devmesh.toml was written: reload it.
    Config,
    /// Files of `service` changed: restart it.
    Sources {
        /// The service.
        service: String,
        /// One of the changed files.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Config,
    Service(String),
}

/// Watches devmesh.toml and the files of a [`WatchSet`].
pub struct Watcher {
    config: PathBuf,
    set: WatchSet,
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    paths: mpsc::Receiver<PathBuf>,
    overflow: Arc<AtomicBool>,
    debounce: Debounce<Key>,
    last: std::collections::BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("config", &self.config)
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches `config` (its directory, since editors replace the file) and
    /// the roots of `set`.
    pub fn new(config: &Path, set: WatchSet) -> Result<Self, WatchError> {
        let (tx, paths) = mpsc::channel(PATHS);
        let overflow = Arc::new(AtomicBool::new(false));
        let lost = overflow.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                lost.store(true, Ordering::Relaxed);
                return;
            };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                if tx.try_send(path).is_err() {
                    lost.store(true, Ordering::Relaxed);
                }
            }
        })
        .map_err(|source| WatchError::Watch {
            path: config.to_owned(),
            source,
        })?;
        let mut this = Self {
            config: config.to_owned(),
            set: WatchSet::default(),
            watcher,
            watched: BTreeSet::new(),
            paths,
            overflow,
            debounce: Debounce::default(),
            last: Default::default(),
        };
        let dir = config.parent().unwrap_or(Path::new("/")).to_owned();
        this.watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch { path: dir, source })?;
        this.rewatch(set)?;
        Ok(this)
    }

    /// Watches the files of `set` from now on (after a reload).
    pub fn rewatch(&mut self, set: WatchSet) -> Result<(), WatchError> {
        let roots = set.roots();
        for gone in self.watched.difference(&roots) {
            let _ = self.watcher.unwatch(gone);
        }
        for root in roots.difference(&self.watched) {
            if let Err(source) = self.watcher.watch(root, RecursiveMode::Recursive) {
                // A root that does not exist yet is not an error: it is
                // watched once a reload names it again.
                if root.exists() {
                    return Err(WatchError::Watch {
                        path: root.clone(),
                        source,
                    });
                }
                tracing::debug!(root = %root.display(), "watch root does not exist");
            }
        }
        self.watched = roots;
        self.set = set;
        Ok(())
    }

    /// The next change once it has settled; never ends.
    pub async fn next(&mut self) -> Change {
        loop {
            let now = Instant::now();
            if let Some(key) = self.debounce.take_due(now).into_iter().next() {
                // Another due key fires on the next call, at once.
                return match key {
                    Key::Config => Change::Config,
                    Key::Service(service) => {
                        let path = self.last.remove(&service).unwrap_or_default();
                        Change::Sources { service, path }
                    }
                };
            }
            let deadline = self.debounce.next();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                path = self.paths.recv() => match path {
                    Some(path) => self.sort(path, Instant::now()),
                    None => std::future::pending::<()>().await,
                },
                () = sleep => {}
            }
            if self.overflow.swap(false, Ordering::Relaxed) {
                let now = Instant::now();
                self.debounce.touch(Key::Config, now);
                for service in self.set.all() {
                    self.debounce.touch(Key::Service(service), now);
                }
            }
        }
    }

    fn sort(&mut self, path: PathBuf, now: Instant) {
        if path == self.config {
            self.debounce.touch(Key::Config, now);
            return;
        }
        for service in self.set.touched(&path) {
            self.last.insert(service.clone(), path.clone());
            self.debounce.touch(Key::Service(service), now);
        }
    }
}
