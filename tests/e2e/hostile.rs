//! Hostile members: peers that know the namespace (here the open namespace
//! `test`) and try to exhaust a node. Each attack is bounded: the node keeps
//! serving B, its memory stays bounded, and its log names the peer.

use std::time::{Duration, Instant};

use devmesh_tests::{Shared, eventually, get};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol, Swarm, identity::Keypair, request_response};
use mesh_core::{
    Namespace, SyncEntry, SyncResponse,
    admission::AuthRequest,
    record::{Announcement, FORMAT_VERSION, ServiceRecord},
    registry::MAX_REMOTE_SERVICES,
};

use super::malformed::{Rogue, RogueEvent, framed, rogue, rogue_with};

/// Keeps the rogue's swarm going, answering every record sync with `sync`.
fn pump(mut swarm: Swarm<Rogue>, sync: SyncResponse) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let libp2p::swarm::SwarmEvent::Behaviour(RogueEvent::Sync(
                request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                },
            )) = swarm.select_next_some().await
            {
                let _ = swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, sync.clone());
            }
        }
    })
}

/// A signed, sealed announcement of `services` from a made-up provider.
fn sealed(ns: &Namespace, key: &Keypair, seq: u64, services: Vec<ServiceRecord>) -> Vec<u8> {
    ns.seal(
        &Announcement {
            v: FORMAT_VERSION,
            namespace: "test".into(),
            provider: key.public().to_peer_id(),
            seq,
            ttl_secs: 60,
            services,
        }
        .sign(key)
        .unwrap(),
    )
}

fn many(n: usize) -> Vec<ServiceRecord> {
    (0..n)
        .map(|i| ServiceRecord::http(format!("s{i}"), semver::Version::new(1, 0, 0)))
        .collect()
}

/// B keeps getting A's service; returns the slowest of `n` requests.
async fn b_is_served(shared: &Shared, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let r = get(shared.b.proxy, "api.localhost", "/name").await;
        assert_eq!(r.status, 200, "{}", r.text());
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

/// Sync answers: one of 100 MB (cut off unread past the limit), and records
/// of made-up providers worth 20,000 services, one with a huge field and
/// one with the largest sequence number: the table keeps at most
/// `MAX_REMOTE_SERVICES`, and the rest is refused with the peer named.
#[tokio::test(flavor = "multi_thread")]
async fn records_and_sync_answers_from_a_member_are_bounded() {
    let shared = Shared::start("api", "api", "1.0.0").await;
    let a = &shared.a;
    let ns = Namespace::new("test", None);
    let base = a.peak_rss_kib();

    // 100 MB of sealed junk in one answer.
    let junk = SyncResponse {
        entries: (0..100)
            .map(|_| SyncEntry {
                sealed: vec![7; 1 << 20],
                remaining_ms: 60_000,
            })
            .collect(),
    };
    let (swarm, _, _) = rogue_with(a, true, junk.clone()).await;
    let first = swarm.local_peer_id().to_string();
    let flood = pump(swarm, junk);
    eventually(
        Duration::from_secs(30),
        "the 100 MB answer dropped",
        || async {
            let log = a.log();
            log.lines()
                .any(|l| {
                    l.contains("dropped an unreadable record sync answer") && l.contains(&first)
                })
                .then_some(())
        },
    )
    .await;
    flood.abort();

    // 20 providers of 1,000 services each, a record with a 40 KB tag and
    // one with the largest sequence number.
    let mut entries: Vec<SyncEntry> = (0..20)
        .map(|_| SyncEntry {
            sealed: sealed(&ns, &Keypair::generate_ed25519(), 1, many(1000)),
            remaining_ms: 60_000,
        })
        .collect();
    let mut tagged = ServiceRecord::http("tagged", semver::Version::new(1, 0, 0));
    tagged.tags = vec!["x".repeat(40_000)];
    let max_seq = Keypair::generate_ed25519();
    for sealed in [
        sealed(&ns, &Keypair::generate_ed25519(), 1, vec![tagged]),
        sealed(&ns, &max_seq, u64::MAX, many(1)),
    ] {
        entries.push(SyncEntry {
            sealed,
            remaining_ms: 60_000,
        });
    }
    let records = SyncResponse { entries };
    let (swarm, _, _) = rogue_with(a, true, records.clone()).await;
    let second = swarm.local_peer_id().to_string();
    let flood = pump(swarm, records);
    eventually(Duration::from_secs(30), "the records refused", || async {
        let log = a.log();
        let named = |what: &str| log.lines().any(|l| l.contains(what) && l.contains(&second));
        (named("would hold more than 16384 services") && named("tags are at most 64 bytes"))
            .then_some(())
    })
    .await;
    // The snapshot `status` reads may publish the table a moment after the
    // log line.
    let status = eventually(Duration::from_secs(10), "A showing the records", || async {
        let status = a.status().await;
        (status["services"].as_array().unwrap().len() >= 16_000).then_some(status)
    })
    .await;
    let services = status["services"].as_array().unwrap();
    assert!(
        services.len() <= MAX_REMOTE_SERVICES + 1,
        "{}",
        services.len()
    );
    let max_seq = max_seq.public().to_peer_id().to_string();
    assert!(
        services.iter().any(|s| s["provider"] == max_seq.as_str()),
        "the record with the largest sequence number is an ordinary one"
    );
    let slowest = b_is_served(&shared, 20).await;
    let grew = a.peak_rss_kib().saturating_sub(base);
    eprintln!("A's peak RSS grew by {grew} KiB; B's slowest request {slowest:?}");
    assert!(grew < 200 * 1024, "A's peak RSS grew by {grew} KiB");
    flood.abort();
}

/// 10,000 tunnel streams opened at once by one member: it gets its share,
/// B is still served, A's memory stays bounded and its log names the peer
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_streams_from_one_member_leave_the_others_served() {
    let shared = Shared::start("api", "api", "1.0.0").await;
    let a = &shared.a;
    let base = a.peak_rss_kib();
    let (swarm, _, a_peer) = rogue(a, true).await;
    let me = swarm.local_peer_id().to_string();
    let control = swarm.behaviour().stream.new_control();
    let pumping = pump(swarm, SyncResponse { entries: vec![] });
    let hello = framed(br#"{"v":1,"namespace":"test","service":"api"}"#);
    let opened: Vec<_> = (0..10_000)
        .map(|_| {
            let mut control = control.clone();
            let hello = hello.clone();
            tokio::spawn(async move {
                let mut s = control
                    .open_stream(a_peer, StreamProtocol::new("/devmesh/http/1"))
                    .await
                    .ok()?;
                s.write_all(&hello).await.ok()?;
                s.flush().await.ok()?;
                Some(s)
            })
        })
        .collect();
    eventually(
        Duration::from_secs(60),
        "A refusing the rogue's streams",
        || async {
            a.log()
                .lines()
                .any(|l| l.contains("tunnel streams of this peer are open") && l.contains(&me))
                .then_some(())
        },
    )
    .await;
    let slowest = b_is_served(&shared, 20).await;
    let mut held = Vec::new();
    for task in opened {
        if let Ok(Some(stream)) = task.await {
            held.push(stream);
        }
    }
    let refusals = a
        .log()
        .lines()
        .filter(|l| l.contains("tunnel streams of this peer are open"))
        .count();
    let grew = a.peak_rss_kib().saturating_sub(base);
    eprintln!(
        "{} of 10000 streams opened; A logged {refusals} refusal(s), its peak RSS grew by {grew} KiB; B's slowest request {slowest:?}",
        held.len()
    );
    assert!(refusals <= 3, "logged {refusals} times");
    assert!(grew < 300 * 1024, "A's peak RSS grew by {grew} KiB");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    drop(held);
    pumping.abort();
}

/// Admission challenges sent in a loop: a few are answered, the rest are
/// not, the log names the peer once, and B is still served.
#[tokio::test(flavor = "multi_thread")]
async fn admission_challenges_in_a_loop_are_answered_a_few_times() {
    let shared = Shared::start("api", "api", "1.0.0").await;
    let a = &shared.a;
    let (mut swarm, _, a_peer) = rogue(a, true).await;
    let me = swarm.local_peer_id().to_string();
    let ns = Namespace::new("test", None);
    for _ in 0..500 {
        swarm.behaviour_mut().auth.send_request(
            &a_peer,
            AuthRequest {
                v: 1,
                namespace_id: ns.id().to_vec(),
                nonce: vec![3; 32],
            },
        );
    }
    let answered = tokio::time::timeout(Duration::from_secs(15), async {
        let (mut answered, mut unanswered) = (0, 0);
        while answered + unanswered < 500 {
            match swarm.select_next_some().await {
                libp2p::swarm::SwarmEvent::Behaviour(RogueEvent::Auth(
                    request_response::Event::Message {
                        message: request_response::Message::Response { .. },
                        ..
                    },
                )) => answered += 1,
                libp2p::swarm::SwarmEvent::Behaviour(RogueEvent::Auth(
                    request_response::Event::OutboundFailure { .. },
                )) => unanswered += 1,
                _ => {}
            }
        }
        answered
    })
    .await
    .expect("every challenge answered or refused within 15 s");
    let warned = a
        .log()
        .lines()
        .filter(|l| l.contains("admission challenges in a loop") && l.contains(&me))
        .count();
    eprintln!("{answered} of 500 challenges answered; {warned} log line(s)");
    assert!(answered <= 20, "{answered} answered");
    assert_eq!(warned, 1);
    b_is_served(&shared, 5).await;
}

/// Opens a tunnel to A's `api` and reads A's answer to the hello, as a
/// consumer does: a stream A's libp2p-stream inbound queue dropped (it holds
/// one stream at a time) is closed before the answer and opened again, with
/// the waits `mesh-proxy`'s handshake uses.
async fn open_tunnel(control: &mut libp2p_stream::Control, a_peer: PeerId) -> libp2p::Stream {
    let hello = framed(br#"{"v":1,"namespace":"test","service":"api"}"#);
    let mut last = None;
    for attempt in 0..10 {
        let tried = async {
            let mut s = control
                .open_stream(a_peer, StreamProtocol::new("/devmesh/http/1"))
                .await
                .map_err(std::io::Error::other)?;
            s.write_all(&hello).await?;
            s.flush().await?;
            let mut len = [0; 2];
            s.read_exact(&mut len).await?;
            let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>((s, reply))
        };
        match tried.await {
            Ok((s, reply)) => {
                let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
                assert_eq!(reply["ok"], true, "A refused the tunnel: {reply}");
                return s;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
    }
    panic!("no tunnel to A in 10 attempts: {last:?}");
}

/// A member that opens a tunnel to a large download and never reads it
/// costs A no more than the stream's window, and B is still served.
#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_reader_that_stops_reading_costs_a_bounded_amount() {
    let shared = Shared::start("api", "api", "1.0.0").await;
    let a = &shared.a;
    let base = a.peak_rss_kib();
    let (swarm, _, a_peer) = rogue(a, true).await;
    let mut control = swarm.behaviour().stream.new_control();
    let pumping = pump(swarm, SyncResponse { entries: vec![] });
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = open_tunnel(&mut control, a_peer).await;
        s.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        s.flush().await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slowest = b_is_served(&shared, 20).await;
    let grew = a.peak_rss_kib().saturating_sub(base);
    eprintln!(
        "8 stalled 1 GiB downloads: A's peak RSS grew by {grew} KiB; B's slowest request {slowest:?}"
    );
    assert!(grew < 100 * 1024, "A's peak RSS grew by {grew} KiB");
    drop(stalled);
    pumping.abort();
}
