//! `devmesh install`: the devmesh block of the hosts file
//! (`DEVMESH_HOSTS_FILE`, else /etc/hosts).

use std::path::Path;

use anyhow::Context as _;
use mesh_control::{Request, Status};

use crate::{Failure, daemon, hosts};

/// The names the block should point at this machine, and the front door's
/// port they are opened on.
struct Wanted {
    names: Vec<String>,
    port: u16,
}

impl Wanted {
    /// `http://<name>.devmesh[:<port>]/`.
    fn url(&self, name: &str) -> String {
        match self.port {
            80 => format!("http://{name}.devmesh/"),
            p => format!("http://{name}.devmesh:{p}/"),
        }
    }

    fn urls(&self) -> Vec<String> {
        self.names.iter().map(|n| self.url(n)).collect()
    }

    /// Prints the URLs on stdout.
    fn print_urls(&self) {
        for url in self.urls() {
            println!("{url}");
        }
    }

    /// A hosts file cannot hold ports: says which URL to open instead.
    fn remind(&self) {
        if let Some(name) = self.names.first()
            && self.port != 80
        {
            eprintln!(
                "devmesh: a hosts file cannot hold ports: open {} (with the front door's port {}), not http://{name}.devmesh/",
                self.url(name),
                self.port
            );
        }
    }
}

/// Every service name the daemon knows and its front door's port.
async fn wanted(home: &Path) -> Result<Wanted, Failure> {
    let mut client = daemon::connect(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    let mut names: Vec<String> = status.services.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(anyhow::anyhow!(
            "no services are known yet, so there are no names to add; share one with `devmesh run <name> --port <port>` or join a team, then run `devmesh install` again"
        )
        .into());
    }
    let port = status
        .proxy_addr
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .context(
            "this node has no front door (a relay?); run `devmesh install` against a member node",
        )?;
    Ok(Wanted { names, port })
}

/// `devmesh install`: writes the block (`--yes`), removes it (`--remove
/// --yes`), or shows what either would change.
pub async fn install(home: &Path, yes: bool, remove: bool) -> Result<(), Failure> {
    let path = hosts::path();
    let shown = path.display();
    let text = hosts::read(&path)?;
    let wanted = if remove {
        Wanted {
            names: Vec::new(),
            port: 0,
        }
    } else {
        wanted(home).await?
    };
    let block = (!remove).then(|| hosts::block(&wanted.names));
    let new = hosts::apply(&text, block.as_deref()).with_context(|| format!("{shown}"))?;
    if new == text {
        if remove {
            eprintln!("devmesh: {shown} has no devmesh block; nothing to remove");
        } else {
            eprintln!("devmesh: {shown} is up to date");
            wanted.print_urls();
            wanted.remind();
        }
        return Ok(());
    }
    let current = hosts::current(&text);
    if !yes {
        dry_run(&path, block.as_deref(), current.as_deref(), &wanted);
        return Ok(());
    }
    hosts::write(&path, &new)?;
    if remove {
        eprintln!("devmesh: removed the devmesh block from {shown}");
    } else {
        eprintln!(
            "devmesh: {} the devmesh block in {shown} ({} name{})",
            if current.is_some() {
                "updated"
            } else {
                "added"
            },
            wanted.names.len(),
            if wanted.names.len() == 1 { "" } else { "s" }
        );
        wanted.print_urls();
        wanted.remind();
    }
    Ok(())
}

/// Shows the block that `--yes` would write (`block`) or remove
/// (`current`), and how to do it.
fn dry_run(path: &Path, block: Option<&str>, current: Option<&str>, wanted: &Wanted) {
    let shown = path.display();
    match (block, current) {
        (None, Some(old)) => {
            print!("{old}");
            eprintln!(
                "devmesh: dry run: would remove the block above from {shown}; run `devmesh install --remove --yes` to do it"
            );
        }
        (Some(new_block), old) => {
            print!("{new_block}");
            eprintln!(
                "devmesh: dry run: would {} {shown}; run `devmesh install --yes` to write it",
                if old.is_some() {
                    "replace the devmesh block with the block above in"
                } else {
                    "add the block above to the end of"
                }
            );
            wanted.remind();
        }
        (None, None) => {}
    }
}
