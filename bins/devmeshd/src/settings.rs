//! Where each setting comes from: flag > `DEVMESH_*` environment > the
//! config file in the home directory > default.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use mesh_config::DaemonFile;
use mesh_core::{Multiaddr, Namespace, Role, Secret};

/// Default address of the HTTP front door.
pub const DEFAULT_PROXY: &str = "127.0.0.1:7700";
/// Default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The devmesh node: shares local services with the team and proxies to theirs.
#[derive(Debug, clap::Parser)]
#[command(name = "devmeshd", version, about)]
pub struct Args {
    /// Home directory: identity, config.toml, control socket [default: ~/.devmesh]
    #[arg(long, env = "DEVMESH_HOME")]
    pub home: Option<PathBuf>,
    /// Config file [default: <home>/config.toml]
    #[arg(long, env = "DEVMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// p2p listen multiaddr; repeat for several [default: TCP and QUIC, random ports]
    #[arg(long, env = "DEVMESH_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Address of the HTTP front door; port 0 picks a free port [default: 127.0.0.1:7700]
    #[arg(long, env = "DEVMESH_PROXY")]
    pub proxy: Option<String>,
    /// Namespace to join [default: default]
    #[arg(long, env = "DEVMESH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Multiaddr of a peer to connect to at start; repeat for several
    #[arg(long, env = "DEVMESH_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Discover peers on the LAN with mDNS: true or false [default: true]
    #[arg(long, env = "DEVMESH_MDNS")]
    pub mdns: Option<bool>,
    /// Run as the team's public node: bootstrap peer, relay and AutoNAT
    /// server for every namespace (listens on port 4001 unless --listen says otherwise)
    #[arg(long, env = "DEVMESH_RELAY")]
    pub relay: bool,
    /// Address others reach this node at, when not a listen address (a
    /// relay behind a cloud NAT); repeat for several
    #[arg(long, env = "DEVMESH_EXTERNAL", value_delimiter = ',')]
    pub external: Vec<String>,
    /// File holding the namespace secret [default: <home>/secrets/<namespace> if it exists]
    #[arg(long, env = "DEVMESH_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Log filter, like `info` or `devmeshd=debug,mesh_core=debug`
    /// When no provider satisfies a version requirement: `warn` (serve with
    /// the best available one, with a warning header) or `strict` (409).
    #[arg(long, env = "DEVMESH_VERSIONS", value_parser = ["warn", "strict"])]
    pub versions: Option<String>,
    /// Which requests that failed before any response byte go to the next
    /// provider: `idempotent`, `all` or `never`.
    #[arg(long, env = "DEVMESH_RETRY", value_parser = ["idempotent", "all", "never"])]
    pub retry: Option<String>,
    #[arg(long, env = "DEVMESH_LOG", default_value = "info")]
    pub log: String,
}

/// The settings devmeshd runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub proxy: SocketAddr,
    pub namespace: Namespace,
    pub role: Role,
    pub bootstrap: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub mdns: bool,
    pub routing: mesh_proxy::policy::Defaults,
    pub log: String,
    pub config_path: PathBuf,
}

impl Settings {
    /// Merges flags, environment, file and defaults.
    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let home = match args.home {
            Some(h) => h,
            None => mesh_control::default_home()
                .context("HOME is not set; pass --home or set DEVMESH_HOME")?,
        };
        let config_path = args.config.unwrap_or_else(|| home.join("config.toml"));
        let file = DaemonFile::load(&config_path)?;
        let role = if args.relay {
            Role::Relay
        } else {
            match file.role.as_deref() {
                None | Some("member") => Role::Member,
                Some("relay") => Role::Relay,
                Some(other) => anyhow::bail!(
                    "{}: key `role`: {other:?} is not a role; use \"member\" or \"relay\"",
                    config_path.display()
                ),
            }
        };
        let default_port = if role == Role::Relay { 4001 } else { 0 };
        let listen = if !args.listen.is_empty() {
            args.listen
        } else {
            file.listen.unwrap_or_else(|| {
                vec![
                    format!("/ip4/0.0.0.0/tcp/{default_port}"),
                    format!("/ip4/0.0.0.0/udp/{default_port}/quic-v1"),
                ]
            })
        };
        let external = if !args.external.is_empty() {
            args.external
        } else {
            file.external.unwrap_or_default()
        };
        let bootstrap = if !args.bootstrap.is_empty() {
            args.bootstrap
        } else {
            file.bootstrap.unwrap_or_default()
        };
        let proxy = args
            .proxy
            .or(file.proxy)
            .unwrap_or_else(|| DEFAULT_PROXY.to_owned());
        let namespace = args
            .namespace
            .or(file.namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        mesh_core::namespace::validate_name(&namespace).map_err(anyhow::Error::msg)?;
        let secret_file = args
            .secret_file
            .or_else(|| file.secret_file.map(PathBuf::from));
        let secret = match secret_file {
            Some(path) => Some(Secret::load(&path).with_context(|| {
                format!("reading the secret of namespace {namespace}; `devmesh join <token>` stores it for you")
            })?),
            None => {
                let stored = mesh_control::secret_path(&home, &namespace);
                if stored.exists() {
                    Some(Secret::load(&stored)?)
                } else {
                    None
                }
            }
        };
        let versions = args
            .versions
            .or(file.routing.versions.map(|v| v.into_inner()))
            .map(|v| v.parse().map_err(anyhow::Error::msg))
            .transpose()?
            .unwrap_or_default();
        let retry = args
            .retry
            .or(file.routing.retry.map(|v| v.into_inner()))
            .map(|v| v.parse().map_err(anyhow::Error::msg))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            routing: mesh_proxy::policy::Defaults { versions, retry },
            listen: parse_addrs(&listen, "listen")?,
            bootstrap: parse_addrs(&bootstrap, "bootstrap")?,
            external: parse_addrs(&external, "external")?,
            role,
            config_path,
            proxy: proxy.parse().with_context(|| {
                format!(
                    "proxy address {proxy:?} is invalid: expected ip:port such as 127.0.0.1:7700"
                )
            })?,
            namespace: Namespace::new(namespace, secret.as_ref()),
            mdns: args.mdns.or(file.mdns).unwrap_or(true),
            log: args.log,
            home,
        })
    }
}

fn parse_addrs(addrs: &[String], what: &str) -> anyhow::Result<Vec<Multiaddr>> {
    addrs
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            a.trim().parse().with_context(|| {
                format!("{what} address {a:?} is not a multiaddr: expected one like /ip4/127.0.0.1/tcp/4001")
            })
        })
        .collect()
}
