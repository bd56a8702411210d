//! Stopping the node: withdraw the local services, let the withdrawal
//! leave, close every connection, each step within a deadline. This is the
//! one place the loop drives the swarm itself.

use std::time::Duration;

use futures::StreamExt as _;
use libp2p::PeerId;
use tracing::info;

use super::Node;

/// How long the withdrawal of the local services has to leave.
const WITHDRAW_FOR: Duration = Duration::from_millis(300);
/// How long the connections have to close.
const CLOSE_FOR: Duration = Duration::from_millis(500);

impl Node {
    pub(super) async fn shutdown(&mut self) {
        info!("shutting down: withdrawing services");
        let had_services = self.records.has_local();
        let _ = self.records.take_local();
        if had_services {
            self.announce();
        }
        // Give the withdrawal a moment to leave, then close every connection.
        let deadline = tokio::time::sleep(if had_services {
            WITHDRAW_FOR
        } else {
            Duration::ZERO
        });
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => {
                    let _ = self.on_swarm_event(event);
                }
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let close = tokio::time::sleep(CLOSE_FOR);
        tokio::pin!(close);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = &mut close => break,
                event = self.swarm.select_next_some() => {
                    let _ = self.on_swarm_event(event);
                }
            }
        }
    }
}
