//! Hostile peers: an outsider that never proves membership, and a member of
//! an open namespace that forges records. Every bad input is dropped with a
//! log line and the node keeps serving.

use std::time::Duration;

use devmesh_tests::{Daemon, Shared, eventually, get};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, gossipsub,
    identity::Keypair,
    noise,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use mesh_core::{
    Namespace, SYNC_PROTOCOL, SyncRequest, SyncResponse,
    admission::{self, AuthRequest, AuthResponse},
    record::{Announcement, FORMAT_VERSION, ServiceRecord},
};

#[derive(NetworkBehaviour)]
pub(crate) struct Rogue {
    gossipsub: gossipsub::Behaviour,
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) auth: request_response::cbor::Behaviour<AuthRequest, AuthResponse>,
    pub(crate) sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

/// A rogue libp2p peer connected to `target` and subscribed to namespace
/// `test`'s topic. With `prove`, it answers the admission challenge of the
/// open namespace `test` like a member would.
pub(crate) async fn rogue(target: &Daemon, prove: bool) -> (Swarm<Rogue>, Keypair, PeerId) {
    rogue_with(target, prove, SyncResponse { entries: vec![] }).await
}

/// [`rogue`], answering the target's record sync with `sync`, and with
/// yamux allowing 4,096 streams (as many as its 1 GiB connection window allows).
pub(crate) async fn rogue_with(
    target: &Daemon,
    prove: bool,
    sync: SyncResponse,
) -> (Swarm<Rogue>, Keypair, PeerId) {
    let mut sync = Some(sync);
    let key = Keypair::generate_ed25519();
    let auth_protocols = if prove {
        vec![(admission::PROTOCOL, ProtocolSupport::Full)]
    } else {
        Vec::new()
    };
    let mut swarm = SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, || {
            let mut config = yamux::Config::default();
            config.set_max_num_streams(4096);
            config
        })
        .unwrap()
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()
                .unwrap();
            Rogue {
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .unwrap(),
                stream: libp2p_stream::Behaviour::new(),
                auth: request_response::cbor::Behaviour::new(
                    auth_protocols,
                    request_response::Config::default(),
                ),
                sync: request_response::cbor::Behaviour::new(
                    [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60)),
                ),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new(Namespace::new("test", None).topic());
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    let addr: Multiaddr = target.p2p_addr.parse().unwrap();
    let target_peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => id,
        _ => panic!("no peer id in {addr}"),
    };
    swarm.dial(addr).unwrap();
    let me = *swarm.local_peer_id();
    let ns = Namespace::new("test", None);
    // Wait for the target's subscription (and, as a member, answer its
    // challenge) before attacking.
    let ready = async {
        let mut subscribed = false;
        let mut challenged = !prove;
        while !(subscribed && challenged) {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(RogueEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id,
                    ..
                })) if peer_id == target_peer => subscribed = true,
                SwarmEvent::Behaviour(RogueEvent::Auth(request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    let proof = ns.proof(&request.nonce, &me, &peer).to_vec();
                    let _ = swarm
                        .behaviour_mut()
                        .auth
                        .send_response(channel, AuthResponse::Member { proof });
                    challenged = true;
                }
                SwarmEvent::Behaviour(RogueEvent::Sync(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                })) => answer_sync(&mut swarm, channel, &mut sync),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("the node subscribed (and challenged the rogue)");
    if prove {
        // The target admits the rogue when it has read the proof; until then
        // it drops the rogue's gossip as a pending peer's. Keep the swarm
        // going until the target lists the rogue as a member.
        let me = me.to_string();
        let admitted = async {
            loop {
                let check = async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    target.peers().await
                };
                tokio::pin!(check);
                let peers = loop {
                    tokio::select! {
                        peers = &mut check => break peers,
                        event = swarm.select_next_some() => {
                            if let SwarmEvent::Behaviour(RogueEvent::Sync(
                                request_response::Event::Message {
                                    message: request_response::Message::Request { channel, .. },
                                    ..
                                },
                            )) = event
                            {
                                answer_sync(&mut swarm, channel, &mut sync);
                            }
                        }
                    }
                };
                let member = peers.as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["peer_id"] == me.as_str() && p["kind"] == "member")
                });
                if member {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), admitted)
            .await
            .expect("the node admitted the rogue as a member");
    }
    (swarm, key, target_peer)
}

/// Answers the target's record sync, the first time with `sync`.
fn answer_sync(
    swarm: &mut Swarm<Rogue>,
    channel: request_response::ResponseChannel<SyncResponse>,
    sync: &mut Option<SyncResponse>,
) {
    let answer = sync.take().unwrap_or(SyncResponse { entries: vec![] });
    let _ = swarm.behaviour_mut().sync.send_response(channel, answer);
}

/// Sends `header` on a tunnel stream and returns what comes back.
async fn tunnel_reply(control: &mut libp2p_stream::Control, peer: PeerId, header: &[u8]) -> String {
    let mut s = control
        .open_stream(peer, StreamProtocol::new("/devmesh/http/1"))
        .await
        .unwrap();
    s.write_all(header).await.unwrap();
    s.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

pub(crate) fn framed(hello: &[u8]) -> Vec<u8> {
    let mut v = (hello.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(hello);
    v
}

/// A peer that never proves membership: its gossip is dropped, it gets no
/// tunnel, and malformed tunnel headers are dropped; the node keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn outsider_records_and_tunnels_are_refused() {
    let Shared {
        a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "api", "1.0.0").await;
    let (mut swarm, key, a_peer) = rogue(&a, false).await;
    let topic = gossipsub::IdentTopic::new(Namespace::new("test", None).topic());
    let forged = Announcement {
        v: FORMAT_VERSION,
        namespace: "test".into(),
        provider: *swarm.local_peer_id(),
        seq: 1,
        ttl_secs: 60,
        services: vec![ServiceRecord::http("api", semver::Version::new(9, 0, 0))],
    }
    .sign(&key)
    .unwrap();
    let sealed = Namespace::new("test", None).seal(&forged);
    for payload in [b"\x00garbage\xff".to_vec(), sealed] {
        swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), payload)
            .unwrap();
    }
    let mut control = swarm.behaviour().stream.new_control();
    let pump = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let refusal = {
        // Malformed headers: an oversized length, then not JSON.
        tunnel_reply(&mut control, a_peer, &[0xff, 0xff, b'x', b'y']).await;
        tunnel_reply(&mut control, a_peer, &[0, 4, b'n', b'o', b'p', b'e']).await;
        // A well-formed request for a service A provides.
        tunnel_reply(
            &mut control,
            a_peer,
            &framed(br#"{"v":1,"namespace":"test","service":"api"}"#),
        )
        .await
    };
    assert!(refusal.contains("not an admitted member"), "{refusal:?}");
    assert!(!refusal.contains("localhost:"), "{refusal:?}");

    eventually(
        Duration::from_secs(10),
        "log lines about the dropped input",
        || async {
            let log = a.log();
            (log.matches("record from a peer that is not an admitted member")
                .count()
                >= 2
                && log
                    .matches("dropping tunnel stream with a malformed header")
                    .count()
                    >= 2
                && log.contains("refused a tunnel from a peer that is not an admitted member"))
            .then_some(())
        },
    )
    .await;

    // The node still serves, and nothing of the rogue's landed.
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "api");
    pump.abort();
    for node in [&a, &b] {
        let status = node.status().await;
        assert!(
            status["services"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["version"] != "9.0.0"),
            "{status}"
        );
    }
}

/// A member of an open namespace (anyone who knows its name) that forges a
/// record for another peer, sends a stale one, sends a malformed admission
/// challenge and asks for a service that is not there: each is refused with
/// a log line.
#[tokio::test(flavor = "multi_thread")]
async fn member_forgeries_are_dropped() {
    let Shared {
        a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "api", "1.0.0").await;
    let (mut swarm, key, a_peer) = rogue(&a, true).await;
    let ns = Namespace::new("test", None);
    let topic = gossipsub::IdentTopic::new(ns.topic());
    let me = *swarm.local_peer_id();
    let record = |provider: PeerId, seq: u64, major: u64| {
        ns.seal(
            &Announcement {
                v: FORMAT_VERSION,
                namespace: "test".into(),
                provider,
                seq,
                ttl_secs: 60,
                services: vec![ServiceRecord::http(
                    "api",
                    semver::Version::new(major, 0, 0),
                )],
            }
            .sign(&key)
            .unwrap(),
        )
    };
    // A record describing B, signed by the rogue; then the rogue's own
    // record (accepted), then an older one of its own (stale: ignored).
    for payload in [
        record(b.peer_id.parse().unwrap(), u64::MAX, 9),
        record(me, 100, 7),
        record(me, 50, 8),
    ] {
        swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), payload)
            .unwrap();
    }
    // A malformed admission challenge: wrong id and nonce lengths.
    swarm.behaviour_mut().auth.send_request(
        &a_peer,
        AuthRequest {
            v: 1,
            namespace_id: vec![0; 3],
            nonce: vec![1],
        },
    );
    let mut control = swarm.behaviour().stream.new_control();
    let pump = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let header = framed(br#"{"v":1,"namespace":"test","service":"nothing-here"}"#);
    let refusal = tunnel_reply(&mut control, a_peer, &header).await;
    assert!(
        refusal.contains("\\\"nothing-here\\\" is not provided by peer"),
        "{refusal:?}"
    );
    eventually(
        Duration::from_secs(10),
        "the forged record dropped",
        || async {
            let log = a.log();
            let forged = format!("record for {} signed by", b.peer_id);
            (log.contains(&forged)
                && log.contains("ignoring stale or replayed announcement")
                && log.contains("dropped a malformed admission request"))
            .then_some(())
        },
    )
    .await;
    let status = a.status().await;
    let versions: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_str().unwrap())
        .collect();
    assert!(versions.contains(&"7.0.0"), "{status}");
    assert!(
        !versions.contains(&"9.0.0") && !versions.contains(&"8.0.0"),
        "{status}"
    );
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    pump.abort();
}
