//! The provider side: tunnel streams from other nodes of the namespace.
//! Each names a service in its hello; the provider connects to that
//! service's local backend (the TLS handshake included, for https) and
//! answers, then splices the stream to the backend connection.

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt as _;
use libp2p::StreamProtocol;
use mesh_core::{PeerId, Scheme, admission::PeerKind, record::ServiceProtocol};
use tokio_util::{
    compat::{Compat, FuturesAsyncReadCompatExt},
    sync::CancellationToken,
};
use tracing::{debug, warn};

use crate::{
    Error, MAX_TUNNEL_STREAMS, MAX_TUNNEL_STREAMS_PER_PEER, Proxy,
    activity::{Activity, Side},
    backend::Alpn,
    error::{Chain, TunnelRefusal},
    forward,
    inspect::{Inspector, TunnelCapture, sniff::Ends},
    metrics::Opened,
    streams::Limit,
    trace::TunnelTrace,
    tunnel,
    upstream::local::{self, LocalIo},
};

/// Buffer of each direction of a tunnel splice: large enough that bulk
/// transfers fill whole Noise frames.
const SPLICE_BUFFER: usize = 256 * 1024;
/// How long a tunnel waits for its peer's admission handshake to finish.
const ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// An accepted tunnel's backend: the connection, its port and scheme.
type Backend = (LocalIo, u16, Scheme);

impl Proxy {
    /// Accepts tunnel streams from other nodes until `shutdown` is
    /// cancelled; then the protocol is no longer served, and the streams in
    /// flight go on ([`Proxy::drain`] waits for them).
    pub async fn serve_tunnels(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        self.accept_streams(tunnel::HTTP_PROTOCOL, shutdown, |proxy, peer, stream| {
            proxy.serve_tunnel(peer, stream)
        })
        .await
    }

    /// Accepts streams of `protocol` until `shutdown` is cancelled, each
    /// served by `serve` as a tracked task; streams beyond
    /// [`MAX_TUNNEL_STREAMS`] in all or [`MAX_TUNNEL_STREAMS_PER_PEER`]
    /// from one peer (of every protocol together) are dropped.
    pub(crate) async fn accept_streams<F, Fut>(
        self: Arc<Self>,
        protocol: StreamProtocol,
        shutdown: CancellationToken,
        serve: F,
    ) -> Result<(), Error>
    where
        F: Fn(Arc<Self>, PeerId, libp2p::Stream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut incoming = self
            .node
            .stream_control()
            .accept(protocol.clone())
            .map_err(|_| Error::AlreadyServing)?;
        loop {
            let (peer, stream) = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = incoming.next() => match next {
                    Some(pair) => pair,
                    None => break,
                },
            };
            let permit = match self.tunnel_streams.admit(peer) {
                Ok(permit) => permit,
                Err(refused) => {
                    if refused.first {
                        let (limit, what) = match refused.limit {
                            Limit::All => (MAX_TUNNEL_STREAMS, "of all peers"),
                            Limit::Peer => (MAX_TUNNEL_STREAMS_PER_PEER, "of this peer"),
                        };
                        warn!(%peer, %protocol, limit, "{limit} tunnel streams {what} are open; dropping new ones until one ends");
                    }
                    continue;
                }
            };
            // The consumer's link to this node stays while the tunnel does
            // (a bounded mesh trims only links no tunnel uses).
            let link = self.node.use_link(peer);
            let served = serve(self.clone(), peer, stream);
            self.tasks.spawn(async move {
                served.await;
                drop((permit, link));
            });
        }
        drop(incoming);
        debug!(%protocol, "no longer accepting tunnel streams");
        Ok(())
    }

    /// Whether `peer` is an admitted member, waiting a little while its
    /// admission handshake is still running (a tunnel can arrive first).
    pub(crate) async fn wait_for_admission(&self, peer: PeerId) -> bool {
        let mut watch = self.node.watch();
        let check = |s: &mesh_core::Snapshot| match s.peers.get(&peer).map(|l| l.kind) {
            Some(PeerKind::Member) => Some(true),
            Some(PeerKind::Pending) => None,
            _ => Some(false),
        };
        let wait = async {
            loop {
                if let Some(ok) = check(&watch.borrow_and_update()) {
                    return ok;
                }
                if watch.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(ADMISSION_WAIT, wait)
            .await
            .unwrap_or(false)
    }

    /// Serves one tunnel stream: hello, backend, reply, splice.
    async fn serve_tunnel(self: Arc<Self>, peer: PeerId, stream: libp2p::Stream) {
        let mut stream = stream.compat();
        let Some(hello) = read_hello::<tunnel::Hello>(&mut stream, peer).await else {
            return;
        };
        // The TLS handshake with an https backend comes before the reply,
        // so that its failure is reported to the consumer.
        let backend = self.open_backend(peer, &hello).await;
        if let Err(e) = tunnel::write_frame(&mut stream, &reply(&backend)).await {
            debug!(%peer, error = %e, "tunnel handshake failed");
            return;
        }
        let mut io = match backend {
            Ok((io, _, _)) => io,
            Err(refusal) => {
                warn!(%peer, service = %hello.service, reason = %Chain(&refusal), "refused a tunnel");
                return;
            }
        };
        // From here on the stream is the backend connection: HTTP/1.1 from
        // the consumer, upgrades included, or HTTP/2, passes through
        // untouched (through the TLS session of an https backend).
        let counters = (self.observe.metrics.as_ref()).map(|m| m.stream(&peer, Opened::Inbound));
        // HTTP/2 tunnels are not sniffed: their server spans are not recorded.
        let trace = (self.observe.exporter.clone())
            .filter(|_| !hello.h2)
            .map(|e| TunnelTrace::new(hello.service.clone(), peer.to_string(), e));
        let capture = (self.observe.inspector.clone())
            .filter(|_| !hello.h2)
            .map(|inspector| self.tunnel_capture(peer, &hello.service, inspector));
        let activity = Activity::observed(counters, trace, capture);
        let (mut consumer, mut backend) = (
            activity.count(Side::Consumer, &mut stream),
            activity.count(Side::Backend, &mut io),
        );
        let splice = tokio::io::copy_bidirectional_with_sizes(
            &mut consumer,
            &mut backend,
            SPLICE_BUFFER,
            SPLICE_BUFFER,
        );
        // At shutdown a tunnel the consumer keeps open between requests
        // closes once its last response is done.
        let idle_when_closing = async {
            self.closing.cancelled().await;
            activity.until_idle().await;
        };
        tokio::select! {
            spliced = splice => match spliced {
                Ok((up, down)) => debug!(%peer, service = %hello.service, up, down, "tunnel closed"),
                Err(e) => {
                    debug!(%peer, service = %hello.service, error = %e, "tunnel ended with an error")
                }
            },
            () = idle_when_closing => {
                debug!(%peer, service = %hello.service, "closed an idle tunnel at shutdown");
            }
        }
        activity.closed();
    }

    /// What the inspector captures of a tunnel for `service` from `peer`.
    fn tunnel_capture(
        &self,
        peer: PeerId,
        service: &str,
        inspector: Arc<Inspector>,
    ) -> TunnelCapture {
        let snapshot = self.node.snapshot();
        let ends = Ends {
            service: service.to_owned(),
            version: (snapshot.local.get(service))
                .map(|l| l.record.version.to_string())
                .unwrap_or_default(),
            provider: snapshot.local_peer.to_string(),
            consumer: peer.to_string(),
            secrets: inspector.secrets(),
        };
        TunnelCapture::new(ends, inspector)
    }

    /// The backend a hello asks for, connected; or why the tunnel is refused.
    async fn open_backend(
        &self,
        peer: PeerId,
        hello: &tunnel::Hello,
    ) -> Result<Backend, TunnelRefusal> {
        let admitted = self.wait_for_admission(peer).await;
        let snapshot = self.node.snapshot();
        if hello.v != tunnel::TUNNEL_VERSION {
            return Err(TunnelRefusal::Version {
                got: hello.v,
                speaks: tunnel::TUNNEL_VERSION,
            });
        }
        if !admitted {
            warn!(%peer, service = %hello.service, "refused a tunnel from a peer that is not an admitted member");
            return Err(TunnelRefusal::NotMember { peer });
        }
        let service = hello.service.clone();
        let local_peer = snapshot.local_peer;
        let Some(local) = snapshot.local.get(&hello.service) else {
            return Err(TunnelRefusal::NotProvided {
                service,
                local: local_peer,
            });
        };
        if local.record.protocol == ServiceProtocol::Tcp {
            return Err(TunnelRefusal::TcpOverHttp {
                service,
                local: local_peer,
            });
        }
        if hello.h2 && !local.record.h2 {
            return Err(TunnelRefusal::NoH2 {
                service,
                local: local_peer,
            });
        }
        let alpn = if hello.h2 { Alpn::H2 } else { Alpn::Http1 };
        let (port, scheme) = (local.port, local.scheme);
        match local::connect(port, scheme, alpn).await {
            Ok(io) => Ok((io, port, scheme)),
            Err(source) => Err(TunnelRefusal::Backend {
                service,
                port,
                source,
            }),
        }
    }
}

/// Reads the hello that opens an accepted stream, within the handshake
/// timeout; a malformed or missing one is logged and `None`.
pub(crate) async fn read_hello<T: for<'de> serde::Deserialize<'de>>(
    stream: &mut Compat<libp2p::Stream>,
    peer: PeerId,
) -> Option<T> {
    let read = tokio::time::timeout(tunnel::HANDSHAKE_TIMEOUT, tunnel::read_frame(stream));
    match read.await {
        Ok(Ok(hello)) => Some(hello),
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "dropping tunnel stream with a malformed header");
            None
        }
        Err(_) => {
            warn!(%peer, "dropping tunnel stream: no header within the handshake timeout");
            None
        }
    }
}

/// The provider's answer to a hello, for the backend it opened or the
/// refusal.
fn reply(backend: &Result<Backend, TunnelRefusal>) -> tunnel::HelloReply {
    reply_for(backend.as_ref().map(|(_, port, scheme)| (*port, *scheme)))
}

/// [`reply`] of a backend on `port` serving `scheme`, or of a refusal (its
/// chain is the reason the consumer reads).
pub(crate) fn reply_for(accepted: Result<(u16, Scheme), &TunnelRefusal>) -> tunnel::HelloReply {
    match accepted {
        Ok((port, scheme)) => tunnel::HelloReply {
            ok: true,
            error: None,
            host: Some(forward::backend_authority(port)),
            scheme: (scheme == Scheme::Https).then_some(Scheme::Https),
        },
        Err(refusal) => tunnel::HelloReply {
            ok: false,
            error: Some(Chain(refusal).to_string()),
            host: None,
            scheme: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_the_backend_host_and_tls_or_the_refusal() {
        let r = reply_for(Ok((3000, Scheme::Http)));
        assert!(r.ok);
        assert_eq!(r.host.as_deref(), Some("localhost:3000"));
        assert_eq!(r.scheme, None, "http is the default, not sent");
        let r = reply_for(Ok((8443, Scheme::Https)));
        assert_eq!(r.scheme, Some(Scheme::Https));

        let refusal = TunnelRefusal::Backend {
            service: "api".into(),
            port: 3000,
            source: crate::error::UpstreamError::NoH2OverTls,
        };
        let r = reply_for(Err(&refusal));
        assert!(!r.ok);
        assert_eq!(r.host, None);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "the backend of api on port 3000: the backend chose HTTP/1.1 over TLS, but the service is shared with --http2; share it without --http2"
            )
        );
        let unreachable = TunnelRefusal::Backend {
            service: "api".into(),
            port: 3000,
            source: crate::error::UpstreamError::Unreachable { attempts: vec![] },
        };
        assert!(
            Chain(&unreachable)
                .to_string()
                .starts_with("the backend of api on port 3000 is unreachable")
        );
    }
}
