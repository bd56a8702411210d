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

    /// Two hosts `a` (198.18.0.1) and `b` (198.18.0.2) on one bridged LAN.
    fn lan(tag: &str) -> Lab {
        let [lan, a, b] = ["lan", "a", "b"].map(|n| format!("{tag}-{n}"));
        let lab = Lab {
            namespaces: vec![lan.clone(), a.clone(), b.clone()],
        };
        for ns in &lab.namespaces {
            Self::ip(&["netns", "add", ns]);
            Self::ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Self::ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        Self::ip(&["-n", &lan, "link", "set", "br0", "up"]);
        for (ns, addr) in [(&a, "198.18.0.1/24"), (&b, "198.18.0.2/24")] {
            let (host_end, lan_end) = (format!("{ns}-h"), format!("{ns}-l"));
            Self::ip(&[
                "link", "add", &host_end, "netns", ns, "type", "veth", "peer", "name", &lan_end,
                "netns", &lan,
            ]);
            Self::ip(&["-n", &lan, "link", "set", &lan_end, "master", "br0", "up"]);
            Self::ip(&["-n", ns, "addr", "add", addr, "dev", &host_end]);
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
    let lab = Lab::lan(&tag);
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
