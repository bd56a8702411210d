//! The local control API between the `devmesh` CLI and `devmeshd`.
//!
//! The daemon listens on a Unix socket in its home directory (mode 0600, in
//! a 0700 directory: only the owner can open it). Each message is one line
//! of JSON: the CLI sends a [`Request`], the daemon answers with a
//! [`Reply`]. A `run` request with `hold: true` keeps its registration only
//! while the connection stays open, so a `devmesh run` that ends in any way
//! (Ctrl-C, SIGKILL) withdraws its service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_control::ControlError> {
//! let mut client = mesh_control::Client::connect(std::path::Path::new("/home/me/.devmesh/devmeshd.sock")).await?;
//! let status: mesh_control::Status = client.call_as(&mesh_control::Request::Status).await?;
//! println!("{}", status.peer_id);
//! # Ok(()) }
//! ```

mod server;

use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

pub use server::{Server, ServerInfo};

/// The default home directory of a node, `~/.devmesh`; `None` without `HOME`.
pub fn default_home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".devmesh"))
}

/// File name of the control socket inside the daemon's home.
pub const SOCKET_NAME: &str = "devmeshd.sock";
/// Longest message line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Node identity, addresses and every known service.
    Status,
    /// Connected peers.
    Peers,
    /// Provide a local service.
    Run {
        service: ServiceSpec,
        /// Withdraw the service when this connection closes.
        hold: bool,
    },
    /// Stop providing a service.
    Stop { name: String },
    /// Connect to a peer.
    Join { addr: String },
    /// Stop the daemon.
    Shutdown,
}

/// A service to provide from a local port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub port: u16,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub namespace: String,
    pub listen_addrs: Vec<String>,
    pub proxy_addr: String,
    pub daemon_version: String,
    pub services: Vec<ServiceStatus>,
}

/// One provider of one service, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: String,
    pub provider: String,
    /// `local` or `remote`.
    pub route: String,
    /// For remote providers: `direct`, `relayed` or `not-connected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// For local providers: the backend port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: String,
    pub health: String,
    /// For remote providers: milliseconds until the record expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// URL to open through this node's proxy.
    pub url: String,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    pub addresses: Vec<String>,
    /// `direct` or `relayed`.
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub services: Vec<String>,
}

/// Answer to [`Request::Run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub version: String,
    pub url: String,
}

/// Answer to [`Request::Join`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResult {
    pub peer_id: String,
}

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("devmeshd closed the control connection")]
    Closed,
    #[error("unreadable answer from devmeshd: {0}")]
    Protocol(String),
    /// The daemon refused the request; the message says why.
    #[error("{0}")]
    Refused(String),
}

/// A connection to the daemon's control socket.
pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        Ok(Self {
            stream: BufReader::new(UnixStream::connect(path).await?),
        })
    }

    /// Sends a request and returns the daemon's result.
    pub async fn call(&mut self, request: &Request) -> Result<serde_json::Value, ControlError> {
        write_line(self.stream.get_mut(), request).await?;
        let reply: Reply = read_line(&mut self.stream)
            .await?
            .ok_or(ControlError::Closed)?;
        if reply.ok {
            Ok(reply.result)
        } else {
            Err(ControlError::Refused(
                reply.error.unwrap_or_else(|| "request failed".into()),
            ))
        }
    }

    /// Sends a request and decodes the result as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ControlError> {
        let value = self.call(request).await?;
        serde_json::from_value(value).map_err(|e| ControlError::Protocol(e.to_string()))
    }

    /// Waits until the daemon closes the connection.
    pub async fn closed(&mut self) {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match self.stream.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Writes one JSON line.
pub async fn write_line<T: Serialize>(
    stream: &mut UnixStream,
    value: &T,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    Ok(())
}

/// Reads one JSON line; `None` at end of stream.
pub async fn read_line<T: DeserializeOwned>(
    stream: &mut BufReader<UnixStream>,
) -> Result<Option<T>, ControlError> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(ControlError::Protocol(format!(
            "message over {MAX_LINE} bytes"
        )));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| ControlError::Protocol(e.to_string()))
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_stable() {
        let r = Request::Run {
            service: ServiceSpec {
                name: "api".into(),
                port: 3000,
                version: "1.4.2".into(),
                routes: vec![],
                tags: vec![],
            },
            hold: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cmd":"run","service":{"name":"api","port":3000,"version":"1.4.2"},"hold":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
    }
}
