//! Secret namespaces, invites and relays, on loopback.

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use devmesh_tests::{Daemon, backend::Backend, eventually, get};
use mesh_core::{Invite, Secret};

/// Everything a node says about itself, for "the secret is never shown" checks.
async fn everything_said(node: &Daemon) -> String {
    let status = node.status().await;
    let peers = node.peers().await;
    let doctor = node.cli(&["doctor", "--json"]).await;
    format!(
        "{status}\n{peers}\n{}\n{}",
        String::from_utf8_lossy(&doctor.stdout),
        node.log()
    )
}

/// A node started in a namespace it names is private: the secret is made
/// at start, a member invites with it, a newcomer joins with the token
/// alone and reaches the member's service; the secret is stored
/// owner-only and shown nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn invite_and_join_with_a_token() {
    let (a, b) = tokio::join!(
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start()
    );
    let backend = Backend::start("team-api").await;
    a.share_detached("api", backend.port(), "2.0.0").await;

    let out = a.cli(&["invite", "--bootstrap", &a.p2p_addr]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let invite = Invite::decode(&token).expect("a valid token");
    assert_eq!(invite.namespace, "team");
    let secret = invite.secret.as_ref().expect("a secret").to_hex();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("new secret"), "{stderr}");
    let made = Secret::load(&a.home.path().join("secrets/team")).unwrap();
    assert_eq!(
        made.to_hex(),
        secret,
        "the invite carries the secret made at start"
    );
    let status = a.status().await;
    assert_eq!(status["has_secret"], true, "{status}");

    let out = b.cli(&["join", &token]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 member(s) online"), "{stderr}");
    let status = b.status().await;
    assert_eq!(status["namespace"], "team");
    assert_eq!(status["has_secret"], true);

    b.wait_for_service("api", |s| s["route"] == "remote").await;
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "team-api");

    // Stored owner-only, remembered in config.toml, never shown or logged.
    let path = b.home.path().join("secrets/team");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(Secret::load(&path).unwrap().to_hex(), secret);
    let config = std::fs::read_to_string(b.home.path().join("config.toml")).unwrap();
    assert!(config.contains("namespace = \"team\""), "{config}");
    assert!(config.contains(&a.p2p_addr), "{config}");
    for node in [&a, &b] {
        let said = everything_said(node).await;
        assert!(!said.contains(&secret), "the secret leaked:\n{said}");
    }

    // The long form: a multiaddr, the namespace and a file with the secret.
    let c = Daemon::start().await;
    let file = c.home.path().join("given.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let out = c
        .cli(&[
            "join",
            &a.p2p_addr,
            "--namespace",
            "team",
            "--secret-file",
            file.to_str().unwrap(),
        ])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("member(s) online"), "{stderr}");
    c.wait_for_service("api", |s| s["route"] == "remote").await;
}

/// A node with a wrong secret, or none, sees nothing of the namespace, and
/// its user is told why.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_secret_is_a_clear_error() {
    let (a, wrong, none) = tokio::join!(
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start(),
        Daemon::start()
    );
    let backend = Backend::start("team-api").await;
    a.share_detached("api", backend.port(), "1.0.0").await;
    let out = a.cli(&["invite"]).await;
    assert!(out.status.success());

    let forged = Invite {
        namespace: "team".into(),
        secret: Some(Secret::generate()),
        bootstrap: vec![a.p2p_addr.parse().unwrap()],
    }
    .encode();
    let out = wrong.cli(&["join", &forged]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("secret does not match namespace team"),
        "{stderr}"
    );

    // Without a token or --open, a namespace with no secret here is
    // refused before any dial.
    let out = none
        .cli(&["join", &a.p2p_addr, "--namespace", "team"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("namespace team has no secret on this node"),
        "{stderr}"
    );
    let out = none
        .cli(&["join", &a.p2p_addr, "--namespace", "team", "--open"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has a secret and this node has none"),
        "{stderr}"
    );

    for outsider in [&wrong, &none] {
        let status = outsider.status().await;
        assert!(
            status["services"].as_array().unwrap().is_empty(),
            "{status}"
        );
        let r = get(outsider.proxy, "api.localhost", "/").await;
        assert_eq!(r.status, 503);
        assert!(r.text().contains("Admission problem"), "{}", r.text());
        let doctor = outsider.cli(&["doctor"]).await;
        assert_eq!(doctor.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&doctor.stdout).contains("PROBLEM"),
            "{}",
            String::from_utf8_lossy(&doctor.stdout)
        );
    }
    eventually(Duration::from_secs(10), "A logs both refusals", || async {
        (a.log().matches("admission failed").count() >= 2).then_some(())
    })
    .await;
    // A keeps no connection to either.
    eventually(
        Duration::from_secs(10),
        "outsiders disconnected",
        || async {
            let peers = a.peers().await;
            peers.as_array()?.is_empty().then_some(())
        },
    )
    .await;
}

/// Members that only know a relay find each other through it (DHT
/// rendezvous), reserve a slot on it, and reach each other's services; a
/// second namespace on the same relay stays invisible.
#[tokio::test(flavor = "multi_thread")]
async fn members_meet_through_a_relay_and_namespaces_stay_apart() {
    let relay = Daemon::start_with(&["--relay"]).await;
    let status = relay.status().await;
    assert_eq!(status["role"], "relay");
    assert!(
        !status["external_addrs"].as_array().unwrap().is_empty(),
        "{status}"
    );
    let dir = tempfile::tempdir().unwrap();
    let team_secret = dir.path().join("team.secret");
    Secret::generate().save(&team_secret).unwrap();
    let other_secret = dir.path().join("other.secret");
    Secret::generate().save(&other_secret).unwrap();
    let member = |ns: &'static str, secret: &std::path::Path| {
        let secret = secret.to_str().unwrap().to_owned();
        let bootstrap = relay.p2p_addr.clone();
        async move {
            Daemon::start_with(&[
                "--namespace",
                ns,
                "--secret-file",
                &secret,
                "--bootstrap",
                &bootstrap,
            ])
            .await
        }
    };
    let (a, b, x) = tokio::join!(
        member("team", &team_secret),
        member("team", &team_secret),
        member("other", &other_secret)
    );
    let (team_api, other_api) =
        tokio::join!(Backend::start("team-api"), Backend::start("other-api"));
    a.share_detached("api", team_api.port(), "1.0.0").await;
    x.share_detached("api", other_api.port(), "9.0.0").await;

    b.wait_for_service("api", |s| s["route"] == "remote").await;
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "team-api");

    // Both hold a reservation on the relay and see it as a relay.
    for node in [&a, &b] {
        eventually(Duration::from_secs(10), "relay reservation", || async {
            let status = node.status().await;
            status["relays"]
                .as_array()?
                .iter()
                .any(|r| r["reservation"] == "accepted" && r["peer_id"] == relay.peer_id.as_str())
                .then_some(())
        })
        .await;
        let peers = node.peers().await;
        let kind_of = |id: &str| {
            peers
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["peer_id"] == id)
                .map(|p| p["kind"].as_str().unwrap().to_owned())
        };
        assert_eq!(kind_of(&relay.peer_id).as_deref(), Some("relay"), "{peers}");
    }
    // The other namespace sees none of team's services, and team none of its.
    let x_status = x.status().await;
    assert!(
        x_status["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["version"] == "9.0.0"),
        "{x_status}"
    );
    for node in [&a, &b] {
        let status = node.status().await;
        assert!(
            status["services"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["version"] == "1.0.0"),
            "{status}"
        );
    }
    let r = get(x.proxy, "api.localhost", "/name").await;
    assert_eq!(r.text(), "other-api");
}

/// `invite` on a node with teammates connected: a new secret would cut
/// them off, so it names them and needs `--yes`; once the namespace has a
/// secret, invites reuse it, and `--rotate` needs `--yes` too.
#[tokio::test(flavor = "multi_thread")]
async fn invite_keeps_the_members_connected() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    eventually(Duration::from_secs(10), "b to be a member of a", || async {
        let peers = a.peers().await;
        peers
            .as_array()?
            .iter()
            .any(|p| p["kind"] == "member")
            .then_some(())
    })
    .await;
    let out = a.cli(&["invite"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("drops the member connected now"),
        "{stderr}"
    );
    assert!(stderr.contains(&b.peer_id), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(a.status().await["has_secret"], false);
    let peers = a.peers().await;
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == b.peer_id.as_str())
    );

    let out = a.cli(&["invite", "--yes"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = a.cli(&["invite"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let secret = |token: &str| Invite::decode(token).unwrap().secret.unwrap().to_hex();
    assert_eq!(secret(&first), secret(&second), "invite made a new secret");

    let out = a.cli(&["invite", "--rotate"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Pass --yes"), "{stderr}");
    let out = a.cli(&["invite", "--rotate", "--yes"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(secret(&rotated), secret(&first));
}

/// An outsider's `join <multiaddr>` is told it was refused and why, with a
/// non-zero exit; the member shows the refusal as a past event of the
/// outsider's, and its doctor finds no problem in it.
#[tokio::test(flavor = "multi_thread")]
async fn an_outsider_is_told_it_was_refused() {
    let (a, b, stranger, other) = tokio::join!(
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start_with(&["--namespace", "team", "--open"]),
        Daemon::start_with(&["--namespace", "elsewhere"])
    );
    let out = a.cli(&["invite", "--bootstrap", &a.p2p_addr]).await;
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = b.cli(&["join", &token]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = stranger.cli(&["join", &a.p2p_addr]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused this node"), "{stderr}");
    assert!(
        stderr.contains("has a secret and this node has none"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&a.peer_id));

    let out = other.cli(&["join", &a.p2p_addr]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not admitted"), "{stderr}");

    let status = a.status().await;
    let failures = status["admission_failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["peer_id"] == stranger.peer_id.as_str() && f["inbound"] == true),
        "{status}"
    );
    let doctor = a.cli(&["doctor"]).await;
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(said.contains("connected and was refused"), "{said}");
    assert!(
        !said
            .lines()
            .any(|l| l.contains("PROBLEM") && l.contains("secret")),
        "{said}"
    );
    // Logged once, however often the stranger tries.
    let _ = stranger.cli(&["join", &a.p2p_addr]).await;
    let log = a.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&stranger.peer_id))
        .count();
    assert_eq!(lines, 1, "{log}");
}
