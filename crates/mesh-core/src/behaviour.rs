//! The libp2p behaviours of a node and how the swarm is built.

use std::{num::NonZeroU32, time::Duration};

use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat,
    core::{Transport as _, upgrade},
    dcutr, gossipsub, identify,
    identity::Keypair,
    kad, mdns, noise, ping, relay,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};

use crate::{
    Config, Error,
    admission::{self, AuthRequest, AuthResponse},
    snapshot::Role,
    sync::{SyncRequest, SyncResponse},
};

/// Protocol of the record table sync on connect.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/sync/2");
/// Kademlia protocol name: keeps the devmesh DHT apart from the public one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/devmesh/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/devmesh/id/1.0.0";
/// The relay v2 hop protocol: a peer that speaks it can relay for us.
pub const RELAY_HOP_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub relay_client: relay::client::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub auth: request_response::cbor::Behaviour<AuthRequest, AuthResponse>,
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub autonat: autonat::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub dcutr: dcutr::Behaviour,
    pub stream: libp2p_stream::Behaviour,
}

/// Relay limits fit for tunnelling: a relayed tunnel carries gigabytes and
/// stays open for hours; the libp2p defaults (128 KiB, 2 minutes) are for
/// hole-punching coordination only.
fn relay_config() -> relay::Config {
    let per = |n: u32| NonZeroU32::new(n).expect("a positive limit");
    let minute = Duration::from_secs(60);
    relay::Config {
        max_reservations: 1024,
        max_reservations_per_peer: 8,
        reservation_duration: Duration::from_secs(60 * 60),
        max_circuits: 1024,
        max_circuits_per_peer: 64,
        max_circuit_duration: Duration::from_secs(24 * 60 * 60),
        // 0 means unlimited.
        max_circuit_bytes: 0,
        // A team behind one office NAT shares an address: rate limits per
        // IP are generous, per peer they still stop a runaway client.
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
    }
    .reservation_rate_per_peer(per(30), minute)
    .reservation_rate_per_ip(per(600), minute)
    .circuit_src_per_peer(per(120), minute)
    .circuit_src_per_ip(per(1200), minute)
}

/// How often each connection is pinged: the round-trip times `status`
/// shows, and how a connection that went silent is found out (the peer
/// table closes one that answered none for `SILENT_AFTER`).
const PING_EVERY: Duration = Duration::from_secs(10);

/// How long one ping is waited for.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from a TCP connection at a time, below Noise.
const TCP_READ_BUFFER: usize = 128 * 1024;

/// How far yamux may grow the receive windows of a connection's streams,
/// together, beyond the 256 KiB each stream starts with. Whatever a peer
/// sends within a window and the receiving service has not taken yet sits in
/// memory; yamux's own budget is 1 GiB, and on a 1 GiB upload it doubled one
/// stream's window up to 32 MiB and the receiving daemon's RSS reached 52 MB
/// (66 MB in a full `cargo xtask bench`). 16 MiB still covers a 160 MB/s
/// stream at 100 ms round trip.
const YAMUX_WINDOW_GROWTH: usize = 16 * 1024 * 1024;

/// Yamux with its windows' growth capped at [`YAMUX_WINDOW_GROWTH`].
///
/// libp2p-yamux exposes no receive-window setting, only the stream limit,
/// and yamux lends each stream's growth out of what its fixed 1 GiB
/// connection window leaves after reserving 256 KiB for every allowed
/// stream; so the limit is set to leave exactly the budget. It allows more
/// streams than yamux's default 512; that lets no peer park more unread data
/// with us: libp2p drops inbound streams beyond 128 that are still
/// negotiating a protocol, and the handlers read or drop what they accept.
fn yamux_config() -> yamux::Config {
    const CONNECTION_WINDOW: usize = 1024 * 1024 * 1024;
    const STREAM_CREDIT: usize = 256 * 1024;
    let mut config = yamux::Config::default();
    config.set_max_num_streams((CONNECTION_WINDOW - YAMUX_WINDOW_GROWTH) / STREAM_CREDIT);
    config
}

pub(crate) fn build_swarm(config: &Config) -> Result<Swarm<Behaviour>, Error> {
    fn setup(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Setup(Box::new(e))
    }
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic()
        // TCP with Noise and Yamux, as `with_tcp` builds it, but with reads
        // buffered below Noise: its framing reads 8 KiB at a time, so every
        // 16 KiB yamux frame of a bulk transfer cost two or three `recv`s
        // (strace on a 1 GiB upload: 23787 `recv`s of 8 KiB in one second
        // on the receiving node).
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .map(|tcp, _| futures::io::BufReader::with_capacity(TCP_READ_BUFFER, tcp))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux_config()),
                )
            },
        )
        .map_err(setup)?
        .with_dns()
        .map_err(setup)?
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(setup)?
        .with_behaviour(|key, relay_client| behaviour(key, relay_client, config))
        .map_err(setup)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

/// The behaviours of a node started with `config`.
fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    config: &Config,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let member = config.role == Role::Member;
    let mdns_enabled = config.mdns && member;
    let agent = config.agent.clone();
    let peer_id = key.public().to_peer_id();
    // A smaller mesh than gossipsub's default (6, up to 12), and no flood
    // publishing (by default an author sends its own messages to every
    // peer): each announcement then reaches a node about four times
    // instead of seven, and gossipsub checks the signature of every copy
    // before it drops duplicates; that was one of the largest parts of an
    // idle node's CPU in a team of 100. A team smaller than the mesh still gets
    // every message straight from its author. Gossip (IHAVE lists of recent
    // message ids) goes to 3 peers outside the mesh each heartbeat, not to a
    // quarter of them (`gossip_factor`, 0.25 by default): that is 24 sends
    // and 24 receipts a second for every node of a team of 100, and twice
    // as many at 200, for messages the mesh already delivered.
    let gossipsub_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(crate::record::MAX_ANNOUNCEMENT_BYTES + 4096)
        .heartbeat_interval(Duration::from_secs(1))
        .flood_publish(false)
        .mesh_n(4)
        .mesh_n_low(3)
        .mesh_n_high(8)
        .mesh_outbound_min(2)
        .gossip_lazy(3)
        .gossip_factor(0.0)
        .build()?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config,
    )?;
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    // The node bootstraps the DHT itself, and only when it has peers
    // (kad's own timer warns on a node that is alone).
    kad_config.set_periodic_bootstrap_interval(None);
    // Members re-advertise every few minutes; a member that left
    // drops out of the rendezvous within minutes, not days.
    kad_config.set_provider_record_ttl(Some(Duration::from_secs(15 * 60)));
    kad_config.set_provider_publication_interval(None);
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let mdns = if mdns_enabled {
        let cfg = mdns::Config {
            query_interval: Duration::from_secs(5),
            ..Default::default()
        };
        Some(mdns::tokio::Behaviour::new(cfg, peer_id)?)
    } else {
        None
    };
    let autonat = autonat::Behaviour::new(
        peer_id,
        autonat::Config {
            // Teams run devmesh on private and lab networks too.
            only_global_ips: false,
            boot_delay: Duration::from_secs(2),
            retry_interval: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(5 * 60),
            throttle_server_period: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let rr_config =
        request_response::Config::default().with_request_timeout(Duration::from_secs(10));
    Ok(Behaviour {
        relay_client,
        relay_server: Toggle::from(
            (!member).then(|| relay::Behaviour::new(peer_id, relay_config())),
        ),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(agent),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_EVERY)
                .with_timeout(PING_TIMEOUT),
        ),
        auth: request_response::cbor::Behaviour::with_codec(
            admission::codec(),
            [(admission::PROTOCOL, ProtocolSupport::Full)],
            rr_config.clone(),
        ),
        gossipsub,
        kad,
        mdns: Toggle::from(mdns),
        autonat,
        sync: request_response::cbor::Behaviour::with_codec(
            crate::sync::codec(),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        ),
        dcutr: dcutr::Behaviour::new(peer_id),
        stream: libp2p_stream::Behaviour::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relayed tunnel must carry gigabytes and last a working day: no byte
    /// cap, circuits of at least an hour.
    #[test]
    fn relay_limits_fit_tunnels() {
        let c = relay_config();
        assert_eq!(c.max_circuit_bytes, 0, "0 is unlimited");
        assert!(c.max_circuit_duration >= Duration::from_secs(60 * 60));
        assert!(c.max_circuit_duration.as_secs() <= u64::from(u32::MAX));
        assert!(c.max_circuits_per_peer >= 16);
    }
}
