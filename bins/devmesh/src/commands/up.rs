//! `devmesh up`: gives the services of the nearest devmesh.toml to the
//! daemon, which starts, supervises and shares them
//! (`mesh_control::Request::Up`), and prints what they do. In the
//! foreground it holds the project: Ctrl-C, SIGTERM or the end of this
//! process stops every service. With `-d` it returns once the services are
//! up and the daemon keeps them.

use std::{
    collections::BTreeMap,
    fmt::Display,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use mesh_config::Project;
use mesh_control::{Client, LogLine, ProjectEvent, PsResult, Request, UpRequest, UpResult};
use tokio::signal::unix::{SignalKind, signal};

use crate::{Failure, cli::UpArgs, daemon};

/// Colours of the `name | ` prefixes (ANSI foreground codes), one per
/// service in start order, round robin.
const PALETTE: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// Time between two looks at `devmesh ps` while `devmesh up` waits for the
/// services to come up.
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// What `devmesh up` says once no service is starting any more (an
/// editor's task for the whole project waits for it).
pub(crate) const ALL_UP: &str = "all services are up";

/// The devmesh.toml of the current directory or a parent, absolute.
pub(crate) fn project_path() -> Result<PathBuf, Failure> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let path = Project::find(&cwd).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "no devmesh.toml in {} or any parent directory",
            cwd.display()
        ))
    })?;
    Ok(path.canonicalize().unwrap_or(path))
}

/// `devmesh up`: in the foreground, runs until Ctrl-C or SIGTERM (exit 0)
/// or until a service fails (exit 1 with its reason); with `-d`, until
/// every service is up (exit 1 when one failed).
pub async fn up(home: &Path, args: UpArgs) -> Result<(), Failure> {
    let project = project_path()?;
    // Read here first, so that a bad file is reported as a usage error
    // with its file, line and key, before any daemon is started.
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    mesh_config::ComposeFile::load(&Project::load(&project)?, &env)?;
    let mut client = daemon::connect_or_start(home).await?;
    let request = Request::Up(UpRequest {
        project: project.clone(),
        services: args.services,
        local: args.local,
        watch: args.watch,
        hold: !args.detach,
        env: env.into_iter().collect(),
    });
    let result: UpResult = client.call_as(&request).await?;
    let mut printer = Printer::new(result.services.iter(), colour());
    let ps = Settle::new(home, &project).await?;
    if args.detach {
        detached(&project, &mut client, &printer, ps).await
    } else {
        foreground(&mut client, &mut printer, ps).await
    }
}

/// Whether the prefixes are coloured: stdout is a terminal and `NO_COLOR`
/// is unset or empty.
pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints the project's output and events until every service is down;
/// Ctrl-C or SIGTERM lets go of the project, which the daemon then stops
/// unless another `devmesh up` holds it or an `up -d` left it there.
async fn foreground(
    client: &mut Client,
    printer: &mut Printer,
    mut ps: Settle,
) -> Result<(), Failure> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut failure: Option<anyhow::Error> = None;
    let mut stopping = false;
    let mut settled = false;
    let mut poll = tokio::time::interval(SETTLE_POLL);
    loop {
        let event = tokio::select! {
            _ = sigint.recv(), if !stopping => None,
            _ = sigterm.recv(), if !stopping => None,
            event = client.event() => Some(event),
            _ = poll.tick(), if !settled && !stopping => {
                if ps.settled().await? {
                    settled = true;
                    printer.note(ALL_UP);
                }
                continue;
            }
        };
        let Some(event) = event else {
            stopping = true;
            client.send(&down()).await?;
            continue;
        };
        let event = event?
            .context("devmeshd stopped; the services of devmesh.toml were stopped with it")?;
        match event {
            ProjectEvent::Stopped => break,
            ProjectEvent::Released => {
                printer.note(
                    "the services keep running for another `devmesh up` (or `up -d`); `devmesh down` stops them",
                );
                return failure.map_or(Ok(()), |e| Err(Failure::failed(e)));
            }
            ProjectEvent::Failed { service, reason } if failure.is_none() => {
                failure = Some(anyhow::anyhow!("{service} failed: {reason}"));
                if !stopping {
                    stopping = true;
                    client.send(&down()).await?;
                }
            }
            event => {
                if let ProjectEvent::Reloaded { added, .. } = &event {
                    printer.add(added);
                }
                printer.event(&event);
            }
        }
    }
    printer.note("stopped");
    match failure {
        Some(error) => Err(Failure::failed(error)),
        None => Ok(()),
    }
}

/// `down` for the project of the connection.
fn down() -> Request {
    Request::Down {
        project: PathBuf::new(),
    }
}

/// Prints the project's events (not its output) until no service is
/// starting any more, then says how to follow it.
async fn detached(
    project: &Path,
    client: &mut Client,
    printer: &Printer,
    mut ps: Settle,
) -> Result<(), Failure> {
    let mut poll = tokio::time::interval(SETTLE_POLL);
    let mut failures = Vec::new();
    loop {
        tokio::select! {
            event = client.event() => match event? {
                Some(ProjectEvent::Line(_)) => {}
                Some(ProjectEvent::Failed { service, reason }) => {
                    failures.push(format!("{service} failed: {reason}"));
                }
                Some(ProjectEvent::Stopped | ProjectEvent::Released) | None => {
                    return Err(Failure::failed(anyhow::anyhow!(
                        "the services of {} were stopped", project.display()
                    )));
                }
                Some(event) => printer.event(&event),
            },
            _ = poll.tick() => {
                if ps.settled().await? {
                    break;
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(Failure::failed(anyhow::anyhow!("{}", failures.join("\n"))));
    }
    printer.note(format_args!(
        "{} is up; `devmesh ps` lists its services, `devmesh logs -f` follows them, `devmesh down` stops them",
        project.display()
    ));
    Ok(())
}

/// Looks at `devmesh ps` of the project, on a connection of its own.
struct Settle {
    client: Client,
    request: Request,
}

impl Settle {
    async fn new(home: &Path, project: &Path) -> Result<Self, Failure> {
        Ok(Self {
            client: daemon::connect(home).await?,
            request: Request::Ps {
                project: project.to_owned(),
            },
        })
    }

    /// No service is starting or waiting to start any more.
    async fn settled(&mut self) -> Result<bool, Failure> {
        let ps: PsResult = self.client.call_as(&self.request).await?;
        Ok(ps.services.iter().all(|s| match s.state.as_str() {
            "starting" => false,
            "pending" => s.unneeded,
            _ => true,
        }))
    }
}

/// Prints the one output stream of `devmesh up` and `devmesh logs`.
pub(crate) struct Printer {
    width: usize,
    colours: Option<BTreeMap<String, u8>>,
}

impl Printer {
    pub(crate) fn new<'a>(names: impl Iterator<Item = &'a String>, colour: bool) -> Self {
        let names: Vec<&String> = names.collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let colours = colour.then(|| {
            names
                .iter()
                .zip(PALETTE.iter().cycle())
                .map(|(name, &c)| ((*name).clone(), c))
                .collect()
        });
        Self { width, colours }
    }

    /// Makes room for the services a reload added.
    fn add(&mut self, names: &[String]) {
        for name in names {
            self.width = self.width.max(name.chars().count());
            if let Some(colours) = &mut self.colours {
                let next = PALETTE[colours.len() % PALETTE.len()];
                colours.entry(name.clone()).or_insert(next);
            }
        }
    }

    pub(crate) fn line(&self, line: &LogLine) {
        let colour = self
            .colours
            .as_ref()
            .and_then(|c| c.get(&line.service).copied());
        println!("{}{}", prefix(&line.service, self.width, colour), line.line);
    }

    pub(crate) fn note(&self, text: impl Display) {
        println!("devmesh: {text}");
    }

    /// A line of output as it is, any other event as a `devmesh:` line.
    fn event(&self, event: &ProjectEvent) {
        match event {
            ProjectEvent::Line(line) => self.line(line),
            other => {
                if let Some(text) = describe(other) {
                    self.note(text);
                }
            }
        }
    }
}

/// What `devmesh up` says about `event` (editors match the ready line).
fn describe(event: &ProjectEvent) -> Option<String> {
    Some(match event {
        ProjectEvent::Ready {
            service,
            port: Some(port),
            shared: true,
            ..
        } => format!("{service} ready on :{port} (shared)"),
        ProjectEvent::Ready {
            service,
            port: Some(port),
            error,
            ..
        } => format!(
            "{service} ready on :{port} (not shared: {})",
            error.as_deref().unwrap_or("unknown reason")
        ),
        ProjectEvent::Ready { service, .. } => format!("{service} ready (not shared)"),
        ProjectEvent::Remote { service, provider } => format!("{service} from {provider} (mesh)"),
        ProjectEvent::Restarting {
            service,
            exit,
            delay_ms,
        } => format!(
            "{service} exited with {exit}; restarting in {:.1?}",
            Duration::from_millis(*delay_ms)
        ),
        ProjectEvent::Changed { service, path } => {
            format!("{service} restarting: {} changed", path.display())
        }
        ProjectEvent::Failed { service, reason } => format!("{service} failed: {reason}"),
        ProjectEvent::Reloaded {
            added,
            changed,
            removed,
        } => reloaded(added, changed, removed),
        ProjectEvent::Notice { text } => text.clone(),
        ProjectEvent::ReloadFailed { error } => {
            format!("devmesh.toml not applied; the services keep running as they were: {error}")
        }
        _ => return None,
    })
}

fn reloaded(added: &[String], changed: &[String], removed: &[String]) -> String {
    let parts: Vec<String> = [("added", added), ("changed", changed), ("removed", removed)]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(what, names)| format!("{what} {}", names.join(", ")))
        .collect();
    if parts.is_empty() {
        "devmesh.toml reloaded: no service changed".to_owned()
    } else {
        format!("devmesh.toml reloaded: {}", parts.join("; "))
    }
}

/// `name | ` padded to `width` characters of name, in `colour` when given.
fn prefix(name: &str, width: usize, colour: Option<u8>) -> String {
    let padded = format!("{name:<width$} | ");
    match colour {
        Some(c) => format!("\x1b[{c}m{padded}\x1b[0m"),
        None => padded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_aligned_and_coloured_on_request() {
        let names = ["api".to_owned(), "migrate".to_owned()];
        let printer = Printer::new(names.iter(), false);
        assert_eq!(printer.width, 7);
        assert!(printer.colours.is_none());
        assert_eq!(prefix("api", 7, None), "api     | ");
        assert_eq!(prefix("migrate", 7, None), "migrate | ");
        assert_eq!(prefix("api", 3, Some(36)), "\x1b[36mapi | \x1b[0m");
        let mut coloured = Printer::new(names.iter(), true);
        coloured.add(&["background-jobs".to_owned(), "api".to_owned()]);
        assert_eq!(coloured.width, 15);
        let colours = coloured.colours.unwrap();
        assert_eq!(colours["migrate"], PALETTE[1]);
        assert_eq!(colours["background-jobs"], PALETTE[2]);
        assert_eq!(colours["api"], PALETTE[0]);
    }

    #[test]
    fn events_read_as_editors_match_them() {
        let ready = ProjectEvent::Ready {
            service: "api".into(),
            port: Some(3000),
            shared: true,
            error: None,
        };
        assert_eq!(describe(&ready).unwrap(), "api ready on :3000 (shared)");
        let restarting = ProjectEvent::Restarting {
            service: "api".into(),
            exit: "exit status 1".into(),
            delay_ms: 2000,
        };
        assert_eq!(
            describe(&restarting).unwrap(),
            "api exited with exit status 1; restarting in 2.0s"
        );
        let none = ProjectEvent::Reloaded {
            added: vec![],
            changed: vec![],
            removed: vec![],
        };
        assert_eq!(
            describe(&none).unwrap(),
            "devmesh.toml reloaded: no service changed"
        );
        let some = ProjectEvent::Reloaded {
            added: vec!["web".into()],
            changed: vec![],
            removed: vec!["old".into(), "x".into()],
        };
        assert_eq!(
            describe(&some).unwrap(),
            "devmesh.toml reloaded: added web; removed old, x"
        );
        assert_eq!(describe(&ProjectEvent::Stopped), None);
    }
}
