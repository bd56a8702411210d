//! The metrics read from the node at scrape time: connected peers by kind,
//! services by where they run and their health, and mesh-core's hole-punch
//! and gossip counters.

use std::{collections::BTreeMap, sync::Arc};

use crate::{reqlog::RequestLog, trace::otlp::Exporter};
use mesh_core::{NodeHandle, Snapshot, counters::CountersSnapshot};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Reads the node's view and counters on each scrape.
pub(super) struct NodeCollector {
    node: NodeHandle,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector")
            .field("peer", &self.node.peer_id())
            .finish()
    }
}

impl NodeCollector {
    pub(super) fn new(node: NodeHandle) -> Self {
        Self { node }
    }
}

/// One gauge or counter family as label sets and values, before encoding.
type Series<V = i64> = BTreeMap<Vec<(&'static str, String)>, V>;

/// Connected peers by kind.
pub(super) fn peers_by_kind(snapshot: &Snapshot) -> Series {
    let mut out = Series::new();
    for link in snapshot.peers.values() {
        *out.entry(vec![("kind", link.kind.to_string())])
            .or_default() += 1;
    }
    out
}

/// Providers known to this node, by service, where they run (`local` or
/// `remote`) and announced health.
pub(super) fn services(snapshot: &Snapshot) -> Series {
    let mut out = Series::new();
    let local = snapshot.local.values().map(|l| (&l.record, "local"));
    let remote = snapshot.remote.iter().map(|r| (&r.record, "remote"));
    for (record, state) in local.chain(remote) {
        let labels = vec![
            ("service", record.name.clone()),
            ("state", state.to_owned()),
            ("health", record.health.to_string()),
        ];
        *out.entry(labels).or_default() += 1;
    }
    out
}

/// Counter series of one label.
fn counter_series(pairs: &[(&'static str, &'static str, u64)]) -> Series<u64> {
    pairs
        .iter()
        .map(|(label, value, n)| (vec![(*label, (*value).to_owned())], *n))
        .collect()
}

/// Encodes one family of `series` as `metric_type`, each value made a
/// metric by `metric`.
fn encode_series<V: Copy, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, metric_type): (&str, &str, MetricType),
    series: &Series<V>,
    metric: impl Fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        metric(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.node.snapshot();
        let gauge = |name, help| (name, help, MetricType::Gauge);
        let counter = |name, help| (name, help, MetricType::Counter);
        encode_series(
            &mut encoder,
            gauge("peers", "Connected peers by kind."),
            &peers_by_kind(&snapshot),
            ConstGauge::new,
        )?;
        encode_series(
            &mut encoder,
            gauge(
                "services",
                "Providers of each service known to this node, by where they run (local or remote) and health.",
            ),
            &services(&snapshot),
            ConstGauge::new,
        )?;
        let c: CountersSnapshot = self.node.counters().snapshot();
        encode_series(
            &mut encoder,
            counter("hole_punches", "DCUtR hole punches by outcome."),
            &counter_series(&[
                ("outcome", "success", c.hole_punch_succeeded),
                ("outcome", "failure", c.hole_punch_failed),
            ]),
            ConstCounter::new,
        )?;
        encode_series(
            &mut encoder,
            counter(
                "record_gossip",
                "Service announcements by event: published by this node, received by gossip (accepted, rejected) or in sync answers (synced, sync_rejected).",
            ),
            &counter_series(&[
                ("event", "published", c.gossip_published),
                ("event", "accepted", c.gossip_accepted),
                ("event", "rejected", c.gossip_rejected),
                ("event", "synced", c.sync_entries_accepted),
                ("event", "sync_rejected", c.sync_entries_rejected),
            ]),
            ConstCounter::new,
        )?;
        Ok(())
    }
}

/// Reads what the request log and the trace export dropped.
#[derive(Debug)]
pub(super) struct DropCollector {
    pub log: Option<Arc<RequestLog>>,
    pub exporter: Option<Arc<Exporter>>,
}

impl Collector for DropCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut series = Series::<u64>::new();
        if let Some(log) = &self.log {
            series.insert(vec![("what", "request_log".to_owned())], log.dropped());
        }
        if let Some(exporter) = &self.exporter {
            series.insert(vec![("what", "spans".to_owned())], exporter.dropped());
        }
        if series.is_empty() {
            return Ok(());
        }
        encode_series(
            &mut encoder,
            (
                "observe_dropped",
                "Request log lines and spans dropped because their writer fell behind.",
                MetricType::Counter,
            ),
            &series,
            ConstCounter::new,
        )
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::{PeerId, PeerLink, Role, admission::PeerKind};

    use super::*;

    #[test]
    fn peers_are_counted_by_kind() {
        let mut s = Snapshot::empty(PeerId::random(), Role::Member);
        for kind in [PeerKind::Member, PeerKind::Member, PeerKind::Relay] {
            let link = PeerLink {
                addrs: vec![],
                direct: true,
                rtt: None,
                agent: None,
                kind,
            };
            s.peers.insert(PeerId::random(), link);
        }
        let by_kind = peers_by_kind(&s);
        assert_eq!(by_kind[&vec![("kind", "member".to_owned())]], 2);
        assert_eq!(by_kind[&vec![("kind", "relay".to_owned())]], 1);
        assert!(services(&s).is_empty());
    }
}
