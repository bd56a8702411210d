//! Where each setting comes from: flag > `DEVMESH_*` environment > the
//! config file in the home directory > default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use mesh_config::DaemonFile;
use mesh_core::{Multiaddr, Role};

use crate::membership::{Asked, Choice};

/// Default address of the HTTP front door.
pub const DEFAULT_PROXY: &str = "127.0.0.1:7700";
/// Default time a stopping daemon gives in-flight work to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// Namespace to join [default: a private one of this node's, made at
    /// first start; `default` with --open]
    #[arg(long, env = "DEVMESH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Run the namespace open, without a secret: any node on the network
    /// that names it is a member and reaches your services. Without it a
    /// namespace has a secret, and only nodes you invite are members
    #[arg(long, env = "DEVMESH_OPEN")]
    pub open: bool,
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
    /// When no provider satisfies a version requirement: `warn` (serve with
    /// the best available one, with a warning header) or `strict` (409).
    #[arg(long, env = "DEVMESH_VERSIONS", value_parser = ["warn", "strict"])]
    pub versions: Option<String>,
    /// Which requests that failed before any response byte go to the next
    /// provider: `idempotent`, `all` or `never`.
    #[arg(long, env = "DEVMESH_RETRY", value_parser = ["idempotent", "all", "never"])]
    pub retry: Option<String>,
    /// On SIGTERM, how long in-flight requests, tunnels and control
    /// requests may take to finish, such as 5s or 500ms [default: 5s]
    #[arg(long, env = "DEVMESH_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = mesh_config::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Front-door connections served at once; more get a 503 and are
    /// closed [default: 4096]
    #[arg(long, env = "DEVMESH_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Up to how many other members this node connects to every member of
    /// its team; a larger team keeps a bounded mesh (docs/ARCHITECTURE.md).
    /// A tuning knob: tests make a small team behave like a large one.
    #[arg(long, env = "DEVMESH_FULL_MESH_UP_TO", value_name = "N", hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub full_mesh_up_to: Option<u64>,
    /// Log filter, like `info` or `devmeshd=debug,mesh_core=debug`
    #[arg(long, env = "DEVMESH_LOG", default_value = "info")]
    pub log: String,
    #[command(flatten)]
    pub observe: crate::observe::ObserveArgs,
}

/// The home directory of `args`: `--home`, `DEVMESH_HOME`, or `~/.devmesh`.
pub fn home(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.home {
        Some(h) => Ok(h.clone()),
        None => {
            mesh_control::default_home().context("HOME is not set; pass --home or set DEVMESH_HOME")
        }
    }
}

/// The settings devmeshd runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub listen: Vec<Multiaddr>,
    /// No listen address was given: the default ones, whose ports are
    /// picked once and kept (`ports.rs`).
    pub listen_defaulted: bool,
    pub proxy: SocketAddr,
    /// The namespace, and where its secret comes from (`membership.rs`).
    pub membership: Choice,
    pub role: Role,
    pub bootstrap: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub mdns: bool,
    /// The sizes of the mesh of member connections.
    pub links: mesh_core::Links,
    pub routing: mesh_proxy::policy::Defaults,
    pub log: String,
    pub config_path: PathBuf,
    /// How long a stopping daemon lets in-flight work finish.
    pub shutdown_grace: Duration,
    /// Front-door connections served at once.
    pub max_connections: usize,
    /// Metrics, request log, traces.
    pub observe: crate::observe::ObserveSettings,
}

impl Settings {
    /// Merges flags, environment, file and defaults.
    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let home = home(&args)?;
        let config_path = args.config.unwrap_or_else(|| home.join("config.toml"));
        let file = DaemonFile::load(&config_path)?;
        let role = role(args.relay, &file, &config_path)?;
        let default_port = if role == Role::Relay { 4001 } else { 0 };
        let listen_given = first_list(args.listen, file.listen.clone());
        let listen_defaulted = listen_given.is_none() && role == Role::Member;
        let listen = listen_given.unwrap_or_else(|| {
            vec![
                format!("/ip4/0.0.0.0/tcp/{default_port}"),
                format!("/ip4/0.0.0.0/udp/{default_port}/quic-v1"),
            ]
        });
        let external = first_list(args.external, file.external.clone()).unwrap_or_default();
        let bootstrap = first_list(args.bootstrap, file.bootstrap.clone()).unwrap_or_default();
        let proxy = args
            .proxy
            .or(file.proxy.clone())
            .unwrap_or_else(|| DEFAULT_PROXY.to_owned());
        let asked = Asked {
            open: args.open || file.open.unwrap_or(false),
            namespace: args.namespace.or(file.namespace.clone()),
            secret_file: args
                .secret_file
                .or_else(|| file.secret_file.clone().map(PathBuf::from)),
        };
        if let Some(name) = &asked.namespace {
            mesh_core::namespace::validate_name(name).map_err(anyhow::Error::msg)?;
        }
        let membership = crate::membership::choose(role, asked, |name| {
            Ok(mesh_control::stored_secret(&home, name)?)
        })?;
        Ok(Self {
            observe: crate::observe::ObserveSettings::resolve(args.observe, &file)?,
            routing: routing(args.versions, args.retry, &file)?,
            shutdown_grace: shutdown_grace(args.shutdown_grace, &file),
            max_connections: args
                .max_connections
                .or(file.max_connections.as_ref().map(|v| *v.get_ref()))
                .map_or(mesh_proxy::DEFAULT_MAX_CONNECTIONS, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            listen: parse_addrs(&listen, "listen")?,
            listen_defaulted,
            bootstrap: parse_addrs(&bootstrap, "bootstrap")?,
            external: parse_addrs(&external, "external")?,
            role,
            config_path,
            proxy: proxy.parse().with_context(|| {
                format!(
                    "proxy address {proxy:?} is invalid: expected ip:port such as 127.0.0.1:7700"
                )
            })?,
            membership,
            mdns: args.mdns.or(file.mdns).unwrap_or(true),
            links: args
                .full_mesh_up_to
                .map_or_else(mesh_core::Links::default, |n| {
                    mesh_core::Links::up_to(n as usize)
                }),
            log: args.log,
            home,
        })
    }
}

/// The flag's list when it has items, else the file's.
fn first_list(flag: Vec<String>, file: Option<Vec<String>>) -> Option<Vec<String>> {
    if flag.is_empty() { file } else { Some(flag) }
}

/// `--relay`, else `role` of the file, else member.
fn role(relay: bool, file: &DaemonFile, config_path: &std::path::Path) -> anyhow::Result<Role> {
    if relay {
        return Ok(Role::Relay);
    }
    match file.role.as_deref() {
        None | Some("member") => Ok(Role::Member),
        Some("relay") => Ok(Role::Relay),
        Some(other) => anyhow::bail!(
            "{}: key `role`: {other:?} is not a role; use \"member\" or \"relay\"",
            config_path.display()
        ),
    }
}

/// The front door's routing defaults: flag or environment, else
/// `[routing]` of the file, else the defaults.
fn routing(
    versions: Option<String>,
    retry: Option<String>,
    file: &DaemonFile,
) -> anyhow::Result<mesh_proxy::policy::Defaults> {
    let versions = versions
        .or(file.routing.versions.clone().map(|v| v.into_inner()))
        .map(|v| v.parse().map_err(anyhow::Error::msg))
        .transpose()?
        .unwrap_or_default();
    let retry = retry
        .or(file.routing.retry.clone().map(|v| v.into_inner()))
        .map(|v| v.parse().map_err(anyhow::Error::msg))
        .transpose()?
        .unwrap_or_default();
    Ok(mesh_proxy::policy::Defaults { versions, retry })
}

/// `--shutdown-grace` or `DEVMESH_SHUTDOWN_GRACE` (clap reads both, the
/// flag first), else `shutdown_grace` of the file, else 5 s.
fn shutdown_grace(flag_or_env: Option<Duration>, file: &DaemonFile) -> Duration {
    flag_or_env
        .or(file.shutdown_grace())
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser as _;

    use super::*;

    fn file(text: &str) -> DaemonFile {
        DaemonFile::parse(Path::new("/h/config.toml"), text).unwrap()
    }

    #[test]
    fn shutdown_grace_takes_the_flag_then_the_file_then_five_seconds() {
        let with_key = file("shutdown_grace = \"2s\"\n");
        assert_eq!(shutdown_grace(None, &file("")), Duration::from_secs(5));
        assert_eq!(shutdown_grace(None, &with_key), Duration::from_secs(2));
        assert_eq!(
            shutdown_grace(Some(Duration::from_millis(500)), &with_key),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn shutdown_grace_flag_is_a_duration() {
        let args = Args::try_parse_from(["devmeshd", "--shutdown-grace", "750ms"]).unwrap();
        assert_eq!(args.shutdown_grace, Some(Duration::from_millis(750)));
        let err = Args::try_parse_from(["devmeshd", "--shutdown-grace", "later"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"later\" is not a duration"), "{err}");
    }

    #[test]
    fn lists_from_flags_replace_the_files() {
        let from_file = Some(vec!["/ip4/127.0.0.1/tcp/1".to_owned()]);
        assert_eq!(first_list(vec![], from_file.clone()), from_file);
        assert_eq!(
            first_list(vec!["/ip4/127.0.0.1/tcp/2".into()], from_file),
            Some(vec!["/ip4/127.0.0.1/tcp/2".to_owned()])
        );
        assert_eq!(first_list(vec![], None), None);
    }

    #[test]
    fn role_comes_from_the_flag_or_the_file() {
        let path = Path::new("/h/config.toml");
        assert_eq!(role(false, &file(""), path).unwrap(), Role::Member);
        assert_eq!(
            role(false, &file("role = \"relay\"\n"), path).unwrap(),
            Role::Relay
        );
        assert_eq!(
            role(true, &file("role = \"member\"\n"), path).unwrap(),
            Role::Relay
        );
        let err = role(false, &file("role = \"boss\"\n"), path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/h/config.toml: key `role`: \"boss\""),
            "{err}"
        );
    }
}
