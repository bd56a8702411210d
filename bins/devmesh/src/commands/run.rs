//! `devmesh run` and `devmesh stop`: sharing a local service, with its
//! defaults from `[services.<name>]` of the nearest devmesh.toml.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use mesh_config::{Project, ServiceConfig};
use mesh_control::{HealthSpec, Request, RunResult, ServiceSpec};
use mesh_core::{
    health::{HealthCheck, HealthError, Probe, Setting, parse_duration},
    record::ServiceProtocol,
};

use crate::{
    Failure,
    cli::{HealthFlags, RunArgs},
    daemon, output,
};

/// `devmesh run`: registers the service and, unless `--detach`, holds it
/// until Ctrl-C, SIGTERM or the daemon stops.
pub async fn run(home: &Path, args: RunArgs) -> Result<(), Failure> {
    let (detach, json) = (args.detach, args.json);
    let (spec, wanted_namespace) = service_spec(args)?;
    let port = spec.port;
    let mut client = daemon::connect_or_start(home).await?;
    let status: mesh_control::Status = client.call_as(&Request::Status).await?;
    audience(&status, &spec.name, wanted_namespace.as_deref());
    let result: RunResult = client
        .call_as(&Request::Run {
            service: spec.clone(),
            hold: !detach,
        })
        .await?;
    output::emit(json, &result, |result| {
        println!("{}", result.url);
        eprintln!(
            "devmesh: sharing {}@{} as {}{}",
            result.name,
            result.version,
            result.url,
            if detach { "" } else { " (Ctrl-C to stop)" }
        );
    });
    if !answers(port).await {
        eprintln!(
            "devmesh: warning: nothing answers on localhost port {port} yet; requests for {} fail until the service listens there",
            result.name
        );
    }
    if detach {
        return Ok(());
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = client.closed() => {
                eprintln!(
                    "devmesh: devmeshd stopped; {} is no longer shared (waiting up to {}s for devmeshd to come back)",
                    result.name,
                    REATTACH.as_secs()
                );
                tokio::select! {
                    back = reattach(home, &spec) => client = back?,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = sigterm.recv() => return Ok(()),
                }
                eprintln!("devmesh: devmeshd is back; sharing {} again", result.name);
            }
        }
    }
    // Closing the connection withdraws the service; stop explicitly
    // as well so the withdrawal is done before we exit.
    let _ = client
        .call(&Request::Stop {
            name: result.name.clone(),
        })
        .await;
    eprintln!("devmesh: stopped sharing {}", result.name);
    Ok(())
}

/// Says who will reach the service: everyone who knows the name of an open
/// namespace, or nobody of the team when devmesh.toml names another one.
fn audience(status: &mesh_control::Status, service: &str, wanted: Option<&str>) {
    if status.role == "relay" {
        return;
    }
    if let Some(wanted) = wanted
        && status.namespace != wanted
    {
        eprintln!(
            "devmesh: warning: devmesh.toml names namespace {wanted}, but this node is in {}; teammates in {wanted} will not see {service} until this node joins it (`devmesh join <invite token>`)",
            status.namespace
        );
    }
    if !status.has_secret {
        eprintln!(
            "devmesh: namespace {} is open (no secret): any node that knows its name can reach {service}, and mDNS finds this node for anyone on the LAN; `devmesh invite` makes it private",
            status.namespace
        );
    }
}

/// How long `devmesh run` waits for its daemon to come back after losing it
/// (a service manager restarting it, `devmesh daemon stop && start`).
const REATTACH: std::time::Duration = std::time::Duration::from_secs(10);

/// Registers `spec` again, held, with the daemon that comes back within
/// [`REATTACH`]; an error when none does or it refuses.
async fn reattach(home: &Path, spec: &ServiceSpec) -> Result<mesh_control::Client, Failure> {
    let deadline = std::time::Instant::now() + REATTACH;
    loop {
        if let Ok(mut client) = daemon::connect(home).await {
            let ask = Request::Run {
                service: spec.clone(),
                hold: true,
            };
            match client.call(&ask).await {
                Ok(_) => return Ok(client),
                // A daemon that refuses the service: say why.
                Err(e @ mesh_control::ControlError::Refused(_)) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!(
                            "sharing {} again with the restarted devmeshd",
                            spec.name
                        ))
                        .into());
                }
                // One still going away (its socket not yet gone): not back.
                Err(_) => {}
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(anyhow::Error::new(daemon::Unreachable(format!(
                "devmeshd stopped and did not come back within {}s; {} is no longer shared",
                REATTACH.as_secs(),
                spec.name
            )))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether something accepts TCP connections on `port` of this machine
/// (127.0.0.1 or ::1, where the node connects to local backends).
async fn answers(port: u16) -> bool {
    let try_connect = |addr: std::net::SocketAddr| async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    };
    try_connect((std::net::Ipv4Addr::LOCALHOST, port).into()).await
        || try_connect((std::net::Ipv6Addr::LOCALHOST, port).into()).await
}

/// `devmesh stop`.
pub async fn stop(home: &Path, name: String) -> Result<(), Failure> {
    let mut client = daemon::connect(home).await?;
    client.call(&Request::Stop { name: name.clone() }).await?;
    eprintln!("devmesh: stopped sharing {name}");
    Ok(())
}

/// Builds the service to share from the flags, filling gaps from
/// `[services.<name>]` of the nearest devmesh.toml; also the namespace its
/// `[mesh]` names, if any.
fn service_spec(args: RunArgs) -> Result<(ServiceSpec, Option<String>), Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let project = match Project::find(&cwd) {
        Some(path) => Some(Project::load(&path)?),
        None => None,
    };
    let from_file = project.as_ref().and_then(|p| p.services.get(&args.name));
    let namespace = project.as_ref().and_then(|p| p.mesh.namespace.clone());
    Ok((spec_from(args, from_file)?, namespace))
}

/// The service of `args`, each flag overriding the same setting of
/// `from_file`.
fn spec_from(args: RunArgs, from_file: Option<&ServiceConfig>) -> Result<ServiceSpec, Failure> {
    let name = args.name;
    mesh_core::record::validate_service_name(&name).map_err(Failure::usage)?;
    let port = args
        .port
        .or(from_file.and_then(|s| s.port))
        .ok_or_else(|| Failure::usage(anyhow::anyhow!(
            "no port for service {name:?}: pass --port <port>, or add [services.{name}] with port = <port> to devmesh.toml"
        )))?;
    if port == 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--port 0 is not a port a service listens on: pass the port of the running service, such as --port 3000"
        )));
    }
    let version = args
        .service_version
        .or(from_file.map(|s| s.version.get_ref().clone()))
        .unwrap_or_else(|| "0.0.0".to_owned());
    // The common `v1.2.3` spelling of a tag.
    let version = match version.strip_prefix(['v', 'V']) {
        Some(bare) if semver::Version::parse(bare).is_ok() => bare.to_owned(),
        _ => version,
    };
    if let Err(e) = semver::Version::parse(&version) {
        return Err(Failure::usage(anyhow::anyhow!(
            "invalid --version {version:?}: {e}; use a semantic version such as 1.4.2"
        )));
    }
    let routes = if args.routes.is_empty() {
        from_file
            .map(|s| s.routes.iter().map(|r| r.get_ref().clone()).collect())
            .unwrap_or_default()
    } else {
        args.routes
    };
    let requires = requires(from_file, args.requires)?;
    let health = health_check(from_file.and_then(|s| s.health_check()), args.health)
        .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {}", e.setting.flag(), e.message)))?;
    let scheme = args
        .scheme
        .as_deref()
        .or(from_file.map(|s| s.scheme()))
        .unwrap_or("http");
    let scheme: mesh_core::Scheme = scheme
        .parse()
        .map_err(|e| Failure::usage(anyhow::anyhow!("invalid --scheme: {e}")))?;
    Ok(ServiceSpec {
        name,
        port,
        version,
        routes,
        tags: from_file.map(|s| s.tags.clone()).unwrap_or_default(),
        requires,
        health: health.as_ref().map(HealthSpec::from_check),
        h2: args.http2 || from_file.is_some_and(|s| s.http2),
        scheme,
        protocol: if args.tcp || from_file.is_some_and(|s| s.is_tcp()) {
            ServiceProtocol::Tcp
        } else {
            ServiceProtocol::Http
        },
    })
}

/// The `requires` of the file with each `--require service=req` added.
fn requires(
    from_file: Option<&ServiceConfig>,
    flags: Vec<String>,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut required: BTreeMap<String, String> = from_file
        .map(|s| {
            s.requires
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect()
        })
        .unwrap_or_default();
    for r in flags {
        let Some((service, req)) = r.split_once('=') else {
            return Err(Failure::usage(anyhow::anyhow!(
                "--require {r:?}: write it as <service>=<requirement>, such as api=^2.1"
            )));
        };
        if let Err(e) = semver::VersionReq::parse(req.trim()) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--require {r:?}: {:?} is not a version requirement ({e}); write it like ^2.1",
                req.trim()
            )));
        }
        required.insert(service.trim().to_owned(), req.trim().to_owned());
    }
    Ok(required)
}

/// The health check of `devmesh run`: each flag overrides the same setting
/// of devmesh.toml.
fn health_check(
    from_file: Option<HealthCheck>,
    flags: HealthFlags,
) -> Result<Option<HealthCheck>, HealthError> {
    let mut check = match (flags.health, from_file) {
        (Some(target), Some(mut check)) => {
            check.probe = Probe::parse(&target)?;
            Some(check)
        }
        (Some(target), None) => Some(HealthCheck::new(Probe::parse(&target)?)),
        (None, check) => check,
    };
    let Some(check) = check.as_mut() else {
        let stray = [
            flags.health_interval.is_some().then_some(Setting::Interval),
            flags.health_timeout.is_some().then_some(Setting::Timeout),
            flags
                .healthy_threshold
                .is_some()
                .then_some(Setting::HealthyThreshold),
            flags
                .unhealthy_threshold
                .is_some()
                .then_some(Setting::UnhealthyThreshold),
        ];
        if let Some(setting) = stray.into_iter().flatten().next() {
            return Err(HealthError {
                setting,
                message: "needs --health <PATH|URL|tcp> (or health in devmesh.toml)".into(),
            });
        }
        return Ok(None);
    };
    if let Some(v) = flags.health_interval {
        check.interval = parse_duration(Setting::Interval, &v)?;
    }
    if let Some(v) = flags.health_timeout {
        check.timeout = parse_duration(Setting::Timeout, &v)?;
    }
    if let Some(n) = flags.healthy_threshold {
        check.healthy_threshold = n;
    }
    if let Some(n) = flags.unhealthy_threshold {
        check.unhealthy_threshold = n;
    }
    check.validate()?;
    Ok(Some(check.clone()))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> RunArgs {
        let argv = ["devmesh", "run"].iter().chain(argv);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            other => panic!("not run: {other:?}"),
        }
    }

    fn error(result: Result<ServiceSpec, Failure>) -> (u8, String) {
        let failure = result.expect_err("refused");
        (failure.code, format!("{:#}", failure.error))
    }

    #[test]
    fn flags_make_the_spec() {
        let spec = spec_from(
            args(&[
                "api",
                "--port",
                "3000",
                "--version",
                "1.4.2",
                "--route",
                "/api/",
                "--require",
                "db = ^15",
                "--health",
                "/healthz",
                "--health-interval",
                "500ms",
                "--http2",
                "--scheme",
                "https",
            ]),
            None,
        )
        .ok()
        .unwrap();
        assert_eq!((spec.name.as_str(), spec.port), ("api", 3000));
        assert_eq!(spec.version, "1.4.2");
        assert_eq!(spec.routes, ["/api/"]);
        assert_eq!(spec.requires["db"], "^15");
        let health = spec.health.unwrap();
        assert_eq!(
            (health.check.as_str(), health.interval_ms),
            ("/healthz", 500)
        );
        assert!(spec.h2);
        assert_eq!(spec.scheme, mesh_core::Scheme::Https);
        let plain = spec_from(args(&["api", "--port", "1"]), None).ok().unwrap();
        assert_eq!(plain.protocol, ServiceProtocol::Http);
        let db = spec_from(
            args(&["db", "--tcp", "--port", "5432", "--version", "15.4.0"]),
            None,
        )
        .ok()
        .unwrap();
        assert_eq!((db.protocol, db.port), (ServiceProtocol::Tcp, 5432));
        assert_eq!(plain.version, "0.0.0");
        assert_eq!(plain.health, None);
    }

    #[test]
    fn bad_flags_are_usage_errors_that_say_what_to_write() {
        let (code, text) = error(spec_from(args(&["api"]), None));
        assert_eq!(code, 2);
        assert!(
            text.starts_with("no port for service \"api\": pass --port <port>"),
            "{text}"
        );
        let (code, text) = error(spec_from(
            args(&["api", "--port", "1", "--version", "v1"]),
            None,
        ));
        assert_eq!(code, 2);
        assert!(text.starts_with("invalid --version \"v1\": "), "{text}");
        let (_, text) = error(spec_from(
            args(&["api", "--port", "1", "--require", "db"]),
            None,
        ));
        assert!(
            text.contains("write it as <service>=<requirement>"),
            "{text}"
        );
        let (_, text) = error(spec_from(
            args(&["api", "--port", "1", "--health-timeout", "1s"]),
            None,
        ));
        assert!(
            text.ends_with("needs --health <PATH|URL|tcp> (or health in devmesh.toml)"),
            "{text}"
        );
        let (code, text) = error(spec_from(args(&["API", "--port", "1"]), None));
        assert_eq!(code, 2);
        assert!(text.starts_with("invalid service name \"API\""), "{text}");
        let (code, text) = error(spec_from(args(&["api", "--port", "0"]), None));
        assert_eq!(code, 2);
        assert!(text.starts_with("--port 0 is not a port"), "{text}");
        let tagged = spec_from(args(&["api", "--port", "1", "--version", "v1.2.3"]), None);
        assert_eq!(tagged.ok().unwrap().version, "1.2.3");
        let (_, text) = error(spec_from(
            args(&["api", "--port", "1", "--scheme", "ftp"]),
            None,
        ));
        assert!(text.starts_with("invalid --scheme: "), "{text}");
    }
}
