//! The node's persisted Ed25519 identity.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use libp2p::identity::Keypair;

use crate::Error;

/// Loads the keypair stored at `path`, or creates and stores a new Ed25519
/// keypair there (mode 0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    let io_err = |source| Error::Identity {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| Error::CorruptIdentity {
                path: path.to_owned(),
                source,
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(Error::EncodeIdentity)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
            file.write_all(&bytes).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            tracing::info!(peer_id = %keypair.public().to_peer_id(), path = %path.display(), "created a new node identity");
            Ok(keypair)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn identity_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"nope").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
