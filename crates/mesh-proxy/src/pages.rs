//! Short, actionable error responses of the proxy.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use mesh_core::{Provider, Snapshot};
use serde_json::json;

use crate::Body;

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
