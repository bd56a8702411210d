//! `route`: changes the front door's routing settings and previews where
//! each service's requests go now, with `mesh_proxy::choose`.

use std::time::Instant;

use mesh_core::{PeerId, Snapshot};
use mesh_proxy::{
    choose::{Ask, Candidate},
    policy::{RetryPolicy, Routing, ServiceRoute, VersionMode},
};
use tracing::info;

use super::Server;
use crate::{Cause, RequestError, RouteResult, RouteSpec, RouteStatus};

/// A parsed `route` request.
#[derive(Debug, PartialEq)]
enum RouteChange {
    /// The node-wide defaults (unchanged where `None`).
    Defaults {
        versions: Option<VersionMode>,
        retry: Option<RetryPolicy>,
    },
    /// One service's settings.
    Service {
        service: String,
        clear: bool,
        pin: Option<PeerId>,
        require: Option<semver::VersionReq>,
        versions: Option<VersionMode>,
        sticky: Option<bool>,
        retry: Option<RetryPolicy>,
    },
}

/// A version mode or retry policy, when one is given.
fn policy<T>(text: Option<String>) -> Result<Option<T>, RequestError>
where
    T: std::str::FromStr,
    T::Err: Into<Cause>,
{
    text.map(|t| {
        t.parse()
            .map_err(|e: T::Err| RequestError::BadPolicy(e.into()))
    })
    .transpose()
}

impl RouteChange {
    fn parse(ask: RouteSpec) -> Result<Self, RequestError> {
        let versions: Option<VersionMode> = policy(ask.versions)?;
        let retry: Option<RetryPolicy> = policy(ask.retry)?;
        let Some(service) = ask.service else {
            if ask.pin.is_some() || ask.require.is_some() || ask.sticky.is_some() || ask.clear {
                return Err(RequestError::NeedsService);
            }
            return Ok(Self::Defaults { versions, retry });
        };
        mesh_core::record::validate_service_name(&service)?;
        let pin = ask
            .pin
            .map(|text| {
                text.parse()
                    .map_err(|error| RequestError::BadPeerId { text, error })
            })
            .transpose()?;
        let require = ask
            .require
            .map(|text| {
                semver::VersionReq::parse(&text)
                    .map_err(|error| RequestError::BadRequirement { text, error })
            })
            .transpose()?;
        Ok(Self::Service {
            service,
            clear: ask.clear,
            pin,
            require,
            versions,
            sticky: ask.sticky,
            retry,
        })
    }

    /// Changes `routing` as asked.
    fn apply(self, routing: &Routing) {
        match self {
            Self::Defaults { versions, retry } => {
                if versions.is_none() && retry.is_none() {
                    return;
                }
                let d = routing.set_defaults(|d| {
                    if let Some(v) = versions {
                        d.versions = v;
                    }
                    if let Some(r) = retry {
                        d.retry = r;
                    }
                });
                info!(versions = %d.versions, retry = %d.retry, "routing defaults changed");
            }
            Self::Service {
                service,
                clear,
                pin,
                require,
                versions,
                sticky,
                retry,
            } => {
                let route = routing.update(&service, |s| {
                    if clear {
                        *s = ServiceRoute::default();
                    }
                    if pin.is_some() {
                        s.pin = pin;
                    }
                    if require.is_some() {
                        s.require = require;
                    }
                    if versions.is_some() {
                        s.versions = versions;
                    }
                    if let Some(sticky) = sticky {
                        s.sticky = sticky;
                    }
                    if retry.is_some() {
                        s.retry = retry;
                    }
                });
                // As the settings read in JSON, `{"pin":"12D3…","sticky":true}`.
                let route = serde_json::to_string(&route).unwrap_or_default();
                info!(%service, %route, "routing of service changed");
            }
        }
    }
}

impl Server {
    pub(super) fn route(&self, ask: RouteSpec) -> Result<RouteResult, RequestError> {
        let routing = self
            .info
            .routing
            .as_ref()
            .ok_or(RequestError::NoFrontDoor)?;
        RouteChange::parse(ask)?.apply(routing);
        Ok(routes(&self.node.snapshot(), routing, Instant::now()))
    }
}

/// One line of a service's order: `api@2.3.0 on <peer> (remote-direct)`.
fn describe(service: &str, c: &Candidate<'_>) -> String {
    format!(
        "{service}@{} on {} ({}{})",
        c.version,
        c.provider,
        c.target.route(),
        if c.satisfies {
            ""
        } else {
            ", version does not satisfy"
        }
    )
}

/// Where requests for each service go now.
fn routes(snapshot: &Snapshot, routing: &Routing, now: Instant) -> RouteResult {
    let table = routing.table();
    let ejected = routing.ejected(now);
    let mut names: Vec<String> = snapshot
        .service_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    names.extend(table.services.keys().cloned());
    names.sort();
    names.dedup();
    let services = names
        .into_iter()
        .map(|service| {
            let settings = table.service(&service);
            let requirements = mesh_proxy::choose::node_requirements(snapshot, &service, settings);
            let mode = settings
                .and_then(|s| s.versions)
                .unwrap_or(table.defaults.versions);
            let ask = Ask {
                requirements: &requirements,
                mode,
                pin: settings.and_then(|s| s.pin),
                sticky: None,
            };
            let (order, refusal) =
                match mesh_proxy::choose::choose(snapshot, &service, &ask, routing, now) {
                    Ok(choice) => (
                        choice
                            .candidates
                            .iter()
                            .map(|c| describe(&service, c))
                            .collect(),
                        None,
                    ),
                    Err(refusal) => (Vec::new(), Some(refusal.describe(&service))),
                };
            RouteStatus {
                pin: settings.and_then(|s| s.pin).map(|p| p.to_string()),
                requirements: requirements
                    .iter()
                    .map(|r| format!("{} ({})", r.req, r.source))
                    .collect(),
                versions: mode.to_string(),
                sticky: settings.is_some_and(|s| s.sticky),
                retry: settings
                    .and_then(|s| s.retry)
                    .unwrap_or(table.defaults.retry)
                    .to_string(),
                order,
                refusal,
                ejected: ejected
                    .iter()
                    .filter(|e| e.service == service)
                    .map(|e| {
                        format!(
                            "{} for {} ms more after {} failure(s)",
                            e.provider,
                            e.remaining.as_millis(),
                            e.failures
                        )
                    })
                    .collect(),
                service,
            }
        })
        .collect();
    RouteResult {
        versions: table.defaults.versions.to_string(),
        retry: table.defaults.retry.to_string(),
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(service: Option<&str>) -> RouteSpec {
        RouteSpec {
            service: service.map(str::to_owned),
            ..RouteSpec::default()
        }
    }

    #[test]
    fn defaults_change_without_a_service_and_service_flags_need_one() {
        let mut a = ask(None);
        a.versions = Some("strict".into());
        assert_eq!(
            RouteChange::parse(a).unwrap(),
            RouteChange::Defaults {
                versions: Some(VersionMode::Strict),
                retry: None
            }
        );
        let mut a = ask(None);
        a.sticky = Some(true);
        assert!(matches!(
            RouteChange::parse(a),
            Err(RequestError::NeedsService)
        ));
        let mut a = ask(None);
        a.retry = Some("sometimes".into());
        let err = RouteChange::parse(a).unwrap_err().to_string();
        assert!(err.contains("\"sometimes\""), "{err}");
    }

    #[test]
    fn service_settings_are_parsed_with_errors_that_say_what_to_write() {
        let peer = PeerId::random();
        let mut a = ask(Some("api"));
        a.pin = Some(peer.to_string());
        a.require = Some("^2.1".into());
        a.sticky = Some(false);
        let RouteChange::Service {
            pin,
            require,
            sticky,
            ..
        } = RouteChange::parse(a).unwrap()
        else {
            panic!("not a service change")
        };
        assert_eq!(pin, Some(peer));
        assert_eq!(require, Some("^2.1".parse().unwrap()));
        assert_eq!(sticky, Some(false));
        let mut a = ask(Some("api"));
        a.pin = Some("alice".into());
        let err = RouteChange::parse(a).unwrap_err().to_string();
        assert!(err.starts_with("\"alice\" is not a peer id ("), "{err}");
        let mut a = ask(Some("api"));
        a.require = Some("banana".into());
        let err = RouteChange::parse(a).unwrap_err().to_string();
        assert!(
            err.starts_with("\"banana\" is not a version requirement (")
                && err.ends_with("write it like ^2.1"),
            "{err}"
        );
    }

    #[test]
    fn a_pin_shows_in_the_preview_and_clear_drops_it() {
        let routing = Routing::new(Default::default());
        let peer = PeerId::random();
        let mut a = ask(Some("api"));
        a.pin = Some(peer.to_string());
        RouteChange::parse(a).unwrap().apply(&routing);
        let s = super::super::tests::snapshot();
        let result = routes(&s, &routing, Instant::now());
        assert_eq!(result.services.len(), 1);
        assert_eq!(result.services[0].pin, Some(peer.to_string()));
        assert!(result.services[0].refusal.is_some());
        let mut a = ask(Some("api"));
        a.clear = true;
        RouteChange::parse(a).unwrap().apply(&routing);
        let after = routes(&s, &routing, Instant::now());
        assert!(after.services.iter().all(|r| r.pin.is_none()), "{after:?}");
    }
}
