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
    let spec = service_spec(args)?;
    let mut client = daemon::connect_or_start(home).await?;
    let result: RunResult = client
        .call_as(&Request::Run {
            service: spec,
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
    if detach {
        return Ok(());
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
        _ = client.closed() => {
            return Err(anyhow::anyhow!("devmeshd stopped; {} is no longer shared", result.name).into());
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

/// `devmesh stop`.
pub async fn stop(home: &Path, name: String) -> Result<(), Failure> {
    let mut client = daemon::connect(home).await?;
    client.call(&Request::Stop { name: name.clone() }).await?;
    eprintln!("devmesh: stopped sharing {name}");
    Ok(())
}

/// Builds the service to share from the flags, filling gaps from
/// `[services.<name>]` of the nearest devmesh.toml.
fn service_spec(args: RunArgs) -> Result<ServiceSpec, Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let project = match Project::find(&cwd) {
        Some(path) => Some(Project::load(&path)?),
        None => None,
    };
    let from_file = project.as_ref().and_then(|p| p.services.get(&args.name));
    spec_from(args, from_file)
}

/// The service of `args`, each flag overriding the same setting of
/// `from_file`.
fn spec_from(args: RunArgs, from_file: Option<&ServiceConfig>) -> Result<ServiceSpec, Failure> {
    let name = args.name;
    let port = args
        .port
        .or(from_file.and_then(|s| s.port))
        .ok_or_else(|| Failure::usage(anyhow::anyhow!(
            "no port for service {name:?}: pass --port <port>, or add [services.{name}] with port = <port> to devmesh.toml"
        )))?;
    let version = args
        .service_version
        .or(from_file.map(|s| s.version.get_ref().clone()))
        .unwrap_or_else(|| "0.0.0".to_owned());
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
        let (_, text) = error(spec_from(
            args(&["api", "--port", "1", "--scheme", "ftp"]),
            None,
        ));
        assert!(text.starts_with("invalid --scheme: "), "{text}");
    }
}
