//! The node's certificate authority: two PEM files in `<home>/ca/`, made
//! once and reused, and the leaf certificates it signs.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::{
    RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier as _},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
    sign::CertifiedKey,
};
use sha2::Digest as _;
use time::{Duration, OffsetDateTime};

use crate::{ChainError, Error};

/// Folder of the CA inside a node's home directory.
pub const CA_DIR: &str = "ca";
/// The CA certificate: the file people trust.
pub const CERT_FILE: &str = "ca.pem";
/// The CA private key (mode 0600).
pub const KEY_FILE: &str = "ca-key.pem";

/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a leaf certificate is valid (browsers accept at most 398 days
/// for leaves, macOS at most 825).
pub const LEAF_VALIDITY: Duration = Duration::days(30);
/// How far back validity starts, for clocks that are a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// Where the CA files of a home directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Paths {
    /// The CA files of the node whose home is `home`.
    pub fn in_home(home: &Path) -> Self {
        let dir = home.join(CA_DIR);
        Self {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            dir,
        }
    }
}

/// A loaded certificate authority, able to sign leaf certificates.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The CA as rcgen needs it to sign: rebuilt from the key, with the same
    /// subject as the stored certificate.
    issuer: rcgen::Certificate,
    key: KeyPair,
    short_id: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("short_id", &self.short_id)
            .finish_non_exhaustive()
    }
}

/// The crypto provider devmesh uses for TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The subject and constraints of a CA with key `key`. Everything in it is
/// derived from the key, so the issuer can be rebuilt from the key file.
fn ca_params(short_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "devmesh");
    dn.push(
        DnType::CommonName,
        format!("devmesh development CA {short_id}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Trusting this CA lets it vouch for local names only: never for a
    // public site, never for an IP address.
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::DnsName("devmesh".into()),
        ],
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    params
}

/// Eight hex digits naming a CA: the start of the SHA-256 of its public key.
fn short_id(key: &KeyPair) -> String {
    let digest = sha2::Sha256::digest(key.public_key_der());
    data_encoding::HEXLOWER.encode(&digest[..4])
}

fn io_error<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Certificate { what, source }
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp, "creating"))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp, "writing"))?;
    fs::rename(&tmp, path).map_err(io_error(path, "renaming a new file to"))
}

/// Checks that only its owner can read the key file at `path`.
fn check_key_mode(path: &Path) -> Result<(), Error> {
    let meta = fs::metadata(path).map_err(io_error(path, "reading"))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyReadable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

impl Ca {
    /// Loads the CA of `paths`; `Ok(None)` when it was never made.
    pub fn load(paths: &Paths) -> Result<Option<Ca>, Error> {
        let key_exists = paths
            .key
            .try_exists()
            .map_err(io_error(&paths.key, "reading"))?;
        let cert_exists = paths
            .cert
            .try_exists()
            .map_err(io_error(&paths.cert, "reading"))?;
        match (key_exists, cert_exists) {
            (false, false) => return Ok(None),
            (false, true) => {
                return Err(Error::Incomplete {
                    missing: paths.key.clone(),
                    dir: paths.dir.clone(),
                });
            }
            _ => {}
        }
        check_key_mode(&paths.key)?;
        let key_pem = fs::read_to_string(&paths.key).map_err(io_error(&paths.key, "reading"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::BadKey {
            path: paths.key.clone(),
            source,
        })?;
        let short_id = short_id(&key);
        let issuer = ca_params(&short_id)
            .self_signed(&key)
            .map_err(rcgen_error("rebuilding the CA"))?;
        if !cert_exists {
            return Err(Error::Incomplete {
                missing: paths.cert.clone(),
                dir: paths.dir.clone(),
            });
        }
        let cert_pem = fs::read_to_string(&paths.cert).map_err(io_error(&paths.cert, "reading"))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| {
            Error::BadCert {
                path: paths.cert.clone(),
                source,
            }
        })?;
        let ca = Ca {
            cert_pem,
            cert_der,
            issuer,
            key,
            short_id,
        };
        // The certificate must be the one this key made: a leaf signed now
        // must chain to it.
        let probe = ca.issue("localhost")?;
        if let Err(reason) = verify_chain(&ca.cert_der, &probe.cert[0], "localhost") {
            return Err(Error::Mismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
                reason,
            });
        }
        Ok(Some(ca))
    }

    /// Loads the CA of `paths`, making it first when there is none. The
    /// flag says whether it was made now.
    pub fn load_or_create(paths: &Paths) -> Result<(Ca, bool), Error> {
        if let Some(ca) = Self::load(paths)? {
            return Ok((ca, false));
        }
        fs::create_dir_all(&paths.dir).map_err(io_error(&paths.dir, "creating"))?;
        fs::set_permissions(&paths.dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(&paths.dir, "restricting to its owner"))?;
        let key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
        let short_id = short_id(&key);
        let mut params = ca_params(&short_id);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("signing the CA certificate"))?;
        // Key first: a certificate on disk always has its key.
        write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644)?;
        let ca = Self::load(paths)?.ok_or_else(|| Error::Incomplete {
            missing: paths.cert.clone(),
            dir: paths.dir.clone(),
        })?;
        Ok((ca, true))
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Eight hex digits naming this CA (in its common name and in the file
    /// names trust stores get).
    pub fn short_id(&self) -> &str {
        &self.short_id
    }

    /// Signs a new leaf certificate for `name`, with a new key.
    pub fn issue(&self, name: &str) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(rcgen_error("generating a leaf key"))?;
        let mut params = CertificateParams::new(vec![name.to_owned()])
            .map_err(rcgen_error("making a leaf certificate"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(rcgen_error("signing a leaf certificate"))?;
        let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = provider()
            .key_provider
            .load_private_key(private)
            .map_err(|source| Error::Tls {
                what: "loading a leaf key",
                source,
            })?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
    }
}

/// Checks with webpki that `leaf` is valid for `name` and chains to `ca`.
pub fn verify_chain(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'_>,
    name: &str,
) -> Result<(), ChainError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(ChainError::Root)?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let name = ServerName::try_from(name.to_owned())?;
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(ChainError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_modes_and_reuses() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        assert!(Ca::load(&paths).unwrap().is_none());
        let (ca, created) = Ca::load_or_create(&paths).unwrap();
        assert!(created);
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&paths.dir), 0o700);
        let (again, created) = Ca::load_or_create(&paths).unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert_eq!(again.short_id(), ca.short_id());
        assert_eq!(ca.short_id().len(), 8);
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        Ca::load_or_create(&paths).unwrap();
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Ca::load(&paths).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains("0644"), "{err}");
    }

    #[test]
    fn leaves_chain_to_the_stored_ca_after_a_reload() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::in_home(home.path());
        let (made, _) = Ca::load_or_create(&paths).unwrap();
        // A CA loaded from disk signs leaves that the stored file verifies.
        let loaded = Ca::load(&paths).unwrap().unwrap();
        for name in ["api.localhost", "localhost", "web.devmesh", "a.b.localhost"] {
            let leaf = loaded.issue(name).unwrap();
            verify_chain(made.cert_der(), &leaf.cert[0], name).unwrap();
        }
        // Not valid for another name.
        let leaf = loaded.issue("api.localhost").unwrap();
        assert!(verify_chain(made.cert_der(), &leaf.cert[0], "web.localhost").is_err());
    }

    #[test]
    fn name_constraints_keep_the_ca_off_public_names() {
        let home = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(&Paths::in_home(home.path())).unwrap();
        // Even a leaf the CA signed for a public name does not verify.
        let leaf = ca.issue("example.com").unwrap();
        let err = verify_chain(ca.cert_der(), &leaf.cert[0], "example.com")
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("name"), "{err}");
    }

    #[test]
    fn a_certificate_of_another_key_is_a_clear_error() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = Paths::in_home(a.path());
        let pb = Paths::in_home(b.path());
        Ca::load_or_create(&pa).unwrap();
        Ca::load_or_create(&pb).unwrap();
        fs::copy(&pb.cert, &pa.cert).unwrap();
        let err = Ca::load(&pa).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        // A missing key next to a certificate is named too.
        fs::remove_file(&pa.key).unwrap();
        let err = Ca::load(&pa).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE), "{err}");
    }
}
