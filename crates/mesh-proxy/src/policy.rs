//! How this node routes: node-wide defaults (from the daemon's config),
//! per-service settings made with `devmesh route`, and the providers ejected
//! for a while after they failed.
//!
//! The front door reads the settings on every request, so they sit behind a
//! read-mostly lock as one shared table; the ejection list is checked through
//! an atomic flag first and costs nothing while no provider is ejected.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// What happens when no provider satisfies a version requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionMode {
    /// The best available provider serves, with a warning header and a log line.
    #[default]
    Warn,
    /// The request is answered with 409 and the list of providers.
    Strict,
}

impl std::str::FromStr for VersionMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "warn" => Ok(Self::Warn),
            "strict" => Ok(Self::Strict),
            other => Err(ParseError::VersionMode {
                input: other.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for VersionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Warn => "warn",
            Self::Strict => "strict",
        })
    }
}

/// Which requests go to the next provider when one fails before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryPolicy {
    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE.
    #[default]
    Idempotent,
    /// Every method, POST and PATCH included.
    All,
    /// None: a failed request is answered with 502.
    Never,
}

impl RetryPolicy {
    /// Whether a request of `method` may be sent again.
    pub fn allows(self, method: &http::Method) -> bool {
        use http::Method;
        match self {
            Self::All => true,
            Self::Never => false,
            Self::Idempotent => matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
        }
    }
}

impl std::str::FromStr for RetryPolicy {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "idempotent" => Ok(Self::Idempotent),
            "all" => Ok(Self::All),
            "never" => Ok(Self::Never),
            other => Err(ParseError::RetryPolicy {
                input: other.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idempotent => "idempotent",
            Self::All => "all",
            Self::Never => "never",
        })
    }
}

/// Node-wide routing defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Defaults {
    /// What to do when no provider satisfies a requirement.
    pub versions: VersionMode,
    /// Which failed requests are retried on the next provider.
    pub retry: RetryPolicy,
}

/// Settings of one service, made with `devmesh route <service>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceRoute {
    /// Send every request to this provider only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PeerId>,
    /// Version requirement of this node's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<semver::VersionReq>,
    /// Overrides the node's version mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<VersionMode>,
    /// Keep each client (by cookie) on one provider.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sticky: bool,
    /// Overrides the node's retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl ServiceRoute {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The settings as one immutable table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub defaults: Defaults,
    pub services: BTreeMap<String, ServiceRoute>,
}

impl Table {
    /// The settings of `service`, if it has any.
    pub fn service(&self, service: &str) -> Option<&ServiceRoute> {
        if self.services.is_empty() {
            return None;
        }
        self.services.get(service)
    }
}

/// Longest a failing provider stays ejected.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);
/// Ejection after a provider's first failure; it doubles with each failure
/// in a row, up to [`MAX_EJECTION`].
pub const FIRST_EJECTION: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Ejection {
    until: Instant,
    failures: u32,
}

/// An ejected provider, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejected {
    pub service: String,
    pub provider: PeerId,
    pub remaining: Duration,
    pub failures: u32,
}

/// The routing state of a node, shared by the front door and the control API.
#[derive(Debug, Default)]
pub struct Routing {
    table: RwLock<Arc<Table>>,
    ejections: Mutex<HashMap<String, HashMap<PeerId, Ejection>>>,
    any_ejected: AtomicBool,
    /// Turns among equally good providers.
    turn: AtomicUsize,
}

impl Routing {
    /// Routing with node-wide `defaults` and no per-service settings.
    pub fn new(defaults: Defaults) -> Arc<Self> {
        Arc::new(Self {
            table: RwLock::new(Arc::new(Table {
                defaults,
                services: BTreeMap::new(),
            })),
            ..Self::default()
        })
    }

    /// The current settings.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().expect("routing table lock").clone()
    }

    /// Changes the settings of `service` with `change`; settings that end up
    /// all default are dropped. Returns the new settings.
    pub fn update(&self, service: &str, change: impl FnOnce(&mut ServiceRoute)) -> ServiceRoute {
        let mut guard = self.table.write().expect("routing table lock");
        let mut table = (**guard).clone();
        let mut route = table.services.remove(service).unwrap_or_default();
        change(&mut route);
        if !route.is_empty() {
            table.services.insert(service.to_owned(), route.clone());
        }
        *guard = Arc::new(table);
        route
    }

    /// Changes the node-wide defaults.
    pub fn set_defaults(&self, change: impl FnOnce(&mut Defaults)) -> Defaults {
        let mut guard = self.table.write().expect("routing table lock");
        let mut table = (**guard).clone();
        change(&mut table.defaults);
        let defaults = table.defaults;
        *guard = Arc::new(table);
        defaults
    }

    /// A number that grows by one on every call: which of several equally
    /// good providers goes first.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `provider` of `service` is ejected at `now`.
    pub fn is_ejected(&self, service: &str, provider: &PeerId, now: Instant) -> bool {
        if !self.any_ejected.load(Ordering::Relaxed) {
            return false;
        }
        let ejections = self.ejections.lock().expect("ejections lock");
        ejections
            .get(service)
            .and_then(|m| m.get(provider))
            .is_some_and(|e| e.until > now)
    }

    /// Records a failure of `provider` for `service`: it is ejected for a
    /// back-off that doubles with each failure in a row. Returns the back-off.
    pub fn failed(&self, service: &str, provider: PeerId, now: Instant) -> Duration {
        let mut ejections = self.ejections.lock().expect("ejections lock");
        let entry = ejections
            .entry(service.to_owned())
            .or_default()
            .entry(provider)
            .or_insert(Ejection {
                until: now,
                failures: 0,
            });
        entry.failures = entry.failures.saturating_add(1);
        let backoff = FIRST_EJECTION
            .saturating_mul(1 << (entry.failures - 1).min(16))
            .min(MAX_EJECTION);
        entry.until = now + backoff;
        self.any_ejected.store(true, Ordering::Relaxed);
        backoff
    }

    /// Records a success of `provider` for `service`: its failure count is
    /// forgotten.
    pub fn succeeded(&self, service: &str, provider: &PeerId) {
        if !self.any_ejected.load(Ordering::Relaxed) {
            return;
        }
        let mut ejections = self.ejections.lock().expect("ejections lock");
        if let Some(m) = ejections.get_mut(service) {
            m.remove(provider);
            if m.is_empty() {
                ejections.remove(service);
            }
        }
        if ejections.is_empty() {
            self.any_ejected.store(false, Ordering::Relaxed);
        }
    }

    /// Providers ejected now, for status output.
    pub fn ejected(&self, now: Instant) -> Vec<Ejected> {
        if !self.any_ejected.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let ejections = self.ejections.lock().expect("ejections lock");
        let mut out: Vec<Ejected> = ejections
            .iter()
            .flat_map(|(service, m)| {
                m.iter()
                    .filter(|(_, e)| e.until > now)
                    .map(|(peer, e)| Ejected {
                        service: service.clone(),
                        provider: *peer,
                        remaining: e.until - now,
                        failures: e.failures,
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.service, a.provider).cmp(&(&b.service, b.provider)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_backs_off_and_clears() {
        let r = Routing::new(Defaults::default());
        let p = PeerId::random();
        let now = Instant::now();
        assert!(!r.is_ejected("api", &p, now));
        assert_eq!(r.failed("api", p, now), Duration::from_secs(1));
        assert!(r.is_ejected("api", &p, now));
        assert!(!r.is_ejected("web", &p, now));
        assert!(!r.is_ejected("api", &p, now + Duration::from_secs(2)));
        assert_eq!(r.failed("api", p, now), Duration::from_secs(2));
        assert_eq!(r.failed("api", p, now), Duration::from_secs(4));
        for _ in 0..10 {
            r.failed("api", p, now);
        }
        assert_eq!(r.failed("api", p, now), MAX_EJECTION);
        assert_eq!(r.ejected(now).len(), 1);
        r.succeeded("api", &p);
        assert!(!r.is_ejected("api", &p, now));
        assert!(r.ejected(now).is_empty());
        assert_eq!(r.failed("api", p, now), Duration::from_secs(1));
    }

    #[test]
    fn settings_update_and_vanish_when_default() {
        let r = Routing::new(Defaults::default());
        let p = PeerId::random();
        r.update("api", |s| s.pin = Some(p));
        assert_eq!(r.table().service("api").and_then(|s| s.pin), Some(p));
        r.update("api", |s| *s = ServiceRoute::default());
        assert!(r.table().services.is_empty());
        assert_eq!(
            r.set_defaults(|d| d.versions = VersionMode::Strict)
                .versions,
            VersionMode::Strict
        );
    }

    #[test]
    fn retry_policies() {
        use http::Method;
        assert!(RetryPolicy::Idempotent.allows(&Method::GET));
        assert!(RetryPolicy::Idempotent.allows(&Method::PUT));
        assert!(!RetryPolicy::Idempotent.allows(&Method::POST));
        assert!(RetryPolicy::All.allows(&Method::PATCH));
        assert!(!RetryPolicy::Never.allows(&Method::GET));
        assert_eq!("all".parse::<RetryPolicy>(), Ok(RetryPolicy::All));
        assert!("sometimes".parse::<RetryPolicy>().is_err());
        assert_eq!("strict".parse::<VersionMode>(), Ok(VersionMode::Strict));
    }
}
