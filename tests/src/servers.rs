//! Real TCP servers for the tests of TCP services: a PostgreSQL cluster in
//! a temporary directory (as the `postgres` user when the tests run as
//! root, fsync off) and a Redis without persistence; and their clients.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// Where Debian puts the PostgreSQL server programs.
const PG_BIN: &str = "/usr/lib/postgresql";

/// The directory of the newest PostgreSQL server programs, if installed.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_BIN)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether `tools` (programs on PATH) and the PostgreSQL server are here;
/// under CI (which installs them) their absence fails the test, elsewhere
/// it skips with the reason.
pub fn have(tools: &[&str], postgres: bool) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .chain((postgres && pg_bin().is_none()).then_some("postgres (server)"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "missing {missing:?} (.ci/run installs postgresql, postgresql-contrib and redis-server)"
    );
    eprintln!(
        "skipping: {missing:?} not installed (apt-get install postgresql postgresql-contrib redis-server)"
    );
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The uid and gid PostgreSQL runs as: `postgres` when we are root.
fn pg_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("running as root needs the postgres user (apt-get install postgresql)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A PostgreSQL cluster of its own, on 127.0.0.1.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Postgres {
    /// Makes a cluster (`initdb`, trust authentication, user `postgres`)
    /// and starts it on a free port; waits until it accepts connections.
    pub async fn start() -> Postgres {
        Self::start_in(None).await
    }

    /// [`Postgres::start`] inside the network namespace `netns` (with
    /// `ip netns exec`), listening on that namespace's loopback.
    pub async fn start_in(netns: Option<&str>) -> Postgres {
        let bin = pg_bin().expect("postgresql is installed");
        let dir = tempfile::Builder::new()
            .prefix("devmesh-pg-")
            .tempdir()
            .expect("temp dir");
        let user = pg_user();
        if let Some((uid, gid)) = user {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into())).expect("chown");
        }
        let data = dir.path().join("data");
        let mut initdb = command_in(netns, user, &bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data);
        let out = initdb.output().await.expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut postgres = command_in(netns, user, &bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("postgres.log")).expect("log"),
            ))
            .kill_on_drop(true);
        let child = postgres.spawn().expect("starting postgres");
        let pg = Postgres { dir, child, port };
        let ready = || async {
            let mut ready = psql_command_in(netns, pg.port);
            ready.args(["-d", "postgres", "-c", "SELECT 1"]);
            let out = ready.output().await;
            out.is_ok_and(|o| o.status.success()).then_some(())
        };
        crate::eventually(
            Duration::from_secs(30),
            "postgres accepting connections",
            ready,
        )
        .await;
        pg
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown: backends end, then the postmaster.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
}

/// `program` as a command inside `netns` (none: this one), run as `user`
/// (none: as we are).
fn command_in(netns: Option<&str>, user: Option<(u32, u32)>, program: &Path) -> Command {
    match netns {
        None => {
            let mut cmd = Command::new(program);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
            cmd
        }
        Some(ns) => {
            // `ip netns exec` needs root: the user changes after it, by
            // setpriv, which execs the program itself.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]);
            if let Some((uid, gid)) = user {
                cmd.args([
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={gid}"),
                ])
                .arg("--clear-groups");
            }
            cmd.arg(program);
            cmd
        }
    }
}

/// `psql` of the client tools on PATH against 127.0.0.1:`port` as
/// `postgres`, running `sql` (`-c`), quiet, unaligned, stopping at the
/// first error.
pub fn psql_command(port: u16) -> Command {
    psql_command_in(None, port)
}

/// [`psql_command`] inside the network namespace `netns`.
pub fn psql_command_in(netns: Option<&str>, port: u16) -> Command {
    let mut cmd = command_in(netns, None, Path::new("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `sql` with `psql` against 127.0.0.1:`port`, within 120 s.
pub async fn psql(port: u16, sql: &str) -> Output {
    let mut cmd = psql_command(port);
    cmd.args(["-d", "postgres", "-c", sql]);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("psql finished in time")
        .expect("running psql")
}

/// A Redis server without persistence on a free port.
pub struct Redis {
    _child: Child,
    port: u16,
}

impl Redis {
    /// Starts `redis-server` and waits until it answers `PING`.
    pub async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server");
        crate::eventually(Duration::from_secs(10), "redis answering", || async {
            let out = redis_cli(port, &["PING"]).await;
            (String::from_utf8_lossy(&out.stdout).trim() == "PONG").then_some(())
        })
        .await;
        Redis {
            _child: child,
            port,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `redis-cli -p port args…`, within 30 s.
pub async fn redis_cli(port: u16, args: &[&str]) -> Output {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("redis-cli finished in time")
        .expect("running redis-cli")
}

/// An interactive `psql` session fed on its stdin, as a person at the
/// prompt would be: statements go in, answers come out line by line.
pub struct PsqlSession {
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl PsqlSession {
    /// Opens a session to 127.0.0.1:`port` (inside `netns` when given).
    pub fn open(netns: Option<&str>, port: u16) -> PsqlSession {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = psql_command_in(netns, port)
            .args(["-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting psql");
        let stdin = child.stdin.take();
        let out = tokio::io::BufReader::new(child.stdout.take().expect("psql stdout")).lines();
        PsqlSession { child, stdin, out }
    }

    /// Sends `sql` (statements and psql commands, newline-terminated).
    pub async fn send(&mut self, sql: &str) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self.stdin.as_mut().ok_or(std::io::ErrorKind::BrokenPipe)?;
        stdin.write_all(sql.as_bytes()).await?;
        stdin.flush().await
    }

    /// The next line psql prints, within 20 s.
    pub async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(20), self.out.next_line())
            .await
            .expect("psql answered in time")
            .ok()
            .flatten()
    }

    /// Closes its stdin and returns the rest of what it printed and how it
    /// ended, within `wait`; `None` when it was still running then.
    pub async fn finish(mut self, wait: Duration) -> Option<(std::process::ExitStatus, String)> {
        drop(self.stdin.take());
        let rest = async {
            let mut text = String::new();
            while let Ok(Some(line)) = self.out.next_line().await {
                text.push_str(&line);
                text.push('\n');
            }
            let status = self.child.wait().await.expect("waiting for psql");
            (status, text)
        };
        tokio::time::timeout(wait, rest).await.ok()
    }
}
