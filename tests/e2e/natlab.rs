//! Teams across NATs, in the NAT lab: network namespaces for an "internet"
//! (203.0.113.0/24) with the team's relay, and home LANs (198.18.x.0/24)
//! behind NAT routers. Needs root (CI runs as root); skips otherwise. Each
//! scenario runs without and with 40 ms of added latency on every router.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use devmesh_netlab::{HomeSpec, Host, Lab, LabSpec, Nat};
use devmesh_tests::{Daemon, bin, eventually};

pub(crate) const BACKEND_PORT: u16 = 18080;

/// One lab scenario at a time: each runs several daemons on two cores and
/// asserts time bounds.
pub(crate) static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LATENCY: Duration = Duration::from_millis(40);

pub(crate) fn skip() -> bool {
    match Lab::available() {
        Ok(()) => false,
        Err(reason) => {
            eprintln!("skipping: {reason} (CI runs as root with iproute2 and iptables)");
            true
        }
    }
}

pub(crate) fn home(nat: Nat, block_udp: bool, hosts: usize) -> HomeSpec {
    HomeSpec {
        nat,
        block_udp,
        hosts,
        ..HomeSpec::default()
    }
}

fn lab(homes: Vec<HomeSpec>, latency: bool) -> Lab {
    Lab::new(LabSpec {
        public_hosts: 1,
        homes,
        latency: latency.then_some(LATENCY),
        ipv6: false,
    })
    .expect("building the NAT lab")
}

const MEMBER_LISTEN: [&str; 4] = [
    "--listen",
    "/ip4/0.0.0.0/tcp/0",
    "--listen",
    "/ip4/0.0.0.0/udp/0/quic-v1",
];
const MEMBER_LISTEN6: [&str; 4] = [
    "--listen",
    "/ip6/::/tcp/0",
    "--listen",
    "/ip6/::/udp/0/quic-v1",
];

/// The team's relay on the internet side; returns it and its public addresses.
pub(crate) async fn start_relay(lab: &Lab) -> (Daemon, Vec<String>) {
    let relay = Daemon::start_in(
        Some(&lab.public(0).netns),
        &[
            "--relay",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
        ],
    )
    .await;
    let status = relay.status().await;
    let addrs: Vec<String> = status["external_addrs"]
        .as_array()
        .expect("external_addrs")
        .iter()
        .map(|a| a.as_str().expect("addr").to_owned())
        .collect();
    assert!(
        addrs.iter().any(|a| a.starts_with("/ip4/203.0.113.10/")),
        "{status}"
    );
    (relay, addrs)
}

/// A member in `host`'s namespace, with mDNS off unless asked; on a host
/// with an IPv6 address it listens on IPv6 too.
pub(crate) async fn start_member(host: &Host, mdns: bool) -> Daemon {
    let mut args = MEMBER_LISTEN.to_vec();
    if host.addr6.is_some() {
        args.extend(MEMBER_LISTEN6);
    }
    args.extend(["--mdns", if mdns { "true" } else { "false" }]);
    Daemon::start_in(Some(&host.netns), &args).await
}

/// Starts the demo backend inside `host`'s namespace.
pub(crate) fn start_backend(lab: &Lab, host: &Host, name: &str) {
    let mut cmd = lab.command(host, bin("devmesh-demo-backend"));
    cmd.args([&BACKEND_PORT.to_string(), name])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(host, cmd).expect("starting the backend");
}

/// `devmesh invite` on `inviter` with the relay as bootstrap.
async fn invite(inviter: &Daemon, relay_addrs: &[String]) -> String {
    let mut args = vec!["invite"];
    for a in relay_addrs {
        args.extend(["--bootstrap", a]);
    }
    let out = inviter.cli(&args).await;
    assert!(
        out.status.success(),
        "invite: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A response seen by curl inside a namespace.
pub(crate) struct Curl {
    pub(crate) code: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `curl` from inside `host` to the node's front door, for service `api`.
pub(crate) fn curl(lab: &Lab, host: &Host, node: &Daemon, path: &str) -> Curl {
    curl_for(lab, host, node, "api", path)
}

/// [`curl`] for service `service`.
pub(crate) fn curl_for(lab: &Lab, host: &Host, node: &Daemon, service: &str, path: &str) -> Curl {
    let host_header = format!("Host: {service}.localhost");
    let out = lab
        .command(host, "curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-H",
            &host_header,
            &format!("http://127.0.0.1:{}{path}", node.proxy.port()),
        ])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or_else(|| (text.clone(), String::new()));
    let code = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Curl {
        code,
        headers: headers.to_ascii_lowercase(),
        body,
    }
}

/// The connection `node` has to the member `peer`: `direct` or `relayed`.
pub(crate) async fn link(node: &Daemon, peer: &Daemon) -> Option<(String, Vec<String>)> {
    let peers = node.peers().await;
    peers.as_array()?.iter().find_map(|p| {
        (p["peer_id"] == peer.peer_id.as_str() && p["kind"] == "member").then(|| {
            (
                p["connection"].as_str().unwrap_or_default().to_owned(),
                p["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
    })
}

/// A team: relay on the internet, member A (sharing `api`) in home 0,
/// member B in home 1 joined with A's invite and able to reach `api`.
pub(crate) struct Team {
    pub(crate) relay: Daemon,
    pub(crate) a: Daemon,
    pub(crate) b: Daemon,
    pub(crate) token: String,
    /// From `devmesh join` on B to the first successful request.
    pub(crate) join_to_usable: Duration,
    pub(crate) lab: Lab,
}

async fn team(homes: Vec<HomeSpec>, latency: bool) -> Team {
    team_in(lab(homes, latency)).await
}

/// [`team`] in a lab made already.
async fn team_in(lab: Lab) -> Team {
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(1, 0).clone());
    team_at(lab, &a_host, &b_host).await
}

/// [`team_in`] with A in `a_host` and B in `b_host`.
pub(crate) async fn team_at(lab: Lab, a_host: &Host, b_host: &Host) -> Team {
    let (relay, relay_addrs) = start_relay(&lab).await;
    let (a_host, b_host) = (a_host.clone(), b_host.clone());
    let (a, b) = tokio::join!(start_member(&a_host, false), start_member(&b_host, false));
    start_backend(&lab, &a_host, "home0-api");
    a.share_detached("api", BACKEND_PORT, "1.0.0").await;
    let token = invite(&a, &relay_addrs).await;
    // The inviter meets its invitees at the relay it names.
    eventually(Duration::from_secs(10), "A's relay reservation", || async {
        let status = a.status().await;
        status["relays"]
            .as_array()?
            .iter()
            .any(|r| r["reservation"] == "accepted")
            .then_some(())
    })
    .await;

    let started = Instant::now();
    let out = b.cli(&["join", &token]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "join: {stderr}");
    let reply = loop {
        let r = curl(&lab, &b_host, &b, "/name");
        if r.code == 200 {
            break r;
        }
        if started.elapsed() > Duration::from_secs(20) {
            for (name, node) in [("relay", &relay), ("A", &a), ("B", &b)] {
                eprintln!("===== {name} log =====\n{}", node.log());
            }
            panic!("B did not reach A's api within 20 s: {} {}", r.code, r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let join_to_usable = started.elapsed();
    assert_eq!(reply.body, "home0-api");
    eprintln!("join to first response: {join_to_usable:?}");
    Team {
        relay,
        a,
        b,
        token,
        join_to_usable,
        lab,
    }
}

async fn both_behind_friendly_nats_go_direct(latency: bool) {
    let t = team(
        vec![
            home(Nat::EndpointIndependent, false, 1),
            home(Nat::EndpointIndependent, false, 1),
        ],
        latency,
    )
    .await;
    // Hole punching makes the link direct within 10 s of joining.
    eventually(
        Duration::from_secs(10),
        "a direct connection from B to A",
        || async { link(&t.b, &t.a).await.filter(|(c, _)| c == "direct") },
    )
    .await;
    // The relayed connection closes shortly after.
    eventually(
        Duration::from_secs(10),
        "the relayed connection closed",
        || async {
            link(&t.b, &t.a)
                .await
                .filter(|(_, addrs)| addrs.iter().all(|a| !a.contains("p2p-circuit")))
        },
    )
    .await;
    let b_host = t.lab.home_host(1, 0).clone();
    let r = curl(&t.lab, &b_host, &t.b, "/name");
    assert_eq!(r.code, 200);
    assert!(
        r.headers.contains("x-devmesh-route: remote-direct"),
        "{}",
        r.headers
    );
    assert!(t.join_to_usable < Duration::from_secs(20));

    // With the relay gone, the direct tunnel keeps working.
    let Team {
        relay, a, b, lab, ..
    } = t;
    drop(relay);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        let r = curl(&lab, &b_host, &b, "/name");
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(r.body, "home0-api");
    }
    assert_eq!(
        link(&b, &a).await.map(|(c, _)| c).as_deref(),
        Some("direct")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_endpoint_independent_hole_punch_then_relay_stops() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    both_behind_friendly_nats_go_direct(false).await;
    both_behind_friendly_nats_go_direct(true).await;
}

async fn random_port_nats_stay_on_the_relay(latency: bool) {
    // Both behind port-randomising NATs: hole punching cannot work.
    let t = team(
        vec![
            home(Nat::RandomPorts, false, 1),
            home(Nat::RandomPorts, false, 1),
        ],
        latency,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (connection, _) = link(&t.b, &t.a).await.expect("B is connected to A");
    assert_eq!(connection, "relayed");
    let b_host = t.lab.home_host(1, 0).clone();
    let r = curl(&t.lab, &b_host, &t.b, "/name");
    assert_eq!(r.code, 200);
    assert!(
        r.headers.contains("x-devmesh-route: remote-relayed"),
        "{}",
        r.headers
    );
    // `devmesh peers` and `doctor` say so.
    let peers = t.b.cli(&["peers", "--wide"]).await;
    let text = String::from_utf8_lossy(&peers.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&t.a.peer_id) && l.contains("relayed")),
        "{text}"
    );
    let doctor = t.b.cli(&["doctor"]).await;
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("reached through the relay"), "{text}");
    assert!(text.contains("NAT changes its ports"), "{text}");
    if !latency {
        // The relay carries a whole 1 GiB download (its circuits have no
        // byte limit), byte count checked by curl.
        let gib: u64 = 1 << 30;
        let out = t
            .lab
            .command(&b_host, "curl")
            .args([
                "-sS",
                "--fail",
                "--max-time",
                "300",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{speed_download}",
                "-H",
                "Host: api.localhost",
                &format!("http://127.0.0.1:{}/bytes/{gib}", t.b.proxy.port()),
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.split_whitespace().next(),
            Some(gib.to_string().as_str())
        );
        eprintln!("1 GiB through the relay: {text} (bytes, bytes/s)");
        assert_eq!(
            link(&t.b, &t.a).await.map(|(c, _)| c).as_deref(),
            Some("relayed")
        );
    }

    // One side behind a friendly NAT, the other port-randomising: works too.
    drop(t);
    let t = team(
        vec![
            home(Nat::EndpointIndependent, false, 1),
            home(Nat::RandomPorts, false, 1),
        ],
        latency,
    )
    .await;
    assert!(link(&t.b, &t.a).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_port_randomising_stays_relayed() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    random_port_nats_stay_on_the_relay(false).await;
    random_port_nats_stay_on_the_relay(true).await;
}

async fn udp_blocked_uses_tcp(latency: bool) {
    let t = team(
        vec![
            home(Nat::EndpointIndependent, false, 1),
            home(Nat::EndpointIndependent, true, 1),
        ],
        latency,
    )
    .await;
    link(&t.b, &t.a).await.expect("B is connected to A");
    // Nothing of B's links runs over UDP (QUIC): its router drops UDP. A
    // circuit address names one of the relay's listen addresses, whichever
    // the dial used, not the transport of B's own hop to the relay, so the
    // hops themselves are checked: B's connections to the relay and any
    // direct ones to A.
    let peers = t.b.peers().await;
    let direct: Vec<&str> = peers
        .as_array()
        .expect("peers --json lists peers")
        .iter()
        .filter(|p| {
            p["peer_id"] == t.a.peer_id.as_str() || p["peer_id"] == t.relay.peer_id.as_str()
        })
        .flat_map(|p| p["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str())
        .filter(|a| !a.contains("/p2p-circuit"))
        .collect();
    assert!(
        !direct.is_empty() && direct.iter().all(|a| !a.contains("/quic")),
        "B's own links: {direct:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_udp_blocked_works_over_tcp() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    udp_blocked_uses_tcp(false).await;
    udp_blocked_uses_tcp(true).await;
}

async fn wrong_secret_sees_nothing(latency: bool) {
    let t = team(
        vec![
            home(Nat::EndpointIndependent, false, 1),
            home(Nat::EndpointIndependent, false, 2),
        ],
        latency,
    )
    .await;
    // C, on B's LAN, holds a token for the same namespace with another secret.
    let c_host = t.lab.home_host(1, 1).clone();
    let c = start_member(&c_host, false).await;
    let mut forged = mesh_core::Invite::decode(&t.token).expect("token");
    forged.secret = Some(mesh_core::Secret::generate());
    let out = c.cli(&["join", &forged.encode()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("secret does not match namespace"),
        "{stderr}"
    );
    let r = curl(&t.lab, &c_host, &c, "/name");
    assert_eq!(r.code, 503, "{}", r.body);
    assert!(r.body.contains("secret does not match"), "{}", r.body);
    let status = c.status().await;
    assert!(
        status["services"].as_array().unwrap().is_empty(),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_wrong_secret_is_refused() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    wrong_secret_sees_nothing(false).await;
    wrong_secret_sees_nothing(true).await;
}

async fn mdns_on_one_lan(latency: bool) -> Duration {
    let lab = lab(vec![home(Nat::EndpointIndependent, false, 2)], latency);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(0, 1).clone());
    // From launching both daemons to a connected, admitted member.
    let started = Instant::now();
    let (a, b) = tokio::join!(start_member(&a_host, true), start_member(&b_host, true));
    let (connection, _) = eventually(Duration::from_secs(10), "A and B connected", || async {
        link(&b, &a).await
    })
    .await;
    let took = started.elapsed();
    assert_eq!(connection, "direct");
    start_backend(&lab, &a_host, "lan-api");
    a.share_detached("api", BACKEND_PORT, "1.0.0").await;
    eventually(
        Duration::from_secs(10),
        "B reaches A over the LAN",
        || async { (curl(&lab, &b_host, &b, "/name").code == 200).then_some(()) },
    )
    .await;
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_mdns_finds_a_lan_peer_without_bootstrap() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    for latency in [false, true] {
        let took = mdns_on_one_lan(latency).await;
        eprintln!("mDNS, latency {latency}: launch to connected member {took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

/// A psql session through B's listener of A's PostgreSQL (in A's home):
/// it answers, idles, and answers again. Returns the connection B's
/// listener names for the session's provider.
async fn psql_session(t: &Team, port: u16) -> String {
    let b_host = t.lab.home_host(1, 0).clone();
    let mut session = devmesh_tests::servers::PsqlSession::open(Some(&b_host.netns), port);
    for query in ["one", "two"] {
        session
            .send(&format!("SELECT 'query {query}';\n"))
            .await
            .unwrap();
        assert_eq!(session.line().await, Some(format!("query {query}")));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let listener = t.b.cli_json(&["connect", "db"]).await;
    listener["provider"].as_str().unwrap_or_default().to_owned()
}

/// A team whose A shares a PostgreSQL of its home as TCP; B listens for
/// it on the same port (free in B's home).
async fn team_with_postgres(homes: Vec<HomeSpec>) -> (Team, devmesh_tests::servers::Postgres) {
    let t = team(homes, false).await;
    let a_host = t.lab.home_host(0, 0).clone();
    let pg = devmesh_tests::servers::Postgres::start_in(Some(&a_host.netns)).await;
    share_postgres(&t, &pg).await;
    (t, pg)
}

/// A shares `pg` as the TCP service `db`; B listens for it on the same
/// port.
async fn share_postgres(t: &Team, pg: &devmesh_tests::servers::Postgres) {
    t.a.share_detached_with("db", pg.port(), "15.4.0", &["--tcp"])
        .await;
    t.b.wait_for_service("db", |s| s["route"] == "remote").await;
    let listener = t.b.cli_json(&["connect", "db"]).await;
    assert_eq!(
        listener["listen"],
        format!("127.0.0.1:{}", pg.port()).as_str(),
        "{listener}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_psql_relayed_and_after_the_hole_punch() {
    if skip() || !devmesh_tests::servers::have(&["psql"], true) {
        return;
    }
    let _serial = LAB.lock().await;
    // Port-randomising NATs: the session runs over the relay.
    let (t, pg) = team_with_postgres(vec![
        home(Nat::RandomPorts, false, 1),
        home(Nat::RandomPorts, false, 1),
    ])
    .await;
    let provider = psql_session(&t, pg.port()).await;
    assert_eq!(provider, format!("{} (relayed)", t.a.peer_id));
    drop((t, pg));

    // Friendly NATs: once the hole punch made the link direct, sessions
    // go over it.
    let (t, pg) = team_with_postgres(vec![
        home(Nat::EndpointIndependent, false, 1),
        home(Nat::EndpointIndependent, false, 1),
    ])
    .await;
    eventually(
        Duration::from_secs(20),
        "the relayed connection replaced by a direct one",
        || async {
            link(&t.b, &t.a).await.filter(|(c, addrs)| {
                c == "direct" && addrs.iter().all(|a| !a.contains("p2p-circuit"))
            })
        },
    )
    .await;
    let provider = psql_session(&t, pg.port()).await;
    assert_eq!(provider, format!("{} (direct)", t.a.peer_id));
}

/// A psql session opened while the members are relayed (their direct path
/// blocked) goes on after the path opens and a hole punch makes the link
/// direct: the relayed connection stays while the session's tunnel is on
/// it, new sessions work, and it closes once the session ends.
#[tokio::test(flavor = "multi_thread")]
async fn nat_a_psql_session_survives_the_hole_punch() {
    if skip() || !devmesh_tests::servers::have(&["psql"], true) {
        return;
    }
    let _serial = LAB.lock().await;
    let lab = lab(
        vec![
            home(Nat::EndpointIndependent, false, 1),
            home(Nat::EndpointIndependent, false, 1),
        ],
        false,
    );
    lab.block_direct(0, 1, true)
        .expect("blocking the direct path");
    let a_host = lab.home_host(0, 0).clone();
    let pg = devmesh_tests::servers::Postgres::start_in(Some(&a_host.netns)).await;
    let t = team_in(lab).await;
    share_postgres(&t, &pg).await;
    let (connection, _) = link(&t.b, &t.a).await.expect("B's link to A");
    assert_eq!(connection, "relayed");

    let b_host = t.lab.home_host(1, 0).clone();
    let mut session = devmesh_tests::servers::PsqlSession::open(Some(&b_host.netns), pg.port());
    session.send("SELECT 'before';\n").await.unwrap();
    assert_eq!(session.line().await.as_deref(), Some("before"));

    t.lab
        .block_direct(0, 1, false)
        .expect("opening the direct path");
    let punched = Instant::now();
    eventually(
        Duration::from_secs(40),
        "a direct link after the punch",
        || async { link(&t.b, &t.a).await.filter(|(c, _)| c == "direct") },
    )
    .await;
    eprintln!("direct {:?} after the path opened", punched.elapsed());
    // Well past the 3 s the relayed connection used to get.
    for query in ["after", "later"] {
        tokio::time::sleep(Duration::from_secs(5)).await;
        session.send(&format!("SELECT '{query}';\n")).await.unwrap();
        assert_eq!(session.line().await.as_deref(), Some(query));
    }
    let out = devmesh_tests::servers::psql_command_in(Some(&b_host.netns), pg.port())
        .args(["-d", "postgres", "-c", "SELECT 'new'"])
        .output()
        .await
        .expect("running psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "new");

    session
        .finish(Duration::from_secs(10))
        .await
        .expect("psql ended with its input");
    eventually(
        Duration::from_secs(20),
        "the relayed connection closed after the session",
        || async {
            link(&t.b, &t.a)
                .await
                .filter(|(_, addrs)| addrs.iter().all(|a| !a.contains("p2p-circuit")))
        },
    )
    .await;
}
