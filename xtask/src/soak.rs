//! `cargo xtask soak [--minutes N]`: mixed load through the remote route
//! for N minutes (10 by default): small GETs, WebSocket echo, streamed
//! uploads and downloads, and a service shared and stopped every few
//! seconds. Every 10 s it samples each daemon's resident memory and open
//! file descriptors; at the end it compares them with their level after the
//! first minute and fails when one grew more than 10% or a request failed.
//! It prints the section for docs/BENCHMARKS.md.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::{bench::free_port, node::Daemon, run as run_cmd};

/// Host of the soaked service on B's front door.
const HOST: &str = "bench.localhost";
const MIB: usize = 1 << 20;
/// The tolerated growth of RSS and descriptors after the first minute.
const GROWTH: f64 = 0.10;
/// The kinds of load, in the order of their tallies.
const KINDS: [&str; 5] = [
    "small GET",
    "WebSocket session",
    "64 MiB upload",
    "64 MiB download",
    "share and stop",
];

/// Successes and failures of one kind of load.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, result: anyhow::Result<()>, what: &str) {
        match result {
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("soak: {what} failed: {e:#}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Resident memory (KiB) and open descriptors of `pid`.
fn sample(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

type Http = Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
>;

fn request(
    proxy: &str,
    method: http::Method,
    path: &str,
    body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
) -> anyhow::Result<http::Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header(http::header::HOST, HOST)
        .body(body)?)
}

fn empty() -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// One GET, its body read and checked.
async fn small_get(client: &Http, proxy: &str) -> anyhow::Result<()> {
    let resp = client
        .request(request(proxy, http::Method::GET, "/hello", empty())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != 200 || !body.starts_with(b"hello from") {
        bail!("GET /hello: {status} {body:?}");
    }
    Ok(())
}

/// A 64 MiB download, every byte counted.
async fn download(client: &Http, proxy: &str) -> anyhow::Result<()> {
    let n = 64 * MIB;
    let resp = client
        .request(request(
            proxy,
            http::Method::GET,
            &format!("/bytes/{n}"),
            empty(),
        )?)
        .await?;
    if resp.status() != 200 {
        bail!("download: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            got += data.len();
        }
    }
    if got != n {
        bail!("download: {got} of {n} bytes");
    }
    Ok(())
}

/// A 64 MiB upload, streamed in 64 KiB chunks.
async fn upload(client: &Http, proxy: &str) -> anyhow::Result<()> {
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = futures::stream::iter(
        (0..1024).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let body = BodyExt::boxed(StreamBody::new(chunks));
    let resp = client
        .request(request(proxy, http::Method::POST, "/upload", body)?)
        .await?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    if status != 200 || !String::from_utf8_lossy(&text).contains(&(64 * MIB).to_string()) {
        bail!("upload: {status} {text:?}");
    }
    Ok(())
}

/// A WebSocket session of 100 echoed messages.
async fn websocket(proxy: &str) -> anyhow::Result<()> {
    let mut req = format!("ws://{proxy}/ws").into_client_request()?;
    req.headers_mut().insert(http::header::HOST, HOST.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    // The backend greets first.
    ws.next().await.context("no greeting")??;
    for i in 0..100 {
        let text = format!("soak {i}");
        ws.send(Message::text(text.clone())).await?;
        match ws.next().await.context("the echo ended")?? {
            Message::Text(echo) if echo.as_str() == text => {}
            other => bail!("websocket: {other:?} for {text:?}"),
        }
    }
    ws.close(None).await?;
    Ok(())
}

/// Runs the soak; the BENCHMARKS.md section.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let minutes: u64 = match args.iter().position(|a| a == "--minutes") {
        Some(i) => args
            .get(i + 1)
            .and_then(|m| m.parse().ok())
            .context("--minutes takes a number")?,
        None => 10,
    };
    let bin = crate::bench::bins()?;
    let tmp = tempfile::tempdir()?;
    let port = free_port()?;
    let _backend = crate::bench_observe::start_backend(&bin, port)?;
    let (a, b) = crate::bench_observe::pair(&bin, tmp.path(), "soak", port, &[])?;
    let proxy = b.proxy()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(soak(
        &a,
        &b,
        &proxy,
        port,
        Duration::from_secs(minutes * 60),
    ))?;
    print!("{report}");
    Ok(())
}

async fn soak(
    a: &Daemon,
    b: &Daemon,
    proxy: &str,
    port: u16,
    length: Duration,
) -> anyhow::Result<String> {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Vec<Tally>> = Arc::new(KINDS.iter().map(|_| Tally::default()).collect());
    let mut tasks = Vec::new();
    let spawn_loop = |kind: usize,
                      work: Arc<
        dyn Fn() -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync,
    >| {
        let (stop, tallies) = (stop.clone(), tallies.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = work().await;
                tallies[kind].count(result, KINDS[kind]);
            }
        })
    };
    for _ in 0..8 {
        let (client, proxy) = (client.clone(), proxy.to_owned());
        tasks.push(spawn_loop(
            0,
            Arc::new(move || {
                let (client, proxy) = (client.clone(), proxy.clone());
                Box::pin(async move { small_get(&client, &proxy).await })
            }),
        ));
    }
    for _ in 0..2 {
        let proxy = proxy.to_owned();
        tasks.push(spawn_loop(
            1,
            Arc::new(move || {
                let proxy = proxy.clone();
                Box::pin(async move { websocket(&proxy).await })
            }),
        ));
    }
    {
        let (client, proxy) = (client.clone(), proxy.to_owned());
        tasks.push(spawn_loop(
            2,
            Arc::new(move || {
                let (client, proxy) = (client.clone(), proxy.clone());
                Box::pin(async move { upload(&client, &proxy).await })
            }),
        ));
    }
    {
        let (client, proxy) = (client.clone(), proxy.to_owned());
        tasks.push(spawn_loop(
            3,
            Arc::new(move || {
                let (client, proxy) = (client.clone(), proxy.clone());
                Box::pin(async move { download(&client, &proxy).await })
            }),
        ));
    }
    // A service shared from A and stopped again, every 3 s.
    let churn = {
        let (stop, tallies) = (stop.clone(), tallies.clone());
        let devmesh = |args: Vec<String>| {
            let mut cmd = a.devmesh();
            cmd.args(args).stdout(Stdio::null());
            cmd
        };
        let mut run = devmesh(vec![
            "run".into(),
            "churn".into(),
            "--port".into(),
            port.to_string(),
            "--version".into(),
            "1.0.0".into(),
            "--detach".into(),
        ]);
        let mut stop_cmd = devmesh(vec!["stop".into(), "churn".into()]);
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                tallies[4].count(run_cmd(&mut run), "share and stop");
                std::thread::sleep(Duration::from_millis(1500));
                tallies[4].count(run_cmd(&mut stop_cmd), "share and stop");
                std::thread::sleep(Duration::from_millis(1500));
            }
        })
    };

    let pids = [a.process.pid(), b.process.pid()];
    let started = Instant::now();
    let mut samples: Vec<(Duration, [(u64, u64); 2])> = Vec::new();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = [sample(pids[0]), sample(pids[1])];
        eprintln!(
            "soak {:>4.0} s: A {} KiB {} fds, B {} KiB {} fds; ok/failed {:?}",
            started.elapsed().as_secs_f64(),
            now[0].0,
            now[0].1,
            now[1].0,
            now[1].1,
            tallies
                .iter()
                .map(|t| (
                    t.ok.load(Ordering::Relaxed),
                    t.failed.load(Ordering::Relaxed)
                ))
                .collect::<Vec<_>>()
        );
        samples.push((started.elapsed(), now));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let _ = churn.await;
    report(&samples, &tallies, length)
}

/// The section: load done, and RSS and descriptors after the first minute
/// against their level then.
fn report(
    samples: &[(Duration, [(u64, u64); 2])],
    tallies: &[Tally],
    length: Duration,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let base = samples
        .iter()
        .find(|(t, _)| *t >= Duration::from_secs(60))
        .or(samples.first())
        .context("no samples")?
        .1;
    let mut md = String::new();
    writeln!(
        md,
        "## Soak (`cargo xtask soak`, {} min through the remote route)\n\n\
         | load | completed | failed |\n|---|---|---|",
        length.as_secs() / 60
    )?;
    let mut failed = 0;
    for (kind, t) in KINDS.iter().zip(tallies) {
        let (ok, bad) = (
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
        );
        failed += bad;
        writeln!(md, "| {kind} | {ok} | {bad} |")?;
    }
    writeln!(
        md,
        "\n| daemon | RSS after 1 min | highest later | open fds after 1 min | highest later |\n|---|---|---|---|---|"
    )?;
    let mut grew = Vec::new();
    for (i, name) in ["A (provider)", "B (consumer)"].iter().enumerate() {
        let later = samples.iter().filter(|(t, _)| *t > Duration::from_secs(60));
        let (rss, fds) = later.fold((0, 0), |(r, f), (_, s)| (r.max(s[i].0), f.max(s[i].1)));
        writeln!(
            md,
            "| {name} | {:.1} MB | {:.1} MB | {} | {} |",
            base[i].0 as f64 * 1024.0 / 1e6,
            rss as f64 * 1024.0 / 1e6,
            base[i].1,
            fds
        )?;
        if rss as f64 > base[i].0 as f64 * (1.0 + GROWTH) {
            grew.push(format!("{name}'s RSS"));
        }
        if fds as f64 > base[i].1 as f64 * (1.0 + GROWTH) {
            grew.push(format!("{name}'s open descriptors"));
        }
    }
    md.push('\n');
    if failed > 0 || !grew.is_empty() {
        eprint!("{md}");
        bail!("soak failed: {failed} failed operations; grew more than 10%: {grew:?}");
    }
    Ok(md)
}
