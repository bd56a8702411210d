use std::path::Path;

use super::*;
use crate::{Condition, RestartPolicy};

const FILE: &str = "\
name: Shop
services:
  db:
    image: localhost/tiny:${TAG:-1}
    command: /bin/httpd -f -p 80 -h \"/www x\"
    ports:
      - \"127.0.0.1:18080:80\"
      - \"9000-9001:9000-9001/udp\"
    environment:
      - A=1
      - FROM_ENV
      - MISSING
    healthcheck:
      test: wget -q -O- http://127.0.0.1/ || exit 1
      interval: 1s
      retries: 3
    restart: on-failure:4
    volumes:
      - ./data:/data:ro
      - cache:/cache
  web:
    image: localhost/tiny:1
    depends_on:
      db:
        condition: service_healthy
    ports:
      - target: 80
        published: 18081
    stop_grace_period: 3s
";

fn lookup(name: &str) -> Option<String> {
    (name == "FROM_ENV").then(|| "yes".into())
}

fn parse(text: &str) -> Result<ComposeFile, ConfigError> {
    ComposeFile::parse(Path::new("/p/compose.yaml"), text, &lookup, None)
}

#[test]
fn reads_services_ports_health_and_dependencies() {
    let f = parse(FILE).unwrap();
    assert_eq!(f.project, "shop");
    let db = &f.services["db"];
    assert_eq!(db.image, "localhost/tiny:1");
    assert_eq!(
        db.command.as_deref().unwrap(),
        ["/bin/httpd", "-f", "-p", "80", "-h", "/www x"]
    );
    assert_eq!(db.shared_port(), Some(18080));
    assert_eq!(db.ports.len(), 3);
    assert_eq!(db.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        (db.ports[2].host, db.ports[2].container),
        (Some(9001), 9001)
    );
    assert_eq!(db.ports[2].protocol, "udp");
    assert_eq!(db.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(db.env.get("FROM_ENV").map(String::as_str), Some("yes"));
    assert!(!db.env.contains_key("MISSING"));
    let health = db.healthcheck.as_ref().unwrap();
    assert_eq!(health.test[0], "CMD-SHELL");
    assert_eq!(health.interval, Some(Duration::from_secs(1)));
    assert_eq!(health.retries, Some(3));
    assert_eq!(
        (db.restart, db.max_restarts),
        (RestartPolicy::OnFailure, Some(4))
    );
    assert_eq!(
        db.mounts[0],
        Mount::Bind {
            source: PathBuf::from("/p/./data"),
            target: "/data".into(),
            read_only: true
        }
    );
    assert!(matches!(&db.mounts[1], Mount::Volume { name: Some(n), .. } if n == "cache"));
    let web = &f.services["web"];
    assert_eq!(web.depends_on["db"], Condition::Healthy);
    assert_eq!(web.shared_port(), Some(18081));
    assert_eq!(web.stop_grace_period, Some(Duration::from_secs(3)));
}

#[test]
fn errors_name_the_file_line_and_key() {
    let e = parse("services:\n  app:\n    build: .\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("services.app.image"));
    assert!(e.to_string().contains("docker build"), "{e}");

    let e = parse("services:\n  app:\n    image: x\n    ports: [\"80:80:80:80\"]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("services.app.ports"));
    assert!(
        e.to_string()
            .starts_with("/p/compose.yaml:2: key `services.app.ports`"),
        "{e}"
    );

    let e = parse("services:\n  app:\n    image: x\n    depends_on: [nope]\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("\"nope\" is not a service of this file"),
        "{e}"
    );

    let e = parse("services:\n  app:\n    image: x\n   bad: [\n").unwrap_err();
    assert!(e.line.is_some(), "{e}");

    let e = parse("services:\n  app:\n    image: ${IMAGE:?set IMAGE}\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.to_string().contains("set IMAGE"), "{e}");
}

#[test]
fn the_project_name_comes_from_devmesh_toml_then_the_file_then_the_directory() {
    let path = Path::new("/work/My App/compose.yaml");
    let f = ComposeFile::parse(path, "services: {}\n", &lookup, None).unwrap();
    assert_eq!(f.project, "myapp");
    let f = ComposeFile::parse(path, "name: x\nservices: {}\n", &lookup, Some("given")).unwrap();
    assert_eq!(f.project, "given");
}
