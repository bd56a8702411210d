//! The inspector: requests captured on the caller's node and on the
//! provider's node (fetched over `/devmesh/inspect/1`), secrets masked
//! unless `--inspect-secrets`, body prefixes of 64 KiB while the body
//! streams whole, `--status` filters, `--follow`, replay to another
//! version with a diff, and the count bound.

use std::{process::Stdio, time::Duration};

use bytes::Bytes;
use devmesh_tests::{Daemon, SHORT, backend::Backend, eventually, get, request};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const PREFIX: usize = 64 * 1024;

/// `devmesh inspect <args> --json` on `d`.
async fn inspect(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    d.cli_json(&all).await
}

/// The newest caller entry of `d` whose URL ends with `path`, once there.
async fn entry_for(d: &Daemon, path: &str) -> serde_json::Value {
    eventually(SHORT, &format!("an entry for {path}"), || async {
        let list = inspect(d, &[]).await;
        list.as_array()?
            .iter()
            .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(path)))
            .cloned()
    })
    .await
}

fn header<'a>(side: &'a serde_json::Value, list: &str, name: &str) -> Option<&'a str> {
    side[list]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn both_ends_of_a_request_with_secrets_bodies_and_filters() {
    // A masks secrets (the default); B keeps them.
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start_with(&["--inspect-secrets"]));
    b.join(&a).await;
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.0.0").await;
    b.wait_for_service("api", |s| s["route"] == "remote").await;

    let auth = [("authorization", "Bearer s3cret")];
    let r = request(
        b.proxy,
        "GET",
        "api.localhost",
        "/headers?x=1",
        Bytes::new(),
        &auth,
    )
    .await;
    assert_eq!(r.status, 200);
    let trace = r.header("x-devmesh-trace-id").to_owned();

    let summary = entry_for(&b, "/headers?x=1").await;
    assert_eq!(summary["side"], "caller");
    assert_eq!(summary["service"], "api");
    assert_eq!(summary["route"], "direct");
    assert_eq!(summary["trace_id"], trace.as_str());
    let id = summary["id"].as_u64().unwrap().to_string();
    let full = inspect(&b, &[&id]).await;
    assert_eq!(
        header(&full, "request_headers", "authorization"),
        Some("Bearer s3cret"),
        "B keeps secrets"
    );
    assert_eq!(full["provider"], a.peer_id.as_str());
    let side = &full["provider_side"];
    assert_eq!(side["side"], "provider", "{full:#}");
    assert_eq!(side["trace_id"], trace.as_str());
    assert_eq!(side["consumer"], b.peer_id.as_str());
    assert_eq!(side["status"], 200);
    // What A's backend received: devmesh's rewrites.
    let port = backend.port();
    assert_eq!(
        header(side, "request_headers", "host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert!(
        header(side, "request_headers", "x-forwarded-for").is_some(),
        "{side:#}"
    );
    assert!(header(side, "request_headers", "traceparent").is_some());
    assert_eq!(
        header(side, "request_headers", "authorization"),
        Some("<masked>"),
        "A masks"
    );
    assert!(
        side["response_body"]["data"]
            .as_str()
            .unwrap()
            .contains("\"uri\":\"/headers?x=1\"")
    );
    // A's own listing has the provider side too.
    let on_a = inspect(&a, &[]).await;
    assert!(
        on_a.as_array()
            .unwrap()
            .iter()
            .any(|e| e["side"] == "provider" && e["trace_id"] == trace.as_str())
    );

    // A 1 MiB body is delivered whole and kept as 64 KiB on both ends.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let r = request(
        b.proxy,
        "POST",
        "api.localhost",
        "/echo",
        Bytes::from(big.clone()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body == big,
        "the echoed body arrived whole ({} bytes)",
        r.body.len()
    );
    let summary = entry_for(&b, "/echo").await;
    let full = inspect(&b, &[&summary["id"].as_u64().unwrap().to_string()]).await;
    for (who, e) in [("caller", &full), ("provider", &full["provider_side"])] {
        for body in ["request_body", "response_body"] {
            let kept = &e[body];
            assert_eq!(kept["data"].as_str().unwrap().len(), PREFIX, "{who} {body}");
            assert_eq!(kept["truncated"], true, "{who} {body}");
            assert_eq!(kept["total"], 1 << 20, "{who} {body}");
            assert!(big.starts_with(kept["data"].as_str().unwrap().as_bytes()));
        }
    }

    // --status 5xx finds only the failing request.
    backend.set_health(503);
    let r = get(b.proxy, "api.localhost", "/healthz").await;
    assert_eq!(r.status, 503);
    entry_for(&b, "/healthz").await;
    let failed = inspect(&b, &["--status", "5xx"]).await;
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["status"], 503);
    assert_eq!(
        inspect(&b, &["--service", "nothing"]).await,
        serde_json::json!([])
    );
    let bad = b.cli(&["inspect", "--status", "500"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a class"));

    // The human table lists them newest first.
    let out = b.cli(&["inspect"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID"), "{text}");
    let healthz = text.find("/healthz").unwrap();
    let headers = text.find("/headers?x=1").unwrap();
    assert!(healthz < headers, "newest first:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_prints_new_requests_as_they_come() {
    let a = Daemon::start().await;
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.0.0").await;
    let mut follow = a
        .devmesh()
        .args(["inspect", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // The stream is open once a request made now shows up.
    let deadline = tokio::time::Instant::now() + SHORT;
    let seen = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "--follow printed no request"
        );
        let r = get(a.proxy, "api.localhost", "/hello").await;
        assert_eq!(r.status, 200);
        let Ok(line) = tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await else {
            continue;
        };
        let line = line.unwrap().expect("devmesh inspect --follow ended");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["url"] == "/hello" {
            break v;
        }
    };
    assert_eq!(seen["route"], "local");
    assert!(seen["id"].as_u64().is_some());
    follow.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_to_another_version_shows_the_diff() {
    let (a, b, c) = tokio::join!(Daemon::start(), Daemon::start(), Daemon::start());
    b.join(&a).await;
    b.join(&c).await;
    let (v1, v2) = tokio::join!(Backend::start("api-v1"), Backend::start("api-v2"));
    let _run1 = a.run_service("api", v1.port(), "1.0.0").await;
    let _run2 = c.run_service("api", v2.port(), "2.0.0").await;
    b.wait_for_service("api", |s| s["version"] == "2.0.0").await;
    b.wait_for_service("api", |s| s["version"] == "1.0.0").await;

    let r = request(
        b.proxy,
        "GET",
        "api.localhost",
        "/name",
        Bytes::new(),
        &[("x-devmesh-require", "^1")],
    )
    .await;
    assert_eq!(r.text(), "api-v1");
    let id = entry_for(&b, "/name").await["id"]
        .as_u64()
        .unwrap()
        .to_string();

    let replay = b.cli_json(&["replay", &id, "--require", "^2"]).await;
    assert_eq!(replay["original"]["status"], 200);
    assert_eq!(replay["replayed"]["status"], 200);
    assert_eq!(replay["replayed"]["body"]["data"], "api-v2");
    let diff = replay["diff"].as_str().unwrap();
    assert!(
        diff.contains("-api-v1\n") && diff.contains("+api-v2\n"),
        "{diff}"
    );
    assert!(diff.contains("+x-devmesh-service: api@2.0.0"), "{diff}");
    let new_id = replay["replayed"]["id"]
        .as_u64()
        .expect("the replay's own entry")
        .to_string();
    let again = inspect(&b, &[&new_id]).await;
    assert_eq!(again["provider"], c.peer_id.as_str());
    assert_eq!(again["provider_side"]["provider"], c.peer_id.as_str());

    // Pinned to a peer, with a header set: the human form.
    let out = b
        .cli(&[
            "replay",
            &id,
            "--to-peer",
            &a.peer_id,
            "--set-header",
            "X-Try: 1",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("original") && text.contains("replayed"),
        "{text}"
    );
    assert!(text.contains("the responses are the same"), "{text}");
    let bad = b.cli(&["replay", &id, "--to-peer", "nobody"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a peer id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_count_bound_evicts_the_oldest_and_off_keeps_nothing() {
    let (a, off) = tokio::join!(
        Daemon::start_with(&["--inspect-entries", "3"]),
        Daemon::start_with(&["--inspect", "off"])
    );
    let backend = Backend::start("api-a").await;
    let _run = a.run_service("api", backend.port(), "1.0.0").await;
    for i in 0..5 {
        let r = get(a.proxy, "api.localhost", &format!("/hello?n={i}")).await;
        assert_eq!(r.status, 200);
    }
    let list = eventually(SHORT, "the last request", || async {
        let list = inspect(&a, &[]).await;
        (list[0]["url"] == "/hello?n=4").then_some(list)
    })
    .await;
    let urls: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, ["/hello?n=4", "/hello?n=3", "/hello?n=2"]);
    let oldest = list[2]["id"].as_u64().unwrap();
    let gone = a.cli(&["inspect", &(oldest - 1).to_string()]).await;
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("evicted"));

    let out = off.cli(&["inspect"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inspector is off"));
}
