//! `devmesh up` in the foreground: services start in dependency order, the
//! ready ones are shared with the mesh, a dependency comes from a teammate
//! when one provides it healthy in a satisfying version, and Ctrl-C stops
//! everything.

use std::{
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use devmesh_tests::{Daemon, bin, eventually, get};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Child,
};

/// Generous bound for a step of `devmesh up`.
const STEP: Duration = Duration::from_secs(30);

/// A port nothing listens on at the moment.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running `devmesh up` and every line it printed so far.
pub(crate) struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Its stdout was closed: it exited.
    ended: Arc<AtomicBool>,
}

impl Up {
    pub(crate) fn start(node: &Daemon, project: &Path, args: &[&str]) -> Up {
        Up::start_with(node, project, args, &[])
    }

    /// `start` with `env` added to the environment of `devmesh up`.
    pub(crate) fn start_with(
        node: &Daemon,
        project: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Up {
        let mut child = node
            .devmesh()
            .arg("up")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(project)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning devmesh up");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (seen, closed) = (lines.clone(), ended.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("up: {line}");
                seen.lock().unwrap().push(line);
            }
            closed.store(true, Ordering::SeqCst);
        });
        Up {
            child,
            lines,
            ended,
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line equal to `line` was printed; its index.
    pub(crate) async fn wait_for(&self, line: &str) -> usize {
        eventually(STEP, &format!("devmesh up printing {line:?}"), || async {
            let ended = self.ended.load(Ordering::SeqCst);
            let found = self.lines().iter().position(|l| l == line);
            assert!(
                found.is_some() || !ended,
                "devmesh up exited without printing {line:?}: {:#?}",
                self.lines()
            );
            found
        })
        .await
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    pub(crate) async fn interrupt(&mut self) -> Option<i32> {
        let pid = Pid::from_raw(self.child.id().expect("running devmesh up") as i32);
        nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("devmesh up did not exit")
            .unwrap()
            .code()
    }
}

/// The processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cwd = std::fs::read_link(entry.path().join("cwd"));
        if cwd.is_ok_and(|c| c == dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

/// Waits until no process of the project in `dir` is left.
async fn nothing_left_in(dir: &Path) {
    eventually(STEP, "no process of the project left", || async {
        processes_in(dir).is_empty().then_some(())
    })
    .await;
}

/// Runs `devmesh up` in `dir` on `node` until it exits by itself.
async fn up_to_exit(node: &Daemon, dir: &Path) -> std::process::Output {
    tokio::time::timeout(STEP, node.devmesh().arg("up").current_dir(dir).output())
        .await
        .expect("devmesh up did not exit")
        .unwrap()
}

/// A job, a service ready on a log line and an HTTP api start in that
/// order; the api is reachable from another node; Ctrl-C withdraws it and
/// leaves no process behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_starts_in_order_is_shared_and_stops_on_ctrl_c() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let project = tempfile::tempdir().unwrap();
    let api = free_port();
    let backend = bin("devmesh-demo-backend");
    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            r#"
[services.migrate]
command = "echo migrated"

[services.worker]
port = {worker}
command = "echo booting; echo worker-started; exec sleep 600"
ready_log_line = "worker-started"
depends_on = {{ migrate = "completed_successfully" }}

[services.api]
port = {api}
version = "1.0.0"
run = ["{backend}", "{api}", "api"]
health = "/healthz"
health_interval = "200ms"
depends_on = {{ worker = "healthy" }}
"#,
            worker = free_port(),
            backend = backend.display(),
        ),
    )
    .unwrap();

    let mut up = Up::start(&a, project.path(), &[]);
    let ready = up
        .wait_for(&format!("devmesh: api ready on :{api} (shared)"))
        .await;
    let lines = up.lines();
    let at = |line: &str| lines.iter().position(|l| l == line);
    let migrated = at("migrate | migrated").expect("the job's output, prefixed");
    let worker = at("worker  | worker-started").expect("the worker's output, aligned");
    assert!(migrated < worker && worker < ready, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "devmesh: migrate ready (not shared)"),
        "a job without a port is not shared: {lines:#?}"
    );

    let reply = eventually(STEP, "api through the other node", || async {
        let r = get(b.proxy, "api.localhost", "/hello").await;
        (r.status.as_u16() == 200).then_some(r)
    })
    .await;
    assert_eq!(reply.text(), "hello from api\n");

    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
    eventually(STEP, "api gone from the other node", || async {
        let status = b.status().await;
        let services = status["services"].as_array()?;
        (!services.iter().any(|s| s["name"] == "api")).then_some(())
    })
    .await;
    nothing_left_in(project.path()).await;
}

/// Writes a project where `api` needs `db` in `requirement`; `db` can
/// start here in version 2.0.0 on the returned port.
fn project_needing_db(dir: &Path, requirement: &str) -> u16 {
    let db = free_port();
    std::fs::write(
        dir.join("devmesh.toml"),
        format!(
            r#"
[services.db]
port = {db}
version = "2.0.0"
run = ["{backend}", "{db}", "db-local"]
health = "/healthz"
health_interval = "200ms"

[services.api]
port = {api}
command = "echo api-up; exec sleep 600"
depends_on = {{ db = "healthy" }}
requires = {{ db = "{requirement}" }}
"#,
            api = free_port(),
            backend = bin("devmesh-demo-backend").display(),
        ),
    )
    .unwrap();
    db
}

/// A teammate's healthy `db` 1.4.0 meets `^1.2` (nothing starts here and
/// the output says where it comes from) but not `^2` (it starts here).
#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_comes_from_the_mesh_when_a_teammate_satisfies_it() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let remote = devmesh_tests::backend::Backend::start("db-a").await;
    let health = ["--health", "/healthz", "--health-interval", "200ms"];
    let _run = a
        .run_service_with("db", remote.port(), "1.4.0", &health)
        .await;
    b.wait_for_health("db", &a.peer_id, "healthy").await;

    let project = tempfile::tempdir().unwrap();
    let db = project_needing_db(project.path(), "^1.2");
    let mut up = Up::start(&b, project.path(), &[]);
    up.wait_for(&format!("devmesh: db from {} (mesh)", a.peer_id))
        .await;
    up.wait_for("api | api-up").await;
    let lines = up.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("db ") || l.contains("db ready")),
        "{lines:#?}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", db)).is_err());
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());

    // --local: every dependency starts here.
    let project = tempfile::tempdir().unwrap();
    let db = project_needing_db(project.path(), "^1.2");
    let mut up = Up::start(&b, project.path(), &["--local"]);
    up.wait_for(&format!("devmesh: db ready on :{db} (shared)"))
        .await;
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());

    let project = tempfile::tempdir().unwrap();
    let db = project_needing_db(project.path(), "^2");
    let mut up = Up::start(&b, project.path(), &[]);
    up.wait_for(&format!("devmesh: db ready on :{db} (shared)"))
        .await;
    up.wait_for("api | api-up").await;
    assert!(
        !up.lines().iter().any(|l| l.ends_with("(mesh)")),
        "{:#?}",
        up.lines()
    );
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
}

/// A service that cannot start makes `devmesh up` stop the others and exit
/// 1 with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_service_ends_up_with_its_reason() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            "[services.side]\nport = {}\ncommand = \"echo side-up; exec sleep 600\"\n\n\
             [services.api]\nport = {}\nrun = [\"/nonexistent/api-server\"]\n",
            free_port(),
            free_port(),
        ),
    )
    .unwrap();
    let out = up_to_exit(&a, project.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("devmesh: api failed: cannot start `/nonexistent/api-server`"),
        "{stderr}"
    );
    nothing_left_in(project.path()).await;
}

/// A service that ignores SIGTERM and forks a child is killed with its
/// child after `stop_timeout`; a crashing one is restarted and, at
/// `max_restarts`, ends `devmesh up` with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn stubborn_and_crashing_services_leave_nothing_behind() {
    let a = Daemon::start().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            r#"
[services.stubborn]
port = {stubborn}
command = "trap '' TERM; sleep 600 & echo forked; wait"
ready_log_line = "forked"
stop_timeout = "1s"
"#,
            stubborn = free_port(),
        ),
    )
    .unwrap();
    let mut up = Up::start(&a, project.path(), &[]);
    up.wait_for("stubborn | forked").await;
    assert_eq!(processes_in(project.path()).len(), 3, "up, sh and sleep");
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
    nothing_left_in(project.path()).await;

    std::fs::write(
        project.path().join("devmesh.toml"),
        format!(
            "[services.crasher]\nport = {}\ncommand = \"echo crashing; exit 3\"\n\
             restart = \"on-failure\"\nmax_restarts = 2\n",
            free_port(),
        ),
    )
    .unwrap();
    let out = up_to_exit(&a, project.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.matches("crasher | crashing").count(), 3, "{stdout}");
    assert!(stdout.contains("devmesh: crasher exited with"), "{stdout}");
    assert!(
        stderr.starts_with("devmesh: crasher failed: gave up after 2 restarts in a row"),
        "{stderr}"
    );
}

/// When the teammate's provider goes away while `devmesh up` runs, the
/// dependency starts here.
#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_starts_here_when_its_provider_leaves() {
    let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
    b.join(&a).await;
    let remote = devmesh_tests::backend::Backend::start("db-a").await;
    let health = ["--health", "/healthz", "--health-interval", "200ms"];
    let mut run = a
        .run_service_with("db", remote.port(), "1.4.0", &health)
        .await;
    b.wait_for_health("db", &a.peer_id, "healthy").await;

    let project = tempfile::tempdir().unwrap();
    let db = project_needing_db(project.path(), "^1");
    let mut up = Up::start(&b, project.path(), &[]);
    up.wait_for(&format!("devmesh: db from {} (mesh)", a.peer_id))
        .await;
    run.kill().await.unwrap();
    up.wait_for(&format!("devmesh: db ready on :{db} (shared)"))
        .await;
    assert_eq!(up.interrupt().await, Some(0), "{:#?}", up.lines());
}

mod detached;
mod reload;
