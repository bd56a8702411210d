//! `devmesh route`.

use std::path::Path;

use mesh_control::{Request, RouteResult, RouteSpec};

use crate::{Failure, cli::RouteArgs, daemon, output};

/// `devmesh route`: changes what the flags say and shows where each
/// service's requests go now.
pub async fn route(home: &Path, args: RouteArgs) -> Result<(), Failure> {
    let sticky = match (args.sticky, args.no_sticky) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    };
    check(&args)?;
    let mut client = daemon::connect_or_start(home).await?;
    let known: mesh_control::Status = client.call_as(&Request::Status).await?;
    let result: RouteResult = client
        .call_as(&Request::Route(RouteSpec {
            service: args.service.clone(),
            pin: args.peer,
            require: args.require,
            versions: args.versions,
            sticky,
            retry: args.retry,
            clear: args.clear,
        }))
        .await?;
    output::emit(args.json, &result, output::routes);
    if let Some(service) = &args.service
        && !args.clear
        && !known.services.iter().any(|s| &s.name == service)
    {
        eprintln!(
            "devmesh: no node provides {service} yet; the setting applies once one does (`devmesh status` lists the services)"
        );
    }
    Ok(())
}

/// Refuses bad flags before anything reaches the daemon (exit code 2).
fn check(args: &RouteArgs) -> Result<(), Failure> {
    let needs_service = args.peer.is_some()
        || args.require.is_some()
        || args.sticky
        || args.no_sticky
        || args.clear;
    if let Some(service) = &args.service {
        mesh_core::record::validate_service_name(service).map_err(Failure::usage)?;
    } else if needs_service {
        return Err(Failure::usage(anyhow::anyhow!(
            "--peer, --require, --sticky, --no-sticky and --clear change one service: name it, as in `devmesh route api --sticky`"
        )));
    }
    if let Some(peer) = &args.peer {
        peer.parse::<mesh_core::PeerId>().map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "--peer {peer:?} is not a peer id ({e}); copy one from `devmesh peers`, such as 12D3KooW..."
            ))
        })?;
    }
    if let Some(req) = &args.require {
        semver::VersionReq::parse(req).map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "--require {req:?} is not a version requirement ({e}); write it like ^2.1"
            ))
        })?;
    }
    Ok(())
}
