//! The daemon's `config.toml` in its home directory.

use std::path::Path;

use serde::Deserialize;

use crate::{ConfigError, read};

/// Settings of `devmeshd` read from `<home>/config.toml`. Every field is
/// optional; flags and `DEVMESH_*` variables override it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonFile {
    /// p2p listen multiaddrs. Default: TCP and QUIC on all IPv4 interfaces, random ports.
    pub listen: Option<Vec<String>>,
    /// Address of the HTTP front door. Default: `127.0.0.1:7700`.
    pub proxy: Option<String>,
    /// Namespace to join. Default: `default`.
    pub namespace: Option<String>,
    /// Multiaddrs of peers to connect to at start. Default: none.
    pub bootstrap: Option<Vec<String>>,
    /// Discover peers on the LAN with mDNS. Default: true.
    pub mdns: Option<bool>,
}

impl DaemonFile {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Ok(Self::default());
        }
        Self::parse(path, &read(path)?)
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let p = Path::new("/h/config.toml");
        let ok = DaemonFile::parse(
            p,
            "namespace = \"team\"\nmdns = false\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
        )
        .unwrap();
        assert_eq!(ok.namespace.as_deref(), Some("team"));
        assert_eq!(ok.mdns, Some(false));
        let err =
            DaemonFile::parse(p, "namespace = \"team\"\n\nproxi = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("proxi"));
        let text = err.to_string();
        assert!(
            text.starts_with("/h/config.toml:3: key `proxi`: unknown field"),
            "{text}"
        );
        let err = DaemonFile::parse(p, "mdns = \"yes\"\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("bool"), "{}", err.message);
    }
}
