//! Short, actionable error responses of the proxy.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use mesh_core::{Provider, Snapshot};
use serde_json::json;

use crate::{
    body::Body,
    choose::{Listed, Refusal, Requirement},
};

/// Whether the client prefers JSON error bodies.
pub fn wants_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn respond(
    status: StatusCode,
    json: bool,
    text: String,
    value: serde_json::Value,
) -> Response<Body> {
    let (body, ctype) = if json {
        (value.to_string(), "application/json")
    } else {
        (text, "text/plain; charset=utf-8")
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn known_services(snapshot: &Snapshot) -> Vec<serde_json::Value> {
    snapshot
        .service_names()
        .into_iter()
        .flat_map(|name| {
            snapshot.providers(name).into_iter().map(move |p| {
                let (provider, route) = match p {
                    Provider::Local(_) => (snapshot.local_peer.to_string(), "local"),
                    Provider::Remote(r) => (r.peer.to_string(), "remote"),
                };
                json!({"service": name, "version": p.record().version.to_string(), "provider": provider, "route": route})
            })
        })
        .collect()
}

fn known_text(snapshot: &Snapshot) -> String {
    let known = known_services(snapshot);
    if known.is_empty() {
        return "No services are known on this mesh yet.".to_owned();
    }
    let mut s = String::from("Known services:\n");
    for k in known {
        s.push_str(&format!(
            "  {}@{} on {} ({})\n",
            k["service"].as_str().unwrap_or_default(),
            k["version"].as_str().unwrap_or_default(),
            k["provider"].as_str().unwrap_or_default(),
            k["route"].as_str().unwrap_or_default(),
        ));
    }
    s
}

/// 503: nobody provides the service.
pub fn no_provider(snapshot: &Snapshot, service: &str, json: bool) -> Response<Body> {
    let admission: Vec<&str> = snapshot
        .admission_failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect();
    let admission_text: String = admission
        .iter()
        .map(|r| format!("Admission problem: {r}\n"))
        .collect();
    let text = format!(
        "devmesh: no provider for service \"{service}\" in namespace \"{ns}\".\n{admission_text}{known}\nShare it from a machine of the mesh with `devmesh run {service} --port <port>`; `devmesh status` lists what this node sees.\n",
        ns = snapshot.namespace,
        known = known_text(snapshot),
    );
    let value = json!({
        "error": "no_provider",
        "service": service,
        "namespace": snapshot.namespace,
        "known": known_services(snapshot),
        "admission_failures": admission,
        "hint": format!("devmesh run {service} --port <port>"),
    });
    respond(StatusCode::SERVICE_UNAVAILABLE, json, text, value)
}

/// 404 for requests that name no service: explains how to name one.
pub fn unnamed(snapshot: &Snapshot, proxy_host: &str, json: bool) -> Response<Body> {
    let example = proxy_host;
    let port = example
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("<proxy-port>");
    let text = format!(
        "devmesh proxy: this request names no service.\nOpen http://<service>.localhost:{port}/, set HTTP_PROXY=http://{example} and use http://<service>.devmesh/, or send an X-DevMesh-Service header.\n{}",
        known_text(snapshot),
    );
    let value = json!({"error": "no_service_named", "known": known_services(snapshot)});
    respond(StatusCode::NOT_FOUND, json, text, value)
}

/// 502: the chosen provider could not be reached.
pub fn bad_gateway(
    service: &str,
    provider: &str,
    route: &str,
    reason: &str,
    json: bool,
) -> Response<Body> {
    let hint = if route == "local" {
        "Is the service running and listening on its port? Check with `devmesh status`."
    } else {
        "The provider node may have stopped or be unreachable; `devmesh peers` shows the connections."
    };
    let text = format!(
        "devmesh: service \"{service}\" on {provider} ({route}) is unreachable: {reason}.\n{hint}\n"
    );
    let value = json!({"error": "provider_unreachable", "service": service, "provider": provider, "route": route, "reason": reason, "hint": hint});
    respond(StatusCode::BAD_GATEWAY, json, text, value)
}

/// 400: a devmesh header of the request is malformed.
pub fn bad_request(message: &str, json: bool) -> Response<Body> {
    let text = format!("devmesh: bad request: {message}\n");
    let value = json!({"error": "bad_request", "reason": message});
    respond(StatusCode::BAD_REQUEST, json, text, value)
}

fn providers_value(providers: &[Listed]) -> Vec<serde_json::Value> {
    providers
        .iter()
        .map(|p| {
            json!({
                "provider": p.provider.to_string(),
                "version": p.version.to_string(),
                "health": p.health.to_string(),
                "route": if p.local { "local" } else { "remote" },
            })
        })
        .collect()
}

fn providers_text(service: &str, providers: &[Listed]) -> String {
    let mut s = String::from("Providers:\n");
    for p in providers {
        s.push_str(&format!(
            "  {service}@{} on {} ({}, health {})\n",
            p.version,
            p.provider,
            if p.local { "local" } else { "remote" },
            p.health
        ));
    }
    s
}

/// The answer when the choice of a provider found nowhere to send a request:
/// 503 without (usable) providers, 409 for a version conflict in strict mode.
pub fn refused(
    snapshot: &Snapshot,
    service: &str,
    requirements: &[Requirement],
    refusal: Refusal,
    json: bool,
) -> Response<Body> {
    let requirement = crate::choose::requirements_text(requirements);
    match refusal {
        Refusal::NoProvider => no_provider(snapshot, service, json),
        Refusal::PinnedAway { pin, providers } => {
            let text = format!(
                "devmesh: service \"{service}\" is pinned to peer {pin}, which does not provide it now.\n{}Clear the pin with `devmesh route {service} --clear`, or pin another provider with `devmesh route {service} --peer <peer id>`.\n",
                providers_text(service, &providers)
            );
            let value = json!({
                "error": "pinned_provider_missing",
                "service": service,
                "pin": pin.to_string(),
                "providers": providers_value(&providers),
                "hint": format!("devmesh route {service} --clear"),
            });
            respond(StatusCode::SERVICE_UNAVAILABLE, json, text, value)
        }
        Refusal::AllUnhealthy { providers } => {
            let text = format!(
                "devmesh: every provider of service \"{service}\" fails its health check.\n{}Check the service on those machines; `devmesh status` shows health as it changes.\n",
                providers_text(service, &providers)
            );
            let value = json!({
                "error": "all_providers_unhealthy",
                "service": service,
                "providers": providers_value(&providers),
            });
            respond(StatusCode::SERVICE_UNAVAILABLE, json, text, value)
        }
        Refusal::VersionConflict { providers } => {
            let text = format!(
                "devmesh: no provider of service \"{service}\" satisfies {requirement} (strict version mode).\n{}Run a matching version with `devmesh run {service} --version <version>`, change the requirement, or use warn mode (`X-DevMesh-Versions: warn`).\n",
                providers_text(service, &providers)
            );
            let value = json!({
                "error": "version_conflict",
                "service": service,
                "requirement": requirement,
                "providers": providers_value(&providers),
            });
            respond(StatusCode::CONFLICT, json, text, value)
        }
    }
}
