//! `run` and `stop`: the local services this node provides, and which held
//! `devmesh run` connection owns each of them.

use std::{collections::HashMap, sync::Mutex};

use mesh_core::{
    LocalService,
    record::{ServiceProtocol, ServiceRecord},
};

use super::Server;
use crate::{RequestError, RunResult, ServiceSpec};

/// Which held connection registered each service. A service registered
/// without `hold`, or stopped, has no owner and outlives every connection.
#[derive(Debug, Default)]
pub(super) struct Owners(Mutex<HashMap<String, u64>>);

impl Owners {
    /// Records that `conn` holds `service` (with `hold`), or that nothing
    /// does.
    fn set(&self, service: &str, conn: Option<u64>) {
        let mut owners = self.0.lock().expect("owners lock");
        match conn {
            Some(conn) => owners.insert(service.to_owned(), conn),
            None => owners.remove(service),
        };
    }

    /// Forgets every service `conn` held and returns their names.
    pub(super) fn release(&self, conn: u64) -> Vec<String> {
        let mut owners = self.0.lock().expect("owners lock");
        let mut names: Vec<String> = owners
            .iter()
            .filter(|(_, c)| **c == conn)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        for n in &names {
            owners.remove(n);
        }
        names
    }
}

/// The local service `spec` describes, validated; the error says which
/// part of the spec is wrong and what to write instead.
fn local_service(spec: ServiceSpec) -> Result<LocalService, RequestError> {
    mesh_core::record::validate_service_name(&spec.name)?;
    let version =
        semver::Version::parse(&spec.version).map_err(|error| RequestError::BadVersion {
            service: spec.name.clone(),
            version: spec.version.clone(),
            error,
        })?;
    if spec.port == 0 {
        return Err(RequestError::PortZero { service: spec.name });
    }
    for (service, req) in &spec.requires {
        mesh_core::record::validate_service_name(service)?;
        semver::VersionReq::parse(req).map_err(|error| RequestError::BadRequires {
            service: spec.name.clone(),
            required: service.clone(),
            requirement: req.clone(),
            error,
        })?;
    }
    let health = spec
        .health
        .as_ref()
        .map(|h| h.to_check())
        .transpose()
        .map_err(|source| RequestError::BadHealth {
            service: spec.name.clone(),
            source,
        })?;
    let mut record = match spec.protocol {
        ServiceProtocol::Tcp => {
            if spec.h2 || !spec.routes.is_empty() {
                return Err(RequestError::TcpWithHttpSettings { service: spec.name });
            }
            ServiceRecord::tcp(&spec.name, version, spec.port)
        }
        _ => ServiceRecord::http(&spec.name, version),
    };
    record.routes = spec.routes;
    record.tags = spec.tags;
    record.requires = spec.requires;
    record.h2 = spec.h2;
    Ok(LocalService {
        record,
        port: spec.port,
        health,
        scheme: spec.scheme,
    })
}

impl Server {
    /// Provides the service of `spec`; with `hold`, only while connection
    /// `conn` stays open.
    pub(super) async fn run(
        &self,
        spec: ServiceSpec,
        hold: bool,
        conn: u64,
    ) -> Result<RunResult, RequestError> {
        let saved = spec.clone();
        let service = local_service(spec)?;
        let name = service.record.name.clone();
        let version = service.record.version.to_string();
        // A TCP service is reached on its port here, and through a
        // listener on the other nodes.
        let url = match service.record.protocol {
            ServiceProtocol::Tcp => format!("tcp://127.0.0.1:{}", service.port),
            _ => self.url(&name),
        };
        self.node.register(service).await?;
        self.owners.set(&name, hold.then_some(conn));
        self.saved.shared(&saved, !hold);
        Ok(RunResult { url, name, version })
    }

    /// Stops providing `name`, held or not.
    pub(super) async fn stop(&self, name: &str) -> Result<(), RequestError> {
        self.owners.set(name, None);
        self.saved.stopped(name);
        if self.node.unregister(name).await? {
            Ok(())
        } else {
            Err(RequestError::NotProvided {
                name: name.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, port: u16, version: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            port,
            version: version.into(),
            routes: vec!["/api".into()],
            tags: vec![],
            requires: Default::default(),
            health: None,
            h2: true,
            scheme: mesh_core::Scheme::Https,
            protocol: ServiceProtocol::Http,
        }
    }

    #[test]
    fn a_valid_spec_becomes_the_announced_record() {
        let service = local_service(spec("api", 3000, "1.4.2")).unwrap();
        assert_eq!(service.record.name, "api");
        assert_eq!(service.record.version, semver::Version::new(1, 4, 2));
        assert_eq!(service.record.routes, ["/api"]);
        assert!(service.record.h2);
        assert_eq!(service.port, 3000);
        assert_eq!(service.scheme, mesh_core::Scheme::Https);
    }

    #[test]
    fn each_bad_part_of_a_spec_says_what_to_write() {
        let err = local_service(spec("api", 3000, "1.x")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid version \"1.x\" for service api: "),
            "{err}"
        );
        assert!(err.to_string().ends_with("such as 1.4.2"), "{err}");
        let err = local_service(spec("api", 0, "1.0.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service api: port 0 is not a backend port; pass --port <port>"
        );
        let err = local_service(spec("no spaces", 3000, "1.0.0")).unwrap_err();
        assert!(matches!(err, RequestError::ServiceName(_)), "{err:?}");
        let mut bad = spec("web", 3000, "1.0.0");
        bad.requires.insert("api".into(), "banana".into());
        let err = local_service(bad).unwrap_err().to_string();
        assert!(
            err.starts_with("service web: \"banana\" is not a version requirement on api ("),
            "{err}"
        );
        let mut bad = spec("web", 3000, "1.0.0");
        bad.health = Some(crate::HealthSpec {
            check: "tcp".into(),
            interval_ms: 5,
            timeout_ms: 1000,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        });
        let err = crate::chain(&local_service(bad).unwrap_err());
        assert!(
            err.starts_with("service web: health check `health_interval`: "),
            "{err}"
        );
    }

    #[test]
    fn a_tcp_spec_announces_its_port_and_refuses_http_settings() {
        let mut db = spec("db", 5432, "15.4.0");
        db.protocol = ServiceProtocol::Tcp;
        let err = local_service(db.clone()).unwrap_err().to_string();
        assert!(err.contains("TCP service"), "{err}");
        db.routes.clear();
        db.h2 = false;
        let service = local_service(db).unwrap();
        assert_eq!(service.record.protocol, ServiceProtocol::Tcp);
        assert_eq!(service.record.port, Some(5432));
    }

    #[test]
    fn owners_release_only_what_a_connection_holds() {
        let owners = Owners::default();
        owners.set("api", Some(1));
        owners.set("web", Some(1));
        owners.set("db", Some(2));
        owners.set("web", None);
        assert_eq!(owners.release(1), ["api"]);
        assert!(owners.release(1).is_empty());
        assert_eq!(owners.release(2), ["db"]);
    }
}
