//! The observability keys of the daemon's `config.toml`: `metrics`,
//! `otlp` and the `[log]` section.

use serde::Deserialize;

/// `[log]` of the daemon's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Write one JSON line per front-door request. Default: false (true
    /// when `format = "json"`).
    pub requests: Option<bool>,
    /// Where request lines go: a file path (appended to). Default: stderr.
    pub file: Option<String>,
    /// `text` (default) or `json`: the daemon's own log lines as JSON, and
    /// the request log on.
    pub format: Option<toml::Spanned<String>>,
}
