//! The `[services.<name>]` keys of `devmesh up`: how a service is started,
//! supervised and stopped, and what it waits for.

use std::{
    collections::BTreeMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_core::health::{self, Setting};

use super::ServiceConfig;

/// Default of `stop_timeout`: the time a service gets between its stop
/// signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `stop_timeout` accepted.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(600);

/// The signals `stop_signal` accepts, by their full name.
pub const STOP_SIGNALS: [&str; 7] = [
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL",
];

/// `restart` of a service: what `devmesh up` does when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// `"no"`: a service that ends stays `exited`.
    #[default]
    No,
    /// `"on-failure"`: restarted when it ends with a non-zero status or a
    /// signal.
    OnFailure,
    /// `"always"`: restarted whenever it ends, unless it was stopped.
    Always,
}

/// What a service waits for in a dependency (`depends_on = { db = "healthy" }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// `"started"`: its process has been spawned, or it runs on the mesh.
    Started,
    /// `"healthy"`: it is ready (its `ready_log_line` appeared or its
    /// `health` check passed), or it runs healthy on the mesh.
    Healthy,
    /// `"completed_successfully"`: it ran and exited with status 0 (a job
    /// such as a migration).
    CompletedSuccessfully,
}

/// `prefer` of a service: where `devmesh up` gets it from when another
/// service depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Prefer {
    /// `"mesh"`: a teammate's healthy provider in a version that satisfies
    /// `requires` is used, and nothing starts locally.
    #[default]
    Mesh,
    /// `"local"`: always started on this machine.
    Local,
}

macro_rules! keyword_enum {
    ($ty:ty { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The value as written in `devmesh.toml`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the value as written in `devmesh.toml`.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(RestartPolicy { No = "no", OnFailure = "on-failure", Always = "always" });
keyword_enum!(Condition {
    Started = "started",
    Healthy = "healthy",
    CompletedSuccessfully = "completed_successfully",
});
keyword_enum!(Prefer { Mesh = "mesh", Local = "local" });

/// A bad `devmesh up` key of one service: its span, its key below
/// `services.<name>` and what is wrong.
pub(super) struct Invalid {
    pub(super) span: Option<Range<usize>>,
    pub(super) key: String,
    pub(super) message: String,
}

fn invalid<T>(span: Range<usize>, key: impl Into<String>, message: String) -> Result<T, Invalid> {
    Err(Invalid {
        span: Some(span),
        key: key.into(),
        message,
    })
}

/// What is wrong with a `$` in an `env` value.
enum BadPlaceholder {
    /// An unknown `${...}` placeholder, or an unclosed `${`.
    Unknown(String),
    /// `${port}` in a service without `port`.
    NoPort,
}

/// Replaces `${port}` with `port` and `$$` with `$`; any other `$` stays.
fn expand(value: &str, port: Option<u16>) -> Result<String, BadPlaceholder> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                return Err(BadPlaceholder::Unknown(format!("${{{inner}")));
            };
            match &inner[..end] {
                "port" => out.push_str(&port.ok_or(BadPlaceholder::NoPort)?.to_string()),
                other => return Err(BadPlaceholder::Unknown(format!("${{{other}}}"))),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `path` (relative to `devmesh.toml`) made absolute against `project_dir`.
fn in_project(project_dir: &Path, path: &str) -> PathBuf {
    project_dir.join(path)
}

impl ServiceConfig {
    /// `restart` (validated at load); `no` when absent.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart
            .as_ref()
            .and_then(|r| RestartPolicy::parse(r.get_ref()))
            .unwrap_or_default()
    }

    /// `max_restarts`; `None` is no limit.
    pub fn max_restarts(&self) -> Option<u32> {
        self.max_restarts.as_ref().map(|m| *m.get_ref())
    }

    /// `prefer` (validated at load); `mesh` when absent.
    pub fn prefer(&self) -> Prefer {
        self.prefer
            .as_ref()
            .and_then(|p| Prefer::parse(p.get_ref()))
            .unwrap_or_default()
    }

    /// `depends_on` with parsed conditions (validated at load).
    pub fn depends_on(&self) -> BTreeMap<String, Condition> {
        self.depends_on
            .iter()
            .filter_map(|(dep, c)| Some((dep.clone(), Condition::parse(c.get_ref())?)))
            .collect()
    }

    /// `stop_signal` by its full name (`"SIGTERM"` when absent); a name
    /// written without `SIG` gets it.
    pub fn stop_signal(&self) -> &'static str {
        self.stop_signal
            .as_ref()
            .and_then(|s| stop_signal(s.get_ref()))
            .unwrap_or(STOP_SIGNALS[0])
    }

    /// `stop_timeout` (validated at load); 10s when absent.
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
            .as_ref()
            .and_then(|t| health::parse_duration(Setting::Timeout, t.get_ref()).ok())
            .unwrap_or(DEFAULT_STOP_TIMEOUT)
    }

    /// `env` with `${port}` replaced by the service's port.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| {
                let value = expand(v.get_ref(), self.port).unwrap_or_else(|_| v.get_ref().clone());
                (k.clone(), value)
            })
            .collect()
    }

    /// The directory the service starts in: `cwd` against `project_dir`
    /// (the directory of `devmesh.toml`), or `project_dir` itself.
    pub fn working_dir(&self, project_dir: &Path) -> PathBuf {
        self.cwd.as_ref().map_or_else(
            || project_dir.to_owned(),
            |c| in_project(project_dir, c.get_ref()),
        )
    }

    /// `env_file` against `project_dir`.
    pub fn env_file_path(&self, project_dir: &Path) -> Option<PathBuf> {
        self.env_file
            .as_ref()
            .map(|f| in_project(project_dir, f.get_ref()))
    }

    /// Checks the `devmesh up` keys of service `name`; `services` is the
    /// whole `[services]` table, for `depends_on`.
    /// `compose`: the project has a Compose file, whose services may be
    /// dependencies too.
    pub(super) fn validate_up(
        &self,
        name: &str,
        services: &BTreeMap<String, ServiceConfig>,
        compose: bool,
    ) -> Result<(), Invalid> {
        self.validate_launch()?;
        self.validate_portless()?;
        self.validate_env()?;
        self.validate_restart()?;
        self.validate_stop()?;
        self.validate_depends_on(name, services, compose)?;
        if let Some(p) = &self.prefer
            && Prefer::parse(p.get_ref()).is_none()
        {
            return invalid(
                p.span(),
                "prefer",
                format!(
                    "prefer {:?} is not known; use \"mesh\" or \"local\"",
                    p.get_ref()
                ),
            );
        }
        for pattern in &self.watch {
            let text = pattern.get_ref();
            if text.is_empty() || text.starts_with('/') || text.split('/').any(|part| part == "..")
            {
                return invalid(
                    pattern.span(),
                    "watch",
                    format!(
                        "watch pattern {text:?} must be relative to devmesh.toml and stay below it, like \"src/**\""
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_launch(&self) -> Result<(), Invalid> {
        if let Some(run) = &self.run {
            if self.command.is_some() {
                return invalid(
                    run.span(),
                    "run",
                    "`command` and `run` both say how to start the service; keep one (`command` runs through sh -c, `run` runs the program itself)".into(),
                );
            }
            if run
                .get_ref()
                .first()
                .is_none_or(|program| program.is_empty())
            {
                return invalid(
                    run.span(),
                    "run",
                    "`run` needs the program first, like run = [\"node\", \"server.js\"]".into(),
                );
            }
        }
        if let Some(cwd) = &self.cwd
            && cwd.get_ref().is_empty()
        {
            return invalid(
                cwd.span(),
                "cwd",
                "`cwd` is empty; leave it out to start in the directory of devmesh.toml".into(),
            );
        }
        if let Some(line) = &self.ready_log_line
            && line.get_ref().is_empty()
        {
            return invalid(
                line.span(),
                "ready_log_line",
                "an empty `ready_log_line` matches any line; give the text the service prints once it is ready".into(),
            );
        }
        Ok(())
    }

    /// A service without `port` is not shared: it must be something `up`
    /// starts, and nothing may need a port (a health check of a path or
    /// `tcp`, `${port}`, routes).
    fn validate_portless(&self) -> Result<(), Invalid> {
        if self.port.is_some() {
            return Ok(());
        }
        if self.command.is_none() && self.run.is_none() {
            return Err(Invalid {
                span: None,
                key: "port".to_owned(),
                message: "no `port` to share and no `command` or `run` to start: add `port = <port>` (the local port the service listens on)".to_owned(),
            });
        }
        if let Some(health) = &self.health
            && !health.get_ref().starts_with("http://")
        {
            return invalid(
                health.span(),
                "health".to_owned(),
                "a health check of a path or `tcp` needs a `port` for this service: add `port = <port>`, or check an http:// URL".to_owned(),
            );
        }
        if let Some(route) = self.routes.first() {
            return invalid(
                route.span(),
                "routes".to_owned(),
                "routes need a `port` for this service: a service without one is not shared"
                    .to_owned(),
            );
        }
        Ok(())
    }

    fn validate_env(&self) -> Result<(), Invalid> {
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return invalid(
                    value.span(),
                    format!("env.{key}"),
                    format!("{key:?} is not an environment variable name"),
                );
            }
            let message = match expand(value.get_ref(), self.port) {
                Ok(_) => continue,
                Err(BadPlaceholder::Unknown(p)) => format!(
                    "unknown placeholder `{p}`: the only one is `${{port}}` (write `$$` for a `$`)"
                ),
                Err(BadPlaceholder::NoPort) => {
                    "`${port}` needs a `port` for this service: add `port = <port>`".to_owned()
                }
            };
            return invalid(value.span(), format!("env.{key}"), message);
        }
        if let Some(file) = &self.env_file
            && file.get_ref().is_empty()
        {
            return invalid(
                file.span(),
                "env_file",
                "`env_file` is empty; give a dotenv file such as \".env\"".into(),
            );
        }
        Ok(())
    }

    fn validate_restart(&self) -> Result<(), Invalid> {
        if let Some(r) = &self.restart
            && RestartPolicy::parse(r.get_ref()).is_none()
        {
            return invalid(
                r.span(),
                "restart",
                format!(
                    "restart {:?} is not a policy; use \"no\", \"on-failure\" or \"always\"",
                    r.get_ref()
                ),
            );
        }
        if let Some(m) = &self.max_restarts {
            if self.restart_policy() == RestartPolicy::No {
                return invalid(
                    m.span(),
                    "max_restarts",
                    "`max_restarts` needs restart = \"on-failure\" or \"always\"".into(),
                );
            }
            if *m.get_ref() == 0 {
                return invalid(
                    m.span(),
                    "max_restarts",
                    "`max_restarts` must be at least 1; leave it out for no limit".into(),
                );
            }
        }
        Ok(())
    }

    fn validate_stop(&self) -> Result<(), Invalid> {
        if let Some(s) = &self.stop_signal
            && stop_signal(s.get_ref()).is_none()
        {
            return invalid(
                s.span(),
                "stop_signal",
                format!(
                    "{:?} is not a stop signal; use one of {}",
                    s.get_ref(),
                    STOP_SIGNALS.join(", ")
                ),
            );
        }
        if let Some(t) = &self.stop_timeout {
            let timeout = health::parse_duration(Setting::Timeout, t.get_ref())
                .or_else(|e| invalid(t.span(), "stop_timeout", e.message))?;
            if timeout > MAX_STOP_TIMEOUT {
                return invalid(
                    t.span(),
                    "stop_timeout",
                    format!("{:?} is out of range: use 0s to 10m", t.get_ref()),
                );
            }
        }
        Ok(())
    }

    fn validate_depends_on(
        &self,
        name: &str,
        services: &BTreeMap<String, ServiceConfig>,
        compose: bool,
    ) -> Result<(), Invalid> {
        for (dep, condition) in &self.depends_on {
            let key = format!("depends_on.{dep}");
            let Some(parsed) = Condition::parse(condition.get_ref()) else {
                return invalid(
                    condition.span(),
                    key,
                    format!(
                        "condition {:?} is not known; use \"started\", \"healthy\" or \"completed_successfully\"",
                        condition.get_ref()
                    ),
                );
            };
            if dep == name {
                return invalid(
                    condition.span(),
                    key,
                    "a service cannot depend on itself".into(),
                );
            }
            let Some(local) = services.get(dep) else {
                // With a Compose file, ComposeFile::load checks the others.
                if !self.requires.contains_key(dep) && !compose {
                    return invalid(
                        condition.span(),
                        key,
                        format!(
                            "`{dep}` is neither a service of this file nor in [services.{name}.requires]"
                        ),
                    );
                }
                if parsed == Condition::CompletedSuccessfully {
                    return invalid(
                        condition.span(),
                        key,
                        format!(
                            "`{dep}` is not a service of this file, so it never completes here; only a local job can"
                        ),
                    );
                }
                continue;
            };
            if parsed == Condition::Healthy
                && local.health.is_none()
                && local.ready_log_line.is_none()
            {
                return invalid(
                    condition.span(),
                    key,
                    format!(
                        "`{dep}` has neither `health` nor `ready_log_line`, so it never turns healthy; give it one or wait for \"started\""
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The full name of a stop signal written with or without `SIG`.
fn stop_signal(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    STOP_SIGNALS.into_iter().find(|s| *s == full)
}

#[cfg(test)]
mod tests;
