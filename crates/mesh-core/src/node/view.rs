//! The snapshot the rest of the daemon reads: built from the state's owners
//! whenever a handler reports a change; and the node's own addresses and
//! reachability, which only the view shows.

use std::sync::Arc;

use libp2p::{autonat, swarm::SwarmEvent};
use tracing::{debug, info};

use super::{Changed, Node};
use crate::{
    addr::{is_public_candidate, is_relayed},
    behaviour::BehaviourEvent,
    snapshot::{Reachability, Role, Snapshot},
};

impl Node {
    /// Listen and external address events.
    pub(super) fn on_address_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Changed {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                if !is_relayed(&address) {
                    // A relay runs where it is reachable: its own addresses
                    // are the ones to hand out (loopback ones only when it
                    // was told to listen on loopback, as in tests).
                    if self.role == Role::Relay
                        && (is_public_candidate(&address) || self.loopback_only)
                    {
                        self.swarm.add_external_address(address.clone());
                    }
                    self.addresses.listen.push(address);
                }
                Changed::YES
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.addresses.listen.retain(|a| a != &address);
                Changed::YES
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                for relay in self.peers.listener_closed(listener_id) {
                    info!(%relay, ?reason, "relay reservation closed");
                }
                Changed::YES
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                Changed::YES
            }
            SwarmEvent::ExternalAddrExpired { .. } => Changed::YES,
            SwarmEvent::NewExternalAddrCandidate { address } => {
                let new = self.addresses.observed(address.clone());
                if new {
                    debug!(%address, "peers see us at");
                }
                Changed::from(new)
            }
            _ => Changed::NO,
        }
    }

    pub(super) fn on_autonat(&mut self, event: autonat::Event) -> Changed {
        let autonat::Event::StatusChanged { old, new } = event else {
            return Changed::NO;
        };
        info!(?old, ?new, "reachability changed");
        self.addresses.reachability = match new {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        };
        Changed::YES
    }

    pub(super) fn publish_snapshot(&mut self) {
        let member = self.is_member();
        let namespace = self.records.namespace();
        let snapshot = Snapshot {
            local_peer: self.local_peer(),
            role: self.role,
            namespace: if member {
                namespace.name().to_owned()
            } else {
                String::new()
            },
            has_secret: member && namespace.has_secret(),
            listen_addrs: self.addresses.listen.clone(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            observed_addrs: self.addresses.observed.clone(),
            reachability: self.addresses.reachability,
            relays: self.peers.relay_links(),
            bootstrap: self.discovery.bootstrap().to_vec(),
            admission_failures: self.failures.iter().cloned().collect(),
            local: self.records.local().clone(),
            health_failures: self.records.health_failures().clone(),
            remote: self.records.remote(),
            peers: self.peers.links(),
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}
