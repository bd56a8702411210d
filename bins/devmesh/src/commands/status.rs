//! `devmesh status`, `devmesh peers` and `devmesh doctor`.

use std::path::Path;

use mesh_control::{PeerStatus, Request, Status};

use crate::{Failure, daemon, doctor, output};

/// `devmesh status`.
pub async fn status(home: &Path, json: bool) -> Result<(), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    output::emit(json, &status, output::status);
    Ok(())
}

/// `devmesh peers`.
pub async fn peers(home: &Path, json: bool, wide: bool) -> Result<(), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let peers: Vec<PeerStatus> = client.call_as(&Request::Peers).await?;
    output::emit(json, &peers, |p| output::peers(p, wide));
    Ok(())
}

/// `devmesh doctor`: fails (exit code 1) when it finds a problem.
pub async fn doctor(home: &Path, json: bool) -> Result<(), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    let peers: Vec<PeerStatus> = client.call_as(&Request::Peers).await?;
    let findings = doctor::examine(&status, &peers);
    let report = serde_json::json!({
        "status": status,
        "peers": peers,
        "findings": findings,
    });
    output::emit(json, &report, |_| doctor::print(&status, &peers, &findings));
    if findings.iter().any(|f| f.level == doctor::Level::Problem) {
        return Err(Failure::failed(anyhow::anyhow!(
            "doctor found problems (listed above)"
        )));
    }
    Ok(())
}
