//! The CLI side of the control API, and the JSON-lines framing both sides
//! use.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::UnixStream,
};

use crate::{ControlError, MAX_LINE, Reply, Request};

/// A connection to the daemon's control socket.
pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        Ok(Self {
            stream: BufReader::new(UnixStream::connect(path).await?),
        })
    }

    /// Sends a request and returns the daemon's result.
    pub async fn call(&mut self, request: &Request) -> Result<serde_json::Value, ControlError> {
        write_line(self.stream.get_mut(), request).await?;
        let reply: Reply = read_line(&mut self.stream)
            .await?
            .ok_or(ControlError::Closed)?;
        if reply.ok {
            Ok(reply.result)
        } else {
            Err(ControlError::Refused(
                reply.error.unwrap_or_else(|| "request failed".into()),
            ))
        }
    }

    /// Sends a request and decodes the result as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ControlError> {
        let value = self.call(request).await?;
        serde_json::from_value(value).map_err(ControlError::Protocol)
    }

    /// Sends a request without waiting for an answer: `down` on the
    /// connection of a `devmesh up`, whose answer is the end of the stream.
    pub async fn send(&mut self, request: &Request) -> Result<(), ControlError> {
        write_line(self.stream.get_mut(), request).await
    }

    /// The next event the daemon streams after `up` or `logs --follow`;
    /// `None` once it closes the connection.
    pub async fn event(&mut self) -> Result<Option<crate::ProjectEvent>, ControlError> {
        read_line(&mut self.stream).await
    }

    /// Waits until the daemon closes the connection.
    pub async fn closed(&mut self) {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match self.stream.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Writes one JSON line.
pub async fn write_line<T: Serialize>(
    stream: &mut UnixStream,
    value: &T,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(value).map_err(ControlError::Protocol)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    Ok(())
}

/// Reads one JSON line; `None` at end of stream.
pub async fn read_line<T: DeserializeOwned>(
    stream: &mut BufReader<UnixStream>,
) -> Result<Option<T>, ControlError> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(ControlError::TooLong { max: MAX_LINE });
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(ControlError::Protocol)
}
