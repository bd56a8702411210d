//! The provider side of an inspected request, over `/devmesh/inspect/1`:
//! [`Proxy::serve_inspect`] answers members' questions from this node's
//! inspector; [`Proxy::provider_side`] asks a provider for its capture of
//! a trace, within [`ASK_TIMEOUT`].

use std::{sync::Arc, time::Duration};

use mesh_core::PeerId;
use tokio_util::{compat::FuturesAsyncReadCompatExt as _, sync::CancellationToken};
use tracing::{debug, warn};

use super::{
    Side,
    wire::{self, Answer, Ask, WireError},
};
use crate::{Chain, Error, Proxy};

/// How long a caller waits for a provider's answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the provider's side of a request is not shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderSideError {
    #[error("no answer from {peer} within {after:?}")]
    TimedOut { peer: PeerId, after: Duration },
    #[error("opening an inspect stream to {peer}")]
    Open {
        peer: PeerId,
        #[source]
        source: libp2p_stream::OpenStreamError,
    },
    #[error("asking {peer}")]
    Wire {
        peer: PeerId,
        #[source]
        source: WireError,
    },
    #[error("{peer} sent a malformed answer")]
    Malformed { peer: PeerId },
    #[error("{peer}: {reason}")]
    Missing { peer: PeerId, reason: String },
}

impl Proxy {
    /// Answers `/devmesh/inspect/1` questions of admitted members until
    /// `shutdown` is cancelled.
    pub async fn serve_inspect(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        self.accept_streams(wire::PROTOCOL, shutdown, |proxy, peer, stream| {
            proxy.answer_inspect(peer, stream)
        })
        .await
    }

    async fn answer_inspect(self: Arc<Self>, peer: PeerId, stream: libp2p::Stream) {
        if !self.wait_for_admission(peer).await {
            warn!(%peer, "refused an inspect question from a peer that is not an admitted member");
            return;
        }
        let mut stream = stream.compat();
        let read = tokio::time::timeout(
            ASK_TIMEOUT,
            wire::read::<_, Ask>(&mut stream, wire::MAX_ASK),
        );
        let ask = match read.await {
            Ok(Ok(ask)) if ask.v == wire::VERSION && ask.valid() => ask,
            Ok(Ok(ask)) => {
                warn!(%peer, v = ask.v, "dropping an inspect question of another version or with a bad trace id");
                return;
            }
            Ok(Err(e)) => {
                warn!(%peer, error = %Chain(&e), "dropping a malformed inspect question");
                return;
            }
            Err(_) => {
                warn!(%peer, "dropping an inspect stream: no question in time");
                return;
            }
        };
        let answer = self.inspect_answer(&ask);
        let write = wire::write(&mut stream, &answer, wire::MAX_ANSWER);
        match tokio::time::timeout(ASK_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(WireError::TooLarge { len, .. })) => {
                let answer = Answer {
                    v: wire::VERSION,
                    entry: None,
                    reason: Some(format!("the capture is too large to send ({len} bytes)")),
                };
                let _ = wire::write(&mut stream, &answer, wire::MAX_ANSWER).await;
            }
            Ok(Err(e)) => debug!(%peer, error = %Chain(&e), "answering an inspect question failed"),
            Err(_) => debug!(%peer, "answering an inspect question timed out"),
        }
    }

    /// This node's answer to `ask`.
    fn inspect_answer(&self, ask: &Ask) -> Answer {
        let (entry, reason) = match &self.observe.inspector {
            None => (None, Some("the inspector is off on that node".to_owned())),
            Some(inspector) => match inspector.by_trace(&ask.trace_id, Side::Provider) {
                Some(e) => (serde_json::to_value(&*e).ok(), None),
                None => (
                    None,
                    Some(
                        "no capture of this trace (evicted, an HTTP/2 tunnel, or not parsed)"
                            .to_owned(),
                    ),
                ),
            },
        };
        Answer {
            v: wire::VERSION,
            entry,
            reason,
        }
    }

    /// `peer`'s capture of the request with `trace_id`.
    pub(crate) async fn provider_side(
        &self,
        peer: PeerId,
        trace_id: &str,
    ) -> Result<serde_json::Value, ProviderSideError> {
        let ask = Ask {
            v: wire::VERSION,
            trace_id: trace_id.to_owned(),
        };
        let mut control = self.node.stream_control();
        let exchange = async {
            let stream = (control.open_stream(peer, wire::PROTOCOL).await)
                .map_err(|source| ProviderSideError::Open { peer, source })?;
            let mut stream = stream.compat();
            let wire_err = |source| ProviderSideError::Wire { peer, source };
            wire::write(&mut stream, &ask, wire::MAX_ASK)
                .await
                .map_err(wire_err)?;
            wire::read::<_, Answer>(&mut stream, wire::MAX_ANSWER)
                .await
                .map_err(wire_err)
        };
        let answer = tokio::time::timeout(ASK_TIMEOUT, exchange)
            .await
            .map_err(|_| ProviderSideError::TimedOut {
                peer,
                after: ASK_TIMEOUT,
            })?
            .inspect_err(
                |e| warn!(%peer, error = %Chain(e), "asking a provider for its capture failed"),
            )?;
        checked(peer, trace_id, answer)
    }
}

/// The entry of an answer, when it is one of the provider side for
/// `trace_id`; a malformed answer is logged.
fn checked(
    peer: PeerId,
    trace_id: &str,
    answer: Answer,
) -> Result<serde_json::Value, ProviderSideError> {
    match answer.entry {
        Some(entry)
            if answer.v == wire::VERSION
                && entry["side"] == "provider"
                && entry["trace_id"] == trace_id =>
        {
            Ok(entry)
        }
        Some(_) => {
            warn!(%peer, "dropping a malformed inspect answer");
            Err(ProviderSideError::Malformed { peer })
        }
        None => Err(ProviderSideError::Missing {
            peer,
            reason: answer.reason.unwrap_or_else(|| "no capture".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let peer = PeerId::random();
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = Answer {
            v: 1,
            entry: Some(serde_json::json!({"side": "provider", "trace_id": t})),
            reason: None,
        };
        assert!(checked(peer, t, good.clone()).is_ok());
        let wrong = Answer {
            entry: Some(serde_json::json!({"side": "caller", "trace_id": t})),
            ..good.clone()
        };
        assert!(matches!(
            checked(peer, t, wrong),
            Err(ProviderSideError::Malformed { .. })
        ));
        let none = Answer {
            v: 1,
            entry: None,
            reason: Some("off".into()),
        };
        let e = checked(peer, t, none).unwrap_err().to_string();
        assert!(e.ends_with(": off"), "{e}");
    }
}
