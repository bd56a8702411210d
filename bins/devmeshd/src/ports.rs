//! Stable listen ports: a node on the default listen addresses (TCP and
//! QUIC on random ports) picks its ports once, keeps them in
//! `<home>/listen-ports.json`, and listens on them again after a restart,
//! so the multiaddr a teammate was given stays good. A kept port that is
//! taken by then is replaced by a fresh one, with a warning.

use std::{
    net::{Ipv4Addr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
};

use mesh_core::{Multiaddr, NodeHandle, multiaddr::Protocol};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

const PORTS_FILE: &str = "listen-ports.json";

/// The ports a node picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    #[serde(default)]
    pub tcp: Option<u16>,
    #[serde(default)]
    pub udp: Option<u16>,
}

fn path(home: &Path) -> PathBuf {
    home.join(PORTS_FILE)
}

fn load(home: &Path) -> Ports {
    std::fs::read_to_string(path(home))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The default listen addresses `listen` with port 0 replaced by the port
/// kept from an earlier start, where that port is free.
pub fn reuse(home: &Path, listen: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let kept = load(home);
    listen
        .into_iter()
        .map(|addr| with_kept(addr, kept, free_tcp, free_udp))
        .collect()
}

/// `addr` with its port 0 replaced by the kept one of its transport, when
/// `tcp_free`/`udp_free` says it can be bound.
fn with_kept(
    addr: Multiaddr,
    kept: Ports,
    tcp_free: impl Fn(u16) -> bool,
    udp_free: impl Fn(u16) -> bool,
) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(0) => match kept.tcp {
                Some(port) if tcp_free(port) => Protocol::Tcp(port),
                Some(port) => {
                    warn!(port, "the kept TCP listen port is taken; listening on a new one (teammates need the new address)");
                    p
                }
                None => p,
            },
            Protocol::Udp(0) => match kept.udp {
                Some(port) if udp_free(port) => Protocol::Udp(port),
                Some(port) => {
                    warn!(port, "the kept QUIC listen port is taken; listening on a new one (teammates need the new address)");
                    p
                }
                None => p,
            },
            other => other,
        })
        .collect()
}

fn free_tcp(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

fn free_udp(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The TCP and UDP ports of `addrs` (the first of each).
fn ports_of(addrs: &[Multiaddr]) -> Ports {
    let mut ports = Ports::default();
    for addr in addrs {
        for p in addr.iter() {
            match p {
                Protocol::Tcp(port) if ports.tcp.is_none() => ports.tcp = Some(port),
                Protocol::Udp(port) if ports.udp.is_none() => ports.udp = Some(port),
                _ => {}
            }
        }
    }
    ports
}

/// Once the node listens, keeps the ports it got for the next start.
pub async fn remember(home: PathBuf, node: NodeHandle) {
    let mut watch = node.watch();
    let addrs = loop {
        let addrs = watch.borrow_and_update().listen_addrs.clone();
        if !addrs.is_empty() {
            break addrs;
        }
        if watch.changed().await.is_err() {
            return;
        }
    };
    let ports = ports_of(&addrs);
    if ports == load(&home) {
        return;
    }
    let text = match serde_json::to_string(&ports) {
        Ok(t) => t,
        Err(_) => return,
    };
    match std::fs::write(path(&home), text) {
        Ok(()) => {
            info!(tcp = ?ports.tcp, udp = ?ports.udp, "keeping these listen ports for the next start")
        }
        Err(e) => warn!(error = %e, "cannot keep the listen ports; the next start picks new ones"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kept_ports_replace_port_zero_when_free() {
        let kept = Ports {
            tcp: Some(41234),
            udp: Some(41235),
        };
        let tcp: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap();
        let yes = |_| true;
        let no = |_| false;
        assert_eq!(
            with_kept(tcp.clone(), kept, yes, yes).to_string(),
            "/ip4/0.0.0.0/tcp/41234"
        );
        assert_eq!(
            with_kept(quic.clone(), kept, yes, yes).to_string(),
            "/ip4/0.0.0.0/udp/41235/quic-v1"
        );
        assert_eq!(with_kept(tcp.clone(), kept, no, no), tcp);
        assert_eq!(with_kept(tcp.clone(), Ports::default(), yes, yes), tcp);
        let fixed: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        assert_eq!(with_kept(fixed.clone(), kept, yes, yes), fixed);
        assert_eq!(
            ports_of(&[
                "/ip4/127.0.0.1/tcp/5".parse().unwrap(),
                "/ip4/127.0.0.1/udp/7/quic-v1".parse().unwrap(),
                "/ip4/198.18.0.1/tcp/5".parse().unwrap(),
            ]),
            Ports {
                tcp: Some(5),
                udp: Some(7)
            }
        );
    }
}
