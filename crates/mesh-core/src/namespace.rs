//! Namespaces and their secret: who is a member, and the keys derived from
//! the secret.
//!
//! A namespace is a name plus an optional 32-byte secret. Every key the node
//! uses for the namespace is derived from both with HKDF-SHA256:
//!
//! - the **admission key** proves membership in the handshake that runs on
//!   every new connection (HMAC-SHA256 over both nonces and both peer ids);
//! - the **record key** encrypts service announcements (ChaCha20-Poly1305),
//!   so a node without the secret cannot read them even when it sees them.
//!
//! Two values depend on the name alone, so that a node with a wrong secret
//! still finds the members and can be told its secret is wrong: the
//! [`Namespace::id`] exchanged in the handshake and the
//! [`Namespace::rendezvous_key`] under which members advertise themselves in
//! the DHT. Neither reveals the name to someone who does not already know it.

use std::{fmt, path::Path};

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit as _, Mac as _};
use libp2p::PeerId;
use sha2::{Digest as _, Sha256};

/// Length of a namespace secret in bytes.
pub const SECRET_LEN: usize = 32;
/// Prefix of an encrypted record: format tag, then a 12-byte nonce.
const SEALED_TAG: &[u8; 4] = b"dmr1";
const NONCE_LEN: usize = 12;

/// A namespace secret. Its `Debug` and `Display` never show the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text is not 64 hexadecimal digits.
    #[error("a namespace secret is 64 hexadecimal digits; this one is not ({0})")]
    Format(#[source] SecretFormat),
    /// A secret file does not hold 64 hexadecimal digits.
    #[error(
        "a namespace secret is 64 hexadecimal digits; this one is not ({source}, in {})",
        path.display()
    )]
    FileFormat {
        path: std::path::PathBuf,
        #[source]
        source: SecretFormat,
    },
    /// The file could not be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with the text of a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFormat {
    /// Not hexadecimal.
    #[error(transparent)]
    Hex(#[from] data_encoding::DecodeError),
    /// Hexadecimal, of another length.
    #[error("{0} bytes, not 32")]
    Length(usize),
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Self(bytes)
    }

    /// Parses the hexadecimal form (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .map_err(|e| SecretError::Format(e.into()))?;
        let bytes: [u8; SECRET_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| SecretError::Format(SecretFormat::Length(b.len())))?;
        Ok(Self(bytes))
    }

    /// The hexadecimal form, for invite tokens and secret files.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Reads a secret file.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            SecretError::Format(source) => SecretError::FileFormat {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Writes the secret to `path`, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), SecretError> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(format!("{}\n", self.to_hex()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A namespace with the keys derived from its name and secret.
#[derive(Clone)]
pub struct Namespace {
    name: String,
    has_secret: bool,
    id: [u8; 16],
    admission_key: [u8; 32],
    record_key: [u8; 32],
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("has_secret", &self.has_secret)
            .finish_non_exhaustive()
    }
}

impl Namespace {
    /// The namespace `name`, open to anyone who knows the name when `secret`
    /// is `None`.
    pub fn new(name: impl Into<String>, secret: Option<&Secret>) -> Self {
        let name = name.into();
        let digest = Sha256::new()
            .chain_update(b"devmesh/namespace-id/v1\0")
            .chain_update(name.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let ikm: &[u8] = secret.map(|s| &s.0[..]).unwrap_or(b"");
        let hk = Hkdf::<Sha256>::new(Some(name.as_bytes()), ikm);
        let mut admission_key = [0u8; 32];
        let mut record_key = [0u8; 32];
        hk.expand(b"devmesh/admission/v1", &mut admission_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(b"devmesh/records/v1", &mut record_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            name,
            has_secret: secret.is_some(),
            id,
            admission_key,
            record_key,
        }
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a secret guards the namespace.
    pub fn has_secret(&self) -> bool {
        self.has_secret
    }

    /// Public identifier of the name, exchanged in the admission handshake.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Gossipsub topic of the namespace's records. Derived from the name's
    /// id, so the topic does not spell out the name.
    pub fn topic(&self) -> String {
        format!(
            "/devmesh/ns/{}/records/2",
            data_encoding::HEXLOWER.encode(&self.id)
        )
    }

    /// DHT key under which members advertise themselves.
    pub fn rendezvous_key(&self) -> Vec<u8> {
        Sha256::new()
            .chain_update(b"devmesh/rendezvous/v1\0")
            .chain_update(self.name.as_bytes())
            .finalize()
            .to_vec()
    }

    /// The admission proof `prover` gives `verifier` for `nonce` (a challenge
    /// the verifier chose).
    pub fn proof(&self, nonce: &[u8], prover: &PeerId, verifier: &PeerId) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.admission_key)
            .expect("HMAC takes keys of any length");
        mac.update(b"devmesh/admission-proof/v1\0");
        mac.update(&self.id);
        for part in [nonce, &prover.to_bytes(), &verifier.to_bytes()] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    pub fn verify_proof(
        &self,
        nonce: &[u8],
        prover: &PeerId,
        verifier: &PeerId,
        proof: &[u8],
    ) -> bool {
        let expected = self.proof(nonce, prover, verifier);
        proof.len() == expected.len()
            && expected
                .iter()
                .zip(proof)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Encrypts a signed announcement for the namespace.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let cipher = ChaCha20Poly1305::new((&self.record_key).into());
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.id,
                },
            )
            .expect("encrypting in memory does not fail");
        let mut out = Vec::with_capacity(SEALED_TAG.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(SEALED_TAG);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Namespace::seal`] made with the same name and secret.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let rest = sealed.strip_prefix(SEALED_TAG).ok_or(OpenError::Format)?;
        if rest.len() < NONCE_LEN {
            return Err(OpenError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        ChaCha20Poly1305::new((&self.record_key).into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &self.id,
                },
            )
            .map_err(|_| OpenError::Key)
    }
}

/// Why a sealed record could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a sealed devmesh record.
    #[error("not a sealed devmesh record")]
    Format,
    /// Sealed with another namespace or secret, or altered.
    #[error("record sealed with another namespace secret, or altered")]
    Key,
}

/// A namespace name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "namespace {name:?} is invalid: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
)]
pub struct NameError {
    /// The name as given.
    pub name: String,
}

/// Prefix of an invite token.
pub const INVITE_PREFIX: &str = "devmesh-invite:";

/// Everything a new member needs, in one copy-pasteable token: the
/// namespace, its secret and where to find the team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Namespace name.
    pub namespace: String,
    /// Its secret, if it has one.
    pub secret: Option<Secret>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Vec<libp2p::Multiaddr>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct InviteWire {
    v: u32,
    ns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
}

/// Why an invite token could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a valid devmesh invite token ({0}); copy the whole token that `devmesh invite` printed, starting with `devmesh-invite:`"
)]
pub struct InviteError(#[source] InviteProblem);

/// What is wrong with an invite token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteProblem {
    #[error("missing prefix")]
    MissingPrefix,
    #[error("bad encoding: {0}")]
    Encoding(#[source] data_encoding::DecodeError),
    #[error("bad content: {0}")]
    Content(#[source] serde_json::Error),
    #[error("version {0} is newer than this devmesh understands; update devmesh")]
    Version(u32),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("bootstrap address {addr:?}: {source}")]
    Bootstrap {
        addr: String,
        #[source]
        source: libp2p::multiaddr::Error,
    },
}

impl InviteError {
    /// What is wrong with the token.
    pub fn problem(&self) -> &InviteProblem {
        &self.0
    }
}

impl<T: Into<InviteProblem>> From<T> for InviteError {
    fn from(problem: T) -> Self {
        InviteError(problem.into())
    }
}

impl Invite {
    /// The token text.
    pub fn encode(&self) -> String {
        let wire = InviteWire {
            v: 1,
            ns: self.namespace.clone(),
            secret: self.secret.as_ref().map(Secret::to_hex),
            bootstrap: self.bootstrap.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec(&wire).expect("an invite serialises");
        format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&json)
        )
    }

    /// Reads a token.
    pub fn decode(token: &str) -> Result<Self, InviteError> {
        let body = token
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or(InviteProblem::MissingPrefix)?;
        let json = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(InviteProblem::Encoding)?;
        let wire: InviteWire = serde_json::from_slice(&json).map_err(InviteProblem::Content)?;
        if wire.v != 1 {
            return Err(InviteProblem::Version(wire.v).into());
        }
        validate_name(&wire.ns)?;
        let secret = wire.secret.map(|s| Secret::parse(&s)).transpose()?;
        let bootstrap = wire
            .bootstrap
            .iter()
            .map(|a| {
                a.parse().map_err(|source| InviteProblem::Bootstrap {
                    addr: a.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace: wire.ns,
            secret,
            bootstrap,
        })
    }
}

/// A new namespace name for a node of its own: `team-` and 8 random
/// hexadecimal digits, so two strangers never pick the same one.
pub fn private_name() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("team-{}", data_encoding::HEXLOWER.encode(&bytes))
}

/// Checks a namespace name: 1-64 letters, digits, `.`, `_` or `-`, not
/// starting with `.`. The error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names_are_valid_and_differ() {
        let (a, b) = (private_name(), private_name());
        assert!(validate_name(&a).is_ok(), "{a}");
        assert!(a.starts_with("team-") && a.len() == 13, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn secret_round_trips_and_hides_itself() {
        let s = Secret::generate();
        assert_eq!(Secret::parse(&format!(" {}\n", s.to_hex())).unwrap(), s);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Namespace::new("x", Some(&s))).contains(&s.to_hex()));
        assert!(matches!(Secret::parse("abcd"), Err(SecretError::Format(_))));
        assert!(matches!(
            Secret::parse(&"zz".repeat(32)),
            Err(SecretError::Format(_))
        ));
    }

    #[test]
    fn secret_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/team");
        let s = Secret::generate();
        s.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Secret::load(&path).unwrap(), s);
    }

    #[test]
    fn records_open_only_with_the_same_secret() {
        let s = Secret::generate();
        let ns = Namespace::new("team", Some(&s));
        let sealed = ns.seal(b"hello");
        assert_eq!(ns.open(&sealed).unwrap(), b"hello");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        let wrong = Namespace::new("team", Some(&Secret::generate()));
        assert_eq!(wrong.open(&sealed), Err(OpenError::Key));
        let none = Namespace::new("team", None);
        assert_eq!(none.open(&sealed), Err(OpenError::Key));
        let other = Namespace::new("other", Some(&s));
        assert_eq!(other.open(&sealed), Err(OpenError::Key));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(ns.open(&altered), Err(OpenError::Key));
        assert_eq!(ns.open(b"garbage"), Err(OpenError::Format));
        assert_eq!(ns.open(b"dmr1short"), Err(OpenError::Format));
    }

    #[test]
    fn proofs_bind_secret_nonce_and_both_peers() {
        let s = Secret::generate();
        let ns = Namespace::new("team", Some(&s));
        let (a, b) = (PeerId::random(), PeerId::random());
        let p = ns.proof(b"nonce", &a, &b);
        assert!(ns.verify_proof(b"nonce", &a, &b, &p));
        // Reflected (roles swapped), other nonce, other secret: all fail.
        assert!(!ns.verify_proof(b"nonce", &b, &a, &p));
        assert!(!ns.verify_proof(b"other", &a, &b, &p));
        let wrong = Namespace::new("team", Some(&Secret::generate()));
        assert!(!wrong.verify_proof(b"nonce", &a, &b, &p));
        assert!(!ns.verify_proof(b"nonce", &a, &b, &p[..31]));
    }

    #[test]
    fn invites_round_trip_and_bad_ones_say_why() {
        let invite = Invite {
            namespace: "team-x".into(),
            secret: Some(Secret::generate()),
            bootstrap: vec!["/ip4/203.0.113.10/tcp/4001".parse().unwrap()],
        };
        let token = invite.encode();
        assert!(token.starts_with(INVITE_PREFIX));
        assert_eq!(Invite::decode(&format!("  {token}\n")).unwrap(), invite);
        for bad in ["", "devmesh-invite:", "devmesh-invite:!!!", "hello"] {
            let e = Invite::decode(bad).unwrap_err().to_string();
            assert!(e.contains("devmesh invite"), "{e}");
        }
        assert!(validate_name("team-x.dev_1").is_ok());
        for bad in ["", ".hidden", "a/b", "..", &"x".repeat(65), "sp ace"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_values_depend_on_the_name_only() {
        let a = Namespace::new("team", Some(&Secret::generate()));
        let b = Namespace::new("team", None);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.rendezvous_key(), b.rendezvous_key());
        assert_eq!(a.topic(), b.topic());
        assert!(!a.topic().contains("team"));
        assert_ne!(a.id(), Namespace::new("team2", None).id());
    }

    #[test]
    fn errors_name_the_problem_and_keep_its_cause() {
        use std::error::Error as _;
        let e = Invite::decode("hello").unwrap_err();
        assert!(matches!(e.problem(), InviteProblem::MissingPrefix));
        assert!(e.to_string().starts_with(
            "not a valid devmesh invite token (missing prefix); copy the whole token"
        ));
        let wire = r#"{"v":1,"ns":".bad"}"#;
        let token = format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(wire.as_bytes())
        );
        let e = Invite::decode(&token).unwrap_err();
        assert!(matches!(e.problem(), InviteProblem::Name(_)));
        assert!(
            e.to_string().contains(r#"namespace ".bad" is invalid"#),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("team");
        std::fs::write(&path, "abcd\n").unwrap();
        let e = Secret::load(&path).unwrap_err();
        assert!(matches!(
            e,
            SecretError::FileFormat {
                source: SecretFormat::Length(2),
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            format!(
                "a namespace secret is 64 hexadecimal digits; this one is not (2 bytes, not 32, in {})",
                path.display()
            )
        );
        assert!(e.source().is_some());
        let e = Secret::parse("zz").unwrap_err();
        assert!(matches!(e, SecretError::Format(SecretFormat::Hex(_))));
    }
}
