//! `cargo xtask netlab`: the NAT lab with devmesh in it, for people and for
//! the benchmark. The end-to-end tests (`tests/e2e/natlab.rs`) build the same
//! labs with the same crate (`devmesh-netlab`).
//!
//! - `cargo xtask netlab` measures joining, hole punching and bulk transfer
//!   in a small lab and prints the figures;
//! - `cargo xtask netlab --keep [--nat random] [--no-udp] [--latency MS]`
//!   builds a lab with a relay and two NATed members, shares a service and
//!   leaves it up until Ctrl-C, printing how to look around;
//! - `cargo xtask netlab test` runs the lab's end-to-end tests.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use devmesh_netlab::{HomeSpec, Host, Lab, LabSpec, Nat};

use crate::node::{Daemon, Guard};

/// Port of the demo backend inside member A's namespace.
const BACKEND_PORT: u16 = 18080;
const MIB: u64 = 1 << 20;

/// A relay and members in a lab.
pub struct Team {
    pub relay: Daemon,
    pub a: Daemon,
    pub token: String,
    _backend: Guard,
    pub lab: Lab,
}

fn member_args() -> Vec<&'static str> {
    vec![
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--listen",
        "/ip4/0.0.0.0/udp/0/quic-v1",
        "--proxy",
        "127.0.0.1:0",
        "--mdns",
        "false",
        "--log",
        "info,mesh_core=debug",
    ]
}

/// A member with a fresh home inside `host`.
pub fn start_member(
    bin: &Path,
    lab: &Lab,
    host: &Host,
    home: &Path,
    mdns: bool,
) -> anyhow::Result<Daemon> {
    let mut args = member_args();
    if mdns {
        args[7] = "true";
    }
    Daemon::start_in(
        bin,
        home,
        Some(lab.command(host, bin.join("devmeshd"))),
        &args,
    )
}

fn eim() -> HomeSpec {
    HomeSpec {
        nat: Nat::EndpointIndependent,
        block_udp: false,
        hosts: 2,
    }
}

/// Starts the demo backend and member A in `host`, sharing it as `api`.
fn share_api(
    bin: &Path,
    lab: &Lab,
    host: &Host,
    home: &Path,
    mdns: bool,
) -> anyhow::Result<(Guard, Daemon)> {
    let mut backend = lab.command(host, bin.join("devmesh-demo-backend"));
    backend
        .args([&BACKEND_PORT.to_string(), "lab-api"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let backend = Guard::spawn(&mut backend)?;
    let a = start_member(bin, lab, host, home, mdns)?;
    let port = BACKEND_PORT.to_string();
    crate::run(
        a.devmesh()
            .args([
                "run",
                "api",
                "--port",
                &port,
                "--version",
                "1.0.0",
                "--detach",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    Ok((backend, a))
}

/// Builds a lab, starts the relay and member A (sharing `api` from a demo
/// backend in home 0) with an invite token naming the relay.
pub fn team(
    bin: &Path,
    dir: &Path,
    homes: Vec<HomeSpec>,
    latency: Option<Duration>,
) -> anyhow::Result<Team> {
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes,
        latency,
    })?;
    let relay_host = lab.public(0).clone();
    let relay = Daemon::start_in(
        bin,
        &dir.join("relay"),
        Some(lab.command(&relay_host, bin.join("devmeshd"))),
        &[
            "--relay",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "--log",
            "info",
        ],
    )?;
    let relay_addrs: Vec<String> = relay.status()?["external_addrs"]
        .as_array()
        .context("relay addresses")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let a_host = lab.home_host(0, 0).clone();
    let (backend, a) = share_api(bin, &lab, &a_host, &dir.join("a"), false)?;
    let mut invite = a.devmesh();
    invite.arg("invite");
    for addr in &relay_addrs {
        invite.args(["--bootstrap", addr]);
    }
    let out = invite.stderr(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("devmesh invite failed");
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    wait(Duration::from_secs(10), "A's relay reservation", || {
        Ok(a.status()?["relays"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["reservation"] == "accepted")))
    })?;
    Ok(Team {
        relay,
        a,
        token,
        _backend: backend,
        lab,
    })
}

fn wait(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// HTTP status of `GET path` for `api` through `node`'s front door, from
/// inside `host`.
pub fn curl_status(lab: &Lab, host: &Host, node: &Daemon, path: &str) -> anyhow::Result<u16> {
    let out = lab
        .command(host, "curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "-H",
            "Host: api.localhost",
            &format!("http://{}{path}", node.proxy()?),
        ])
        .output()
        .context("running curl in the lab")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The kind of link (`direct` / `relayed`) `node` has to member `peer`.
fn link(node: &Daemon, peer: &str) -> anyhow::Result<Option<String>> {
    let out = node.devmesh().args(["peers", "--json"]).output()?;
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(peers.as_array().and_then(|p| {
        p.iter()
            .find(|p| p["peer_id"] == peer && p["kind"] == "member")
            .and_then(|p| p["connection"].as_str().map(str::to_owned))
    }))
}

/// One join of a fresh member B in home 1: time from `devmesh join` to the
/// first 200 from A's service, and from the first relayed link to a direct
/// one (if it became direct within 10 s).
pub struct JoinRun {
    pub usable: Duration,
    pub relayed_to_direct: Option<Duration>,
}

pub fn join_once(bin: &Path, team: &Team, home: &Path) -> anyhow::Result<JoinRun> {
    let b_host = team.lab.home_host(1, 0).clone();
    let b = start_member(bin, &team.lab, &b_host, home, false)?;
    let a_peer = team.a.status()?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let out = b
        .devmesh()
        .args(["join", &team.token, "--wait", "0"])
        .output()?;
    if !out.status.success() {
        bail!("join failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut usable = None;
    let mut relayed_at = None;
    let mut direct_at = None;
    while started.elapsed() < Duration::from_secs(20) {
        if usable.is_none() && curl_status(&team.lab, &b_host, &b, "/hello")? == 200 {
            usable = Some(started.elapsed());
        }
        match link(&b, &a_peer)?.as_deref() {
            Some("relayed") if relayed_at.is_none() => relayed_at = Some(started.elapsed()),
            Some("direct") if direct_at.is_none() => {
                direct_at = Some(started.elapsed());
                relayed_at.get_or_insert(started.elapsed());
            }
            _ => {}
        }
        if usable.is_some()
            && (direct_at.is_some()
                || relayed_at.is_some_and(|r| started.elapsed() - r > Duration::from_secs(10)))
        {
            break;
        }
        // Poll gently: the polling itself must not load the machine.
        std::thread::sleep(Duration::from_millis(100));
    }
    if usable.is_none_or(|u| u > Duration::from_secs(3)) || direct_at.is_none() {
        // Say why, from B's log.
        let log = std::fs::read_to_string(home.join("xtask-devmeshd.log")).unwrap_or_default();
        for line in log.lines().filter(|l| {
            [
                "hole punch",
                "WARN",
                "peer connected",
                "admitted",
                "records updated",
                "dial",
                "DHT",
                "reservation",
                "provid",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            eprintln!("  B: {line}");
        }
    }
    let usable = usable.context("B never reached A's service")?;
    // Polling sees the link only after the first response; B's log has the
    // exact moments: the relayed connection to A, then the direct one.
    let log = std::fs::read_to_string(home.join("xtask-devmeshd.log")).unwrap_or_default();
    let at = |pred: &dyn Fn(&str) -> bool| {
        log.lines()
            .find(|l| l.contains(&a_peer) && pred(l))
            .and_then(log_seconds)
    };
    let relayed = at(&|l| l.contains("peer connected") && l.contains("relayed=true"));
    let direct = at(&|l| {
        l.contains("direct connection established")
            || (l.contains("peer connected") && l.contains("relayed=false"))
    });
    let relayed_to_direct = match (relayed, direct) {
        (Some(r), Some(d)) => Some(Duration::from_secs_f64((d - r).rem_euclid(86_400.0))),
        (None, Some(_)) => Some(Duration::ZERO),
        _ => direct_at.zip(relayed_at).map(|(d, r)| d.saturating_sub(r)),
    };
    Ok(JoinRun {
        usable,
        relayed_to_direct,
    })
}

/// Seconds into the day of a log line's RFC 3339 timestamp
/// (`2026-11-22T08:01:22.055315Z ...`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.split_once('T')?.1.split('Z').next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// From launching a fresh member B on A's LAN (mDNS on, no bootstrap) to
/// its first 200 from A's service.
pub fn mdns_once(bin: &Path, lab: &Lab, home: &Path) -> anyhow::Result<Duration> {
    let b_host = lab.home_host(0, 1).clone();
    let started = Instant::now();
    let b = start_member(bin, lab, &b_host, home, true)?;
    loop {
        if curl_status(lab, &b_host, &b, "/hello")? == 200 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("B never reached A over the LAN");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Downloads `mib` MiB of A's service from inside `host` through `node`;
/// returns MB/s (10^6 bytes).
pub fn download(lab: &Lab, host: &Host, node: &Daemon, mib: u64) -> anyhow::Result<f64> {
    let bytes = mib * MIB;
    let start = Instant::now();
    let out = lab
        .command(host, "curl")
        .args([
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            "Host: api.localhost",
            &format!("http://{}/bytes/{bytes}", node.proxy()?),
        ])
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    let got: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if !out.status.success() || got != bytes {
        bail!(
            "download of {bytes} bytes got {got}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bytes as f64 / secs / 1e6)
}

/// Figures of the lab part of the benchmark.
pub struct Figures {
    pub join_bootstrap: Vec<Duration>,
    pub join_bootstrap_latency: Vec<Duration>,
    pub relayed_to_direct: Vec<Duration>,
    pub never_direct: usize,
    pub join_mdns: Vec<Duration>,
    pub bulk_relayed: Vec<f64>,
    pub bulk_direct: Vec<f64>,
    pub bulk_mib: u64,
}

/// Runs the lab measurements: `runs` joins per setting, `bulk_rounds`
/// alternating relayed and direct downloads of `bulk_mib` MiB.
pub fn measure(
    bin: &Path,
    runs: usize,
    bulk_rounds: usize,
    bulk_mib: u64,
) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let mut f = Figures {
        join_bootstrap: Vec::new(),
        join_bootstrap_latency: Vec::new(),
        relayed_to_direct: Vec::new(),
        never_direct: 0,
        join_mdns: Vec::new(),
        bulk_relayed: Vec::new(),
        bulk_direct: Vec::new(),
        bulk_mib,
    };
    for latency in [None, Some(Duration::from_millis(40))] {
        let team = team(
            bin,
            &tmp.path().join(format!("join-{}", latency.is_some())),
            vec![eim(), eim()],
            latency,
        )?;
        for run in 0..runs {
            let r = join_once(
                bin,
                &team,
                &tmp.path().join(format!("b-{}-{run}", latency.is_some())),
            )?;
            eprintln!(
                "join via bootstrap (latency {:?}) run {run}: usable after {:?}, relayed to direct {:?}",
                latency, r.usable, r.relayed_to_direct
            );
            if latency.is_some() {
                f.join_bootstrap_latency.push(r.usable);
            } else {
                f.join_bootstrap.push(r.usable);
            }
            match r.relayed_to_direct {
                Some(d) => f.relayed_to_direct.push(d),
                None => f.never_direct += 1,
            }
        }
    }
    // mDNS: A and fresh Bs on one LAN, no relay, no bootstrap.
    {
        let lab = Lab::new(LabSpec {
            public_hosts: 0,
            homes: vec![eim()],
            latency: None,
        })?;
        let a_host = lab.home_host(0, 0).clone();
        let (_backend, _a) = share_api(bin, &lab, &a_host, &tmp.path().join("mdns-a"), true)?;
        for run in 0..runs {
            let t = mdns_once(bin, &lab, &tmp.path().join(format!("mdns-b-{run}")))?;
            eprintln!("mDNS run {run}: usable {t:?} after launching B");
            f.join_mdns.push(t);
        }
    }
    // Bulk: relayed (both NATs port-randomising) vs direct (hole punched).
    let random = HomeSpec {
        nat: Nat::RandomPorts,
        ..eim()
    };
    let relayed = team(
        bin,
        &tmp.path().join("bulk-relayed"),
        vec![random.clone(), random],
        None,
    )?;
    let direct = team(
        bin,
        &tmp.path().join("bulk-direct"),
        vec![eim(), eim()],
        None,
    )?;
    let b_relayed = prepared_b(bin, &relayed, &tmp.path().join("bulk-b-relayed"), "relayed")?;
    let b_direct = prepared_b(bin, &direct, &tmp.path().join("bulk-b-direct"), "direct")?;
    let host = relayed.lab.home_host(1, 0).clone();
    let host_d = direct.lab.home_host(1, 0).clone();
    for round in 0..bulk_rounds {
        let r = download(&relayed.lab, &host, &b_relayed, bulk_mib)?;
        let d = download(&direct.lab, &host_d, &b_direct, bulk_mib)?;
        eprintln!("bulk round {round}: relayed {r:.0} MB/s, direct {d:.0} MB/s");
        f.bulk_relayed.push(r);
        f.bulk_direct.push(d);
    }
    Ok(f)
}

/// A member B in home 1 of `team`, joined, whose link to A is `want`.
fn prepared_b(bin: &Path, team: &Team, home: &Path, want: &str) -> anyhow::Result<Daemon> {
    let host = team.lab.home_host(1, 0).clone();
    let b = start_member(bin, &team.lab, &host, home, false)?;
    let a_peer = team.a.status()?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    crate::run(
        b.devmesh()
            .args(["join", &team.token])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait(
        Duration::from_secs(20),
        &format!("a {want} link from B to A"),
        || {
            Ok(link(&b, &a_peer)?.as_deref() == Some(want)
                && curl_status(&team.lab, &host, &b, "/hello")? == 200)
        },
    )?;
    if want == "direct" {
        // Let the relayed connection close.
        std::thread::sleep(Duration::from_secs(4));
    } else {
        // Hole punching has had its chance and failed.
        std::thread::sleep(Duration::from_secs(3));
        if link(&b, &a_peer)?.as_deref() != Some("relayed") {
            bail!("the port-randomising lab went direct");
        }
    }
    Ok(b)
}

pub fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Err(reason) = Lab::available() {
        bail!("the NAT lab cannot run here: {reason}");
    }
    if args.first().map(String::as_str) == Some("test") {
        return crate::run(crate::cargo().args([
            "test",
            "-p",
            "devmesh-tests",
            "--test",
            "e2e",
            "natlab",
        ]));
    }
    crate::run(crate::cargo().args(["build", "--release", "--bins"]))?;
    let bin = crate::root().join("target/release");
    if args.iter().any(|a| a == "--keep") {
        return keep(&bin, args);
    }
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse::<usize>())
        .transpose()
        .context("--runs takes a number")?
        .unwrap_or(3);
    let f = measure(&bin, runs, 1, 256)?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "join via bootstrap: median {:.0} ms (no added latency), {:.0} ms (40 ms per router)",
        ms(median_duration(f.join_bootstrap)),
        ms(median_duration(f.join_bootstrap_latency))
    );
    println!(
        "join via mDNS: median {:.0} ms",
        ms(median_duration(f.join_mdns))
    );
    println!(
        "relayed to direct: median {:.0} ms ({} runs stayed relayed)",
        ms(median_duration(f.relayed_to_direct)),
        f.never_direct
    );
    println!(
        "{} MiB download: relayed {:.0} MB/s, direct {:.0} MB/s",
        f.bulk_mib, f.bulk_relayed[0], f.bulk_direct[0]
    );
    Ok(())
}

/// Builds a lab to look around in and keeps it until Ctrl-C.
fn keep(bin: &Path, args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let nat = match value("--nat").as_deref() {
        None | Some("eim") => Nat::EndpointIndependent,
        Some("random") => Nat::RandomPorts,
        Some(other) => bail!("--nat {other}: use eim or random"),
    };
    let latency = value("--latency")
        .map(|ms| ms.parse::<u64>().map(Duration::from_millis))
        .transpose()
        .context("--latency takes milliseconds")?;
    let home = HomeSpec {
        nat,
        block_udp: args.iter().any(|a| a == "--no-udp"),
        hosts: 2,
    };
    let dir = crate::root().join("target/netlab");
    let _ = std::fs::remove_dir_all(&dir);
    let team = team(bin, &dir, vec![home.clone(), home], latency)?;
    let b_host = team.lab.home_host(1, 0).clone();
    let b = start_member(bin, &team.lab, &b_host, &dir.join("b"), false)?;
    crate::run(b.devmesh().args(["join", &team.token]))?;
    println!();
    println!("NAT lab up (namespaces {}*):", team.lab.prefix());
    println!(
        "  relay   {} in {}",
        team.relay.status()?["peer_id"].as_str().unwrap_or("?"),
        team.lab.public(0).netns
    );
    println!(
        "  A       home 0 ({}), shares api; DEVMESH_HOME={}",
        team.lab.home_host(0, 0).netns,
        team.a.home.display()
    );
    println!(
        "  B       home 1 ({}); DEVMESH_HOME={}",
        b_host.netns,
        b.home.display()
    );
    println!("Try:");
    println!(
        "  DEVMESH_HOME={} target/release/devmesh peers",
        b.home.display()
    );
    println!(
        "  DEVMESH_HOME={} target/release/devmesh doctor",
        b.home.display()
    );
    println!(
        "  ip netns exec {} curl -H 'Host: api.localhost' http://{}/hello",
        b_host.netns,
        b.proxy()?
    );
    println!("Ctrl-C tears the lab down.");
    // Ctrl-C reaches the daemons too; wait for B to go, then drop the lab.
    let mut b = b;
    b.process.0.wait()?;
    Ok(())
}
