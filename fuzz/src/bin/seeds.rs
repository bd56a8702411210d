//! Writes the seed corpora of the fuzz targets, `<dir>/<target>/seed-*`,
//! with the crates' own encoders: real announcements, sealed records,
//! handshake and sync messages, hellos, an invite token, request heads,
//! tunnel traffic, and every TOML example of the docs.
//! `cargo xtask fuzz --seed` runs it.

use std::{collections::BTreeMap, fs, path::Path};

use devmesh_fuzz::{block_on, encode_chunks, namespace};
use libp2p::{
    identity::Keypair,
    request_response::{Codec as _, cbor::codec::Codec},
};
use mesh_config::{DaemonFile, Project};
use mesh_core::{
    Invite, PeerId, Secret, SyncEntry, SyncRequest, SyncResponse,
    admission::{AuthRequest, AuthResponse},
    record::{Announcement, FORMAT_VERSION, ServiceRecord},
};
use mesh_proxy::{inspect::wire, tcp, tunnel};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Built with the targets, this binary's code calls the coverage hooks
    // libFuzzer defines; a reference to libFuzzer links them in.
    std::hint::black_box(libfuzzer_sys::fuzzer_mutate as fn(&mut [u8], usize, usize) -> usize);
    let dir = std::env::args().nth(1).ok_or("usage: seeds <corpus dir>")?;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut all: BTreeMap<&str, Seeds> = BTreeMap::new();
    let ns = namespace();
    let announcements = announcements();
    all.insert(
        "announcement",
        announcements.iter().map(|(n, a)| (*n, a.clone())).collect(),
    );
    all.insert(
        "record_open",
        announcements
            .iter()
            .map(|(n, a)| (*n, ns.seal(a)))
            .collect(),
    );
    all.insert("sync", sync(&announcements));
    all.insert("admission", admission());
    all.insert("tunnel_hello", hellos());
    all.insert("inspect_wire", inspect_wire());
    all.insert("tcp_frames", vec![("abc-end", frames(&[b"abc", b""]))]);
    all.insert("invite", vec![("token", invite().into_bytes())]);
    all.insert("route", route());
    all.insert(
        "traceparent",
        vec![
            ("spec", TRACEPARENT.as_bytes().to_vec()),
            (
                "version-01",
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra".to_vec(),
            ),
        ],
    );
    all.insert("trace_sniff", tunnel_traffic());
    all.insert(
        "inspect_sniff",
        tunnel_traffic()
            .into_iter()
            .map(|(n, t)| (n, [&[1u8][..], &t].concat()))
            .collect(),
    );
    let (project, daemon) = toml_examples(&docs)?;
    all.insert("project_toml", project);
    all.insert("daemon_toml", daemon);

    for (target, seeds) in all {
        let out = Path::new(&dir).join(target);
        fs::create_dir_all(&out)?;
        for entry in fs::read_dir(&out)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                fs::remove_file(path)?;
            }
        }
        for (name, bytes) in seeds {
            fs::write(out.join(format!("seed-{name}")), bytes)?;
        }
    }
    Ok(())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Signed announcements of a fixed key: one with an HTTP and a TCP
/// service using every field, one withdrawing everything.
fn announcements() -> Vec<(&'static str, Vec<u8>)> {
    let key = Keypair::ed25519_from_bytes([7u8; 32]).expect("a fixed ed25519 key");
    let provider = key.public().to_peer_id();
    let version = semver::Version::new(1, 4, 2);
    let api = ServiceRecord {
        routes: vec!["/api/".into()],
        tags: vec!["backend".into()],
        requires: BTreeMap::from([("db".into(), "^15".into())]),
        h2: true,
        ..ServiceRecord::http("api", version.clone())
    };
    let db = ServiceRecord::tcp("db", semver::Version::new(15, 2, 0), 5432);
    let announce = |seq, services| Announcement {
        v: FORMAT_VERSION,
        namespace: devmesh_fuzz::NAMESPACE.into(),
        provider,
        seq,
        ttl_secs: 30,
        services,
    };
    vec![
        (
            "two-services",
            announce(7, vec![api, db]).sign(&key).expect("signs"),
        ),
        ("withdrawn", announce(8, vec![]).sign(&key).expect("signs")),
    ]
}

fn cbor_request<Req, Resp>(req: Req) -> Vec<u8>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send,
{
    let mut out = Vec::new();
    let protocol = mesh_core::SYNC_PROTOCOL;
    block_on(Codec::<Req, Resp>::default().write_request(&protocol, &mut out, req))
        .expect("encodes in memory");
    out
}

fn cbor_response<Req, Resp>(resp: Resp) -> Vec<u8>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send,
{
    let mut out = Vec::new();
    let protocol = mesh_core::SYNC_PROTOCOL;
    block_on(Codec::<Req, Resp>::default().write_response(&protocol, &mut out, resp))
        .expect("encodes in memory");
    out
}

/// `first` then `rest`: the selector byte of a target, then its input.
fn pick(first: u8, rest: &[u8]) -> Vec<u8> {
    [&[first][..], rest].concat()
}

fn sync(announcements: &[(&str, Vec<u8>)]) -> Seeds {
    let ns = namespace();
    let response = SyncResponse {
        entries: announcements
            .iter()
            .map(|(_, a)| SyncEntry {
                sealed: ns.seal(a),
                remaining_ms: 25_000,
            })
            .collect(),
    };
    vec![
        (
            "request",
            pick(0, &cbor_request::<_, SyncResponse>(SyncRequest { v: 1 })),
        ),
        (
            "response",
            pick(1, &cbor_response::<SyncRequest, _>(response)),
        ),
    ]
}

fn admission() -> Seeds {
    let ns = namespace();
    let (a, b) = (PeerId::random(), PeerId::random());
    let nonce = [9u8; mesh_core::admission::NONCE_LEN];
    let request = AuthRequest {
        v: 1,
        namespace_id: ns.id().to_vec(),
        nonce: nonce.to_vec(),
    };
    let member = AuthResponse::Member {
        proof: ns.proof(&nonce, &a, &b).to_vec(),
    };
    vec![
        (
            "request",
            pick(0, &cbor_request::<_, AuthResponse>(request)),
        ),
        ("member", pick(1, &cbor_response::<AuthRequest, _>(member))),
        (
            "relay",
            pick(1, &cbor_response::<AuthRequest, _>(AuthResponse::Relay)),
        ),
    ]
}

fn frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    block_on(tunnel::write_frame(&mut out, value)).expect("a small frame");
    out
}

fn hellos() -> Seeds {
    let hello = tunnel::Hello {
        v: tunnel::TUNNEL_VERSION,
        namespace: devmesh_fuzz::NAMESPACE.into(),
        service: "api".into(),
        h2: true,
    };
    let accepted = tunnel::HelloReply {
        ok: true,
        error: None,
        host: Some("localhost:3000".into()),
        scheme: Some(mesh_core::Scheme::Https),
    };
    let refused = tunnel::HelloReply {
        ok: false,
        error: Some("api is not provided here".into()),
        host: None,
        scheme: None,
    };
    let tcp = tcp::Hello {
        v: tcp::TCP_VERSION,
        namespace: devmesh_fuzz::NAMESPACE.into(),
        service: "db".into(),
        require: Some("^15, >=15.2".into()),
    };
    vec![
        ("http", pick(0, &frame(&hello))),
        ("accepted", pick(1, &frame(&accepted))),
        ("refused", pick(1, &frame(&refused))),
        ("tcp", pick(2, &frame(&tcp))),
    ]
}

fn inspect_wire() -> Seeds {
    let ask = wire::Ask {
        v: wire::VERSION,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    };
    let entry = serde_json::json!({
        "side": "provider",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "method": "GET",
        "url": "/api/users",
        "status": 200,
        "request_headers": [["host", "localhost:3000"]],
    });
    let answer = wire::Answer {
        v: wire::VERSION,
        entry: Some(entry),
        reason: None,
    };
    let encode = |bytes: Result<Vec<u8>, wire::WireError>| bytes.expect("a small message");
    vec![
        ("ask", pick(0, &encode(wire::encode(&ask, wire::MAX_ASK)))),
        (
            "answer",
            pick(1, &encode(wire::encode(&answer, wire::MAX_ANSWER))),
        ),
    ]
}

fn frames(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn invite() -> String {
    let secret = Secret::parse(devmesh_fuzz::SECRET).expect("the fixed secret");
    let key = Keypair::ed25519_from_bytes([7u8; 32]).expect("a fixed ed25519 key");
    let peer = key.public().to_peer_id();
    Invite {
        namespace: devmesh_fuzz::NAMESPACE.into(),
        secret: Some(secret),
        bootstrap: vec![
            format!("/ip4/203.0.113.7/tcp/4001/p2p/{peer}")
                .parse()
                .expect("a multiaddr"),
            format!("/dns4/relay.example.com/udp/4001/quic-v1/p2p/{peer}")
                .parse()
                .expect("a multiaddr"),
        ],
    }
    .encode()
}

fn route() -> Seeds {
    vec![
        (
            "host-then-same-host",
            b"GET /users HTTP/1.1\r\nHost: api.localhost:7700\r\n\r\nGET /users/1 HTTP/1.1\r\nHost: api.localhost:7700\r\n\r\n".to_vec(),
        ),
        (
            "header-and-absolute",
            b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:7700\r\nX-DevMesh-Service: API\r\n\r\nGET http://web.devmesh/api/v2/q?x=1 HTTP/1.1\r\nHost: web.devmesh\r\n\r\n".to_vec(),
        ),
        (
            "unnamed-path",
            b"GET /v1/items HTTP/1.1\r\nHost: [::1]:7700\r\n\r\n".to_vec(),
        ),
    ]
}

/// A traced request and its response, whole and in pieces.
fn tunnel_traffic() -> Seeds {
    let request = format!(
        "POST /api/users?x=1 HTTP/1.1\r\nhost: localhost:3000\r\ntraceparent: {TRACEPARENT}\r\nauthorization: Bearer s\r\ncontent-length: 5\r\n\r\nhello"
    );
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
    let sized = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
    let (head, body) = request.split_at(request.len() - 3);
    vec![
        (
            "chunked",
            encode_chunks(&[(true, request.as_bytes()), (false, chunked)]),
        ),
        (
            "split",
            encode_chunks(&[
                (true, head.as_bytes()),
                (true, body.as_bytes()),
                (false, &sized[..30]),
                (false, &sized[30..]),
            ]),
        ),
    ]
}

/// Every TOML example of the docs and examples, for the parser that
/// accepts it (both when neither does: a fragment).
fn toml_examples(docs: &Path) -> Result<(Seeds, Seeds), Box<dyn std::error::Error>> {
    let (mut project, mut daemon) = (Seeds::new(), Seeds::new());
    project.push((
        "examples-hello",
        include_bytes!("../../../examples/hello/devmesh.toml").to_vec(),
    ));
    let mut pages: Vec<_> = fs::read_dir(docs)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        if page.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = fs::read_to_string(&page)?;
        let stem = page
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            let name: &'static str = format!("{stem}-{i}").leak();
            let is_project = Project::parse(Path::new("devmesh.toml"), block).is_ok();
            let is_daemon = DaemonFile::parse(Path::new("config.toml"), block).is_ok();
            if is_project || !is_daemon {
                project.push((name, block.as_bytes().to_vec()));
            }
            if is_daemon || !is_project {
                daemon.push((name, block.as_bytes().to_vec()));
            }
        }
    }
    Ok((project, daemon))
}
