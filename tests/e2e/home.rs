//! One daemon per home, the one the user started (issue 17 item 7), and a
//! daemon that dies at start reported at once (issue 18).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use devmesh_tests::{Daemon, SHORT, backend::Backend, bin, devmesh_in as devmesh, eventually};
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

/// A config that keeps a CLI-started daemon on loopback, in namespace
/// `auto`, so it can be told from one started with explicit flags.
const LOOPBACK_CONFIG: &str = "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nproxy = \"127.0.0.1:0\"\nmdns = false\nnamespace = \"auto\"\n";

/// A devmeshd with explicit flags, as a login script would start it.
fn explicit_daemon(home: &Path) -> Child {
    Command::new(bin("devmeshd"))
        .env("DEVMESH_HOME", home)
        .env("DEVMESH_LOG", "info")
        .args(["--proxy", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--mdns", "false", "--namespace", "explicit"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The live devmeshd processes whose home is `home`.
fn daemons_of(home: &Path) -> Vec<u32> {
    let exe = bin("devmeshd");
    let env = format!("DEVMESH_HOME={}", home.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if argv0 != exe.as_os_str().as_encoded_bytes() {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|v| v == env.as_bytes());
        if ours && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Stops whatever daemon runs for `home` (the test's cleanup).
async fn stop_all(home: &Path) {
    let _ = devmesh(home, &["daemon", "stop"]).output().await;
    for pid in daemons_of(home) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// A devmeshd with explicit flags followed at once by several CLI calls
/// stays the one daemon of its home, in every trial; the CLI calls wait
/// for it instead of starting a default daemon.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_the_user_started_stays_the_only_one() {
    for trial in 0..5 {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), LOOPBACK_CONFIG).unwrap();
        let mut user = explicit_daemon(home.path());
        let calls: Vec<_> = (0..4)
            .map(|_| devmesh(home.path(), &["status", "--json"]).output())
            .collect();
        let outs = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
            .await
            .expect("status calls finished");
        for out in outs {
            let out = out.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "trial {trial}: {stderr}");
            assert!(
                !stderr.contains("started it in the background"),
                "trial {trial}: {stderr}"
            );
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(status["namespace"], "explicit", "trial {trial}");
        }
        assert!(
            user.try_wait().unwrap().is_none(),
            "trial {trial}: the user's daemon exited"
        );
        let pid = user.id().unwrap();
        eventually(SHORT, "exactly the user's daemon", || async {
            (daemons_of(home.path()) == [pid]).then_some(())
        })
        .await;
        stop_all(home.path()).await;
        let _ = user.wait().await;
    }
}

/// 20 CLI calls at once against a home with no daemon: all get an answer
/// from the same node, and exactly one daemon is left.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cli_calls_start_one_daemon() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), LOOPBACK_CONFIG).unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| devmesh(home.path(), &["status", "--json"]).output())
        .collect();
    let outs = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
        .await
        .expect("status calls finished");
    let mut peers = std::collections::BTreeSet::new();
    for out in outs {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        peers.insert(status["peer_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(peers.len(), 1, "{peers:?}");
    let settled = Instant::now();
    eventually(SHORT, "exactly one daemon", || async {
        (daemons_of(home.path()).len() == 1).then_some(())
    })
    .await;
    eprintln!("one daemon left {:?} after the calls", settled.elapsed());
    stop_all(home.path()).await;
}

/// A daemon the CLI starts that dies at once (its proxy port is taken, its
/// config has a typo) is reported at once, with its own message.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_that_dies_at_start_is_reported_at_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cases = [
        (
            format!(
                "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nproxy = \"127.0.0.1:{port}\"\nmdns = false\n"
            ),
            format!("cannot open the proxy on 127.0.0.1:{port}"),
        ),
        (
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = \"sometimes\"\n".to_owned(),
            "config.toml:2".to_owned(),
        ),
    ];
    for (config, said) in cases {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            devmesh(home.path(), &["status"]).output(),
        )
        .await
        .unwrap()
        .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("devmeshd exited at start"), "{stderr}");
        assert!(stderr.contains(&said), "{stderr}");
        assert!(
            took < Duration::from_secs(2),
            "reported after {took:?}: {stderr}"
        );
        eprintln!("a dying daemon was reported after {took:?}");
    }
    drop(busy);
}

/// The daemon of a `devmesh run` dies: when a daemon comes back on the home
/// the registration is restored; when none does, the command says so and
/// exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn run_follows_its_daemon() {
    let mut a = Daemon::start().await;
    let api = Backend::start("api").await;
    let mut run = a
        .devmesh()
        .args(["run", "api", "--port", &api.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    a.wait_for_service("api", |s| s["route"] == "local").await;
    a.signal(Signal::SIGKILL);
    a.wait_exit().await;
    let mut again = Command::new(bin("devmeshd"))
        .env("DEVMESH_HOME", a.home.path())
        .args(["--proxy", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--mdns", "false", "--namespace", "test", "--open"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    a.wait_for_service("api", |s| s["route"] == "local").await;
    assert!(run.try_wait().unwrap().is_none(), "devmesh run ended");

    // This time nothing comes back.
    again.start_kill().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .expect("devmesh run ended")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("devmeshd is back; sharing api again"),
        "{stderr}"
    );
    assert!(stderr.contains("did not come back"), "{stderr}");
}

/// After `daemon stop && daemon start`, the peers joined by multiaddr and
/// the services shared with `--detach` are back, and `status` says so.
#[tokio::test(flavor = "multi_thread")]
async fn joins_and_detached_shares_survive_a_restart() {
    let home = tempfile::tempdir().unwrap();
    // B is in the open namespace `test`: so is this node, as config.toml says.
    let config = LOOPBACK_CONFIG.replace("\"auto\"", "\"test\"\nopen = true");
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let b = Daemon::start().await;
    let api = Backend::start("api").await;
    let port = api.port().to_string();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok(
        devmesh(home.path(), &["run", "api", "--port", &port, "--detach"])
            .output()
            .await
            .unwrap(),
    );
    ok(devmesh(home.path(), &["join", &b.p2p_addr])
        .output()
        .await
        .unwrap());
    ok(devmesh(home.path(), &["daemon", "stop"])
        .output()
        .await
        .unwrap());
    ok(devmesh(home.path(), &["daemon", "start"])
        .output()
        .await
        .unwrap());

    let status = ok(devmesh(home.path(), &["status", "--json"])
        .output()
        .await
        .unwrap());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["home"]["restored_shares"],
        serde_json::json!(["api"]),
        "{status}"
    );
    assert_eq!(
        status["home"]["restored_joins"],
        serde_json::json!([b.p2p_addr]),
        "{status}"
    );
    assert!(
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "api" && s["route"] == "local"),
        "{status}"
    );
    let human = ok(devmesh(home.path(), &["status"]).output().await.unwrap());
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("restored   1 detached share(s) (api), 1 join(s)"),
        "{human}"
    );
    assert!(
        human.contains(&format!("home       {}", home.path().display())),
        "{human}"
    );
    assert!(human.contains("devmeshd.log"), "{human}");
    b.wait_for_service("api", |s| s["route"] == "remote").await;

    // A stopped share stays stopped after the next restart.
    ok(devmesh(home.path(), &["stop", "api"])
        .output()
        .await
        .unwrap());
    ok(devmesh(home.path(), &["daemon", "stop"])
        .output()
        .await
        .unwrap());
    let status = ok(devmesh(home.path(), &["status", "--json"])
        .output()
        .await
        .unwrap());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["home"]["restored_shares"],
        serde_json::json!([]),
        "{status}"
    );
    stop_all(home.path()).await;
}

/// A daemon whose home is deleted (a test's temporary home, a user's
/// `rm -rf ~/.devmesh`) stops by itself instead of running orphaned.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_whose_home_is_deleted_stops() {
    let mut a = Daemon::start().await;
    std::fs::remove_file(a.home.path().join("devmeshd.sock")).unwrap();
    let started = Instant::now();
    let status = a.wait_exit().await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        a.log().contains("the control socket was removed"),
        "{}",
        a.log()
    );
}
