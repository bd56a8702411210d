//! Which service a front-door request is for.

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header::HOST};
use mesh_core::Snapshot;

/// Header that names the service explicitly; it wins over the host name.
pub const SERVICE_HEADER: &str = "x-devmesh-service";

/// [`SERVICE_HEADER`] as a header name.
pub const SERVICE_HEADER_NAME: HeaderName = HeaderName::from_static(SERVICE_HEADER);

/// Where the service name of a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service named by the `X-DevMesh-Service` header: path routes do not apply.
    Explicit(String),
    /// A service named by the host.
    Service(String),
    /// The request names no service (for example `Host: 127.0.0.1:7700`).
    Unnamed,
}

/// Finds the service a request is for: the `X-DevMesh-Service` header, then
/// the authority of an absolute-form URI (`HTTP_PROXY` use), then `Host`.
pub fn target(uri: &Uri, headers: &HeaderMap) -> Target {
    if let Some(name) = headers
        .get(SERVICE_HEADER_NAME)
        .and_then(|v| v.to_str().ok())
    {
        let name = name.trim();
        if !name.is_empty() {
            return Target::Explicit(name.to_ascii_lowercase());
        }
    }
    let host = uri.host().or_else(|| {
        headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(strip_port)
    });
    match host.and_then(service_from_host) {
        Some(name) => Target::Service(name),
        None => Target::Unnamed,
    }
}

/// The last `Host` a connection was routed by, and its service: the requests
/// of one connection mostly name the same host.
#[derive(Debug, Default)]
pub struct HostCache(Option<(HeaderValue, String)>);

/// [`target`], remembering in `cache` the service of the last `Host` header.
pub fn target_cached(uri: &Uri, headers: &HeaderMap, cache: &mut HostCache) -> Target {
    if uri.host().is_none()
        && !headers.contains_key(SERVICE_HEADER_NAME)
        && let Some(host) = headers.get(HOST)
    {
        if let Some((last, name)) = &cache.0
            && last == host
        {
            return Target::Service(name.clone());
        }
        let target = target(uri, headers);
        if let Target::Service(name) = &target {
            cache.0 = Some((host.clone(), name.clone()));
        }
        return target;
    }
    target(uri, headers)
}

/// Applies the path routes services claim to a request for `path` whose
/// host named `host_service` (or no service): the longest claimed prefix
/// other than `/` wins over the host name; a claim of `/` takes requests
/// whose host names no service, or one nobody provides.
pub fn by_path<'a>(
    snapshot: &'a Snapshot,
    path: &str,
    host_service: Option<&str>,
) -> Option<&'a str> {
    let records = snapshot
        .local
        .values()
        .map(|l| &l.record)
        .chain(snapshot.remote.iter().map(|r| &r.record));
    let mut best: Option<(&str, &str)> = None;
    let mut root: Option<&str> = None;
    for record in records {
        for prefix in &record.routes {
            if prefix == "/" {
                if root.is_none_or(|r| record.name.as_str() < r) {
                    root = Some(&record.name);
                }
            } else if path_matches(path, prefix) {
                let better = match best {
                    None => true,
                    Some((p, name)) => {
                        prefix.len() > p.len()
                            || (prefix.len() == p.len() && record.name.as_str() < name)
                    }
                };
                if better {
                    best = Some((prefix, &record.name));
                }
            }
        }
    }
    if let Some((_, name)) = best {
        return Some(name);
    }
    match host_service {
        Some(name) if !snapshot.providers(name).is_empty() => None,
        _ => root,
    }
}

/// Whether `path` falls under `prefix`: `/api/` covers `/api/x` and `/api`,
/// `/v1` covers `/v1`, `/v1/x` and `/v1?q` but not `/v10`.
fn path_matches(path: &str, prefix: &str) -> bool {
    let trimmed = prefix.trim_end_matches('/');
    match path.strip_prefix(trimmed) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: never a service name.
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

/// `s` without `suffix`, compared ignoring ASCII case.
fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// Maps a host name to a service name: `api.localhost`, `api.devmesh` and
/// bare `api` all mean `api`. IP literals and `localhost` name no service.
pub fn service_from_host(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host.starts_with('[')
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    let name = strip_suffix_ignore_case(host, ".localhost")
        .or_else(|| strip_suffix_ignore_case(host, ".devmesh"))
        .unwrap_or(host);
    if name.is_empty() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn t(uri: &str, host: Option<&str>, header: Option<&str>) -> Target {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(HOST, HeaderValue::from_str(h).unwrap());
        }
        if let Some(h) = header {
            headers.insert(SERVICE_HEADER, HeaderValue::from_str(h).unwrap());
        }
        target(&uri.parse().unwrap(), &headers)
    }

    fn svc(s: &str) -> Target {
        Target::Service(s.into())
    }

    #[test]
    fn host_forms() {
        assert_eq!(t("/x", Some("api.localhost:7700"), None), svc("api"));
        assert_eq!(t("/x", Some("api.localhost"), None), svc("api"));
        assert_eq!(t("/x", Some("API.Devmesh"), None), svc("api"));
        assert_eq!(t("/x", Some("api.devmesh.:80"), None), svc("api"));
        assert_eq!(t("/x", Some("api"), None), svc("api"));
        assert_eq!(t("/x", Some("api:8080"), None), svc("api"));
        assert_eq!(t("/x", Some("127.0.0.1:7700"), None), Target::Unnamed);
        assert_eq!(t("/x", Some("localhost:7700"), None), Target::Unnamed);
        assert_eq!(t("/x", Some("[::1]:7700"), None), Target::Unnamed);
        assert_eq!(t("/x", None, None), Target::Unnamed);
        assert_eq!(t("/x", Some(".LOCALHOST"), None), Target::Unnamed);
        assert_eq!(t("/x", Some("Web.LocalHost."), None), svc("web"));
    }

    #[test]
    fn cached_routes_match_uncached() {
        let mut cache = HostCache::default();
        for (uri, host, header) in [
            ("/x", Some("api.localhost:7700"), None),
            ("/x", Some("api.localhost:7700"), None),
            ("/x", Some("api.localhost:7700"), Some("db")),
            ("http://web.devmesh/x", Some("api.localhost:7700"), None),
            ("/x", Some("127.0.0.1:7700"), None),
            ("/x", Some("api.localhost:7700"), None),
            ("/x", Some("other.localhost"), None),
            ("/x", None, None),
        ] {
            let mut headers = HeaderMap::new();
            if let Some(h) = host {
                headers.insert(HOST, HeaderValue::from_str(h).unwrap());
            }
            if let Some(h) = header {
                headers.insert(SERVICE_HEADER, HeaderValue::from_str(h).unwrap());
            }
            let uri = uri.parse().unwrap();
            assert_eq!(
                target_cached(&uri, &headers, &mut cache),
                target(&uri, &headers)
            );
        }
    }

    #[test]
    fn absolute_form_wins_over_host() {
        assert_eq!(t("http://api.devmesh/x", Some("other"), None), svc("api"));
        assert_eq!(t("http://web.localhost:7700/x?q=1", None, None), svc("web"));
    }

    #[test]
    fn explicit_header_wins() {
        assert_eq!(
            t(
                "http://api.devmesh/x",
                Some("api.localhost"),
                Some("Billing")
            ),
            Target::Explicit("billing".into())
        );
        assert_eq!(
            t("/x", Some("127.0.0.1"), Some(" db ")),
            Target::Explicit("db".into())
        );
        assert_eq!(t("/x", Some("api.localhost"), Some("")), svc("api"));
    }

    #[test]
    fn path_prefixes() {
        for (path, prefix, ok) in [
            ("/api/x", "/api/", true),
            ("/api", "/api/", true),
            ("/apix", "/api/", false),
            ("/v1", "/v1", true),
            ("/v1/users", "/v1", true),
            ("/v10", "/v1", false),
            ("/", "/api/", false),
        ] {
            assert_eq!(path_matches(path, prefix), ok, "{path} {prefix}");
        }
    }

    #[test]
    fn path_routes_pick_the_longest_claim() {
        use mesh_core::{LocalService, RemoteService, record::ServiceRecord};
        let mut s = crate::choose::tests_support::snapshot();
        let mut api = ServiceRecord::http("api", semver::Version::new(1, 0, 0));
        api.routes = vec!["/api/".into()];
        let mut v2 = ServiceRecord::http("apiv2", semver::Version::new(2, 0, 0));
        v2.routes = vec!["/api/v2/".into()];
        let mut web = ServiceRecord::http("web", semver::Version::new(1, 0, 0));
        web.routes = vec!["/".into()];
        s.local.insert(
            "api".into(),
            LocalService {
                record: api,
                port: 1,
                health: None,
                scheme: mesh_core::Scheme::Http,
            },
        );
        s.local.insert(
            "web".into(),
            LocalService {
                record: web,
                port: 2,
                health: None,
                scheme: mesh_core::Scheme::Http,
            },
        );
        s.remote.push(RemoteService {
            peer: mesh_core::PeerId::random(),
            record: v2,
            expires: std::time::Instant::now(),
        });
        assert_eq!(by_path(&s, "/api/users", Some("web")), Some("api"));
        assert_eq!(by_path(&s, "/api/v2/users", None), Some("apiv2"));
        assert_eq!(by_path(&s, "/index.html", Some("web")), None);
        assert_eq!(by_path(&s, "/index.html", None), Some("web"));
        assert_eq!(by_path(&s, "/index.html", Some("app")), Some("web"));
        assert_eq!(by_path(&s, "/index.html", Some("api")), None);
    }
}
