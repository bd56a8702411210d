//! The client of the local daemon's front door for its own API
//! (`Host: devmesh.localhost`): the inspector's JSON and event stream. The
//! front door's address comes from the control socket's `status`.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_control::Status;

use crate::{Failure, daemon};

/// The host name of the front door's own API.
const OWN_HOST: &str = "devmesh.localhost";

/// The local daemon's front door.
pub struct Front {
    addr: SocketAddr,
}

impl Front {
    /// The front door of the daemon of `home` (started when not running).
    pub async fn of(home: &Path) -> Result<Front, Failure> {
        let mut client = daemon::connect_or_start(home).await?;
        let status: Status = client.call_as(&mesh_control::Request::Status).await?;
        let addr = status
            .proxy_addr
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .context("this node has no front door (a relay?); inspect requests on a member node")?;
        Ok(Front { addr })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to the front door at {}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{OWN_HOST}:{}", self.addr.port()))
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = sender
            .send_request(req)
            .await
            .context("asking the front door")?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            bail!("{message} (HTTP {status})");
        }
        Ok(resp)
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let body = self
            .send(Method::GET, path, None)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        serde_json::from_slice(&body).context("the front door's answer is not JSON")
    }

    /// `POST path` with a JSON body, as JSON.
    pub async fn post(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let body = self
            .send(Method::POST, path, Some(serde_json::to_vec(value)?))
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        serde_json::from_slice(&body).context("the front door's answer is not JSON")
    }

    /// The events of `GET path` (server-sent events), each `data:` line's
    /// JSON given to `each`, until the stream ends.
    pub async fn events(
        &self,
        path: &str,
        mut each: impl FnMut(serde_json::Value),
    ) -> anyhow::Result<()> {
        let mut body = self.send(Method::GET, path, None).await?.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the event stream")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(json) = line.trim_end().strip_prefix("data:") {
                    let value = serde_json::from_str(json.trim())
                        .map_err(|e| anyhow!("a malformed event: {e}"))?;
                    each(value);
                }
            }
        }
        Ok(())
    }
}
