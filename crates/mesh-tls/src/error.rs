//! Errors of the CA and its certificates.

use std::path::PathBuf;

/// What went wrong with the CA files or a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
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
    #[error("{} is unreadable: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
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
        reason: String,
    },
    #[error("{what}: {reason}")]
    Certificate { what: &'static str, reason: String },
}
