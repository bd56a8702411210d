//! A real headless Chromium driven over WebDriver: Debian's `chromium`
//! and `chromium-driver` (`chromedriver`), with `fantoccini` as the
//! client. [`Browser::start`] gives `None` (saying why) when they are not
//! installed, outside CI; under CI a missing browser fails the test.

use std::{process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

use crate::eventually;

/// Chromium's path on Debian.
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process and a session of its Chromium.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless
    /// Chromium session with a fresh profile.
    pub async fn start() -> Option<Browser> {
        if !(runs(CHROMIUM) && runs("chromedriver")) {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are needed (.ci/run installs them: apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "skipping: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        eventually(
            Duration::from_secs(30),
            "chromedriver to listen",
            || async move { tokio::net::TcpStream::connect(addr).await.ok() },
        )
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--window-size=1400,1500",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("a Chromium session within 60 s")
        .expect("a Chromium session");
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Runs `script` (a function body that `return`s) in the page.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("running {script:?} in the page: {e}"))
    }

    /// Waits until `script` returns something other than null or false,
    /// and returns it.
    pub async fn wait_for(&self, what: &str, script: &str) -> serde_json::Value {
        eventually(Duration::from_secs(30), what, || async {
            let v = self.eval(script).await;
            (!v.is_null() && v != serde_json::Value::Bool(false)).then_some(v)
        })
        .await
    }
}
