//! Header handling for forwarded requests and responses.

use std::net::IpAddr;

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{
        CONNECTION, Entry, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING,
        UPGRADE,
    },
};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that describe one hop and are never forwarded as they are.
/// (`Trailer` is not one of them: it announces the trailer fields of a
/// chunked message, and HTTP/1.1 clients get trailers only when it passes.)
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus an
/// `Upgrade` header), such as `websocket`.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header lists,
/// and puts back the upgrade request when there is one.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // Most messages have none of them: one pass over the names tells.
    if headers.keys().any(|k| k == TE || HOP_BY_HOP.contains(k)) {
        strip_present(headers);
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

fn strip_present(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // `TE: trailers` is the one TE value that passes through proxies.
    if headers
        .get(TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
    debug_assert!(!headers.contains_key(TRANSFER_ENCODING));
}

/// Gives an HTTP/2 request, which names its host in `:authority` (the URI),
/// the `Host` header an HTTP/1.1 request has, so routing, pages and
/// `X-Forwarded-Host` treat both alike. An HTTP/2 upstream gets it back as
/// `:authority`.
pub fn authority_to_host<B>(req: &mut http::Request<B>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    if let Some(value) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, value);
    }
}

/// A client address as a header value, for [`add_forwarded`].
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("IP addresses are header-safe")
}

/// Adds `X-Forwarded-For/Host/Proto` for a request that entered at the
/// front door from `client` (made by [`client_value`]) over `proto`
/// (`http` or `https`).
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, proto: &'static str) {
    let host = headers.get(HOST).cloned();
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut prior) => {
            let xff = match prior.get().to_str() {
                Ok(prior) => {
                    let mut joined = Vec::with_capacity(prior.len() + 2 + client.len());
                    joined.extend_from_slice(prior.as_bytes());
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(client.as_bytes());
                    HeaderValue::from_bytes(&joined).ok()
                }
                Err(_) => Some(client.clone()),
            };
            if let Some(v) = xff {
                prior.insert(v);
            }
        }
        Entry::Vacant(none) => {
            none.insert(client.clone());
        }
    }
    if let Some(host) = host {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static(proto));
}

/// The `Host` a local backend on `port` gets, `localhost:<port>` (dev
/// servers reject host names they do not know; [`add_forwarded`] keeps the
/// original in `X-Forwarded-Host`). Every `localhost:<port>` of the proxy
/// is made here.
pub fn backend_authority(port: u16) -> String {
    format!("localhost:{port}")
}

/// [`backend_authority`] as a header value.
pub fn backend_host(port: u16) -> HeaderValue {
    HeaderValue::from_str(&backend_authority(port)).expect("a host and port are header-safe")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("accept", "*/*"),
        ]);
        assert!(upgrade_protocol(&h).is_none());
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, None);
        assert!(h.contains_key("te"));
    }

    #[test]
    fn keeps_trailer_announcements_and_te_trailers() {
        let mut h = map(&[
            ("trailer", "grpc-status, x-sum"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.get("trailer").unwrap(), "grpc-status, x-sum");
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert!(!h.contains_key("transfer-encoding"));
    }

    #[test]
    fn h2_authority_becomes_host() {
        let mut req = http::Request::get("http://api.localhost:7700/x")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        authority_to_host(&mut req);
        assert_eq!(req.headers()["host"], "api.localhost:7700");
        let mut req = http::Request::get("http://other/x")
            .header("host", "api.localhost")
            .body(())
            .unwrap();
        authority_to_host(&mut req);
        assert_eq!(req.headers()["host"], "api.localhost");
    }

    #[test]
    fn keeps_upgrade() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let up = upgrade_protocol(&h);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, up);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
    }

    #[test]
    fn forwarded_headers_and_host_rewrite() {
        let mut h = map(&[
            ("host", "api.localhost:7700"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        add_forwarded(&mut h, &client_value("127.0.0.1".parse().unwrap()), "http");
        h.insert(HOST, backend_host(3000));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.localhost:7700");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("host").unwrap(), "localhost:3000");
        let mut h = map(&[("x-forwarded-for", "a\u{e9}")]);
        add_forwarded(&mut h, &client_value("::1".parse().unwrap()), "https");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
