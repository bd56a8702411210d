//! Errors of the CA, its certificates and the trust steps.
//!
//! A message does not repeat its source: print an error with its chain
//! (`{:#}` of `anyhow`) to get the whole text.

use std::{fmt::Write as _, path::PathBuf, process::ExitStatus, sync::Arc};

/// `error` and each of its sources, joined by `: `.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(text, ": {e}");
        source = e.source();
    }
    text
}

/// What went wrong with the CA files or a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to use the CA key {}: other users can read it (mode {mode:04o}); fix it with `chmod 600 {}`, or delete {} and run `devmesh cert install` to make a new CA (then trust the new one)",
        path.display(), path.display(), path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    KeyReadable { path: PathBuf, mode: u32 },
    /// The key file holds no key rcgen can read.
    #[error("{} is unreadable", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} is unreadable: no PEM certificate in it", path.display())]
    BadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "the CA in {} is incomplete: {} is missing; delete that folder and run `devmesh cert install` to make a new CA",
        dir.display(), missing.display()
    )]
    Incomplete { missing: PathBuf, dir: PathBuf },
    #[error(
        "{} does not belong to {} ({reason}); delete both and run `devmesh cert install` to make a new CA",
        cert.display(), key.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        /// Why a leaf signed with the key does not verify (shown inside
        /// the message, so not a source).
        reason: ChainError,
    },
    /// Making or signing a certificate failed.
    #[error("{what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused a key or a configuration.
    #[error("{what}")]
    Tls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// Why a leaf certificate does not verify against the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The CA certificate cannot be a root.
    #[error(transparent)]
    Root(rustls::Error),
    #[error(transparent)]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error(transparent)]
    Name(#[from] rustls::pki_types::InvalidDnsNameError),
    /// The chain or the name is not valid.
    #[error(transparent)]
    Rejected(rustls::Error),
}

/// Why the front door has no certificate for a server name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error(
        "devmesh makes certificates only for localhost, <name>.localhost and <name>.devmesh, not for {name:?}"
    )]
    NotAllowed { name: String },
    #[error(
        "this node has no local CA yet: run `devmesh cert install` to make one and trust it (no restart needed)"
    )]
    NoCa,
    /// The CA files are there but cannot be used.
    #[error("the local CA cannot be used")]
    Unusable(#[source] Arc<Error>),
    /// Signing the leaf failed.
    #[error(transparent)]
    Issue(Error),
}

/// Why one step of trusting the CA failed; its text is the step's
/// [`crate::trust::Outcome`] detail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The shell could not be started.
    #[error("running {command:?}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed; `stderr` is what it printed.
    #[error("{command:?} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A step that only an administrator can do failed (its error is
    /// shown inside the message, so not a source).
    #[error("{}; it needs an administrator: run it with sudo", chain(.0.as_ref()))]
    NeedsAdmin(Box<StepError>),
    /// The certificate could not be copied into the store.
    /// The certificate could not be copied into the store (the error is
    /// shown inside the message, so not a source).
    #[error(
        "cannot write {}: {error}{}",
        path.display(),
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            "; it needs root: run the commands above with sudo"
        } else {
            ""
        }
    )]
    Copy {
        path: PathBuf,
        error: std::io::Error,
    },
}
