//! The request log: one JSON line per front-door request, written by a
//! task of its own to stderr or a file, so that a slow disk or a full pipe
//! never holds a request up (lines beyond a bounded queue are dropped and
//! counted).

use std::{
    io::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use crate::bounded::Lossy;

/// Lines waiting to be written before new ones are dropped: a
/// [`WRITE_EVERY`] of 160,000 requests/s.
const QUEUE: usize = 16 * 1024;
/// How often the writer writes what was queued.
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// Where request lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// The daemon's stderr, between its other log lines.
    Stderr,
    /// A file, appended to (created when missing).
    File(PathBuf),
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub method: &'a str,
    /// Path and query, as the client sent them.
    pub path: &'a str,
    pub status: u16,
    /// The service, `unknown` when the request named none known.
    pub service: &'a str,
    /// The version of the provider that served, empty when none did.
    pub version: &'a str,
    /// The provider's peer id, empty when none served.
    pub provider: &'a str,
    /// `local`, `direct`, `relayed` or `none`.
    pub route: &'a str,
    /// Providers tried.
    pub attempts: usize,
    /// From arrival until the response body ended, milliseconds.
    pub duration_ms: f64,
    /// Body bytes received from the client.
    pub bytes_in: u64,
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// The W3C trace id of the request (also in `X-DevMesh-Trace-Id`).
    pub trace_id: String,
}

/// The arrival time of a request as logged.
pub fn time_text(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Milliseconds of `d`, to the microsecond.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// A running request log.
#[derive(Debug)]
pub struct RequestLog {
    lines: Lossy<String>,
}

impl RequestLog {
    /// Opens `destination` and starts the writer task.
    pub fn start(destination: Destination) -> std::io::Result<Arc<Self>> {
        let mut out: Box<dyn std::io::Write + Send> = match &destination {
            Destination::Stderr => Box::new(std::io::stderr()),
            Destination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (lines, mut rx) = mpsc::channel::<String>(QUEUE);
        // Writes block: they run on a thread of their own, which wakes up
        // every WRITE_EVERY and writes what was queued meanwhile at once.
        // It is never woken per line, so a request costs a queue push, not
        // a thread wake-up; it stops when the log is dropped.
        std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(64 * 1024);
                loop {
                    std::thread::sleep(WRITE_EVERY);
                    let closed = loop {
                        match rx.try_recv() {
                            Ok(line) => batch.extend_from_slice(line.as_bytes()),
                            Err(mpsc::error::TryRecvError::Empty) => break false,
                            Err(mpsc::error::TryRecvError::Disconnected) => break true,
                        }
                    };
                    if !batch.is_empty()
                        && let Err(e) = out.write_all(&batch).and_then(|()| out.flush())
                    {
                        warn!(error = %e, ?destination, "writing the request log failed; it stops");
                        return;
                    }
                    batch.clear();
                    if closed {
                        return;
                    }
                }
            })?;
        Ok(Arc::new(Self {
            lines: Lossy::new(lines, "request log lines"),
        }))
    }

    /// Queues `line`; drops it when the writer is behind.
    pub fn write(&self, line: &Line<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        self.lines.send(text);
    }

    /// Lines dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.lines.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_every_field() {
        let line = Line {
            time: time_text(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            method: "GET",
            path: "/a?b=1",
            status: 200,
            service: "api",
            version: "1.2.0",
            provider: "12D3KooWA",
            route: "direct",
            attempts: 1,
            duration_ms: millis(Duration::from_micros(2_345)),
            bytes_in: 0,
            bytes_out: 5,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["duration_ms"], 2.345);
        assert_eq!(v["route"], "direct");
        assert_eq!(v.as_object().unwrap().len(), 13);
    }

    #[tokio::test]
    async fn a_file_log_gets_one_line_per_request() {
        let dir = std::env::temp_dir().join(format!("devmesh-reqlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("requests.log");
        let _ = std::fs::remove_file(&path);
        let log = RequestLog::start(Destination::File(path.clone())).unwrap();
        for status in [200, 404] {
            log.write(&Line {
                time: time_text(SystemTime::now()),
                method: "GET",
                path: "/",
                status,
                service: "api",
                version: "",
                provider: "",
                route: "none",
                attempts: 0,
                duration_ms: 0.1,
                bytes_in: 0,
                bytes_out: 0,
                trace_id: String::new(),
            });
        }
        drop(log);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let statuses: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(statuses, [200, 404]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
