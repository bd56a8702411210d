//! Certificates on the fly: a rustls [`ResolvesServerCert`] that signs a
//! leaf for each server name a client asks for (SNI) with the node's CA,
//! for local names only, and keeps the leaves in a bounded cache.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::{debug, info, warn};

use crate::{
    CertError, Error,
    ca::{Ca, Paths, provider},
    error::chain,
};

/// Most leaf certificates kept; the oldest goes when a new name comes.
pub const MAX_CACHED: usize = 256;
/// Age after which a cached leaf is signed again (well inside its validity).
const REISSUE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Whether devmesh makes certificates for `name`: `localhost`,
/// `<anything>.localhost` and `<anything>.devmesh`.
pub fn allowed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name == "localhost" {
        return true;
    }
    let prefix = name
        .strip_suffix(".localhost")
        .or_else(|| name.strip_suffix(".devmesh"));
    prefix.is_some_and(|p| {
        !p.is_empty()
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    })
}

/// What identifies the CA files on disk: a change of either file (new
/// contents, new mode) makes the resolver load them again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint([Option<FileStamp>; 2]);

/// Device, inode, modification time (s, ns), change time (ns), mode, length.
type FileStamp = (u64, u64, i64, i64, i64, u32, u64);

impl Fingerprint {
    fn of(paths: &Paths) -> Self {
        let one = |p: &std::path::Path| {
            fs::metadata(p).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime_nsec(),
                    m.mode(),
                    m.len(),
                )
            })
        };
        Self([one(&paths.cert), one(&paths.key)])
    }
}

struct State {
    seen: Option<Fingerprint>,
    /// The CA, none yet, or why it cannot be used.
    ca: Result<Option<Arc<Ca>>, Arc<Error>>,
    cache: HashMap<String, (Arc<CertifiedKey>, Instant)>,
}

/// Signs certificates per server name with the CA in a node's home,
/// picking up a CA made or replaced while the node runs.
pub struct Resolver {
    paths: Paths,
    state: Mutex<State>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver using the CA files of `paths` (they may appear later).
    pub fn new(paths: Paths) -> Arc<Self> {
        let resolver = Arc::new(Self {
            paths,
            state: Mutex::new(State {
                seen: None,
                ca: Ok(None),
                cache: HashMap::new(),
            }),
        });
        match resolver.ca() {
            Ok(Some(ca)) => {
                info!(ca = %resolver.paths.cert.display(), id = ca.short_id(), "HTTPS on the front door uses the local CA")
            }
            Ok(None) => info!(
                "no local CA yet: HTTPS on the front door starts working after `devmesh cert install`"
            ),
            Err(e) => warn!(reason = %chain(e.as_ref()), "HTTPS on the front door is off"),
        }
        resolver
    }

    /// The current CA, loading the files again when they changed.
    pub fn ca(&self) -> Result<Option<Arc<Ca>>, Arc<Error>> {
        let mut state = self.state.lock().expect("resolver lock");
        self.refresh(&mut state);
        state.ca.clone()
    }

    fn refresh(&self, state: &mut State) {
        let now = Fingerprint::of(&self.paths);
        if state.seen.as_ref() == Some(&now) {
            return;
        }
        state.seen = Some(now);
        state.cache.clear();
        state.ca = Ca::load(&self.paths)
            .map(|ca| ca.map(Arc::new))
            .map_err(Arc::new);
        match &state.ca {
            Ok(Some(ca)) => debug!(id = ca.short_id(), "loaded the local CA"),
            Ok(None) => debug!("no local CA"),
            Err(e) => debug!(reason = %chain(e.as_ref()), "the local CA cannot be used"),
        }
    }

    /// The certificate for `name` (which must be [`allowed`]), from the
    /// cache or signed now.
    pub fn certificate(&self, name: &str) -> Result<Arc<CertifiedKey>, CertError> {
        let name = name.to_ascii_lowercase();
        if !allowed(&name) {
            return Err(CertError::NotAllowed { name });
        }
        let mut state = self.state.lock().expect("resolver lock");
        self.refresh(&mut state);
        let ca = match &state.ca {
            Ok(Some(ca)) => ca.clone(),
            Ok(None) => return Err(CertError::NoCa),
            Err(reason) => return Err(CertError::Unusable(reason.clone())),
        };
        if let Some((cert, made)) = state.cache.get(&name)
            && made.elapsed() < REISSUE_AFTER
        {
            return Ok(cert.clone());
        }
        let cert = Arc::new(ca.issue(&name).map_err(CertError::Issue)?);
        if state.cache.len() >= MAX_CACHED
            && !state.cache.contains_key(&name)
            && let Some(oldest) = state
                .cache
                .iter()
                .min_by_key(|(_, (_, made))| *made)
                .map(|(k, _)| k.clone())
        {
            state.cache.remove(&oldest);
        }
        state
            .cache
            .insert(name.clone(), (cert.clone(), Instant::now()));
        debug!(%name, "signed a certificate");
        Ok(cert)
    }

    /// How many certificates are cached.
    pub fn cached(&self) -> usize {
        self.state.lock().expect("resolver lock").cache.len()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            warn!(
                "refused a TLS handshake: the client sent no server name (SNI); open https://<service>.localhost:<port>/ rather than an IP address"
            );
            return None;
        };
        match self.certificate(name) {
            Ok(cert) => Some(cert),
            Err(e) => {
                warn!(server_name = %name, reason = %chain(&e), "refused a TLS handshake");
                None
            }
        }
    }
}

/// The TLS configuration of the front door: certificates from `resolver`,
/// ALPN `h2` and `http/1.1`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "configuring TLS",
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::verify_chain;

    #[test]
    fn an_unusable_ca_names_its_cause() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        Ca::load_or_create(&paths).unwrap();
        fs::write(&paths.key, "not a key").unwrap();
        let resolver = Resolver::new(paths.clone());
        let err = resolver.certificate("api.localhost").unwrap_err();
        assert!(matches!(err, CertError::Unusable(_)), "{err:?}");
        let text = chain(&err);
        let prefix = format!(
            "the local CA cannot be used: {} is unreadable: ",
            paths.key.display()
        );
        assert!(text.starts_with(&prefix), "{text}");
        assert!(
            text.len() > prefix.len(),
            "the key parser's reason follows: {text}"
        );
    }

    #[test]
    fn allowed_names() {
        for ok in [
            "localhost",
            "api.localhost",
            "API.LocalHost",
            "a.b.localhost",
            "web.devmesh",
            "my-api_2.devmesh",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "devmesh",
            ".localhost",
            "api..localhost",
            "example.com",
            "localhost.example.com",
            "apilocalhost",
            "127.0.0.1",
            "api.localhost.evil",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }

    #[test]
    fn no_ca_then_a_ca_made_later_is_picked_up() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        let resolver = Resolver::new(paths.clone());
        let err = resolver
            .certificate("api.localhost")
            .unwrap_err()
            .to_string();
        assert!(err.contains("devmesh cert install"), "{err}");
        let (ca, _) = Ca::load_or_create(&paths).unwrap();
        let cert = resolver.certificate("api.localhost").unwrap();
        verify_chain(ca.cert_der(), &cert.cert[0], "api.localhost").unwrap();
        let err = chain(&resolver.certificate("example.com").unwrap_err());
        assert!(err.contains("only for localhost"), "{err}");
    }

    #[test]
    fn caches_per_name_and_stays_bounded() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        Ca::load_or_create(&paths).unwrap();
        let resolver = Resolver::new(paths);
        let a = resolver.certificate("api.localhost").unwrap();
        let again = resolver.certificate("API.localhost").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = resolver.certificate("web.localhost").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        for i in 0..MAX_CACHED + 10 {
            resolver.certificate(&format!("s{i}.devmesh")).unwrap();
        }
        assert_eq!(resolver.cached(), MAX_CACHED);
    }

    #[test]
    fn a_key_made_readable_is_refused_at_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        Ca::load_or_create(&paths).unwrap();
        let resolver = Resolver::new(paths.clone());
        resolver.certificate("api.localhost").unwrap();
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = chain(&resolver.certificate("api.localhost").unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }

    /// A real handshake in memory: SNI picks the certificate, ALPN offers
    /// h2, and a client trusting only the CA verifies the chain.
    #[tokio::test]
    async fn handshake_verifies_against_the_ca_and_negotiates_h2() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        let (ca, _) = Ca::load_or_create(&paths).unwrap();
        let server = tokio_rustls::TlsAcceptor::from(server_config(Resolver::new(paths)).unwrap());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

        let handshake = |name: &'static str| {
            let server = server.clone();
            let connector = connector.clone();
            async move {
                let (c, s) = tokio::io::duplex(64 * 1024);
                let server = tokio::spawn(async move { server.accept(s).await.map(|_| ()) });
                let sni = rustls::pki_types::ServerName::try_from(name).unwrap();
                let client = connector.connect(sni, c).await;
                let alpn = client
                    .as_ref()
                    .ok()
                    .and_then(|t| t.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                // The server finishes (session tickets) while the client is open.
                let server = server.await.unwrap();
                (client.map(|_| ()), server, alpn)
            }
        };
        let (client, server_side, alpn) = handshake("api.localhost").await;
        client.unwrap();
        server_side.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (client, server_side, _) = handshake("example.com").await;
        assert!(client.is_err());
        assert!(server_side.is_err());
    }
}
