//! `cargo xtask netlab`: the NAT lab with devmesh in it, for people and for
//! the benchmark. The end-to-end tests (`tests/e2e/natlab.rs`) build the same
//! labs with the same crate (`devmesh-netlab`).
//!
//! - `cargo xtask netlab` measures joining, hole punching and bulk transfer
//!   in a small lab and prints the figures;
//! - `cargo xtask netlab --cases [--runs N] [--case NAME]` measures, for
//!   each router kind of the field ([`cases`]: endpoint-independent NATs
//!   that drop or reject (OpenWrt) what they did not ask for, a 30 s UDP
//!   mapping timeout, two hosts behind one NAT, a member with a public
//!   address, dual-stack IPv6, port-randomising NATs), how many of N
//!   (20) joins of a fresh member B have a direct connection to A within
//!   10 s of B's first response, and writes the table into the NAT lab
//!   section of `docs/BENCHMARKS.md`;
//! - `cargo xtask netlab --keep [--nat random] [--no-udp] [--reject] [--latency MS]`
//!   builds a lab with a relay and two NATed members, shares a service and
//!   leaves it up until Ctrl-C, printing how to look around;
//! - `cargo xtask netlab test` runs the lab's end-to-end tests.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use devmesh_netlab::{Firewall, HomeSpec, Host, Lab, LabSpec, Nat};

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

/// `devmeshd` arguments of a lab member; on a host with an IPv6 address
/// it listens on IPv6 too.
fn member_args(mdns: bool, ipv6: bool) -> Vec<&'static str> {
    let mut args = vec![
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--listen",
        "/ip4/0.0.0.0/udp/0/quic-v1",
    ];
    if ipv6 {
        args.extend([
            "--listen",
            "/ip6/::/tcp/0",
            "--listen",
            "/ip6/::/udp/0/quic-v1",
        ]);
    }
    args.extend([
        "--proxy",
        "127.0.0.1:0",
        "--mdns",
        if mdns { "true" } else { "false" },
        "--log",
        "info,mesh_core=debug",
    ]);
    args
}

/// A member with a fresh home inside `host`.
pub fn start_member(
    bin: &Path,
    lab: &Lab,
    host: &Host,
    home: &Path,
    mdns: bool,
) -> anyhow::Result<Daemon> {
    Daemon::start_in(
        bin,
        home,
        Some(lab.command(host, bin.join("devmeshd"))),
        &member_args(mdns, host.addr6.is_some()),
    )
}

fn eim() -> HomeSpec {
    HomeSpec {
        hosts: 2,
        ..HomeSpec::default()
    }
}

/// Where a member runs in a lab.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// Host `.1` of home `.0`.
    Home(usize, usize),
    /// Public host `i` (no NAT); public host 0 is the relay's.
    Public(usize),
}

impl Place {
    pub fn host(self, lab: &Lab) -> Host {
        match self {
            Place::Home(home, host) => lab.home_host(home, host).clone(),
            Place::Public(i) => lab.public(i).clone(),
        }
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
    let spec = LabSpec {
        public_hosts: 1,
        homes,
        latency,
        ipv6: false,
    };
    team_in(bin, dir, spec, Place::Home(0, 0))
}

/// A lab built from `spec` (with at least one public host, the relay's),
/// the relay, and member A at `a` sharing `api`.
pub fn team_in(bin: &Path, dir: &Path, spec: LabSpec, a: Place) -> anyhow::Result<Team> {
    let lab = Lab::new(spec)?;
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
    let a_host = a.host(&lab);
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
    Ok(link_addrs(node, peer)?.map(|(kind, _)| kind))
}

/// [`link`] with the addresses of the connections.
fn link_addrs(node: &Daemon, peer: &str) -> anyhow::Result<Option<(String, Vec<String>)>> {
    let out = node.devmesh().args(["peers", "--json"]).output()?;
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(peers.as_array().and_then(|p| {
        let p = p
            .iter()
            .find(|p| p["peer_id"] == peer && p["kind"] == "member")?;
        let kind = p["connection"].as_str()?.to_owned();
        let addrs = p["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some((kind, addrs))
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
    Ok(join_at(bin, team, &b_host, home)?.0)
}

/// [`join_once`] with B in `b_host`; also gives the direct link seen and
/// B itself.
pub fn join_at(
    bin: &Path,
    team: &Team,
    b_host: &Host,
    home: &Path,
) -> anyhow::Result<(JoinRun, DirectSeen, Daemon)> {
    let b_host = b_host.clone();
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
    let mut usable: Option<Duration> = None;
    let mut relayed_at = None;
    let mut direct_at = None;
    let mut direct_addrs = Vec::new();
    while started.elapsed() < Duration::from_secs(25) {
        if usable.is_none() && curl_status(&team.lab, &b_host, &b, "/hello")? == 200 {
            usable = Some(started.elapsed());
        }
        match link_addrs(&b, &a_peer)? {
            Some((kind, _)) if kind == "relayed" && relayed_at.is_none() => {
                relayed_at = Some(started.elapsed())
            }
            Some((kind, addrs)) if kind == "direct" && direct_at.is_none() => {
                direct_at = Some(started.elapsed());
                direct_addrs = addrs;
                relayed_at.get_or_insert(started.elapsed());
            }
            _ => {}
        }
        // Done once direct, or 10 s after the first response (and after
        // the first relayed link).
        if let Some(u) = usable
            && (direct_at.is_some()
                || (started.elapsed() > u + DIRECT_WINDOW
                    && relayed_at.is_some_and(|r| started.elapsed() - r > DIRECT_WINDOW)))
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
    let punched = log
        .lines()
        .any(|l| l.contains(&a_peer) && l.contains("hole punch succeeded"));
    let seen = DirectSeen {
        after_join: direct_at,
        after_usable: direct_at.map(|d| d.saturating_sub(usable)),
        ipv6: direct_addrs
            .iter()
            .any(|a| a.starts_with("/ip6/") && !a.contains("p2p-circuit")),
        punched,
    };
    Ok((
        JoinRun {
            usable,
            relayed_to_direct,
        },
        seen,
        b,
    ))
}

/// How long after the first response a join's link must be direct.
const DIRECT_WINDOW: Duration = Duration::from_secs(10);

/// The direct link of one join, as polling saw it.
pub struct DirectSeen {
    /// From `devmesh join` to the first direct link, if any within the
    /// window.
    pub after_join: Option<Duration>,
    /// From the first response to the direct link (zero when it was
    /// direct already).
    pub after_usable: Option<Duration>,
    /// Whether a direct connection was over IPv6.
    pub ipv6: bool,
    /// Whether B's log has a successful hole punch with A.
    pub punched: bool,
}

impl DirectSeen {
    fn in_window(&self) -> bool {
        self.after_usable.is_some_and(|d| d <= DIRECT_WINDOW)
    }
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
            ipv6: false,
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
        .context("--runs takes a number")?;
    if args.iter().any(|a| a == "--cases") {
        let only = args
            .iter()
            .position(|a| a == "--case")
            .and_then(|i| args.get(i + 1));
        return run_cases(&bin, runs.unwrap_or(20), only.map(String::as_str));
    }
    let runs = runs.unwrap_or(3);
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
        firewall: if args.iter().any(|a| a == "--reject") {
            Firewall::Reject
        } else {
            Firewall::Drop
        },
        ..HomeSpec::default()
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

/// One kind of router (or placement) met in the field, as a lab.
pub struct Case {
    pub name: &'static str,
    /// What it models, for the table.
    pub what: &'static str,
    pub spec: LabSpec,
    /// Where A (sharing `api`) and the fresh Bs run.
    pub a: Place,
    pub b: Place,
    /// Whether a direct connection is expected (cone-like NATs, or none).
    pub cone: bool,
}

/// The cases of `cargo xtask netlab --cases`. Every lab has the relay on
/// public host 0.
pub fn cases() -> Vec<Case> {
    let lab = |homes: Vec<HomeSpec>| LabSpec {
        public_hosts: 1,
        homes,
        latency: None,
        ipv6: false,
    };
    let reject = HomeSpec {
        firewall: Firewall::Reject,
        ..eim()
    };
    let short_udp = HomeSpec {
        udp_timeout: Some(Duration::from_secs(30)),
        ..eim()
    };
    let random = HomeSpec {
        nat: Nat::RandomPorts,
        ..eim()
    };
    let home_a = Place::Home(0, 0);
    let home_b = Place::Home(1, 0);
    vec![
        Case {
            name: "eim",
            what: "both behind endpoint-independent NATs that drop unsolicited packets",
            spec: lab(vec![eim(), eim()]),
            a: home_a,
            b: home_b,
            cone: true,
        },
        Case {
            name: "reject",
            what: "both behind NATs that reject unsolicited packets (TCP reset, ICMP port-unreachable; OpenWrt's default)",
            spec: lab(vec![reject.clone(), reject]),
            a: home_a,
            b: home_b,
            cone: true,
        },
        Case {
            name: "udp-30s",
            what: "both behind NATs that forget a UDP mapping after 30 s without traffic",
            spec: lab(vec![short_udp.clone(), short_udp]),
            a: home_a,
            b: home_b,
            cone: true,
        },
        Case {
            name: "same-nat",
            what: "A and B on one LAN behind one NAT (no hairpinning; mDNS off, joined through the relay)",
            spec: lab(vec![eim()]),
            a: home_a,
            b: Place::Home(0, 1),
            cone: true,
        },
        Case {
            name: "public",
            what: "B on a public address without NAT, A behind an endpoint-independent NAT",
            spec: LabSpec {
                public_hosts: 2,
                ..lab(vec![eim()])
            },
            a: home_a,
            b: Place::Public(1),
            cone: true,
        },
        Case {
            name: "ipv6",
            what: "dual stack: both behind IPv4 NATs and with global IPv6 addresses (open IPv6 firewall)",
            spec: LabSpec {
                ipv6: true,
                ..lab(vec![eim(), eim()])
            },
            a: home_a,
            b: home_b,
            cone: true,
        },
        Case {
            name: "random",
            what: "both behind port-randomising NATs (symmetric-like; hole punching cannot work)",
            spec: lab(vec![random.clone(), random]),
            a: home_a,
            b: home_b,
            cone: false,
        },
    ]
}

/// What the joins of one case came to.
pub struct CaseResult {
    pub name: &'static str,
    pub what: &'static str,
    pub cone: bool,
    pub joins: usize,
    /// Joins whose link was direct within 10 s of the first response.
    pub direct: usize,
    /// Of those, over IPv6; and through a hole punch (B's log).
    pub ipv6: usize,
    pub punched: usize,
    /// From `devmesh join` to the direct link, for the direct joins.
    pub join_to_direct: Vec<Duration>,
    /// From `devmesh join` to the first response.
    pub usable: Vec<Duration>,
    /// After the last join, 40 s without requests: still direct, and the
    /// request after it answered.
    pub after_idle: Option<(bool, bool)>,
    /// What `devmesh doctor` said about A on a B that stayed relayed.
    pub doctor: Option<String>,
}

/// Runs `runs` joins of a fresh B in `case`'s lab.
pub fn measure_case(
    bin: &Path,
    dir: &Path,
    case: &Case,
    runs: usize,
) -> anyhow::Result<CaseResult> {
    let team = team_in(bin, dir, case.spec.clone(), case.a)?;
    let a_peer = team.a.status()?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let b_host = case.b.host(&team.lab);
    let mut r = CaseResult {
        name: case.name,
        what: case.what,
        cone: case.cone,
        joins: runs,
        direct: 0,
        ipv6: 0,
        punched: 0,
        join_to_direct: Vec::new(),
        usable: Vec::new(),
        after_idle: None,
        doctor: None,
    };
    let mut last = None;
    for run in 0..runs {
        let (join, seen, b) = join_at(bin, &team, &b_host, &dir.join(format!("b-{run}")))?;
        eprintln!(
            "{} run {run}: usable after {:?}, direct after {:?} (from the first response {:?}){}{}",
            case.name,
            join.usable,
            seen.after_join,
            seen.after_usable,
            if seen.ipv6 { ", over IPv6" } else { "" },
            if seen.punched { ", hole punched" } else { "" },
        );
        r.usable.push(join.usable);
        if seen.in_window() {
            r.direct += 1;
            r.ipv6 += usize::from(seen.ipv6);
            r.punched += usize::from(seen.punched);
            r.join_to_direct.extend(seen.after_join);
        } else if r.doctor.is_none() {
            let out = b.devmesh().arg("doctor").output()?;
            r.doctor = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.contains(&a_peer) && !l.starts_with("peer "))
                .map(|l| l.trim().to_owned());
            eprintln!("  doctor on B: {:?}", r.doctor);
        }
        last = Some(b);
    }
    if let Some(b) = last
        && case.cone
    {
        // Past the shortest UDP mapping timeout, without requests.
        std::thread::sleep(Duration::from_secs(40));
        let direct = link(&b, &a_peer)?.as_deref() == Some("direct");
        let answered = curl_status(&team.lab, &b_host, &b, "/hello")? == 200;
        eprintln!(
            "{}: after 40 s idle, direct {direct}, request answered {answered}",
            case.name
        );
        r.after_idle = Some((direct, answered));
    }
    Ok(r)
}

fn run_cases(bin: &Path, runs: usize, only: Option<&str>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut results = Vec::new();
    for case in cases() {
        if only.is_some_and(|o| o != case.name) {
            continue;
        }
        let r = measure_case(bin, &tmp.path().join(case.name), &case, runs)?;
        results.push(r);
    }
    if results.is_empty() {
        bail!("--case: no case of that name");
    }
    let table = cases_table(&results, runs);
    println!("{table}");
    if only.is_none() {
        write_cases_section(&table)?;
        eprintln!("wrote the router kinds into docs/BENCHMARKS.md");
    }
    Ok(())
}

/// The heading of the cases' part of the NAT lab section.
const CASES_HEADING: &str = "### Router kinds (`cargo xtask netlab --cases`)";

fn cases_table(results: &[CaseResult], runs: usize) -> String {
    use std::fmt::Write as _;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "{CASES_HEADING}\n");
    let _ = writeln!(
        md,
        "Run on {date} at commit {commit}, on the shared 2-core machine while other builds ran. Per case, one lab (relay on the internet, A sharing a service) and {runs} joins, each of a fresh member B through the relay; a join counts as direct when `devmesh peers` on B shows a direct link to A within 10 s of B's first response from A's service (polled every 100 ms, so times are up to ~0.1 s late). After the last join, 40 s without requests, then one request. Target for the cone-like cases: direct in at least 19 of 20.\n"
    );
    let _ = writeln!(
        md,
        "| case | router kind | direct within 10 s | join → first response (median) | join → direct (median / worst) | after 40 s idle |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in results {
        let mut how = Vec::new();
        if r.ipv6 > 0 {
            how.push(format!("{} over IPv6", r.ipv6));
        }
        if r.direct > 0 {
            how.push(format!("{} hole punched", r.punched));
        }
        let how = if how.is_empty() {
            String::new()
        } else {
            format!(" ({})", how.join(", "))
        };
        let target = if r.cone { "" } else { " (not expected)" };
        let direct_times = if r.join_to_direct.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.0} / {:.0} ms",
                ms(median_duration(r.join_to_direct.clone())),
                ms(r.join_to_direct.iter().max().copied().unwrap_or_default())
            )
        };
        let idle = match r.after_idle {
            None => "-".to_owned(),
            Some((direct, answered)) => format!(
                "{}, request {}",
                if direct { "direct" } else { "relayed" },
                if answered { "answered" } else { "failed" }
            ),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {}/{}{how}{target} | {:.0} ms | {direct_times} | {idle} |",
            r.name,
            r.what,
            r.direct,
            r.joins,
            ms(median_duration(r.usable.clone())),
        );
    }
    for r in results.iter().filter(|r| r.doctor.is_some()) {
        let _ = writeln!(
            md,
            "\n`devmesh doctor` on a B that stayed relayed ({}): {}",
            r.name,
            r.doctor.as_deref().unwrap_or_default()
        );
    }
    md
}

/// The cases' part as it is in `docs/BENCHMARKS.md` now (for `cargo
/// xtask bench`, which rewrites the rest of the NAT lab section).
pub fn kept_cases_section() -> Option<String> {
    let doc = std::fs::read_to_string(crate::root().join("docs/BENCHMARKS.md")).ok()?;
    let (start, end) = cases_span(&doc)?;
    Some(doc[start..end].trim_end().to_owned())
}

/// Where the cases' part is: from its heading to the end of the NAT lab
/// section (the next `## ` heading or comment).
fn cases_span(doc: &str) -> Option<(usize, usize)> {
    let start = doc.find(CASES_HEADING)?;
    Some((start, section_end(doc, start)))
}

fn section_end(doc: &str, from: usize) -> usize {
    let rest = &doc[from..];
    [rest.find("\n## "), rest.find("\n<!--")]
        .into_iter()
        .flatten()
        .min()
        .map_or(doc.len(), |i| from + i + 1)
}

/// Puts `table` at the end of the NAT lab section, instead of the one
/// there.
fn write_cases_section(table: &str) -> anyhow::Result<()> {
    let path = crate::root().join("docs/BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).context("reading docs/BENCHMARKS.md")?;
    if let Some((start, end)) = cases_span(&doc) {
        doc.replace_range(start..end, "");
    }
    let nat = doc
        .find("## NAT lab")
        .context("docs/BENCHMARKS.md has no NAT lab section")?;
    let heading_end = doc[nat..].find('\n').map_or(doc.len(), |i| nat + i + 1);
    let end = section_end(&doc, heading_end);
    let mut insert = format!("{}\n", table.trim_end());
    if end < doc.len() {
        insert.push('\n');
    }
    if !doc[..end].ends_with("\n\n") {
        insert.insert(0, '\n');
    }
    doc.insert_str(end, &insert);
    std::fs::write(&path, doc).context("writing docs/BENCHMARKS.md")?;
    Ok(())
}
