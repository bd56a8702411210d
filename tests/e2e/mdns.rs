use std::{
    process::Command,
    time::{Duration, Instant},
};

use devmesh_tests::{Daemon, bin, eventually};

/// Network namespaces made by a test, deleted (with their links) on drop.
struct Lab {
    namespaces: Vec<String>,
}

impl Lab {
    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `hosts` hosts on one bridged LAN: `namespaces[1]` at 198.18.0.1,
    /// `namespaces[2]` at 198.18.0.2, and so on (`namespaces[0]` holds
    /// the bridge).
    fn lan(tag: &str, hosts: usize) -> Lab {
        let lan = format!("{tag}-lan");
        let mut namespaces = vec![lan.clone()];
        namespaces.extend((1..=hosts).map(|i| format!("{tag}-h{i}")));
        let lab = Lab { namespaces };
        for ns in &lab.namespaces {
            Self::ip(&["netns", "add", ns]);
            Self::ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Self::ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        Self::ip(&["-n", &lan, "link", "set", "br0", "up"]);
        for (i, ns) in lab.namespaces.iter().enumerate().skip(1) {
            let addr = format!("198.18.0.{i}/24");
            let (host_end, lan_end) = (format!("{ns}-h"), format!("{ns}-l"));
            Self::ip(&[
                "link", "add", &host_end, "netns", ns, "type", "veth", "peer", "name", &lan_end,
                "netns", &lan,
            ]);
            Self::ip(&["-n", &lan, "link", "set", &lan_end, "master", "br0", "up"]);
            Self::ip(&["-n", ns, "addr", "add", &addr, "dev", &host_end]);
            Self::ip(&["-n", ns, "link", "set", &host_end, "up"]);
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn can_make_namespaces() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Two nodes on one LAN find each other with mDNS and no bootstrap, and a
/// request from B reaches A's service.
#[tokio::test(flavor = "multi_thread")]
async fn mdns_finds_a_peer_on_the_lan_without_bootstrap() {
    if !can_make_namespaces() {
        eprintln!("skipping: needs root and iproute2 to make network namespaces (CI has both)");
        return;
    }
    let tag = format!("dm{}", std::process::id() % 100_000);
    let lab = Lab::lan(&tag, 2);
    let (ns_a, ns_b) = (&lab.namespaces[1], &lab.namespaces[2]);
    let started = Instant::now();
    let (a, b) = tokio::join!(
        Daemon::start_in(
            Some(ns_a),
            &["--listen", "/ip4/198.18.0.1/tcp/0", "--mdns", "true"]
        ),
        Daemon::start_in(
            Some(ns_b),
            &["--listen", "/ip4/198.18.0.2/tcp/0", "--mdns", "true"]
        ),
    );
    eventually(
        Duration::from_secs(10),
        "B to discover A with mDNS",
        || async {
            let peers = b.peers().await;
            peers
                .as_array()?
                .iter()
                .any(|p| p["peer_id"] == a.peer_id.as_str())
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "peers connected through mDNS {:?} after both nodes started",
        started.elapsed()
    );

    // A backend inside A's namespace, shared from A, reached from inside B.
    let port = 18_080;
    let mut backend = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns_a])
        .arg(bin("devmesh-demo-backend"))
        .args([&port.to_string(), "lan-api"])
        .kill_on_drop(true)
        .spawn()
        .expect("starting the backend");
    a.share_detached("api", port, "1.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;
    let url = format!("http://{}/name", b.proxy);
    let body = eventually(
        Duration::from_secs(10),
        "a response from A through B",
        || async {
            let out = tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns_b,
                    "curl",
                    "-sS",
                    "--fail",
                    "-H",
                    "Host: api.localhost",
                    &url,
                ])
                .output()
                .await
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    assert_eq!(body, "lan-api");
    let _ = backend.start_kill();
}

/// A backend inside `netns` on `port`, answering `/name` with `name`.
fn backend_in(netns: &str, port: u16, name: &str) -> tokio::process::Child {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(bin("devmesh-demo-backend"))
        .args([&port.to_string(), name])
        .kill_on_drop(true)
        .spawn()
        .expect("starting the backend")
}

/// `curl` inside `netns` through the front door at `proxy`: the status
/// code and the body.
async fn curl_in(netns: &str, proxy: std::net::SocketAddr, host: &str) -> (u16, String) {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-sS",
            "-w",
            "\\n%{http_code}",
        ])
        .args([
            "-H",
            &format!("Host: {host}"),
            &format!("http://{proxy}/name"),
        ])
        .output()
        .await
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Private by default: with every default (mDNS on, no namespace named),
/// a stranger on the same LAN neither sees nor reaches a shared service,
/// while a teammate invited with a token that holds no address finds the
/// node with mDNS alone and reaches it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_on_the_lan_neither_sees_nor_reaches_a_service() {
    if !can_make_namespaces() {
        eprintln!("skipping: needs root and iproute2 to make network namespaces (CI has both)");
        return;
    }
    let tag = format!("dp{}", std::process::id() % 100_000);
    let lab = Lab::lan(&tag, 3);
    let [ns_a, ns_s, ns_m] = [1, 2, 3].map(|i| lab.namespaces[i].as_str());
    let node = |ns: &str, i: u8| {
        let ns = ns.to_owned();
        async move {
            let listen = format!("/ip4/198.18.0.{i}/tcp/0");
            Daemon::start_plain(Some(&ns), &["--listen", &listen, "--mdns", "true"]).await
        }
    };
    let (a, stranger, mate) = tokio::join!(node(ns_a, 1), node(ns_s, 2), node(ns_m, 3));
    let (status_a, status_s) = (a.status().await, stranger.status().await);
    assert_eq!(status_a["has_secret"], true, "{status_a}");
    assert_ne!(status_a["namespace"], status_s["namespace"]);

    let port = 18_081;
    let _backend = backend_in(ns_a, port, "private-api");
    a.share_detached("api", port, "1.0.0").await;

    // The teammate: a token without addresses, so mDNS alone finds A.
    let out = a.cli(&["invite"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = mate.cli(&["join", &token, "--wait", "20"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 member(s) online"), "{stderr}");
    mate.wait_for_service("api", |s| s["route"] == "remote")
        .await;
    let (code, body) = curl_in(ns_m, mate.proxy, "api.localhost").await;
    assert_eq!((code, body.as_str()), (200, "private-api"));

    // The stranger and A found each other with mDNS too (same LAN), and
    // each saw the other is in another namespace: no record, no route, a
    // 503 from the stranger's own front door.
    eventually(
        Duration::from_secs(10),
        "A and the stranger to meet and part",
        || async {
            let met = |log: String, other: &str| {
                log.lines()
                    .any(|l| l.contains("another namespace") && l.contains(other))
            };
            (met(a.log(), &stranger.peer_id) || met(stranger.log(), &a.peer_id)).then_some(())
        },
    )
    .await;
    let status = stranger.status().await;
    assert!(
        status["services"].as_array().unwrap().is_empty(),
        "{status}"
    );
    let (code, body) = curl_in(ns_s, stranger.proxy, "api.localhost").await;
    assert_eq!(code, 503, "{body}");
    assert!(!body.contains("private-api"), "{body}");
    let peers = a.peers().await;
    assert!(
        !peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == stranger.peer_id.as_str() && p["kind"] == "member"),
        "{peers}"
    );
}
