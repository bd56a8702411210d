//! `join` and `invite`: moving the node into a namespace, its secret in
//! `<home>/secrets/<namespace>`, the namespace recorded in config.toml, and
//! the dials to the peers named.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_core::{Invite, Multiaddr, Namespace, Role, Secret, namespace::validate_name};
use tracing::info;

use super::Server;
use crate::{DialFailure, InviteResult, JoinResult, RequestError};

/// How long `join` waits for a connection to each peer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the secret of `namespace` is kept in `home`.
pub fn secret_path(home: &Path, namespace: &str) -> PathBuf {
    home.join("secrets").join(namespace)
}

/// The secret of `namespace` kept in `home`, if there is one.
pub fn stored_secret(
    home: &Path,
    namespace: &str,
) -> Result<Option<Secret>, mesh_core::namespace::SecretError> {
    let path = secret_path(home, namespace);
    if !path.exists() {
        return Ok(None);
    }
    Secret::load(&path).map(Some)
}

fn check_name(name: &str) -> Result<(), RequestError> {
    validate_name(name).map_err(|e| RequestError::BadNamespace(e.into()))
}

type AddrError = <Multiaddr as std::str::FromStr>::Err;

/// The multiaddrs of `addrs`; `bad` says what is wrong with one.
fn parse_addrs(
    addrs: &[String],
    bad: impl Fn(String, AddrError) -> RequestError,
) -> Result<Vec<Multiaddr>, RequestError> {
    addrs
        .iter()
        .map(|a| a.parse().map_err(|e| bad(a.clone(), e)))
        .collect()
}

/// The multiaddrs of a `join` request.
fn join_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, RequestError> {
    parse_addrs(addrs, |addr, error| RequestError::BadMultiaddr {
        addr,
        error,
    })
}

/// The bootstrap addresses of an `invite` request.
fn bootstrap_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, RequestError> {
    parse_addrs(addrs, |addr, source| RequestError::BadBootstrap {
        addr,
        source,
    })
}

/// Where an invite made on a node in `snapshot` sends the invitees, and
/// what the inviter has to do for it.
#[derive(Debug, PartialEq)]
struct InvitePlan {
    /// The bootstrap addresses the token carries.
    addrs: Vec<Multiaddr>,
    /// The inviter moves into the namespace (with its secret) to admit
    /// the people it invites.
    joined: bool,
    /// Addresses the inviter adds to its own bootstrap list, to meet its
    /// invitees where it sends them.
    new_bootstrap: Vec<Multiaddr>,
}

impl InvitePlan {
    fn new(
        snapshot: &mesh_core::Snapshot,
        name: &str,
        created: bool,
        addrs: Vec<Multiaddr>,
    ) -> Self {
        let relay = snapshot.role == Role::Relay;
        let addrs = if !addrs.is_empty() {
            addrs
        } else if relay {
            snapshot
                .external_addrs
                .iter()
                .map(|a| {
                    a.clone()
                        .with(mesh_core::multiaddr::Protocol::P2p(snapshot.local_peer))
                })
                .collect()
        } else {
            snapshot.bootstrap.clone()
        };
        let joined = !relay && (snapshot.namespace != name || !snapshot.has_secret || created);
        let new_bootstrap = if relay {
            Vec::new()
        } else {
            addrs
                .iter()
                .filter(|a| !snapshot.bootstrap.contains(a))
                .cloned()
                .collect()
        };
        Self {
            addrs,
            joined,
            new_bootstrap,
        }
    }
}

fn texts(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

/// How a `join` with a namespace becomes a member of it: with the secret
/// given, or the one stored, or none when it is `open`.
#[derive(Debug, Clone, Default)]
pub(super) struct Membership {
    pub secret: Option<String>,
    pub open: bool,
}

impl Server {
    pub(super) async fn join(
        &self,
        addrs: Vec<String>,
        namespace: Option<String>,
        membership: Membership,
    ) -> Result<JoinResult, RequestError> {
        let addrs = join_addrs(&addrs)?;
        if let Some(name) = &namespace {
            self.move_to(name, membership, &addrs).await?;
        }
        let (peers, failures) = self.dial_all(&addrs).await;
        if namespace.is_none() && peers.is_empty() {
            return Err(RequestError::NoPeerReached { failures });
        }
        if namespace.is_none() {
            // Kept for the next start (a token's bootstrap addresses are
            // in config.toml already).
            let reached: Vec<Multiaddr> = addrs
                .iter()
                .filter(|a| mesh_core::peer_of(a).is_none_or(|p| peers.contains(&p.to_string())))
                .cloned()
                .collect();
            self.saved.joined(&reached);
        }
        Ok(JoinResult {
            namespace: self.node.snapshot().namespace.clone(),
            peers,
            unreachable: failures.iter().map(ToString::to_string).collect(),
        })
    }

    /// Moves the node into namespace `name`, storing the secret given (or
    /// using the one stored, or none when open) and recording the
    /// namespace in config.toml.
    async fn move_to(
        &self,
        name: &str,
        membership: Membership,
        addrs: &[Multiaddr],
    ) -> Result<(), RequestError> {
        if self.node.snapshot().role == Role::Relay {
            return Err(RequestError::RelayJoins);
        }
        check_name(name)?;
        let secret = match membership.secret {
            Some(_) if membership.open => {
                return Err(RequestError::OpenWithSecret {
                    namespace: name.to_owned(),
                });
            }
            Some(s) => {
                let s = Secret::parse(&s)?;
                s.save(&secret_path(&self.info.home, name))?;
                Some(s)
            }
            None if membership.open => None,
            None => Some(
                self.stored_secret(name)?
                    .ok_or_else(|| RequestError::NoSecret {
                        namespace: name.to_owned(),
                    })?,
            ),
        };
        let open = secret.is_none();
        mesh_config::write_membership(&self.info.config_path, name, &texts(addrs), open)
            .map_err(RequestError::Membership)?;
        info!(namespace = %name, secret = secret.is_some(), "joining namespace on request");
        self.node
            .join(
                Namespace::new(name.to_owned(), secret.as_ref()),
                addrs.to_vec(),
            )
            .await?;
        Ok(())
    }

    /// Dials every peer of `addrs` at once (the addresses of one peer
    /// together, the first that works wins): the peers connected to, and
    /// the ones that could not be reached.
    pub(super) async fn dial_all(&self, addrs: &[Multiaddr]) -> (Vec<String>, Vec<DialFailure>) {
        let dials = mesh_core::group_by_peer(addrs).into_iter().map(|group| {
            let node = self.node.clone();
            async move {
                let addr = group
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ");
                match tokio::time::timeout(DIAL_TIMEOUT, node.dial_any(group)).await {
                    Ok(Ok(peer)) => Ok(peer.to_string()),
                    Ok(Err(error)) => Err(DialFailure::Failed { addr, error }),
                    Err(_) => Err(DialFailure::TimedOut {
                        addr,
                        after: DIAL_TIMEOUT,
                    }),
                }
            }
        });
        let mut peers = Vec::new();
        let mut failures = Vec::new();
        for result in futures::future::join_all(dials).await {
            match result {
                Ok(peer) => peers.push(peer),
                Err(failure) => failures.push(failure),
            }
        }
        (peers, failures)
    }

    /// The stored secret of `namespace`, if there is one.
    fn stored_secret(&self, namespace: &str) -> Result<Option<Secret>, RequestError> {
        Ok(stored_secret(&self.info.home, namespace)?)
    }

    pub(super) async fn invite(
        &self,
        namespace: Option<String>,
        bootstrap: Vec<String>,
        new_secret: NewSecret,
    ) -> Result<InviteResult, RequestError> {
        let snapshot = self.node.snapshot();
        let name = match namespace {
            Some(n) => n,
            None if snapshot.role == Role::Relay => return Err(RequestError::RelayNeedsNamespace),
            None => snapshot.namespace.clone(),
        };
        check_name(&name)?;
        let stored = self.stored_secret(&name)?.filter(|_| !new_secret.rotate);
        if stored.is_none() {
            new_secret.check(&snapshot, &name)?;
        }
        let (secret, created) = match stored {
            Some(s) => (s, false),
            None => {
                let s = Secret::generate();
                s.save(&secret_path(&self.info.home, &name))?;
                info!(namespace = %name, "created a secret for the namespace");
                (s, true)
            }
        };
        let plan = InvitePlan::new(&snapshot, &name, created, bootstrap_addrs(&bootstrap)?);
        if plan.joined || !plan.new_bootstrap.is_empty() {
            mesh_config::write_membership(
                &self.info.config_path,
                &name,
                &texts(&plan.new_bootstrap),
                false,
            )
            .map_err(RequestError::Membership)?;
        }
        if plan.joined {
            self.node
                .join(Namespace::new(name.clone(), Some(&secret)), Vec::new())
                .await?;
        }
        if !plan.new_bootstrap.is_empty() {
            self.node.add_bootstrap(plan.new_bootstrap).await?;
        }
        let invite = Invite {
            namespace: name.clone(),
            secret: Some(secret),
            bootstrap: plan.addrs.clone(),
        };
        Ok(InviteResult {
            token: invite.encode(),
            namespace: name,
            bootstrap: texts(&plan.addrs),
            created_secret: created,
            joined: plan.joined,
        })
    }
}

/// Whether `invite` may make a new secret for a namespace: one that has
/// none, or `--rotate`. A new secret cuts off every member connected now,
/// so it takes `--yes` when there is any, and always with `--rotate`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NewSecret {
    pub rotate: bool,
    pub yes: bool,
}

impl NewSecret {
    fn check(self, snapshot: &mesh_core::Snapshot, name: &str) -> Result<(), RequestError> {
        if self.yes {
            return Ok(());
        }
        let dropped: Vec<String> = if snapshot.namespace == name {
            snapshot
                .peers
                .iter()
                .filter(|(_, link)| link.kind == mesh_core::admission::PeerKind::Member)
                .map(|(peer, _)| peer.to_string())
                .collect()
        } else {
            Vec::new()
        };
        if !dropped.is_empty() {
            return Err(RequestError::WouldDropMembers {
                namespace: name.to_owned(),
                peers: dropped,
            });
        }
        if self.rotate {
            return Err(RequestError::RotateNeedsYes {
                namespace: name.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_name_the_request_they_came_in() {
        let err = join_addrs(&["/ip4/1.2.3.4/tcp/1".into(), "nope".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("\"nope\" is not a multiaddr ("), "{err}");
        let err = crate::chain(&bootstrap_addrs(&["nope".into()]).unwrap_err());
        assert!(
            err.starts_with("bootstrap address \"nope\" is not a multiaddr: "),
            "{err}"
        );
    }

    #[test]
    fn an_invite_moves_a_member_and_adds_new_bootstrap_addresses() {
        let mut s = super::super::tests::snapshot();
        let known: Multiaddr = "/ip4/203.0.113.1/tcp/4001".parse().unwrap();
        let new: Multiaddr = "/ip4/203.0.113.2/tcp/4001".parse().unwrap();
        s.bootstrap = vec![known.clone()];
        s.has_secret = true;
        // Same namespace, secret kept: no move, the node's own bootstrap.
        let plan = InvitePlan::new(&s, "team", false, vec![]);
        assert_eq!(
            plan,
            InvitePlan {
                addrs: vec![known.clone()],
                joined: false,
                new_bootstrap: vec![],
            }
        );
        // Another namespace with a new address: move and meet there.
        let plan = InvitePlan::new(&s, "other", false, vec![known.clone(), new.clone()]);
        assert!(plan.joined);
        assert_eq!(plan.new_bootstrap, [new]);
        // A secret made now: the member moves to use it.
        assert!(InvitePlan::new(&s, "team", true, vec![]).joined);
    }

    #[test]
    fn a_relay_invites_to_its_external_addresses_and_never_moves() {
        let mut s = super::super::tests::snapshot();
        s.role = Role::Relay;
        s.external_addrs = vec!["/ip4/203.0.113.9/tcp/4001".parse().unwrap()];
        let plan = InvitePlan::new(&s, "team", true, vec![]);
        assert!(!plan.joined);
        assert!(plan.new_bootstrap.is_empty());
        assert_eq!(
            plan.addrs[0].to_string(),
            format!("/ip4/203.0.113.9/tcp/4001/p2p/{}", s.local_peer)
        );
    }
}
