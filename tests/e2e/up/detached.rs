//! `devmesh up -d`: the daemon keeps the services after the CLI exits;
//! `ps`, `logs` and `down` find them from the project's directory, and a
//! daemon that stops takes them with it.

use std::{path::Path, process::Stdio};

use devmesh_tests::{Daemon, bin, eventually, get};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{STEP, free_port, nothing_left_in, processes_in};

/// A ticker that prints a numbered line every 200 ms, and an HTTP api that
/// waits for it; the api's port.
fn ticker_and_api(dir: &Path) -> u16 {
    let api = free_port();
    std::fs::write(
        dir.join("devmesh.toml"),
        format!(
            r#"
[services.ticker]
command = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"
ready_log_line = "tick-0"

[services.api]
port = {api}
version = "1.2.0"
run = ["{backend}", "{api}", "api"]
health = "/healthz"
health_interval = "200ms"
depends_on = {{ ticker = "started" }}
"#,
            backend = bin("devmesh-demo-backend").display(),
        ),
    )
    .unwrap();
    api
}

/// Runs `devmesh ARGS` in `dir` to its end.
async fn cli_in(node: &Daemon, dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(STEP, node.devmesh().args(args).current_dir(dir).output())
        .await
        .unwrap_or_else(|_| panic!("devmesh {args:?} did not exit"))
        .unwrap()
}

/// The number of the last `tick-N` in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("ticker | tick-"))
        .find_map(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_services_outlive_the_cli_and_answer_ps_logs_and_down() {
    let mut a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let api = ticker_and_api(dir);

    let out = cli_in(&a, dir, &["up", "-d"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("devmesh: api ready on :{api} (shared)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("is up; `devmesh ps` lists its services"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("tick-"),
        "-d does not print the output: {stdout}"
    );

    // The CLI is gone; the services run on and the api is shared.
    let reply = get(a.proxy, "api.localhost", "/hello").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.text(), "hello from api\n");

    let ps: serde_json::Value =
        serde_json::from_slice(&cli_in(&a, dir, &["ps", "--json"]).await.stdout).unwrap();
    let rows = ps["services"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ticker", "api"], "{ps:#}");
    for row in rows {
        assert_eq!(row["state"], "ready", "{ps:#}");
        assert!(row["pid"].as_u64().is_some(), "{ps:#}");
        assert_eq!(row["restarts"], 0);
    }
    assert_eq!(rows[1]["port"], api);
    let table = String::from_utf8_lossy(&cli_in(&a, dir, &["ps"]).await.stdout).into_owned();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("api") && l.contains("ready")),
        "{table}"
    );

    let logs = cli_in(&a, dir, &["logs", "ticker", "--tail", "2"]).await;
    let text = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines().all(|l| l.starts_with("ticker | tick-")),
        "{text}"
    );
    let seen = last_tick(&text).unwrap();

    // `logs -f` prints the lines that come after.
    let mut follow = a
        .devmesh()
        .args(["logs", "-f", "--tail", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let newer = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if last_tick(&line).is_some_and(|n| n > seen) {
                return line;
            }
        }
        panic!("logs -f ended");
    })
    .await
    .expect("a new line through logs -f");
    assert!(newer.starts_with("ticker | tick-"), "{newer}");
    follow.kill().await.unwrap();

    let down = cli_in(&a, dir, &["down"]).await;
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(down.status.success(), "{stderr}");
    assert!(stderr.starts_with("devmesh: stopped "), "{stderr}");
    nothing_left_in(dir).await;
    eventually(STEP, "api withdrawn", || async {
        let r = get(a.proxy, "api.localhost", "/hello").await;
        (r.status.as_u16() != 200).then_some(())
    })
    .await;
    let ps = cli_in(&a, dir, &["ps"]).await;
    assert_eq!(ps.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&ps.stderr).contains("is up; start it with `devmesh up -d`"),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );

    // A daemon that stops takes the services of `up -d` with it.
    assert!(cli_in(&a, dir, &["up", "-d"]).await.status.success());
    assert!(processes_in(dir).len() >= 2, "the ticker's sh and the api");
    a.signal(Signal::SIGTERM);
    let exit = tokio::time::timeout(STEP, a.wait_exit()).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    nothing_left_in(dir).await;
}

/// A `devmesh up` in the foreground that is killed outright (a closed
/// terminal, `kill -9`) leaves nothing running: the daemon stops its
/// project when its connection ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_foreground_up_leaves_nothing_running() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let api = ticker_and_api(dir);
    let mut up = super::Up::start(&a, dir, &[]);
    up.wait_for(&format!("devmesh: api ready on :{api} (shared)"))
        .await;
    up.child.kill().await.unwrap();
    nothing_left_in(dir).await;
    eventually(STEP, "the project down", || async {
        let ps = cli_in(&a, dir, &["ps"]).await;
        (ps.status.code() == Some(1)).then_some(())
    })
    .await;
}
