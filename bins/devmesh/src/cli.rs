//! The command line: every command and its flags (clap).

use std::{ffi::OsString, path::PathBuf};

use clap::{Parser, Subcommand};

/// Share local development services with your team over libp2p.
#[derive(Debug, Parser)]
#[command(name = "devmesh", version, about)]
pub struct Cli {
    /// Home directory of the node to talk to [default: ~/.devmesh]
    #[arg(long, global = true, env = "DEVMESH_HOME")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a local service until Ctrl-C (or until stopped with --detach)
    Run(RunArgs),
    /// Start the services of devmesh.toml in dependency order, sharing each
    /// once it is ready; Ctrl-C stops them all (or -d leaves them to the daemon)
    Up(UpArgs),
    /// The services `devmesh up` runs for the devmesh.toml here
    Ps {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// The output of the services `devmesh up` runs for the devmesh.toml here
    Logs(LogsArgs),
    /// Stop the services `devmesh up` runs for the devmesh.toml here
    Down,
    /// Stop sharing a service
    Stop {
        /// The service, as `devmesh run` or `devmesh status` names it
        name: String,
    },
    /// Show where requests go, or change it: pin a provider, require a version, stickiness, retries
    Route(RouteArgs),
    /// This node and every service it knows, with versions, providers and routes
    Status {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Connected peers, their addresses and whether the link is direct or relayed
    Peers {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
        /// Full peer ids, every address and every service (wider than 100 columns)
        #[arg(long)]
        wide: bool,
    },
    /// Join a team: with an invite token, or connect to a peer by multiaddr
    Join(JoinArgs),
    /// Print an invite token for the namespace (making it a secret if it has none)
    Invite {
        /// Namespace [default: this node's]
        #[arg(long)]
        namespace: Option<String>,
        /// Bootstrap multiaddr to put in the token; repeat for several [default: this node's bootstrap peers]
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Make a new secret even though the namespace has one (members
        /// connected now are dropped until they join again)
        #[arg(long)]
        rotate: bool,
        /// Make the new secret although it drops the members connected now
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// The service graph as this node sees it: services, providers,
    /// versions, health, paths to peers (direct or relayed, RTT) and the
    /// requests this node sent (rate, p95)
    Graph {
        /// Print the graph as JSON
        #[arg(long, conflicts_with = "dot")]
        json: bool,
        /// Graphviz DOT, for `dot -Tsvg`
        #[arg(long)]
        dot: bool,
    },
    /// Open the live dashboard (http://devmesh.localhost:<proxy-port>/) in a
    /// browser ($BROWSER, else xdg-open); prints its URL
    Dashboard {
        /// Only print the URL
        #[arg(long)]
        print: bool,
    },
    /// Explain how this node connects: addresses, NAT, relay, peers, and what to fix
    Doctor {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Point <service>.devmesh at this machine in the hosts file, for every
    /// service the daemon knows (shows the change unless --yes)
    Install {
        /// Write the hosts file; without it, only show what would change
        #[arg(long)]
        yes: bool,
        /// Remove the devmesh block from the hosts file
        #[arg(long)]
        remove: bool,
    },
    /// Start or stop the background daemon
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
    /// HTTPS on the front door: the node's local certificate authority
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// The recent requests this node handled, newest first, or one of them
    /// (`devmesh inspect ID`) with the provider's side
    Inspect(InspectArgs),
    /// Send a request of `devmesh inspect` again, optionally edited or to
    /// another provider or version, and show the diff of the responses
    Replay(ReplayArgs),
    /// Listen on 127.0.0.1 for a teammate's TCP service (a database, Redis):
    /// on the provider's port when it is free here, else on --port
    Connect(ConnectArgs),
    /// PostgreSQL services of the mesh: clone, snapshot, restore, status
    Db {
        #[command(subcommand)]
        action: crate::commands::db::DbAction,
    },
    /// The running containers with published TCP ports (Docker Engine API),
    /// as services; --write adds them to devmesh.toml
    FromDocker {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
        /// Add them to devmesh.toml as [services.<name>] with port, version and docker
        #[arg(long)]
        write: bool,
        /// With --write: replace the port, version and docker of entries that exist
        #[arg(long, requires = "write")]
        force: bool,
        /// With --write: write without showing the diff first
        #[arg(long, requires = "write")]
        yes: bool,
    },
    /// Share every running container with a published port, following the
    /// engine (started: shared; stopped: withdrawn) until Ctrl-C
    Share {
        /// Share the containers of the Docker Engine API (required)
        #[arg(long)]
        docker: bool,
        /// Only containers with this label, such as devmesh.share=true
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
    },
    /// VS Code tasks for the services of devmesh.toml (.vscode/tasks.json;
    /// shows it unless --write)
    Vscode {
        /// Write .vscode/tasks.json, keeping its other tasks
        #[arg(long)]
        write: bool,
    },
    /// Shell completions: `devmesh completions bash > ~/.local/share/bash-completion/completions/devmesh`
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Man pages: devmesh.1 and one per command, written into DIR (or
    /// devmesh.1 on stdout without --dir)
    Man {
        /// Folder to write the pages into, such as ~/.local/share/man/man1
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Plugins: `devmesh <name> ...` runs `devmesh-<name>` from PATH
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// `devmesh <name> ...`: the plugin `devmesh-<name>` on PATH
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

/// `devmesh inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// One entry in full (both sides); without it, the list
    pub id: Option<u64>,
    /// Only requests for this service
    #[arg(long, conflicts_with = "id")]
    pub service: Option<String>,
    /// Only responses of this status class: 2xx, 4xx, 5xx …
    #[arg(long, value_name = "CLASS", conflicts_with = "id")]
    pub status: Option<String>,
    /// Keep printing new requests as they come, until Ctrl-C
    #[arg(long, conflicts_with = "id")]
    pub follow: bool,
    /// Most entries listed
    #[arg(long, default_value_t = 100, conflicts_with = "id")]
    pub limit: usize,
    /// Print the entries as JSON (one per line with --follow)
    #[arg(long)]
    pub json: bool,
}

/// `devmesh replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The entry to send again (an id of `devmesh inspect`)
    pub id: u64,
    /// Send it to this provider (a peer id)
    #[arg(long, value_name = "PEER", conflicts_with = "require")]
    pub to_peer: Option<String>,
    /// Send it to a provider whose version satisfies this, such as ^2
    #[arg(long, value_name = "REQ")]
    pub require: Option<String>,
    /// Set a header, replacing one of the same name; repeat for several
    #[arg(long = "set-header", value_name = "K:V")]
    pub set_headers: Vec<String>,
    /// Send this file as the body instead of the captured one
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `devmesh plugin`.
#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// The plugins found on PATH
    List {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `devmesh connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The TCP service
    pub service: String,
    /// Port to listen on when the provider's is taken here [default:
    /// `listen` of [services.<name>] in devmesh.toml]
    #[arg(long)]
    pub port: Option<u16>,
    /// Forget this node's setting for the service
    #[arg(long, conflicts_with = "port")]
    pub remove: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `devmesh run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Service name; its defaults come from [services.<name>] of devmesh.toml
    pub name: String,
    /// Local port the service listens on
    #[arg(long)]
    pub port: Option<u16>,
    /// Semantic version of the service, such as 1.4.2
    #[arg(long = "version", value_name = "SEMVER")]
    pub service_version: Option<String>,
    /// Path prefix the service claims; repeat for several
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Version requirement of this service on another, such as api=^2.1; repeat for several
    #[arg(long = "require", value_name = "SERVICE=REQ")]
    pub requires: Vec<String>,
    #[command(flatten)]
    pub health: HealthFlags,
    /// The backend speaks HTTP/2 (h2c, or h2 over TLS with --scheme https)
    #[arg(long)]
    pub http2: bool,
    /// Share raw TCP (a database, Redis) instead of HTTP: other nodes get
    /// a loopback listener for it
    #[arg(long, conflicts_with_all = ["http2", "routes", "scheme"])]
    pub tcp: bool,
    /// How this node connects to the backend: http, or https for a
    /// backend that serves TLS itself [default: http]
    #[arg(long, value_name = "http|https")]
    pub scheme: Option<String>,
    /// Keep sharing after this command exits; stop with `devmesh stop`
    #[arg(long)]
    pub detach: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `devmesh up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Services to start, with their dependencies [default: all of devmesh.toml]
    pub services: Vec<String>,
    /// Start every dependency here, never take it from a teammate
    #[arg(long)]
    pub local: bool,
    /// Leave the services to the daemon and return once they are up
    /// (`devmesh ps`, `devmesh logs`, `devmesh down`)
    #[arg(short, long)]
    pub detach: bool,
    /// Restart a service when a file below its directory changes
    #[arg(long)]
    pub watch: bool,
}

/// `devmesh logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Only this service [default: every service]
    pub service: Option<String>,
    /// Keep printing new lines until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Lines of each service to print first [default: all the daemon kept]
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// The daemon's own log instead, wherever it goes (whoever started it)
    #[arg(long, conflicts_with = "service")]
    pub daemon: bool,
}

/// `devmesh route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Service to change; without one, shows every service (and --versions/--retry change the node's defaults)
    pub service: Option<String>,
    /// Send every request for the service to this provider (peer id) only
    #[arg(long, value_name = "PEER_ID")]
    pub peer: Option<String>,
    /// Version requirement of this node's requests, such as ^2.1
    #[arg(long, value_name = "REQ")]
    pub require: Option<String>,
    /// When no provider satisfies a requirement: warn (serve anyway, with a warning header) or strict (409)
    #[arg(long, value_parser = ["warn", "strict"])]
    pub versions: Option<String>,
    /// Keep each client on one provider (by cookie)
    #[arg(long, conflicts_with = "no_sticky")]
    pub sticky: bool,
    /// Turn stickiness off
    #[arg(long)]
    pub no_sticky: bool,
    /// Which failed requests go to the next provider: idempotent, all or never
    #[arg(long, value_parser = ["idempotent", "all", "never"])]
    pub retry: Option<String>,
    /// Drop the service's settings (before applying the other flags)
    #[arg(long)]
    pub clear: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `devmesh join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// Invite token (devmesh-invite:...) from `devmesh invite`, or a
    /// multiaddr such as /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    pub target: String,
    /// Namespace to move to, with a multiaddr
    #[arg(long)]
    pub namespace: Option<String>,
    /// File holding the namespace secret (64 hex digits), with --namespace
    #[arg(long, requires = "namespace")]
    pub secret_file: Option<PathBuf>,
    /// With --namespace: join it as an open namespace, without a secret
    /// (any node on the network that names it is a member)
    #[arg(long, requires = "namespace", conflicts_with = "secret_file")]
    pub open: bool,
    /// Seconds to wait for the first member before returning
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Make the local CA (once; reused later) and show how to trust it
    Install {
        /// Also trust it: system store when writable, browsers' NSS
        /// databases when certutil is installed
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Health-check flags of `devmesh run`.
#[derive(Debug, Default, clap::Args)]
pub struct HealthFlags {
    /// Health check: a path on the backend (/healthz), an http:// URL, or tcp
    #[arg(long, value_name = "PATH|URL|tcp")]
    pub health: Option<String>,
    /// Time between health checks, such as 2s or 500ms [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Time one health check may take [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Passing checks in a row that make the service healthy [default: 2]
    #[arg(long, value_name = "N")]
    pub healthy_threshold: Option<u32>,
    /// Failing checks in a row that make the service unhealthy [default: 2]
    #[arg(long, value_name = "N")]
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Start devmeshd in the background if it is not running
    Start,
    /// Stop devmeshd (its services are withdrawn)
    Stop,
    /// Start devmeshd at login and restart it when it dies: writes a
    /// systemd user unit (Linux) or a launchd agent (macOS)
    Install,
    /// Remove what `daemon install` wrote
    Uninstall,
}
