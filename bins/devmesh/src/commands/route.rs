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
    let mut client = daemon::connect_or_start(home).await?;
    let result: RouteResult = client
        .call_as(&Request::Route(RouteSpec {
            service: args.service,
            pin: args.peer,
            require: args.require,
            versions: args.versions,
            sticky,
            retry: args.retry,
            clear: args.clear,
        }))
        .await?;
    output::emit(args.json, &result, output::routes);
    Ok(())
}
