//! A second `devmesh up NAME` for a running project: the supervisor widens
//! its selection and starts what was not running, nothing twice.

#![allow(clippy::unwrap_used)]

mod util;

use mesh_up::{Condition, Options, Selection, State};
use util::{Up, project, sh};

#[tokio::test]
async fn select_starts_more_services_and_their_dependencies_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ready = |name: &str| {
        let mut s = sh(name, dir, &format!("echo {name}-up; exec sleep 60"));
        s.ready_log_line = Some(format!("{name}-up"));
        s
    };
    let mut api = ready("api");
    api.depends_on.insert("db".into(), Condition::Started);
    let mut web = ready("web");
    web.depends_on.insert("db".into(), Condition::Started);
    let options = Options {
        selection: Selection {
            services: vec!["api".into()],
            local: false,
        },
        ..Options::default()
    };
    let mut up = Up::start(project([ready("db"), api, web, ready("cron")]), options).await;
    up.state("api", State::Ready).await;
    let db_pid = up.status("db").await.pid;
    assert!(
        up.supervisor
            .ps()
            .await
            .unwrap()
            .iter()
            .all(|s| s.name != "web")
    );

    up.supervisor.select(vec!["web".into()]).await.unwrap();
    up.state("web", State::Ready).await;
    assert_eq!(up.status("db").await.pid, db_pid, "db is not started twice");
    let names: Vec<String> = up
        .supervisor
        .ps()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!names.contains(&"cron".to_owned()), "{names:?}");

    up.supervisor.select(vec![]).await.unwrap();
    up.state("cron", State::Ready).await;
    let unknown = up.supervisor.select(vec!["nope".into()]).await.unwrap_err();
    assert_eq!(unknown.to_string(), "the project has no service `nope`");
    up.stop_all().await;
}
