use std::path::Path;

use super::*;
use crate::{ConfigError, Project};

fn parse(s: &str) -> Result<Project, ConfigError> {
    Project::parse(Path::new("/p/devmesh.toml"), s)
}

#[test]
fn parses_every_up_key() {
    let p = parse(
        r#"
[services.migrate]
port = 1
run = ["sh", "-c", "exit 0"]

[services.db]
port = 5432
command = "postgres"
ready_log_line = "ready to accept connections"

[services.api]
port = 3000
command = "npm run dev"
cwd = "web"
env = { NODE_ENV = "development", PORT = "${port}", COST = "$$5 ${port}$" }
env_file = ".env"
restart = "on-failure"
max_restarts = 5
depends_on = { db = "healthy", migrate = "completed_successfully", cache = "started" }
stop_signal = "INT"
stop_timeout = "3s"
prefer = "local"
watch = ["src/**"]
[services.api.requires]
cache = "^7"
"#,
    )
    .unwrap();
    let api = &p.services["api"];
    assert_eq!(api.restart_policy(), RestartPolicy::OnFailure);
    assert_eq!(api.max_restarts(), Some(5));
    assert_eq!(api.prefer(), Prefer::Local);
    assert_eq!(api.stop_signal(), "SIGINT");
    assert_eq!(api.stop_timeout(), Duration::from_secs(3));
    assert_eq!(
        api.depends_on().into_iter().collect::<Vec<_>>(),
        [
            ("cache".to_owned(), Condition::Started),
            ("db".to_owned(), Condition::Healthy),
            ("migrate".to_owned(), Condition::CompletedSuccessfully),
        ]
    );
    let env = api.env();
    assert_eq!(env["PORT"], "3000");
    assert_eq!(env["NODE_ENV"], "development");
    assert_eq!(env["COST"], "$5 3000$");
    let dir = Path::new("/p");
    assert_eq!(api.working_dir(dir), Path::new("/p/web"));
    assert_eq!(api.env_file_path(dir), Some(PathBuf::from("/p/.env")));
    assert_eq!(api.watch[0].get_ref(), "src/**");

    let db = &p.services["db"];
    assert_eq!(db.restart_policy(), RestartPolicy::No);
    assert_eq!(db.prefer(), Prefer::Mesh);
    assert_eq!(db.stop_signal(), "SIGTERM");
    assert_eq!(db.stop_timeout(), DEFAULT_STOP_TIMEOUT);
    assert!(!db.env().contains_key("PORT"), "no PORT unless asked");
    assert_eq!(db.working_dir(dir), dir);
    assert_eq!(
        p.services["migrate"].run.as_ref().unwrap().get_ref()[0],
        "sh"
    );
}

#[test]
fn keyword_values_round_trip() {
    for p in [
        RestartPolicy::No,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ] {
        assert_eq!(RestartPolicy::parse(p.as_str()), Some(p));
    }
    for c in [
        Condition::Started,
        Condition::Healthy,
        Condition::CompletedSuccessfully,
    ] {
        assert_eq!(Condition::parse(&c.to_string()), Some(c));
    }
    for p in [Prefer::Mesh, Prefer::Local] {
        assert_eq!(Prefer::parse(p.as_str()), Some(p));
    }
    assert_eq!(RestartPolicy::parse("On-Failure"), None);
}

#[test]
fn bad_up_values_name_file_line_and_key() {
    let cases = [
        ("command = \"a\"\nrun = [\"b\"]", 4, "run", "keep one"),
        ("run = []", 3, "run", "needs the program"),
        ("run = [\"\", \"x\"]", 3, "run", "needs the program"),
        ("cwd = \"\"", 3, "cwd", "`cwd` is empty"),
        (
            "env = { A = \"${host}\" }",
            3,
            "env.A",
            "unknown placeholder `${host}`",
        ),
        (
            "env = { A = \"${port\" }",
            3,
            "env.A",
            "unknown placeholder `${port`",
        ),
        (
            "env = { \"A=B\" = \"1\" }",
            3,
            "env.A=B",
            "not an environment variable",
        ),
        ("env_file = \"\"", 3, "env_file", "is empty"),
        (
            "ready_log_line = \"\"",
            3,
            "ready_log_line",
            "matches any line",
        ),
        ("restart = \"sometimes\"", 3, "restart", "is not a policy"),
        ("max_restarts = 3", 3, "max_restarts", "needs restart"),
        (
            "restart = \"always\"\nmax_restarts = 0",
            4,
            "max_restarts",
            "at least 1",
        ),
        (
            "stop_signal = \"SIGSTOP\"",
            3,
            "stop_signal",
            "is not a stop signal",
        ),
        (
            "stop_timeout = \"ten\"",
            3,
            "stop_timeout",
            "is not a duration",
        ),
        ("stop_timeout = \"2h\"", 3, "stop_timeout", "out of range"),
        (
            "prefer = \"remote\"",
            3,
            "prefer",
            "use \"mesh\" or \"local\"",
        ),
        ("watch = [\"../x\"]", 3, "watch", "stay below it"),
        ("watch = [\"/etc\"]", 3, "watch", "must be relative"),
        (
            "depends_on = { db = \"up\" }",
            3,
            "depends_on.db",
            "condition \"up\"",
        ),
        (
            "depends_on = { api = \"started\" }",
            3,
            "depends_on.api",
            "itself",
        ),
        (
            "depends_on = { nope = \"started\" }",
            3,
            "depends_on.nope",
            "neither a service",
        ),
        (
            "depends_on = { db = \"healthy\" }",
            3,
            "depends_on.db",
            "never turns healthy",
        ),
        (
            "depends_on = { cache = \"completed_successfully\" }\n[services.api.requires]\ncache = \"^1\"",
            3,
            "depends_on.cache",
            "only a local job",
        ),
    ];
    for (lines, line, key, text) in cases {
        let file = format!("[services.db]\nport = 5432\n\n[services.api]\nport = 3000\n{lines}\n");
        // The api section starts on line 4 of `file`; `line` counts from it.
        let line = line + 3;
        let key = format!("services.api.{key}");
        let e = parse(&file).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(line), Some(key.as_str())),
            "{e}"
        );
        assert!(e.message.contains(text), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/p/devmesh.toml:{line}: key `{key}`")),
            "{e}"
        );
    }
    // A negative max_restarts is a type error of the file, on its line.
    let e =
        parse("[services.api]\nport = 1\nrestart = \"always\"\nmax_restarts = -1\n").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn satisfiable_dependencies_pass() {
    let p = parse(
        "[services.db]\nport = 5432\nhealth = \"tcp\"\n[services.cache]\nport = 6379\n[services.api]\nport = 3000\ndepends_on = { db = \"healthy\", cache = \"completed_successfully\", auth = \"healthy\" }\n[services.api.requires]\nauth = \"^2\"\n",
    )
    .unwrap();
    assert_eq!(p.services["api"].depends_on().len(), 3);
}

#[test]
fn a_service_without_port_is_a_job_and_may_not_need_one() {
    let p = parse("[services.migrate]\ncommand = \"./migrate.sh\"\n").unwrap();
    assert_eq!(p.services["migrate"].port, None);

    for (text, key, needle) in [
        (
            "[services.w]\ncommand = \"w\"\nenv = { PORT = \"${port}\" }\n",
            "services.w.env.PORT",
            "needs a `port`",
        ),
        (
            "[services.w]\ncommand = \"w\"\nhealth = \"/healthz\"\n",
            "services.w.health",
            "needs a `port`",
        ),
        (
            "[services.w]\ncommand = \"w\"\nroutes = [\"/w/\"]\n",
            "services.w.routes",
            "need a `port`",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains(needle), "{e}");
    }
    // A health URL names its own port.
    parse("[services.w]\ncommand = \"w\"\nhealth = \"http://127.0.0.1:9/ok\"\n").unwrap();
}
