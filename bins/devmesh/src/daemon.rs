//! Finding, starting and stopping the local devmeshd.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mesh_control::{Client, SOCKET_NAME};

/// How long a freshly started daemon has to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The daemon could not be reached or started.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

fn socket(home: &Path) -> PathBuf {
    home.join(SOCKET_NAME)
}

/// Connects to a running daemon.
pub async fn connect(home: &Path) -> anyhow::Result<Client> {
    let path = socket(home);
    Client::connect(&path).await.map_err(|e| {
        Unreachable(format!(
            "devmeshd is not running for {} ({}); start it with `devmesh daemon start` or `devmeshd`",
            home.display(),
            mesh_control::chain(&e)
        ))
        .into()
    })
}

/// Connects to the daemon, starting it in the background first when it is
/// not running.
pub async fn connect_or_start(home: &Path) -> anyhow::Result<Client> {
    let path = socket(home);
    if let Ok(client) = Client::connect(&path).await {
        return Ok(client);
    }
    let exe = daemon_exe();
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let log_path = home.join("devmeshd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = std::process::Command::new(&exe)
        .arg("--home")
        .arg(home)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Unreachable(format!(
                "cannot start {} ({e}); is devmeshd installed next to devmesh or on PATH?",
                exe.display()
            ))
        })?;
    eprintln!(
        "devmesh: devmeshd was not running; started it in the background (pid {}, log {})",
        child.id(),
        log_path.display()
    );
    let started = Instant::now();
    loop {
        if let Ok(client) = Client::connect(&path).await {
            return Ok(client);
        }
        if started.elapsed() > START_TIMEOUT {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(Unreachable(format!(
                "devmeshd did not open {} within {START_TIMEOUT:?}; last log lines:\n{}",
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon's socket is gone (at most a few seconds).
pub async fn wait_gone(home: &Path) {
    let path = socket(home);
    let started = Instant::now();
    while path.exists() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn daemon_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("devmeshd"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("devmeshd"))
}
