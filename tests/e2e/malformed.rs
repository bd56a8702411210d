use std::time::Duration;

use devmesh_tests::{Shared, eventually, get};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, StreamProtocol, SwarmBuilder, gossipsub, identity::Keypair, noise,
    swarm::NetworkBehaviour, swarm::SwarmEvent, tcp, yamux,
};
use mesh_core::record::{Announcement, FORMAT_VERSION, ServiceRecord};

#[derive(NetworkBehaviour)]
struct Rogue {
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A hostile peer sends garbage and forged records and malformed tunnel
/// headers: the node drops each with a log line and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_and_stream_headers_are_dropped() {
    let Shared {
        a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("api", "api", "1.0.0").await;

    let key = Keypair::generate_ed25519();
    let mut swarm = SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
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
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new("/devmesh/ns/test/records/1");
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    let target: Multiaddr = a.p2p_addr.parse().unwrap();
    let a_peer = target.iter().last().and_then(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    });
    swarm.dial(target).unwrap();
    let mut control = swarm.behaviour().stream.new_control();
    let subscribed = async {
        loop {
            if let SwarmEvent::Behaviour(RogueEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                ..
            })) = swarm.select_next_some().await
                && Some(peer_id) == a_peer
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("A subscribed");

    // Garbage, then a record describing B but signed by the rogue.
    let forged = Announcement {
        v: FORMAT_VERSION,
        namespace: "test".into(),
        provider: b.peer_id.parse().unwrap(),
        seq: u64::MAX,
        ttl_secs: 60,
        services: vec![ServiceRecord::http("api", semver_v(9))],
    }
    .sign(&key)
    .unwrap();
    swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), b"\x00garbage\xff".to_vec())
        .unwrap();
    swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), forged)
        .unwrap();

    let a_peer = a_peer.unwrap();
    let pump = async {
        loop {
            swarm.select_next_some().await;
        }
    };
    let attacks = async {
        // An oversized header length.
        let mut s = control
            .open_stream(a_peer, StreamProtocol::new("/devmesh/http/1"))
            .await
            .unwrap();
        s.write_all(&[0xff, 0xff, b'x', b'y']).await.unwrap();
        s.flush().await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        // A header that is not JSON.
        let mut s = control
            .open_stream(a_peer, StreamProtocol::new("/devmesh/http/1"))
            .await
            .unwrap();
        s.write_all(&[0, 4, b'n', b'o', b'p', b'e']).await.unwrap();
        s.flush().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        // Valid headers for another namespace, or for a service the node
        // does not provide, are refused with a reason.
        let mut refusals = Vec::new();
        for hello in [
            &br#"{"v":1,"namespace":"other","service":"api"}"#[..],
            &br#"{"v":1,"namespace":"test","service":"nothing-here"}"#[..],
        ] {
            let mut s = control
                .open_stream(a_peer, StreamProtocol::new("/devmesh/http/1"))
                .await
                .unwrap();
            s.write_all(&(hello.len() as u16).to_be_bytes())
                .await
                .unwrap();
            s.write_all(hello).await.unwrap();
            s.flush().await.unwrap();
            let mut reply = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
            refusals.push(String::from_utf8_lossy(&reply).into_owned());
        }
        refusals
    };
    let refusal = tokio::select! {
        r = attacks => r,
        _ = pump => unreachable!(),
    };
    assert!(refusal[0].contains("not in namespace"), "{refusal:?}");
    assert!(
        refusal[1].contains("\\\"nothing-here\\\" is not provided by peer"),
        "{refusal:?}"
    );

    eventually(
        Duration::from_secs(10),
        "log lines about the dropped input",
        || async {
            let log = a.log();
            (log.matches("dropped malformed or invalid record").count() >= 2
                && log
                    .matches("dropping tunnel stream with a malformed header")
                    .count()
                    >= 2
                && log.contains("refused a tunnel"))
            .then_some(())
        },
    )
    .await;
    let log = a.log();
    assert!(
        log.contains(&format!("record of {} published by", b.peer_id)) || log.contains("signed by"),
        "{log}"
    );

    // The node still serves, and the forged record did not land anywhere.
    let r = get(b.proxy, "api.localhost", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "api");
    let status = a.status().await;
    assert!(
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["version"] != "9.0.0"),
        "{status}"
    );
}

fn semver_v(major: u64) -> semver::Version {
    semver::Version::new(major, 0, 0)
}
