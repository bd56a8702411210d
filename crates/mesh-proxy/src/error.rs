//! Errors of the mesh-proxy crate.
//!
//! The message of an error never repeats its source: a person reads the
//! whole chain, `message: source: source of the source`, as [`Chain`]
//! writes it (and as `anyhow` prints `{err:#}`).

use std::{fmt, net::SocketAddr, time::Duration};

use libp2p::PeerId;

/// Errors of the proxy's servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tunnel protocol is already being served.
    #[error("the tunnel protocol is already registered on this node")]
    AlreadyServing,
    /// Binding or accepting on the front door failed.
    #[error("front door")]
    Io(#[from] std::io::Error),
}

/// Why a tunnel to a provider could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// libp2p-stream could not open a stream to the peer.
    #[error("opening a stream to {peer}")]
    Open {
        peer: PeerId,
        #[source]
        source: libp2p_stream::OpenStreamError,
    },
    /// This node had no connection to the provider and could not make one
    /// (in a team larger than the full mesh, links open on demand).
    #[error("connecting to {peer}")]
    Connect {
        peer: PeerId,
        #[source]
        source: mesh_core::Error,
    },
    /// Opening the stream and exchanging hellos took too long.
    #[error("opening a stream to {peer}: timed out after {after:?}")]
    TimedOut { peer: PeerId, after: Duration },
    /// The hello exchange failed on the stream.
    #[error("tunnel handshake with {peer}")]
    Handshake {
        peer: PeerId,
        #[source]
        source: std::io::Error,
    },
    /// The provider answered the hello with a refusal; `reason` is its own
    /// words, from its reply.
    #[error("peer {peer} refused the tunnel: {reason}")]
    Refused { peer: PeerId, reason: String },
}

/// Why a connection to an upstream could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No address of the backend accepted a TCP connection; each attempt
    /// says why.
    #[error("{}", Attempts(.attempts))]
    Unreachable { attempts: Vec<ConnectAttempt> },
    /// The TLS handshake with an https backend failed.
    #[error(
        "TLS handshake with the backend failed (the service has scheme https; is the backend serving TLS?)"
    )]
    Tls {
        #[source]
        source: std::io::Error,
    },
    /// An HTTP/2 service's TLS backend chose HTTP/1.1 by ALPN.
    #[error(
        "the backend chose HTTP/1.1 over TLS, but the service is shared with --http2; share it without --http2"
    )]
    NoH2OverTls,
    /// No tunnel to the remote provider could be opened.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// hyper's HTTP/1.1 client handshake failed.
    #[error("HTTP handshake")]
    Handshake {
        #[source]
        source: hyper::Error,
    },
    /// hyper's HTTP/2 client handshake failed.
    #[error("HTTP/2 handshake")]
    H2Handshake {
        #[source]
        source: hyper::Error,
    },
    /// The connection failed during the exchange.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// Whether nothing could be connected at all (as opposed to a backend
    /// that answered and then failed).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// One failed TCP connect of [`UpstreamError::Unreachable`].
#[derive(Debug)]
pub struct ConnectAttempt {
    /// The address tried.
    pub addr: SocketAddr,
    /// What happened.
    pub failure: ConnectFailure,
}

/// Why one TCP connect failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The connect failed.
    Io(std::io::Error),
    /// Nothing answered in time.
    TimedOut(Duration),
}

/// The attempts of [`UpstreamError::Unreachable`], as `addr: why; addr: why`.
struct Attempts<'a>(&'a [ConnectAttempt]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attempt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &attempt.failure {
                ConnectFailure::Io(e) => write!(f, "{}: {e}", attempt.addr)?,
                ConnectFailure::TimedOut(after) => {
                    write!(f, "{}: timed out after {after:?}", attempt.addr)?
                }
            }
        }
        Ok(())
    }
}

/// Why a value of a routing setting was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not `warn` or `strict`.
    #[error("version mode {input:?} is not known; use \"warn\" or \"strict\"")]
    VersionMode { input: String },
    /// Not `idempotent`, `all` or `never`.
    #[error("retry policy {input:?} is not known; use \"idempotent\", \"all\" or \"never\"")]
    RetryPolicy { input: String },
}

/// For callers that still report errors as text: the message, which has
/// no source to lose.
impl From<ParseError> for String {
    fn from(e: ParseError) -> Self {
        e.to_string()
    }
}

/// Why the devmesh headers of a request could not be understood.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AskError {
    /// `X-DevMesh-Require` is not a semver requirement.
    #[error(
        "X-DevMesh-Require: {text:?} is not a version requirement (write it like \"^2.1\" or \">=1.4, <2\")"
    )]
    Require {
        text: String,
        #[source]
        source: semver::Error,
    },
    /// `X-DevMesh-Versions` is not a version mode.
    #[error("X-DevMesh-Versions")]
    Versions {
        #[source]
        source: ParseError,
    },
}

/// Why a provider refused a tunnel stream; the consumer gets the chain as
/// the reason of its refusal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TunnelRefusal {
    #[error("tunnel version {got} is not supported (this node speaks {speaks})")]
    Version { got: u32, speaks: u32 },
    #[error(
        "peer {peer} is not an admitted member of this node's namespace; join it with an invite from a member (`devmesh join <token>`)"
    )]
    NotMember { peer: PeerId },
    #[error("service {service:?} is not provided by peer {local} (it may have just stopped)")]
    NotProvided { service: String, local: PeerId },
    #[error(
        "service {service} on peer {local} does not speak HTTP/2 (any more); its record will refresh within seconds"
    )]
    NoH2 { service: String, local: PeerId },
    #[error(
        "service {service} on peer {local} is a TCP service; connect to it through its loopback listener (`devmesh status` shows it)"
    )]
    TcpOverHttp { service: String, local: PeerId },
    #[error(
        "service {service} on peer {local} is an HTTP service, not TCP; open it through the front door"
    )]
    NotTcp { service: String, local: PeerId },
    #[error("{service}@{version} on peer {local} does not satisfy {require}")]
    Unsatisfied {
        service: String,
        version: semver::Version,
        require: String,
        local: PeerId,
    },
    #[error("{text:?} is not a version requirement")]
    BadRequire {
        text: String,
        #[source]
        source: semver::Error,
    },
    #[error(
        "the backend of {service} on port {port}{}",
        if .source.is_unreachable() { " is unreachable" } else { "" }
    )]
    Backend {
        service: String,
        port: u16,
        #[source]
        source: UpstreamError,
    },
}

/// Why a TCP connection to a listener was refused (reset at once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpRefusal {
    /// No provider to try: none, pinned away, all unhealthy, or none of a
    /// satisfying version in strict mode.
    #[error("{reason}")]
    NoRoute { reason: String },
    /// Every provider tried refused or could not be reached.
    #[error("every provider of {service} failed: {attempts}")]
    AllFailed { service: String, attempts: String },
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// `what` (such as `GET /healthz`) could not connect.
    #[error("{what}")]
    Connect {
        what: String,
        #[source]
        source: UpstreamError,
    },
    /// No answer within the check's timeout.
    #[error("{what}: no answer within {}", humantime::format_duration(*.timeout))]
    TimedOut { what: String, timeout: Duration },
    /// The host of a URL probe did not resolve.
    #[error("{what}: resolving {host}")]
    Resolve {
        what: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The host of a URL probe resolved to nothing.
    #[error("{what}: {host} resolves to no address")]
    NoAddress { what: String, host: String },
    /// The URL of a probe has no host usable as a `Host` header.
    #[error("{what}: the URL has no usable host")]
    NoHost { what: String },
    /// The request of the probe could not be made.
    #[error("{what}")]
    Request {
        what: String,
        #[source]
        source: http::Error,
    },
    /// The HTTP exchange failed.
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: UpstreamError,
    },
    /// The backend answered with a status other than 2xx or 3xx.
    #[error("{what}: {status}")]
    Status {
        what: String,
        status: http::StatusCode,
    },
}

pub use mesh_core::error::Chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources_and_attempts_list_each_address() {
        let refused = |port| ConnectAttempt {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            failure: ConnectFailure::Io(std::io::ErrorKind::ConnectionRefused.into()),
        };
        let e = ProbeError::Connect {
            what: "TCP connect to port 9".into(),
            source: UpstreamError::Unreachable {
                attempts: vec![
                    refused(9),
                    ConnectAttempt {
                        addr: "[::1]:9".parse().unwrap(),
                        failure: ConnectFailure::TimedOut(Duration::from_secs(5)),
                    },
                ],
            },
        };
        assert_eq!(
            Chain(&e).to_string(),
            "TCP connect to port 9: 127.0.0.1:9: connection refused; [::1]:9: timed out after 5s"
        );
        let e = ProbeError::TimedOut {
            what: "GET /h".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(Chain(&e).to_string(), "GET /h: no answer within 1s 500ms");
        assert_eq!(
            String::from(ParseError::VersionMode { input: "x".into() }),
            "version mode \"x\" is not known; use \"warn\" or \"strict\""
        );
    }
}
