//! `cargo xtask bench --scale [N…]`: a team of N nodes on this machine's
//! loopback, in one open namespace, each sharing one service. For each N it
//! measures how long the team takes to converge (every node sees every
//! service), each node's idle CPU once it has, and how long a new record
//! takes to reach every node; and once, whether 1,000 services of one node
//! reach another whole.
//!
//! The nodes' control sockets are read directly (one `status` line each),
//! so that polling a hundred nodes costs them little.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{node::Daemon, run as run_cmd};

/// Team sizes of the full run.
const SIZES: [usize; 4] = [10, 50, 100, 200];
/// Nodes started at once.
const START_BATCH: usize = 10;

/// A team larger than this is a bounded mesh (mesh-core's `Links`).
const FULL_MESH_UP_TO: usize = 12;
/// How long a bounded mesh takes to settle once every node saw every
/// service: links are trimmed once they are 30 s old.
const SETTLE_BOUNDED: Duration = Duration::from_secs(45);

/// One `status` from a node's control socket.
fn status(home: &Path) -> anyhow::Result<serde_json::Value> {
    ask(home, "status")
}

/// One answer of `cmd` from a node's control socket.
fn ask(home: &Path, cmd: &str) -> anyhow::Result<serde_json::Value> {
    let mut socket = UnixStream::connect(home.join("devmeshd.sock"))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(socket).read_line(&mut line)?;
    let mut reply: serde_json::Value = serde_json::from_str(&line)?;
    Ok(reply["result"].take())
}

/// How many services `home`'s node sees, and whether `name` is among them.
fn sees(home: &Path, name: &str) -> (usize, bool) {
    let Ok(s) = status(home) else {
        return (0, false);
    };
    let services = s["services"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    (services.len(), services.iter().any(|s| s["name"] == name))
}

/// Waits until every node of `homes` satisfies `done`; the time that took.
fn until_all(
    homes: &[PathBuf],
    limit: Duration,
    what: &str,
    done: impl Fn(&Path) -> bool + Sync,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending: Vec<&PathBuf> = homes.iter().collect();
    while !pending.is_empty() {
        pending.retain(|h| !done(h));
        if started.elapsed() > limit {
            bail!(
                "{} of {} nodes never {what} within {limit:?}",
                pending.len(),
                homes.len()
            );
        }
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(started.elapsed())
}

/// What one team size measured.
struct Figures {
    nodes: usize,
    converge: Duration,
    idle_median: f64,
    idle_max: f64,
    /// Member connections per node while idle: median and most.
    links_median: usize,
    links_max: usize,
    new_record: Duration,
}

/// How many member connections `home`'s node has.
fn member_links(home: &Path) -> usize {
    ask(home, "peers").ok().map_or(0, |p| {
        p.as_array()
            .map_or(0, |p| p.iter().filter(|p| p["kind"] == "member").count())
    })
}

fn team(bin: &Path, root: &Path, n: usize, idle_for: Duration) -> anyhow::Result<Figures> {
    let args = crate::node::loopback_args("scale");
    let first = Daemon::start(bin, &root.join("n0"), &args)?;
    let bootstrap = first.status()?["listen_addrs"][0]
        .as_str()
        .context("listen addr")?
        .to_owned();
    let mut join = args.clone();
    join.extend_from_slice(&["--bootstrap", &bootstrap]);
    let mut nodes = vec![first];
    let started = Instant::now();
    while nodes.len() < n {
        let batch: Vec<usize> = (nodes.len()..n.min(nodes.len() + START_BATCH)).collect();
        let started: Vec<anyhow::Result<Daemon>> = std::thread::scope(|s| {
            let join = &join;
            let spawned: Vec<_> = batch
                .iter()
                .map(|i| s.spawn(move || Daemon::start(bin, &root.join(format!("n{i}")), join)))
                .collect();
            spawned
                .into_iter()
                .map(|t| t.join().expect("start thread"))
                .collect()
        });
        for daemon in started {
            nodes.push(daemon?);
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let port = (20000 + i).to_string();
        let name = format!("s{i}");
        run_cmd(
            node.devmesh()
                .args([
                    "run",
                    &name,
                    "--port",
                    &port,
                    "--version",
                    "1.0.0",
                    "--detach",
                ])
                .stdout(Stdio::null()),
        )?;
    }
    let shared = started.elapsed();
    let homes: Vec<PathBuf> = nodes.iter().map(|d| d.home.clone()).collect();
    let converge = until_all(&homes, Duration::from_secs(120), "saw every service", |h| {
        sees(h, "").0 >= n
    })?;
    eprintln!("{n} nodes: started and shared in {shared:.1?}, converged {converge:.2?} later");

    // Idle: nothing changes for a while (a bounded mesh has trimmed its
    // links), then CPU over `idle_for`.
    std::thread::sleep(if n > FULL_MESH_UP_TO + 1 {
        SETTLE_BOUNDED
    } else {
        Duration::from_secs(5)
    });
    let ticks = crate::bench::clock_ticks_per_sec();
    let before: Vec<u64> = nodes
        .iter()
        .map(|d| crate::bench::cpu_ticks(&[d.process.pid()], false))
        .collect();
    std::thread::sleep(idle_for);
    let mut idle: Vec<f64> = nodes
        .iter()
        .zip(&before)
        .map(|(d, b)| {
            (crate::bench::cpu_ticks(&[d.process.pid()], false) - b) as f64
                / ticks
                / idle_for.as_secs_f64()
                * 100.0
        })
        .collect();
    idle.sort_by(f64::total_cmp);
    let idle_median = idle[idle.len() / 2];
    let idle_max = idle[idle.len() - 1];
    let mut links: Vec<usize> = homes.iter().map(|h| member_links(h)).collect();
    links.sort_unstable();
    let (links_median, links_max) = (links[links.len() / 2], links[links.len() - 1]);

    // A new record, from the node in the middle.
    let middle = &nodes[n / 2];
    let t0 = Instant::now();
    run_cmd(
        middle
            .devmesh()
            .args([
                "run",
                "fresh",
                "--port",
                "19999",
                "--version",
                "1.0.0",
                "--detach",
            ])
            .stdout(Stdio::null()),
    )?;
    until_all(&homes, Duration::from_secs(60), "saw the new record", |h| {
        sees(h, "fresh").1
    })?;
    let new_record = t0.elapsed();
    eprintln!(
        "{n} nodes: idle CPU per node median {idle_median:.2}%, max {idle_max:.2}%; links median {links_median}, most {links_max}; new record on all in {new_record:.2?}"
    );
    Ok(Figures {
        nodes: n,
        converge,
        idle_median,
        idle_max,
        links_median,
        links_max,
        new_record,
    })
}

/// One node announcing 1,000 services; how long until another node has all
/// of them.
fn thousand_services(bin: &Path, root: &Path) -> anyhow::Result<Duration> {
    let (a, b) = crate::bench_observe::pair(bin, root, "thousand", 20000, &[])?;
    let t0 = Instant::now();
    for i in 1..1000 {
        run_cmd(
            a.devmesh()
                .args([
                    "run",
                    &format!("many{i}"),
                    "--port",
                    &(21000 + i).to_string(),
                    "--version",
                    "1.0.0",
                    "--detach",
                ])
                .stdout(Stdio::null()),
        )?;
    }
    until_all(
        std::slice::from_ref(&b.home),
        Duration::from_secs(60),
        "saw 1,000 services",
        |h| sees(h, "").0 >= 1000,
    )?;
    Ok(t0.elapsed())
}

/// Appends the scale section to `md`.
pub fn section(md: &mut String, bin: &Path, quick: bool, sizes: &[usize]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let sizes: Vec<usize> = if !sizes.is_empty() {
        sizes.to_vec()
    } else if quick {
        vec![10]
    } else {
        SIZES.to_vec()
    };
    let idle_for = Duration::from_secs(if quick { 5 } else { 20 });
    let mut rows = Vec::new();
    for &n in &sizes {
        let tmp = tempfile::tempdir()?;
        rows.push(team(bin, tmp.path(), n, idle_for)?);
    }
    let tmp = tempfile::tempdir()?;
    let thousand = thousand_services(bin, tmp.path())?;
    writeln!(
        md,
        "## Team size (`cargo xtask bench --scale`)\n\n\
         N nodes on this machine's loopback, one open namespace, each sharing one service; \
         all N share the machine's 2 cores. Converged: from the last share until every node \
         sees every service. Idle: CPU of each node over {} s with nothing changing (in a \
         team of more than 13, a bounded mesh, once its links are trimmed, {} s after \
         converging). Links: member connections per node then. New record: from `devmesh run` \
         on one node until every node sees it.\n\n\
         | nodes | converged | idle CPU per node, median | idle CPU, busiest node | links per node, median / most | new record on every node |\n\
         |---|---|---|---|---|---|",
        idle_for.as_secs(),
        SETTLE_BOUNDED.as_secs()
    )?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {:.2} s | {:.2}% | {:.2}% | {} / {} | {:.2} s |",
            r.nodes,
            r.converge.as_secs_f64(),
            r.idle_median,
            r.idle_max,
            r.links_median,
            r.links_max,
            r.new_record.as_secs_f64()
        )?;
    }
    writeln!(
        md,
        "\nOne node sharing 1,000 services: another node saw all of them {:.1} s after the first \
         `devmesh run` (the 1,000 runs one after another included).\n",
        thousand.as_secs_f64()
    )?;
    Ok(())
}
