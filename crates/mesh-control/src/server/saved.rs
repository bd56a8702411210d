//! What a user set up that survives a restart: the peers joined with
//! `join <multiaddr>` and the services shared with `run --detach`, kept in
//! `<home>/saved.json` and restored when the daemon starts
//! ([`Server::restore`]).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use mesh_core::Multiaddr;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Server;
use crate::{HomeStatus, ServiceSpec};

/// File of the saved joins and shares in the daemon's home.
pub const SAVED_FILE: &str = "saved.json";

/// The saved setup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Addresses of the peers joined with `join <multiaddr>`.
    #[serde(default)]
    pub joins: Vec<String>,
    /// Services shared with `run --detach`, by name.
    #[serde(default)]
    pub shares: Vec<ServiceSpec>,
}

impl Saved {
    /// Adds the addresses of a join, each once.
    fn add_joins(&mut self, addrs: &[Multiaddr]) -> bool {
        let before = self.joins.len();
        for a in addrs {
            let text = a.to_string();
            if !self.joins.contains(&text) {
                self.joins.push(text);
            }
        }
        self.joins.len() != before
    }

    /// Keeps `spec` as the detached share of its name.
    fn add_share(&mut self, spec: ServiceSpec) -> bool {
        if self.shares.contains(&spec) {
            return false;
        }
        self.shares.retain(|s| s.name != spec.name);
        self.shares.push(spec);
        true
    }

    /// Forgets the share of `name`.
    fn remove_share(&mut self, name: &str) -> bool {
        let before = self.shares.len();
        self.shares.retain(|s| s.name != name);
        self.shares.len() != before
    }
}

/// The one owner of `<home>/saved.json` in a running daemon.
#[derive(Debug)]
pub(super) struct Store {
    path: PathBuf,
    saved: Mutex<Saved>,
    /// What the start restored, for `status`.
    restored: Mutex<(Vec<String>, Vec<String>)>,
}

impl Store {
    /// Reads the file in `home`; one that cannot be read is logged and
    /// treated as empty (and replaced on the next change).
    pub(super) fn load(home: &Path) -> Self {
        let path = home.join(SAVED_FILE);
        let saved = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "ignoring a malformed saved setup");
                Saved::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the saved setup");
                Saved::default()
            }
        };
        Self {
            path,
            saved: Mutex::new(saved),
            restored: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Saved) -> bool) {
        let Ok(mut saved) = self.saved.lock() else {
            return;
        };
        if !f(&mut saved) {
            return;
        }
        if let Err(e) = write(&self.path, &saved) {
            warn!(path = %self.path.display(), error = %e, "cannot save the setup; it will not survive a restart");
        }
    }

    pub(super) fn joined(&self, addrs: &[Multiaddr]) {
        self.change(|s| s.add_joins(addrs));
    }

    pub(super) fn shared(&self, spec: &ServiceSpec, detached: bool) {
        if detached {
            self.change(|s| s.add_share(spec.clone()));
        } else {
            self.change(|s| s.remove_share(&spec.name));
        }
    }

    pub(super) fn stopped(&self, name: &str) {
        self.change(|s| s.remove_share(name));
    }

    fn snapshot(&self) -> Saved {
        self.saved.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The home part of `status`: where things are and what was restored.
    pub(super) fn status(&self, info: &super::ServerInfo) -> HomeStatus {
        let (joins, shares) = self.restored.lock().map(|r| r.clone()).unwrap_or_default();
        HomeStatus {
            home: info.home.display().to_string(),
            config_file: info.config_path.display().to_string(),
            log_file: log_file(),
            restored_joins: joins,
            restored_shares: shares,
        }
    }
}

/// Writes `saved` atomically (a temporary file renamed over the old one).
fn write(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(saved).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The file this daemon's log (stderr) goes to, when it is a file.
fn log_file() -> Option<String> {
    let target = std::fs::read_link("/proc/self/fd/2").ok()?;
    target.is_file().then(|| target.display().to_string())
}

impl Server {
    /// Shares the saved detached services again and dials the saved joins
    /// (in the background, each failure logged with its cause).
    pub async fn restore(self: &Arc<Self>) {
        let saved = self.saved.snapshot();
        let mut shared = Vec::new();
        for spec in saved.shares {
            let name = spec.name.clone();
            match self.run(spec, false, 0).await {
                Ok(_) => shared.push(name),
                Err(e) => {
                    warn!(service = %name, error = %crate::chain(&e), "cannot share a saved service again")
                }
            }
        }
        let addrs: Vec<Multiaddr> = saved
            .joins
            .iter()
            .filter_map(|a| match a.parse() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    warn!(addr = %a, error = %e, "ignoring a saved join that is not a multiaddr");
                    None
                }
            })
            .collect();
        if !shared.is_empty() || !addrs.is_empty() {
            info!(services = ?shared, joins = addrs.len(), "restored the saved setup");
        }
        if let Ok(mut r) = self.saved.restored.lock() {
            *r = (saved.joins.clone(), shared);
        }
        if addrs.is_empty() {
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            let (peers, failures) = server.dial_all(&addrs).await;
            for failure in failures {
                warn!(error = %crate::chain(&failure), "cannot reach a saved join; devmeshd keeps its address");
            }
            if !peers.is_empty() {
                info!(peers = ?peers, "connected to saved joins");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, port: u16) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "port": port, "version": "1.0.0",
        }))
        .expect("a spec")
    }

    #[test]
    fn shares_are_kept_by_name_and_joins_once() {
        let mut saved = Saved::default();
        assert!(saved.add_share(spec("api", 1)));
        assert!(!saved.add_share(spec("api", 1)));
        assert!(saved.add_share(spec("api", 2)));
        assert_eq!(saved.shares.len(), 1);
        assert_eq!(saved.shares[0].port, 2);
        assert!(saved.remove_share("api"));
        assert!(!saved.remove_share("api"));
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        assert!(saved.add_joins(std::slice::from_ref(&a)));
        assert!(!saved.add_joins(&[a]));
    }

    #[test]
    fn the_store_survives_a_reload() {
        let home = tempfile::tempdir().expect("home");
        let store = Store::load(home.path());
        store.shared(&spec("api", 3000), true);
        store.joined(&["/ip4/127.0.0.1/tcp/1".parse().expect("addr")]);
        let again = Store::load(home.path()).snapshot();
        assert_eq!(again.shares, [spec("api", 3000)]);
        assert_eq!(again.joins, ["/ip4/127.0.0.1/tcp/1"]);
        store.shared(&spec("api", 3000), false);
        assert!(Store::load(home.path()).snapshot().shares.is_empty());
    }
}
