//! The two requests answered with a stream of events: `up` (the events of
//! the project it starts, until every service is down) and `logs
//! --follow` (new lines of output).

use std::sync::Arc;

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    net::UnixStream,
    sync::broadcast::{self, error::RecvError},
};
use tracing::{debug, info};

use super::{Server, accepted, answer, projects::Running, refusal};
use crate::{LogsRequest, ProjectEvent, Request, UpRequest, write_line};

/// What the CLI sent on a stream connection.
enum FromCli {
    /// `down` (Ctrl-C in `devmesh up`): this `up` lets go of the project,
    /// which stops unless another holds it.
    Down,
    /// It closed the connection.
    Gone,
}

/// Waits for the CLI's next message on a stream connection; anything but
/// `down` is ignored. `line` outlives each call, so a message read in part
/// when the wait is cancelled is finished by the next call.
async fn from_cli(stream: &mut BufReader<UnixStream>, line: &mut Vec<u8>) -> FromCli {
    loop {
        match stream.read_until(b'\n', line).await {
            Ok(0) | Err(_) => return FromCli::Gone,
            Ok(_) if !line.ends_with(b"\n") => return FromCli::Gone,
            Ok(_) => {
                let said = serde_json::from_slice::<Request>(line);
                line.clear();
                if let Ok(Request::Down { .. }) = said {
                    return FromCli::Down;
                }
                debug!("ignored a message on a stream connection");
            }
        }
    }
}

impl Server {
    /// `up`: starts the project (or attaches to it), answers, replays where
    /// each service stands, then streams its events until every service is
    /// down. With `hold`, the CLI holds the project: when it goes away or
    /// sends `down`, the project stops if no other `devmesh up` holds it
    /// and no `up -d` left it to the daemon (then `down` is answered with
    /// [`ProjectEvent::Released`]).
    pub(super) async fn up_stream(
        self: &Arc<Self>,
        stream: &mut BufReader<UnixStream>,
        request: UpRequest,
    ) {
        let hold = request.hold;
        let (result, running, events) = match self.up(request).await {
            Ok(up) => up,
            Err(e) => {
                let _ = write_line(stream.get_mut(), &refusal(&e)).await;
                return;
            }
        };
        let reply = match answer(&result) {
            Ok(result) => accepted(result),
            Err(e) => refusal(&e),
        };
        let mut written = write_line(stream.get_mut(), &reply).await;
        for event in running.replay() {
            if written.is_ok() {
                written = write_line(stream.get_mut(), &event).await;
            }
        }
        if written.is_err() {
            if hold {
                running.release();
            }
            return;
        }
        stream_events(stream, &running, events, hold, |_| true).await;
    }

    /// `logs --follow`: the last lines, then each new one, until the
    /// project stops or the CLI goes away.
    pub(super) async fn follow_stream(
        self: &Arc<Self>,
        stream: &mut BufReader<UnixStream>,
        request: LogsRequest,
    ) {
        let running = match self.project(&request.project) {
            Ok(running) => running,
            Err(e) => {
                let _ = write_line(stream.get_mut(), &refusal(&e)).await;
                return;
            }
        };
        let events = running.subscribe();
        let reply = match self.logs(&request).await {
            Ok(lines) => answer(&lines).map_or_else(|e| refusal(&e), accepted),
            Err(e) => refusal(&e),
        };
        if write_line(stream.get_mut(), &reply).await.is_err() || !reply.ok {
            return;
        }
        let service = request.service;
        stream_events(stream, &running, events, false, |event| match event {
            ProjectEvent::Line(line) => service.as_ref().is_none_or(|s| *s == line.service),
            ProjectEvent::Stopped => true,
            _ => false,
        })
        .await;
    }
}

/// Writes each event `wanted` lets through until the project stops or the
/// CLI goes away (which stops the project with `hold`).
async fn stream_events(
    stream: &mut BufReader<UnixStream>,
    running: &Running,
    mut events: broadcast::Receiver<ProjectEvent>,
    hold: bool,
    wanted: impl Fn(&ProjectEvent) -> bool,
) {
    let mut cli_open = true;
    let mut line = Vec::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            said = from_cli(stream, &mut line), if cli_open => {
                cli_open = false;
                let stops = hold && running.release();
                match said {
                    FromCli::Down if stops => {
                        info!("the last `devmesh up` of the project asked to stop it");
                        continue;
                    }
                    FromCli::Down => {
                        // Others hold it, or `up -d` left it to the daemon.
                        let _ = write_line(stream.get_mut(), &ProjectEvent::Released).await;
                        return;
                    }
                    FromCli::Gone => {
                        if stops {
                            info!("the last `devmesh up` of the project ended; stopping it");
                        }
                        return;
                    }
                }
            }
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                debug!(missed, "a stream fell behind the project's events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let last = event == ProjectEvent::Stopped;
        if wanted(&event) && write_line(stream.get_mut(), &event).await.is_err() && !hold {
            return;
        }
        if last {
            return;
        }
    }
}
