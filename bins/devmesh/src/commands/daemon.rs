//! `devmesh daemon start|stop`.

use std::path::Path;

use mesh_control::{Request, Status};

use crate::{Failure, daemon};

/// `devmesh daemon start`: starts devmeshd in the background unless it
/// runs, and says which it was.
pub async fn start(home: &Path) -> Result<(), Failure> {
    let (mut client, started) = daemon::ensure(home).await?;
    if !started {
        let status: Status = client.call_as(&Request::Status).await?;
        eprintln!(
            "devmesh: devmeshd is already running for {} (node {}, proxy {})",
            home.display(),
            status.peer_id,
            status.proxy_addr.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// `devmesh daemon stop`: asks devmeshd to stop and waits until it is gone.
/// With no daemon running there is nothing to do, and it says so; a daemon
/// still starting is stopped once its control socket opens.
pub async fn stop(home: &Path) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let mut client = loop {
        if let Ok(client) = daemon::connect(home).await {
            break client;
        }
        if mesh_control::lock::holder(home)?.is_none() {
            eprintln!(
                "devmesh: devmeshd is not running for {}; nothing to stop",
                home.display()
            );
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            return Err(daemon::Unreachable(format!(
                "devmeshd holds {} but opened no control socket within 20 s; its log: {}",
                home.display(),
                daemon::log_path(home).display()
            ))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    client.call(&Request::Shutdown).await?;
    client.closed().await;
    if !daemon::wait_gone(home).await {
        return Err(Failure::failed(anyhow::anyhow!(
            "devmeshd was asked to stop but still runs after 15 s; its log: {}",
            daemon::log_path(home).display()
        )));
    }
    eprintln!("devmesh: devmeshd stopped");
    Ok(())
}

/// `devmesh logs --daemon [-f] [--tail N]`: the daemon's log file, as the
/// running daemon names it (its stderr), else `<home>/devmeshd.log`.
pub async fn log(home: &Path, follow: bool, tail: Option<usize>) -> Result<(), Failure> {
    let named = match daemon::connect(home).await {
        Ok(mut client) => {
            let status: Status = client.call_as(&Request::Status).await?;
            match status.home.and_then(|h| h.log_file) {
                Some(file) => Some(std::path::PathBuf::from(file)),
                None => {
                    return Err(Failure::failed(anyhow::anyhow!(
                        "devmeshd for {} logs to a terminal or the journal, not a file: look there (under systemd: `journalctl --user -u devmeshd`)",
                        home.display()
                    )));
                }
            }
        }
        Err(_) => None,
    };
    let path = named.unwrap_or_else(|| daemon::log_path(home));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "cannot read the daemon's log {} ({e}); a devmeshd started by devmesh logs there",
            path.display()
        ))
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[from..] {
        println!("{line}");
    }
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        use std::io::{Read as _, Seek as _};
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated or truncated
        }
        if len == offset || file.seek(std::io::SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut more = String::new();
        if file.read_to_string(&mut more).is_ok() {
            offset += more.len() as u64;
            print!("{more}");
            crate::stdout::flush();
        }
    }
}

/// The user's home and `XDG_CONFIG_HOME`, where the unit goes.
fn unit_path() -> Result<(crate::autostart::Manager, std::path::PathBuf), Failure> {
    let manager = crate::autostart::Manager::here();
    let user_home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .ok_or_else(|| Failure::usage(anyhow::anyhow!("HOME is not set")))?;
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    Ok((manager, manager.path(&user_home, xdg.as_deref())))
}

/// `devmesh daemon install`: writes the unit (or agent) that runs the
/// devmeshd next to this devmesh for `home`, and says how to enable it.
pub fn install(home: &Path) -> Result<(), Failure> {
    use anyhow::Context as _;
    let (manager, path) = unit_path()?;
    let exe = daemon::daemon_exe();
    let exe = if exe.is_absolute() {
        exe
    } else {
        return Err(Failure::failed(anyhow::anyhow!(
            "cannot find devmeshd next to devmesh ({}); install both, as in the README",
            exe.display()
        )));
    };
    let home = std::path::absolute(home).context("making the home path absolute")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, manager.file(&exe, &home))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    eprintln!(
        "devmesh: wrote {}; start it now and at every login with:\n  {}",
        path.display(),
        manager.enable_hint(&path)
    );
    Ok(())
}

/// `devmesh daemon uninstall`: removes what `install` wrote.
pub fn uninstall() -> Result<(), Failure> {
    let (manager, path) = unit_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => {
            eprintln!(
                "devmesh: removed {}; if it is still loaded, stop it with:\n  {}",
                path.display(),
                manager.disable_hint(&path)
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "devmesh: {} does not exist; nothing to remove",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(Failure::failed(anyhow::anyhow!(
            "removing {}: {e}",
            path.display()
        ))),
    }
}
