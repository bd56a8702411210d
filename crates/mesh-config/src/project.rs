//! A project's `devmesh.toml`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use mesh_core::health::{self, HealthCheck, Probe, Setting};
use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, read};

pub mod edit;
mod tcp;
pub(crate) mod up;

/// File name of a project configuration.
pub const PROJECT_FILE: &str = "devmesh.toml";

/// A parsed and validated `devmesh.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Project {
    /// Where it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// `[mesh]`: which mesh to join.
    pub mesh: MeshSection,
    /// `[proxy]`: the local front door.
    pub proxy: ProxySection,
    /// `[services.<name>]`: the services of the project.
    pub services: BTreeMap<String, ServiceConfig>,
    /// `[docker]`: containers shared while `devmesh up` runs.
    pub docker: DockerSection,
    /// `[compose]`: a Compose file whose services `devmesh up` runs.
    pub compose: crate::ComposeSection,
}

/// `[docker]` of `devmesh.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    /// While `devmesh up` runs the project, share the local engine's
    /// containers that publish ports, as `devmesh share --docker` does.
    pub share: bool,
    /// Only the containers with this label, `KEY=VALUE`.
    pub label: Option<Spanned<String>>,
}

/// `[mesh]` of `devmesh.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSection {
    /// Namespace of the team. Default: the daemon's.
    pub namespace: Option<String>,
    /// Bootstrap multiaddrs. Default: the daemon's.
    pub bootstrap: Vec<String>,
}

/// `[proxy]` of `devmesh.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// Front-door port. Default: the daemon's (7700).
    pub port: Option<u16>,
}

/// `[services.<name>]` of `devmesh.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Local port the service listens on. A service without one (a job,
    /// a worker) is started by `devmesh up` but not shared.
    #[serde(default)]
    pub port: Option<u16>,
    /// Semantic version. Default: `0.0.0`.
    #[serde(default = "default_version")]
    pub version: Spanned<String>,
    /// Command that starts the service (for `devmesh up`), run through
    /// `sh -c`. Not together with `run`.
    #[serde(default)]
    pub command: Option<String>,
    /// `http` (default) or `tcp`: raw bytes (a database, Redis), reached
    /// on other nodes through a loopback listener.
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// For a TCP service provided by a teammate: the port this node listens
    /// on when the provider's port is taken here (`devmesh connect`).
    /// Default: none.
    #[serde(default)]
    pub listen: Option<Spanned<u16>>,
    /// Path prefixes the service claims.
    #[serde(default)]
    pub routes: Vec<Spanned<String>>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Health check: a path on the backend (`"/healthz"`), an `http://`
    /// URL, or `"tcp"`. Default: none (health stays `unknown`).
    #[serde(default)]
    pub health: Option<Spanned<String>>,
    /// Time between two health checks, like `"2s"` or `"500ms"`. Default: 2s.
    #[serde(default)]
    pub health_interval: Option<Spanned<String>>,
    /// Time one check may take. Default: 1s.
    #[serde(default)]
    pub health_timeout: Option<Spanned<String>>,
    /// Passes in a row that make the service healthy. Default: 2.
    #[serde(default)]
    pub healthy_threshold: Option<Spanned<u32>>,
    /// Failures in a row that make the service unhealthy. Default: 2.
    #[serde(default)]
    pub unhealthy_threshold: Option<Spanned<u32>>,
    /// Version requirements on other services: `api = "^2.1"`.
    #[serde(default)]
    pub requires: BTreeMap<String, Spanned<String>>,
    /// The backend speaks HTTP/2 (h2c with prior knowledge, or h2 over TLS
    /// with `scheme = "https"`). Default: `false`, HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
    /// `http` (default) or `https`: whether this node connects to the
    /// backend with TLS.
    #[serde(default)]
    pub scheme: Option<Spanned<String>>,
    /// Program and arguments that start the service without a shell, for
    /// `devmesh up`: `["node", "server.js"]`. Not together with `command`.
    #[serde(default)]
    pub run: Option<Spanned<Vec<String>>>,
    /// The container that runs the service (`devmesh from-docker --write`
    /// writes it): `devmesh up` does not start it, `devmesh share
    /// --docker` shares it while the container runs.
    #[serde(default)]
    pub docker: Option<String>,
    /// Directory the service starts in, relative to `devmesh.toml`.
    /// Default: the directory of `devmesh.toml`.
    #[serde(default)]
    pub cwd: Option<Spanned<String>>,
    /// Environment of the service, on top of the daemon's; `${port}` in a
    /// value is the service's port. Default: none (`PORT` is not set).
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    /// A dotenv file read when the service starts, relative to
    /// `devmesh.toml`; `env` wins over it. Default: none.
    #[serde(default)]
    pub env_file: Option<Spanned<String>>,
    /// The service is ready when a line of its output contains this text.
    /// Default: none (ready once started, or once `health` passes).
    #[serde(default)]
    pub ready_log_line: Option<Spanned<String>>,
    /// `no` (default), `on-failure` or `always`.
    #[serde(default)]
    pub restart: Option<Spanned<String>>,
    /// Restarts in a row after which a crashing service is given up.
    /// Default: no limit.
    #[serde(default)]
    pub max_restarts: Option<Spanned<u32>>,
    /// Services started first, each with the condition to wait for:
    /// `db = "healthy"`, `migrate = "completed_successfully"`,
    /// `cache = "started"`.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Spanned<String>>,
    /// Signal that asks the service to stop. Default: `SIGTERM`.
    #[serde(default)]
    pub stop_signal: Option<Spanned<String>>,
    /// Time between the stop signal and SIGKILL to the service's whole
    /// process group. Default: 10s.
    #[serde(default)]
    pub stop_timeout: Option<Spanned<String>>,
    /// `mesh` (default: a teammate's healthy provider in a satisfying
    /// version is used instead of a local start) or `local`.
    #[serde(default)]
    pub prefer: Option<Spanned<String>>,
    /// Files whose change restarts the service, as glob patterns relative
    /// to `devmesh.toml`: `["src/**"]`. Default: none.
    #[serde(default)]
    pub watch: Vec<Spanned<String>>,
}

fn default_version() -> Spanned<String> {
    Spanned::new(0..0, "0.0.0".to_owned())
}

impl ServiceConfig {
    /// The backend scheme, `http` or `https` (validated at load).
    pub fn scheme(&self) -> &str {
        self.scheme
            .as_ref()
            .map_or("http", |s| s.get_ref().as_str())
    }

    /// The parsed version (validated at load).
    pub fn version(&self) -> semver::Version {
        semver::Version::parse(self.version.get_ref())
            .unwrap_or_else(|_| semver::Version::new(0, 0, 0))
    }

    /// The health check (validated at load); `None` without `health`.
    pub fn health_check(&self) -> Option<HealthCheck> {
        self.try_health_check().ok().flatten()
    }

    /// The health check, or the setting at fault with its span.
    fn try_health_check(
        &self,
    ) -> Result<Option<HealthCheck>, (health::HealthError, Option<std::ops::Range<usize>>)> {
        let Some(target) = &self.health else {
            let stray = [
                self.health_interval
                    .as_ref()
                    .map(|v| (Setting::Interval, v.span())),
                self.health_timeout
                    .as_ref()
                    .map(|v| (Setting::Timeout, v.span())),
                self.healthy_threshold
                    .as_ref()
                    .map(|v| (Setting::HealthyThreshold, v.span())),
                self.unhealthy_threshold
                    .as_ref()
                    .map(|v| (Setting::UnhealthyThreshold, v.span())),
            ];
            if let Some((setting, span)) = stray.into_iter().flatten().next() {
                let error = health::HealthError {
                    setting,
                    message: format!(
                        "`{}` needs `health` (a path such as \"/healthz\", an http:// URL, or \"tcp\")",
                        setting.config_key()
                    ),
                };
                return Err((error, Some(span)));
            }
            return Ok(None);
        };
        let probe = Probe::parse(target.get_ref()).map_err(|e| (e, Some(target.span())))?;
        let mut check = HealthCheck::new(probe);
        let mut spans = Vec::new();
        if let Some(v) = &self.health_interval {
            check.interval = health::parse_duration(Setting::Interval, v.get_ref())
                .map_err(|e| (e, Some(v.span())))?;
            spans.push((Setting::Interval, v.span()));
        }
        if let Some(v) = &self.health_timeout {
            check.timeout = health::parse_duration(Setting::Timeout, v.get_ref())
                .map_err(|e| (e, Some(v.span())))?;
            spans.push((Setting::Timeout, v.span()));
        }
        if let Some(v) = &self.healthy_threshold {
            check.healthy_threshold = *v.get_ref();
            spans.push((Setting::HealthyThreshold, v.span()));
        }
        if let Some(v) = &self.unhealthy_threshold {
            check.unhealthy_threshold = *v.get_ref();
            spans.push((Setting::UnhealthyThreshold, v.span()));
        }
        check.validate().map_err(|e| {
            let span = spans
                .iter()
                .find(|(s, _)| *s == e.setting)
                .map(|(_, span)| span.clone());
            (e, span)
        })?;
        Ok(Some(check))
    }
}

impl Project {
    /// Looks for `devmesh.toml` in `dir` and its parents.
    pub fn find(dir: &Path) -> Option<PathBuf> {
        dir.ancestors()
            .map(|d| d.join(PROJECT_FILE))
            .find(|p| p.is_file())
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Parses and validates the text of `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let mut project: Project =
            toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, e))?;
        project.path = path.to_owned();
        project.validate(source)?;
        Ok(project)
    }

    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let err = |span, key: String, message: String| {
            Err(ConfigError::at(
                &self.path,
                source,
                span,
                Some(key),
                message,
            ))
        };
        if let Some(label) = &self.docker.label
            && !label.get_ref().contains('=')
        {
            return err(
                Some(label.span()),
                "docker.label".into(),
                format!(
                    "{:?} is not KEY=VALUE, such as \"devmesh.share=true\"",
                    label.get_ref()
                ),
            );
        }
        for (name, service) in &self.services {
            if !valid_name(name) {
                let span = source.find(&format!("services.{name}")).map(|i| i..i);
                return err(
                    span,
                    format!("services.{name}"),
                    format!(
                        "{name:?} is not a valid service name: use 1-63 lowercase letters, digits or '-'"
                    ),
                );
            }
            if service.port == Some(0) {
                let span = source.find(&format!("services.{name}")).map(|i| i..i);
                return err(
                    span,
                    format!("services.{name}.port"),
                    "port must be between 1 and 65535".into(),
                );
            }
            if let Err(e) = semver::Version::parse(service.version.get_ref()) {
                return err(
                    Some(service.version.span()),
                    format!("services.{name}.version"),
                    format!(
                        "{:?} is not a semantic version ({e}); write it like \"1.4.2\"",
                        service.version.get_ref()
                    ),
                );
            }
            if let Err(e) = service.validate_tcp() {
                return err(e.span, format!("services.{name}.{}", e.key), e.message);
            }
            if let Some(scheme) = &service.scheme
                && !matches!(scheme.get_ref().as_str(), "http" | "https")
            {
                return err(
                    Some(scheme.span()),
                    format!("services.{name}.scheme"),
                    format!(
                        "scheme {:?} is not supported; use \"http\" or \"https\" (the backend's own TLS)",
                        scheme.get_ref()
                    ),
                );
            }
            for route in &service.routes {
                if !route.get_ref().starts_with('/') {
                    return err(
                        Some(route.span()),
                        format!("services.{name}.routes"),
                        format!("route {:?} must start with '/'", route.get_ref()),
                    );
                }
            }
            if let Err((e, span)) = service.try_health_check() {
                let span = span.or_else(|| source.find(&format!("services.{name}")).map(|i| i..i));
                return err(
                    span,
                    format!("services.{name}.{}", e.setting.config_key()),
                    e.message,
                );
            }
            if let Err(e) = service.validate_up(name, &self.services, self.compose.file.is_some()) {
                let span = e
                    .span
                    .or_else(|| source.find(&format!("services.{name}")).map(|i| i..i));
                return err(span, format!("services.{name}.{}", e.key), e.message);
            }
            for (dep, req) in &service.requires {
                if let Err(e) = semver::VersionReq::parse(req.get_ref()) {
                    return err(
                        Some(req.span()),
                        format!("services.{name}.requires.{dep}"),
                        format!(
                            "{:?} is not a version requirement ({e}); write it like \"^2.1\"",
                            req.get_ref()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Project, ConfigError> {
        Project::parse(Path::new("/p/devmesh.toml"), s)
    }

    #[test]
    fn a_docker_label_is_key_equals_value() {
        let p = parse("[docker]\nshare = true\nlabel = \"devmesh.share=true\"\n").unwrap();
        assert!(p.docker.share);
        let e = parse("[docker]\nshare = true\nlabel = \"shared\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/p/devmesh.toml:3: key `docker.label`: \"shared\" is not KEY=VALUE, such as \"devmesh.share=true\""
        );
    }

    #[test]
    fn parses_a_full_file() {
        let p = parse(
            r#"
[mesh]
namespace = "team"
bootstrap = ["/ip4/203.0.113.7/tcp/4001"]

[proxy]
port = 7701

[services.api]
port = 3000
version = "1.4.2"
command = "python3 -m http.server 3000"
routes = ["/api/"]
health = "/healthz"

[services.web]
port = 5173
[services.web.requires]
api = "^1.4"

[services.grpc]
port = 50051
http2 = true
scheme = "https"
"#,
        )
        .unwrap();
        assert!(p.services["grpc"].http2);
        assert_eq!(p.services["grpc"].scheme(), "https");
        assert!(!p.services["api"].http2);
        assert_eq!(p.services["api"].scheme(), "http");
        assert_eq!(p.mesh.namespace.as_deref(), Some("team"));
        assert_eq!(p.proxy.port, Some(7701));
        assert_eq!(p.services["api"].version(), semver::Version::new(1, 4, 2));
        assert_eq!(p.services["web"].version(), semver::Version::new(0, 0, 0));
        assert_eq!(p.services["web"].requires["api"].get_ref(), "^1.4");
        let check = p.services["api"].health_check().unwrap();
        assert_eq!(check.probe, Probe::Path("/healthz".into()));
        assert_eq!(check.interval, health::DEFAULT_INTERVAL);
        assert_eq!(p.services["web"].health_check(), None);
    }

    #[test]
    fn health_settings() {
        let p = parse(
            "[services.api]\nport = 3000\nhealth = \"tcp\"\nhealth_interval = \"500ms\"\nhealth_timeout = \"200ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 3\n",
        )
        .unwrap();
        let check = p.services["api"].health_check().unwrap();
        assert_eq!(
            (check.probe, check.interval, check.timeout),
            (
                Probe::Tcp,
                std::time::Duration::from_millis(500),
                std::time::Duration::from_millis(200)
            )
        );
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 3));

        let cases = [
            (
                "health = \"healthz\"",
                3,
                "services.api.health",
                "is not a health check",
            ),
            (
                "health = \"/h\"\nhealth_interval = \"2 parsecs\"",
                4,
                "services.api.health_interval",
                "is not a duration",
            ),
            (
                "health = \"/h\"\nhealth_interval = \"10ms\"",
                4,
                "services.api.health_interval",
                "out of range",
            ),
            (
                "health = \"/h\"\nhealth_timeout = \"0s\"",
                4,
                "services.api.health_timeout",
                "out of range",
            ),
            (
                "health = \"/h\"\nhealthy_threshold = 0",
                4,
                "services.api.healthy_threshold",
                "out of range",
            ),
            (
                "health = \"/h\"\n\nunhealthy_threshold = 500",
                5,
                "services.api.unhealthy_threshold",
                "1 to 100",
            ),
            (
                "health_interval = \"1s\"",
                3,
                "services.api.health_interval",
                "needs `health`",
            ),
        ];
        for (lines, line, key, text) in cases {
            let e = parse(&format!("[services.api]\nport = 3000\n{lines}\n")).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.message.contains(text), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/p/devmesh.toml:{line}: key `{key}`")),
                "{e}"
            );
        }
        // A negative threshold is a type error of the file, on its line.
        let e = parse("[services.api]\nport = 3000\nhealth = \"/h\"\nhealthy_threshold = -1\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("[services.api]\nport = 3000\nversion = \"one\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("services.api.version"))
        );
        assert!(
            e.to_string().starts_with(
                "/p/devmesh.toml:3: key `services.api.version`: \"one\" is not a semantic version"
            ),
            "{e}"
        );

        let e = parse("[services.api]\nport = 3000\nprot = 1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("prot")));

        let e = parse("[services.api]\nport = \"x\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));

        let e = parse("[services.api]\nversion = \"1.0.0\"\n").unwrap_err();
        assert!(e.message.contains("port"), "{e}");

        let e = parse("[services.Api]\nport = 1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("services.Api")));

        let e = parse("[services.web]\nport = 1\n[services.web.requires]\napi = \"~>2\"\n")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("services.web.requires.api"))
        );

        let e = parse("[services.db]\nport = 5432\nprotocol = \"udp\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));

        let e = parse("[services.api]\nport = 8443\nscheme = \"tls\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("services.api.scheme"))
        );
        assert!(e.message.contains("\"https\""), "{e}");

        let e = parse("[services.api]\nport = 8443\nhttp2 = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn find_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PROJECT_FILE), "").unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(Project::find(&sub), Some(dir.path().join(PROJECT_FILE)));
    }
}
