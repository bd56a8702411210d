//! A tiny HTTP/WebSocket server for the README demo and the benchmarks.
//! Usage: devmesh-demo-backend [PORT] [NAME]

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
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
        _ = devmesh_tests::backend::serve(listener, name, shutdown.clone()) => {}
        _ = tokio::signal::ctrl_c() => shutdown.cancel(),
    }
    Ok(())
}
