//! Test kit of devmesh: finds the built binaries, runs `devmeshd` nodes in
//! their own temporary homes on loopback, drives the `devmesh` CLI, and
//! provides real backends ([`backend`]) and an HTTP client.
//!
//! ```no_run
//! # async fn demo() {
//! use devmesh_tests::{Daemon, backend::Backend};
//! let a = Daemon::start().await;
//! let b = Daemon::start().await;
//! b.join(&a).await;
//! let api = Backend::start("api").await;
//! let _run = a.run_service("api", api.port(), "1.4.2").await;
//! # }
//! ```

pub mod backend;
pub mod browser;
pub mod servers;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Generous bound for things that should take milliseconds.
pub const SHORT: Duration = Duration::from_secs(10);

/// Path of a binary of the workspace, built (once per test process) in the
/// same profile as the running test so a test never runs a stale binary.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/e2e-xxxx -> target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        // The same command as `cargo xtask test`, so both reuse one build;
        // without the variables cargo sets for tests, whose changes would
        // make build scripts run again.
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let keep = matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR");
            if (key.starts_with("CARGO_") && !keep)
                || key == "LD_LIBRARY_PATH"
                || key == "RUST_TEST_THREADS"
            {
                cmd.env_remove(key.as_ref());
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building devmesh and devmeshd failed");
        dir
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `devmesh ARGS` for the node of `home`, whether or not a daemon runs
/// there yet.
pub fn devmesh_in(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("devmesh"));
    cmd.env("DEVMESH_HOME", home)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A `devmeshd` process with its own home directory, on loopback.
pub struct Daemon {
    /// Its home (identity, config, socket, log).
    pub home: tempfile::TempDir,
    child: Option<Child>,
    /// Its peer id.
    pub peer_id: String,
    /// Its first p2p listen address, with `/p2p/<id>`.
    pub p2p_addr: String,
    /// Its HTTP front door.
    pub proxy: SocketAddr,
    /// Where and with what it was started, for [`Daemon::restart`].
    netns: Option<String>,
    args: Vec<String>,
}

impl Daemon {
    /// Starts a node in the open namespace `test` with mDNS off.
    pub async fn start() -> Daemon {
        Self::start_with(&[]).await
    }

    /// Starts a node with extra `devmeshd` arguments (without `--listen`
    /// among them, it listens on TCP on 127.0.0.1).
    pub async fn start_with(extra: &[&str]) -> Daemon {
        Self::start_in(None, extra).await
    }

    /// Starts a node inside the network namespace `netns` (with `ip netns
    /// exec`), or in the test's own when `None`. Unless `extra` names a
    /// namespace it is in the open namespace `test`, so that nodes meet by
    /// multiaddr; a namespace named in `extra` is private (with a secret
    /// made at start) unless `extra` has `--open`.
    pub async fn start_in(netns: Option<&str>, extra: &[&str]) -> Daemon {
        let mut args: Vec<&str> = Vec::new();
        if !extra.contains(&"--namespace") {
            args.extend(["--namespace", "test", "--open"]);
        }
        args.extend_from_slice(extra);
        Self::start_plain(netns, &args).await
    }

    /// Starts a node with a fresh home and exactly `extra` (plus TCP on
    /// 127.0.0.1 and mDNS off unless `extra` says otherwise): in the
    /// private namespace a fresh node makes for itself unless `extra`
    /// names one.
    pub async fn start_plain(netns: Option<&str>, extra: &[&str]) -> Daemon {
        let home = tempfile::Builder::new()
            .prefix("devmesh-test-")
            .tempdir()
            .expect("temp home");
        let mut daemon = Daemon {
            home,
            child: None,
            peer_id: String::new(),
            p2p_addr: String::new(),
            proxy: "127.0.0.1:0".parse().expect("addr"),
            netns: netns.map(str::to_owned),
            args: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        daemon.spawn().await;
        daemon
    }

    /// Stops the daemon with SIGTERM and starts it again with the same
    /// home and arguments (its log goes on in the same file).
    pub async fn restart(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit().await;
        assert!(status.success(), "devmeshd exited with {status:?}");
        self.spawn().await;
    }

    /// Kills the daemon with SIGKILL, like a crash, and waits until it is
    /// gone; [`Daemon::start_again`] brings it back.
    pub async fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit().await;
    }

    /// Starts a stopped daemon again with the same home (identity) and
    /// arguments, and waits until it reports its addresses.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    /// Starts devmeshd for this daemon's home and arguments and waits
    /// until it reports its addresses.
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("test-devmeshd.log"))
            .expect("log file");
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut cmd = match self.netns.as_deref() {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("devmeshd"));
                c
            }
            None => Command::new(bin("devmeshd")),
        };
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        if !extra.contains(&"--mdns") {
            cmd.args(["--mdns", "false"]);
        }
        cmd.env("DEVMESH_HOME", self.home.path())
            .env(
                "DEVMESH_LOG",
                std::env::var("DEVMESH_TEST_LOG")
                    .unwrap_or_else(|_| "info,mesh_core=debug,mesh_proxy=debug".into()),
            )
            .args(["--proxy", "127.0.0.1:0"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("spawning devmeshd"));
        let daemon = &*self;
        let status = eventually(SHORT, "devmeshd to report its addresses", || async {
            let out = daemon.try_cli(&["status", "--json"]).await?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (!v["listen_addrs"].as_array()?.is_empty()).then_some(v)
        })
        .await;
        self.peer_id = status["peer_id"].as_str().expect("peer_id").to_owned();
        self.p2p_addr = status["listen_addrs"][0].as_str().expect("addr").to_owned();
        // A relay has no front door.
        self.proxy = status["proxy_addr"]
            .as_str()
            .unwrap_or("0.0.0.0:0")
            .parse()
            .expect("proxy addr");
    }

    /// A `devmesh` command aimed at this node.
    pub fn devmesh(&self) -> Command {
        devmesh_in(self.home.path(), &[])
    }

    async fn try_cli(&self, args: &[&str]) -> Option<Output> {
        // Never let the CLI auto-start a second daemon while this one boots.
        if !self.home.path().join("devmeshd.sock").exists() {
            return None;
        }
        let out = tokio::time::timeout(SHORT, self.devmesh().args(args).output())
            .await
            .ok()?
            .ok()?;
        out.status.success().then_some(out)
    }

    /// Runs `devmesh <args>` to completion.
    pub async fn cli(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(30), self.devmesh().args(args).output())
            .await
            .unwrap_or_else(|_| panic!("devmesh {args:?} did not finish"))
            .expect("running devmesh")
    }

    /// `devmesh <args> --json`, which must succeed, parsed.
    pub async fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.cli(&args).await;
        assert!(
            out.status.success(),
            "devmesh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// `devmesh status --json`.
    pub async fn status(&self) -> serde_json::Value {
        self.cli_json(&["status"]).await
    }

    /// `devmesh peers --json`.
    pub async fn peers(&self) -> serde_json::Value {
        self.cli_json(&["peers"]).await
    }

    /// Connects this node to `other` with `devmesh join`.
    pub async fn join(&self, other: &Daemon) {
        let out = self.cli(&["join", &other.p2p_addr]).await;
        assert!(
            out.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), other.peer_id);
    }

    /// Starts `devmesh run <name>` in the foreground and waits until it
    /// printed its URL.
    pub async fn run_service(&self, name: &str, port: u16, version: &str) -> Child {
        self.run_service_with(name, port, version, &[]).await
    }

    /// [`Daemon::run_service`] with more `devmesh run` arguments, such as
    /// `--http2`, `--scheme https` or `--health /healthz`.
    pub async fn run_service_with(
        &self,
        name: &str,
        port: u16,
        version: &str,
        extra: &[&str],
    ) -> Child {
        let mut child = self
            .devmesh()
            .args([
                "run",
                name,
                "--port",
                &port.to_string(),
                "--version",
                version,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning devmesh run");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(SHORT, lines.next_line())
            .await
            .expect("devmesh run printed nothing")
            .expect("reading devmesh run")
            .expect("devmesh run exited early");
        assert!(
            line.starts_with(&format!("http://{name}.localhost:")),
            "unexpected run output {line:?}"
        );
        child
    }

    /// Shares a service with `devmesh run --detach` and checks it succeeded.
    pub async fn share_detached(&self, name: &str, port: u16, version: &str) {
        self.share_detached_with(name, port, version, &[]).await;
    }

    /// [`Daemon::share_detached`] with more `devmesh run` arguments, such
    /// as `--tcp`; returns what it printed on stdout.
    pub async fn share_detached_with(
        &self,
        name: &str,
        port: u16,
        version: &str,
        extra: &[&str],
    ) -> String {
        let port = port.to_string();
        let mut args = vec![
            "run",
            name,
            "--port",
            &port,
            "--version",
            version,
            "--detach",
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args).await;
        assert!(
            out.status.success(),
            "devmesh run --detach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The health `status` shows for the provider `provider` of `service`.
    pub async fn health_of(&self, service: &str, provider: &str) -> Option<String> {
        let status = self.status().await;
        status["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service && s["provider"] == provider)
            .and_then(|s| s["health"].as_str().map(str::to_owned))
    }

    /// Waits until `status` shows `health` for the provider `provider` of
    /// `service`; returns how long that took.
    pub async fn wait_for_health(&self, service: &str, provider: &str, health: &str) -> Duration {
        let start = Instant::now();
        eventually(
            SHORT,
            &format!("{service} of {provider} to be {health}"),
            || async {
                (self.health_of(service, provider).await.as_deref() == Some(health)).then_some(())
            },
        )
        .await;
        start.elapsed()
    }

    /// Waits until `status` lists a provider of `service` matching `pred`.
    pub async fn wait_for_service(&self, service: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        eventually(SHORT, &format!("{service} in status"), || async {
            let status = self.status().await;
            status["services"]
                .as_array()?
                .iter()
                .any(|s| s["name"] == service && pred(s))
                .then_some(())
        })
        .await
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(
            self.child
                .as_ref()
                .and_then(Child::id)
                .expect("running daemon") as i32,
        )
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signalling devmeshd");
    }

    /// Waits for the daemon to exit and returns its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running daemon");
        tokio::time::timeout(SHORT, child.wait())
            .await
            .expect("devmeshd did not exit")
            .expect("waiting for devmeshd")
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("test-devmeshd.log")).unwrap_or_default()
    }

    /// Peak resident memory of the daemon in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- devmeshd log ({}) ---\n{}", self.peer_id, self.log());
        }
    }
}

/// Two nodes, B joined to A, and a backend shared from A: the setup most
/// end-to-end tests start from.
pub struct Shared {
    pub a: Daemon,
    pub b: Daemon,
    pub backend: backend::Backend,
    /// The foreground `devmesh run` on A.
    pub run: Child,
}

impl Shared {
    /// Starts A and B, a backend named `backend_name`, shares it from A as
    /// `service` at `version`, and waits until B sees it.
    pub async fn start(service: &str, backend_name: &str, version: &str) -> Shared {
        let (a, b) = tokio::join!(Daemon::start(), Daemon::start());
        b.join(&a).await;
        let backend = backend::Backend::start(backend_name).await;
        let run = a.run_service(service, backend.port(), version).await;
        b.wait_for_service(service, |s| s["route"] == "remote")
            .await;
        Shared { a, b, backend, run }
    }
}

/// A response read whole (for small bodies).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailer fields after the body (empty when none came).
    pub trailers: HeaderMap,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends one request to `proxy` with the given `Host` header.
pub async fn request(
    proxy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Reply {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    read_reply(resp).await
}

async fn read_reply(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("reading the body timed out")
        .expect("reading body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// An HTTP/2 connection with prior knowledge (h2c) to a front door.
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Client {
    /// Connects to `proxy` and performs the HTTP/2 handshake.
    pub async fn connect(proxy: SocketAddr) -> H2Client {
        let tcp = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connecting to the front door");
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake with the front door");
        tokio::spawn(conn);
        H2Client { sender }
    }

    /// Sends `method` `http://<authority><path>` and reads the reply whole.
    pub async fn request(
        &self,
        method: &str,
        authority: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .version(http::Version::HTTP_2)
            .uri(format!("http://{authority}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("request");
        let mut sender = self.sender.clone();
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .expect("request timed out")
            .expect("HTTP/2 request failed");
        read_reply(resp).await
    }

    /// `GET http://<authority><path>`.
    pub async fn get(&self, authority: &str, path: &str) -> Reply {
        self.request("GET", authority, path, Bytes::new(), &[])
            .await
    }
}

/// `GET path` on `proxy` for `host`.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> Reply {
    request(proxy, "GET", host, path, Bytes::new(), &[]).await
}
