//! Connections to a node's own backends: plain TCP, or TLS for services
//! with `scheme = "https"`.
//!
//! Verification policy: a backend is always on this machine's loopback
//! (127.0.0.1 or ::1), and dev servers present self-signed or
//! dev-CA certificates that no public root vouches for. The TLS client here
//! therefore accepts any certificate chain and name, but still checks the
//! handshake signature against the certificate's key (so the server holds the
//! key of the certificate it shows). The hop never leaves the machine; TLS is
//! spoken because the backend insists on it, not to authenticate it. The
//! reasoning is in docs/security.md.

use std::sync::{Arc, LazyLock};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::error::UpstreamError;

/// The server name sent in TLS ClientHello to a backend (dev certificates
/// are made for `localhost`).
pub const SNI: &str = "localhost";

/// ALPN protocol offered to a TLS backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

/// Accepts any certificate of a loopback backend; checks handshake
/// signatures with the ring provider.
#[derive(Debug)]
struct LoopbackVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for LoopbackVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn client_config(alpn: Alpn) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(LoopbackVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![match alpn {
        Alpn::Http1 => b"http/1.1".to_vec(),
        Alpn::H2 => b"h2".to_vec(),
    }];
    Arc::new(config)
}

static HTTP1: LazyLock<TlsConnector> = LazyLock::new(|| client_config(Alpn::Http1).into());
static H2: LazyLock<TlsConnector> = LazyLock::new(|| client_config(Alpn::H2).into());

/// Performs a TLS handshake with the backend on `tcp`, offering `alpn`.
pub async fn tls(tcp: TcpStream, alpn: Alpn) -> Result<TlsStream<TcpStream>, UpstreamError> {
    let connector = match alpn {
        Alpn::Http1 => &*HTTP1,
        Alpn::H2 => &*H2,
    };
    let name = ServerName::try_from(SNI).expect("localhost is a valid server name");
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| UpstreamError::Tls { source })?;
    if alpn == Alpn::H2 && stream.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
        return Err(UpstreamError::NoH2OverTls);
    }
    Ok(stream)
}
