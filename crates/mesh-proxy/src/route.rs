//! Which service a front-door request is for.

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header::HOST};

/// Header that names the service explicitly; it wins over the host name.
pub const SERVICE_HEADER: &str = "x-devmesh-service";

/// [`SERVICE_HEADER`] as a header name.
pub const SERVICE_HEADER_NAME: HeaderName = HeaderName::from_static(SERVICE_HEADER);

/// Where the service name of a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service name.
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
            return Target::Service(name.to_ascii_lowercase());
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
            svc("billing")
        );
        assert_eq!(t("/x", Some("127.0.0.1"), Some(" db ")), svc("db"));
        assert_eq!(t("/x", Some("api.localhost"), Some("")), svc("api"));
    }
}
