//! Edits while `devmesh up` runs: devmesh.toml is applied without a
//! restart of the daemon (a broken edit changes nothing and says where it
//! is wrong), and services restart when the files they watch change.

use std::path::Path;

use super::{STEP, Up, free_port, nothing_left_in, processes_in};
use devmesh_tests::{Daemon, eventually};

/// `devmesh ps --json` of the project in `dir`.
async fn ps_json(node: &Daemon, dir: &Path) -> serde_json::Value {
    let out = node
        .devmesh()
        .args(["ps", "--json"])
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether a process of the project runs `sleep <seconds>`: each service
/// of these projects sleeps for its own number of seconds.
fn sleeping(dir: &Path, seconds: u32) -> bool {
    let wanted = format!("sleep {seconds}");
    processes_in(dir).iter().any(|p| p.trim_end() == wanted)
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_of_devmesh_toml_add_change_and_remove_services_and_a_broken_one_changes_nothing() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let file = dir.join("devmesh.toml");
    let api = free_port();
    let service = |name: &str, port: Option<u16>, text: &str, sleep: u32| {
        let port = port.map(|p| format!("port = {p}\n")).unwrap_or_default();
        format!(
            "[services.{name}]\n{port}command = \"echo {text}; exec sleep {sleep}\"\nready_log_line = \"{text}\"\n\n"
        )
    };
    let first = service("old", None, "old-up", 601) + &service("api", Some(api), "api-v1", 602);
    std::fs::write(&file, &first).unwrap();
    let mut up = Up::start(&a, dir, &[]);
    up.wait_for(&format!("devmesh: api ready on :{api} (shared)"))
        .await;
    up.wait_for("devmesh: old ready (not shared)").await;
    assert!(sleeping(dir, 601) && sleeping(dir, 602));

    // A broken edit: nothing stops, and the message names file, line, key.
    let broken = first.replace(&format!("port = {api}"), "port = \"soon\"");
    std::fs::write(&file, broken).unwrap();
    let at = eventually(STEP, "the broken edit reported", || async {
        up.lines().iter().position(|l| {
            l.starts_with(
                "devmesh: devmesh.toml not applied; the services keep running as they were: ",
            )
        })
    })
    .await;
    let report = &up.lines()[at];
    assert!(
        report.contains(&format!(
            "{}:6: key `port`",
            file.canonicalize().unwrap().display()
        )),
        "{report}"
    );
    assert!(sleeping(dir, 601) && sleeping(dir, 602), "still running");
    let ps = a.cli(&["ps", "--json"]).await;
    assert!(!ps.status.success(), "ps needs the project's directory");
    let ps = ps_json(&a, dir).await;
    assert!(
        ps["reload_error"].as_str().unwrap().contains("key `port`"),
        "{ps:#}"
    );

    // A good edit: `old` goes, `api` changes, `web` comes.
    let web = free_port();
    let second =
        service("api", Some(api), "api-v2", 603) + &service("web", Some(web), "web-up", 604);
    std::fs::write(&file, second).unwrap();
    up.wait_for("devmesh: devmesh.toml reloaded: added web; changed api; removed old")
        .await;
    up.wait_for(&format!("devmesh: web ready on :{web} (shared)"))
        .await;
    let v2 = up.wait_for("api | api-v2").await;
    assert!(
        up.lines()[v2..]
            .iter()
            .any(|l| *l == format!("devmesh: api ready on :{api} (shared)"))
            || up
                .wait_for(&format!("devmesh: api ready on :{api} (shared)"))
                .await
                > 0
    );
    eventually(STEP, "old and api v1 stopped", || async {
        (!sleeping(dir, 601) && !sleeping(dir, 602) && sleeping(dir, 603)).then_some(())
    })
    .await;
    let ps = ps_json(&a, dir).await;
    assert!(ps.get("reload_error").is_none(), "{ps:#}");
    let names: Vec<&str> = ps["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"], "{ps:#}");

    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
    nothing_left_in(dir).await;
}

/// How often `up` printed `line`.
fn count(up: &Up, line: &str) -> usize {
    up.lines().iter().filter(|l| *l == line).count()
}

/// Waits until `up` said that `service` restarts because `path` changed,
/// and printed its `started` line a second time.
async fn restarted(up: &Up, service: &str, path: &Path, started: &str) {
    up.wait_for(&format!(
        "devmesh: {service} restarting: {} changed",
        path.display()
    ))
    .await;
    eventually(STEP, &format!("{service} started again"), || async {
        (count(up, started) == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_restart_when_the_files_they_watch_change() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().canonicalize().unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("worker/node_modules")).unwrap();
    std::fs::write(
        dir.join("devmesh.toml"),
        r#"
[services.api]
command = "echo api-started; exec sleep 611"
ready_log_line = "api-started"
watch = ["src/**/*.rs"]

[services.worker]
cwd = "worker"
command = "echo worker-started; exec sleep 612"
ready_log_line = "worker-started"
"#,
    )
    .unwrap();
    // --watch: the worker, without patterns, watches all below its cwd.
    let mut up = Up::start(&a, &dir, &["--watch"]);
    up.wait_for("devmesh: api ready (not shared)").await;
    up.wait_for("devmesh: worker ready (not shared)").await;

    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    restarted(&up, "api", &dir.join("src/main.rs"), "api    | api-started").await;

    // Outside its patterns, and in ignored directories, nothing restarts.
    std::fs::write(dir.join("src/notes.txt"), "x").unwrap();
    std::fs::write(dir.join("worker/node_modules/dep.js"), "x").unwrap();
    std::fs::write(dir.join("worker/job.py"), "print(1)\n").unwrap();
    restarted(
        &up,
        "worker",
        &dir.join("worker/job.py"),
        "worker | worker-started",
    )
    .await;
    assert_eq!(count(&up, "api    | api-started"), 2, "{:#?}", up.lines());
    assert_eq!(
        up.lines()
            .iter()
            .filter(|l| l.contains("restarting:"))
            .count(),
        2,
        "{:#?}",
        up.lines()
    );
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
    nothing_left_in(&dir).await;
}

/// Two `devmesh up`s of one project, as two editor tasks start them: the
/// second starts only what does not run yet and hears where the rest
/// stands; the project stops when the last lets go.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_up_joins_the_running_project_and_the_last_one_stops_it() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(
        dir.join("devmesh.toml"),
        "[services.api]\ncommand = \"echo api-up; exec sleep 621\"\nready_log_line = \"api-up\"\n\n\
         [services.web]\ncommand = \"echo web-up; exec sleep 622\"\nready_log_line = \"web-up\"\n",
    )
    .unwrap();
    let mut first = Up::start(&a, dir, &["api"]);
    first.wait_for("devmesh: api ready (not shared)").await;
    assert!(!sleeping(dir, 622), "web is not selected");
    let mut second = Up::start(&a, dir, &["web"]);
    second.wait_for("devmesh: api ready (not shared)").await;
    second.wait_for("devmesh: web ready (not shared)").await;
    first.wait_for("devmesh: web ready (not shared)").await;
    assert_eq!(
        processes_in(dir)
            .iter()
            .filter(|p| p.trim_end() == "sleep 621")
            .count(),
        1,
        "api runs once"
    );

    assert_eq!(first.interrupt().await, Some(0), "{:#?}", first.lines());
    assert!(
        first
            .lines()
            .iter()
            .any(|l| l.starts_with("devmesh: the services keep running for another `devmesh up`")),
        "{:#?}",
        first.lines()
    );
    assert!(sleeping(dir, 621) && sleeping(dir, 622));
    assert_eq!(second.interrupt().await, Some(0), "{:#?}", second.lines());
    nothing_left_in(dir).await;
}
