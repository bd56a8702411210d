//! devmesh's configuration files: the daemon's `config.toml` and a
//! project's `devmesh.toml`.
//!
//! Both are parsed strictly: an unknown key or a bad value is an error that
//! names the file, the line and the key.
//!
//! ```no_run
//! let project = mesh_config::Project::load(std::path::Path::new("devmesh.toml"))?;
//! for (name, service) in &project.services {
//!     match service.port {
//!         Some(port) => println!("{name} on port {port}"),
//!         None => println!("{name}: started by `devmesh up`, not shared"),
//!     }
//! }
//! # Ok::<(), mesh_config::ConfigError>(())
//! ```

mod compose;
mod daemon;
mod observe;
mod project;

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

pub use compose::{ComposeFile, ComposeHealth, ComposeSection, ComposeService, Mount, PortBinding};
pub use daemon::{DaemonFile, RoutingSection, write_membership};
pub use observe::{InspectSection, LogSection, SizeError, parse_size};
pub use project::edit;
pub use project::up::{Condition, DEFAULT_STOP_TIMEOUT, Prefer, RestartPolicy, STOP_SIGNALS};
pub use project::{DockerSection, MeshSection, PROJECT_FILE, Project, ProxySection, ServiceConfig};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// Dotted key of the problem, when known: `services.api.version`.
    pub key: Option<String>,
    /// What is wrong and what to do; empty when the source says it all.
    pub message: String,
    /// The I/O or TOML error underneath, when there is one. The message
    /// does not repeat it: print the error with its chain (`{:#}`).
    #[source]
    pub source: Option<ConfigCause>,
}

/// The error of another library under a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigCause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not TOML that can be edited.
    #[error(transparent)]
    Toml(Box<toml_edit::TomlError>),
}

impl From<toml_edit::TomlError> for ConfigCause {
    fn from(e: toml_edit::TomlError) -> Self {
        Self::Toml(Box::new(e))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error of the whole file at `path`: `message` (may be empty) and
    /// the error underneath.
    pub(crate) fn of_file(path: &Path, message: &str, cause: impl Into<ConfigCause>) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            key: None,
            message: message.to_owned(),
            source: Some(cause.into()),
        }
    }

    fn io(path: &Path, e: std::io::Error) -> Self {
        Self::of_file(path, "cannot read", e)
    }

    fn at(
        path: &Path,
        source: &str,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> Self {
        Self {
            path: path.to_owned(),
            line: span.map(|s| line_of(source, s.start)),
            key,
            message,
            source: None,
        }
    }

    /// An error at `line` (1-based) of `path`, when known.
    pub(crate) fn at_line(
        path: &Path,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    ) -> Self {
        Self {
            path: path.to_owned(),
            line,
            key,
            message,
            source: None,
        }
    }

    fn from_toml(path: &Path, source: &str, e: toml::de::Error) -> Self {
        let span = e.span();
        // For unknown keys and wrong types the span covers the key or value;
        // name the key when the span is a bare key.
        // For a value of the wrong type, the key is what precedes it on its
        // line (`port = "soon"`).
        let key = span.clone().and_then(|s| {
            let text = source.get(s.clone())?.trim();
            if e.message().contains("unknown field") {
                return bare_key(text).then(|| text.to_owned());
            }
            let line_start = source.get(..s.start)?.rfind('\n').map_or(0, |i| i + 1);
            let (key, rest) = source.get(line_start..s.start)?.split_once('=')?;
            let key = key.trim();
            (rest.trim().is_empty() && bare_key(key)).then(|| key.to_owned())
        });
        let message = e.message().trim().to_owned();
        Self::at(path, source, span, key, message)
    }
}

/// A duration setting that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a duration ({source}); write it like \"5s\" or \"500ms\"")]
pub struct DurationError {
    /// What was written.
    pub text: String,
    #[source]
    source: humantime::DurationError,
}

/// Parses a duration setting such as `5s`, `500ms` or `1m 30s` (the
/// config files, and the daemon's flags and environment variables).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|source| DurationError {
        text: text.to_owned(),
        source,
    })
}

/// A TOML bare key: letters, digits, `_` and `-`.
fn bare_key(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))
}
