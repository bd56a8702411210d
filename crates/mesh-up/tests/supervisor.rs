//! The supervisor with real processes: sh scripts in a temp dir.

mod util;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use mesh_core::health::{HealthCheck, Probe};
use mesh_up::{
    Backoff, Condition, Event, Failure, HealthProbe, Options, Prefer, ProjectSpec, Resolver,
    RestartPolicy, Selection, State,
};
use semver::VersionReq;
use util::{Up, eventually, gone, group_members, project, sh, workdir};

fn quick_backoff(initial_ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_secs(5),
        reset_after: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_chain_of_three_starts_in_dependency_order() {
    let (_tmp, dir) = workdir();
    let migrate = sh(
        "migrate",
        &dir,
        "sleep 0.2; echo migrated > schema; echo done",
    );
    let mut db = sh(
        "db",
        &dir,
        "test -f schema || exit 9; sleep 0.2; echo 'db: ready to accept connections'; exec sleep 60",
    );
    db.ready_log_line = Some("ready to accept".into());
    db.depends_on
        .insert("migrate".into(), Condition::CompletedSuccessfully);
    let mut api = sh("api", &dir, "echo api listening; exec sleep 60");
    api.port = Some(3000);
    api.depends_on.insert("db".into(), Condition::Healthy);

    let mut up = Up::start(project([migrate, db, api]), Options::default()).await;
    let port = up
        .until("api ready", |e| match e {
            Event::Ready { service, port } if service == "api" => Some(*port),
            _ => None,
        })
        .await;
    assert_eq!(port, Some(3000));
    assert!(up.position("migrate", State::Exited) < up.position("db", State::Starting));
    assert!(up.position("db", State::Ready) < up.position("api", State::Starting));
    assert_eq!(up.states_of("db"), [State::Starting, State::Ready]);

    let ps = up.supervisor.ps().await.unwrap();
    let names: Vec<_> = ps.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        names,
        [
            ("migrate", State::Exited),
            ("db", State::Ready),
            ("api", State::Ready)
        ]
    );
    let db_pid = ps[1].pid.unwrap();
    let api_pid = ps[2].pid.unwrap();
    assert!(ps[1].uptime.is_some() && ps[0].uptime.is_none());

    up.stop_all().await;
    // Dependents stop before their dependencies.
    up.all(&["api", "db"], State::Exited).await;
    assert!(up.position("api", State::Exited) < up.position("db", State::Exited));
    assert!(
        up.states_of("api")
            .ends_with(&[State::Ready, State::Exited])
    );
    assert!(gone(db_pid) && gone(api_pid));
    let logs = up.supervisor.logs(Some("migrate"), 10).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].line, "done");
}

#[tokio::test]
async fn a_crash_is_restarted_with_back_off() {
    let (_tmp, dir) = workdir();
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
                  echo run $n; [ $n -ge 3 ] || exit 1; echo steady; exec sleep 60";
    let mut flaky = sh("flaky", &dir, script);
    flaky.ready_log_line = Some("steady".into());
    flaky.restart = RestartPolicy::OnFailure;
    flaky.backoff = quick_backoff(200);

    let mut up = Up::start(project([flaky]), Options::default()).await;
    let mut delays = Vec::new();
    let mut gaps = Vec::new();
    for _ in 0..2 {
        let delay = up
            .until("a restart", |e| match e {
                Event::Restarting {
                    service,
                    delay,
                    exit,
                } if service == "flaky" => {
                    assert_eq!(exit.code, Some(1));
                    Some(*delay)
                }
                _ => None,
            })
            .await;
        let at = Instant::now();
        up.state("flaky", State::Starting).await;
        delays.push(delay);
        gaps.push(at.elapsed());
    }
    assert_eq!(
        delays,
        [Duration::from_millis(200), Duration::from_millis(400)]
    );
    for (gap, delay) in gaps.iter().zip(&delays) {
        assert!(
            gap >= &(*delay - Duration::from_millis(20)),
            "{gap:?} < {delay:?}"
        );
    }
    up.state("flaky", State::Ready).await;
    let status = up.status("flaky").await;
    assert_eq!((status.state, status.restarts), (State::Ready, 2));
    up.stop_all().await;
}

#[tokio::test]
async fn a_crash_loop_stops_at_max_restarts_and_fails_its_dependents() {
    let (_tmp, dir) = workdir();
    let mut crashy = sh(
        "crashy",
        &dir,
        "echo starting; echo 'fatal: port 5432 taken' >&2; exit 3",
    );
    crashy.ready_log_line = Some("never printed".into());
    crashy.restart = RestartPolicy::Always;
    crashy.max_restarts = Some(2);
    crashy.backoff = quick_backoff(50);
    let mut web = sh("web", &dir, "echo should not run");
    web.depends_on.insert("crashy".into(), Condition::Healthy);

    let mut up = Up::start(project([crashy, web]), Options::default()).await;
    let failure = up
        .until("crashy failed", |e| match e {
            Event::Failed { service, failure } if service == "crashy" => Some(failure.clone()),
            _ => None,
        })
        .await;
    let Failure::CrashLoop {
        restarts,
        exit,
        last_lines,
    } = &failure
    else {
        panic!("not a crash loop: {failure}");
    };
    assert_eq!((*restarts, exit.code), (2, Some(3)));
    assert_eq!(
        last_lines.last().map(String::as_str),
        Some("fatal: port 5432 taken")
    );
    assert!(
        failure
            .to_string()
            .starts_with("gave up after 2 restarts in a row: exited with status 3; last output:"),
        "{failure}"
    );

    up.state("web", State::Failed).await;
    let web = up.status("web").await;
    assert_eq!(
        web.failure.unwrap().to_string().lines().next().unwrap(),
        "dependency `crashy` failed: gave up after 2 restarts in a row: exited with status 3; last output:"
    );
    assert_eq!(up.status("crashy").await.restarts, 2);
    assert!(
        up.supervisor
            .logs(Some("web"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    up.stop_all().await;
}

#[tokio::test]
async fn stop_leaves_nothing_of_a_group_that_ignores_sigterm_and_forks() {
    let (_tmp, dir) = workdir();
    let script = r#"trap '' TERM
sh -c 'echo "child $$"; while true; do sleep 1; done' &
echo "parent $$"
while true; do sleep 1; done"#;
    let mut stubborn = sh("stubborn", &dir, script);
    stubborn.ready_log_line = Some("parent".into());
    stubborn.stop_timeout = Duration::from_millis(500);

    let mut up = Up::start(project([stubborn]), Options::default()).await;
    let child: u32 = up.line("stubborn", "child").await[6..].parse().unwrap();
    up.state("stubborn", State::Ready).await;
    let pid = up.status("stubborn").await.pid.unwrap();
    assert!(!gone(child) && group_members(pid).len() >= 2);

    let asked = Instant::now();
    up.stop_all().await;
    // It ignored SIGTERM: SIGKILL came after the stop timeout.
    assert!(asked.elapsed() >= Duration::from_millis(500));
    let exit = up.status("stubborn").await.last_exit.unwrap();
    assert_eq!(exit.signal, Some(9), "{exit}");
    eventually("the group to be empty", || {
        gone(pid) && gone(child) && group_members(pid).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_forked_child_left_behind_by_a_crash_is_killed() {
    let (_tmp, dir) = workdir();
    let script = r#"sh -c 'echo "orphan $$"; exec sleep 60' &
sleep 0.2; exit 1"#;
    let leaver = sh("leaver", &dir, script);
    let mut up = Up::start(project([leaver]), Options::default()).await;
    let orphan: u32 = up.line("leaver", "orphan").await[7..].parse().unwrap();
    up.state("leaver", State::Exited).await;
    eventually("the orphan to be killed", || gone(orphan)).await;
}

#[tokio::test]
async fn reload_adds_changes_and_removes_services() {
    let (_tmp, dir) = workdir();
    let ready = |name: &str, script: &str| {
        let mut s = sh(name, &dir, script);
        s.ready_log_line = Some("up".into());
        s
    };
    let old = project([
        ready("keep", "echo keep up; exec sleep 60"),
        ready("change", "echo change up v1; exec sleep 60"),
        ready("remove", "echo remove up; exec sleep 60"),
    ]);
    let mut up = Up::start(old, Options::default()).await;
    up.all(&["keep", "change", "remove"], State::Ready).await;
    let pid = |ps: &[mesh_up::ServiceStatus], name: &str| {
        ps.iter().find(|s| s.name == name).and_then(|s| s.pid)
    };
    let before = up.supervisor.ps().await.unwrap();
    let (keep_pid, change_pid, remove_pid) = (
        pid(&before, "keep").unwrap(),
        pid(&before, "change").unwrap(),
        pid(&before, "remove").unwrap(),
    );

    let new = project([
        ready("keep", "echo keep up; exec sleep 60"),
        ready("change", "echo change up v2; exec sleep 60"),
        ready("add", "echo add up; exec sleep 60"),
    ]);
    let diff = up.supervisor.apply(new).await.unwrap();
    let names = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        (
            names(&diff.added),
            names(&diff.changed),
            names(&diff.removed)
        ),
        (
            vec!["add".to_owned()],
            vec!["change".to_owned()],
            vec!["remove".to_owned()]
        )
    );
    up.line("change", "change up v2").await;
    up.state("add", State::Ready).await;
    eventually("the removed service to stop", || {
        gone(remove_pid) && gone(change_pid)
    })
    .await;

    let after = up.supervisor.ps().await.unwrap();
    let rows: Vec<_> = after.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        rows,
        [
            ("add", State::Ready),
            ("change", State::Ready),
            ("keep", State::Ready)
        ]
    );
    assert_eq!(
        pid(&after, "keep"),
        Some(keep_pid),
        "unchanged keeps running"
    );
    assert_ne!(pid(&after, "change"), Some(change_pid));

    // An edit with a cycle changes nothing.
    let mut a = sh("a", &dir, "true");
    a.depends_on.insert("b".into(), Condition::Started);
    let mut b = sh("b", &dir, "true");
    b.depends_on.insert("a".into(), Condition::Started);
    let e = up.supervisor.apply(project([a, b])).await.unwrap_err();
    assert_eq!(e.to_string(), "dependency cycle: a -> b -> a");
    assert_eq!(up.supervisor.ps().await.unwrap().len(), 3);
    up.stop_all().await;
}

/// A mesh with one provider of `db` 15.2.0, that can leave or be replaced
/// by another.
struct FakeMesh {
    present: AtomicBool,
    second: AtomicBool,
}

impl FakeMesh {
    fn new(present: bool) -> Arc<Self> {
        Arc::new(Self {
            present: AtomicBool::new(present),
            second: AtomicBool::new(false),
        })
    }
}

impl Resolver for FakeMesh {
    fn provider_for(&self, service: &str, requirement: &VersionReq) -> Option<String> {
        let satisfied = requirement.matches(&semver::Version::new(15, 2, 0));
        let peer = if self.second.load(Ordering::SeqCst) {
            "12D3KooWother"
        } else {
            "12D3KooWpeer"
        };
        (service == "db" && satisfied && self.present.load(Ordering::SeqCst))
            .then(|| peer.to_owned())
    }
}

fn mesh_project(dir: &std::path::Path, requirement: &str) -> ProjectSpec {
    let dbinit = sh("dbinit", dir, "echo initialised");
    let mut db = sh("db", dir, "echo db ready; exec sleep 60");
    db.ready_log_line = Some("ready".into());
    db.depends_on
        .insert("dbinit".into(), Condition::CompletedSuccessfully);
    let mut api = sh("api", dir, "echo api up; exec sleep 60");
    api.depends_on.insert("db".into(), Condition::Healthy);
    api.requires.insert(
        "db".into(),
        VersionReq::parse(requirement).expect("requirement"),
    );
    project([dbinit, db, api])
}

#[tokio::test]
async fn a_dependency_from_the_mesh_is_not_started_until_its_provider_leaves() {
    let (_tmp, dir) = workdir();
    let mesh = FakeMesh::new(true);
    let options = Options {
        resolver: mesh.clone(),
        ..Options::default()
    };
    let mut up = Up::start(mesh_project(&dir, "^15"), options).await;
    let provider = up
        .until("db remote", |e| match e {
            Event::Remote { service, provider } if service == "db" => Some(provider.clone()),
            _ => None,
        })
        .await;
    assert_eq!(provider, "12D3KooWpeer");
    up.state("api", State::Ready).await;
    let db = up.status("db").await;
    assert_eq!(
        (db.state, db.pid, db.provider.as_deref()),
        (State::Remote, None, Some("12D3KooWpeer"))
    );
    // What only the remote db needs does not run either.
    let dbinit = up.status("dbinit").await;
    assert_eq!((dbinit.state, dbinit.pid), (State::Pending, None));
    assert!(dbinit.unneeded, "only the remote db needs dbinit");
    assert!(!up.status("api").await.unneeded);

    // Another teammate takes over: db fails over to it.
    mesh.second.store(true, Ordering::SeqCst);
    up.supervisor.mesh_changed().await.unwrap();
    let provider = up
        .until("db failed over", |e| match e {
            Event::Remote { service, provider } if service == "db" => Some(provider.clone()),
            _ => None,
        })
        .await;
    assert_eq!(provider, "12D3KooWother");
    assert_eq!(up.status("db").await.state, State::Remote);

    // The provider leaves: db starts here.
    mesh.present.store(false, Ordering::SeqCst);
    up.supervisor.mesh_changed().await.unwrap();
    up.state("db", State::Ready).await;
    assert!(up.position("dbinit", State::Exited) < up.position("db", State::Starting));
    assert!(up.status("db").await.pid.is_some());
    up.stop_all().await;
}

#[tokio::test]
async fn a_mesh_only_dependency_fails_until_a_teammate_provides_it() {
    let (_tmp, dir) = workdir();
    let mesh = FakeMesh::new(false);
    // `db` is not in the file: only the mesh can provide it.
    let mut api = sh("api", &dir, "echo api up; exec sleep 60");
    api.depends_on.insert("db".into(), Condition::Healthy);
    let mut spec = project([api]);
    spec.services
        .insert("db".into(), mesh_up::ServiceSpec::new("db", None, &dir));
    let options = Options {
        resolver: mesh.clone(),
        ..Options::default()
    };
    let mut up = Up::start(spec, options).await;
    up.state("api", State::Failed).await;
    assert_eq!(
        up.status("api").await.failure.unwrap().reason(),
        "dependency `db` failed: no teammate provides it and it has no `command` or `run` to start it here"
    );

    mesh.present.store(true, Ordering::SeqCst);
    up.supervisor.mesh_changed().await.unwrap();
    up.state("api", State::Ready).await;
    assert_eq!(up.status("db").await.state, State::Remote);
    up.stop_all().await;
}

#[tokio::test]
async fn an_unsatisfying_version_or_prefer_local_starts_it_here() {
    for case in ["version", "prefer", "--local"] {
        let (_tmp, dir) = workdir();
        let mesh = FakeMesh::new(true);
        let mut project = mesh_project(&dir, if case == "version" { "^16" } else { "^15" });
        if case == "prefer"
            && let Some(db) = project.services.get_mut("db")
        {
            db.prefer = Prefer::Local;
        }
        let options = Options {
            resolver: mesh,
            selection: Selection {
                services: Vec::new(),
                local: case == "--local",
            },
            ..Options::default()
        };
        let mut up = Up::start(project, options).await;
        up.state("api", State::Ready).await;
        let db = up.status("db").await;
        assert_eq!(db.state, State::Ready, "{case}");
        assert!(db.pid.is_some() && db.provider.is_none(), "{case}");
        up.stop_all().await;
    }
}

/// Passes while a file exists.
struct FileProbe(std::path::PathBuf);

impl HealthProbe for FileProbe {
    fn check<'a>(&'a self, _: &'a str, _: u16, _: &'a HealthCheck) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.0.exists() })
    }
}

#[tokio::test]
async fn health_makes_it_ready_and_a_failing_check_withdraws_it() {
    let (_tmp, dir) = workdir();
    let flag = dir.join("healthy");
    let mut api = sh("api", &dir, "sleep 0.3; touch healthy; exec sleep 60");
    api.port = Some(3000);
    let mut check = HealthCheck::new(Probe::Tcp);
    check.interval = Duration::from_millis(100);
    check.healthy_threshold = 1;
    check.unhealthy_threshold = 1;
    api.health = Some(check);

    let no_probe = mesh_up::Supervisor::spawn(project([api.clone()]), Options::default());
    assert_eq!(
        no_probe.unwrap_err().to_string(),
        "service `api` has a health check but no health probe was given"
    );

    let options = Options {
        probe: Some(Arc::new(FileProbe(flag.clone()))),
        ..Options::default()
    };
    let mut up = Up::start(project([api]), options).await;
    up.state("api", State::Ready).await;
    assert!(flag.exists(), "ready only once the check passed");
    std::fs::remove_file(&flag).unwrap();
    up.until("api withdrawn", |e| {
        matches!(e, Event::Withdrawn { service } if service == "api").then_some(())
    })
    .await;
    assert_eq!(up.status("api").await.state, State::Unhealthy);
    std::fs::write(&flag, "").unwrap();
    up.state("api", State::Ready).await;
    up.stop_all().await;
}

#[tokio::test]
async fn a_service_that_cannot_start_fails_its_dependents_with_the_reason() {
    let (_tmp, dir) = workdir();
    let broken = sh("broken", &dir.join("missing"), "true");
    let mut api = sh("api", &dir, "true");
    api.depends_on.insert("broken".into(), Condition::Started);
    let mut up = Up::start(project([broken, api]), Options::default()).await;
    up.state("api", State::Failed).await;
    let broken = up.status("broken").await.failure.unwrap();
    assert!(matches!(broken, Failure::Spawn(_)), "{broken}");
    let reason = up.status("api").await.failure.unwrap();
    let missing = dir.join("missing");
    assert_eq!(
        reason.reason(),
        format!(
            "dependency `broken` failed: cannot start `sh` in {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // An edit that fixes it starts it, and its dependent after it.
    let fixed = sh("broken", &dir, "echo fixed; exec sleep 60");
    let mut api = sh("api", &dir, "true");
    api.depends_on.insert("broken".into(), Condition::Started);
    let diff = up.supervisor.apply(project([fixed, api])).await.unwrap();
    assert_eq!(diff.changed.iter().collect::<Vec<_>>(), ["broken"]);
    up.all(&["broken", "api"], State::Ready).await;
    up.stop_all().await;
}

#[tokio::test]
async fn a_project_file_gives_env_env_file_cwd_and_port() {
    let (_tmp, dir) = workdir();
    std::fs::create_dir(dir.join("web")).unwrap();
    std::fs::write(
        dir.join(".env"),
        "# settings\nGREETING=\"hello there\"\nexport MODE=dev\n",
    )
    .unwrap();
    let toml = r#"
[services.web]
port = 5173
cwd = "web"
env_file = ".env"
env = { PORT = "${port}", MODE = "test" }
command = "echo \"$GREETING|$MODE|$PORT|$(basename \"$PWD\")\""
"#;
    let path = dir.join("devmesh.toml");
    std::fs::write(&path, toml).unwrap();
    let project = mesh_config::Project::load(&path).unwrap();
    let spec = ProjectSpec::from_project(&project, None).unwrap();
    let mut up = Up::start(spec, Options::default()).await;
    let line = up.line("web", "|").await;
    assert_eq!(line, "hello there|test|5173|web");
    up.stop_all().await;

    // Without `${port}` no PORT is set.
    let mut plain = util::sh("plain", &dir, "echo \"port=${PORT-unset}\"");
    plain.port = Some(8080);
    let mut up = Up::start(util::project([plain]), Options::default()).await;
    assert_eq!(up.line("plain", "port=").await, "port=unset");
    up.stop_all().await;
}
