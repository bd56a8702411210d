//! Service records on the wire: announcing this node's services on
//! gossipsub, applying the records of other members (by gossip or sync) and
//! answering sync requests. What to announce and accept is decided by
//! [`Records`](super::state::Records), the pure part.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use libp2p::{PeerId, gossipsub, request_response::ResponseChannel};
use tracing::{debug, info, warn};

use super::{Changed, Node, handle::Event, state::Accepted};
use crate::{
    admission::PeerKind,
    error::RecordRejection,
    health,
    record::{MAX_TTL, RecordError},
    registry::Outcome,
    snapshot::LocalService,
    sync::{MAX_SYNC_ENTRIES, SyncRequest, SyncResponse},
};

impl Node {
    /// Publishes this node's announcement on the namespace's topic.
    pub(super) fn announce(&mut self) {
        if !self.is_member() {
            return;
        }
        let Some(bytes) = self.records.own_sealed(SystemTime::now()) else {
            return;
        };
        let topic = self.records.topic();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => self.counters.published(),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!("no subscribed peers yet; they get the records by sync on connect");
            }
            Err(e) => debug!(error = %e, "publishing announcement failed"),
        }
    }

    /// Announces when there is something to announce.
    pub(super) fn announce_if_providing(&mut self) {
        if self.records.has_local() {
            self.announce();
        }
    }

    pub(super) fn register(&mut self, service: LocalService) -> (Result<(), RecordError>, Changed) {
        let (name, version, port) = (
            service.record.name.clone(),
            service.record.version.clone(),
            service.port,
        );
        if let Err(e) = self.records.register(service) {
            return (Err(e), Changed::NO);
        }
        info!(service = %name, %version, port, "providing service");
        self.announce();
        (Ok(()), Changed::YES)
    }

    pub(super) fn unregister(&mut self, name: &str) -> (bool, Changed) {
        let existed = self.records.unregister(name);
        if existed {
            info!(service = %name, "withdrawing service");
            self.announce();
        }
        (existed, Changed::from(existed))
    }

    pub(super) fn set_health(&mut self, report: health::Report) -> (bool, Changed) {
        let result = self.records.set_health(report);
        if result.announce {
            self.announce();
        }
        (result.applied, Changed::from(result.changed))
    }

    /// Applies a sealed announcement from `from`; see [`Records::accept`].
    fn accept_announcement(
        &mut self,
        sealed: &[u8],
        from: PeerId,
        ttl: Duration,
        author: Option<PeerId>,
    ) -> Result<Changed, RecordRejection> {
        let kind = self.peers.kind(&from);
        let accepted = self
            .records
            .accept(sealed, kind, ttl, author, Instant::now())?;
        let Accepted::Remote {
            provider,
            outcome,
            services,
        } = accepted
        else {
            return Ok(Changed::NO);
        };
        match outcome {
            Outcome::Changed => {
                info!(%provider, via = %from, services = ?services, "service records updated");
                let _ = self.events.send(Event::ServicesChanged);
                // Learned through another member: in a full mesh, find the
                // provider's addresses in the DHT (a bounded mesh looks
                // addresses up when a tunnel needs them). Who is dialled is
                // `top_up_links`'s choice, once the whole answer is in.
                if !services.is_empty()
                    && !self.swarm.is_connected(&provider)
                    && self.member_dials_left().is_none()
                {
                    debug!(%provider, "looking up a provider we are not connected to");
                    self.swarm.behaviour_mut().kad.get_closest_peers(provider);
                }
                Ok(Changed::YES)
            }
            Outcome::Refreshed => Ok(Changed::LATER),
            Outcome::Stale => {
                debug!(%provider, "ignoring stale or replayed announcement");
                Ok(Changed::NO)
            }
        }
    }

    fn reject_record(&self, from: PeerId, reason: RecordRejection) {
        match &reason {
            // Gossip that arrives while the handshake is still running: a
            // normal race of every join (the sync after admission brings
            // the records), nothing a person need look at.
            RecordRejection::NotMember {
                kind: crate::admission::PeerKind::Pending,
            } => debug!(peer = %from, %reason, "dropped a record that came before admission"),
            _ => warn!(peer = %from, %reason, "dropped malformed or invalid record"),
        }
        let reason = Arc::new(reason);
        let _ = self.events.send(Event::RecordRejected { from, reason });
    }

    /// A gossip message on the namespace's topic.
    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) -> Changed {
        let verdict = match message.source {
            None => Err(RecordRejection::Unsigned),
            Some(author) => self.accept_announcement(&message.data, source, MAX_TTL, Some(author)),
        };
        self.counters.gossip(verdict.is_ok());
        let (acceptance, changed) = match verdict {
            Ok(changed) => (gossipsub::MessageAcceptance::Accept, changed),
            Err(reason) => {
                self.reject_record(source, reason);
                (gossipsub::MessageAcceptance::Reject, Changed::NO)
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        if changed == Changed::YES {
            self.top_up_links();
        }
        changed
    }

    /// Asks a newly admitted member for its table.
    pub(super) fn request_sync(&mut self, peer: PeerId) {
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest::CURRENT);
    }

    /// Answers a sync request: the whole table to members, nothing to others.
    pub(super) fn answer_sync(&mut self, peer: PeerId, channel: ResponseChannel<SyncResponse>) {
        let entries = if self.peers.kind(&peer) == PeerKind::Member {
            self.records.sync_entries(Instant::now(), SystemTime::now())
        } else {
            debug!(%peer, "sync request from a peer that is not an admitted member");
            Vec::new()
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, SyncResponse { entries });
    }

    /// Applies a member's sync answer.
    pub(super) fn on_sync_response(&mut self, peer: PeerId, response: SyncResponse) -> Changed {
        if response.entries.len() > MAX_SYNC_ENTRIES {
            warn!(%peer, entries = response.entries.len(), limit = MAX_SYNC_ENTRIES, "dropped a sync answer with too many entries");
            self.counters.sync_entry(false);
            return Changed::NO;
        }
        let mut changed = Changed::NO;
        for entry in response.entries {
            let ttl = Duration::from_millis(entry.remaining_ms);
            let accepted = self.accept_announcement(&entry.sealed, peer, ttl, None);
            self.counters.sync_entry(accepted.is_ok());
            match accepted {
                Ok(c) => changed |= c,
                Err(reason) => self.reject_record(peer, reason),
            }
        }
        if changed == Changed::YES {
            self.top_up_links();
        }
        changed
    }
}
