//! Finding, starting and stopping the local devmeshd.
//!
//! One daemon per home: devmeshd holds `<home>/devmeshd.lock`
//! (`mesh_control::lock`) from its first moment. A command that finds no
//! control socket waits for the daemon holding the lock, when there is one
//! (it is starting, or stopping), and starts one itself only when none
//! holds it. When several commands start one at once, the first daemon
//! takes the lock and the others exit; their commands then wait for it.

use std::{
    io::{Read as _, Seek as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mesh_control::{Client, SOCKET_NAME, lock};

/// How long a daemon has to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a command that finds neither socket nor lock waits before it
/// starts a daemon: a devmeshd started a moment earlier (by a login script
/// or a service manager) takes the lock first and keeps the home.
const START_GRACE: Duration = Duration::from_millis(200);
/// How long `daemon stop` waits for the daemon to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

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

/// The log file of a daemon the CLI starts.
pub fn log_path(home: &Path) -> PathBuf {
    home.join("devmeshd.log")
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
    Ok(ensure(home).await?.0)
}

/// A daemon this command started.
struct Spawned {
    child: Child,
    /// Where its output starts in the log file.
    log_from: u64,
}

/// Connects to the daemon of `home`, waiting for the one holding the home's
/// lock or starting one; also says whether this call started it.
pub async fn ensure(home: &Path) -> anyhow::Result<(Client, bool)> {
    let path = socket(home);
    if let Ok(client) = Client::connect(&path).await {
        return Ok((client, false));
    }
    let spinner = crate::progress::spinner("looking for devmeshd");
    let started = Instant::now();
    let mut spawned: Option<Spawned> = None;
    let mut grace_over = false;
    loop {
        if let Ok(client) = Client::connect(&path).await {
            spinner.finish_and_clear();
            return Ok((client, spawned.is_some()));
        }
        if started.elapsed() > START_TIMEOUT {
            spinner.finish_and_clear();
            return Err(Unreachable(format!(
                "devmeshd did not open {} within {START_TIMEOUT:?}; {}",
                path.display(),
                log_hint(home, spawned.as_ref().map_or(0, |s| s.log_from))
            ))
            .into());
        }
        match spawned.as_mut() {
            Some(ours) => {
                if let Some(status) = ours.child.try_wait()? {
                    // Lost the race to a daemon started at the same time:
                    // it holds the lock, and we wait for it. Anything else
                    // is the daemon's own failure, reported at once.
                    if lock::holder(home)?.is_none() {
                        spinner.finish_and_clear();
                        return Err(died(home, status, ours.log_from).into());
                    }
                    spawned = None;
                }
            }
            None => match lock::holder(home)? {
                Some(holder) => spinner.set_message(format!(
                    "waiting for devmeshd{} to open its control socket",
                    holder
                        .pid
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default()
                )),
                None if !grace_over => {
                    grace_over = true;
                    tokio::time::sleep(START_GRACE).await;
                    continue;
                }
                None => {
                    let ours = spawn(home)?;
                    spinner.suspend(|| {
                        eprintln!(
                            "devmesh: devmeshd was not running; started it in the background (pid {}, log {})",
                            ours.child.id(),
                            log_path(home).display()
                        );
                    });
                    spinner.set_message("waiting for devmeshd to start");
                    spawned = Some(ours);
                }
            },
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts devmeshd for `home` in the background, its output appended to
/// the home's log.
fn spawn(home: &Path) -> anyhow::Result<Spawned> {
    let exe = daemon_exe();
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let log_path = log_path(home);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
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
    Ok(Spawned { child, log_from })
}

/// The error of a daemon that exited before opening its socket: its own
/// last words from the log.
fn died(home: &Path, status: std::process::ExitStatus, log_from: u64) -> Unreachable {
    let said = log_since(home, log_from);
    let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = &said[said.len().saturating_sub(8)..];
    Unreachable(format!(
        "devmeshd exited at start ({status}):\n{}\n(its log: {})",
        if last.is_empty() {
            "  (it printed nothing)".to_owned()
        } else {
            last.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
        log_path(home).display()
    ))
}

/// What the daemon wrote to its log after `from`.
fn log_since(home: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log_path(home))
        && file.seek(std::io::SeekFrom::Start(from)).is_ok()
    {
        let _ = file.take(64 * 1024).read_to_string(&mut text);
    }
    text
}

fn log_hint(home: &Path, from: u64) -> String {
    let said = log_since(home, from);
    let tail: Vec<&str> = said.lines().rev().take(5).collect();
    if tail.is_empty() {
        format!("see {}", log_path(home).display())
    } else {
        format!(
            "last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// Waits until the daemon of `home` has exited (its lock is free), at
/// most [`STOP_TIMEOUT`]; false if it still runs.
pub async fn wait_gone(home: &Path) -> bool {
    let started = Instant::now();
    loop {
        if matches!(lock::holder(home), Ok(None)) {
            return true;
        }
        if started.elapsed() > STOP_TIMEOUT {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn daemon_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("devmeshd"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("devmeshd"))
}
