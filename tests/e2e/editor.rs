//! `devmesh vscode`: tasks.json for the services of devmesh.toml, merged
//! into an existing file with comments; the ready lines the tasks wait for
//! are the ones `devmesh up` prints.

use devmesh_tests::{Daemon, bin};

#[tokio::test(flavor = "multi_thread")]
async fn vscode_tasks_wait_for_the_ready_lines_and_keep_the_other_tasks() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(
        dir.join("devmesh.toml"),
        "[services.api]\ncommand = \"echo api-up; exec sleep 631\"\nready_log_line = \"api-up\"\n\n\
         [services.db]\nport = 5432\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join(".vscode")).unwrap();
    let existing = "{\n  // the team's own\n  \"version\": \"2.0.0\",\n  \"tasks\": [\n    { \"label\": \"lint\", \"type\": \"shell\", \"command\": \"make lint\" },\n  ],\n}\n";
    let tasks = dir.join(".vscode/tasks.json");
    std::fs::write(&tasks, existing).unwrap();
    let vscode = |args: &[&str]| {
        let mut c = tokio::process::Command::new(bin("devmesh"));
        c.arg("vscode").args(args).current_dir(dir);
        c
    };

    let dry = vscode(&[]).output().await.unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&tasks).unwrap(),
        existing,
        "a dry run"
    );
    let shown: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();

    let wrote = vscode(&["--write"]).output().await.unwrap();
    assert!(wrote.status.success());
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tasks).unwrap()).unwrap();
    assert_eq!(file, shown, "--write writes what the dry run showed");
    let labels: Vec<&str> = file["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["lint", "devmesh: api", "devmesh: up"],
        "db has no command: no task"
    );
    assert_eq!(file["tasks"][0]["command"], "make lint");
    // Written twice, the file is the same: devmesh's tasks are replaced.
    assert!(vscode(&["--write"]).status().await.unwrap().success());
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tasks).unwrap()).unwrap();
    assert_eq!(again, file);

    // The lines the tasks wait for are what `devmesh up api` prints.
    let api = &file["tasks"][1];
    assert_eq!(api["args"], serde_json::json!(["up", "api"]));
    let ends = api["problemMatcher"]["background"]["endsPattern"]
        .as_str()
        .unwrap();
    assert_eq!(ends, "^devmesh: api ready\\b");
    let all = file["tasks"][2]["problemMatcher"]["background"]["endsPattern"]
        .as_str()
        .unwrap();
    assert_eq!(all, "^devmesh: all services are up$");
    let mut up = super::up::Up::start(&a, dir, &["api"]);
    up.wait_for("devmesh: api ready (not shared)").await;
    up.wait_for("devmesh: all services are up").await;
    assert_eq!(up.interrupt().await, Some(0));
}
