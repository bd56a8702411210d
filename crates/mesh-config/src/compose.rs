//! The Compose file a project names in `[compose] file = …`: its services,
//! as `devmesh up` runs them through the container engine.
//!
//! Compose is a file format here, read with `docker-compose-types`; nothing
//! shells out to `docker compose`. Variables (`${VAR}`, `${VAR:-default}`,
//! `${VAR:?message}`, `$$`) are interpolated first, from the environment of
//! the `devmesh up` and then the `.env` next to the file, as Compose does.
//! What devmesh cannot run (a `build:` without an `image:`, a UDP port, a
//! port range without a host side) is an error that names the file, the
//! line and the key; keys that do not change how a container runs on one
//! machine (`deploy`, `profiles`…) are ignored.

mod interpolate;
mod service;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

pub use self::service::{ComposeHealth, ComposeService, Mount, PortBinding};
use crate::{ConfigError, Project, read};

/// `[compose]` of `devmesh.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeSection {
    /// The Compose file, relative to `devmesh.toml`.
    pub file: Option<Spanned<String>>,
    /// The Compose project name (container and network names start with
    /// it). Default: the file's `name:`, else the directory's name.
    pub project: Option<Spanned<String>>,
}

/// A parsed Compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The Compose project name.
    pub project: String,
    /// Its services by name, in file order of their names.
    pub services: BTreeMap<String, ComposeService>,
}

impl ComposeFile {
    /// The Compose file `project` names, read and interpolated with `env`
    /// (the variables of the `devmesh up`) over the `.env` beside it;
    /// `None` when `devmesh.toml` has no `[compose] file`.
    pub fn load(
        project: &Project,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(file) = &project.compose.file else {
            return Ok(None);
        };
        let dir = project.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(file.get_ref());
        let source = read(&path)?;
        let dotenv = read_dotenv(&path.with_file_name(".env"))?;
        let lookup = |name: &str| env.get(name).or_else(|| dotenv.get(name)).cloned();
        let name = project
            .compose
            .project
            .as_ref()
            .map(|p| p.get_ref().as_str());
        let file = Self::parse(&path, &source, &lookup, name)?;
        for (service, config) in &project.services {
            let known = |dep: &String| {
                project.services.contains_key(dep)
                    || file.services.contains_key(dep)
                    || config.requires.contains_key(dep)
            };
            if let Some(dep) = config.depends_on.keys().find(|d| !known(d)) {
                return Err(ConfigError::at_line(
                    &project.path,
                    None,
                    Some(format!("services.{service}.depends_on.{dep}")),
                    format!(
                        "`{dep}` is neither a service of this file, nor of {}, nor in [services.{service}.requires]",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Some(file))
    }

    /// Parses the text of the Compose file `path`; `lookup` gives the
    /// variables, `project` the project name when `devmesh.toml` sets one.
    pub fn parse(
        path: &Path,
        source: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        project: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let text = interpolate::interpolate(source, lookup)
            .map_err(|e| ConfigError::at_line(path, Some(e.line), e.key, e.message))?;
        let file: docker_compose_types::Compose = serde_norway::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            ConfigError::at_line(path, line, None, e.to_string())
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let project = project
            .map(str::to_owned)
            .or(file.name.clone())
            .unwrap_or_else(|| default_project(dir));
        let mut services = BTreeMap::new();
        for (name, service) in &file.services.0 {
            let service = service.clone().unwrap_or_default();
            let parsed =
                ComposeService::from_compose(name, &service, dir, lookup).map_err(|e| {
                    ConfigError::at_line(path, service_line(source, name), Some(e.key), e.message)
                })?;
            services.insert(name.clone(), parsed);
        }
        for (name, service) in &services {
            if let Some(dep) = service
                .depends_on
                .keys()
                .find(|d| !services.contains_key(*d))
            {
                return Err(ConfigError::at_line(
                    path,
                    service_line(source, name),
                    Some(format!("services.{name}.depends_on")),
                    format!("{dep:?} is not a service of this file"),
                ));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            project: sanitize_project(&project),
            services,
        })
    }
}

/// The `.env` next to the Compose file, or nothing when there is none.
fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    if !path.is_file() {
        return Ok(BTreeMap::new());
    }
    let source = read(path)?;
    Ok(source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), unquoted.to_owned())
        })
        .collect())
}

/// Compose's default project name: the directory's.
fn default_project(dir: &Path) -> String {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    dir.file_name().map_or_else(
        || "devmesh".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A project name as Compose makes it: lowercase letters, digits, `-` and
/// `_`.
fn sanitize_project(name: &str) -> String {
    let cleaned: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if cleaned.is_empty() {
        "devmesh".to_owned()
    } else {
        cleaned
    }
}

/// The line (1-based) where service `name` starts in `source`: the first
/// indented `name:` line after `services:`.
fn service_line(source: &str, name: &str) -> Option<usize> {
    let start = source.lines().position(|l| l.trim_end() == "services:")?;
    source
        .lines()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| {
            l.starts_with(char::is_whitespace)
                && l.trim_start().trim_end().trim_end_matches(':') == name
                && l.trim_end().ends_with(':')
        })
        .map(|(i, _)| i + 1)
}

/// A Compose duration (`30s`, `1m30s`, `500ms`).
pub(crate) fn compose_duration(text: &str) -> Option<Duration> {
    crate::parse_duration(text).ok()
}
