//! `devmeshd`: the devmesh node. Runs in the foreground until SIGINT or
//! SIGTERM: config -> tracing -> node -> proxy -> control API -> signals.

mod settings;

use std::{os::unix::fs::PermissionsExt, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use mesh_control::{Server, ServerInfo};
use mesh_core::{Config, Node};
use mesh_proxy::Proxy;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::settings::{Args, Settings};

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("devmeshd: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings.log);
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
            eprintln!("devmeshd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(directives: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.home)
        .with_context(|| format!("creating home directory {}", settings.home.display()))?;
    std::fs::set_permissions(&settings.home, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", settings.home.display()))?;
    let keypair = mesh_core::identity::load_or_create(&settings.home.join("identity.key"))?;

    let proxy_listener = tokio::net::TcpListener::bind(settings.proxy).await.with_context(|| {
        format!(
            "cannot open the proxy on {}: another devmeshd may be running; pick another address with --proxy or DEVMESH_PROXY",
            settings.proxy
        )
    })?;
    let proxy_addr = proxy_listener.local_addr()?;
    let socket_path = settings.home.join(mesh_control::SOCKET_NAME);
    let control_listener = Server::bind(&socket_path)
        .with_context(|| format!("opening the control socket {}", socket_path.display()))?;

    let mut config = Config::new(keypair, settings.namespace.clone());
    config.listen = settings.listen.clone();
    config.bootstrap = settings.bootstrap.clone();
    config.mdns = settings.mdns;
    config.agent = format!("devmeshd/{}", env!("CARGO_PKG_VERSION"));
    let (node, node_task) = Node::spawn(config)?;
    info!(
        peer_id = %node.peer_id(),
        namespace = %settings.namespace,
        proxy = %proxy_addr,
        home = %settings.home.display(),
        mdns = settings.mdns,
        "devmeshd started"
    );

    let shutdown = CancellationToken::new();
    let proxy = Proxy::new(node.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(proxy.clone().serve_tunnels(shutdown.clone()));
    tasks.spawn(proxy.serve(proxy_listener, shutdown.clone()));
    let server = Server::new(
        node.clone(),
        ServerInfo {
            proxy_addr,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        shutdown.clone(),
    );
    tasks.spawn(async move {
        server.serve(control_listener).await;
        Ok(())
    });

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = sigterm.recv() => info!("SIGTERM received"),
        _ = shutdown.cancelled() => {}
        Some(result) = tasks.join_next() => {
            result.context("a server task panicked")??;
        }
    }
    shutdown.cancel();
    let _ = std::fs::remove_file(&socket_path);
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), node_task).await;
    tasks.abort_all();
    info!("devmeshd stopped");
    Ok(())
}
