//! Health checks of local services: what a check is ([`HealthCheck`]) and
//! how a run of results becomes a [`Health`] ([`Tracker`]).
//!
//! This module holds no I/O: the daemon runs the probes (mesh-proxy's
//! `health` module) and reports each flip to the node with
//! [`NodeHandle::set_health`](crate::NodeHandle::set_health), which
//! re-announces the service with its new health.
//!
//! ```
//! use mesh_core::{health::{HealthCheck, Probe, Tracker}, record::Health};
//! let check = HealthCheck::new(Probe::parse("/healthz").unwrap());
//! let mut tracker = Tracker::new(&check);
//! assert_eq!(tracker.record(true), None); // 1 of 2 passes
//! assert_eq!(tracker.record(true), Some(Health::Healthy));
//! ```

use std::{fmt, time::Duration};

use crate::record::Health;

/// Time between the starts of two checks, unless configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Time one check may take, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passes that make a service healthy, unless configured.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Consecutive failures that make a service unhealthy, unless configured.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;

/// Shortest interval accepted: checks must not load the backend.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest timeout accepted.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest threshold accepted.
pub const MAX_THRESHOLD: u32 = 100;

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET <path>` on the backend port with `Host: localhost:<port>`;
    /// passes on a 2xx or 3xx answer.
    Path(String),
    /// `GET` of an `http://` URL; passes on a 2xx or 3xx answer.
    Url(http::Uri),
    /// A TCP connect to the backend port; passes when it connects.
    Tcp,
}

impl Probe {
    /// Parses the `health` setting: a path (`/healthz`), an `http://` URL
    /// (`http://127.0.0.1:3001/ready`) or `tcp`.
    pub fn parse(text: &str) -> Result<Probe, HealthError> {
        let bad = |why: &str| HealthError {
            setting: Setting::Check,
            message: format!(
                "{text:?} is not a health check ({why}): use a path such as \"/healthz\", an http:// URL such as \"http://127.0.0.1:3001/ready\", or \"tcp\""
            ),
        };
        if text == "tcp" {
            return Ok(Probe::Tcp);
        }
        if text.len() > 1024 {
            return Err(bad("longer than 1024 bytes"));
        }
        if text.starts_with('/') {
            return match text.parse::<http::uri::PathAndQuery>() {
                Ok(pq) if pq.as_str() == text => Ok(Probe::Path(text.to_owned())),
                _ => Err(bad("not a valid URL path")),
            };
        }
        if text.starts_with("https://") {
            return Err(HealthError {
                setting: Setting::Check,
                message: format!(
                    "{text:?}: HTTPS health URLs are not supported; check the backend over http:// or give a path such as \"/healthz\""
                ),
            });
        }
        if !text.starts_with("http://") {
            return Err(bad("neither a path, an http:// URL nor tcp"));
        }
        let uri: http::Uri = text.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host"));
        }
        Ok(Probe::Url(uri))
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Path(p) => f.write_str(p),
            Probe::Url(u) => write!(f, "{u}"),
            Probe::Tcp => f.write_str("tcp"),
        }
    }
}

/// A health check of a local service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What each check does.
    pub probe: Probe,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Time one check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive passes that make the service healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make the service unhealthy.
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// A check with the default timing and thresholds.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }

    /// Checks the timing and thresholds against their bounds.
    pub fn validate(&self) -> Result<(), HealthError> {
        check_duration(Setting::Interval, self.interval, MIN_INTERVAL, MAX_INTERVAL)?;
        check_duration(Setting::Timeout, self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        check_threshold(Setting::HealthyThreshold, self.healthy_threshold)?;
        check_threshold(Setting::UnhealthyThreshold, self.unhealthy_threshold)?;
        Ok(())
    }
}

fn check_duration(
    setting: Setting,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), HealthError> {
    if value < min || value > max {
        return Err(HealthError {
            setting,
            message: format!(
                "{} is out of range: use {} to {}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(())
}

fn check_threshold(setting: Setting, value: u32) -> Result<(), HealthError> {
    if value == 0 || value > MAX_THRESHOLD {
        return Err(HealthError {
            setting,
            message: format!("{value} is out of range: use 1 to {MAX_THRESHOLD} checks in a row"),
        });
    }
    Ok(())
}

/// Parses a duration such as `2s`, `500ms` or `1m 30s` for `setting`.
pub fn parse_duration(setting: Setting, text: &str) -> Result<Duration, HealthError> {
    humantime::parse_duration(text).map_err(|e| HealthError {
        setting,
        message: format!("{text:?} is not a duration ({e}); write it like \"2s\" or \"500ms\""),
    })
}

/// One setting of a health check, to name it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Setting {
    /// What is checked.
    Check,
    /// Time between checks.
    Interval,
    /// Time one check may take.
    Timeout,
    /// Passes in a row to become healthy.
    HealthyThreshold,
    /// Failures in a row to become unhealthy.
    UnhealthyThreshold,
}

impl Setting {
    /// The key in `[services.<name>]` of `devmesh.toml`.
    pub fn config_key(self) -> &'static str {
        match self {
            Setting::Check => "health",
            Setting::Interval => "health_interval",
            Setting::Timeout => "health_timeout",
            Setting::HealthyThreshold => "healthy_threshold",
            Setting::UnhealthyThreshold => "unhealthy_threshold",
        }
    }

    /// The flag of `devmesh run`.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Check => "--health",
            Setting::Interval => "--health-interval",
            Setting::Timeout => "--health-timeout",
            Setting::HealthyThreshold => "--healthy-threshold",
            Setting::UnhealthyThreshold => "--unhealthy-threshold",
        }
    }
}

/// A health-check setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HealthError {
    /// The setting at fault.
    pub setting: Setting,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// A checker's report on one local service, for
/// [`NodeHandle::set_health`](crate::NodeHandle::set_health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The service checked.
    pub service: String,
    /// The backend port it was checked on.
    pub port: u16,
    /// The check that ran; the report applies only while the service has it.
    pub check: HealthCheck,
    /// The health the checks found.
    pub health: Health,
    /// Why the latest failed check failed, when it changed; `None` keeps
    /// the one known.
    pub last_failure: Option<String>,
}

/// Turns check results into a health: a service is `unknown` until the
/// first threshold is reached, then flips only after a full run of the
/// opposite result (`healthy_threshold` passes or `unhealthy_threshold`
/// failures in a row).
#[derive(Debug, Clone)]
pub struct Tracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    health: Health,
    passes: u32,
    failures: u32,
}

impl Tracker {
    /// A tracker at `unknown` for `check`'s thresholds.
    pub fn new(check: &HealthCheck) -> Self {
        Self {
            healthy_threshold: check.healthy_threshold.max(1),
            unhealthy_threshold: check.unhealthy_threshold.max(1),
            health: Health::Unknown,
            passes: 0,
            failures: 0,
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one result; returns the new health when it flips.
    pub fn record(&mut self, passed: bool) -> Option<Health> {
        let next = if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (self.passes >= self.healthy_threshold).then_some(Health::Healthy)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.unhealthy_threshold).then_some(Health::Unhealthy)
        };
        match next {
            Some(h) if h != self.health => {
                self.health = h;
                Some(h)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(healthy: u32, unhealthy: u32) -> Tracker {
        let mut check = HealthCheck::new(Probe::Tcp);
        check.healthy_threshold = healthy;
        check.unhealthy_threshold = unhealthy;
        Tracker::new(&check)
    }

    #[test]
    fn starts_unknown_until_a_threshold_is_reached() {
        let mut t = tracker(2, 3);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(t.record(false), Some(Health::Unhealthy));

        let mut t = tracker(2, 3);
        assert_eq!(t.record(true), None);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(t.record(true), Some(Health::Healthy));
    }

    #[test]
    fn flips_only_after_a_full_run_of_the_other_result() {
        let mut t = tracker(2, 2);
        t.record(true);
        assert_eq!(t.record(true), Some(Health::Healthy));
        // One failure between passes resets the count.
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.health(), Health::Healthy);
        assert_eq!(t.record(false), Some(Health::Unhealthy));
        // Staying unhealthy reports nothing new.
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Health::Healthy));
        assert_eq!(t.record(true), None);
    }

    #[test]
    fn threshold_one_flips_at_once() {
        let mut t = tracker(1, 1);
        assert_eq!(t.record(false), Some(Health::Unhealthy));
        assert_eq!(t.record(true), Some(Health::Healthy));
        assert_eq!(t.record(false), Some(Health::Unhealthy));
    }

    #[test]
    fn parses_checks() {
        assert_eq!(Probe::parse("tcp").unwrap(), Probe::Tcp);
        assert_eq!(
            Probe::parse("/healthz?full=1").unwrap(),
            Probe::Path("/healthz?full=1".into())
        );
        let Probe::Url(u) = Probe::parse("http://127.0.0.1:3001/ready").unwrap() else {
            panic!("not a URL")
        };
        assert_eq!(
            (u.host(), u.port_u16(), u.path()),
            (Some("127.0.0.1"), Some(3001), "/ready")
        );
        for bad in ["healthz", "", "/a b", "ftp://x/", "http:///x", "TCP"] {
            let e = Probe::parse(bad).unwrap_err();
            assert_eq!(e.setting, Setting::Check, "{bad}");
            assert!(e.message.contains("/healthz"), "{bad}: {e}");
        }
        let e = Probe::parse("https://127.0.0.1/x").unwrap_err();
        assert!(e.message.contains("HTTPS"), "{e}");
    }

    #[test]
    fn validates_bounds_and_durations() {
        let mut c = HealthCheck::new(Probe::Tcp);
        c.validate().unwrap();
        c.interval = Duration::from_millis(10);
        assert_eq!(c.validate().unwrap_err().setting, Setting::Interval);
        c.interval = Duration::from_millis(200);
        c.timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().setting, Setting::Timeout);
        c.timeout = Duration::from_secs(1);
        c.healthy_threshold = 0;
        assert_eq!(c.validate().unwrap_err().setting, Setting::HealthyThreshold);
        c.healthy_threshold = 1;
        c.unhealthy_threshold = 1000;
        let e = c.validate().unwrap_err();
        assert_eq!(e.setting, Setting::UnhealthyThreshold);
        assert_eq!(
            e.message,
            "1000 is out of range: use 1 to 100 checks in a row"
        );

        assert_eq!(
            parse_duration(Setting::Interval, "200ms").unwrap(),
            Duration::from_millis(200)
        );
        assert_eq!(
            parse_duration(Setting::Interval, "1m 30s").unwrap(),
            Duration::from_secs(90)
        );
        let e = parse_duration(Setting::Timeout, "soon").unwrap_err();
        assert_eq!(e.setting, Setting::Timeout);
        assert!(e.message.contains("\"2s\""), "{e}");
    }
}
