//! Router kinds met in the field, in the NAT lab: routers that reject
//! instead of dropping (OpenWrt), a short UDP mapping timeout, two hosts
//! behind one NAT, a member with a public address, and dual-stack IPv6.
//! One join each (`cargo xtask netlab --cases` makes 20 per kind and
//! reports the rates); the bounds here are generous for a loaded machine.
//! Needs root; skips otherwise.

use std::time::{Duration, Instant};

use devmesh_netlab::{Firewall, HomeSpec, Lab, LabSpec, Nat};
use devmesh_tests::eventually;

use crate::natlab::{LAB, Team, curl, home, link, skip, team_at};

/// How long a cone-like case may take to go direct here (the benchmark's
/// target is 10 s after the first response, measured there).
const DIRECT_WITHIN: Duration = Duration::from_secs(30);

fn lab(public_hosts: usize, homes: Vec<HomeSpec>, ipv6: bool) -> Lab {
    Lab::new(LabSpec {
        public_hosts,
        homes,
        latency: None,
        ipv6,
    })
    .expect("building the NAT lab")
}

/// Waits until B's link to A is direct; returns its addresses and how
/// long that took after the join's first response.
async fn goes_direct(t: &Team) -> Vec<String> {
    let since = Instant::now();
    let (_, addrs) = eventually(DIRECT_WITHIN, "a direct link from B to A", || async {
        link(&t.b, &t.a).await.filter(|(c, _)| c == "direct")
    })
    .await;
    eprintln!(
        "direct {:?} after the first response (join to first response {:?}): {addrs:?}",
        since.elapsed(),
        t.join_to_usable
    );
    addrs
}

/// The next request goes over the direct link.
fn answers_direct(t: &Team, b_host: &devmesh_netlab::Host) {
    let r = curl(&t.lab, b_host, &t.b, "/name");
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body, "home0-api");
    // The relayed connection may still be open for its grace; a request
    // may take either until it closes.
    assert!(
        r.headers.contains("x-devmesh-route: remote-"),
        "{}",
        r.headers
    );
}

/// Both routers answer unsolicited packets with a TCP reset or ICMP
/// port-unreachable (OpenWrt's REJECT): an early hole-punching packet
/// comes back as an error, and the punch must still succeed.
#[tokio::test(flavor = "multi_thread")]
async fn nat_kind_rejecting_routers_go_direct() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    let reject = HomeSpec {
        firewall: Firewall::Reject,
        ..home(Nat::EndpointIndependent, false, 1)
    };
    let lab = lab(1, vec![reject.clone(), reject], false);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(1, 0).clone());
    let t = team_at(lab, &a_host, &b_host).await;
    goes_direct(&t).await;
    answers_direct(&t, &b_host);
}

/// Routers that forget a UDP mapping after 30 s without traffic: the
/// link goes direct and, 35 s later without requests, still is and
/// answers (the node's pings keep the mapping).
#[tokio::test(flavor = "multi_thread")]
async fn nat_kind_short_udp_mapping_timeout_stays_direct() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    let short = HomeSpec {
        udp_timeout: Some(Duration::from_secs(30)),
        ..home(Nat::EndpointIndependent, false, 1)
    };
    let lab = lab(1, vec![short.clone(), short], false);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(1, 0).clone());
    let t = team_at(lab, &a_host, &b_host).await;
    goes_direct(&t).await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let started = Instant::now();
    answers_direct(&t, &b_host);
    eprintln!("after 35 s idle: answered in {:?}", started.elapsed());
    assert_eq!(
        link(&t.b, &t.a).await.map(|(c, _)| c).as_deref(),
        Some("direct")
    );
}

/// A and B on one LAN behind one NAT, mDNS off, joined through the relay.
/// The routers do not hairpin and hole punching only tries the addresses
/// the relay observed (the shared public one); a member reached only
/// through a relay dials the other's own listen addresses, so the link
/// goes direct over the LAN.
#[tokio::test(flavor = "multi_thread")]
async fn nat_kind_same_nat_goes_direct_over_the_lan() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    let lab = lab(1, vec![home(Nat::EndpointIndependent, false, 2)], false);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(0, 1).clone());
    let t = team_at(lab, &a_host, &b_host).await;
    let (_, addrs) = eventually(Duration::from_secs(10), "a direct link", || async {
        link(&t.b, &t.a).await.filter(|(c, _)| c == "direct")
    })
    .await;
    let lan = format!("/ip4/{}/", a_host.addr);
    assert!(addrs.iter().any(|a| a.starts_with(&lan)), "{addrs:?}");
    answers_direct(&t, &b_host);
}

/// B has a public address and no NAT; A is behind one: direct.
#[tokio::test(flavor = "multi_thread")]
async fn nat_kind_public_member_goes_direct() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    let lab = lab(2, vec![home(Nat::EndpointIndependent, false, 1)], false);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.public(1).clone());
    let t = team_at(lab, &a_host, &b_host).await;
    goes_direct(&t).await;
    answers_direct(&t, &b_host);
}

/// Dual stack: both members behind IPv4 NATs also have global IPv6
/// addresses that their routers do not filter: the link goes direct (the
/// hole punch runs over both families; in `cargo xtask netlab --cases`
/// about half the joins end up on IPv6).
#[tokio::test(flavor = "multi_thread")]
async fn nat_kind_dual_stack_goes_direct() {
    if skip() {
        return;
    }
    let _serial = LAB.lock().await;
    let eim = home(Nat::EndpointIndependent, false, 1);
    let lab = lab(1, vec![eim.clone(), eim], true);
    let (a_host, b_host) = (lab.home_host(0, 0).clone(), lab.home_host(1, 0).clone());
    assert!(a_host.addr6.is_some(), "a dual-stack lab");
    let t = team_at(lab, &a_host, &b_host).await;
    let addrs = goes_direct(&t).await;
    let punched = t.b.log().contains("hole punch succeeded");
    eprintln!(
        "over IPv6: {}; B's log shows a hole punch: {punched}",
        addrs.iter().any(|a| a.starts_with("/ip6/"))
    );
    answers_direct(&t, &b_host);
}
