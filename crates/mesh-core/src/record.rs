//! Service records: what a node announces about the services it provides.
//!
//! A node announces all of its services in one [`Announcement`], signed by the
//! node's identity key inside a libp2p [`SignedEnvelope`]. Receivers accept an
//! announcement only when the signing key belongs to the peer the
//! announcement names as provider, the namespace matches theirs, and its
//! sequence number is higher than any they saw from that provider.

use std::{collections::BTreeMap, time::Duration};

use libp2p::{
    PeerId,
    core::{SignedEnvelope, signed_envelope},
    identity::Keypair,
};
use serde::{Deserialize, Serialize};

/// Domain separation string of the signed envelope.
pub const ENVELOPE_DOMAIN: &str = "devmesh-announcement";
/// Payload type of the signed envelope.
pub const PAYLOAD_TYPE: &[u8] = b"/devmesh/announcement/1";
/// Largest encoded announcement a node accepts.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 512 * 1024;
/// Most services one node may announce.
pub const MAX_SERVICES: usize = 1024;
/// Longest TTL a receiver honours, whatever the announcement says.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// Version of the announcement format.
pub const FORMAT_VERSION: u32 = 1;

/// How the service is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// HTTP/1.1 (with upgrades such as WebSocket).
    #[default]
    Http,
    /// Raw TCP bytes.
    Tcp,
}

impl std::fmt::Display for ServiceProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceProtocol::Http => "http",
            ServiceProtocol::Tcp => "tcp",
        })
    }
}

/// Health as last announced by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check is configured.
    #[default]
    Unknown,
    /// The last checks passed.
    Healthy,
    /// The last checks failed.
    Unhealthy,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// One service as announced on the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Service name, a DNS label: `api`, `web-admin`.
    pub name: String,
    /// Semantic version of the running service.
    pub version: semver::Version,
    /// Wire protocol of the service.
    #[serde(default)]
    pub protocol: ServiceProtocol,
    /// Path prefixes the service claims on a shared host name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Last known health.
    #[serde(default)]
    pub health: Health,
    /// Version requirements of this service on other services, by service
    /// name: `api = "^2.1"`. Consumers route by them; every node shows the
    /// ones no provider satisfies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, String>,
    /// The backend speaks HTTP/2 (h2c behind the provider, or h2 over TLS):
    /// consumers speak HTTP/2 over their tunnel streams to it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub h2: bool,
    /// For TCP services: the provider's local port, which consumers use
    /// for their own listener when it is free on their machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ServiceRecord {
    /// A plain HTTP service record.
    pub fn http(name: impl Into<String>, version: semver::Version) -> Self {
        Self {
            name: name.into(),
            version,
            protocol: ServiceProtocol::Http,
            routes: Vec::new(),
            tags: Vec::new(),
            health: Health::Unknown,
            requires: BTreeMap::new(),
            h2: false,
            port: None,
        }
    }

    /// A raw TCP service record; consumers listen on `port` when they can.
    pub fn tcp(name: impl Into<String>, version: semver::Version, port: u16) -> Self {
        Self {
            protocol: ServiceProtocol::Tcp,
            port: Some(port),
            ..Self::http(name, version)
        }
    }

    /// Checks the record's fields.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_service_name(&self.name)?;
        if self.version.pre.len() + self.version.build.len() > 128 {
            return Err(RecordError::Invalid(format!(
                "service {}: the version's pre-release and build are longer than 128 bytes",
                self.name
            )));
        }
        if self.routes.len() > 16 || self.tags.len() > 16 {
            return Err(RecordError::Invalid(format!(
                "service {}: at most 16 routes and 16 tags",
                self.name
            )));
        }
        for route in &self.routes {
            if !route.starts_with('/') || route.len() > 256 {
                return Err(RecordError::Invalid(format!(
                    "service {}: route {route:?} must start with '/' and be at most 256 bytes",
                    self.name
                )));
            }
        }
        if self.requires.len() > 16 {
            return Err(RecordError::Invalid(format!(
                "service {}: at most 16 version requirements",
                self.name
            )));
        }
        for (service, req) in &self.requires {
            validate_service_name(service)?;
            if req.len() > 128 {
                return Err(RecordError::Invalid(format!(
                    "service {}: requirement on {service} is longer than 128 bytes",
                    self.name
                )));
            }
            if let Err(source) = semver::VersionReq::parse(req) {
                return Err(RecordError::Requirement {
                    service: self.name.clone(),
                    on: service.clone(),
                    requirement: req.clone(),
                    source,
                });
            }
        }
        if self.protocol == ServiceProtocol::Tcp && (self.h2 || !self.routes.is_empty()) {
            return Err(RecordError::Invalid(format!(
                "service {}: a TCP service has no HTTP/2 and no routes",
                self.name
            )));
        }
        if self.tags.iter().any(|t| t.len() > 64) {
            return Err(RecordError::Invalid(format!(
                "service {}: tags are at most 64 bytes",
                self.name
            )));
        }
        Ok(())
    }
}

/// Checks that `name` can be a service name: a lowercase DNS label.
pub fn validate_service_name(name: &str) -> Result<(), RecordError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(RecordError::InvalidName(name.to_owned()))
    }
}

/// Everything one node provides, as one signed unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Format version, [`FORMAT_VERSION`].
    pub v: u32,
    /// Namespace the announcement belongs to.
    pub namespace: String,
    /// The node that provides the services and signed the envelope.
    pub provider: PeerId,
    /// Strictly increasing per provider, across restarts.
    pub seq: u64,
    /// Seconds after which receivers drop the announcement unless refreshed.
    pub ttl_secs: u32,
    /// The provider's services; empty when it withdraws everything.
    pub services: Vec<ServiceRecord>,
}

impl Announcement {
    /// Signs and encodes the announcement.
    pub fn sign(&self, keypair: &Keypair) -> Result<Vec<u8>, RecordError> {
        let payload = serde_json::to_vec(self).map_err(RecordError::Encode)?;
        let envelope = SignedEnvelope::new(
            keypair,
            ENVELOPE_DOMAIN.to_owned(),
            PAYLOAD_TYPE.to_vec(),
            payload,
        )
        .map_err(RecordError::Sign)?;
        let bytes = envelope.into_protobuf_encoding();
        if bytes.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// Decodes, verifies and validates a signed announcement for `namespace`.
    pub fn verify(bytes: &[u8], namespace: &str) -> Result<Self, RecordError> {
        if bytes.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| RecordError::Malformed(Malformed::Envelope(e)))?;
        let (payload, key) = envelope
            .payload_and_signing_key(ENVELOPE_DOMAIN.to_owned(), PAYLOAD_TYPE)
            .map_err(RecordError::BadSignature)?;
        let announcement: Announcement = serde_json::from_slice(payload)
            .map_err(|e| RecordError::Malformed(Malformed::Payload(e)))?;
        let signer = key.to_peer_id();
        if signer != announcement.provider {
            return Err(RecordError::WrongSigner {
                signer: signer.to_string(),
                provider: announcement.provider.to_string(),
            });
        }
        if announcement.v != FORMAT_VERSION {
            return Err(RecordError::UnsupportedVersion(announcement.v));
        }
        if announcement.namespace != namespace {
            return Err(RecordError::WrongNamespace(announcement.namespace));
        }
        announcement.validate()?;
        Ok(announcement)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.services.len() > MAX_SERVICES {
            return Err(RecordError::Invalid(format!(
                "{} services, at most {MAX_SERVICES}",
                self.services.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.services {
            s.validate()?;
            if !names.insert(s.name.as_str()) {
                return Err(RecordError::Invalid(format!(
                    "service {} is announced twice",
                    s.name
                )));
            }
        }
        Ok(())
    }

    /// The TTL a receiver applies.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.ttl_secs)).min(MAX_TTL)
    }
}

/// Why a record was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("malformed record: {0}")]
    Malformed(#[source] Malformed),
    #[error("bad record signature: {0}")]
    BadSignature(#[source] signed_envelope::ReadPayloadError),
    #[error("record for {provider} signed by {signer}")]
    WrongSigner { signer: String, provider: String },
    #[error("record of namespace {0:?}")]
    WrongNamespace(String),
    #[error("record format version {0} is not supported")]
    UnsupportedVersion(u32),
    #[error("record of {0} bytes exceeds the limit of {MAX_ANNOUNCEMENT_BYTES}")]
    TooLarge(usize),
    #[error(
        "invalid service name {0:?}: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
    )]
    InvalidName(String),
    /// A field breaks a rule; the text says which and how.
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error(
        "invalid record: service {service}: {requirement:?} is not a version requirement on {on}: {source}"
    )]
    Requirement {
        service: String,
        on: String,
        requirement: String,
        #[source]
        source: semver::Error,
    },
    #[error("invalid record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("invalid record: signing failed: {0}")]
    Sign(#[source] libp2p::identity::SigningError),
}

/// What could not be decoded in a [`RecordError::Malformed`] record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("envelope: {0}")]
    Envelope(#[source] signed_envelope::DecodingError),
    #[error("payload: {0}")]
    Payload(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(kp: &Keypair) -> Announcement {
        Announcement {
            v: FORMAT_VERSION,
            namespace: "team".into(),
            provider: kp.public().to_peer_id(),
            seq: 7,
            ttl_secs: 10,
            services: vec![ServiceRecord::http("api", semver::Version::new(1, 4, 2))],
        }
    }

    #[test]
    fn h2_is_announced_only_when_set() {
        let mut r = ServiceRecord::http("api", semver::Version::new(1, 0, 0));
        let plain = serde_json::to_string(&r).unwrap();
        assert!(!plain.contains("h2"), "{plain}");
        // Records of nodes that predate the field read as HTTP/1.1.
        assert!(!serde_json::from_str::<ServiceRecord>(&plain).unwrap().h2);
        r.h2 = true;
        let with = serde_json::to_string(&r).unwrap();
        assert!(with.contains(r#""h2":true"#), "{with}");
        assert_eq!(serde_json::from_str::<ServiceRecord>(&with).unwrap(), r);
    }

    #[test]
    fn tcp_records_carry_their_port_and_no_http_features() {
        let r = ServiceRecord::tcp("db", semver::Version::new(15, 4, 0), 5432);
        r.validate().unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""protocol":"tcp""#), "{text}");
        assert!(text.contains(r#""port":5432"#), "{text}");
        assert_eq!(serde_json::from_str::<ServiceRecord>(&text).unwrap(), r);
        let http = serde_json::to_string(&ServiceRecord::http("api", r.version.clone())).unwrap();
        assert!(!http.contains("port"), "{http}");
        let mut bad = r.clone();
        bad.routes.push("/x".into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn round_trip() {
        let kp = Keypair::generate_ed25519();
        let a = announcement(&kp);
        let bytes = a.sign(&kp).unwrap();
        assert_eq!(Announcement::verify(&bytes, "team").unwrap(), a);
    }

    #[test]
    fn rejects_record_signed_by_another_peer() {
        let victim = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let bytes = announcement(&victim).sign(&forger).unwrap();
        assert!(matches!(
            Announcement::verify(&bytes, "team"),
            Err(RecordError::WrongSigner { .. })
        ));
    }

    #[test]
    fn rejects_other_namespace_garbage_and_bad_names() {
        let kp = Keypair::generate_ed25519();
        let bytes = announcement(&kp).sign(&kp).unwrap();
        assert!(matches!(
            Announcement::verify(&bytes, "other"),
            Err(RecordError::WrongNamespace(_))
        ));
        assert!(matches!(
            Announcement::verify(b"\x01\x02garbage", "team"),
            Err(RecordError::Malformed(_))
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(Announcement::verify(&flipped, "team").is_err());
        let mut bad = announcement(&kp);
        bad.services[0].name = "Bad_Name".into();
        assert!(bad.sign(&kp).is_ok());
        assert!(matches!(
            Announcement::verify(&bad.sign(&kp).unwrap(), "team"),
            Err(RecordError::InvalidName(_))
        ));
    }

    #[test]
    fn service_names() {
        for ok in ["api", "web-2", "a"] {
            validate_service_name(ok).unwrap();
        }
        for bad in ["", "-api", "api-", "API", "a.b", &"x".repeat(64)] {
            assert!(validate_service_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_is_rejected() {
        let kp = Keypair::generate_ed25519();
        let mut a = announcement(&kp);
        a.services = vec![a.services[0].clone(); MAX_SERVICES + 1];
        let bytes = a.sign(&kp).unwrap();
        assert!(matches!(
            Announcement::verify(&bytes, "team"),
            Err(RecordError::Invalid(_))
        ));
        a.services[0].tags = vec!["t".repeat(64); 16];
        a.services = vec![a.services[0].clone(); MAX_SERVICES];
        assert!(matches!(a.sign(&kp), Err(RecordError::TooLarge(_))));
        let huge = vec![0u8; MAX_ANNOUNCEMENT_BYTES + 1];
        assert!(matches!(
            Announcement::verify(&huge, "team"),
            Err(RecordError::TooLarge(_))
        ));
    }
}
