//! The node's site (`Host: devmesh.localhost` on its front door): its URL,
//! found from `status`, and GET requests to its API.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use mesh_control::{Request, Status};

use crate::daemon;

/// The host name of the node's site.
pub const HOST: &str = "devmesh.localhost";

/// The front door of the daemon of `home` (started when it is not
/// running), as an address to connect to: an unspecified IP is loopback.
pub async fn front_door(home: &Path) -> anyhow::Result<SocketAddr> {
    let mut client = daemon::connect_or_start(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    let addr = status.proxy_addr.context(
        "this node runs no front door (a relay node): the dashboard and the graph are on member nodes",
    )?;
    let mut addr: SocketAddr = addr.parse().with_context(|| {
        format!("the daemon reported a front door address {addr:?} that is not ip:port")
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

/// The dashboard's URL for the front door `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{HOST}:{}/", addr.port())
}

/// `GET path_and_query` on the site of the front door `addr`: the body of
/// a 200 answer, or an error with what the node said.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<String> {
    let what = || format!("GET http://{HOST}:{}{path_and_query}", addr.port());
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the front door {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .with_context(what)?;
    tokio::spawn(conn);
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, format!("{HOST}:{}", addr.port()))
        .body(Empty::<bytes::Bytes>::new())
        .with_context(what)?;
    let resp = sender.send_request(req).await.with_context(what)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(what)?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        anyhow::bail!("{} answered {status}: {}", what(), text.trim());
    }
    Ok(text)
}
