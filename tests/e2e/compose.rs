//! `devmesh up` runs the services of a Compose file through a real engine
//! (Podman's Docker Engine API): a service with a `healthcheck` is ready
//! only once it passes, its dependents wait for it, each published port is
//! shared, and Ctrl-C removes the containers.

use std::time::{Duration, Instant};

use devmesh_tests::{Daemon, eventually, get};

use crate::{
    docker::{Engine, free_port},
    up::Up,
};

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn compose_services_start_healthy_in_order_are_shared_and_removed() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    let (db, web) = (free_port(), free_port());
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            r#"name: shop
services:
  db:
    image: localhost/tiny:${{TAG:-1.2.3}}
    command: ["/bin/sh", "-c", "echo db starting; sleep 3; touch /www/.ready; exec /bin/httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:{db}:80"]
    healthcheck:
      test: ["CMD", "/bin/test", "-f", "/www/.ready"]
      interval: 1s
      retries: 60
  web:
    image: localhost/tiny:1.2.3
    command: /bin/httpd -f -p 80 -h /www
    ports:
      - "127.0.0.1:{web}:80"
    depends_on:
      db:
        condition: service_healthy
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("devmesh.toml"),
        "[compose]\nfile = \"compose.yaml\"\n\n[services.after]\nrun = [\"sh\", \"-c\", \"echo web answers; sleep 600\"]\ndepends_on = { web = \"healthy\" }\n",
    )
    .unwrap();
    let node = Daemon::start().await;
    let host = engine.docker_host();
    let mut up = Up::start_with(&node, dir, &[], &[("DOCKER_HOST", host.as_str())]);

    let starting = up.wait_for("db    | db starting").await;
    let started = Instant::now();
    let db_ready = up
        .wait_for(&format!("devmesh: db ready on :{db} (shared)"))
        .await;
    // Ready only once the healthcheck passes: after the 3 s sleep.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "db was ready {:?} after it started, before its healthcheck could pass",
        started.elapsed()
    );
    let web_ready = up
        .wait_for(&format!("devmesh: web ready on :{web} (shared)"))
        .await;
    let after = up.wait_for("after | web answers").await;
    assert!(starting < db_ready && db_ready < web_ready && web_ready < after);
    assert!(
        !up.lines()[..db_ready].iter().any(|l| l.starts_with("web ")),
        "web started before db was healthy: {:#?}",
        up.lines()
    );

    // Each published port is shared: the front door routes to both.
    for (service, port) in [("db", db), ("web", web)] {
        let reply = get(node.proxy, &format!("{service}.localhost"), "/").await;
        assert_eq!(reply.status, 200, "{service}: {}", reply.text());
        assert_eq!(reply.text(), "hello from a container\n");
        node.wait_for_service(service, |s| s["port"] == port && s["version"] == "1.2.3")
            .await;
    }
    let ps = node
        .devmesh()
        .args(["ps", "--json"])
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let state = |name: &str| {
        ps["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state("db").as_deref(), Some("ready"), "{ps:#}");
    assert_eq!(state("web").as_deref(), Some("ready"), "{ps:#}");
    let names = engine.podman(&["ps", "--format", "{{.Names}}"]).await;
    assert!(names.lines().any(|n| n == "shop-db-1"), "{names}");

    // Ctrl-C: every container goes with its service.
    assert_eq!(up.interrupt().await, Some(0));
    eventually(STEP, "the project's containers removed", || async {
        let all = engine.podman(&["ps", "-a", "--format", "{{.Names}}"]).await;
        (!all.lines().any(|n| n.starts_with("shop-"))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_compose_file_names_its_line_and_key() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  app:\n    build: .\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("devmesh.toml"),
        "[compose]\nfile = \"compose.yaml\"\n",
    )
    .unwrap();
    let node = Daemon::start().await;
    let out = node
        .devmesh()
        .arg("up")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("compose.yaml:2: key `services.app.image`") && err.contains("docker build"),
        "{err}"
    );
}
