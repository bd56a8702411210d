//! Unit tests of the peer table.

use super::*;

type Table = PeerTable<u32, u64>;

fn conn(addr: &str, relayed: bool) -> Conn {
    Conn {
        addr: addr.parse().unwrap(),
        relayed,
        dialer: true,
    }
}

fn none_held(_: &PeerId) -> bool {
    false
}

const DIRECT: &str = "/ip4/10.0.0.2/tcp/4001";
const RELAYED: &str = "/ip4/10.0.0.9/tcp/4001/p2p-circuit";

#[test]
fn a_peer_lives_as_long_as_its_connections() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    let c = t.connected(peer, 1, conn(DIRECT, false), PeerKind::Pending, now);
    assert!(c.first && !c.replaces_relayed);
    assert!(
        !t.connected(peer, 2, conn(DIRECT, false), PeerKind::Pending, now)
            .first
    );
    assert_eq!(t.kind(&peer), PeerKind::Pending);
    assert!(t.set_kind(&peer, PeerKind::Member));
    assert!(!t.set_kind(&peer, PeerKind::Member), "no change");
    assert!(t.any_member());
    assert!(t.set_rtt(&peer, 1, Duration::from_millis(3), now));
    assert!(!t.set_rtt(&peer, 1, Duration::from_millis(3), now));
    assert!(t.set_agent(&peer, "devmesh/1".into()));
    assert!(!t.set_agent(&peer, "devmesh/1".into()));
    let link = &t.links()[&peer];
    assert_eq!(link.addrs.len(), 2);
    assert!(link.direct);
    assert_eq!(link.kind, PeerKind::Member);
    assert_eq!(
        t.closed(peer, 1, now),
        Closed {
            last: false,
            was_relay: false
        }
    );
    assert_eq!(
        t.closed(peer, 2, now),
        Closed {
            last: true,
            was_relay: false
        }
    );
    assert!(t.is_empty());
    assert_eq!(t.kind(&peer), PeerKind::Pending);
    assert!(
        !t.set_kind(&peer, PeerKind::Member),
        "gone peers have no kind"
    );
}

#[test]
fn a_direct_connection_closes_the_relayed_ones_after_the_grace() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    t.connected(peer, 1, conn(RELAYED, true), PeerKind::Pending, now);
    let c = t.connected(peer, 2, conn(DIRECT, false), PeerKind::Pending, now);
    assert!(c.replaces_relayed);
    assert_eq!(
        t.take_due(now + Duration::from_secs(1), none_held),
        Due::default()
    );
    let due = t.take_due(now + RELAYED_GRACE, none_held);
    assert_eq!(due.close, vec![(peer, 1)]);
    assert_eq!(
        t.take_due(now + RELAYED_GRACE, none_held),
        Due::default(),
        "once"
    );
}

#[test]
fn a_held_peer_keeps_its_relayed_connection_until_released() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    t.connected(peer, 1, conn(RELAYED, true), PeerKind::Pending, now);
    t.connected(peer, 2, conn(DIRECT, false), PeerKind::Pending, now);
    let held = |p: &PeerId| *p == peer;
    assert_eq!(t.take_due(now + RELAYED_GRACE, held), Due::default());
    let later = now + RELAYED_GRACE + HELD_RECHECK;
    assert_eq!(t.take_due(later, held), Due::default(), "still held");
    // Released: closed at the next look, not before.
    assert_eq!(t.take_due(later, none_held), Due::default());
    let due = t.take_due(later + HELD_RECHECK, none_held);
    assert_eq!(due.close, vec![(peer, 1)]);
}

#[test]
fn rejected_and_foreign_peers_are_backed_off() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    t.connected(peer, 1, conn(DIRECT, false), PeerKind::Pending, now);
    t.back_off(peer, now);
    t.disconnect_after(&peer, Duration::from_secs(1), now);
    assert!(t.is_backed_off(&peer, now));
    assert_eq!(t.take_due(now, none_held).disconnect, Vec::<PeerId>::new());
    assert_eq!(
        t.take_due(now + Duration::from_secs(1), none_held)
            .disconnect,
        vec![peer]
    );
    t.closed(peer, 1, now);
    assert!(!t.may_dial_member(&peer, now), "backed off after it left");
    assert!(!t.is_backed_off(&peer, now + FOREIGN_BACKOFF));
    t.clear_back_offs();
    assert!(t.may_dial_member(&peer, now));
}

#[test]
fn unreachable_members_back_off_exponentially() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    assert_eq!(t.dial_failed(peer, now), None, "not a member dial");
    t.member_dial_started(peer);
    assert_eq!(t.dial_failed(peer, now), Some(UNREACHABLE_FIRST));
    assert!(!t.may_dial_member(&peer, now));
    assert_eq!(t.dial_failed(peer, now), None, "one failure per dial");
    let later = now + UNREACHABLE_FIRST;
    assert!(t.may_dial_member(&peer, later));
    t.member_dial_started(peer);
    assert_eq!(t.dial_failed(peer, later), Some(UNREACHABLE_FIRST * 2));
    for _ in 0..10 {
        t.member_dial_started(peer);
        t.dial_failed(peer, later);
    }
    t.member_dial_started(peer);
    assert_eq!(t.dial_failed(peer, later), Some(UNREACHABLE_MAX));
    // A connection ends the back-off.
    t.connected(peer, 1, conn(DIRECT, false), PeerKind::Pending, later);
    t.closed(peer, 1, now);
    assert!(t.may_dial_member(&peer, later));
    // Still connected when the dial fails: no back-off.
    t.connected(peer, 2, conn(DIRECT, false), PeerKind::Pending, later);
    t.member_dial_started(peer);
    assert_eq!(t.dial_failed(peer, later), None);
}

#[test]
fn failed_hole_punches_are_retried_on_relayed_connections() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    t.connected(peer, 1, conn(RELAYED, true), PeerKind::Member, now);
    let failed = t.punch_failed(peer, true, now);
    assert_eq!(failed.rounds, 1);
    assert_eq!(failed.retry_in, Some(Duration::from_secs(2)));
    assert_eq!(
        t.take_due(now + Duration::from_secs(2), none_held).punch,
        vec![peer]
    );
    t.punch_dialled(&peer, 7);
    let failed = t.punch_failed(peer, true, now);
    assert_eq!(failed.close, Some(7));
    assert_eq!(failed.retry_in, Some(Duration::from_secs(4)));
    let failed = t.punch_failed(peer, true, now);
    assert_eq!((failed.rounds, failed.retry_in), (PUNCH_ATTEMPTS, None));
    // The other side never retries.
    let other = PeerId::random();
    t.connected(other, 2, conn(RELAYED, true), PeerKind::Member, now);
    assert_eq!(t.punch_failed(other, false, now).retry_in, None);
    // A retry that comes due once a direct connection exists is dropped.
    t.punch_succeeded(&peer);
    t.punch_failed(peer, true, now);
    t.connected(peer, 3, conn(DIRECT, false), PeerKind::Member, now);
    assert!(
        t.take_due(now + Duration::from_secs(2), none_held)
            .punch
            .is_empty()
    );
}

#[test]
fn relays_go_with_their_listener_or_connection() {
    let mut t = Table::default();
    let (a, b) = (PeerId::random(), PeerId::random());
    let now = Instant::now();
    let listener = ListenerId::next();
    for (peer, id) in [(a, 1), (b, 2)] {
        t.connected(peer, id, conn(DIRECT, false), PeerKind::Relay, now);
    }
    let relay = |listener| Relay {
        addr: DIRECT.parse().unwrap(),
        listener,
        reservation: Reservation::Pending,
    };
    assert!(t.add_relay(&a, relay(Some(listener))));
    assert!(t.add_relay(&b, relay(Some(ListenerId::next()))));
    assert!(
        !t.add_relay(&PeerId::random(), relay(None)),
        "not connected"
    );
    assert!(t.reservation_accepted(&a));
    assert!(!t.reservation_accepted(&a), "already accepted");
    assert_eq!(t.relay_links().len(), 2);
    assert_eq!(t.listener_closed(listener), vec![a]);
    assert!(!t.is_relay(&a) && t.is_relay(&b));
    assert_eq!(
        t.closed(b, 2, now),
        Closed {
            last: true,
            was_relay: true
        }
    );
    assert!(!t.has_relays());
}

#[test]
fn a_lost_member_is_dialled_again() {
    let mut t = Table::default();
    let (member, stranger, caller) = (PeerId::random(), PeerId::random(), PeerId::random());
    let now = Instant::now();
    t.connected(member, 1, conn(DIRECT, false), PeerKind::Member, now);
    t.connected(stranger, 2, conn(DIRECT, false), PeerKind::Foreign, now);
    let inbound = Conn {
        dialer: false,
        ..conn(DIRECT, false)
    };
    t.connected(caller, 3, inbound.clone(), PeerKind::Member, now);
    for (peer, id) in [(member, 1), (stranger, 2), (caller, 3)] {
        t.closed(peer, id, now);
    }
    let later = now + Duration::from_secs(1);
    let due = t.take_due(later, none_held);
    let expected: Multiaddr = format!("{DIRECT}/p2p/{member}").parse().unwrap();
    let mut redial = due.redial;
    redial.sort_by_key(|(_, addrs)| addrs.len());
    assert_eq!(
        redial,
        vec![(caller, vec![]), (member, vec![expected])],
        "members only; the direct address of the one it dialled"
    );
    assert!(t.take_due(later, none_held).redial.is_empty(), "backed off");
    // Back: no more redials.
    t.connected(member, 4, conn(DIRECT, false), PeerKind::Member, later);
    t.connected(caller, 5, inbound, PeerKind::Member, later);
    let much_later = later + Duration::from_secs(120);
    assert!(t.take_due(much_later, none_held).redial.is_empty());
}

#[test]
fn a_second_direct_connection_this_node_dialled_is_extra() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    let inbound = Conn {
        dialer: false,
        ..conn(DIRECT, false)
    };
    let extra = |c: Connected| c.extra;
    assert!(!extra(t.connected(
        peer,
        1,
        inbound.clone(),
        PeerKind::Member,
        now
    )));
    // The peer's own second connection (its AutoNAT dial-back to us) is
    // its to close; ours over another transport, or relayed, is wanted.
    assert!(!extra(t.connected(peer, 2, inbound, PeerKind::Member, now)));
    let quic = conn("/ip4/10.0.0.2/udp/4001/quic-v1", false);
    assert!(!extra(t.connected(peer, 3, quic, PeerKind::Member, now)));
    assert!(!extra(t.connected(
        peer,
        4,
        conn(RELAYED, true),
        PeerKind::Member,
        now
    )));
    // Ours over TCP, while TCP connections exist: extra.
    assert!(extra(t.connected(
        peer,
        5,
        conn(DIRECT, false),
        PeerKind::Member,
        now
    )));
}

#[test]
fn the_first_direct_connection_is_never_extra() {
    let mut t = Table::default();
    let peer = PeerId::random();
    let now = Instant::now();
    t.connected(peer, 1, conn(RELAYED, true), PeerKind::Member, now);
    let c = t.connected(peer, 2, conn(DIRECT, false), PeerKind::Member, now);
    assert!(c.replaces_relayed && !c.extra);
}
