//! The failover part of `cargo xtask bench`: a loop of GETs from four
//! clients runs through node B while one of the two providers of the
//! service (node A) is killed with SIGKILL; counts failed requests and the
//! slowest request, over many runs.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};

use crate::{
    node::{Daemon, Guard},
    run as run_cmd,
};

const CLIENTS: usize = 4;
const LOOP: Duration = Duration::from_secs(3);
const KILL_AFTER: Duration = Duration::from_secs(1);

/// One run's figures.
struct Run {
    requests: usize,
    failed: usize,
    served_by_killed: usize,
    worst: Duration,
    /// The slowest request that started within 100 ms before the kill or after it.
    worst_around_kill: Duration,
}

fn one_run(bin: &Path, dir: &Path, ports: (u16, u16)) -> anyhow::Result<Run> {
    let args = crate::node::loopback_args("failover");
    let mut a = Daemon::start(bin, &dir.join("a"), &args)?;
    let b = Daemon::start(bin, &dir.join("b"), &args)?;
    let c = Daemon::start(bin, &dir.join("c"), &args)?;
    for provider in [&a, &c] {
        let addr = provider.status()?["listen_addrs"][0]
            .as_str()
            .context("listen addr")?
            .to_owned();
        run_cmd(b.devmesh().args(["join", &addr]).stdout(Stdio::null()))?;
    }
    for (node, port) in [(&a, ports.0), (&c, ports.1)] {
        run_cmd(
            node.devmesh()
                .args(["run", "api", "--port", &port.to_string(), "--detach"])
                .stdout(Stdio::null()),
        )?;
    }
    let start = Instant::now();
    loop {
        let providers = b.status()?["services"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["name"] == "api").count());
        if providers == 2 {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("node B saw {providers} of 2 providers");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Clients stick to A, so requests are on their way to it when it dies.
    run_cmd(
        b.devmesh()
            .args(["route", "api", "--sticky"])
            .stdout(Stdio::null()),
    )?;
    let a_peer = a.status()?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    let proxy = b.proxy()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let proxy = proxy.clone();
            let cookie = format!("devmesh-api={a_peer}");
            runtime.spawn(async move { client(&proxy, &cookie, began).await })
        })
        .collect();
    std::thread::sleep(KILL_AFTER);
    // SIGKILL: no goodbye, no withdrawal.
    a.process.0.kill()?;
    let killed_at = began.elapsed();
    let _ = a.process.0.wait();
    let mut run = Run {
        requests: 0,
        failed: 0,
        served_by_killed: 0,
        worst: Duration::ZERO,
        worst_around_kill: Duration::ZERO,
    };
    for client in clients {
        let samples = runtime.block_on(client)??;
        for s in samples {
            run.requests += 1;
            if !s.ok {
                run.failed += 1;
            }
            if s.by_a {
                run.served_by_killed += 1;
            }
            run.worst = run.worst.max(s.took);
            if s.started + Duration::from_millis(100) >= killed_at {
                run.worst_around_kill = run.worst_around_kill.max(s.took);
            }
        }
    }
    drop((b, c));
    Ok(run)
}

struct Sample {
    started: Duration,
    took: Duration,
    ok: bool,
    by_a: bool,
}

async fn client(proxy: &str, cookie: &str, began: Instant) -> anyhow::Result<Vec<Sample>> {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut samples = Vec::new();
    let a_backend = "hello from a\n";
    while began.elapsed() < LOOP {
        let req = http::Request::get(format!("http://{proxy}/hello"))
            .header("host", "api.localhost")
            .header("cookie", cookie)
            .body(Empty::new())?;
        let started = began.elapsed();
        let t = Instant::now();
        let (ok, by_a) =
            match tokio::time::timeout(Duration::from_secs(10), http.request(req)).await {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(body) => (status.is_success(), body.to_bytes() == a_backend.as_bytes()),
                        Err(_) => (false, false),
                    }
                }
                _ => (false, false),
            };
        samples.push(Sample {
            started,
            took: t.elapsed(),
            ok,
            by_a,
        });
    }
    Ok(samples)
}

/// Runs the failover measurement `runs` times and writes its section.
pub fn section(md: &mut String, bin: &Path, runs: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let port_a = crate::bench::free_port()?;
    let port_c = crate::bench::free_port()?;
    let _backends = [
        Guard::spawn(
            Command::new(bin.join("devmesh-demo-backend"))
                .args([&port_a.to_string(), "a"])
                .stderr(Stdio::null()),
        )?,
        Guard::spawn(
            Command::new(bin.join("devmesh-demo-backend"))
                .args([&port_c.to_string(), "c"])
                .stderr(Stdio::null()),
        )?,
    ];
    let mut results = Vec::new();
    for i in 0..runs {
        let dir = tmp.path().join(format!("run{i}"));
        let r = one_run(bin, &dir, (port_a, port_c))?;
        eprintln!(
            "failover run {i}: {} requests, {} failed, {} served by A before it died, slowest {:.1} ms (around the kill {:.1} ms)",
            r.requests,
            r.failed,
            r.served_by_killed,
            r.worst.as_secs_f64() * 1e3,
            r.worst_around_kill.as_secs_f64() * 1e3
        );
        results.push(r);
    }
    let total: usize = results.iter().map(|r| r.requests).sum();
    let failed: usize = results.iter().map(|r| r.failed).sum();
    let runs_with_failures = results.iter().filter(|r| r.failed > 0).count();
    let mut worst: Vec<f64> = results
        .iter()
        .map(|r| r.worst_around_kill.as_secs_f64() * 1e3)
        .collect();
    worst.sort_by(f64::total_cmp);
    let overall = results
        .iter()
        .map(|r| r.worst.as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    writeln!(
        md,
        "\n## Failover ({runs} runs, {CLIENTS} clients looping GETs for {} s; provider A killed with SIGKILL after {} s)\n",
        LOOP.as_secs(),
        KILL_AFTER.as_secs()
    )?;
    writeln!(
        md,
        "Three release-built nodes per run: A and C provide `api`, B's front door serves the clients, which hold a sticky cookie for A, so requests are in flight to A when it dies. Target: no failed request, slowest request under 2 s.\n"
    )?;
    writeln!(md, "| figure | value |")?;
    writeln!(md, "|---|---|")?;
    writeln!(md, "| requests | {total} |")?;
    writeln!(
        md,
        "| failed requests | {failed} (in {runs_with_failures} of {runs} runs) |"
    )?;
    writeln!(
        md,
        "| slowest request around the kill, median of runs | {:.1} ms |",
        worst[worst.len() / 2]
    )?;
    writeln!(
        md,
        "| slowest request around the kill, worst run | {:.1} ms |",
        worst.last().copied().unwrap_or(0.0)
    )?;
    writeln!(md, "| slowest request of all runs | {overall:.1} ms |")?;
    Ok(())
}
