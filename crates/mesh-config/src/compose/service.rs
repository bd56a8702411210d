//! One service of a Compose file, as a container to run: image, command,
//! environment, published ports, mounts, healthcheck and dependencies,
//! checked and resolved (paths absolute, conditions and restart policy
//! typed).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use docker_compose_types as dc;

use super::compose_duration;
use crate::{Condition, RestartPolicy};

/// One service of a Compose file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ComposeService {
    pub image: String,
    /// `container_name`, when the file sets one.
    pub container_name: Option<String>,
    /// `command`, split as a shell would (Compose does not run it through
    /// one).
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `environment`; a bare `NAME` takes its value from the `devmesh up`'s
    /// environment, and is left out when that has none.
    pub env: BTreeMap<String, String>,
    /// `env_file`s, absolute, read when the container is created.
    pub env_files: Vec<PathBuf>,
    pub ports: Vec<PortBinding>,
    pub mounts: Vec<Mount>,
    pub healthcheck: Option<ComposeHealth>,
    pub depends_on: BTreeMap<String, Condition>,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// From `restart: on-failure:N`.
    pub max_restarts: Option<u32>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<Duration>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub network_mode: Option<String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// The host address it is bound to; all addresses when `None`.
    pub host_ip: Option<String>,
    /// The port on the host; the engine picks one when `None`.
    pub host: Option<u16>,
    pub container: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// A volume or bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A host path (absolute) at `target`.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    /// A named volume of the project (the engine's name is
    /// `<project>_<name>`), or an anonymous one when `name` is `None`.
    Volume {
        name: Option<String>,
        target: String,
        read_only: bool,
    },
}

/// A Compose `healthcheck`, in the engine's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeHealth {
    /// `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// What is wrong with a service: its key below the file's root and why.
pub(super) struct Bad {
    pub key: String,
    pub message: String,
}

impl ComposeService {
    /// Service `name` of a file in `dir`.
    pub(super) fn from_compose(
        name: &str,
        s: &dc::Service,
        dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Bad> {
        let bad = |key: &str, message: String| Bad {
            key: format!("services.{name}.{key}"),
            message,
        };
        let Some(image) = s.image.clone() else {
            let message = if s.build_.is_some() {
                "has `build:` and no `image:`; devmesh up runs images and does not build them: build it (`docker build -t NAME .`) and name it in `image:`"
            } else {
                "is missing: name the image the service runs"
            };
            return Err(bad("image", message.into()));
        };
        let split = |key: &str, text: &str| {
            shlex::split(text).ok_or_else(|| bad(key, format!("{text:?} has an unclosed quote")))
        };
        let command = match &s.command {
            None => None,
            Some(dc::Command::Simple(text)) => Some(split("command", text)?),
            Some(dc::Command::Args(args)) => Some(args.clone()),
        };
        let entrypoint = match &s.entrypoint {
            None => None,
            Some(dc::Entrypoint::Simple(text)) => Some(split("entrypoint", text)?),
            Some(dc::Entrypoint::List(args)) => Some(args.clone()),
        };
        let (restart, max_restarts) =
            restart(s.restart.as_deref()).map_err(|m| bad("restart", m))?;
        let stop_grace_period = match &s.stop_grace_period {
            None => None,
            Some(text) => Some(compose_duration(text).ok_or_else(|| {
                bad(
                    "stop_grace_period",
                    format!("{text:?} is not a duration such as \"10s\""),
                )
            })?),
        };
        Ok(Self {
            image,
            container_name: s.container_name.clone(),
            command,
            entrypoint,
            env: environment(&s.environment, lookup),
            env_files: match &s.env_file {
                None => Vec::new(),
                Some(dc::StringOrList::Simple(f)) => vec![dir.join(f)],
                Some(dc::StringOrList::List(fs)) => fs.iter().map(|f| dir.join(f)).collect(),
            },
            ports: ports(&s.ports).map_err(|m| bad("ports", m))?,
            mounts: mounts(&s.volumes, dir).map_err(|m| bad("volumes", m))?,
            healthcheck: healthcheck(s.healthcheck.as_ref()).map_err(|m| bad("healthcheck", m))?,
            depends_on: depends_on(&s.depends_on).map_err(|m| bad("depends_on", m))?,
            labels: match &s.labels {
                dc::Labels::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                dc::Labels::List(list) => list
                    .iter()
                    .map(|l| {
                        l.split_once('=')
                            .map_or((l.clone(), String::new()), |(k, v)| (k.into(), v.into()))
                    })
                    .collect(),
            },
            restart,
            max_restarts,
            stop_signal: s.stop_signal.clone(),
            stop_grace_period,
            working_dir: s.working_dir.clone(),
            user: s.user.clone(),
            network_mode: s.network_mode.clone(),
        })
    }

    /// The first published TCP port on the host: the one `devmesh up`
    /// shares the service on.
    pub fn shared_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == "tcp")
            .and_then(|p| p.host)
    }
}

/// `environment`; a name without a value takes it from `lookup`, and is
/// left out when that has none (as Compose does).
fn environment(
    env: &dc::Environment,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    match env {
        dc::Environment::KvPair(map) => map
            .iter()
            .filter_map(|(k, v)| match v {
                Some(v) => Some((k.clone(), v.to_string())),
                None => lookup(k).map(|v| (k.clone(), v)),
            })
            .collect(),
        dc::Environment::List(list) => list
            .iter()
            .filter_map(|entry| match entry.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => lookup(entry).map(|v| (entry.clone(), v)),
            })
            .collect(),
    }
}

/// Compose's `restart`: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
fn restart(text: Option<&str>) -> Result<(RestartPolicy, Option<u32>), String> {
    match text.map(str::trim) {
        None | Some("no" | "\"no\"") => Ok((RestartPolicy::No, None)),
        Some("always" | "unless-stopped") => Ok((RestartPolicy::Always, None)),
        Some("on-failure") => Ok((RestartPolicy::OnFailure, None)),
        Some(other) => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) => Ok((RestartPolicy::OnFailure, Some(n))),
            _ => Err(format!(
                "{other:?} is not a restart policy; use \"no\", \"always\", \"unless-stopped\" or \"on-failure[:N]\""
            )),
        },
    }
}

fn depends_on(deps: &dc::DependsOnOptions) -> Result<BTreeMap<String, Condition>, String> {
    match deps {
        dc::DependsOnOptions::Simple(list) => {
            Ok(list.iter().map(|d| (d.clone(), Condition::Started)).collect())
        }
        dc::DependsOnOptions::Conditional(map) => map
            .iter()
            .map(|(dep, c)| {
                let condition = match c.condition.as_str() {
                    "service_started" => Condition::Started,
                    "service_healthy" => Condition::Healthy,
                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                    other => {
                        return Err(format!(
                            "condition {other:?} of {dep:?} is not known; use service_started, service_healthy or service_completed_successfully"
                        ));
                    }
                };
                Ok((dep.clone(), condition))
            })
            .collect(),
    }
}

fn healthcheck(h: Option<&dc::Healthcheck>) -> Result<Option<ComposeHealth>, String> {
    let Some(h) = h.filter(|h| !h.disable) else {
        return Ok(None);
    };
    let test = match &h.test {
        None => return Ok(None),
        Some(dc::HealthcheckTest::Single(cmd)) => vec!["CMD-SHELL".to_owned(), cmd.clone()],
        Some(dc::HealthcheckTest::Multiple(list)) => list.clone(),
    };
    match test.first().map(String::as_str) {
        Some("NONE") => return Ok(None),
        Some("CMD" | "CMD-SHELL") if test.len() > 1 => {}
        _ => {
            return Err(format!(
                "test {test:?} must start with \"CMD\" or \"CMD-SHELL\" and name a command"
            ));
        }
    }
    let duration = |key: &str, text: &Option<String>| match text {
        None => Ok(None),
        Some(t) => compose_duration(t)
            .map(Some)
            .ok_or_else(|| format!("{key} {t:?} is not a duration such as \"5s\"")),
    };
    Ok(Some(ComposeHealth {
        test,
        interval: duration("interval", &h.interval)?,
        timeout: duration("timeout", &h.timeout)?,
        retries: u32::try_from(h.retries).ok().filter(|r| *r > 0),
        start_period: duration("start_period", &h.start_period)?,
    }))
}

fn ports(ports: &dc::Ports) -> Result<Vec<PortBinding>, String> {
    let mut out = Vec::new();
    match ports {
        dc::Ports::Short(list) => {
            for text in list {
                out.extend(short_port(text)?);
            }
        }
        dc::Ports::Long(list) => {
            for p in list {
                let host = match &p.published {
                    None => None,
                    Some(dc::PublishedPort::Single(n)) => Some(*n),
                    Some(dc::PublishedPort::Range(r)) => Some(
                        r.parse()
                            .map_err(|_| format!("published {r:?} is not a port; devmesh up needs one host port per container port"))?,
                    ),
                };
                out.push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host,
                    container: p.target,
                    protocol: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                });
            }
        }
    }
    Ok(out)
}

/// `[HOST_IP:][HOST:]CONTAINER[/PROTO]`, with `A-B` ranges of equal length.
fn short_port(text: &str) -> Result<Vec<PortBinding>, String> {
    let bad =
        || format!("{text:?} is not a port mapping such as \"8080:80\" or \"127.0.0.1:8080:80\"");
    let (spec, protocol) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    if !matches!(protocol, "tcp" | "udp") {
        return Err(format!("{text:?}: protocol {protocol:?} is not tcp or udp"));
    }
    let mut parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    parts.reverse();
    let (host_ip, host, container) = match parts.as_slice() {
        [container] => (None, None, *container),
        [host, container] => (None, Some(*host), *container),
        [ip, host, container] => {
            let ip = ip.trim_matches(['[', ']']);
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(bad());
            }
            (
                Some(ip.to_owned()),
                Some(*host).filter(|h| !h.is_empty()),
                *container,
            )
        }
        _ => return Err(bad()),
    };
    let range = |r: &str| -> Result<(u16, u16), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u16 = a.parse().map_err(|_| bad())?;
        let b: u16 = b.parse().map_err(|_| bad())?;
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container)?;
    let hosts = host.map(range).transpose()?;
    if let Some((h0, h1)) = hosts
        && h1 - h0 != c1 - c0
    {
        return Err(format!(
            "{text:?}: the host and container ranges differ in length"
        ));
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, container)| PortBinding {
            host_ip: host_ip.clone(),
            host: hosts.map(|(h0, _)| h0 + u16::try_from(i).unwrap_or_default()),
            container,
            protocol: protocol.to_owned(),
        })
        .collect())
}

fn mounts(volumes: &[dc::Volumes], dir: &Path) -> Result<Vec<Mount>, String> {
    let is_path = |s: &str| s.starts_with(['.', '/', '~']);
    let resolve = |s: &str| -> PathBuf {
        match s.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| dir.join(s), |h| PathBuf::from(h).join(rest)),
            None => dir.join(s),
        }
    };
    volumes
        .iter()
        .map(|v| match v {
            dc::Volumes::Simple(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [target] => (None, *target, ""),
                    [source, target] => (Some(*source), *target, ""),
                    [source, target, mode] => (Some(*source), *target, *mode),
                    _ => return Err(format!("{text:?} is not SOURCE:TARGET[:MODE]")),
                };
                let read_only = mode.split(',').any(|m| m == "ro");
                Ok(match source {
                    Some(s) if is_path(s) => Mount::Bind {
                        source: resolve(s),
                        target: target.into(),
                        read_only,
                    },
                    name => Mount::Volume {
                        name: name.map(str::to_owned),
                        target: target.into(),
                        read_only,
                    },
                })
            }
            dc::Volumes::Advanced(a) => match a._type.as_str() {
                "bind" => Ok(Mount::Bind {
                    source: resolve(a.source.as_deref().ok_or("a bind mount needs a source")?),
                    target: a.target.clone(),
                    read_only: a.read_only,
                }),
                "volume" => Ok(Mount::Volume {
                    name: a.source.clone(),
                    target: a.target.clone(),
                    read_only: a.read_only,
                }),
                other => Err(format!(
                    "mount type {other:?} is not supported; use bind or volume"
                )),
            },
        })
        .collect()
}
