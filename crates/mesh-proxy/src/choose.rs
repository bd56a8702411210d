//! Which providers a request goes to, in which order.
//!
//! The rules, in order (docs/routing.md explains them to users):
//! 1. A pinned service goes only to its pinned provider.
//! 2. Unhealthy providers are never chosen.
//! 3. When some providers' versions satisfy every requirement, only they are
//!    tried; when none does, strict mode refuses the request and warn mode
//!    lets the others serve it, best first.
//! 4. Providers ejected after a failure come last.
//! 5. In sticky mode, the client's provider (from its cookie) comes first.
//! 6. Then local before remote, healthy before unknown health, connected
//!    before not connected, direct before relayed, lower RTT first (by band:
//!    under 5 ms, 5-10 ms, 10-20 ms, ...).
//! 7. Providers equal on all of the above take turns going first.

use std::time::{Duration, Instant};

use mesh_core::{
    PeerId, Provider, Scheme, Snapshot,
    record::{Health, ServiceRecord},
};

use crate::policy::{Routing, ServiceRoute, VersionMode};

/// Round-trip times below this count as equal; above it, times within the
/// same doubling band (5-10 ms, 10-20 ms, 20-40 ms, ...) do.
pub const RTT_STEP: Duration = Duration::from_millis(5);

/// The band of a round-trip time: 0 below [`RTT_STEP`], then one more for
/// each doubling.
fn rtt_band(rtt: Duration) -> u32 {
    let steps = rtt.as_micros() / RTT_STEP.as_micros();
    if steps == 0 { 0 } else { steps.ilog2() + 1 }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A backend on this machine: its port, how to connect to it, and
    /// whether it speaks HTTP/2.
    Local { port: u16, scheme: Scheme, h2: bool },
    /// A provider node; whether the connection to it is direct, and whether
    /// its backend speaks HTTP/2.
    Remote {
        peer: PeerId,
        direct: bool,
        h2: bool,
    },
}

impl Target {
    /// The route as the `X-DevMesh-Route` header names it.
    pub fn route(&self) -> &'static str {
        match self {
            Target::Local { .. } => "local",
            Target::Remote { direct: true, .. } => "remote-direct",
            Target::Remote { direct: false, .. } => "remote-relayed",
        }
    }
}

/// A provider to try.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub target: Target,
    pub provider: PeerId,
    pub version: &'a semver::Version,
    /// Whether the version satisfies every requirement.
    pub satisfies: bool,
}

/// A version requirement and where it came from, for messages.
#[derive(Debug, Clone)]
pub struct Requirement {
    pub req: semver::VersionReq,
    /// `X-DevMesh-Require`, `devmesh route`, `web` (a local service's `requires`).
    pub source: String,
}

/// Everything about a request that the choice depends on.
#[derive(Debug, Default)]
pub struct Ask<'a> {
    pub requirements: &'a [Requirement],
    pub mode: VersionMode,
    pub pin: Option<PeerId>,
    /// The provider the client's sticky cookie names.
    pub sticky: Option<PeerId>,
}

/// A provider as listed in refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub provider: PeerId,
    pub version: semver::Version,
    pub health: Health,
    pub local: bool,
}

/// Why a request has nowhere to go.
#[derive(Debug)]
pub enum Refusal {
    /// Nobody provides the service.
    NoProvider,
    /// The service is pinned to a peer that does not provide it.
    PinnedAway { pin: PeerId, providers: Vec<Listed> },
    /// Every provider is unhealthy.
    AllUnhealthy { providers: Vec<Listed> },
    /// Strict mode and no provider satisfies the requirements.
    VersionConflict { providers: Vec<Listed> },
}

impl Refusal {
    /// One line for people.
    pub fn describe(&self, service: &str) -> String {
        match self {
            Refusal::NoProvider => format!("no provider of {service}"),
            Refusal::PinnedAway { pin, .. } => {
                format!("pinned to {pin}, which does not provide {service}")
            }
            Refusal::AllUnhealthy { providers } => {
                format!(
                    "all {} provider(s) of {service} are unhealthy",
                    providers.len()
                )
            }
            Refusal::VersionConflict { .. } => {
                format!("no provider of {service} satisfies the requirements (strict mode)")
            }
        }
    }
}

/// The providers to try, best first.
#[derive(Debug)]
pub struct Choice<'a> {
    pub candidates: Vec<Candidate<'a>>,
    /// No provider satisfies the requirements (warn mode): the candidates
    /// are the best of the others.
    pub unmet: bool,
}

/// The requirements this node applies to requests for `service` that bring
/// none of their own: the one set with `devmesh route`, and the `requires`
/// of the services this node provides.
pub fn node_requirements(
    snapshot: &Snapshot,
    service: &str,
    settings: Option<&ServiceRoute>,
) -> Vec<Requirement> {
    let mut requirements = Vec::new();
    if let Some(req) = settings.and_then(|s| s.require.as_ref()) {
        requirements.push(Requirement {
            req: req.clone(),
            source: "devmesh route".into(),
        });
    }
    for local in snapshot.local.values() {
        if let Some(text) = local.record.requires.get(service)
            && let Ok(req) = semver::VersionReq::parse(text)
        {
            requirements.push(Requirement {
                req,
                source: format!("requires of {}", local.record.name),
            });
        }
    }
    requirements
}

/// The requirements as one line: `^2.1 (X-DevMesh-Require) and ~2.3 (devmesh route)`.
pub fn requirements_text(requirements: &[Requirement]) -> String {
    requirements
        .iter()
        .map(|r| format!("{} ({})", r.req, r.source))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether `version` satisfies all `requirements`.
pub fn satisfies(version: &semver::Version, requirements: &[Requirement]) -> bool {
    requirements.iter().all(|r| r.req.matches(version))
}

fn listed(snapshot: &Snapshot, p: &Provider<'_>) -> Listed {
    let (provider, local) = match p {
        Provider::Local(_) => (snapshot.local_peer, true),
        Provider::Remote(r) => (r.peer, false),
    };
    Listed {
        provider,
        version: p.record().version.clone(),
        health: p.record().health,
        local,
    }
}

/// Orders the providers of `service` for a request.
pub fn choose<'a>(
    snapshot: &'a Snapshot,
    service: &str,
    ask: &Ask<'_>,
    routing: &Routing,
    now: Instant,
) -> Result<Choice<'a>, Refusal> {
    let mut providers = snapshot.providers(service);
    if providers.is_empty() {
        return Err(Refusal::NoProvider);
    }
    let list = |ps: &[Provider<'_>]| ps.iter().map(|p| listed(snapshot, p)).collect();
    if let Some(pin) = ask.pin {
        let all = providers.clone();
        providers.retain(|p| match p {
            Provider::Local(_) => snapshot.local_peer == pin,
            Provider::Remote(r) => r.peer == pin,
        });
        if providers.is_empty() {
            return Err(Refusal::PinnedAway {
                pin,
                providers: list(&all),
            });
        }
    }
    let all = providers.clone();
    providers.retain(|p| p.record().health != Health::Unhealthy);
    if providers.is_empty() {
        return Err(Refusal::AllUnhealthy {
            providers: list(&all),
        });
    }
    let mut ranked: Vec<(Rank, Candidate<'a>)> = providers
        .iter()
        .map(|&p| rank(snapshot, p, service, ask, routing, now))
        .collect();
    // `providers` of one snapshot come in a stable order; sorting is stable.
    ranked.sort_by_key(|(rank, _)| *rank);
    let unmet = ranked.first().is_some_and(|(rank, _)| rank.unsatisfied);
    if unmet && ask.mode == VersionMode::Strict {
        return Err(Refusal::VersionConflict {
            providers: list(&all),
        });
    }
    if !unmet {
        // A provider that does not satisfy the requirements is never
        // chosen while one that does exists, not even to fail over.
        ranked.retain(|(rank, _)| !rank.unsatisfied);
    }
    let equals = ranked
        .iter()
        .take_while(|(rank, _)| *rank == ranked[0].0)
        .count();
    if equals > 1 {
        let turn = routing.next_turn() % equals;
        ranked[..equals].rotate_left(turn);
    }
    Ok(Choice {
        candidates: ranked.into_iter().map(|(_, c)| c).collect(),
        unmet,
    })
}

/// The rank of provider `p` for a request, and the candidate it makes.
fn rank<'a>(
    snapshot: &'a Snapshot,
    p: Provider<'a>,
    service: &str,
    ask: &Ask<'_>,
    routing: &Routing,
    now: Instant,
) -> (Rank, Candidate<'a>) {
    let record: &'a ServiceRecord = match p {
        Provider::Local(l) => &l.record,
        Provider::Remote(r) => &r.record,
    };
    let sat = satisfies(&record.version, ask.requirements);
    let (target, provider, link) = match p {
        Provider::Local(l) => (
            Target::Local {
                port: l.port,
                scheme: l.scheme,
                h2: record.h2,
            },
            snapshot.local_peer,
            None,
        ),
        Provider::Remote(r) => {
            let link = snapshot.peers.get(&r.peer);
            let target = Target::Remote {
                peer: r.peer,
                direct: link.is_none_or(|l| l.direct),
                h2: record.h2,
            };
            (target, r.peer, Some(link))
        }
    };
    let rank = Rank {
        unsatisfied: !sat,
        ejected: routing.is_ejected(service, &provider, now),
        not_sticky: ask.sticky.is_some_and(|s| s != provider),
        remote: link.is_some(),
        health: match record.health {
            Health::Healthy => 0,
            _ => 1,
        },
        not_connected: matches!(link, Some(None)),
        relayed: matches!(link, Some(Some(l)) if !l.direct),
        rtt_steps: match link {
            None => 0,
            Some(l) => l.and_then(|l| l.rtt).map_or(u32::MAX, rtt_band),
        },
    };
    (
        rank,
        Candidate {
            target,
            provider,
            version: &record.version,
            satisfies: sat,
        },
    )
}

/// What orders candidates: smaller is better, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    unsatisfied: bool,
    ejected: bool,
    not_sticky: bool,
    remote: bool,
    health: u8,
    not_connected: bool,
    relayed: bool,
    rtt_steps: u32,
}

#[cfg(test)]
pub(crate) mod tests_support {

    use mesh_core::{PeerId, Role, Snapshot};

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            namespace: "team".into(),
            ..Snapshot::empty(PeerId::random(), Role::Member)
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::{LocalService, PeerLink, RemoteService, admission::PeerKind};

    use super::{tests_support::snapshot, *};
    use crate::policy::Defaults;

    fn record(version: &str, health: Health) -> ServiceRecord {
        let mut r = ServiceRecord::http("api", version.parse().unwrap());
        r.health = health;
        r
    }

    fn remote(
        s: &mut Snapshot,
        version: &str,
        health: Health,
        link: Option<(bool, u64)>,
    ) -> PeerId {
        let peer = PeerId::random();
        s.remote.push(RemoteService {
            peer,
            record: record(version, health),
            expires: Instant::now() + Duration::from_secs(10),
        });
        if let Some((direct, rtt_ms)) = link {
            s.peers.insert(
                peer,
                PeerLink {
                    addrs: vec![],
                    direct,
                    rtt: Some(Duration::from_millis(rtt_ms)),
                    agent: None,
                    kind: PeerKind::Member,
                },
            );
        }
        peer
    }

    fn req(r: &str) -> Vec<Requirement> {
        vec![Requirement {
            req: r.parse().unwrap(),
            source: "test".into(),
        }]
    }

    fn order(s: &Snapshot, ask: &Ask<'_>, routing: &Routing) -> Vec<PeerId> {
        choose(s, "api", ask, routing, Instant::now())
            .unwrap()
            .candidates
            .iter()
            .map(|c| c.provider)
            .collect()
    }

    #[test]
    fn local_then_direct_then_rtt_then_relayed_then_unconnected() {
        let mut s = snapshot();
        let far = remote(&mut s, "1.0.0", Health::Unknown, Some((true, 40)));
        let relayed = remote(&mut s, "1.0.0", Health::Unknown, Some((false, 1)));
        let gone = remote(&mut s, "1.0.0", Health::Unknown, None);
        let near = remote(&mut s, "1.0.0", Health::Unknown, Some((true, 2)));
        s.local.insert(
            "api".into(),
            LocalService {
                record: record("1.0.0", Health::Unknown),
                port: 3000,
                health: None,
                scheme: mesh_core::Scheme::Http,
            },
        );
        let r = Routing::new(Defaults::default());
        assert_eq!(
            order(&s, &Ask::default(), &r),
            vec![s.local_peer, near, far, relayed, gone]
        );
    }

    #[test]
    fn healthy_before_unknown_and_unhealthy_never() {
        let mut s = snapshot();
        let unknown = remote(&mut s, "1.0.0", Health::Unknown, Some((true, 1)));
        let sick = remote(&mut s, "1.0.0", Health::Unhealthy, Some((true, 1)));
        let well = remote(&mut s, "1.0.0", Health::Healthy, Some((true, 30)));
        let r = Routing::new(Defaults::default());
        let got = order(&s, &Ask::default(), &r);
        assert_eq!(got, vec![well, unknown]);
        assert!(!got.contains(&sick));
        s.remote.retain(|x| x.peer == sick);
        assert!(matches!(
            choose(&s, "api", &Ask::default(), &r, Instant::now()),
            Err(Refusal::AllUnhealthy { providers }) if providers.len() == 1
        ));
    }

    #[test]
    fn requirement_wins_over_locality_and_strict_refuses() {
        let mut s = snapshot();
        s.local.insert(
            "api".into(),
            LocalService {
                record: record("1.9.0", Health::Unknown),
                port: 3000,
                health: None,
                scheme: mesh_core::Scheme::Http,
            },
        );
        let v2 = remote(&mut s, "2.3.0", Health::Unknown, Some((false, 90)));
        let r = Routing::new(Defaults::default());
        let reqs = req("^2.1");
        let ask = Ask {
            requirements: &reqs,
            ..Ask::default()
        };
        let choice = choose(&s, "api", &ask, &r, Instant::now()).unwrap();
        assert!(!choice.unmet);
        assert_eq!(choice.candidates.len(), 1);
        assert_eq!(choice.candidates[0].provider, v2);

        let reqs = req("^3");
        let warn = Ask {
            requirements: &reqs,
            ..Ask::default()
        };
        let choice = choose(&s, "api", &warn, &r, Instant::now()).unwrap();
        assert!(choice.unmet);
        assert_eq!(choice.candidates[0].provider, s.local_peer);
        let strict = Ask {
            requirements: &reqs,
            mode: VersionMode::Strict,
            ..Ask::default()
        };
        assert!(matches!(
            choose(&s, "api", &strict, &r, Instant::now()),
            Err(Refusal::VersionConflict { providers }) if providers.len() == 2
        ));
    }

    #[test]
    fn rtt_bands() {
        let ms = Duration::from_millis;
        assert_eq!(rtt_band(ms(0)), 0);
        assert_eq!(rtt_band(ms(4)), 0);
        assert_eq!(rtt_band(ms(5)), 1);
        assert_eq!(rtt_band(ms(9)), 1);
        assert_eq!(rtt_band(ms(10)), 2);
        assert_eq!(rtt_band(ms(19)), 2);
        assert_eq!(rtt_band(ms(20)), 3);
        assert_eq!(rtt_band(ms(45)), 4);
    }

    #[test]
    fn pin_sticky_ejection_and_turns() {
        let mut s = snapshot();
        let a = remote(&mut s, "1.0.0", Health::Unknown, Some((true, 1)));
        let b = remote(&mut s, "1.0.0", Health::Unknown, Some((true, 2)));
        let r = Routing::new(Defaults::default());
        // Equal providers take turns.
        let firsts: std::collections::HashSet<PeerId> =
            (0..4).map(|_| order(&s, &Ask::default(), &r)[0]).collect();
        assert_eq!(firsts.len(), 2);
        // An ejected provider goes last until its back-off ends.
        let now = Instant::now();
        r.failed("api", a, now);
        for _ in 0..4 {
            assert_eq!(order(&s, &Ask::default(), &r), vec![b, a]);
        }
        r.succeeded("api", &a);
        // Sticky cookie first.
        let ask = Ask {
            sticky: Some(a),
            ..Ask::default()
        };
        for _ in 0..4 {
            assert_eq!(order(&s, &ask, &r)[0], a);
        }
        // Pins are exclusive.
        let ask = Ask {
            pin: Some(b),
            ..Ask::default()
        };
        assert_eq!(order(&s, &ask, &r), vec![b]);
        let stranger = PeerId::random();
        let ask = Ask {
            pin: Some(stranger),
            ..Ask::default()
        };
        assert!(matches!(
            choose(&s, "api", &ask, &r, Instant::now()),
            Err(Refusal::PinnedAway { pin, providers }) if pin == stranger && providers.len() == 2
        ));
        assert!(matches!(
            choose(&s, "web", &Ask::default(), &r, Instant::now()),
            Err(Refusal::NoProvider)
        ));
    }
}
