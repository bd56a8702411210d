//! The front door's bounds: how many connections it serves at once, what a
//! client over that limit gets, how long a client may take to send a
//! request's head, and how long it may stall in a request's body.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tracing::{debug, warn};

/// Front-door connections served at once unless the node says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a client has to send a request's head once it started it (and
/// an idle keep-alive connection stays open between requests).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client may send nothing of a request body while the front
/// door waits for it.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refused client gets to read the 503 before the socket closes.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// The open front-door connections, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    permits: Arc<Semaphore>,
    limit: AtomicUsize,
    /// The limit is hit now (logged once until a connection is admitted).
    full: AtomicBool,
}

impl ConnectionLimit {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            full: AtomicBool::new(false),
        }
    }

    /// Changes the limit, before the front door serves (lowering it while
    /// connections are open would only forget the permits free then).
    pub(crate) fn set(&self, limit: usize) {
        let old = self.limit.swap(limit, Ordering::Relaxed);
        if limit > old {
            self.permits.add_permits(limit - old);
        } else {
            self.permits.forget_permits(old - limit);
        }
    }

    /// A permit for one more connection, held while it is served; `None`
    /// at the limit (logged once while it lasts).
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.full.store(false, Ordering::Relaxed);
                Some(permit)
            }
            Err(_) => {
                let limit = self.limit.load(Ordering::Relaxed);
                if !self.full.swap(true, Ordering::Relaxed) {
                    warn!(
                        limit,
                        "the front door is at its connection limit; new connections get 503 (raise it with --max-connections)"
                    );
                }
                None
            }
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
}

/// The response a client over the limit gets.
pub(crate) fn refusal(limit: usize) -> String {
    let body = format!(
        "devmesh: this node's front door serves at most {limit} connections at once, and that many are open. Close idle connections or retry shortly; `devmeshd --max-connections` raises the limit.\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers a client over the limit with [`refusal`] and closes, after
/// letting it read the answer (closing with its request unread would
/// reset the connection and lose the answer).
pub(crate) async fn refuse(mut tcp: TcpStream, limit: usize) {
    let linger = async {
        tcp.write_all(refusal(limit).as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(REFUSAL_LINGER, linger).await {
        debug!(error = %e, "answering a connection over the limit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_limit_are_refused_until_one_closes() {
        let limit = ConnectionLimit::new(DEFAULT_MAX_CONNECTIONS);
        limit.set(2);
        assert_eq!(limit.limit(), 2);
        let (a, _b) = (limit.admit().unwrap(), limit.admit().unwrap());
        assert!(limit.admit().is_none());
        drop(a);
        let _c = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        limit.set(3);
        let _d = limit.admit().unwrap();
        assert!(limit.admit().is_none());
    }

    #[test]
    fn the_refusal_is_a_whole_http_response_saying_what_to_do() {
        let text = refusal(7);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("at most 7 connections"), "{body}");
        assert!(body.contains("--max-connections"), "{body}");
    }
}
