//! Errors of the container engine.

use std::path::PathBuf;

/// A socket tried while looking for the engine, and why it did not do.
#[derive(Debug, Clone)]
pub struct Tried {
    pub socket: PathBuf,
    pub reason: String,
}

/// Errors talking to the container engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No socket answered.
    #[error(
        "no Docker Engine API found; tried {}. Start Docker, or Podman's API with `podman system service --time=0`, or set DOCKER_HOST=unix:///path/to/docker.sock",
        tried.iter().map(|t| format!("{} ({})", t.socket.display(), t.reason)).collect::<Vec<_>>().join(", ")
    )]
    NoEngine { tried: Vec<Tried> },
    /// `DOCKER_HOST` is not a `unix://` address.
    #[error(
        "DOCKER_HOST={0:?}: only unix:// sockets are supported, such as unix:///var/run/docker.sock"
    )]
    NotUnix(String),
    /// The engine ended its event stream.
    #[error("the container engine at {} closed its event stream", socket.display())]
    Closed { socket: PathBuf },
    /// A container of that name exists and `devmesh up` did not create
    /// it.
    #[error(
        "a container named {name} exists that devmesh up did not create; remove it (`docker rm -f {name}`) or set another container_name"
    )]
    Exists { name: String },
    /// The image is not here and cannot be pulled.
    #[error("cannot pull image {image}; build or load it first (`docker build -t {image} .`)")]
    Pull {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine refused a request or answered what was not expected.
    #[error("the container engine at {}", socket.display())]
    Api {
        socket: PathBuf,
        #[source]
        source: bollard::errors::Error,
    },
}
