//! Service processes: spawn, read their output, stop their process group.
//!
//! Every service runs in its own process group (its pid is the group id),
//! so a stop reaches whatever it forked: the stop signal goes to the whole
//! group, then SIGKILL to the group after `stop_timeout`. When the main
//! process ends, by itself or stopped, whatever it left in its group is
//! killed too, so no service leaves an orphan behind. A service of a
//! Compose file runs as a container instead ([`container`]).

mod container;

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use nix::{
    errno::Errno,
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, BufReader},
    process::{Child, Command},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    Exit, Launch, ServiceSpec, SpawnError,
    logs::{LogLine, MAX_LINE, Stream},
};

/// Time the output readers get after the process group is gone; a reader
/// still open then holds a pipe of a process that left the group.
const READER_GRACE: Duration = Duration::from_secs(2);

/// Time to wait for a killed group to disappear.
const GROUP_GONE: Duration = Duration::from_secs(1);

/// What a service process reports to the supervisor.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessEvent {
    /// A line of output.
    Line {
        /// Which run of the service printed it.
        run: u64,
        /// The line.
        line: LogLine,
    },
    /// The container engine says the service's `healthcheck` passes, or
    /// fails, from now on.
    Health {
        /// The service.
        service: String,
        /// Which run.
        run: u64,
        /// Passes.
        healthy: bool,
    },
    /// The process ended and its group is gone; every line it printed was
    /// reported before.
    Exited {
        /// The service.
        service: String,
        /// Which run ended.
        run: u64,
        /// How.
        exit: Exit,
    },
}

/// A running service process.
#[derive(Debug)]
pub struct RunHandle {
    pid: u32,
    stop: Option<oneshot::Sender<()>>,
}

impl RunHandle {
    /// The process id (and process group id); 0 for a container.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends the stop signal to the process group, then SIGKILL after the
    /// stop timeout; [`ProcessEvent::Exited`] follows. Dropping the handle
    /// stops the process the same way.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn command(
    spec: &ServiceSpec,
    environment: Option<&BTreeMap<String, String>>,
    launch: &Launch,
) -> Result<Command, SpawnError> {
    let mut cmd = match launch {
        Launch::Shell(line) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(line);
            cmd
        }
        Launch::Argv(argv) => {
            let (program, args) = argv.split_first().ok_or(SpawnError::NoCommand)?;
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
        Launch::Container(_) => return Err(SpawnError::NoCommand),
    };
    if let Some(environment) = environment {
        cmd.env_clear().envs(environment);
    }
    if let Some(path) = &spec.env_file {
        let env_error = |source| SpawnError::EnvFile {
            path: path.clone(),
            source,
        };
        for pair in dotenvy::from_path_iter(path).map_err(env_error)? {
            let (key, value) = pair.map_err(env_error)?;
            cmd.env(key, value);
        }
    }
    cmd.envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A last resort when the runtime goes away; the group is stopped
        // properly by `supervise`.
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts `spec`'s process as run number `run`, in `environment` (this
/// process's when `None`) with the service's own on top; its output lines
/// and its end are sent to `events`.
pub fn spawn(
    spec: &ServiceSpec,
    environment: Option<&BTreeMap<String, String>>,
    run: u64,
    events: mpsc::Sender<ProcessEvent>,
) -> Result<RunHandle, SpawnError> {
    let launch = spec.launch.as_ref().ok_or(SpawnError::NoCommand)?;
    if let Launch::Container(c) = launch {
        return Ok(container::spawn(spec, c, environment, run, events));
    }
    let mut child = command(spec, environment, launch)?
        .spawn()
        .map_err(|source| SpawnError::Exec {
            program: launch.program().to_owned(),
            cwd: spec.cwd.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    let source = |stream| Lines {
        service: spec.name.clone(),
        stream,
        run,
        events: events.clone(),
    };
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(source(Stream::Stdout).read(out))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(source(Stream::Stderr).read(err))),
    ];
    let (stop, stopped) = oneshot::channel();
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or_default());
    let task = Supervised {
        child,
        group,
        signal: spec.stop_signal,
        timeout: spec.stop_timeout,
        service: spec.name.clone(),
        run,
        events,
    };
    tokio::spawn(task.run(stopped, readers));
    tracing::debug!(service = %spec.name, pid, run, "service process started");
    Ok(RunHandle {
        pid,
        stop: Some(stop),
    })
}

struct Supervised {
    child: Child,
    group: Pid,
    signal: Signal,
    timeout: Duration,
    service: String,
    run: u64,
    events: mpsc::Sender<ProcessEvent>,
}

impl Supervised {
    async fn run(mut self, mut stop: oneshot::Receiver<()>, readers: [Option<JoinHandle<()>>; 2]) {
        let status = tokio::select! {
            status = self.child.wait() => status,
            _ = &mut stop => self.stop().await,
        };
        // Whatever the service left in its group goes with it.
        signal_group(self.group, Signal::SIGKILL);
        wait_group_gone(self.group).await;
        for reader in readers.into_iter().flatten() {
            let abort = reader.abort_handle();
            if tokio::time::timeout(READER_GRACE, reader).await.is_err() {
                abort.abort();
            }
        }
        let exit = status.map_or(
            Exit {
                code: None,
                signal: None,
            },
            Exit::from,
        );
        tracing::debug!(service = %self.service, run = self.run, %exit, "service process ended");
        let event = ProcessEvent::Exited {
            service: self.service,
            run: self.run,
            exit,
        };
        let _ = self.events.send(event).await;
    }

    async fn stop(&mut self) -> std::io::Result<std::process::ExitStatus> {
        signal_group(self.group, self.signal);
        match tokio::time::timeout(self.timeout, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::info!(service = %self.service, "stop timeout over, killing its process group");
                signal_group(self.group, Signal::SIGKILL);
                self.child.wait().await
            }
        }
    }
}

/// Whether `group` can be a service's own group: `killpg(0)` would signal
/// the supervisor's group and 1 is init's.
fn is_service_group(group: Pid) -> bool {
    group.as_raw() > 1
}

fn signal_group(group: Pid, signal: Signal) {
    if !is_service_group(group) {
        return;
    }
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%group, %signal, error = %e, "cannot signal process group"),
    }
}

/// Waits until no process of `group` is left, at most [`GROUP_GONE`]
/// (a zombie nobody reaps would keep it forever).
async fn wait_group_gone(group: Pid) {
    let deadline = tokio::time::Instant::now() + GROUP_GONE;
    while is_service_group(group)
        && killpg(group, None).is_ok()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One output of one run of a service, sent line by line.
struct Lines {
    service: String,
    stream: Stream,
    run: u64,
    events: mpsc::Sender<ProcessEvent>,
}

impl Lines {
    /// Sends each line of `reader` to `events`; a line longer than
    /// [`MAX_LINE`] is cut there.
    async fn read(self, reader: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let mut cut = false;
        while let Ok(buf) = reader.fill_buf().await {
            if buf.is_empty() {
                break;
            }
            let newline = buf.iter().position(|b| *b == b'\n');
            let chunk = &buf[..newline.unwrap_or(buf.len())];
            let room = MAX_LINE.saturating_sub(line.len());
            cut |= chunk.len() > room;
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = newline.map_or(buf.len(), |i| i + 1);
            reader.consume(used);
            if newline.is_some() && !self.send(finish(&mut line, std::mem::take(&mut cut))).await {
                return;
            }
        }
        if !line.is_empty() {
            self.send(finish(&mut line, cut)).await;
        }
    }

    async fn send(&self, line: String) -> bool {
        let line = LogLine {
            service: self.service.clone(),
            stream: self.stream,
            line,
        };
        let event = ProcessEvent::Line {
            run: self.run,
            line,
        };
        self.events.send(event).await.is_ok()
    }
}

fn finish(line: &mut Vec<u8>, cut: bool) -> String {
    let mut text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    if text.ends_with('\r') {
        text.pop();
    }
    if cut {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &'static [u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let lines = Lines {
            service: "api".into(),
            stream: Stream::Stdout,
            run: 1,
            events: tx,
        };
        lines.read(input).await;
        let mut out = Vec::new();
        while let Some(ProcessEvent::Line { line, .. }) = rx.recv().await {
            out.push(line.line);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_last_unterminated_one() {
        assert_eq!(lines_of(b"a\r\nb\n\nc").await, ["a", "b", "", "c"]);
        assert!(lines_of(b"").await.is_empty());
    }

    #[tokio::test]
    async fn cuts_long_lines() {
        let long: &'static [u8] = Box::leak(vec![b'x'; MAX_LINE + 10].into_boxed_slice());
        let lines = lines_of(long).await;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with('…'));
        assert_eq!(lines[0].len(), MAX_LINE + '…'.len_utf8());
    }
}
