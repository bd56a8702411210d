//! Connections to upstreams: local backends over TCP (or TLS) and remote
//! providers over tunnel streams, speaking HTTP/1.1 ([`h1`]) or HTTP/2
//! ([`h2`]); [`local`] is the one way to a local backend.
//!
//! HTTP/1.1: a downstream HTTP/1.1 connection sends one request at a time,
//! so each downstream connection (a [`Session`]) keeps the upstream
//! connection it used last and sends its next request there, with no pool
//! lookup per request. When the downstream connection ends, its upstream
//! connection goes back to a shared idle list for the next session.
//!
//! HTTP/2 (services announced with `h2`): one upstream connection per
//! upstream, shared by every session, multiplexes all requests; it is made
//! on first use and again when it closes.

mod h1;
mod h2;
pub mod local;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::{Request, Response};
use hyper::body::Incoming;
use libp2p::PeerId;
use mesh_core::{NodeHandle, Scheme};

use crate::{
    error::UpstreamError,
    metrics::{Metrics, Opened},
    tunnel,
};

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// HTTP/1.1, upgrades included.
    H1,
    /// HTTP/2 with prior knowledge (or ALPN `h2` over TLS).
    H2,
}

impl Proto {
    /// The HTTP version to speak to a backend: HTTP/2 when it speaks it,
    /// except for upgrades (WebSocket), which only HTTP/1.1 carries to a
    /// backend.
    pub fn for_request(h2: bool, upgrading: bool) -> Self {
        if h2 && !upgrading { Self::H2 } else { Self::H1 }
    }
}

/// An upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A backend on a local port.
    Local {
        port: u16,
        scheme: Scheme,
        proto: Proto,
    },
    /// A service of a remote provider node.
    Remote {
        peer: PeerId,
        service: Arc<str>,
        proto: Proto,
    },
}

impl Key {
    fn proto(&self) -> Proto {
        match self {
            Key::Local { proto, .. } | Key::Remote { proto, .. } => *proto,
        }
    }
}

/// A failed send; `request` is returned when nothing of it was sent, so it
/// can go to another upstream.
pub struct SendError {
    pub error: UpstreamError,
    pub request: Option<Request<crate::body::UpBody>>,
}

/// Idle upstream connections shared by all sessions, and how to make new ones.
pub struct Upstreams {
    idle: Mutex<HashMap<Key, Vec<h1::Conn>>>,
    h2: Mutex<HashMap<Key, h2::Slot>>,
    /// The node, for the namespace a tunnel hello names: the current one,
    /// read when the tunnel opens (it changes with `devmesh join`).
    node: NodeHandle,
    control: libp2p_stream::Control,
    /// Counts the tunnel streams opened and their bytes, when set.
    metrics: Option<Arc<Metrics>>,
}

impl Upstreams {
    pub fn new(node: NodeHandle, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            control: node.stream_control(),
            node,
            metrics,
        })
    }

    /// Opens a tunnel stream to `service` on `peer`; `h2` says HTTP/2 will
    /// be spoken on it.
    async fn open_tunnel(
        &self,
        peer: PeerId,
        service: &str,
        h2: bool,
    ) -> Result<(tunnel::TunnelIo, tunnel::Accepted), UpstreamError> {
        let link = tunnel::link_to(&self.node, peer).await?;
        let snapshot = self.node.snapshot();
        let (mut io, accepted) =
            tunnel::open(self.control.clone(), peer, &snapshot.namespace, service, h2).await?;
        io.keep(link);
        if let Some(m) = &self.metrics {
            io.count(m.stream(&peer, Opened::Outbound));
        }
        Ok((io, accepted))
    }
}

/// The upstream side of one downstream connection.
pub struct Session {
    upstreams: Arc<Upstreams>,
    current: Mutex<Option<(Key, h1::Conn)>>,
}

impl Session {
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        Self {
            upstreams,
            current: Mutex::new(None),
        }
    }

    /// Sends `request` to `key`: on the shared connection of an HTTP/2
    /// upstream; for HTTP/1.1 on the connection this session used last when
    /// it goes to the same upstream, else on an idle or new one.
    pub async fn send(
        &self,
        key: Key,
        request: Request<crate::body::UpBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match key.proto() {
            Proto::H2 => self.upstreams.send_h2(&key, request).await,
            Proto::H1 => self.send_h1(key, request).await,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((key, conn)) = self.current.get_mut().ok().and_then(Option::take) {
            self.upstreams.put_idle(key, conn);
        }
    }
}
