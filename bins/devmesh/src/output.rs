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

/// Prints `rows` as aligned columns.
fn table(rows: &[Vec<String>]) {
    print!("{}", aligned(rows));
}

/// `rows` as aligned columns, two spaces apart, one line each.
pub fn aligned(rows: &[Vec<String>]) -> String {
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
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
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
        println!("problem    {}", f.reason);
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
        "retry      {} (requests sent again to the next provider)",
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

/// `devmesh peers`.
pub fn peers(peers: &[PeerStatus]) {
    if peers.is_empty() {
        println!("no connected peers: connect with `devmesh join <multiaddr>`");
        return;
    }
    let mut rows = vec![vec![
        "PEER".into(),
        "KIND".into(),
        "CONNECTION".into(),
        "RTT".into(),
        "ADDRESS".into(),
        "SERVICES".into(),
    ]];
    for p in peers {
        rows.push(vec![
            p.peer_id.clone(),
            p.kind.clone(),
            p.connection.clone(),
            p.rtt_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
            p.addresses.first().cloned().unwrap_or_default(),
            if p.services.is_empty() {
                "-".into()
            } else {
                p.services.join(",")
            },
        ]);
    }
    table(&rows);
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
