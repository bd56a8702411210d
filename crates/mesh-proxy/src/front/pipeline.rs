//! The request pipeline of the front door: route (which service), choose
//! (which providers, in order), then the attempts, each on the next
//! candidate, until one answers.

use std::{ops::ControlFlow, sync::Arc, time::Instant};

use http::{HeaderMap, Request, Response, Uri, header::HOST};
use http_body_util::Either;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use mesh_core::{PeerId, Snapshot};
use tracing::{debug, warn};

use super::Front;
use crate::{
    PEER_HEADER, Proxy, REQUIRE_HEADER, VERSIONS_HEADER,
    body::{Body, Counted, Tally, UpBody},
    choose,
    error::{AskError, Chain},
    forward, pages, policy,
    replay::{self, Replay},
    route, stamp, upgrade,
    upstream::{self, Proto},
};

/// Where a request may go, and how.
struct Plan<'s> {
    service: String,
    choice: choose::Choice<'s>,
    /// `X-DevMesh-Warning` when no provider satisfies the requirements.
    warning: Option<String>,
    /// The retry policy allows the request's method to be sent again.
    retry: bool,
    /// The service is sticky; `cookie` is the provider the client's cookie
    /// names.
    sticky: bool,
    cookie: Option<PeerId>,
    /// The requirement came in the request's `X-DevMesh-Require`.
    from_header: bool,
}

/// The version side of a request.
struct Asked {
    requirements: Vec<choose::Requirement>,
    mode: policy::VersionMode,
    from_header: bool,
}

impl Proxy {
    /// A request arriving at the front door.
    pub(super) async fn handle(&self, mut req: Request<Incoming>, front: &Front) -> Response<Body> {
        let arrived = Instant::now();
        let snapshot = self.node.snapshot();
        let json = pages::wants_json(req.headers());
        let plan = match self.plan(&snapshot, &req, front, json) {
            ControlFlow::Continue(plan) => plan,
            ControlFlow::Break(page) => return page,
        };
        let routed = super::observe::Routed(arrived.elapsed());
        let upgrade = forward::upgrade_protocol(req.headers());
        let upgrading = upgrade.is_some();
        let on_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let mut out = outgoing(req, upgrade, front, plan.from_header);
        // A request that may go to a second provider keeps what it needs to
        // be sent again: its head, and its body when that is small.
        let replay = if replay::wanted(plan.retry, plan.choice.candidates.len()) {
            match Replay::keep(&mut out).await {
                Ok(replay) => replay,
                Err(e) => {
                    return pages::bad_request(&format!("reading the request body: {e}"), json);
                }
            }
        } else {
            None
        };
        let mut resp = (self.attempts(front, &plan, out, replay, on_upgrade, json)).await;
        resp.extensions_mut().insert(routed);
        resp
    }

    /// Routes and chooses: the plan of a request, or the page that says why
    /// it goes nowhere.
    fn plan<'s>(
        &self,
        snapshot: &'s Snapshot,
        req: &Request<Incoming>,
        front: &Front,
        json: bool,
    ) -> ControlFlow<Response<Body>, Plan<'s>> {
        let service = service_of(snapshot, req, front, json)?;
        let table = self.routing.table();
        let settings = table.service(&service);
        let ask = match ask(snapshot, &service, req.headers(), &table) {
            Ok(ask) => ask,
            Err(e) => return ControlFlow::Break(pages::bad_request(&Chain(&e).to_string(), json)),
        };
        let pin = match header_pin(req.headers()) {
            Ok(pin) => pin.or(settings.and_then(|s| s.pin)),
            Err(e) => return ControlFlow::Break(pages::bad_request(&e, json)),
        };
        let sticky = settings.is_some_and(|s| s.sticky);
        let cookie = sticky
            .then(|| stamp::sticky_cookie(req.headers(), &service))
            .flatten();
        let requirements = &ask.requirements;
        let asked = choose::Ask {
            requirements,
            mode: ask.mode,
            pin,
            sticky: cookie,
        };
        let choice = match choose::choose(snapshot, &service, &asked, &self.routing, Instant::now())
        {
            Ok(choice) => choice,
            Err(refusal) => {
                debug!(%service, ?refusal, "no route");
                return ControlFlow::Break(pages::refused(
                    snapshot,
                    &service,
                    requirements,
                    refusal,
                    json,
                ));
            }
        };
        let warning = choice
            .unmet
            .then(|| unmet_warning(&service, requirements, &choice.candidates[0]));
        let retry = settings
            .and_then(|s| s.retry)
            .unwrap_or(table.defaults.retry)
            .allows(req.method());
        ControlFlow::Continue(Plan {
            service,
            choice,
            warning,
            retry,
            sticky,
            cookie,
            from_header: ask.from_header,
        })
    }

    /// Sends `out` to the candidates of `plan` in order until one answers;
    /// a 502 when none did.
    async fn attempts(
        &self,
        front: &Front,
        plan: &Plan<'_>,
        mut out: Request<UpBody>,
        replay: Option<Replay>,
        on_upgrade: Option<OnUpgrade>,
        json: bool,
    ) -> Response<Body> {
        let service = &plan.service;
        let upgrading = on_upgrade.is_some();
        let mut service_key: Option<Arc<str>> = None;
        let mut last_error = None;
        let now = Instant::now();
        for (attempt, candidate) in plan.choice.candidates.iter().enumerate() {
            // The upstream connection sets the `Host` its backend expects.
            let key = match candidate.target {
                choose::Target::Local { port, scheme, h2 } => upstream::Key::Local {
                    port,
                    scheme,
                    proto: Proto::for_request(h2, upgrading),
                },
                choose::Target::Remote { peer, h2, .. } => upstream::Key::Remote {
                    peer,
                    service: service_key
                        .get_or_insert_with(|| service.as_str().into())
                        .clone(),
                    proto: Proto::for_request(h2, upgrading),
                },
            };
            match front.session.send(key, out).await {
                Ok(resp) => {
                    self.routing.succeeded(service, &candidate.provider);
                    let mut resp = upgrade::finish_response(resp, on_upgrade, &self.tasks);
                    let (provider, service_value) =
                        stamp::provider_values(&front.stamp, &self.peer_names, candidate, service);
                    let cookie = (plan.sticky && plan.cookie != Some(candidate.provider))
                        .then(|| stamp::sticky_cookie_value(service, &candidate.provider))
                        .flatten();
                    let stamping = stamp::Stamping {
                        provider,
                        service: service_value,
                        route: candidate.target.route(),
                        attempt,
                        warning: plan.warning.as_deref(),
                        cookie,
                    };
                    stamp::stamp(resp.headers_mut(), stamping);
                    return resp;
                }
                Err(upstream::SendError { error, request }) => {
                    let reason = Chain(&error).to_string();
                    let backoff = self.routing.failed(service, candidate.provider, now);
                    warn!(%service, provider = %candidate.provider, route = candidate.target.route(), error = %reason, ejected_for = ?backoff, "forwarding failed");
                    last_error = Some((candidate, reason));
                    // A request that was not sent at all, or one kept for
                    // sending again, goes to the next provider.
                    match (request, &replay) {
                        (Some(unsent), _) => out = unsent,
                        (None, Some(replay)) => out = replay.request(),
                        (None, None) => break,
                    }
                }
            }
        }
        let (candidate, reason) = last_error.expect("at least one attempt");
        let mut page = pages::bad_gateway(
            service,
            &candidate.provider.to_string(),
            candidate.target.route(),
            &reason,
            json,
        );
        page.extensions_mut().insert(super::observe::Unserved {
            service: service.clone(),
            attempts: (plan.choice.candidates.iter())
                .position(|c| std::ptr::eq(c, candidate))
                .map_or(1, |i| i + 1),
        });
        page
    }
}

/// The service a request is for: by its header, path, URI or `Host`; or the
/// 404 page that explains how to name one.
fn service_of(
    snapshot: &Snapshot,
    req: &Request<Incoming>,
    front: &Front,
    json: bool,
) -> ControlFlow<Response<Body>, String> {
    let routed = route::target_cached(
        req.uri(),
        req.headers(),
        &mut front.host_cache.lock().expect("host cache lock"),
    );
    match routed {
        route::Target::Explicit(name) => ControlFlow::Continue(name),
        route::Target::Service(name) => {
            match route::by_path(snapshot, req.uri().path(), Some(&name)) {
                Some(claimed) => ControlFlow::Continue(claimed.to_owned()),
                None => ControlFlow::Continue(name),
            }
        }
        route::Target::Unnamed => match route::by_path(snapshot, req.uri().path(), None) {
            Some(claimed) => ControlFlow::Continue(claimed.to_owned()),
            None => {
                let host = match req.headers().get(HOST).and_then(|h| h.to_str().ok()) {
                    Some(host) => host.to_owned(),
                    None => front.local.to_string(),
                };
                ControlFlow::Break(pages::unnamed(snapshot, &host, json))
            }
        },
    }
}

/// The version requirements and mode of a request for `service`: the
/// request's own `X-DevMesh-Require` replaces the node's requirements
/// (from `devmesh route` and the `requires` of this node's services).
fn ask(
    snapshot: &Snapshot,
    service: &str,
    headers: &HeaderMap,
    table: &policy::Table,
) -> Result<Asked, AskError> {
    let settings = table.service(service);
    let (requirements, from_header) = match headers.get(REQUIRE_HEADER) {
        Some(value) => (vec![header_requirement(value)?], true),
        None => (
            choose::node_requirements(snapshot, service, settings),
            false,
        ),
    };
    let mode = match headers.get(VERSIONS_HEADER) {
        Some(value) => value
            .to_str()
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|source| AskError::Versions { source })?,
        None => settings
            .and_then(|s| s.versions)
            .unwrap_or(table.defaults.versions),
    };
    Ok(Asked {
        requirements,
        mode,
        from_header,
    })
}

/// The provider an `X-DevMesh-Peer` header pins the request to.
fn header_pin(headers: &HeaderMap) -> Result<Option<PeerId>, String> {
    let Some(value) = headers.get(PEER_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    text.parse().map(Some).map_err(|_| {
        format!("X-DevMesh-Peer: {text:?} is not a peer id; `devmesh peers` and `devmesh status` show them")
    })
}

/// The requirement of an `X-DevMesh-Require` header.
fn header_requirement(value: &http::HeaderValue) -> Result<choose::Requirement, AskError> {
    let text = value.to_str().unwrap_or_default().trim();
    let req = semver::VersionReq::parse(text).map_err(|source| AskError::Require {
        text: text.to_owned(),
        source,
    })?;
    Ok(choose::Requirement {
        req,
        source: "X-DevMesh-Require".into(),
    })
}

/// The `X-DevMesh-Warning` of a request served by `best` although it does
/// not satisfy `requirements`; logged too.
fn unmet_warning(
    service: &str,
    requirements: &[choose::Requirement],
    best: &choose::Candidate<'_>,
) -> String {
    let requirement = choose::requirements_text(requirements);
    let text = format!(
        "no provider of {service} satisfies {requirement}; served by {service}@{} on {}",
        best.version, best.provider
    );
    warn!(%service, %requirement, version = %best.version, provider = %best.provider, "no provider satisfies the version requirement; using the best available");
    text
}

/// The request as it goes upstream: origin-form URI, no hop-by-hop headers
/// (the upgrade request put back), `X-Forwarded-*` added, the proxy's own
/// request headers removed.
fn outgoing(
    req: Request<Incoming>,
    upgrade: Option<http::HeaderValue>,
    front: &Front,
    from_header: bool,
) -> Request<UpBody> {
    let (parts, body) = req.into_parts();
    let tally = parts.extensions.get::<Arc<Tally>>().cloned();
    let stall = super::limit::BODY_READ_TIMEOUT;
    let mut out = Request::new(Either::Left(Counted::new(body, tally, stall)));
    *out.method_mut() = parts.method;
    *out.uri_mut() = origin_form(parts.uri);
    *out.headers_mut() = parts.headers;
    let headers = out.headers_mut();
    // Room for the X-Forwarded-* headers at once.
    headers.reserve(3);
    forward::strip_hop_by_hop(headers, upgrade);
    forward::add_forwarded(headers, &front.client_value, front.proto);
    strip_devmesh_headers(headers, from_header);
    out
}

/// Removes the headers that speak to this proxy, not to the backend: the
/// service header, the version mode, and a requirement the request brought.
fn strip_devmesh_headers(headers: &mut HeaderMap, from_header: bool) {
    headers.remove(route::SERVICE_HEADER_NAME);
    if from_header {
        headers.remove(REQUIRE_HEADER);
    }
    headers.remove(VERSIONS_HEADER);
    headers.remove(PEER_HEADER);
}

/// The path and query of a request, as the upstream gets it.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return uri;
    }
    uri.path_and_query()
        .and_then(|pq| pq.as_str().parse().ok())
        .unwrap_or_else(|| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        let cases = [
            ("/a/b?c=1", "/a/b?c=1"),
            ("http://api.devmesh/x?y", "/x?y"),
            ("http://api.devmesh", "/"),
            ("api.devmesh:80", "/"),
        ];
        for (uri, want) in cases {
            assert_eq!(origin_form(uri.parse().unwrap()), want, "{uri}");
        }
    }

    #[test]
    fn devmesh_headers_stay_with_the_proxy() {
        let mut h = HeaderMap::new();
        for name in [
            "x-devmesh-service",
            "x-devmesh-require",
            "x-devmesh-versions",
            "accept",
        ] {
            h.insert(name, http::HeaderValue::from_static("v"));
        }
        let mut kept = h.clone();
        strip_devmesh_headers(&mut kept, false);
        assert_eq!(kept.len(), 2);
        assert!(kept.contains_key("x-devmesh-require"), "the node's own");
        assert!(kept.contains_key("accept"));
        strip_devmesh_headers(&mut h, true);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn header_requirements_parse_or_say_how_to_write_them() {
        let ok = header_requirement(&http::HeaderValue::from_static(" ^2.1 ")).unwrap();
        assert_eq!(ok.req.to_string(), "^2.1");
        assert_eq!(ok.source, "X-DevMesh-Require");
        let e = header_requirement(&http::HeaderValue::from_static("banana")).unwrap_err();
        let text = Chain(&e).to_string();
        assert!(
            text.starts_with("X-DevMesh-Require: \"banana\" is not a version requirement"),
            "{text}"
        );
        assert!(text.contains("^2.1"), "{text}");
    }

    #[test]
    fn proto_is_h2_only_for_h2_services_and_never_for_upgrades() {
        assert_eq!(Proto::for_request(true, false), Proto::H2);
        assert_eq!(Proto::for_request(true, true), Proto::H1);
        assert_eq!(Proto::for_request(false, false), Proto::H1);
    }
}
