//! The provider side of `/devmesh/tcp/1`: each accepted stream names a
//! service of this node; once the peer is an admitted member and the
//! service's version satisfies the hello's requirement, the provider
//! connects to the service's local port, answers, and splices.

use std::sync::Arc;

use mesh_core::{PeerId, Scheme, record::ServiceProtocol};
use tokio::net::TcpStream;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{debug, warn};

use super::{Hello, TCP_PROTOCOL, TCP_VERSION, frames};
use crate::{
    Error, Proxy,
    error::{Chain, TunnelRefusal},
    provider::{read_hello, reply_for},
    tunnel,
    upstream::local,
};

impl Proxy {
    /// Accepts `/devmesh/tcp/1` streams from other nodes until `shutdown`
    /// is cancelled; the splices in flight go on ([`Proxy::drain`] waits
    /// for them, then cuts them, which resets them).
    pub async fn serve_tcp_tunnels(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), Error> {
        self.accept_streams(TCP_PROTOCOL, shutdown, |proxy, peer, stream| {
            proxy.serve_tcp_stream(peer, stream)
        })
        .await
    }

    /// Serves one TCP stream: hello, admission and version, backend,
    /// reply, splice.
    async fn serve_tcp_stream(self: Arc<Self>, peer: PeerId, stream: libp2p::Stream) {
        let mut stream = stream.compat();
        let Some(hello) = read_hello::<Hello>(&mut stream, peer).await else {
            return;
        };
        let backend = self.open_tcp_backend(peer, &hello).await;
        let reply = reply_for(backend.as_ref().map(|(_, port)| (*port, Scheme::Http)));
        if let Err(e) = tunnel::write_frame(&mut stream, &reply).await {
            debug!(%peer, error = %e, "tcp tunnel handshake failed");
            return;
        }
        let tcp = match backend {
            Ok((tcp, _)) => tcp,
            Err(refusal) => {
                warn!(%peer, service = %hello.service, reason = %Chain(&refusal), "refused a tcp tunnel");
                return;
            }
        };
        // The session cannot move to another connection: keep the one it
        // is on (a relayed one, when a hole punch succeeds meanwhile).
        let _hold = self.node.hold_connections(peer);
        splice_and_report(tcp, stream, &hello.service, &peer.to_string()).await;
    }

    /// The local port a hello asks for, connected; or why not.
    async fn open_tcp_backend(
        &self,
        peer: PeerId,
        hello: &Hello,
    ) -> Result<(TcpStream, u16), TunnelRefusal> {
        let admitted = self.wait_for_admission(peer).await;
        if hello.v != TCP_VERSION {
            return Err(TunnelRefusal::Version {
                got: hello.v,
                speaks: TCP_VERSION,
            });
        }
        if !admitted {
            warn!(%peer, service = %hello.service, "refused a tcp tunnel from a peer that is not an admitted member");
            return Err(TunnelRefusal::NotMember { peer });
        }
        let snapshot = self.node.snapshot();
        let (service, local_peer) = (hello.service.clone(), snapshot.local_peer);
        let Some(local) = snapshot.local.get(&hello.service) else {
            return Err(TunnelRefusal::NotProvided {
                service,
                local: local_peer,
            });
        };
        if local.record.protocol != ServiceProtocol::Tcp {
            return Err(TunnelRefusal::NotTcp {
                service,
                local: local_peer,
            });
        }
        if let Some(text) = &hello.require {
            let req =
                semver::VersionReq::parse(text).map_err(|source| TunnelRefusal::BadRequire {
                    text: text.clone(),
                    source,
                })?;
            if !req.matches(&local.record.version) {
                return Err(TunnelRefusal::Unsatisfied {
                    service,
                    version: local.record.version.clone(),
                    require: text.clone(),
                    local: local_peer,
                });
            }
        }
        let port = local.port;
        match local::connect_loopback(port).await {
            Ok(tcp) => Ok((tcp, port)),
            Err(source) => Err(TunnelRefusal::Backend {
                service,
                port,
                source,
            }),
        }
    }
}

/// Splices a TCP connection and a stream in the data phase; on a reset of
/// either side, resets the TCP connection (and the stream, by dropping it
/// unclosed). `service` and `other` name the two ends in the log.
pub(super) async fn splice_and_report<S>(mut tcp: TcpStream, stream: S, service: &str, other: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match frames::splice(&mut tcp, stream).await {
        Ok(moved) => {
            debug!(%service, %other, up = moved.up, down = moved.down, "tcp tunnel closed");
        }
        Err(reset) => {
            debug!(%service, %other, reason = %Chain(&reset), "tcp tunnel reset");
            reset_tcp(&tcp);
        }
    }
}

/// Makes the close of `tcp` send RST instead of FIN (`SO_LINGER` 0).
pub(super) fn reset_tcp(tcp: &TcpStream) {
    if let Err(e) = tcp.set_zero_linger() {
        debug!(error = %e, "setting SO_LINGER 0 to reset a connection");
    }
}
