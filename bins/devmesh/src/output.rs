//! Human and JSON output of listings. Results go to stdout.

use mesh_control::{ListenerStatus, PeerStatus, RouteResult, Status};

/// Prints any result as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("devmesh: encoding JSON: {e}"),
    }
}

/// Prints `value` as pretty JSON with `--json`, else the way `human`
/// prints it.
pub fn emit<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) {
    if json {
        self::json(value);
    } else {
        human(value);
    }
}

fn short(peer: &str) -> String {
    if peer.len() > 16 {
        format!("{}…{}", &peer[..8], &peer[peer.len() - 6..])
    } else {
        peer.to_owned()
    }
}

/// Prints `rows` as aligned columns, in colour on a terminal.
fn table(rows: &[Vec<String>]) {
    print!("{}", aligned_with(rows, crate::colour::stdout_enabled()));
}

/// `rows` as aligned columns, two spaces apart, one line each.
pub fn aligned(rows: &[Vec<String>]) -> String {
    aligned_with(rows, false)
}

/// [`aligned`], with the state words (health, kind, connection) in colour
/// when `colour`; the words stay, so meaning never rests on colour alone.
fn aligned_with(rows: &[Vec<String>], colour: bool) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let padded = format!("{cell:<w$}", w = widths[i]);
                if colour {
                    crate::colour::state(cell, &padded)
                } else {
                    padded
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One TCP listener: `db  tcp  127.0.0.1:5432 → <peer> (direct)`, and
/// its problem on the next line.
pub fn listener(l: &ListenerStatus) {
    println!(
        "{}  tcp  {} → {}",
        l.service,
        l.listen.as_deref().unwrap_or("(not listening)"),
        l.provider.as_deref().unwrap_or("no provider")
    );
    if let Some(problem) = &l.problem {
        println!("    {problem}");
    }
}

/// `devmesh status`.
pub fn status(s: &Status) {
    println!("node       {}", s.peer_id);
    if s.role == "relay" {
        println!("role       relay (bootstrap, relay and AutoNAT server for every namespace)");
        for addr in &s.external_addrs {
            println!("public     {addr}");
        }
    } else {
        println!(
            "namespace  {} ({})",
            s.namespace,
            if s.has_secret {
                "secret set"
            } else {
                "no secret: anyone who knows the name can join"
            }
        );
    }
    if let Some(proxy) = &s.proxy_addr {
        let port = proxy.rsplit(':').next().unwrap_or("");
        println!("proxy      http://{proxy}  (open http://<service>.localhost:{port}/)");
    }
    for addr in &s.listen_addrs {
        println!("listen     {addr}");
    }
    for f in &s.admission_failures {
        if f.inbound {
            println!("refused    {} earlier: {}", short(&f.peer_id), f.reason);
        } else {
            println!("problem    {}", f.reason);
        }
    }
    if let Some(h) = &s.home {
        println!("home       {}", h.home);
        println!("config     {}", h.config_file);
        if let Some(log) = &h.log_file {
            println!("log        {log}");
        }
        if !h.restored_shares.is_empty() || !h.restored_joins.is_empty() {
            println!(
                "restored   {} detached share(s){}, {} join(s) from before the last restart",
                h.restored_shares.len(),
                if h.restored_shares.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", h.restored_shares.join(", "))
                },
                h.restored_joins.len()
            );
        }
    }
    println!();
    if s.role == "relay" {
        return;
    }
    conflicts(s);
    for l in &s.listeners {
        listener(l);
    }
    if !s.listeners.is_empty() {
        println!();
    }
    if s.services.is_empty() {
        println!("no services yet: share one with `devmesh run <name> --port <port>`");
        return;
    }
    let mut rows = vec![vec![
        "SERVICE".into(),
        "VERSION".into(),
        "ROUTE".into(),
        "PROVIDER".into(),
        "CONNECTION".into(),
        "HEALTH".into(),
        "URL".into(),
    ]];
    for svc in &s.services {
        let mut connection = match (&svc.connection, svc.port) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => format!("port {p}"),
            (None, None) => "-".into(),
        };
        // How the backend is spoken to, when it is not plain HTTP/1.1.
        if svc.scheme.as_deref() == Some("https") {
            connection.push_str(" https");
        }
        if svc.h2 {
            connection.push_str(" h2");
        }
        rows.push(vec![
            svc.name.clone(),
            svc.version.clone(),
            svc.route.clone(),
            short(&svc.provider),
            connection,
            svc.health.clone(),
            svc.url.clone(),
        ]);
    }
    table(&rows);
    for svc in &s.services {
        if let Some(failure) = &svc.health_failure {
            println!("{}: last failed health check: {failure}", svc.name);
        }
    }
}

fn conflicts(s: &Status) {
    if s.conflicts.is_empty() {
        return;
    }
    println!("version conflicts (no provider satisfies the requirement):");
    for c in &s.conflicts {
        let available = if c.available.is_empty() {
            "no provider at all".to_owned()
        } else {
            format!("there is {}", c.available.join(", "))
        };
        println!(
            "  {} requires {} {}: {available}",
            c.consumer, c.service, c.requirement
        );
    }
    println!();
}

/// `devmesh route`.
pub fn routes(r: &RouteResult) {
    println!(
        "versions   {} (when no provider satisfies a requirement)",
        r.versions
    );
    println!(
        "retry      {} (which failed requests are sent again to the next provider)",
        r.retry
    );
    if r.services.is_empty() {
        println!("\nno services known yet");
    }
    for s in &r.services {
        println!();
        let mut flags = Vec::new();
        if let Some(pin) = &s.pin {
            flags.push(format!("pinned to {pin}"));
        }
        for req in &s.requirements {
            flags.push(format!("requires {req}"));
        }
        if s.versions != r.versions {
            flags.push(format!("versions {}", s.versions));
        }
        if s.retry != r.retry {
            flags.push(format!("retry {}", s.retry));
        }
        if s.sticky {
            flags.push("sticky".into());
        }
        if flags.is_empty() {
            println!("{}", s.service);
        } else {
            println!("{}  [{}]", s.service, flags.join("; "));
        }
        if let Some(refusal) = &s.refusal {
            println!("  no route: {refusal}");
        }
        for (i, o) in s.order.iter().enumerate() {
            println!("  {}. {o}", i + 1);
        }
        for e in &s.ejected {
            println!("  ejected: {e}");
        }
    }
}

/// Widest a cell of the peers table gets without `--wide`.
const NARROW_CELL: usize = 24;

/// `devmesh peers`: fits 100 columns (short ids, the first address without
/// its `/p2p`, the services cut), or everything with `wide`.
pub fn peers(peers: &[PeerStatus], wide: bool) {
    if peers.is_empty() {
        println!("no connected peers: connect with `devmesh join <multiaddr>`");
        return;
    }
    table(&peer_rows(peers, wide));
}

fn peer_rows(peers: &[PeerStatus], wide: bool) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "PEER".into(),
        "KIND".into(),
        "CONNECTION".into(),
        "RTT".into(),
        "ADDRESS".into(),
        "SERVICES".into(),
    ]];
    for p in peers {
        let address = p.addresses.first().cloned().unwrap_or_default();
        let services = if p.services.is_empty() {
            "-".into()
        } else {
            p.services.join(",")
        };
        let (peer, address, services) = if wide {
            (p.peer_id.clone(), p.addresses.join(" "), services)
        } else {
            let bare = address.split("/p2p/").next().unwrap_or_default().to_owned();
            (short(&p.peer_id), cut(&bare), cut(&services))
        };
        rows.push(vec![
            peer,
            p.kind.clone(),
            p.connection.clone(),
            p.rtt_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
            address,
            services,
        ]);
    }
    rows
}

/// `text` cut to [`NARROW_CELL`] characters, with `…` where it was cut.
fn cut(text: &str) -> String {
    if text.chars().count() <= NARROW_CELL {
        return text.to_owned();
    }
    let kept: String = text.chars().take(NARROW_CELL - 1).collect();
    format!("{kept}…")
}

/// The header of `devmesh inspect`'s table.
pub fn requests_header() {
    println!("ID  TIME  SIDE  METHOD  STATUS  SERVICE  ROUTE  MS  URL");
}

fn request_cells(e: &serde_json::Value) -> Vec<String> {
    let text = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    let time = text("time");
    let status = match e["status"].as_u64() {
        Some(0) | None => "-".to_owned(),
        Some(s) => s.to_string(),
    };
    vec![
        e["id"].to_string(),
        time.get(11..23).unwrap_or(&time).to_owned(),
        text("side"),
        text("method"),
        status,
        text("service"),
        text("route"),
        format!("{:.1}", e["duration_ms"].as_f64().unwrap_or(0.0)),
        text("url"),
    ]
}

/// One row of `devmesh inspect --follow`, as it comes.
pub fn request_row(e: &serde_json::Value) {
    println!("{}", request_cells(e).join("  "));
}

/// `devmesh inspect`: the requests, newest first.
pub fn requests(list: &serde_json::Value) {
    let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if entries.is_empty() {
        println!(
            "no requests yet (or none match): make one through the front door, then run `devmesh inspect` again"
        );
        return;
    }
    let mut rows = vec![
        [
            "ID", "TIME", "SIDE", "METHOD", "STATUS", "SERVICE", "ROUTE", "MS", "URL",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(entries.iter().map(request_cells));
    table(&rows);
}

/// A body of an entry: text, or base64 said so.
fn body_text(b: &serde_json::Value) -> String {
    let data = b["data"].as_str().unwrap_or("");
    let mut out = match b["encoding"].as_str() {
        Some("base64") => format!("(binary, base64) {data}"),
        _ => data.to_owned(),
    };
    if b["truncated"].as_bool() == Some(true) {
        out.push_str(&format!(
            "\n… (first {} of {} bytes)",
            data.len(),
            b["total"]
        ));
    }
    out
}

/// One side of an entry: request and response.
fn request_side(e: &serde_json::Value) {
    let text = |k: &str| e[k].as_str().unwrap_or("");
    println!(
        "{} {} → {}  ({} ms, {} side, trace {})",
        text("method"),
        text("url"),
        e["status"],
        e["timings"]["duration_ms"],
        text("side"),
        text("trace_id"),
    );
    let headers = |k: &str, mark: &str| {
        for h in e[k].as_array().map(Vec::as_slice).unwrap_or_default() {
            println!(
                "{mark} {}: {}",
                h[0].as_str().unwrap_or(""),
                h[1].as_str().unwrap_or("")
            );
        }
    };
    headers("request_headers", ">");
    let body = body_text(&e["request_body"]);
    if !body.is_empty() {
        println!("{body}");
    }
    headers("response_headers", "<");
    let body = body_text(&e["response_body"]);
    if !body.is_empty() {
        println!("{body}");
    }
}

/// `devmesh inspect ID`: both sides of one request.
pub fn request(e: &serde_json::Value) {
    let text = |k: &str| e[k].as_str().unwrap_or("");
    println!(
        "#{}  {}  {}@{}  provider {}  route {}",
        e["id"],
        text("time"),
        text("service"),
        text("version"),
        if text("provider").is_empty() {
            "-"
        } else {
            text("provider")
        },
        text("route"),
    );
    request_side(e);
    println!();
    match &e["provider_side"] {
        serde_json::Value::Null => println!(
            "provider side: none ({})",
            e["provider_side_reason"].as_str().unwrap_or("not asked")
        ),
        side => {
            println!(
                "provider side, on {}:",
                side["provider"].as_str().unwrap_or("?")
            );
            request_side(side);
        }
    }
}

/// `devmesh replay`: both statuses and the diff.
pub fn replay(r: &serde_json::Value) {
    for w in r["warnings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        eprintln!("devmesh: {}", w.as_str().unwrap_or(""));
    }
    println!(
        "original  #{}  {}",
        r["original"]["id"], r["original"]["status"]
    );
    println!(
        "replayed  #{}  {}",
        r["replayed"]["id"], r["replayed"]["status"]
    );
    match r["diff"].as_str() {
        Some("") | None => println!("the responses are the same"),
        Some(diff) => print!("{diff}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_table_fits_100_columns_unless_wide() {
        let peer = PeerStatus {
            peer_id: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
            addresses: vec![
                "/ip4/198.51.100.200/udp/41234/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
            ],
            connection: "relayed".into(),
            kind: "member".into(),
            rtt_ms: Some(123.4),
            agent: None,
            services: vec!["api@1.4.2".into(), "web@2.0.0".into(), "db@15.4.0".into(), "cache@7.2.0".into()],
        };
        let narrow = aligned(&peer_rows(std::slice::from_ref(&peer), false));
        for line in narrow.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(narrow.contains("12D3KooW…x6nXTN"), "{narrow}");
        let wide = aligned(&peer_rows(&[peer], true));
        assert!(wide.contains("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"));
        assert!(wide.contains("cache@7.2.0"));
    }
}
