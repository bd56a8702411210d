use std::time::Duration;

use devmesh_tests::{Daemon, backend::Backend, bin, devmesh_in, eventually, get};

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A command that needs the daemon starts it, says so, and the daemon
/// reads its config file; `daemon stop` stops it.
#[tokio::test(flavor = "multi_thread")]
async fn cli_starts_the_daemon_when_needed() {
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join("config.toml"),
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nproxy = \"127.0.0.1:0\"\nmdns = false\nnamespace = \"auto\"\n",
    );
    let devmesh = |args: &[&str]| devmesh_in(home.path(), args);
    let out = devmesh(&["stop", "api"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "stop without a daemon");
    assert!(String::from_utf8_lossy(&out.stderr).contains("devmeshd is not running"));

    let out = tokio::time::timeout(
        Duration::from_secs(30),
        devmesh(&["status", "--json"]).output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("started it in the background"), "{stderr}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["namespace"], "auto");
    assert!(status["peer_id"].as_str().unwrap().starts_with("12D3KooW"));

    // The second command finds it running and says nothing about starting.
    let out = devmesh(&["peers"]).output().await.unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("started"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no connected peers"));

    let out = devmesh(&["daemon", "stop"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home.path().join("devmeshd.sock").exists());
    // The identity survives a restart.
    let out = devmesh(&["status", "--json"]).output().await.unwrap();
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["peer_id"], status["peer_id"]);
    let _ = devmesh(&["daemon", "stop"]).output().await;
}

/// Exit codes scripts can trust, and errors that say what to do.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_exit_codes() {
    let a = Daemon::start().await;
    let out = a
        .cli(&["run", "api", "--port", "3000", "--version", "one"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("semantic version"));

    let out = a.cli(&["run", "Bad_Name", "--port", "3000"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid service name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = a.cli(&["stop", "nothing"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not provided by this node"));

    let out = a.cli(&["join", "not-an-address"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a multiaddr"));

    let out = a.cli(&["run", "api"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --port"));

    for (args, said) in [
        (&["run", "api", "--port", "0"][..], "--port 0 is not a port"),
        (&["route", "api", "--peer", "bogus"][..], "is not a peer id"),
        (
            &["route", "api", "--require", "^^1"][..],
            "is not a version requirement",
        ),
        (&["join", "foo"][..], "is not a multiaddr"),
    ] {
        let out = a.cli(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    let out = a.cli(&["route", "nosuch", "--sticky"]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node provides nosuch yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listens on the port: shared, with a warning.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let out = a.cli(&["run", "ghost", "--port", &port, "--detach"]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("nothing answers on localhost port {port} yet")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = a.cli(&["daemon", "start"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("devmeshd is already running for"));
}

/// Bad input is refused before a daemon is started for it, and `daemon
/// stop` without a daemon says there is nothing to stop.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_starts_no_daemon() {
    let home = tempfile::tempdir().unwrap();
    let devmesh = |args: &[&str]| devmesh_in(home.path(), args);
    for args in [
        &["run", "API", "--port", "3000"][..],
        &["route", "api", "--peer", "bogus"],
        &["join", "foo"],
    ] {
        let out = devmesh(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("started it"));
    }
    assert!(!home.path().join("devmeshd.sock").exists());
    let out = devmesh(&["daemon", "stop"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to stop"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A reader that closed its end of the pipe (`devmesh status | true`,
/// `devmesh peers --json | head -1`) ends the CLI quietly with code 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let a = Daemon::start().await;
    for args in [&["status"][..], &["peers", "--json"], &["status", "--json"]] {
        let mut child = a
            .devmesh()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `devmesh run api` takes port and version from devmesh.toml; a bad file
/// is an error naming file, line and key.
#[tokio::test(flavor = "multi_thread")]
async fn run_reads_devmesh_toml() {
    let a = Daemon::start().await;
    let api = Backend::start("from-toml").await;
    let project = tempfile::tempdir().unwrap();
    let sub = project.path().join("src");
    std::fs::create_dir_all(&sub).unwrap();
    write(
        &project.path().join("devmesh.toml"),
        &format!(
            "[services.api]\nport = {}\nversion = \"2.3.4\"\n",
            api.port()
        ),
    );
    let mut run = a.devmesh();
    run.current_dir(&sub).args(["run", "api", "--detach"]);
    let out = run.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_for_service("api", |s| {
        s["version"] == "2.3.4" && s["port"] == api.port()
    })
    .await;
    assert_eq!(
        get(a.proxy, "api.localhost", "/name").await.text(),
        "from-toml"
    );

    write(
        &project.path().join("devmesh.toml"),
        "[services.api]\nport = 3000\nversoin = \"2.3.4\"\n",
    );
    let mut run = a.devmesh();
    run.current_dir(&sub).args(["run", "api"]);
    let out = run.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:3: key `versoin`: unknown field",
        project.path().join("devmesh.toml").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// devmeshd refuses a bad config file, naming file, line and key, and a
/// second daemon on the same home.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_config_errors() {
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join("config.toml"),
        "namespace = \"x\"\nmdns = \"sometimes\"\n",
    );
    let out = tokio::process::Command::new(bin("devmeshd"))
        .env("DEVMESH_HOME", home.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2", home.path().join("config.toml").display())),
        "{stderr}"
    );

    let a = Daemon::start().await;
    let out = tokio::process::Command::new(bin("devmeshd"))
        .env("DEVMESH_HOME", a.home.path())
        .args([
            "--proxy",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--mdns",
            "false",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first one is unharmed.
    eventually(Duration::from_secs(5), "status", || async {
        a.cli(&["status"]).await.status.success().then_some(())
    })
    .await;
}

/// `devmesh daemon install` writes a systemd user unit that runs this
/// devmeshd for the home (into `XDG_CONFIG_HOME`; systemctl is not called),
/// and `uninstall` removes it.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_install_writes_a_user_unit() {
    let user = tempfile::tempdir().unwrap();
    let xdg = user.path().join("xdg");
    let home = user.path().join(".devmesh");
    let devmesh = |args: &[&str]| {
        let mut c = tokio::process::Command::new(bin("devmesh"));
        c.env("HOME", user.path())
            .env("XDG_CONFIG_HOME", &xdg)
            .env("DEVMESH_HOME", &home)
            .args(args)
            .kill_on_drop(true);
        c
    };
    let out = devmesh(&["daemon", "install"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("systemctl --user enable --now devmeshd.service"),
        "{stderr}"
    );
    let unit_path = xdg.join("systemd/user/devmeshd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec = format!(
        "ExecStart={} --home {}",
        bin("devmeshd").display(),
        home.display()
    );
    assert!(unit.contains(&exec), "{unit}");
    assert!(unit.contains("Restart=on-failure"), "{unit}");
    assert!(
        !home.join("devmeshd.sock").exists(),
        "install started a daemon"
    );
    let out = devmesh(&["daemon", "uninstall"]).output().await.unwrap();
    assert!(out.status.success());
    assert!(!unit_path.exists());
}

/// Shell completions and man pages come from the real command definitions.
#[tokio::test(flavor = "multi_thread")]
async fn completions_and_man_pages() {
    let home = tempfile::tempdir().unwrap();
    let devmesh = |args: &[&str]| devmesh_in(home.path(), args);
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef devmesh"),
        ("fish", "complete -c devmesh"),
    ] {
        let out = devmesh(&["completions", shell]).output().await.unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("doctor") && script.contains("--detach"),
            "{shell}"
        );
    }
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = devmesh(&["completions", "bash"]).output().await.unwrap();
        let script = home.path().join("devmesh.bash");
        std::fs::write(&script, &out.stdout).unwrap();
        let check = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let out = devmesh(&["completions", "tcsh"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));

    let dir = home.path().join("man");
    let out = devmesh(&["man", "--dir", dir.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.join("devmesh.1")).unwrap();
    assert!(page.contains(".TH devmesh"), "{page}");
    assert!(dir.join("devmesh-run.1").exists());
    assert!(!home.path().join("devmeshd.sock").exists());
}
