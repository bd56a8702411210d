//! The keys of raw TCP services in `devmesh.toml`: `protocol = "tcp"` on
//! the provider's side, `listen` on the consumer's.

use super::{ServiceConfig, up::Invalid};

impl ServiceConfig {
    /// Whether the service is shared as raw TCP (validated at load).
    pub fn is_tcp(&self) -> bool {
        self.protocol.as_ref().is_some_and(|p| p.get_ref() == "tcp")
    }

    /// The port this node listens on for a teammate's provider of this
    /// TCP service when the provider's port is taken here.
    pub fn listen_port(&self) -> Option<u16> {
        self.listen.as_ref().map(|l| *l.get_ref())
    }

    /// Checks `protocol` and `listen`, and that a TCP service has none of
    /// the HTTP-only keys.
    pub(super) fn validate_tcp(&self) -> Result<(), Invalid> {
        let invalid = |span, key: &str, message: String| {
            Err(Invalid {
                span: Some(span),
                key: key.to_owned(),
                message,
            })
        };
        if let Some(p) = &self.protocol
            && !matches!(p.get_ref().as_str(), "http" | "tcp")
        {
            return invalid(
                p.span(),
                "protocol",
                format!(
                    "protocol {:?} is not supported; use \"http\" or \"tcp\" (raw bytes: a database, Redis)",
                    p.get_ref()
                ),
            );
        }
        if let Some(listen) = &self.listen {
            if *listen.get_ref() == 0 {
                return invalid(
                    listen.span(),
                    "listen",
                    "listen must be a port between 1 and 65535".into(),
                );
            }
            if !self.is_tcp() {
                return invalid(
                    listen.span(),
                    "listen",
                    "listen is the local port of a TCP service; add protocol = \"tcp\"".into(),
                );
            }
        }
        if self.is_tcp() {
            let http_only = [
                self.routes.first().map(|r| (r.span(), "routes")),
                self.scheme.as_ref().map(|s| (s.span(), "scheme")),
            ];
            if let Some((span, key)) = http_only.into_iter().flatten().next() {
                return invalid(
                    span,
                    key,
                    format!("`{key}` is for HTTP services; a TCP service has none"),
                );
            }
            if self.health.as_ref().is_some_and(|h| h.get_ref() != "tcp") {
                let span = self.health.as_ref().map(|h| h.span()).unwrap_or_default();
                return invalid(
                    span,
                    "health",
                    "a TCP service is checked with health = \"tcp\" (a connect to its port)".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Project;

    fn parse(s: &str) -> Result<Project, crate::ConfigError> {
        Project::parse(Path::new("/p/devmesh.toml"), s)
    }

    #[test]
    fn tcp_services_and_listen_ports() {
        let p = parse(
            "[services.db]\nport = 5432\nversion = \"15.4.0\"\nprotocol = \"tcp\"\nhealth = \"tcp\"\n\n[services.cache]\nport = 6379\nprotocol = \"tcp\"\nlisten = 16379\n",
        )
        .unwrap();
        assert!(p.services["db"].is_tcp());
        assert_eq!(p.services["db"].listen_port(), None);
        assert_eq!(p.services["cache"].listen_port(), Some(16379));
        assert!(!parse("[services.api]\nport = 1\n").unwrap().services["api"].is_tcp());
    }

    #[test]
    fn bad_tcp_keys_name_file_line_and_key() {
        let cases = [
            ("protocol = \"udp\"", 3, "services.db.protocol", "\"tcp\""),
            (
                "protocol = \"tcp\"\nlisten = 0",
                4,
                "services.db.listen",
                "between 1",
            ),
            (
                "listen = 15432",
                3,
                "services.db.listen",
                "protocol = \"tcp\"",
            ),
            (
                "protocol = \"tcp\"\nroutes = [\"/x\"]",
                4,
                "services.db.routes",
                "HTTP services",
            ),
            (
                "protocol = \"tcp\"\nscheme = \"https\"",
                4,
                "services.db.scheme",
                "HTTP services",
            ),
            (
                "protocol = \"tcp\"\nhealth = \"/healthz\"",
                4,
                "services.db.health",
                "health = \"tcp\"",
            ),
        ];
        for (lines, line, key, text) in cases {
            let e = parse(&format!("[services.db]\nport = 5432\n{lines}\n")).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.message.contains(text), "{e}");
        }
    }
}
