//! Containers of a real Docker Engine API (Podman's `system service`, on a
//! socket of the test's own): `devmesh from-docker` lists what the
//! `docker` CLI lists, `--write` merges them into devmesh.toml, and `devmesh
//! share --docker` shares a container while it runs.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use devmesh_tests::{Daemon, bin, eventually, get};
use tokio::process::{Child, Command};

const STEP: Duration = Duration::from_secs(60);

/// A Podman engine with its own storage, network config and API socket;
/// its containers are removed and the service stopped on drop.
pub(crate) struct Engine {
    dir: tempfile::TempDir,
    service: Child,
}

impl Engine {
    /// `None` (after saying why) when podman is not installed and this is
    /// not CI.
    pub(crate) async fn start() -> Option<Engine> {
        if Command::new("podman")
            .arg("--version")
            .output()
            .await
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "podman is needed (.ci/run installs podman, runc and busybox-static)"
            );
            eprintln!("skipping: podman is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let d = d.as_path();
        std::fs::create_dir_all(d.join("networks")).unwrap();
        // TESTING.md: runc, cgroupfs, and container addresses in the
        // benchmark range.
        std::fs::write(
            d.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n[network]\ndefault_subnet = \"198.18.200.0/24\"\n",
        )
        .unwrap();
        let _ = Command::new("ip")
            .args(["link", "del", "cni-podman0"])
            .status()
            .await;
        let socket = d.join("docker.sock");
        let mut podman = podman_in(d);
        podman
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let service = podman.spawn().unwrap();
        let engine = Engine { dir, service };
        eventually(STEP, "the engine's socket", || async {
            socket.exists().then_some(())
        })
        .await;
        // A tiny image without a registry: a static busybox serving /www.
        let image = d.join("image");
        std::fs::create_dir_all(image.join("bin")).unwrap();
        std::fs::create_dir_all(image.join("www")).unwrap();
        std::fs::copy("/bin/busybox", image.join("bin/busybox")).unwrap();
        for link in ["sh", "httpd", "sleep", "touch", "test", "echo"] {
            std::os::unix::fs::symlink("busybox", image.join("bin").join(link)).unwrap();
        }
        std::fs::write(image.join("www/index.html"), "hello from a container\n").unwrap();
        let tar = d.join("image.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&image)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .await
            .unwrap();
        assert!(ok.success());
        engine
            .podman(&["import", tar.to_str().unwrap(), "localhost/tiny:1.2.3"])
            .await;
        Some(engine)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub(crate) fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Runs `podman ARGS` against this engine; its stdout.
    pub(crate) async fn podman(&self, args: &[&str]) -> String {
        let out = podman_in(self.dir.path())
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a busybox httpd container published on 127.0.0.1:`port`.
    async fn run(&self, name: &str, port: u16, labels: &[&str]) {
        let publish = format!("127.0.0.1:{port}:80");
        let mut args = vec!["run", "-d", "--name", name, "-p", &publish];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend([
            "localhost/tiny:1.2.3",
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        self.podman(&args).await;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(podman_flags(self.dir.path()))
            .args(["rm", "-f", "-a", "-t", "0"])
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .output();
        let _ = self.service.start_kill();
    }
}

fn podman_flags(d: &Path) -> Vec<String> {
    vec![
        format!("--root={}", d.join("root").display()),
        format!("--runroot={}", d.join("run").display()),
        format!("--network-config-dir={}", d.join("networks").display()),
    ]
}

fn podman_in(d: &Path) -> Command {
    let mut c = Command::new("podman");
    c.args(podman_flags(d))
        .env("CONTAINERS_CONF", d.join("containers.conf"));
    c
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_listed_written_to_devmesh_toml_and_shared_while_they_run() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    let devmesh = |args: &[&str], dir: &Path| {
        let mut c = Command::new(bin("devmesh"));
        c.args(args)
            .current_dir(dir)
            .env("DOCKER_HOST", engine.docker_host());
        c
    };
    let db = free_port();
    engine
        .run(
            "shop_db_1",
            db,
            &["com.docker.compose.service=db", "devmesh.health=tcp"],
        )
        .await;
    let project = tempfile::tempdir().unwrap();
    let out = devmesh(&["from-docker", "--json"], project.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{
            "service": "db", "container": "shop_db_1", "image": "localhost/tiny:1.2.3",
            "port": db, "container_port": 80, "version": "1.2.3", "health": "tcp"
        }])
    );
    // The docker CLI sees the same container and port.
    match Command::new("docker")
        .args(["ps", "--format", "{{.Names}} {{.Ports}}"])
        .env("DOCKER_HOST", engine.docker_host())
        .output()
        .await
    {
        Ok(ps) => {
            let ps = String::from_utf8_lossy(&ps.stdout);
            assert!(
                ps.lines()
                    .any(|l| l == format!("shop_db_1 127.0.0.1:{db}->80/tcp")),
                "{ps}"
            );
        }
        Err(e) => eprintln!("no docker CLI to compare with: {e}"),
    }

    // --write: a diff first, then the file with its comment kept.
    let file = project.path().join("devmesh.toml");
    let before = "# the shop\n[services.api]\nport = 3000 # node\ncommand = \"npm start\"\n";
    std::fs::write(&file, before).unwrap();
    let dry = devmesh(&["from-docker", "--write"], project.path())
        .output()
        .await
        .unwrap();
    let diff = String::from_utf8_lossy(&dry.stdout);
    assert!(
        diff.contains(&format!("+[services.db]\n+port = {db}\n")),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let wrote = devmesh(&["from-docker", "--write", "--yes"], project.path())
        .output()
        .await
        .unwrap();
    assert!(
        wrote.status.success(),
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        after,
        format!(
            "{before}\n[services.db]\nport = {db}\nversion = \"1.2.3\"\ndocker = \"shop_db_1\"\nhealth = \"tcp\"\n"
        )
    );
    let again = devmesh(&["from-docker", "--write", "--yes"], project.path())
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("[services.db] exists"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        after,
        "kept without --force"
    );

    // Live: a labelled container is shared while it runs.
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let mut share = a.devmesh();
    share
        .args(["share", "--docker", "--label", "devmesh.share=true"])
        .env("DOCKER_HOST", engine.docker_host())
        .kill_on_drop(true);
    let mut share = share.spawn().unwrap();
    let web = free_port();
    engine
        .run(
            "web-1",
            web,
            &[
                "devmesh.share=true",
                "devmesh.service=web",
                "devmesh.version=2.0.0",
            ],
        )
        .await;
    let reply = eventually(
        STEP,
        "the container's service through the other node",
        || async {
            let r = get(b.proxy, "web.localhost", "/").await;
            (r.status.as_u16() == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(reply.text(), "hello from a container\n");
    let status = b.status().await;
    assert!(
        !status["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "db"),
        "an unlabelled container is not shared: {status:#}"
    );
    engine.podman(&["stop", "-t", "0", "web-1"]).await;
    let gone = |name: &'static str| {
        let b = &b;
        async move {
            let status = b.status().await;
            let services = status["services"].as_array()?;
            (!services.iter().any(|s| s["name"] == name)).then_some(())
        }
    };
    eventually(STEP, "web withdrawn when its container stopped", || {
        gone("web")
    })
    .await;
    share.kill().await.unwrap();

    // `[docker] share = true`: the project's up shares the containers
    // while it runs, and `down` withdraws them.
    std::fs::write(
        &file,
        "[docker]\nshare = true\nlabel = \"devmesh.up=true\"\n\n[services.job]\ncommand = \"echo job-up; exec sleep 641\"\nready_log_line = \"job-up\"\n",
    )
    .unwrap();
    let cli = |args: &'static [&'static str]| {
        let mut c = a.devmesh();
        c.args(args)
            .current_dir(project.path())
            .env("DOCKER_HOST", engine.docker_host());
        c
    };
    let up = cli(&["up", "-d"]).output().await.unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let cache = free_port();
    engine
        .run(
            "cache-1",
            cache,
            &["devmesh.up=true", "devmesh.service=cache"],
        )
        .await;
    eventually(STEP, "cache shared by the project", || async {
        let r = get(b.proxy, "cache.localhost", "/").await;
        (r.status.as_u16() == 200).then_some(())
    })
    .await;
    assert!(cli(&["down"]).status().await.unwrap().success());
    eventually(STEP, "cache withdrawn by down", || gone("cache")).await;
}
