//! The containers a Docker Engine API serves (Docker's, or Podman's with
//! `podman system service`), as devmesh services: `devmesh from-docker`
//! lists them, `devmesh share --docker` shares them while they run.
//!
//! [`container`] is pure: which published ports a container has and what
//! service each proposes (name, version, health path from its labels and
//! image). [`engine`] finds the engine's socket and talks to it with
//! `bollard`: the running containers, and the stream of their starts and
//! stops. [`follow`] shares containers while they run, through a
//! [`follow::Sink`] that registers them. [`run`] turns a Compose service
//! into the container `devmesh up` creates (pure), and the engine runs it.

pub mod container;
pub mod engine;
mod error;
pub mod follow;
pub mod run;

pub use container::{Container, Offer, offers};
pub use engine::{Change, Engine, Env, Health, Output};
pub use error::{EngineError, Tried};
pub use run::RunSpec;
