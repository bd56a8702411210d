//! The cost of observability: the local and remote routes with metrics
//! only, with metrics and the inspector (the default), and with those,
//! the request log (to a file) and trace export (to an OTLP sink) on,
//! measured side by side, alternating, against the same routes with
//! metrics and the inspector off and no log or export. `cargo xtask bench --observe` runs
//! only these rows.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench::{Accounted, Wrk, clock_ticks_per_sec, free_port, median, wrk},
    node::{Daemon, Guard},
    run as run_cmd,
};

/// An OTLP/HTTP sink on loopback: reads each export request whole and
/// answers 200, on a thread that ends with the process.
fn otlp_sink() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/v1/traces", listener.local_addr()?);
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let mut reader = BufReader::new(tcp);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        }
    });
    Ok(url)
}

/// A pair of nodes with homes `<home>/a` and `<home>/b`, B joined to A, A
/// sharing `bench` on `port`, in namespace `namespace`, started with
/// `extra` arguments.
pub(crate) fn pair(
    bin: &Path,
    home: &Path,
    namespace: &'static str,
    port: u16,
    extra: &[&str],
) -> anyhow::Result<(Daemon, Daemon)> {
    let mut args = crate::node::loopback_args(namespace);
    args.extend_from_slice(extra);
    let a = Daemon::start(bin, &home.join("a"), &args)?;
    let b = Daemon::start(bin, &home.join("b"), &args)?;
    let a_addr = a.status()?["listen_addrs"][0]
        .as_str()
        .context("listen addr")?
        .to_owned();
    let quiet = std::process::Stdio::null;
    run_cmd(b.devmesh().args(["join", &a_addr]).stdout(quiet()))?;
    let port = port.to_string();
    let share = [
        "run",
        "bench",
        "--port",
        &port,
        "--version",
        "1.0.0",
        "--detach",
    ];
    run_cmd(a.devmesh().args(share).stdout(quiet()))?;
    let start = Instant::now();
    while b.status()?["services"]
        .as_array()
        .is_none_or(|s| s.is_empty())
    {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("node B never saw the bench service (namespace {namespace})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((a, b))
}

/// The benchmark's backend (`devmesh-demo-backend`, service name `bench`)
/// on `port`.
pub(crate) fn start_backend(bin: &Path, port: u16) -> anyhow::Result<Guard> {
    Guard::spawn(
        Command::new(bin.join("devmesh-demo-backend"))
            .args([&port.to_string(), "bench"])
            .stderr(std::process::Stdio::null()),
    )
}

/// Writes the "cost of observability" section.
pub fn section(md: &mut String, bin: &Path, quick: bool) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let port = free_port()?;
    let backend = start_backend(bin, port)?;
    let otlp = otlp_sink()?;
    let log = tmp.path().join("requests.log");
    let log_arg = log.display().to_string();
    let all = ["--request-log", &log_arg, "--otlp", &otlp];
    let off = ["--metrics", "off", "--inspect", "off"];
    let metrics = ["--inspect", "off"];
    let (a_off, b_off) = pair(bin, &tmp.path().join("off"), "bench-off", port, &off)?;
    let (a_m, b_m) = pair(
        bin,
        &tmp.path().join("metrics"),
        "bench-metrics",
        port,
        &metrics,
    )?;
    let (a_d, b_d) = pair(bin, &tmp.path().join("default"), "bench-default", port, &[])?;
    let (a_all, b_all) = pair(bin, &tmp.path().join("all"), "bench-all", port, &all)?;
    let nodes = [&a_off, &a_m, &a_d, &a_all, &b_off, &b_m, &b_d, &b_all];
    let urls: Vec<String> = nodes
        .iter()
        .map(|d| Ok(format!("http://{}/hello", d.proxy()?)))
        .collect::<anyhow::Result<_>>()?;
    let names = [
        "local, off",
        "local, metrics",
        "local, metrics + inspector",
        "local, all",
        "remote, off",
        "remote, metrics",
        "remote, metrics + inspector",
        "remote, all",
    ];
    let acct = Accounted {
        backend: vec![backend.pid()],
        proxies: nodes.iter().map(|d| d.process.pid()).collect(),
        ticks_per_sec: clock_ticks_per_sec(),
    };
    let host = Some("bench.localhost");
    let (rounds, secs) = if quick { (1, 2) } else { (5, 4) };
    for url in &urls {
        wrk(url, host, 1, &acct)?;
    }
    let mut runs: Vec<Vec<Wrk>> = (0..urls.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..urls.len() {
            let i = (k + round) % urls.len();
            let r = wrk(&urls[i], host, secs, &acct)?;
            eprintln!(
                "round {round}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                names[i], r.rps, r.p50_ms, r.p99_ms
            );
            runs[i].push(r);
        }
    }
    let med = |i: usize, f: fn(&Wrk) -> f64| median(runs[i].iter().map(f).collect());
    let logged = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    writeln!(
        md,
        "\n## Cost of observability (`wrk -t1 -c32`, {rounds} rounds of {secs} s, `/hello`)\n"
    )?;
    writeln!(
        md,
        "| route | off: requests/s | metrics: requests/s | / off | metrics + inspector (default): requests/s | / off | all (+ log + traces): requests/s | / off | target | p50 off / metrics / default / all |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (route, first) in [("local route", 0), ("remote route", 4)] {
        let rps = |i: usize| med(first + i, |w| w.rps);
        let p50 = |i: usize| med(first + i, |w| w.p50_ms);
        writeln!(
            md,
            "| {route} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | ≥ 0.95 | {:.2} / {:.2} / {:.2} / {:.2} ms |",
            rps(0),
            rps(1),
            rps(1) / rps(0),
            rps(2),
            rps(2) / rps(0),
            rps(3),
            rps(3) / rps(0),
            p50(0),
            p50(1),
            p50(2),
            p50(3),
        )?;
    }
    writeln!(
        md,
        "\n- off: `devmeshd --metrics off --inspect off`, no request log, no trace export (requests still carry trace context and `X-DevMesh-Trace-Id`). \
         metrics: metrics counted (`--inspect off`). metrics + inspector: the default, also every request captured on both ends (headers, 64 KiB body prefixes) in the inspector's buffer. all: also one JSON line per request to a file (`--request-log`; {logged} lines written in this run) and every client and server span exported (`--otlp`) to a sink on loopback that reads and discards them. \
         Four pairs of nodes in their own namespaces share the one backend; the eight routes alternate, and all of it shares the machine's cores with wrk and the backend."
    )?;
    drop((a_off, b_off, a_m, b_m, a_d, b_d, a_all, b_all, backend));
    Ok(())
}
