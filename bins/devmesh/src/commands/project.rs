//! `devmesh ps`, `devmesh logs` and `devmesh down`: the services the daemon
//! runs for the devmesh.toml of the current directory (or a parent).

use std::{path::Path, time::Duration};

use mesh_control::{DownResult, LogLine, LogsRequest, ProjectEvent, PsResult, PsRow, Request};
use tokio::signal::unix::{SignalKind, signal};

use super::up::{Printer, colour, project_path};
use crate::{Failure, cli::LogsArgs, daemon, output};

/// `devmesh ps [--json]`.
pub async fn ps(home: &Path, json: bool) -> Result<(), Failure> {
    let project = project_path()?;
    let mut client = daemon::connect(home).await?;
    let ps: PsResult = client.call_as(&Request::Ps { project }).await?;
    output::emit(json, &ps, |ps| print!("{}", table(ps)));
    Ok(())
}

/// The table of `devmesh ps`: one row per service, then the reason of each
/// failed one and a pending reload error.
fn table(ps: &PsResult) -> String {
    let header = [
        "NAME", "STATE", "PID", "RESTARTS", "UPTIME", "PORT", "PROVIDER",
    ];
    let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(ps.services.iter().map(|s| row(s).to_vec()))
        .collect();
    let mut out = output::aligned(&rows);
    for s in &ps.services {
        if let Some(failure) = &s.failure {
            out.push_str(&format!("{}: {failure}\n", s.name));
        }
    }
    if let Some(error) = &ps.reload_error {
        out.push_str(&format!("devmesh.toml not applied: {error}\n"));
    }
    out
}

fn row(s: &PsRow) -> [String; 7] {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    [
        s.name.clone(),
        if s.unneeded {
            format!("{} (not needed)", s.state)
        } else {
            s.state.clone()
        },
        or_dash(s.pid.map(|p| p.to_string())),
        s.restarts.to_string(),
        or_dash(s.uptime_ms.map(|ms| uptime(Duration::from_millis(ms)))),
        or_dash(s.port.map(|p| p.to_string())),
        or_dash(s.provider.clone()),
    ]
}

/// `42s`, `3m05s`, `2h10m`.
fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `devmesh logs [SERVICE] [-f] [--tail N]`.
pub async fn logs(home: &Path, args: LogsArgs) -> Result<(), Failure> {
    if args.daemon {
        return super::daemon::log(home, args.follow, args.tail).await;
    }
    let project = project_path()?;
    let mut client = daemon::connect(home).await?;
    let request = Request::Logs(LogsRequest {
        project,
        service: args.service,
        tail: args.tail.unwrap_or(usize::MAX),
        follow: args.follow,
    });
    let lines: Vec<LogLine> = client.call_as(&request).await?;
    let mut names: Vec<String> = lines.iter().map(|l| l.service.clone()).collect();
    names.sort();
    names.dedup();
    let printer = Printer::new(names.iter(), colour());
    for line in &lines {
        printer.line(line);
    }
    if !args.follow {
        return Ok(());
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            event = client.event() => event?,
        };
        match event {
            Some(ProjectEvent::Line(line)) => printer.line(&line),
            Some(ProjectEvent::Stopped) | None => return Ok(()),
            Some(_) => {}
        }
    }
}

/// `devmesh down`.
pub async fn down(home: &Path) -> Result<(), Failure> {
    let project = project_path()?;
    let mut client = daemon::connect(home).await?;
    let result: DownResult = client.call_as(&Request::Down { project }).await?;
    if result.stopped.is_empty() {
        eprintln!("devmesh: {} is down", result.project.display());
    } else {
        eprintln!(
            "devmesh: stopped {} of {}",
            result.stopped.join(", "),
            result.project.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_is_a_table_with_the_reasons_below() {
        let ps = PsResult {
            project: "/p/devmesh.toml".into(),
            services: vec![
                PsRow {
                    name: "db".into(),
                    state: "remote".into(),
                    pid: None,
                    restarts: 0,
                    uptime_ms: None,
                    provider: Some("12D3KooWpeer".into()),
                    port: Some(5432),
                    failure: None,
                    last_exit: None,
                    unneeded: false,
                },
                PsRow {
                    name: "api".into(),
                    state: "failed".into(),
                    pid: None,
                    restarts: 3,
                    uptime_ms: Some(125_000),
                    provider: None,
                    port: None,
                    failure: Some("gave up after 3 restarts in a row".into()),
                    last_exit: Some("exit status 1".into()),
                    unneeded: false,
                },
            ],
            reload_error: Some("devmesh.toml:3: key `port`: expected a number".into()),
        };
        assert_eq!(
            table(&ps),
            "NAME  STATE   PID  RESTARTS  UPTIME  PORT  PROVIDER\n\
             db    remote  -    0         -       5432  12D3KooWpeer\n\
             api   failed  -    3         2m05s   -     -\n\
             api: gave up after 3 restarts in a row\n\
             devmesh.toml not applied: devmesh.toml:3: key `port`: expected a number\n"
        );
        assert_eq!(uptime(Duration::from_secs(7)), "7s");
        assert_eq!(uptime(Duration::from_secs(7800)), "2h10m");
    }
}
