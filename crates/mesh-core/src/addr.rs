//! Multiaddr helpers: which peer an address names, how it is carried, and
//! the one place relay circuit addresses are built.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// The peer id at the end of an address, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().last().and_then(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Whether the address goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether the address is QUIC (UDP) rather than TCP.
pub(crate) fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Udp(_)))
}

/// Whether the address is on a loopback interface.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Whether a relay's listen address is one to hand out: not loopback and
/// not a wildcard.
pub(crate) fn is_public_candidate(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => true,
        _ => false,
    })
}

/// The address without its `/p2p/<id>` parts.
pub(crate) fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The circuit address through `relay`, reached at `relay_addr`: listening
/// on it asks the relay for a reservation; with `to` it dials that peer
/// through the relay.
pub(crate) fn circuit(relay_addr: &Multiaddr, relay: PeerId, to: Option<PeerId>) -> Multiaddr {
    let circuit = relay_addr
        .clone()
        .with(Protocol::P2p(relay))
        .with(Protocol::P2pCircuit);
    match to {
        Some(peer) => circuit.with(Protocol::P2p(peer)),
        None => circuit,
    }
}

/// Groups addresses by the peer id they end in; each address without a
/// peer id is a group of its own.
pub fn group_by_peer(addrs: &[Multiaddr]) -> Vec<Vec<Multiaddr>> {
    let mut groups: Vec<Vec<Multiaddr>> = Vec::new();
    for addr in addrs {
        match peer_of(addr) {
            Some(peer) => match groups
                .iter_mut()
                .find(|g| g.first().and_then(peer_of) == Some(peer))
            {
                Some(group) => group.push(addr.clone()),
                None => groups.push(vec![addr.clone()]),
            },
            None => groups.push(vec![addr.clone()]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_addresses() {
        let peer = PeerId::random();
        let tcp = addr(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}"));
        assert_eq!(peer_of(&tcp), Some(peer));
        assert_eq!(peer_of(&addr("/ip4/127.0.0.1/tcp/4001")), None);
        assert!(is_loopback(&tcp));
        assert!(!is_quic(&tcp));
        assert!(is_quic(&addr("/ip4/10.0.0.1/udp/4001/quic-v1")));
        assert!(!is_loopback(&addr("/ip4/10.0.0.1/udp/4001/quic-v1")));
        assert!(!is_relayed(&tcp));
        assert!(is_public_candidate(&addr("/ip4/203.0.113.7/tcp/1")));
        assert!(is_public_candidate(&addr("/dns4/relay.example/tcp/1")));
        assert!(!is_public_candidate(&addr("/ip4/0.0.0.0/tcp/1")));
        assert!(!is_public_candidate(&addr("/ip6/::1/tcp/1")));
        assert_eq!(without_peer(&tcp), addr("/ip4/127.0.0.1/tcp/4001"));
    }

    #[test]
    fn builds_circuits() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let at = addr("/ip4/203.0.113.7/tcp/4001");
        let listen = circuit(&at, relay, None);
        assert_eq!(
            listen,
            addr(&format!(
                "/ip4/203.0.113.7/tcp/4001/p2p/{relay}/p2p-circuit"
            ))
        );
        assert!(is_relayed(&listen));
        assert_eq!(peer_of(&listen), None);
        let dial = circuit(&at, relay, Some(peer));
        assert!(is_relayed(&dial));
        assert_eq!(peer_of(&dial), Some(peer));
    }

    #[test]
    fn groups_by_peer_in_order() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let a1 = addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{a}"));
        let b1 = addr(&format!("/ip4/10.0.0.2/tcp/1/p2p/{b}"));
        let a2 = addr(&format!("/ip4/10.0.0.1/udp/1/quic-v1/p2p/{a}"));
        let bare = addr("/ip4/10.0.0.3/tcp/1");
        let groups = group_by_peer(&[a1.clone(), b1.clone(), a2.clone(), bare.clone()]);
        assert_eq!(groups, vec![vec![a1, a2], vec![b1], vec![bare]]);
    }
}
