//! `devmeshd`: the devmesh node. Runs in the foreground until SIGINT or
//! SIGTERM: config -> tracing -> node -> proxy -> control API -> signals.

mod membership;
mod observe;
mod ports;
mod settings;

use std::{os::unix::fs::PermissionsExt, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use mesh_control::{Server, ServerInfo};
use mesh_core::{Config, Node, NodeHandle, Role};
use mesh_proxy::Proxy;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::{Args, Settings};

fn main() -> ExitCode {
    one_malloc_arena();
    raise_open_files();
    let args = Args::parse();
    // One daemon per home, the first one started: the lock comes before
    // anything else touches the home (identity, sockets, ports).
    let _lock = match lock_home(&args) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("devmeshd: {}", mesh_core::error::Chain(e.as_ref()));
            return ExitCode::FAILURE;
        }
    };
    let mut settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("devmeshd: {}", mesh_core::error::Chain(e.as_ref()));
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings.log, settings.observe.json);
    if settings.listen_defaulted {
        settings.listen = ports::reuse(&settings.home, std::mem::take(&mut settings.listen));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devmeshd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devmeshd: {}", mesh_core::error::Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Makes the home directory (only its owner may enter) and takes its lock.
fn lock_home(args: &Args) -> anyhow::Result<mesh_control::lock::HomeLock> {
    let home = settings::home(args)?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("creating home directory {}", home.display()))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", home.display()))?;
    Ok(mesh_control::lock::HomeLock::acquire(&home)?)
}

/// Keeps glibc's malloc to one arena. By default every thread that allocates
/// under contention gets an arena of its own, and the buffers of a bulk
/// transfer (yamux frames received on one runtime thread, freed on another)
/// fragment them: on 1 GiB uploads through the tunnel the receiving daemon's
/// peak RSS was about 50 MB with the default, 34 MB with one arena, with no
/// loss of throughput measured for bulk transfers or small requests (glibc's
/// per-thread caches serve most small allocations without the arena lock).
/// `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a glibc tunable; it is called first thing in
    // main, before any other thread exists, and has no memory-safety
    // preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Raises the soft limit of open files to the hard one: every front-door
/// connection, backend connection and listener is a file, and a soft limit
/// of 1024 (common for login sessions) would run out before the front
/// door's connection limit answers 503. Left as it is when that fails.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn init_tracing(directives: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.home)
        .with_context(|| format!("creating home directory {}", settings.home.display()))?;
    std::fs::set_permissions(&settings.home, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", settings.home.display()))?;
    let keypair = mesh_core::identity::load_or_create(&settings.home.join("identity.key"))?;

    let relay = settings.role == Role::Relay;
    // A relay serves no services and runs no front door.
    let proxy_listener = if relay {
        None
    } else {
        Some(tokio::net::TcpListener::bind(settings.proxy).await.with_context(|| {
            format!(
                "cannot open the proxy on {}: another devmeshd may be running; pick another address with --proxy or DEVMESH_PROXY",
                settings.proxy
            )
        })?)
    };
    let proxy_addr = proxy_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let socket_path = settings.home.join(mesh_control::SOCKET_NAME);
    let control_listener = Server::bind(&socket_path)
        .with_context(|| format!("opening the control socket {}", socket_path.display()))?;

    let namespace = membership::establish(
        &settings.home,
        &settings.config_path,
        settings.membership.clone(),
    )?;
    let mut config = Config::new(keypair, namespace.clone());
    config.role = settings.role;
    config.listen = settings.listen.clone();
    config.bootstrap = settings.bootstrap.clone();
    config.external = settings.external.clone();
    config.mdns = settings.mdns;
    config.links = settings.links;
    config.agent = format!("devmeshd/{}", env!("CARGO_PKG_VERSION"));
    let (node, node_task) = Node::spawn(config)?;
    if settings.listen_defaulted {
        tokio::spawn(ports::remember(settings.home.clone(), node.clone()));
    }
    info!(
        peer_id = %node.peer_id(),
        role = ?settings.role,
        namespace = %namespace.name(),
        secret = namespace.has_secret(),
        proxy = ?proxy_addr,
        home = %settings.home.display(),
        mdns = settings.mdns,
        "devmeshd started"
    );

    let shutdown = CancellationToken::new();
    let routing = mesh_proxy::policy::Routing::new(settings.routing);
    let mut tasks = ServerTasks::new();
    let proxy = match proxy_listener {
        Some(listener) => Some(start_proxy(
            &settings,
            &node,
            routing.clone(),
            listener,
            &shutdown,
            &mut tasks,
            settings.observe.start(&node, &shutdown).await?,
        )?),
        None => None,
    };
    let server = Server::new(
        node.clone(),
        ServerInfo {
            proxy_addr,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            home: settings.home.clone(),
            config_path: settings.config_path.clone(),
            routing: proxy_addr.is_some().then(|| routing.clone()),
            tcp: proxy.as_ref().map(|p| p.tcp_listeners()),
        },
        shutdown.clone(),
    );
    // What the user set up before the last stop: detached shares, joins.
    server.restore().await;
    let projects = server.clone();
    tasks.spawn(async move {
        server.serve(control_listener).await;
        Ok(())
    });
    if relay {
        announce_relay(&node).await;
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = sigterm.recv() => info!("SIGTERM received"),
        () = socket_removed(&socket_path) => warn!(
            socket = %socket_path.display(),
            "the control socket was removed (its home deleted?): nothing can reach this daemon any more; stopping"
        ),
        _ = shutdown.cancelled() => {}
        Some(result) = tasks.join_next() => {
            result.context("a server task panicked")??;
        }
    }
    // Stop accepting: the front door's listener and the control socket
    // close, tunnel streams are no longer accepted.
    shutdown.cancel();
    let _ = std::fs::remove_file(&socket_path);
    // The services of `devmesh up` stop meanwhile, each within its own
    // `stop_timeout`, not the grace: none is left running.
    tokio::join!(
        drain(proxy.as_deref(), &mut tasks, settings.shutdown_grace),
        projects.stop_projects(),
    );
    // Only now, with nothing in flight that needs the mesh, withdraw the
    // records and leave.
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), node_task).await;
    info!("devmeshd stopped");
    Ok(())
}

/// Returns once the control socket at `path` is gone: its home was
/// deleted or the file removed, so no CLI can reach this daemon again and
/// it would run orphaned.
async fn socket_removed(path: &std::path::Path) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        if !path.exists() {
            return;
        }
    }
}

/// Starts the front door on `listener`, the tunnel server and the health
/// checks of local services, as tasks that end when `shutdown` is cancelled.
fn start_proxy(
    settings: &Settings,
    node: &NodeHandle,
    routing: Arc<mesh_proxy::policy::Routing>,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    tasks: &mut ServerTasks,
    observe: mesh_proxy::Observe,
) -> anyhow::Result<Arc<Proxy>> {
    // HTTPS on the same port, with certificates from the CA that
    // `devmesh cert install` makes (picked up whenever it appears).
    let resolver = mesh_tls::Resolver::new(mesh_tls::Paths::in_home(&settings.home));
    let tls = mesh_tls::server_config(resolver)?;
    let proxy = Proxy::observed(node.clone(), routing, Some(tls), observe);
    proxy.set_max_connections(settings.max_connections);
    tasks.spawn(proxy.clone().serve_tunnels(shutdown.clone()));
    tasks.spawn(proxy.clone().serve_tcp_tunnels(shutdown.clone()));
    tasks.spawn(proxy.clone().serve_inspect(shutdown.clone()));
    tasks.spawn(proxy.clone().serve_tcp_listeners(shutdown.clone()));
    let (checked, stop_checks) = (node.clone(), shutdown.clone());
    tasks.spawn(async move {
        mesh_proxy::health::run(checked, stop_checks).await;
        Ok(())
    });
    tasks.spawn(proxy.clone().serve(listener, shutdown.clone()));
    Ok(proxy)
}

/// The daemon's server tasks: front door, tunnels, health checks, control.
type ServerTasks = tokio::task::JoinSet<Result<(), mesh_proxy::Error>>;

/// Lets what is in flight finish, within `grace`: front-door requests and
/// upgraded connections, tunnel streams this node serves, and control
/// requests (whose connections then close, ending `devmesh run` shares).
/// What is left after the grace is cut.
async fn drain(proxy: Option<&Proxy>, tasks: &mut ServerTasks, grace: Duration) {
    info!(?grace, "draining connections in flight");
    let server_tasks = async {
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Err(e)) => warn!(
                    error = %mesh_core::error::Chain(&e),
                    "a server task failed while stopping"
                ),
                Err(e) if e.is_panic() => {
                    warn!(error = %e, "a server task panicked while stopping")
                }
                _ => {}
            }
        }
    };
    // The proxy bounds its own drain by `grace` and cuts what is left.
    let connections = async {
        if let Some(proxy) = proxy {
            proxy.drain(grace).await;
        }
    };
    let servers = async {
        if tokio::time::timeout(grace, server_tasks).await.is_err() {
            warn!(
                ?grace,
                "control connections still open after the grace period; closing them"
            );
        }
    };
    tokio::join!(servers, connections);
    tasks.abort_all();
}

/// Prints the addresses a team gives its members, once the node listens.
async fn announce_relay(node: &NodeHandle) {
    let mut watch = node.watch();
    let wait = async {
        loop {
            if !watch.borrow_and_update().external_addrs.is_empty() {
                return;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .is_err()
    {
        println!(
            "devmesh relay running as {}, but with no public address yet: pass --external /ip4/<public-ip>/tcp/4001",
            node.peer_id()
        );
        return;
    }
    let snapshot = node.snapshot();
    println!("devmesh relay ready. Members use it as their bootstrap address:");
    for addr in &snapshot.external_addrs {
        println!("  {addr}/p2p/{}", snapshot.local_peer);
    }
    println!(
        "Make an invite with `devmesh invite --bootstrap <address>` on a member, or `devmesh invite --namespace <team>` here."
    );
}
