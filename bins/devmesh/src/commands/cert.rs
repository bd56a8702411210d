//! `devmesh cert install`: makes the node's local CA once and trusts it.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;
use mesh_tls::{
    Ca, Paths,
    trust::{self, Outcome, Step},
};

use crate::output;

/// Makes (or reuses) the CA in `home`, prints how to trust it, and with
/// `yes` trusts it where this process can. Fails when an install failed.
pub async fn install(home: &Path, yes: bool, json: bool) -> anyhow::Result<()> {
    if !home.exists() {
        std::fs::create_dir_all(home)
            .with_context(|| format!("creating home directory {}", home.display()))?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", home.display()))?;
    }
    let paths = Paths::in_home(home);
    let (ca, created) = Ca::load_or_create(&paths)?;
    let user_home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let plan = trust::Plan::detect(user_home.as_deref());
    let steps = trust::instructions(
        &plan,
        &paths.cert,
        ca.short_id(),
        front_door_port(home).await,
    );
    let installed = if yes {
        Some(trust::install(&plan, &paths.cert, ca.short_id()))
    } else {
        None
    };
    let report = serde_json::json!({
        "id": ca.short_id(),
        "created": created,
        "cert": paths.cert,
        "key": paths.key,
        "steps": steps,
        "installed": installed,
    });
    output::emit(json, &report, |_| {
        print(&ca, created, &paths, &steps, installed.as_deref())
    });
    if let Some(done) = &installed {
        let failed: Vec<&str> = done
            .iter()
            .filter(|o| !o.ok)
            .map(|o| o.target.as_str())
            .collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "could not trust the CA in: {} (see above for what to run by hand)",
                failed.join(", ")
            );
        }
    }
    Ok(())
}

/// The front door's port of the node of `home`, when it runs (none is
/// started for this).
async fn front_door_port(home: &Path) -> Option<u16> {
    let mut client = crate::daemon::connect(home).await.ok()?;
    let status: mesh_control::Status = client.call_as(&mesh_control::Request::Status).await.ok()?;
    let addr: std::net::SocketAddr = status.proxy_addr?.parse().ok()?;
    Some(addr.port())
}

/// What `devmesh cert install` prints without `--json`.
fn print(ca: &Ca, created: bool, paths: &Paths, steps: &[Step], installed: Option<&[Outcome]>) {
    println!(
        "devmesh CA {} ({}): {}",
        ca.short_id(),
        if created { "new" } else { "existing" },
        paths.cert.display()
    );
    println!(
        "The front door now answers https://<service>.localhost:<port>/ on its usual port (no restart needed)."
    );
    println!("Trust the CA on this machine:");
    for step in steps {
        println!("  {}:", step.target);
        for c in &step.commands {
            println!("    {c}");
        }
        if let Some(note) = &step.note {
            println!("    ({note})");
        }
    }
    match installed {
        None => println!(
            "`devmesh cert install --yes` does this where it can (system store when writable, NSS databases when certutil is installed)."
        ),
        Some([]) => {
            println!("Nothing could be installed automatically here.")
        }
        Some(done) => {
            println!("Installed:");
            for o in done {
                println!(
                    "  {} {}: {}",
                    if o.ok { "ok    " } else { "FAILED" },
                    o.target,
                    o.detail
                );
            }
        }
    }
}
