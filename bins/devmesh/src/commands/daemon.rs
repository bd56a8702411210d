//! `devmesh daemon start|stop`.

use std::path::Path;

use mesh_control::Request;

use crate::{Failure, daemon};

/// `devmesh daemon start`: starts devmeshd in the background unless it
/// runs.
pub async fn start(home: &Path) -> Result<(), Failure> {
    daemon::connect_or_start(home).await?;
    Ok(())
}

/// `devmesh daemon stop`: asks devmeshd to stop and waits until it is gone.
pub async fn stop(home: &Path) -> Result<(), Failure> {
    let mut client = daemon::connect(home).await?;
    client.call(&Request::Shutdown).await?;
    client.closed().await;
    daemon::wait_gone(home).await;
    eprintln!("devmesh: devmeshd stopped");
    Ok(())
}
