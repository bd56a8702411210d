//! The pure part of the records: [`Records`] owns the namespace the node
//! is in, the local services with their health and sequence numbers, and
//! the registry of the other members' announcements, and decides what to
//! announce and what to accept. It never touches the swarm.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{PeerId, gossipsub, identity::Keypair, kad};
use tracing::{debug, warn};

use crate::{
    admission::PeerKind,
    error::RecordRejection,
    health,
    namespace::Namespace,
    record::{Announcement, FORMAT_VERSION, Health, RecordError},
    registry::{Outcome, Registry},
    snapshot::{LocalService, RemoteService},
    sync::{MAX_SYNC_BYTES, MAX_SYNC_ENTRIES, SyncEntry},
    verified::Verified,
};

/// What [`Records::accept`] did with a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Our own announcement, relayed back: nothing to do.
    Own,
    /// A record of `provider`, with what the registry made of it.
    Remote {
        provider: PeerId,
        outcome: Outcome,
        /// `name@version` of each service, for the log.
        services: Vec<String>,
    },
}

/// What [`Records::set_health`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthApplied {
    /// The report was for the service as it is provided now.
    pub applied: bool,
    /// The view changed (health or last failure).
    pub changed: bool,
    /// The health changed: announce at once.
    pub announce: bool,
}

/// The namespace and every record the node knows.
pub(crate) struct Records {
    keypair: Keypair,
    provider: PeerId,
    ttl: Duration,
    namespace: Namespace,
    local: BTreeMap<String, LocalService>,
    health_failures: BTreeMap<String, String>,
    registry: Registry,
    /// Envelopes verified before: sync answers repeat them.
    verified: Verified,
    seq: u64,
}

impl Records {
    pub(crate) fn new(keypair: Keypair, namespace: Namespace, ttl: Duration) -> Self {
        Self {
            provider: keypair.public().to_peer_id(),
            keypair,
            ttl,
            namespace,
            local: BTreeMap::new(),
            health_failures: BTreeMap::new(),
            registry: Registry::default(),
            verified: Verified::default(),
            seq: 0,
        }
    }

    /// The namespace the node is in now.
    pub(crate) fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The gossipsub topic of the namespace.
    pub(crate) fn topic(&self) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(self.namespace.topic())
    }

    /// The DHT key under which the namespace's members advertise themselves.
    pub(crate) fn rendezvous(&self) -> kad::RecordKey {
        kad::RecordKey::new(&self.namespace.rendezvous_key())
    }

    pub(crate) fn local(&self) -> &BTreeMap<String, LocalService> {
        &self.local
    }

    pub(crate) fn health_failures(&self) -> &BTreeMap<String, String> {
        &self.health_failures
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether this node provides any service.
    pub(crate) fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// Provides `service`, replacing one of the same name. Its health comes
    /// from the checks: registered again with the same backend and check it
    /// keeps what they found; otherwise it starts unknown.
    pub(crate) fn register(&mut self, mut service: LocalService) -> Result<(), RecordError> {
        let name = service.record.name.clone();
        let kept = self
            .local
            .get(&name)
            .filter(|old| {
                service.health.is_some() && old.port == service.port && old.health == service.health
            })
            .map(|old| old.record.health);
        service.record.health = kept.unwrap_or(Health::Unknown);
        let old = self.local.insert(name.clone(), service);
        if let Err(e) = self.signed(self.seq) {
            match old {
                Some(old) => self.local.insert(name, old),
                None => self.local.remove(&name),
            };
            return Err(e);
        }
        if kept.is_none() {
            self.health_failures.remove(&name);
        }
        Ok(())
    }

    /// Stops providing `name`. Returns whether it was provided.
    pub(crate) fn unregister(&mut self, name: &str) -> bool {
        self.health_failures.remove(name);
        self.local.remove(name).is_some()
    }

    /// Withdraws every local service; returns them.
    pub(crate) fn take_local(&mut self) -> BTreeMap<String, LocalService> {
        std::mem::take(&mut self.local)
    }

    /// Puts back what [`Records::take_local`] took.
    pub(crate) fn restore_local(&mut self, local: BTreeMap<String, LocalService>) {
        self.local = local;
    }

    /// Applies a checker's report: see [`crate::NodeHandle::set_health`].
    pub(crate) fn set_health(&mut self, report: health::Report) -> HealthApplied {
        let mut result = HealthApplied {
            applied: false,
            changed: false,
            announce: false,
        };
        let Some(service) = self.local.get_mut(&report.service) else {
            return result;
        };
        if service.port != report.port || service.health.as_ref() != Some(&report.check) {
            return result;
        }
        result.applied = true;
        if let Some(failure) = report.last_failure
            && self.health_failures.get(&report.service) != Some(&failure)
        {
            self.health_failures.insert(report.service.clone(), failure);
            result.changed = true;
        }
        if service.record.health != report.health {
            debug!(service = %report.service, health = %report.health, "announcing a new health");
            service.record.health = report.health;
            result.changed = true;
            result.announce = true;
        }
        result
    }

    /// Moves to another namespace: forgets every record of the old one.
    pub(crate) fn switch(&mut self, namespace: Namespace) {
        self.namespace = namespace;
        self.registry.clear();
        self.verified.clear();
    }

    /// The next sequence number: the time in microseconds, and always more
    /// than the last one, so it grows across restarts too.
    fn next_seq(&mut self, now: SystemTime) -> u64 {
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.seq = micros.max(self.seq + 1);
        self.seq
    }

    /// This node's announcement of its local services, signed, with
    /// sequence number `seq`; refused when it is over a limit of
    /// [`Announcement::verify`].
    fn signed(&self, seq: u64) -> Result<Vec<u8>, RecordError> {
        let announcement = self.announcement(seq);
        announcement.validate()?;
        announcement.sign(&self.keypair)
    }

    /// This node's announcement of its local services.
    fn announcement(&self, seq: u64) -> Announcement {
        Announcement {
            v: FORMAT_VERSION,
            namespace: self.namespace.name().to_owned(),
            provider: self.provider,
            seq,
            ttl_secs: self.ttl.as_secs().max(1) as u32,
            services: self.local.values().map(|s| s.record.clone()).collect(),
        }
    }

    /// This node's announcement, signed and sealed for the namespace.
    pub(crate) fn own_sealed(&mut self, now: SystemTime) -> Option<Vec<u8>> {
        let seq = self.next_seq(now);
        match self.signed(seq) {
            Ok(bytes) => Some(self.namespace.seal(&bytes)),
            Err(e) => {
                warn!(error = %e, "cannot sign own announcement");
                None
            }
        }
    }

    /// Opens, verifies and applies a sealed announcement received from
    /// `from`, a peer of kind `from_kind`. When it came by gossip, `author`
    /// is the authenticated publisher, which must be the provider the record
    /// describes.
    pub(crate) fn accept(
        &mut self,
        sealed: &[u8],
        from_kind: PeerKind,
        ttl: Duration,
        author: Option<PeerId>,
        now: Instant,
    ) -> Result<Accepted, RecordRejection> {
        if from_kind != PeerKind::Member {
            return Err(RecordRejection::NotMember { kind: from_kind });
        }
        let bytes = self.namespace.open(sealed)?;
        let digest = self.verified.digest(&bytes);
        let (provider, announcement) = match self.verified.provider(digest) {
            // Seen and verified before: the registry holds its sequence
            // number or a later one, so it is stale; only the author
            // check is left.
            Some(provider) => (provider, None),
            None => {
                let announcement = Announcement::verify(&bytes, self.namespace.name())?;
                (announcement.provider, Some(announcement))
            }
        };
        if let Some(author) = author
            && author != provider
        {
            return Err(RecordRejection::WrongAuthor {
                provider: Box::new(provider),
                author: Box::new(author),
            });
        }
        if provider == self.provider {
            return Ok(Accepted::Own);
        }
        let Some(announcement) = announcement else {
            return Ok(Accepted::Remote {
                provider,
                outcome: Outcome::Stale,
                services: Vec::new(),
            });
        };
        let services = announcement
            .services
            .iter()
            .map(|s| format!("{}@{}", s.name, s.version))
            .collect();
        let outcome = self.registry.insert(announcement, bytes, ttl, now)?;
        self.verified.insert(digest, provider);
        Ok(Accepted::Remote {
            provider,
            outcome,
            services,
        })
    }

    /// Drops what expired; returns the providers whose services vanished.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        self.registry.expire(now)
    }

    /// Withdraws the services of a provider whose connection closed.
    pub(crate) fn forget(&mut self, peer: &PeerId, now: Instant) -> bool {
        self.registry.forget(peer, now)
    }

    /// The live announcements known, this node's own first, for a new
    /// member: as many as fit in [`MAX_SYNC_BYTES`].
    pub(crate) fn sync_entries(&mut self, now: Instant, wall: SystemTime) -> Vec<SyncEntry> {
        let mut entries = Vec::new();
        if self.has_local()
            && let Some(sealed) = self.own_sealed(wall)
        {
            entries.push(SyncEntry {
                sealed,
                remaining_ms: self.ttl.as_millis() as u64,
            });
        }
        let mut bytes = entries.first().map_or(0, |e| e.sealed.len());
        for e in self.registry.live() {
            bytes += e.envelope.len();
            if bytes > MAX_SYNC_BYTES || entries.len() == MAX_SYNC_ENTRIES {
                break;
            }
            entries.push(SyncEntry {
                sealed: self.namespace.seal(&e.envelope),
                remaining_ms: e.expires.saturating_duration_since(now).as_millis() as u64,
            });
        }
        entries
    }

    /// The services of the other members, as the snapshot shows them.
    pub(crate) fn remote(&self) -> Vec<RemoteService> {
        self.registry
            .live()
            .flat_map(|e| {
                e.announcement.services.iter().map(|record| RemoteService {
                    peer: e.announcement.provider,
                    record: record.clone(),
                    expires: e.expires,
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(in crate::node) mod tests {
    use super::*;
    use crate::{
        health::{HealthCheck, Probe, Report},
        namespace::Secret,
        record::ServiceRecord,
    };

    pub(in crate::node) fn service(port: u16, check: Option<HealthCheck>) -> LocalService {
        LocalService {
            record: ServiceRecord::http("api", semver::Version::new(1, 0, 0)),
            port,
            health: check,
            scheme: crate::Scheme::Http,
        }
    }

    fn records(namespace: &Namespace) -> Records {
        Records::new(
            Keypair::generate_ed25519(),
            namespace.clone(),
            Duration::from_secs(10),
        )
    }

    fn report(port: u16, check: &HealthCheck, health: Health) -> Report {
        Report {
            service: "api".into(),
            port,
            check: check.clone(),
            health,
            last_failure: None,
        }
    }

    #[test]
    fn sequence_numbers_grow_even_when_the_clock_does_not() {
        let mut r = records(&Namespace::new("team", None));
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let first = r.next_seq(t);
        assert_eq!(first, 1_000_000_000);
        assert_eq!(r.next_seq(t), first + 1);
        assert_eq!(r.next_seq(UNIX_EPOCH), first + 2, "clock went back");
        assert_eq!(r.next_seq(t + Duration::from_secs(1)), first + 1_000_000);
    }

    #[test]
    fn an_announcement_holds_every_local_service() {
        let ns = Namespace::new("team", Some(&Secret::generate()));
        let mut r = records(&ns);
        r.register(service(3000, None)).unwrap();
        let mut web = service(3001, None);
        web.record.name = "web".into();
        r.register(web).unwrap();
        let a = r.announcement(1);
        assert_eq!(a.namespace, "team");
        assert_eq!(a.provider, r.provider);
        assert_eq!(a.ttl_secs, 10);
        let names: Vec<&str> = a.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        // Sealed for the namespace: it opens with its key and verifies.
        let sealed = r.own_sealed(SystemTime::now()).unwrap();
        let bytes = ns.open(&sealed).unwrap();
        let opened = Announcement::verify(&bytes, "team").unwrap();
        assert_eq!(opened.services.len(), 2);
        assert!(r.unregister("web"));
        assert!(!r.unregister("web"));
        assert_eq!(r.announcement(1).services.len(), 1);
    }

    #[test]
    fn records_are_accepted_from_members_only_and_newest_first() {
        let ns = Namespace::new("team", None);
        let mut ours = records(&ns);
        let mut theirs = records(&ns);
        theirs.register(service(3000, None)).unwrap();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let wall = SystemTime::now();
        let old = theirs.own_sealed(wall).unwrap();
        let new = theirs.own_sealed(wall).unwrap();
        let provider = theirs.provider;

        let refused = ours.accept(&new, PeerKind::Pending, ttl, None, now);
        assert!(matches!(
            refused,
            Err(RecordRejection::NotMember {
                kind: PeerKind::Pending
            })
        ));
        let accepted = ours.accept(&new, PeerKind::Member, ttl, Some(provider), now);
        assert_eq!(
            accepted.unwrap(),
            Accepted::Remote {
                provider,
                outcome: Outcome::Changed,
                services: vec!["api@1.0.0".into()],
            }
        );
        assert_eq!(ours.remote().len(), 1);
        let replay = ours.accept(&old, PeerKind::Member, ttl, None, now).unwrap();
        assert!(matches!(
            replay,
            Accepted::Remote {
                outcome: Outcome::Stale,
                ..
            }
        ));
        // Gossip of the record by someone else than its provider.
        let author = PeerId::random();
        let relayed = ours.accept(&new, PeerKind::Member, ttl, Some(author), now);
        assert!(matches!(relayed, Err(RecordRejection::WrongAuthor { .. })));
        // Our own record coming back.
        ours.register(service(3000, None)).unwrap();
        let own = ours.own_sealed(wall).unwrap();
        let back = ours.accept(&own, PeerKind::Member, ttl, None, now).unwrap();
        assert_eq!(back, Accepted::Own);
    }

    #[test]
    fn records_of_another_secret_or_namespace_are_refused() {
        let mut ours = records(&Namespace::new("team", Some(&Secret::generate())));
        let ttl = Duration::from_secs(10);
        let now = Instant::now();
        let mut wrong_secret = records(&Namespace::new("team", Some(&Secret::generate())));
        wrong_secret.register(service(3000, None)).unwrap();
        let sealed = wrong_secret.own_sealed(SystemTime::now()).unwrap();
        let refused = ours.accept(&sealed, PeerKind::Member, ttl, None, now);
        assert!(matches!(refused, Err(RecordRejection::Sealed(_))));
        assert!(matches!(
            ours.accept(b"junk", PeerKind::Member, ttl, None, now),
            Err(RecordRejection::Sealed(_))
        ));
        // Sealed with our key, but announced for another namespace.
        let mut other = records(&Namespace::new("other", None));
        other.register(service(3000, None)).unwrap();
        let signed = other.announcement(1).sign(&other.keypair);
        let sealed = ours.namespace().seal(&signed.unwrap());
        let refused = ours.accept(&sealed, PeerKind::Member, ttl, None, now);
        assert!(matches!(refused, Err(RecordRejection::Invalid(_))));
    }

    #[test]
    fn the_sync_table_holds_remote_and_own_records() {
        let ns = Namespace::new("team", None);
        let (mut a, mut b) = (records(&ns), records(&ns));
        let now = Instant::now();
        let wall = SystemTime::now();
        assert!(a.sync_entries(now, wall).is_empty());
        b.register(service(3000, None)).unwrap();
        let sealed = b.own_sealed(wall).unwrap();
        let ttl = Duration::from_secs(5);
        a.accept(&sealed, PeerKind::Member, ttl, None, now).unwrap();
        a.register(service(4000, None)).unwrap();
        let entries = a.sync_entries(now, wall);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].remaining_ms, 10_000, "its own first");
        assert_eq!(entries[1].remaining_ms, 5_000);
        // A new member applies them all.
        let mut c = records(&ns);
        for e in &entries {
            let ttl = Duration::from_millis(e.remaining_ms);
            c.accept(&e.sealed, PeerKind::Member, ttl, None, now)
                .unwrap();
        }
        assert_eq!(c.remote().len(), 2);
        c.switch(Namespace::new("other", None));
        assert!(c.remote().is_empty());
    }

    #[test]
    fn health_reports_apply_only_to_the_service_they_checked() {
        let mut r = records(&Namespace::new("team", None));
        let check = HealthCheck::new(Probe::Path("/healthz".into()));
        let health = |r: &Records| r.local()["api"].record.health;
        r.register(service(3000, Some(check.clone()))).unwrap();
        assert_eq!(health(&r), Health::Unknown);
        let mut sick = report(3000, &check, Health::Unhealthy);
        sick.last_failure = Some("GET /healthz: 500".into());
        let applied = r.set_health(sick.clone());
        assert_eq!(
            applied,
            HealthApplied {
                applied: true,
                changed: true,
                announce: true
            }
        );
        assert_eq!(r.health_failures()["api"], "GET /healthz: 500");
        let again = r.set_health(sick);
        assert!(again.applied && !again.changed && !again.announce);
        // Registered again with the same port and check: health kept.
        r.register(service(3000, Some(check.clone()))).unwrap();
        assert_eq!(health(&r), Health::Unhealthy);
        // Another port: the old one's reports are refused.
        r.register(service(3001, Some(check.clone()))).unwrap();
        assert_eq!(health(&r), Health::Unknown);
        assert!(r.health_failures().is_empty());
        assert!(!r.set_health(report(3000, &check, Health::Healthy)).applied);
    }

    #[test]
    fn a_service_past_the_announcement_limit_is_refused_and_nothing_changes() {
        let ns = Namespace::new("team", None);
        let mut r = records(&ns);
        for i in 0..crate::record::MAX_SERVICES {
            let mut s = service(3000, None);
            s.record.name = format!("s{i}");
            r.register(s).unwrap();
        }
        let sealed = r.own_sealed(SystemTime::now()).unwrap();
        let opened = ns.open(&sealed).unwrap();
        let whole = Announcement::verify(&opened, "team").unwrap();
        assert_eq!(whole.services.len(), crate::record::MAX_SERVICES);
        let mut over = service(3000, None);
        over.record.name = "one-more".into();
        assert!(matches!(r.register(over), Err(RecordError::Invalid(_))));
        assert_eq!(r.local.len(), crate::record::MAX_SERVICES);
        // Replacing one that is there still works.
        let mut again = service(4000, None);
        again.record.name = "s0".into();
        r.register(again).unwrap();
    }
}
