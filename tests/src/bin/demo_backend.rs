//! A tiny HTTP/WebSocket server for the README demo and the benchmarks.
//! Usage: devmesh-demo-backend [PORT] [NAME] [--h2]
//! With `--h2` it speaks HTTP/2 with prior knowledge (h2c) besides HTTP/1.1.

use std::sync::Arc;

use devmesh_tests::backend::{Mode, serve_mode};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (flags, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let mode = match flags.as_slice() {
        [] => Mode::Http1,
        [f] if f == "--h2" => Mode::Auto,
        other => anyhow::bail!(
            "unknown flags {other:?}; usage: devmesh-demo-backend [PORT] [NAME] [--h2]"
        ),
    };
    let mut args = args.into_iter();
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(3000);
    let name = args.next().unwrap_or_else(|| "hello".to_owned());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on 127.0.0.1:{port}: {e}; pass another port as the first argument"
            )
        })?;
    eprintln!(
        "devmesh-demo-backend {name:?} listening on http://{}/hello",
        listener.local_addr()?
    );
    let shutdown = CancellationToken::new();
    tokio::select! {
        _ = serve_mode(listener, name, mode, Arc::default(), Arc::new(std::sync::atomic::AtomicU16::new(200)), shutdown.clone()) => {}
        _ = tokio::signal::ctrl_c() => shutdown.cancel(),
    }
    Ok(())
}
