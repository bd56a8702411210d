//! Raw TCP services: PostgreSQL and Redis shared by node A, reached from
//! node B through B's loopback listeners with the real clients (psql,
//! pgbench, redis-cli); refusals, failover and outsiders.

use std::{process::Stdio, time::Duration};

use devmesh_tests::{
    Daemon, eventually,
    servers::{self, Postgres, PsqlSession, Redis, free_port, psql, psql_command, redis_cli},
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::TcpStream,
};

/// Shares `name` from `node` as TCP on `port`, detached.
async fn share_tcp(node: &Daemon, name: &str, port: u16, version: &str) {
    let url = node
        .share_detached_with(name, port, version, &["--tcp"])
        .await;
    assert_eq!(url, format!("tcp://127.0.0.1:{port}"));
}

/// `devmesh connect name --port port` on `node`, once `name` is known to
/// it; returns the listener's entry.
async fn connect(node: &Daemon, name: &str, port: u16) -> serde_json::Value {
    eventually(
        Duration::from_secs(15),
        "the service to be known",
        || async {
            let status = node.status().await;
            status["services"]
                .as_array()?
                .iter()
                .any(|s| s["name"] == name)
                .then_some(())
        },
    )
    .await;
    node.cli_json(&["connect", name, "--port", &port.to_string()])
        .await
}

/// The `listen` of `name`'s entries in `devmesh status --json`.
async fn listen_of(node: &Daemon, name: &str) -> Option<String> {
    let status = node.status().await;
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["listen"]
        .as_str()
        .map(str::to_owned)
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// PostgreSQL and Redis on A, used from B through its listeners: SQL,
/// COPY in and out byte-exact, LISTEN/NOTIFY across 30 s of idle,
/// pgbench, Redis SET/GET and pub/sub; a connected service without a
/// provider resets at once; a withdrawn service loses its listener.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_and_redis_through_loopback_listeners() {
    if !servers::have(&["psql", "pgbench", "redis-server", "redis-cli"], true) {
        return;
    }
    let (a, b, pg, redis, local_pg) = tokio::join!(
        Daemon::start(),
        Daemon::start(),
        Postgres::start(),
        Redis::start(),
        Postgres::start()
    );
    b.join(&a).await;
    share_tcp(&a, "db", pg.port(), "15.4.0").await;
    share_tcp(&a, "cache", redis.port(), "7.0.0").await;
    // The provider's port is taken on this machine (by the servers
    // themselves), so B listens on the ports given.
    let (db_port, cache_port) = (free_port(), free_port());
    let entry = connect(&b, "db", db_port).await;
    let listen = format!("127.0.0.1:{db_port}");
    assert_eq!(entry["listen"], listen.as_str(), "{entry}");
    assert_eq!(listen_of(&b, "db").await.as_deref(), Some(listen.as_str()));
    let human = ok(&b.cli(&["status"]).await, "status");
    assert!(
        human.contains(&format!("db  tcp  {listen} → {} (direct)", a.peer_id)),
        "{human}"
    );
    connect(&b, "cache", cache_port).await;

    ok(
        &psql(db_port, "CREATE TABLE t (id int, name text); INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) i").await,
        "create and insert",
    );
    let read = ok(
        &psql(db_port, "SELECT count(*), max(name) FROM t WHERE id > 10").await,
        "select",
    );
    assert_eq!(read, "990|row 999");

    // The idle LISTEN session runs beside the bulk work.
    let (notified, (), ()) = tokio::join!(
        listen_across_idle(db_port, Duration::from_secs(30)),
        copy_in_and_out(db_port, pg.dir()),
        pgbench(db_port),
    );
    assert!(
        notified.contains("\"wake\" with payload \"after the idle\""),
        "{notified}"
    );

    ok(
        &redis_cli(cache_port, &["SET", "greeting", "hello mesh"]).await,
        "redis set",
    );
    assert_eq!(
        ok(
            &redis_cli(cache_port, &["GET", "greeting"]).await,
            "redis get"
        ),
        "hello mesh"
    );
    redis_pub_sub(cache_port).await;

    db_commands(&b, db_port, &local_pg).await;

    // A connected service that nobody provides: reset at once, and why.
    let ghost = free_port();
    let out = b
        .cli(&["connect", "ghost", "--port", &ghost.to_string(), "--json"])
        .await;
    ok(&out, "connect ghost");
    let started = std::time::Instant::now();
    let reset = async {
        // On loopback the reset can come before connect returns.
        let mut tcp = TcpStream::connect(("127.0.0.1", ghost)).await?;
        let mut buf = [0u8; 16];
        tcp.read(&mut buf).await
    };
    let read = tokio::time::timeout(Duration::from_secs(5), reset)
        .await
        .expect("not left hanging");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let out = psql(ghost, "SELECT 1").await;
    assert!(!out.status.success());
    let status = b.status().await;
    let listener = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["service"] == "ghost")
        .cloned()
        .unwrap();
    assert_eq!(listener["problem"], "no provider of ghost", "{listener}");
    eventually(Duration::from_secs(5), "B to log the refusal", || async {
        b.log()
            .contains("refused a tcp connection service=ghost")
            .then_some(())
    })
    .await;

    // Withdrawn: the listener goes with the service.
    ok(&a.cli(&["stop", "cache"]).await, "stop cache");
    eventually(
        Duration::from_secs(15),
        "the cache listener to close",
        || async {
            TcpStream::connect(("127.0.0.1", cache_port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

/// Holds a `LISTEN` session idle for `idle`, then has another session
/// `NOTIFY` it; returns what the listening psql printed.
async fn listen_across_idle(port: u16, idle: Duration) -> String {
    let mut session = PsqlSession::open(None, port);
    session
        .send("LISTEN wake;\nSELECT 'listening';\n")
        .await
        .unwrap();
    assert_eq!(session.line().await.as_deref(), Some("listening"));
    tokio::time::sleep(idle).await;
    ok(&psql(port, "NOTIFY wake, 'after the idle'").await, "notify");
    // psql shows notifications when it next talks to the server.
    session.send("SELECT 'after';\n\\q\n").await.unwrap();
    let (status, text) = session.finish(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{text}");
    text
}

/// Size of the COPY round trip in the e2e test (`cargo xtask bench` runs
/// 1 GiB).
const COPY_BYTES: usize = 64 << 20;

/// COPY of [`COPY_BYTES`] of rows in through the listener and out again;
/// the file that comes out is the one that went in.
async fn copy_in_and_out(port: u16, dir: &std::path::Path) {
    let input = dir.join("copy-in.txt");
    let output = dir.join("copy-out.txt");
    let mut data = Vec::with_capacity(COPY_BYTES + 200);
    let mut i = 0u64;
    while data.len() < COPY_BYTES {
        let line = format!(
            "{i}\t{:016x}{:0>100}\n",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i
        );
        data.extend_from_slice(line.as_bytes());
        i += 1;
    }
    std::fs::write(&input, &data).unwrap();
    ok(
        &psql(port, "CREATE TABLE bulk (id bigint, payload text)").await,
        "create bulk",
    );
    let copy_in = format!("\\copy bulk FROM '{}'", input.display());
    ok(&psql(port, &copy_in).await, "copy in");
    let copy_out = format!(
        "\\copy (SELECT * FROM bulk ORDER BY id) TO '{}'",
        output.display()
    );
    ok(&psql(port, &copy_out).await, "copy out");
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "COPY out differs from what went in");
}

/// pgbench's select-only run with 4 clients through the listener.
async fn pgbench(port: u16) {
    let base = |cmd: &mut tokio::process::Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]);
    };
    let mut init = tokio::process::Command::new("pgbench");
    base(&mut init);
    init.args(["-i", "-q", "-s", "1", "postgres"]);
    ok(&init.output().await.unwrap(), "pgbench -i");
    let mut run = tokio::process::Command::new("pgbench");
    base(&mut run);
    run.args(["-S", "-c", "4", "-j", "2", "-t", "200", "postgres"]);
    let report = ok(&run.output().await.unwrap(), "pgbench -S");
    assert!(
        report.contains("number of transactions actually processed: 800/800"),
        "{report}"
    );
}

/// A `SUBSCRIBE` through the listener receives what a `PUBLISH` through
/// it sends.
async fn redis_pub_sub(port: u16) {
    let mut sub = tokio::process::Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "SUBSCRIBE",
            "news",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // subscribe, news, 1
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap();
    }
    let published = ok(
        &redis_cli(port, &["PUBLISH", "news", "through the mesh"]).await,
        "publish",
    );
    assert_eq!(published, "1");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got, ["message", "news", "through the mesh"]);
}

/// Two providers of one database in a namespace with a secret: a session
/// in flight through the first ends with an error when that node is
/// killed, not a hang, and new connections go to the second; a node
/// without the secret gets no listener.
#[tokio::test(flavor = "multi_thread")]
async fn failover_to_the_second_provider_and_no_listener_for_outsiders() {
    if !servers::have(&["psql"], true) {
        return;
    }
    let (mut a, b, c, outsider, pg) = tokio::join!(
        Daemon::start_with(&["--namespace", "team"]),
        Daemon::start(),
        Daemon::start(),
        Daemon::start(),
        Postgres::start()
    );
    let out = a.cli(&["invite", "--bootstrap", &a.p2p_addr]).await;
    let token = ok(&out, "invite");
    for member in [&b, &c] {
        ok(&member.cli(&["join", &token]).await, "join with the token");
    }
    share_tcp(&a, "db", pg.port(), "15.4.0").await;
    let db_port = free_port();
    connect(&b, "db", db_port).await;

    // A session through A, left open.
    let mut session = PsqlSession::open(None, db_port);
    session.send("SELECT 'through a';\n").await.unwrap();
    assert_eq!(session.line().await.as_deref(), Some("through a"));

    share_tcp(&c, "db", pg.port(), "15.4.0").await;
    b.wait_for_service("db", |s| s["provider"] == c.peer_id.as_str())
        .await;
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit().await;

    // The session in flight ends at once with an error.
    let asked = session.send("SELECT 'still there';\n").await;
    let (ended, _) = session
        .finish(Duration::from_secs(15))
        .await
        .expect("the session through the dead provider was left hanging");
    assert!(
        asked.is_err() || !ended.success(),
        "the session through the dead provider went on"
    );
    // New connections go to C.
    for _ in 0..3 {
        let answer = eventually(Duration::from_secs(20), "psql through C", || async {
            let out = psql(db_port, "SELECT 'through c'").await;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .await;
        assert_eq!(answer, "through c");
    }
    let listener = b
        .cli_json(&["connect", "db", "--port", &db_port.to_string()])
        .await;
    assert_eq!(
        listener["provider"],
        format!("{} (direct)", c.peer_id).as_str(),
        "{listener}"
    );

    // Without the secret: not admitted, no records, no listener.
    let refused = outsider
        .cli(&["join", &c.p2p_addr, "--namespace", "team", "--open"])
        .await;
    assert!(!refused.status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = outsider.status().await;
    assert!(
        status["services"].as_array().unwrap().is_empty(),
        "{status}"
    );
    assert!(status.get("listeners").is_none(), "{status}");
    let out = outsider.cli(&["connect", "db"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a known TCP service"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A peer that never proves membership cannot open `/devmesh/tcp/1`: its
/// hello is refused with the reason, and the node logs it.
#[tokio::test(flavor = "multi_thread")]
async fn an_outsider_cannot_open_a_tcp_stream() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    let (a, backend) = tokio::join!(
        Daemon::start(),
        devmesh_tests::backend::Backend::start("plain")
    );
    share_tcp(&a, "db", backend.port(), "1.0.0").await;
    let (mut swarm, _key, a_peer) = super::malformed::rogue(&a, false).await;
    let mut control = swarm.behaviour().stream.new_control();
    let pump = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = control
        .open_stream(a_peer, libp2p::StreamProtocol::new("/devmesh/tcp/1"))
        .await
        .unwrap();
    let hello = br#"{"v":1,"namespace":"test","service":"db"}"#;
    let mut framed = (hello.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(hello);
    stream.write_all(&framed).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.contains("not an admitted member"), "{reply:?}");
    pump.abort();
    eventually(Duration::from_secs(5), "A to log the refusal", || async {
        a.log()
            .contains("refused a tcp tunnel from a peer that is not an admitted member")
            .then_some(())
    })
    .await;
}

/// Row count and a checksum of every row of `table`.
async fn fingerprint(port: u16, database: &str, table: &str) -> String {
    let sql = format!(
        "SELECT count(*), md5(string_agg(md5(x::text), '' ORDER BY x::text)) FROM {table} x"
    );
    let mut cmd = psql_command(port);
    cmd.args(["-d", database, "-c", &sql]);
    ok(&cmd.output().await.unwrap(), "fingerprint")
}

/// `devmesh db status`, `clone` into another local cluster, `snapshot` and
/// `restore` of one table: the same rows and checksums; and the message
/// when the client tools are older than the server.
async fn db_commands(b: &Daemon, db_port: u16, local: &Postgres) {
    let listed = b.cli_json(&["db", "status"]).await;
    let db = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .cloned()
        .unwrap();
    assert_eq!(
        db["listen"],
        format!("127.0.0.1:{db_port}").as_str(),
        "{listed}"
    );
    assert_eq!(db["version"], "15.4.0");

    let into = format!("postgres://postgres@127.0.0.1:{}/postgres", local.port());
    let out = b.cli(&["db", "clone", "db", "--into", &into]).await;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("cloned db ("), "{said}");
    for table in ["t", "bulk", "pgbench_accounts", "pgbench_branches"] {
        assert_eq!(
            fingerprint(local.port(), "postgres", table).await,
            fingerprint(db_port, "postgres", table).await,
            "{table}"
        );
    }

    let file = local.dir().join("t.dump");
    let file = file.to_str().unwrap();
    let out = b
        .cli(&["db", "snapshot", "db", "--table", "t", "-o", file])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(
        &psql(local.port(), "CREATE DATABASE snap").await,
        "create database",
    );
    let snap = format!("postgres://postgres@127.0.0.1:{}/snap", local.port());
    let out = b.cli(&["db", "restore", file, "--into", &snap]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fingerprint(local.port(), "snap", "t").await,
        fingerprint(db_port, "postgres", "t").await
    );

    // Client tools older than the server: a clear refusal, nothing run.
    let fake = tempfile::tempdir().unwrap();
    let script = fake.path().join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&script, mode).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = b
        .devmesh()
        .args(["db", "clone", "db", "--into", &snap])
        .env("PATH", path)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("pg_dump 9 cannot dump a PostgreSQL 15 server"),
        "{said}"
    );
    assert!(said.contains("postgresql-client-15"), "{said}");
}
