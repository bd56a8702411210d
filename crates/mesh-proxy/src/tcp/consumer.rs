//! The consumer side: the loopback listeners of remote TCP services, and
//! each accepted connection's provider, chosen by the HTTP rules.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use mesh_core::PeerId;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken};
use tracing::{debug, info, warn};

use super::{
    listeners,
    provider::{reset_tcp, splice_and_report},
};
use crate::{
    Error, Proxy,
    choose::{self, Target},
    error::{Chain, TcpRefusal, TunnelError},
    upstream::local,
};

/// An open listener: its port, and the token that closes it.
struct Open {
    port: u16,
    stop: CancellationToken,
}

/// Where an accepted connection goes.
enum Upstream {
    /// A stream to a provider node, in the data phase, and the link it
    /// keeps in use.
    Remote(libp2p::Stream, mesh_core::holds::LinkUse),
    /// A provider on this machine.
    Local(TcpStream),
}

impl Proxy {
    /// Keeps a loopback listener for every remote TCP service (and every
    /// service connected with `devmesh connect`), following the node's
    /// view and the settings, until `shutdown` is cancelled; then the
    /// listeners close, and the connections in flight go on
    /// ([`Proxy::drain`] waits for them).
    pub async fn serve_tcp_listeners(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut watch = self.node.watch();
        let mut open: BTreeMap<String, Open> = BTreeMap::new();
        let mut running = JoinSet::new();
        loop {
            let (configured, generation) = self.tcp.configured();
            let wanted = listeners::wanted(&watch.borrow_and_update(), &configured);
            let bound = open.iter().map(|(s, o)| (s.clone(), o.port)).collect();
            let plan = listeners::plan(&bound, &wanted);
            for service in plan.close {
                if let Some(o) = open.remove(&service) {
                    info!(%service, port = o.port, "closing the tcp listener");
                    o.stop.cancel();
                }
            }
            self.tcp.retain(&wanted);
            for (service, ports) in plan.open {
                let Some((listener, port)) = self.bind_first(&service, &ports).await else {
                    continue;
                };
                let stop = shutdown.child_token();
                running.spawn(
                    self.clone()
                        .accept_tcp(service.clone(), listener, stop.clone()),
                );
                open.insert(service, Open { port, stop });
            }
            self.tcp.applied(generation);
            while running.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = watch.changed() => if changed.is_err() { break },
                () = self.tcp.changed() => {}
            }
        }
        for o in open.values() {
            o.stop.cancel();
        }
        while running.join_next().await.is_some() {}
        debug!("tcp listeners closed");
        Ok(())
    }

    /// Binds 127.0.0.1 on the first of `ports` that is free; the state
    /// says where, or why none.
    async fn bind_first(&self, service: &str, ports: &[u16]) -> Option<(TcpListener, u16)> {
        let mut taken = Vec::new();
        for &port in ports {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    info!(%service, %addr, "listening for a tcp service");
                    self.tcp.set_listen(service, Ok(addr));
                    return Some((listener, port));
                }
                Err(e) => taken.push(format!("{addr}: {e}")),
            }
        }
        let problem = format!(
            "no listener: {}; pick a free port with `devmesh connect {service} --port <port>`",
            taken.join("; ")
        );
        let before = self.tcp.states().remove(service).and_then(|s| s.problem);
        if before.as_deref() != Some(problem.as_str()) {
            warn!(%service, %problem, "cannot listen for a tcp service");
        }
        self.tcp.set_listen(service, Err(problem));
        None
    }

    /// Accepts connections on `listener` until `stop`, each served as a
    /// tracked task.
    async fn accept_tcp(
        self: Arc<Self>,
        service: String,
        listener: TcpListener,
        stop: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, _)) => {
                    let proxy = self.clone();
                    let service = service.clone();
                    self.tasks
                        .spawn(async move { proxy.serve_tcp_client(service, client).await });
                }
                Err(e) => {
                    warn!(%service, error = %e, "accepting a tcp connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One accepted connection: a provider, then the splice; or a reset
    /// at once, with the reason in the log and the listener's state.
    async fn serve_tcp_client(self: Arc<Self>, service: String, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        match self.tcp_upstream(&service).await {
            Ok(Upstream::Remote(stream, link)) => {
                let peer = link.peer();
                self.tcp.set_refusal(&service, None);
                // Keeps the connection the session is on, relayed or not.
                let _hold = self.node.hold_connections(peer);
                splice_and_report(client, stream.compat(), &service, &peer.to_string()).await;
            }
            Ok(Upstream::Local(mut backend)) => {
                self.tcp.set_refusal(&service, None);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    debug!(%service, error = %e, "local tcp connection ended with an error");
                    reset_tcp(&client);
                }
            }
            Err(refusal) => {
                let reason = Chain(&refusal).to_string();
                warn!(%service, %reason, "refused a tcp connection");
                self.tcp.set_refusal(&service, Some(reason));
                reset_tcp(&client);
            }
        }
    }

    /// The first provider of `service` that accepts a stream, in the order
    /// of the HTTP rules; each failure ejects its provider for a while.
    async fn tcp_upstream(&self, service: &str) -> Result<Upstream, TcpRefusal> {
        let snapshot = self.node.snapshot();
        let (chosen, requirements) = listeners::choice(&snapshot, service, &self.routing);
        let choice = chosen.map_err(|refusal| TcpRefusal::NoRoute {
            reason: refusal.describe(service),
        })?;
        if choice.unmet {
            warn!(%service, requirement = %choose::requirements_text(&requirements), "no provider satisfies the version requirement; using the best available");
        }
        let now = Instant::now();
        let mut attempts = Vec::new();
        for candidate in &choice.candidates {
            match candidate.target {
                Target::Local { port, .. } => match local::connect_loopback(port).await {
                    Ok(tcp) => return Ok(Upstream::Local(tcp)),
                    Err(e) => attempts.push(format!("local port {port}: {}", Chain(&e))),
                },
                Target::Remote { peer, .. } => {
                    let require = (candidate.satisfies && !requirements.is_empty()).then(|| {
                        let reqs: Vec<String> =
                            requirements.iter().map(|r| r.req.to_string()).collect();
                        reqs.join(", ")
                    });
                    match self
                        .open_tcp(peer, &snapshot.namespace, service, require)
                        .await
                    {
                        Ok((stream, link)) => {
                            self.routing.succeeded(service, &peer);
                            return Ok(Upstream::Remote(stream, link));
                        }
                        Err(e) => {
                            let backoff = self.routing.failed(service, peer, now);
                            warn!(%service, provider = %peer, error = %Chain(&e), ejected_for = ?backoff, "opening a tcp tunnel failed");
                            attempts.push(Chain(&e).to_string());
                        }
                    }
                }
            }
        }
        Err(TcpRefusal::AllFailed {
            service: service.to_owned(),
            attempts: attempts.join("; "),
        })
    }

    /// Opens a TCP stream to `peer` (attempts that fail are made again as
    /// [`crate::tunnel::retry_after`] says).
    async fn open_tcp(
        &self,
        peer: PeerId,
        namespace: &str,
        service: &str,
        require: Option<String>,
    ) -> Result<(libp2p::Stream, mesh_core::holds::LinkUse), TunnelError> {
        let link = crate::tunnel::link_to(&self.node, peer).await?;
        let control = self.node.stream_control();
        let stream = super::open(control, peer, namespace, service, require).await?;
        Ok((stream, link))
    }
}
