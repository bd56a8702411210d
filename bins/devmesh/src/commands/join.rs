//! `devmesh join` and `devmesh invite`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use mesh_control::{Client, InviteResult, JoinResult, PeerStatus, Request, Status};

use crate::{Failure, cli::JoinArgs, daemon, output};

/// What `devmesh join` asks the daemon: addresses, and the namespace with
/// its secret when it moves.
struct JoinAsk {
    addrs: Vec<String>,
    namespace: Option<String>,
    secret: Option<String>,
    /// Move as an open namespace, without a secret.
    open: bool,
}

/// Reads the target of `devmesh join`: an invite token, or a multiaddr
/// with an optional namespace and secret file.
fn join_ask(args: &JoinArgs) -> Result<JoinAsk, Failure> {
    if args
        .target
        .trim()
        .starts_with(mesh_core::namespace::INVITE_PREFIX)
    {
        if args.namespace.is_some() {
            return Err(Failure::usage(anyhow::anyhow!(
                "an invite token already names its namespace; drop --namespace"
            )));
        }
        let invite = mesh_core::Invite::decode(&args.target).map_err(Failure::usage)?;
        return Ok(JoinAsk {
            addrs: invite.bootstrap.iter().map(ToString::to_string).collect(),
            namespace: Some(invite.namespace),
            // A token without a secret invites to an open namespace.
            open: invite.secret.is_none(),
            secret: invite.secret.map(|s| s.to_hex()),
        });
    }
    let target = args.target.trim();
    if let Err(error) = target.parse::<mesh_core::Multiaddr>() {
        return Err(Failure::usage(mesh_control::RequestError::BadMultiaddr {
            addr: target.to_owned(),
            error,
        }));
    }
    let secret = match &args.secret_file {
        Some(path) => Some(
            mesh_core::Secret::load(path)
                .map_err(Failure::usage)?
                .to_hex(),
        ),
        None => None,
    };
    Ok(JoinAsk {
        addrs: vec![target.to_owned()],
        namespace: args.namespace.clone(),
        secret,
        open: args.open,
    })
}

/// `devmesh join`: with a token or a namespace, moves the node into the
/// namespace and waits until a member answers, a member refuses us, or
/// `--wait` seconds pass.
pub async fn join(home: &Path, args: JoinArgs) -> Result<(), Failure> {
    let ask = join_ask(&args)?;
    let moving = ask.namespace.is_some();
    let mut client = daemon::connect_or_start(home).await?;
    let joined: JoinResult = client
        .call_as(&Request::Join {
            addrs: ask.addrs,
            namespace: ask.namespace,
            secret: ask.secret,
            open: ask.open,
        })
        .await?;
    for u in &joined.unreachable {
        eprintln!("devmesh: cannot reach {u}");
    }
    if !moving {
        let refusals = wait_for_admission(&mut client, &joined.peers, args.wait).await?;
        output::emit(args.json, &joined, |joined| {
            for p in &joined.peers {
                if !refusals.iter().any(|(peer, _)| peer == p) {
                    println!("{p}");
                    eprintln!("devmesh: connected to {p}");
                }
            }
        });
        if refusals.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = refusals.into_iter().map(|(_, why)| why).collect();
        return Err(Failure::failed(anyhow::anyhow!(
            "not admitted:\n  {}",
            lines.join("\n  ")
        )));
    }
    let (members, failure) = wait_for_members(&mut client, args.wait).await?;
    if args.json {
        output::json(&serde_json::json!({
            "namespace": joined.namespace,
            "peers": joined.peers,
            "unreachable": joined.unreachable,
            "members": members,
            "error": failure,
        }));
    }
    if let Some(reason) = failure {
        return Err(Failure::failed(anyhow::anyhow!("{reason}")));
    }
    if !args.json {
        println!("{}", joined.namespace);
        eprintln!("devmesh: {}", joined_line(&joined, members));
    }
    Ok(())
}

/// Waits for the namespace to answer: a member admits us (the number of
/// members), a member refuses us (the reason), or `wait` seconds pass.
async fn wait_for_members(
    client: &mut Client,
    wait: u64,
) -> Result<(usize, Option<String>), Failure> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let spinner = crate::progress::spinner("waiting for a member of the namespace to answer");
    loop {
        let status: Status = client.call_as(&Request::Status).await?;
        let peers: Vec<PeerStatus> = client.call_as(&Request::Peers).await?;
        let members = peers.iter().filter(|p| p.kind == "member").count();
        let failure = status
            .admission_failures
            .iter()
            .find(|f| !f.inbound)
            .map(|f| f.reason.clone());
        if members > 0 || failure.is_some() || Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Ok((members, failure));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until each peer joined by multiaddr admitted this node (as a
/// member, or it is a relay) or refused it, at most `wait` seconds: the
/// peers that did not admit it, each with why.
async fn wait_for_admission(
    client: &mut Client,
    peers: &[String],
    wait: u64,
) -> Result<Vec<(String, String)>, Failure> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(wait);
    let spinner = crate::progress::spinner("waiting for the peer to admit this node");
    loop {
        let status: Status = client.call_as(&Request::Status).await?;
        let table: Vec<PeerStatus> = client.call_as(&Request::Peers).await?;
        let mut refused = Vec::new();
        let mut pending = Vec::new();
        for peer in peers {
            let kind = table
                .iter()
                .find(|p| &p.peer_id == peer)
                .map(|p| p.kind.as_str());
            let failure = status
                .admission_failures
                .iter()
                .find(|f| &f.peer_id == peer && !f.inbound);
            let why = match (failure, kind) {
                (Some(f), _) => format!("{peer} refused this node: {}", f.reason),
                (None, Some("member" | "relay")) => continue,
                (None, Some("foreign")) => format!(
                    "{peer} is a member of another namespace than {}: ask one of its members for an invite (`devmesh invite`) and run `devmesh join <token>`",
                    status.namespace
                ),
                // Not in the table yet, a moment after the dial.
                (None, None) if started.elapsed() < Duration::from_secs(1) => {
                    pending.push(peer.clone());
                    continue;
                }
                (None, None) => format!(
                    "{peer} closed the connection without admitting this node: it is in another namespace or holds another secret (`devmesh doctor` there says which)"
                ),
                (None, Some(_)) => {
                    pending.push(peer.clone());
                    continue;
                }
            };
            refused.push((peer.clone(), why));
        }
        if pending.is_empty() || Instant::now() >= deadline {
            spinner.finish_and_clear();
            refused.extend(pending.into_iter().map(|p| {
                let why = format!("{p} did not admit this node within {wait} s");
                (p, why)
            }));
            return Ok(refused);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `devmesh join` says after moving into a namespace.
fn joined_line(joined: &JoinResult, members: usize) -> String {
    if members > 0 {
        format!(
            "joined namespace {}: {members} member(s) online",
            joined.namespace
        )
    } else if joined.peers.is_empty() && !joined.unreachable.is_empty() {
        format!(
            "joined namespace {}, but no bootstrap peer answered; devmeshd keeps trying (`devmesh doctor` explains)",
            joined.namespace
        )
    } else {
        format!(
            "joined namespace {}; no other member is online yet (they appear as they come online)",
            joined.namespace
        )
    }
}

/// What `devmesh invite` asks for.
pub struct InviteAsk {
    pub namespace: Option<String>,
    pub bootstrap: Vec<String>,
    pub rotate: bool,
    pub yes: bool,
}

/// `devmesh invite`: prints the token on stdout, and on stderr what
/// happened to make it and how to pass it on.
pub async fn invite(home: &Path, ask: InviteAsk, json: bool) -> Result<(), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let invite: InviteResult = client
        .call_as(&Request::Invite {
            namespace: ask.namespace,
            bootstrap: ask.bootstrap,
            rotate: ask.rotate,
            yes: ask.yes,
        })
        .await?;
    output::emit(json, &invite, print_invite);
    Ok(())
}

fn print_invite(invite: &InviteResult) {
    println!("{}", invite.token);
    if invite.created_secret {
        eprintln!(
            "devmesh: namespace {} has a new secret; only nodes that join with this token are members",
            invite.namespace
        );
    }
    if invite.joined {
        eprintln!(
            "devmesh: this node is now in namespace {}",
            invite.namespace
        );
    }
    if invite.bootstrap.is_empty() {
        eprintln!(
            "devmesh: the token holds no bootstrap address, so only nodes on this LAN (mDNS) can use it; add the team relay with --bootstrap <multiaddr>"
        );
    }
    eprintln!(
        "devmesh: keep the token private: it holds the namespace secret. Teammates run `devmesh join <token>`"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, namespace: Option<&str>) -> JoinArgs {
        JoinArgs {
            target: target.into(),
            namespace: namespace.map(str::to_owned),
            secret_file: None,
            open: false,
            wait: 0,
            json: false,
        }
    }

    #[test]
    fn a_token_names_its_namespace_and_a_multiaddr_is_passed_on() {
        let secret = mesh_core::Secret::generate();
        let token = mesh_core::Invite {
            namespace: "team".into(),
            secret: Some(secret.clone()),
            bootstrap: vec!["/ip4/203.0.113.7/tcp/4001".parse().unwrap()],
        }
        .encode();
        let ask = join_ask(&args(&token, None)).ok().unwrap();
        assert_eq!(ask.namespace.as_deref(), Some("team"));
        assert_eq!(ask.addrs, ["/ip4/203.0.113.7/tcp/4001"]);
        assert_eq!(ask.secret, Some(secret.to_hex()));
        let refused = join_ask(&args(&token, Some("other"))).err().unwrap();
        assert_eq!(refused.code, 2);
        let ask = join_ask(&args("/ip4/127.0.0.1/tcp/1", Some("team")))
            .ok()
            .unwrap();
        assert_eq!(ask.addrs, ["/ip4/127.0.0.1/tcp/1"]);
        assert_eq!(ask.secret, None);
        let refused = join_ask(&args("foo", None)).err().unwrap();
        assert_eq!(refused.code, 2);
        assert!(
            format!("{:#}", refused.error).starts_with("\"foo\" is not a multiaddr ("),
            "{:#}",
            refused.error
        );
    }

    #[test]
    fn the_joined_line_says_whether_members_are_online() {
        let joined = |peers: &[&str], unreachable: &[&str]| JoinResult {
            namespace: "team".into(),
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
            unreachable: unreachable.iter().map(|u| (*u).to_owned()).collect(),
        };
        assert_eq!(
            joined_line(&joined(&["p"], &[]), 2),
            "joined namespace team: 2 member(s) online"
        );
        assert!(joined_line(&joined(&[], &["a: down"]), 0).contains("no bootstrap peer answered"));
        assert!(joined_line(&joined(&["p"], &[]), 0).contains("no other member is online yet"));
    }
}
