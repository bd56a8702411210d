//! The daemon's `config.toml` in its home directory.

use std::{path::Path, time::Duration};

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
    /// Namespace to join. Default: a private one of this node's, made at
    /// first start and written here; `default` when `open`.
    pub namespace: Option<String>,
    /// The namespace has no secret: any node on the network that names it
    /// is a member. Default: false, a namespace has a secret and only
    /// invited nodes are members.
    pub open: Option<bool>,
    /// Multiaddrs of peers to connect to at start. Default: none.
    pub bootstrap: Option<Vec<String>>,
    /// Discover peers on the LAN with mDNS. Default: true.
    pub mdns: Option<bool>,
    /// `member` (default) or `relay`: a public bootstrap, relay and AutoNAT
    /// node for teams.
    pub role: Option<String>,
    /// Addresses others reach this node at, when they differ from the
    /// listen addresses (a relay behind a cloud NAT). Default: none.
    pub external: Option<Vec<String>>,
    /// File holding the namespace secret. Default: `<home>/secrets/<namespace>`
    /// when it exists.
    pub secret_file: Option<String>,
    /// How long a stopping daemon lets in-flight requests, tunnels and
    /// control requests finish, as a duration such as `"5s"` or `"500ms"`.
    /// Default: 5 s.
    pub shutdown_grace: Option<toml::Spanned<String>>,
    /// Front-door connections served at once; more get a 503 and are
    /// closed. Default: 4096.
    pub max_connections: Option<toml::Spanned<u64>>,
    /// `[routing]`: how the front door chooses providers.
    pub routing: RoutingSection,
    /// Address to serve Prometheus metrics on besides the front door's
    /// `devmesh.localhost/metrics`, or `"off"` to count nothing. Default: the
    /// front door only.
    pub metrics: Option<String>,
    /// OTLP/HTTP endpoint traces are exported to, such as
    /// `http://127.0.0.1:4318/v1/traces`. Default: no export.
    pub otlp: Option<String>,
    /// `[log]`: the request log and the log format.
    pub log: crate::LogSection,
    /// `[inspect]`: the inspector's buffer.
    pub inspect: crate::InspectSection,
}

/// `[routing]` of the daemon's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSection {
    /// `warn` (default): when no provider satisfies a version requirement
    /// the best available one serves, with a warning header; `strict`:
    /// such requests get 409.
    pub versions: Option<toml::Spanned<String>>,
    /// Which requests that failed before any response byte go to the next
    /// provider: `idempotent` (default), `all` or `never`.
    pub retry: Option<toml::Spanned<String>>,
}

/// Records a joined namespace in the config file at `path`: sets
/// `namespace`, adds `bootstrap` addresses not yet listed, sets `open` when
/// the namespace is open (else removes it) and drops `secret_file` (the
/// secret now lives in `<home>/secrets/<namespace>`). Comments and other
/// keys are kept.
pub fn write_membership(
    path: &Path,
    namespace: &str,
    bootstrap: &[String],
    open: bool,
) -> Result<(), ConfigError> {
    let source = if path.exists() {
        read(path)?
    } else {
        String::new()
    };
    // Refuse to rewrite a file that does not parse: the user must see why.
    DaemonFile::parse(path, &source)?;
    let mut doc: toml_edit::DocumentMut = source
        .parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::of_file(path, "", e))?;
    doc["namespace"] = toml_edit::value(namespace);
    let mut list: Vec<String> = doc
        .get("bootstrap")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for addr in bootstrap {
        if !list.contains(addr) {
            list.push(addr.clone());
        }
    }
    let mut array = toml_edit::Array::new();
    for addr in &list {
        array.push(addr.as_str());
    }
    doc["bootstrap"] = toml_edit::value(array);
    doc.remove("secret_file");
    if open {
        doc["open"] = toml_edit::value(true);
    } else {
        doc.remove("open");
    }
    let io = |e: std::io::Error| ConfigError::of_file(path, "", e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl DaemonFile {
    /// The `shutdown_grace` of the file, when it sets one ([`DaemonFile::parse`]
    /// has checked that it is a duration).
    pub fn shutdown_grace(&self) -> Option<Duration> {
        self.shutdown_grace
            .as_ref()
            .and_then(|v| crate::parse_duration(v.get_ref()).ok())
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Ok(Self::default());
        }
        Self::parse(path, &read(path)?)
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let file: Self =
            toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, e))?;
        let check = |value: &Option<toml::Spanned<String>>, key: &str, allowed: &[&str]| match value
        {
            Some(v) if !allowed.contains(&v.get_ref().as_str()) => Err(ConfigError::at(
                path,
                source,
                Some(v.span()),
                Some(format!("routing.{key}")),
                format!(
                    "{:?} is not a choice; use one of {}",
                    v.get_ref(),
                    allowed
                        .iter()
                        .map(|a| format!("\"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => Ok(()),
        };
        if let Some(v) = &file.shutdown_grace {
            crate::parse_duration(v.get_ref()).map_err(|e| {
                ConfigError::at(
                    path,
                    source,
                    Some(v.span()),
                    Some("shutdown_grace".into()),
                    e.to_string(),
                )
            })?;
        }
        if let Some(v) = &file.max_connections
            && *v.get_ref() == 0
        {
            return Err(ConfigError::at(
                path,
                source,
                Some(v.span()),
                Some("max_connections".into()),
                "0 would refuse every connection; use a positive number such as 4096".into(),
            ));
        }
        check(&file.routing.versions, "versions", &["warn", "strict"])?;
        if let Some(v) = &file.log.format
            && !["text", "json"].contains(&v.get_ref().as_str())
        {
            return Err(ConfigError::at(
                path,
                source,
                Some(v.span()),
                Some("log.format".into()),
                format!(
                    "{:?} is not a log format; use \"text\" or \"json\"",
                    v.get_ref()
                ),
            ));
        }
        if let Some(v) = &file.inspect.bytes {
            crate::parse_size(v.get_ref()).map_err(|e| {
                ConfigError::at(
                    path,
                    source,
                    Some(v.span()),
                    Some("inspect.bytes".into()),
                    e.to_string(),
                )
            })?;
        }
        check(
            &file.routing.retry,
            "retry",
            &["idempotent", "all", "never"],
        )?;
        Ok(file)
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
        let err = DaemonFile::parse(p, "[routing]\nversions = \"strict\"\nretry = \"always\"\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("routing.retry"))
        );
        assert!(err.message.contains("\"idempotent\""), "{}", err.message);
        let err = DaemonFile::parse(p, "mdns = \"yes\"\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("bool"), "{}", err.message);
        assert_eq!(
            err.key.as_deref(),
            Some("mdns"),
            "a wrong type names its key"
        );
    }

    #[test]
    fn shutdown_grace_is_a_duration_named_by_its_line_and_key() {
        let p = Path::new("/h/config.toml");
        assert_eq!(DaemonFile::parse(p, "").unwrap().shutdown_grace(), None);
        let file = DaemonFile::parse(p, "shutdown_grace = \"500ms\"\n").unwrap();
        assert_eq!(file.shutdown_grace(), Some(Duration::from_millis(500)));
        let file = DaemonFile::parse(p, "shutdown_grace = \"1m 30s\"\n").unwrap();
        assert_eq!(file.shutdown_grace(), Some(Duration::from_secs(90)));
        let err = DaemonFile::parse(p, "mdns = true\nshutdown_grace = \"soon\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("shutdown_grace"))
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "/h/config.toml:2: key `shutdown_grace`: \"soon\" is not a duration ("
            ),
            "{text}"
        );
        let err = DaemonFile::parse(p, "shutdown_grace = 5\n").unwrap_err();
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn membership_is_written_keeping_comments_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# my node\nmdns = false\nnamespace = \"old\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\nsecret_file = \"/x\"\n",
        )
        .unwrap();
        write_membership(&path, "lan", &[], true).unwrap();
        assert_eq!(DaemonFile::load(&path).unwrap().open, Some(true));
        write_membership(&path, "team", &["/ip4/203.0.113.10/tcp/4001".into()], false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# my node"), "{text}");
        let file = DaemonFile::load(&path).unwrap();
        assert_eq!(file.namespace.as_deref(), Some("team"));
        assert_eq!(file.mdns, Some(false));
        assert_eq!(file.secret_file, None);
        assert_eq!(file.open, None);
        assert_eq!(
            file.bootstrap.unwrap(),
            vec!["/ip4/127.0.0.1/tcp/1", "/ip4/203.0.113.10/tcp/4001"]
        );
        // A new file is created; a broken one is refused, not overwritten.
        let fresh = dir.path().join("new/config.toml");
        write_membership(&fresh, "team", &[], false).unwrap();
        assert_eq!(
            DaemonFile::load(&fresh).unwrap().namespace.as_deref(),
            Some("team")
        );
        std::fs::write(&path, "namespace = \n").unwrap();
        assert!(write_membership(&path, "team", &[], false).is_err());
        // An I/O error is the source, not repeated in the message.
        let err = DaemonFile::load(dir.path()).unwrap_err();
        assert_eq!(err.message, "cannot read");
        assert!(matches!(err.source, Some(crate::ConfigCause::Io(_))));
        assert_eq!(
            err.to_string(),
            format!("{}: cannot read", dir.path().display())
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "namespace = \n");
    }
}
