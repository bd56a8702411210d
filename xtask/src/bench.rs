//! `cargo xtask bench`: devmesh measured side by side with direct access,
//! in one run, alternating, medians. Writes docs/BENCHMARKS.md.

use std::{
    fmt::Write as _,
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    node::{Daemon, Guard},
    root, run as run_cmd,
};

const GIB: u64 = 1 << 30;

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// CPU time per request, µs: the load generator, the backend, the
    /// proxies (devmeshd A and B, nginx's workers), and the proxies' time
    /// in the kernel (part of the one before).
    pub(crate) cpu_us: [f64; 4],
}

/// Numeric fields of `/proc/<pid>/stat` (`pid` may be `self`), numbered
/// as in proc(5).
fn stat_fields(pid: &str, numbers: &[usize]) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    numbers
        .iter()
        .map(|n| rest.get(n - 3)?.parse().ok())
        .collect()
}

/// CPU time of `pids` so far in clock ticks: user + system (fields 14
/// and 15), or only system with `kernel`; a process that is gone counts 0.
pub(crate) fn cpu_ticks(pids: &[u32], kernel: bool) -> u64 {
    let fields: &[usize] = if kernel { &[15] } else { &[14, 15] };
    pids.iter()
        .filter_map(|pid| stat_fields(&pid.to_string(), fields))
        .map(|f| f.iter().sum::<u64>())
        .sum()
}

/// CPU time of this process's waited-for children so far (cutime +
/// cstime, fields 16 and 17), in clock ticks: the load generator's, around
/// one run of it.
fn children_ticks() -> u64 {
    stat_fields("self", &[16, 17]).map_or(0, |f| f.iter().sum())
}

/// Clock ticks per second of `/proc` times.
pub(crate) fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The processes whose CPU time a small-GET run accounts for.
pub(crate) struct Accounted {
    pub(crate) backend: Vec<u32>,
    pub(crate) proxies: Vec<u32>,
    pub(crate) ticks_per_sec: f64,
}

impl Accounted {
    fn sample(&self) -> [u64; 4] {
        [
            children_ticks(),
            cpu_ticks(&self.backend, false),
            cpu_ticks(&self.proxies, false),
            cpu_ticks(&self.proxies, true),
        ]
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

pub(crate) fn wrk(
    url: &str,
    host: Option<&str>,
    seconds: u32,
    acct: &Accounted,
) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let before = acct.sample();
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let after = acct.sample();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result = Wrk {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        cpu_us: [0.0; 4],
    };
    let mut requests = 0.0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => requests = n.parse().unwrap_or(0.0),
            ["Requests/sec:", n] => result.rps = n.parse().unwrap_or(0.0),
            ["50%", l] => result.p50_ms = parse_latency(l).unwrap_or(0.0),
            ["99%", l] => result.p99_ms = parse_latency(l).unwrap_or(0.0),
            _ => {}
        }
        if line.contains("Non-2xx") {
            bail!("wrk saw error responses for {url}:\n{text}");
        }
    }
    if result.rps == 0.0 {
        bail!(
            "wrk gave no result for {url}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if requests > 0.0 {
        for (i, cpu) in result.cpu_us.iter_mut().enumerate() {
            *cpu = (after[i] - before[i]) as f64 / acct.ticks_per_sec * 1e6 / requests;
        }
    }
    Ok(result)
}

/// Requests/s of small GETs with h2load (`-c32 -m1`, like wrk's 32
/// connections with one request each in flight), over HTTP/2 with prior
/// knowledge, or HTTP/1.1 with `h1`; `service` names the service with the
/// `X-DevMesh-Service` header (so every row routes the same way).
fn h2load(url: &str, service: Option<&str>, h1: bool, seconds: u32) -> anyhow::Result<f64> {
    let mut cmd = Command::new("h2load");
    cmd.args(["-t1", "-c32", "-m1", &format!("-D{seconds}")]);
    if h1 {
        cmd.arg("--h1");
    }
    if let Some(s) = service {
        cmd.args(["-H", &format!("x-devmesh-service: {s}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running h2load (apt-get install nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["finished", "in", _, n, "req/s,", ..] => rps = n.parse::<f64>().ok(),
            ["requests:", ..] if !line.contains(" 0 failed, 0 errored") => {
                bail!("h2load saw failed requests for {url}:\n{text}")
            }
            ["status", "codes:", ..] if !line.contains(" 0 4xx, 0 5xx") => {
                bail!("h2load saw error responses for {url}:\n{text}")
            }
            _ => {}
        }
    }
    rps.filter(|r| *r > 0.0).with_context(|| {
        format!(
            "h2load gave no result for {url}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A 1 GiB transfer with curl.
#[derive(Clone, Copy)]
enum Transfer<'a> {
    /// `GET /bytes/<1 GiB>` (the backend sends a Content-Length).
    Download,
    /// `curl -T <file>` of a 1 GiB file: a Content-Length, no chunking.
    UploadFile(&'a std::path::Path),
    /// `head -c <1 GiB> /dev/zero | curl -T -`: a chunked stream.
    UploadPipe,
}

/// Runs a 1 GiB transfer with curl; returns MB/s (10^6 bytes).
fn curl_transfer(url: &str, host: Option<&str>, transfer: Transfer<'_>) -> anyhow::Result<f64> {
    let host_arg = host.map(|h| format!("-H 'Host: {h}'")).unwrap_or_default();
    let script = match transfer {
        Transfer::Download => {
            format!("curl -sS --fail {host_arg} -o /dev/null {url}/bytes/{GIB}")
        }
        Transfer::UploadFile(file) => format!(
            "curl -sS --fail -T '{}' {host_arg} -o /dev/null {url}/upload",
            file.display()
        ),
        Transfer::UploadPipe => format!(
            "head -c {GIB} /dev/zero | curl -sS --fail -T - {host_arg} -o /dev/null {url}/upload"
        ),
    };
    let start = Instant::now();
    let out = Command::new("sh").args(["-c", &script]).output()?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(GIB as f64 / secs / 1e6)
}

/// Starts nginx proxying `listen` to `backend`, if nginx is installed.
fn start_nginx(dir: &std::path::Path, backend: u16, listen: u16) -> anyhow::Result<Option<Guard>> {
    if Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()?
        .stdout
        .is_empty()
    {
        eprintln!("nginx not installed: no reference row (apt-get install nginx-light)");
        return Ok(None);
    }
    let d = dir.display();
    let conf = format!(
        "worker_processes auto; pid {d}/nginx.pid; error_log {d}/nginx-error.log; daemon off;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/nginx-body; proxy_temp_path {d}/nginx-proxy;\n\
         upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}\n\
         server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let guard = Guard::spawn(
        Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .stderr(std::process::Stdio::null()),
    )?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        if start.elapsed() > Duration::from_secs(5) {
            bail!("nginx did not start; see {d}/nginx-error.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(guard))
}

/// Processes whose parent (field 4) is `pid`: nginx's workers.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_fields(&child.to_string(), &[4]) == Some(vec![u64::from(pid)]))
        .collect()
}

/// Writes the 1 GiB file the upload rows send (a byte pattern, so that
/// nothing along the way sees a sparse file or a run of zeros).
fn write_upload_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..GIB >> 20 {
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A part of the benchmark that writes its own markdown section.
type Section = fn(&mut String, &std::path::Path, bool) -> anyhow::Result<()>;

/// The directory of the binaries to measure: the release build, built
/// now; or, with `XTASK_BENCH_BINS=target/debug`, binaries built already,
/// for a quick look (the figures of docs/BENCHMARKS.md are the release's).
pub(crate) fn bins() -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("XTASK_BENCH_BINS") {
        return Ok(root().join(dir));
    }
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    run_cmd(
        cargo
            .current_dir(root())
            .args(["build", "--release", "--bins"]),
    )?;
    Ok(root().join("target/release"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    // The team-size part drives the daemons alone; the others need load tools.
    let tools: &[&str] = if args.iter().any(|a| a == "--scale") {
        &[]
    } else {
        &["wrk", "curl", "h2load"]
    };
    for tool in tools {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            let package = if *tool == "h2load" {
                "nghttp2-client"
            } else {
                tool
            };
            bail!("{tool} is needed: apt-get install {package}");
        }
    }
    let bin = bins()?;
    if let Some(i) = args.iter().position(|a| a == "--failover") {
        // Only the failover part, printed: `cargo xtask bench --failover [RUNS]`.
        let runs = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(20);
        let mut md = String::new();
        crate::failover::section(&mut md, &bin, runs)?;
        print!("{md}");
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--scale") {
        // Only the team-size part, printed: `cargo xtask bench --scale [N…]`.
        let sizes: Vec<usize> = args[i + 1..].iter().map_while(|a| a.parse().ok()).collect();
        let mut md = String::new();
        crate::bench_scale::section(&mut md, &bin, quick, &sizes)?;
        print!("{md}");
        return Ok(());
    }
    // Only one part, printed: `cargo xtask bench --tcp|--observe [--quick]`.
    let only: Option<Section> = if args.iter().any(|a| a == "--tcp") {
        Some(crate::bench_tcp::section)
    } else if args.iter().any(|a| a == "--observe") {
        Some(crate::bench_observe::section)
    } else {
        None
    };
    if let Some(section) = only {
        let mut md = String::new();
        section(&mut md, &bin, quick)?;
        print!("{md}");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let port = free_port()?;
    let backend = crate::bench_observe::start_backend(&bin, port)?;
    let (a, b) = crate::bench_observe::pair(&bin, tmp.path(), "bench", port, &[])?;
    // HTTPS on A's front door: its CA, made in its home (nothing is
    // installed anywhere; wrk does not verify certificates).
    run_cmd(
        a.devmesh()
            .args(["cert", "install"])
            .env("DEVMESH_CA_STORE_DIR", tmp.path().join("store"))
            .stdout(std::process::Stdio::null()),
    )?;
    // nginx as a reverse proxy to the same backend, for scale, when installed.
    let nginx_port = free_port()?;
    let nginx = start_nginx(tmp.path(), port, nginx_port)?;
    let direct = format!("http://127.0.0.1:{port}");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}");
    let local = format!("http://{}", a.proxy()?);
    let remote = format!("http://{}", b.proxy()?);
    // SNI `localhost` (wrk sends the URL's host), Host `bench.localhost`.
    let local_https = format!(
        "https://localhost:{}",
        a.proxy()?.rsplit_once(':').context("proxy port")?.1
    );
    let host = Some("bench.localhost");
    let mut routes: Vec<(&str, &str, Option<&str>)> = vec![
        ("direct", &direct, None),
        ("local route", &local, host),
        ("remote route", &remote, host),
        ("local route over HTTPS", &local_https, host),
    ];
    if nginx.is_some() {
        routes.push(("nginx reverse proxy (reference)", &nginx_url, None));
    }
    let n = routes.len();
    let mut proxies = vec![a.process.pid(), b.process.pid()];
    if let Some(nginx) = &nginx {
        proxies.extend(children_of(nginx.pid()));
    }
    let acct = Accounted {
        backend: vec![backend.pid()],
        proxies,
        ticks_per_sec: clock_ticks_per_sec(),
    };

    // Small GETs, alternating routes, medians.
    let (rounds, secs) = if quick { (1, 2) } else { (5, 4) };
    for (_, url, h) in &routes {
        wrk(&format!("{url}/hello"), *h, 1, &acct)?;
    }
    let mut small: Vec<Vec<Wrk>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..n {
            let i = (i + round) % n;
            let (name, url, h) = routes[i];
            let r = wrk(&format!("{url}/hello"), h, secs, &acct)?;
            eprintln!(
                "round {round}: {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                r.rps, r.p50_ms, r.p99_ms
            );
            small[i].push(r);
        }
    }
    let med = |i: usize, f: fn(&Wrk) -> f64| median(small[i].iter().map(f).collect());
    // Peak RSS of A and B in MB: over the small requests, then per transfer.
    let peaks = || -> anyhow::Result<[f64; 2]> {
        let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
        let p = [mb(a.peak_rss_kib()), mb(b.peak_rss_kib())];
        a.reset_peak_rss()?;
        b.reset_peak_rss()?;
        Ok(p)
    };
    let small_rss = peaks()?;

    // Bulk transfers, alternating direct and remote.
    let bulk_rounds = if quick { 1 } else { 3 };
    let upload_file = tmp.path().join("upload-1GiB");
    write_upload_file(&upload_file)?;
    let transfers = [
        Transfer::Download,
        Transfer::UploadFile(&upload_file),
        Transfer::UploadPipe,
    ];
    // [direct, remote] per transfer.
    let mut bulk: [[Vec<f64>; 2]; 3] = Default::default();
    let mut bulk_rss = [[0f64; 2]; 3];
    for round in 0..bulk_rounds {
        for (i, transfer) in transfers.iter().enumerate() {
            bulk[i][0].push(curl_transfer(&direct, None, *transfer)?);
            bulk[i][1].push(curl_transfer(&remote, host, *transfer)?);
            let [pa, pb] = peaks()?;
            bulk_rss[i] = [bulk_rss[i][0].max(pa), bulk_rss[i][1].max(pb)];
        }
        eprintln!(
            "round {round}: download direct {:.0} MB/s, remote {:.0} MB/s; upload of a file direct {:.0} MB/s, remote {:.0} MB/s; upload from a pipe direct {:.0} MB/s, remote {:.0} MB/s",
            bulk[0][0][round],
            bulk[0][1][round],
            bulk[1][0][round],
            bulk[1][1][round],
            bulk[2][0][round],
            bulk[2][1][round]
        );
    }
    std::fs::remove_file(&upload_file)?;
    let h2 = h2_rows(&bin, &a, &b, quick)?;
    let bulk_med: Vec<[f64; 2]> = bulk
        .iter()
        .map(|[d, r]| [median(d.clone()), median(r.clone())])
        .collect();

    let direct_rps = med(0, |w| w.rps);
    let mut md = String::new();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // The CPU, since figures of runs on different machines differ by more
    // than any change measured here.
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let field = |name: &str| {
                info.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            };
            let model = field("model name")?;
            Some(match field("cpu MHz") {
                Some(mhz) => format!(" ({model}, {mhz} MHz)"),
                None => format!(" ({model})"),
            })
        })
        .unwrap_or_default();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench`{} on {date}, commit `{commit}`, {cores} cores{cpu}.",
        if quick { " --quick" } else { "" }
    )?;
    writeln!(
        md,
        "Everything runs on this one machine over loopback: the backend (`devmesh-demo-backend`), two release-built"
    )?;
    writeln!(
        md,
        "`devmeshd` nodes A and B (TCP + Noise + Yamux between them), and the load generator, all sharing the same cores."
    )?;
    writeln!(
        md,
        "Routes are measured side by side in one run, alternating, and each figure is the median of the rounds.\n"
    )?;
    writeln!(
        md,
        "## Small GET requests (`wrk -t1 -c32`, {rounds} rounds of {secs} s, `/hello`, 15-byte body)\n"
    )?;
    writeln!(
        md,
        "| route | requests/s | ratio to direct | target | p50 latency | p99 latency | CPU µs/request: wrk | backend | proxy | of it in the kernel |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    let cpu = |i: usize, k: usize| median(small[i].iter().map(|w| w.cpu_us[k]).collect());
    for (i, (name, _, _)) in routes.iter().enumerate() {
        let rps = med(i, |w| w.rps);
        let target = match i {
            1 => "≥ 0.75",
            2 => "≥ 0.50",
            _ => "",
        };
        writeln!(
            md,
            "| {name} | {rps:.0} | {:.2} | {target} | {:.2} ms | {:.2} ms | {:.1} | {:.1} | {:.1} | {:.1} |",
            rps / direct_rps,
            med(i, |w| w.p50_ms),
            med(i, |w| w.p99_ms),
            cpu(i, 0),
            cpu(i, 1),
            cpu(i, 2),
            cpu(i, 3),
        )?;
    }
    // What a proxy may spend per request to reach a ratio when everything
    // shares the same cores: the direct route's CPU per request is what
    // the load generator and the backend need, and the rate of a route is
    // at most cores / its CPU per request.
    let direct_cpu = cpu(0, 0) + cpu(0, 1);
    writeln!(
        md,
        "\n- CPU µs/request: user + system CPU time of each process over the run (from `/proc`), divided by the requests wrk completed; proxy is devmeshd A + B, or nginx's workers, and the last column the part of the proxy's time spent in the kernel (system time: socket reads and writes, wake-ups). \
         All of it comes out of the same {cores} cores, so a route serves at most {cores} × 10⁶ / (its total µs per request) requests/s. \
         Direct needs {direct_cpu:.1} µs per request for wrk and the backend together; a route reaching a ratio r to direct, with the same cost for them and the cores as busy as in direct, may spend at most {direct_cpu:.1} × (1/r − 1) µs per request in proxies: {:.1} µs for 0.75, {:.1} µs for 0.50. \
         In this run devmeshd spent {:.1} µs per request on the local route ({:.1} of them in the kernel) and {:.1} µs (A + B, {:.1} in the kernel) on the remote route{}.",
        direct_cpu / 3.0,
        direct_cpu,
        cpu(1, 2),
        cpu(1, 3),
        cpu(2, 2),
        cpu(2, 3),
        match routes.iter().position(|r| r.0.starts_with("nginx")) {
            Some(i) => format!(
                "; nginx's workers {:.1} µs ({:.1} in the kernel)",
                cpu(i, 2),
                cpu(i, 3)
            ),
            None => String::new(),
        }
    )?;
    writeln!(
        md,
        "\n- direct: wrk to the backend itself; local route: through A's front door to the backend; remote route: through B's front door, a libp2p stream to A, then the backend."
    )?;
    writeln!(
        md,
        "- local route over HTTPS: the same as the local route, but TLS 1.3 to A's front door on the same port (certificate for `localhost` from A's CA, made by `devmesh cert install`); wrk keeps its 32 connections open, so this is the cost of TLS records, not of handshakes. HTTPS / plain HTTP on the local route: {:.2}.",
        med(3, |w| w.rps) / med(1, |w| w.rps)
    )?;
    if nginx.is_some() {
        writeln!(
            md,
            "- nginx reverse proxy: nginx (`worker_processes auto`, upstream keepalive) in front of the same backend, for scale only; its ratio shows what a plain local reverse proxy costs on this machine."
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "## 1 GiB transfers (curl, {bulk_rounds} rounds, MB = 10^6 bytes)\n"
    )?;
    writeln!(
        md,
        "| transfer | direct | remote route | target | peak RSS of A | peak RSS of B |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (i, name) in [
        "download (Content-Length)",
        "upload of a file (`curl -T file`, Content-Length)",
        "upload from a pipe (`head … | curl -T -`, chunked)",
    ]
    .iter()
    .enumerate()
    {
        writeln!(
            md,
            "| {name} | {:.0} MB/s | {:.0} MB/s | ≥ 400 MB/s | {:.1} MB | {:.1} MB |",
            bulk_med[i][0], bulk_med[i][1], bulk_rss[i][0], bulk_rss[i][1]
        )?;
    }
    let top = |n: usize| bulk_rss.iter().map(|r| r[n]).fold(small_rss[n], f64::max);
    writeln!(
        md,
        "\nPeak RSS (VmHWM, highest of the rounds; target: under 64 MB for each daemon): during the small requests above, A {:.1} MB and B {:.1} MB; highest of the whole run so far, A {:.1} MB and B {:.1} MB. A receives the uploads and B the downloads through the tunnel; what the receiving daemon holds is bounded by yamux's stream receive window (see `yamux_config` in mesh-core).",
        small_rss[0],
        small_rss[1],
        top(0),
        top(1)
    )?;
    h2_section(&mut md, &h2)?;
    drop((a, b, nginx));
    crate::failover::section(&mut md, &bin, if quick { 3 } else { 20 })?;
    crate::bench_observe::section(&mut md, &bin, quick)?;
    lab_section(&mut md, &bin, quick)?;
    crate::bench_tcp::section(&mut md, &bin, quick)?;
    // The long fuzzing run is measured once, by hand; keep it.
    if let Some(fuzzing) = crate::fuzz::kept_section() {
        writeln!(md, "\n{fuzzing}")?;
    }
    print!("{md}");
    if !quick {
        std::fs::write(root().join("docs/BENCHMARKS.md"), &md)?;
        eprintln!("wrote docs/BENCHMARKS.md");
    }
    Ok(())
}

/// Small-GET figures of HTTP/2 vs HTTP/1.1, each the median of its rounds.
struct H2Rows {
    rounds: usize,
    secs: u32,
    /// (client, backend, route, requests/s)
    rows: Vec<(&'static str, &'static str, &'static str, f64)>,
}

/// h2 vs h1 through the tunnel: one backend process that speaks HTTP/1.1
/// and h2c, shared by A twice (`bench-h1` as HTTP/1.1, `bench-h2` with
/// `--http2`), loaded through B's front door by h2load as an HTTP/1.1 and
/// as an HTTP/2 client; and the backend directly, for scale.
fn h2_rows(bin: &std::path::Path, a: &Daemon, b: &Daemon, quick: bool) -> anyhow::Result<H2Rows> {
    let port = free_port()?;
    let _backend = Guard::spawn(
        Command::new(bin.join("devmesh-demo-backend"))
            .args([&port.to_string(), "bench", "--h2"])
            .stderr(std::process::Stdio::null()),
    )?;
    for (service, extra) in [("bench-h1", None), ("bench-h2", Some("--http2"))] {
        let mut cmd = a.devmesh();
        cmd.args([
            "run",
            service,
            "--port",
            &port.to_string(),
            "--version",
            "1.0.0",
            "--detach",
        ]);
        cmd.args(extra);
        run_cmd(cmd.stdout(std::process::Stdio::null()))?;
    }
    let start = Instant::now();
    loop {
        let status = b.status()?;
        let seen = |name: &str| {
            status["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == name))
        };
        if seen("bench-h1") && seen("bench-h2") {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("node B never saw the bench-h1 and bench-h2 services");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let direct = format!("http://127.0.0.1:{port}/hello");
    let remote = format!("http://{}/hello", b.proxy()?);
    // (client, backend, route, url, service, h1 client)
    type Case<'a> = (
        &'static str,
        &'static str,
        &'static str,
        &'a str,
        Option<&'static str>,
        bool,
    );
    let cases: [Case<'_>; 6] = [
        ("HTTP/1.1", "HTTP/1.1", "direct", &direct, None, true),
        ("HTTP/2", "HTTP/2", "direct", &direct, None, false),
        (
            "HTTP/1.1",
            "HTTP/1.1",
            "remote route",
            &remote,
            Some("bench-h1"),
            true,
        ),
        (
            "HTTP/1.1",
            "HTTP/2",
            "remote route",
            &remote,
            Some("bench-h2"),
            true,
        ),
        (
            "HTTP/2",
            "HTTP/1.1",
            "remote route",
            &remote,
            Some("bench-h1"),
            false,
        ),
        (
            "HTTP/2",
            "HTTP/2",
            "remote route",
            &remote,
            Some("bench-h2"),
            false,
        ),
    ];
    let (rounds, secs) = if quick { (1, 2) } else { (3, 4) };
    for (_, _, _, url, service, h1) in &cases {
        h2load(url, *service, *h1, 1)?;
    }
    let mut figures: Vec<Vec<f64>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..cases.len() {
            let i = (i + round) % cases.len();
            let (client, backend, route, url, service, h1) = cases[i];
            let rps = h2load(url, service, h1, secs)?;
            eprintln!("round {round}: {route}, client {client}, backend {backend}: {rps:.0} req/s");
            figures[i].push(rps);
        }
    }
    Ok(H2Rows {
        rounds,
        secs,
        rows: cases
            .iter()
            .zip(figures)
            .map(|((client, backend, route, ..), f)| (*client, *backend, *route, median(f)))
            .collect(),
    })
}

fn h2_section(md: &mut String, h2: &H2Rows) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n## HTTP/2 vs HTTP/1.1 through the tunnel (`h2load -t1 -c32 -m1`, {} rounds of {} s, `/hello`)\n",
        h2.rounds, h2.secs
    )?;
    writeln!(
        md,
        "One backend process speaking HTTP/1.1 and h2c, shared by A twice: as HTTP/1.1 and with `--http2`. The client is h2load in both modes (`--h1` for HTTP/1.1), 32 connections with one request each in flight, routed by `X-DevMesh-Service`. Through the remote route every HTTP/2 row shares one HTTP/2 connection (one tunnel stream) between B and the backend; HTTP/1.1 rows use one tunnel stream per front-door connection.\n"
    )?;
    writeln!(
        md,
        "| route | client → front door | → backend | requests/s |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for (client, backend, route, rps) in &h2.rows {
        writeln!(md, "| {route} | {client} | {backend} | {rps:.0} |")?;
    }
    Ok(())
}

/// The NAT lab part: joining, hole punching and relayed vs direct bulk.
fn lab_section(md: &mut String, bin: &std::path::Path, quick: bool) -> anyhow::Result<()> {
    use crate::netlab::{measure, median_duration};
    writeln!(md, "\n## NAT lab (`cargo xtask netlab`)\n")?;
    if let Err(reason) = devmesh_netlab::Lab::available() {
        eprintln!("NAT lab skipped: {reason}");
        writeln!(md, "Not measured in this run: {reason}.")?;
        return Ok(());
    }
    let (runs, bulk_rounds, bulk_mib) = if quick { (2, 1, 128) } else { (10, 3, 512) };
    let f = measure(bin, runs, bulk_rounds, bulk_mib)?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let worst = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    writeln!(
        md,
        "Network namespaces on this machine: a relay (`devmeshd --relay`) on the \"internet\" (203.0.113.0/24), members in home LANs (198.18.x.0/24) behind Linux NAT routers (MASQUERADE, unsolicited inbound dropped). Member A shares a service; a fresh member B joins {runs} times in each of the three settings below. This kernel has no netem: the 40 ms latency comes from the lab's NFQUEUE delay line on each router's way out.\n"
    )?;
    writeln!(
        md,
        "| from `devmesh join` to first response | median | worst | target |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    writeln!(
        md,
        "| through the relay/bootstrap, both behind endpoint-independent NATs | {:.0} ms | {:.0} ms | < 3 s |",
        ms(median_duration(f.join_bootstrap.clone())),
        ms(worst(&f.join_bootstrap))
    )?;
    writeln!(
        md,
        "| same, 40 ms added on each router | {:.0} ms | {:.0} ms | < 3 s |",
        ms(median_duration(f.join_bootstrap_latency.clone())),
        ms(worst(&f.join_bootstrap_latency))
    )?;
    writeln!(
        md,
        "| mDNS on one LAN (from launching B's daemon; no join needed) | {:.0} ms | {:.0} ms | < 1 s |",
        ms(median_duration(f.join_mdns.clone())),
        ms(worst(&f.join_mdns))
    )?;
    writeln!(
        md,
        "\nFrom the first relayed connection to a direct one (hole punching), over the {} joins through the relay (both NAT settings): median {:.0} ms, worst {:.0} ms; {} of {} joins were still relayed 10 s later.",
        2 * runs,
        ms(median_duration(f.relayed_to_direct.clone())),
        ms(worst(&f.relayed_to_direct)),
        f.never_direct,
        2 * runs
    )?;
    writeln!(
        md,
        "(Times from B's log: its relayed connection to A, then the direct one; 0 ms when the first connection was already direct.)\n"
    )?;
    writeln!(
        md,
        "| {} MiB download from A's service through B | median | rounds |",
        f.bulk_mib
    )?;
    writeln!(md, "|---|---|---|")?;
    let mbs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        md,
        "| relayed (both NATs port-randomising, so no hole punch) | {:.0} MB/s | {} |",
        median(f.bulk_relayed.clone()),
        mbs(&f.bulk_relayed)
    )?;
    writeln!(
        md,
        "| direct (after hole punching) | {:.0} MB/s | {} |",
        median(f.bulk_direct.clone()),
        mbs(&f.bulk_direct)
    )?;
    // `cargo xtask netlab --cases` writes its own part; keep it.
    if let Some(cases) = crate::netlab::kept_cases_section() {
        writeln!(md, "\n{cases}")?;
    }
    Ok(())
}
