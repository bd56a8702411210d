//! `devmesh up`: starts a project's services in dependency order,
//! supervises them (readiness, restarts with back-off, health) and stops
//! them without leaving a process behind.
//!
//! The pure parts are unit-tested without processes: [`graph`] (selection,
//! start waves, cycles), [`restart`] (policy and back-off), [`state`] (the
//! per-service state machine), [`reload`] (what a new `devmesh.toml`
//! changes) and [`watch`] (which file changes restart which service).
//! [`files`] watches devmesh.toml and the sources; a private `process`
//! module spawns each service in its own process group and reads its
//! output; [`Supervisor`] is the actor that runs it all. Sharing a ready
//! service with the mesh is the caller's: it turns
//! [`Event::Ready`] and [`Event::Withdrawn`] into register and unregister.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_up::{Event, Options, ProjectSpec, Supervisor};
//!
//! let project = mesh_config::Project::load(std::path::Path::new("devmesh.toml"))?;
//! let supervisor = Supervisor::spawn(ProjectSpec::from_project(&project, None)?, Options::default())?;
//! let mut events = supervisor.subscribe();
//! supervisor.start().await?;
//! while let Ok(event) = events.recv().await {
//!     if let Event::Ready { service, port: Some(port) } = event {
//!         println!("devmesh: {service} ready on :{port}");
//!     }
//! #   break;
//! }
//! supervisor.stop_all().await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
pub mod files;
pub mod graph;
pub mod logs;
mod process;
pub mod reload;
pub mod restart;
mod spec;
pub mod state;
mod supervisor;
pub mod watch;

pub use error::{GraphError, SpawnError, SpecError, SupervisorError, WatchError};
pub use files::{Change, Watcher};
pub use graph::Graph;
pub use logs::{LogLine, Stream};
pub use mesh_config::{Condition, Prefer, RestartPolicy};
pub use reload::Diff;
pub use restart::{Backoff, Decision, Exit, Restarts};
pub use spec::{Launch, ProjectSpec, ServiceSpec};
pub use state::{Action, Blocked, Failure, Input, Machine, State, Verdict, evaluate};
pub use supervisor::{
    Event, HealthProbe, NoMesh, Options, Resolver, Selection, ServiceStatus, Supervisor,
};
