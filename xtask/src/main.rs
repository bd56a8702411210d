//! Project tasks, in the cargo-xtask manner: `cargo xtask <task>`.
//!
//! - `demo`: build, start a node with the example service of
//!   `examples/hello/devmesh.toml` and print the URL to open
//! - `test`: the whole test suite (what CI runs)
//! - `lint`: rustfmt check and clippy with warnings denied
//! - `deny`: `cargo deny --offline check licenses bans sources`
//! - `ci`: lint, test, deny
//! - `bench`: side-by-side measurements, written to docs/BENCHMARKS.md
//!   (`--scale [N…]`: only the team sizes)
//! - `soak [--minutes N]`: mixed load through the remote route, with the
//!   daemons' memory and descriptors watched
//! - `netlab`: the NAT lab: figures, `--keep` to look around, `test`
//! - `fuzz`: the fuzz targets of `fuzz/` (cargo-fuzz), each for a while, or
//!   one: `fuzz [TARGET] [--time S] [--ci] [--seed]`

mod bench;
mod bench_observe;
mod bench_scale;
mod bench_tcp;
mod failover;
mod fuzz;
mod netlab;
mod node;
mod soak;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("deny") => deny(),
        Some("ci") => lint().and_then(|()| test(&[])).and_then(|()| deny()),
        Some("bench") => bench::run(&args[1..]),
        Some("netlab") => netlab::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|lint|deny|ci|bench|soak|netlab|fuzz>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    run(cargo().args(["test", "--workspace"]).args(extra))
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn deny() -> anyhow::Result<()> {
    run(cargo().args(["deny", "--offline", "check", "licenses", "bans", "sources"]))
        .context("cargo-deny is needed: cargo install cargo-deny --locked")
}

/// `preferred` when nothing listens there, else a free port the system
/// picks, saying so on stderr.
fn pick_port(preferred: u16, what: &str) -> anyhow::Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    let free = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("finding a free port")?
        .local_addr()?
        .port();
    eprintln!("xtask demo: port {preferred} is taken; {what} uses port {free}");
    Ok(free)
}

/// Builds everything, starts the example backend and a node, shares the
/// example service and keeps running until Ctrl-C. Ports 3000 and 7700
/// when they are free, else free ones (said so).
fn demo() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))?;
    let bin = root().join("target/release");
    let project = root().join("examples/hello");
    let home = root().join("target/devmesh-demo");
    let backend_port = pick_port(3000, "the example backend")?;
    let proxy_port = pick_port(7700, "the front door")?;
    let _backend = node::Guard::spawn(
        Command::new(bin.join("devmesh-demo-backend")).args([&backend_port.to_string(), "hello"]),
    )?;
    let proxy = format!("127.0.0.1:{proxy_port}");
    let mut daemon = node::Daemon::start(&bin, &home, &["--proxy", &proxy, "--namespace", "demo"])?;
    let mut share = Command::new(bin.join("devmesh"));
    share
        .env("DEVMESH_HOME", &home)
        .current_dir(&project)
        .args([
            "run",
            "hello",
            "--detach",
            "--port",
            &backend_port.to_string(),
        ]);
    run(&mut share).context("sharing the example service")?;
    let status = daemon.status()?;
    println!();
    println!(
        "devmesh is running (node {}).",
        status["peer_id"].as_str().unwrap_or("?")
    );
    println!("Open  http://hello.localhost:{proxy_port}/");
    println!("or    curl -x http://127.0.0.1:{proxy_port} http://hello.devmesh/hello");
    // Another machine needs an address that is not loopback.
    let addrs: Vec<&str> = status["listen_addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    let join = addrs
        .iter()
        .find(|a| !a.starts_with("/ip4/127."))
        .or(addrs.first())
        .unwrap_or(&"?");
    // The namespace is private: another node comes in with a token.
    let invite = Command::new(bin.join("devmesh"))
        .env("DEVMESH_HOME", &home)
        .args(["invite", "--bootstrap", *join])
        .stderr(std::process::Stdio::null())
        .output()
        .context("making an invite")?;
    let token = String::from_utf8_lossy(&invite.stdout).trim().to_owned();
    println!("Join it from another node:  devmesh join {token}");
    println!("This node's CLI (paste into a shell):");
    println!(
        "  export DEVMESH_HOME={} PATH={}:$PATH",
        home.display(),
        bin.display()
    );
    println!("  devmesh status");
    println!("Ctrl-C stops the demo.");
    // Ctrl-C reaches devmeshd too: it withdraws the service and exits, and
    // the guards then stop the backend.
    daemon.process.0.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn a_taken_demo_port_is_replaced_by_a_free_one() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let picked = super::pick_port(port, "the test").unwrap();
        assert_ne!(picked, port);
        assert!(std::net::TcpListener::bind(("127.0.0.1", picked)).is_ok());
        drop(taken);
        assert_eq!(super::pick_port(port, "the test").unwrap(), port);
    }
}
