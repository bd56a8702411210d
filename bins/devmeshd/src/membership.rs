//! Which namespace a node starts in, and with which secret.
//!
//! Private by default: a node never named a namespace gets one of its own
//! (`team-<8 hex>`, recorded in config.toml) with a random secret, and a
//! namespace named without a secret gets one made for it, so only nodes
//! that were invited (`devmesh invite` / `devmesh join <token>`) are
//! members. An open namespace, without a secret, is an explicit choice:
//! `--open` or `open = true`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mesh_core::{Namespace, Role, Secret};
use tracing::info;

/// The namespace of an open node that names none.
pub const OPEN_NAMESPACE: &str = "default";

/// What the settings say about the namespace, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A namespace without a secret: every node that names it is a member.
    Open(String),
    /// A namespace with the secret of a file or the home.
    Member(String, Secret),
    /// A namespace without a secret yet: one is made now. `made_up` when
    /// the name was made here too, and goes into config.toml.
    Private { name: String, made_up: bool },
}

/// What the flags and config.toml ask for: `--open`, `--namespace`,
/// `--secret-file`.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub open: bool,
    pub namespace: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// The namespace of a node with role `role`; `stored` reads the secret
/// `devmesh join` kept for a namespace, if any.
pub fn choose(
    role: Role,
    asked: Asked,
    stored: impl Fn(&str) -> anyhow::Result<Option<Secret>>,
) -> anyhow::Result<Choice> {
    let given = |name: &str| -> anyhow::Result<Option<Secret>> {
        match &asked.secret_file {
            Some(path) => Ok(Some(Secret::load(path).with_context(|| {
                format!("reading the secret of namespace {name}; `devmesh join <token>` stores it for you")
            })?)),
            None => stored(name),
        }
    };
    if asked.open {
        if let Some(path) = &asked.secret_file {
            anyhow::bail!(
                "--open and the secret file {} contradict each other: an open namespace has no secret; drop one of them",
                path.display()
            );
        }
        let name = asked.namespace.unwrap_or_else(|| OPEN_NAMESPACE.to_owned());
        return Ok(Choice::Open(name));
    }
    // A relay serves every namespace; its own needs no secret.
    if role == Role::Relay || (asked.namespace.is_none() && asked.secret_file.is_some()) {
        let name = asked
            .namespace
            .clone()
            .unwrap_or_else(|| OPEN_NAMESPACE.to_owned());
        return Ok(match given(&name)? {
            Some(secret) => Choice::Member(name, secret),
            None => Choice::Open(name),
        });
    }
    let Some(name) = asked.namespace.clone() else {
        return Ok(Choice::Private {
            name: mesh_core::namespace::private_name(),
            made_up: true,
        });
    };
    Ok(match given(&name)? {
        Some(secret) => Choice::Member(name, secret),
        None => Choice::Private {
            name,
            made_up: false,
        },
    })
}

/// Makes what `choice` needs (a private namespace's secret in the home,
/// its made-up name in config.toml) and gives the namespace to run in.
pub fn establish(home: &Path, config_path: &Path, choice: Choice) -> anyhow::Result<Namespace> {
    Ok(match choice {
        Choice::Open(name) => {
            info!(
                namespace = %name,
                "the namespace is open: any node on this network that names it is a member and reaches your services"
            );
            Namespace::new(name, None)
        }
        Choice::Member(name, secret) => Namespace::new(name, Some(&secret)),
        Choice::Private { name, made_up } => {
            let secret = Secret::generate();
            let path = mesh_control::secret_path(home, &name);
            secret
                .save(&path)
                .with_context(|| format!("storing the new secret of namespace {name}"))?;
            if made_up {
                mesh_config::write_membership(config_path, &name, &[], false)
                    .with_context(|| format!("recording namespace {name}"))?;
            }
            info!(
                namespace = %name,
                secret = %path.display(),
                "made a private namespace: only nodes you invite are members (`devmesh invite`, then `devmesh join <token>` on theirs)"
            );
            Namespace::new(name, Some(&secret))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> anyhow::Result<Option<Secret>> {
        Ok(None)
    }

    fn asked(open: bool, namespace: Option<&str>) -> Asked {
        Asked {
            open,
            namespace: namespace.map(str::to_owned),
            secret_file: None,
        }
    }

    #[test]
    fn a_fresh_node_makes_up_a_private_namespace() {
        let choice = choose(Role::Member, Asked::default(), none).unwrap();
        let Choice::Private { name, made_up } = choice else {
            panic!("{choice:?}");
        };
        assert!(made_up);
        assert!(name.starts_with("team-"), "{name}");
    }

    #[test]
    fn a_named_namespace_without_a_secret_gets_one() {
        assert_eq!(
            choose(Role::Member, asked(false, Some("team")), none).unwrap(),
            Choice::Private {
                name: "team".into(),
                made_up: false
            }
        );
        let secret = Secret::generate();
        let stored = |name: &str| Ok((name == "team").then(|| secret.clone()));
        assert_eq!(
            choose(Role::Member, asked(false, Some("team")), stored).unwrap(),
            Choice::Member("team".into(), secret.clone())
        );
    }

    #[test]
    fn open_is_asked_for_and_ignores_a_stored_secret() {
        let secret = Secret::generate();
        let stored = |_: &str| Ok(Some(secret.clone()));
        assert_eq!(
            choose(Role::Member, asked(true, None), stored).unwrap(),
            Choice::Open("default".into())
        );
        assert_eq!(
            choose(Role::Member, asked(true, Some("lan")), none).unwrap(),
            Choice::Open("lan".into())
        );
        let both = Asked {
            secret_file: Some("/h/s".into()),
            ..asked(true, Some("lan"))
        };
        let err = choose(Role::Member, both, none).unwrap_err().to_string();
        assert!(err.contains("--open and the secret file /h/s"), "{err}");
    }

    #[test]
    fn a_relay_makes_no_secret() {
        assert_eq!(
            choose(Role::Relay, Asked::default(), none).unwrap(),
            Choice::Open("default".into())
        );
    }
}
