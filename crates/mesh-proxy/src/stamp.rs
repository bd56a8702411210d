//! Response stamping: the `X-DevMesh-*` headers that name the provider,
//! route, service, attempts and warning of a response, and the sticky
//! cookie.

use std::{collections::HashMap, sync::Mutex};

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::PeerId;

use crate::{choose, route};

/// The response header naming the provider's peer id.
pub(crate) const PROVIDER_HEADER: &str = "x-devmesh-provider";
/// The response header naming the route: `local`, `remote-direct`, `remote-relayed`.
pub(crate) const ROUTE_HEADER: &str = "x-devmesh-route";
/// The response header counting attempts, when more than one.
pub(crate) const ATTEMPTS_HEADER: &str = "x-devmesh-attempts";
const X_DEVMESH_PROVIDER: HeaderName = HeaderName::from_static(PROVIDER_HEADER);
const X_DEVMESH_ROUTE: HeaderName = HeaderName::from_static(ROUTE_HEADER);
const X_DEVMESH_WARNING: HeaderName = HeaderName::from_static("x-devmesh-warning");
const X_DEVMESH_ATTEMPTS: HeaderName = HeaderName::from_static(ATTEMPTS_HEADER);

/// Most peer ids kept as header values before the cache starts over.
const MAX_PEER_NAMES: usize = 4096;

/// Response headers naming the provider of a response; a front-door
/// connection keeps the last ones it made, as its requests mostly go to the
/// same provider.
pub(crate) struct Stamp {
    provider: PeerId,
    service: String,
    version: semver::Version,
    provider_value: HeaderValue,
    service_value: Option<HeaderValue>,
}

/// Peer ids as header values (encoding them costs more than the rest of
/// the header work of a request).
#[derive(Default)]
pub(crate) struct PeerNames(Mutex<HashMap<PeerId, HeaderValue>>);

impl PeerNames {
    fn get(&self, peer: &PeerId) -> HeaderValue {
        let mut names = self.0.lock().expect("peer names lock");
        if names.len() > MAX_PEER_NAMES {
            names.clear();
        }
        names
            .entry(*peer)
            .or_insert_with(|| {
                HeaderValue::from_str(&peer.to_string()).expect("peer ids are header-safe")
            })
            .clone()
    }
}

/// The `X-DevMesh-Provider` and `X-DevMesh-Service` values of a response of
/// `candidate` for `service`: the ones `last` holds when they are for the
/// same provider, service and version, else new ones, kept in `last`.
pub(crate) fn provider_values(
    last: &Mutex<Option<Stamp>>,
    names: &PeerNames,
    candidate: &choose::Candidate<'_>,
    service: &str,
) -> (HeaderValue, Option<HeaderValue>) {
    let mut last = last.lock().expect("stamp lock");
    if let Some(s) = last.as_ref()
        && s.provider == candidate.provider
        && s.service == service
        && s.version == *candidate.version
    {
        return (s.provider_value.clone(), s.service_value.clone());
    }
    let s = last.insert(Stamp {
        provider: candidate.provider,
        service: service.to_owned(),
        version: candidate.version.clone(),
        provider_value: names.get(&candidate.provider),
        service_value: HeaderValue::from_str(&format!("{service}@{}", candidate.version)).ok(),
    });
    (s.provider_value.clone(), s.service_value.clone())
}

/// What a response is stamped with.
pub(crate) struct Stamping<'a> {
    pub provider: HeaderValue,
    pub service: Option<HeaderValue>,
    /// `local`, `remote-direct` or `remote-relayed`.
    pub route: &'static str,
    /// Which attempt succeeded, from 0.
    pub attempt: usize,
    pub warning: Option<&'a str>,
    /// The sticky cookie to set, when the client's names another provider.
    pub cookie: Option<HeaderValue>,
}

/// Puts `stamping` on the response headers `h`.
pub(crate) fn stamp(h: &mut HeaderMap, stamping: Stamping<'_>) {
    h.insert(X_DEVMESH_PROVIDER, stamping.provider);
    h.insert(X_DEVMESH_ROUTE, HeaderValue::from_static(stamping.route));
    if let Some(v) = stamping.service {
        h.insert(route::SERVICE_HEADER_NAME, v);
    }
    if stamping.attempt > 0 {
        h.insert(X_DEVMESH_ATTEMPTS, HeaderValue::from(stamping.attempt + 1));
    }
    if let Some(w) = stamping.warning
        && let Ok(v) = HeaderValue::from_str(w)
    {
        h.insert(X_DEVMESH_WARNING, v);
    }
    if let Some(cookie) = stamping.cookie {
        h.append(http::header::SET_COOKIE, cookie);
    }
}

/// The name of the sticky cookie of `service`.
fn cookie_name(service: &str) -> String {
    format!("devmesh-{service}")
}

/// The `Set-Cookie` value that makes `provider` the sticky one of `service`.
pub(crate) fn sticky_cookie_value(service: &str, provider: &PeerId) -> Option<HeaderValue> {
    let value = format!(
        "{}={provider}; Path=/; HttpOnly; SameSite=Lax",
        cookie_name(service)
    );
    HeaderValue::from_str(&value).ok()
}

/// The provider the client's `devmesh-<service>` cookie names.
pub(crate) fn sticky_cookie(headers: &HeaderMap, service: &str) -> Option<PeerId> {
    let name = cookie_name(service);
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(provider: PeerId, version: &semver::Version) -> choose::Candidate<'_> {
        choose::Candidate {
            target: choose::Target::Local {
                port: 3000,
                scheme: mesh_core::Scheme::Http,
                h2: false,
            },
            provider,
            version,
            satisfies: true,
        }
    }

    #[test]
    fn stamps_first_attempts_plainly_and_retries_with_their_count() {
        let mut h = HeaderMap::new();
        stamp(
            &mut h,
            Stamping {
                provider: HeaderValue::from_static("peer-a"),
                service: Some(HeaderValue::from_static("api@1.0.0")),
                route: "local",
                attempt: 0,
                warning: None,
                cookie: None,
            },
        );
        assert_eq!(h["x-devmesh-provider"], "peer-a");
        assert_eq!(h["x-devmesh-route"], "local");
        assert_eq!(h["x-devmesh-service"], "api@1.0.0");
        assert!(!h.contains_key("x-devmesh-attempts"));
        assert!(!h.contains_key("x-devmesh-warning"));
        assert!(!h.contains_key("set-cookie"));

        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("app=1"));
        let peer = PeerId::random();
        stamp(
            &mut h,
            Stamping {
                provider: HeaderValue::from_static("peer-b"),
                service: None,
                route: "remote-relayed",
                attempt: 2,
                warning: Some("no provider of api satisfies ^2"),
                cookie: sticky_cookie_value("api", &peer),
            },
        );
        assert_eq!(h["x-devmesh-attempts"], "3");
        assert_eq!(h["x-devmesh-warning"], "no provider of api satisfies ^2");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 2, "the backend's cookie stays");
        let mut asked = HeaderMap::new();
        asked.insert("cookie", HeaderValue::from_static("a=b"));
        asked.append("cookie", cookies[1].clone());
        assert_eq!(sticky_cookie(&asked, "api"), Some(peer));
        assert_eq!(sticky_cookie(&asked, "web"), None);
    }

    #[test]
    fn provider_values_are_kept_while_the_provider_stays() {
        let last = Mutex::new(None);
        let names = PeerNames::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let v1 = semver::Version::new(1, 0, 0);
        let v2 = semver::Version::new(2, 0, 0);
        let (provider, service) = provider_values(&last, &names, &candidate(a, &v1), "api");
        assert_eq!(provider, a.to_string());
        assert_eq!(service.unwrap(), "api@1.0.0");
        let (_, service) = provider_values(&last, &names, &candidate(a, &v2), "api");
        assert_eq!(service.unwrap(), "api@2.0.0");
        let (provider, _) = provider_values(&last, &names, &candidate(b, &v2), "api");
        assert_eq!(provider, b.to_string());
        let (_, service) = provider_values(&last, &names, &candidate(b, &v2), "web");
        assert_eq!(service.unwrap(), "web@2.0.0");
    }
}
