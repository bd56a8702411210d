//! The TCP-service part of `cargo xtask bench` (`cargo xtask bench --tcp`
//! runs only it): a PostgreSQL and a byte sink shared by node A as TCP
//! services and used through node B's loopback listeners, side by side
//! with direct connections, alternating, medians. Rows: pgbench
//! select-only with 8 clients, raw TCP bulk upload, and a 1 GiB COPY in
//! and out with the peak RSS of both daemons.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench::{free_port, median},
    node::{Daemon, Guard},
    run as run_cmd,
};

const MIB: u64 = 1 << 20;

/// PostgreSQL's server programs (Debian's layout).
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// `program` run as the `postgres` user when we are root (the server
/// refuses root), by `setpriv`.
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
        .arg(program);
    cmd
}

/// A throwaway cluster in `dir` on `port` (fsync off), started.
fn start_postgres(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Guard> {
    run_cmd(Command::new("chown").args(["postgres:postgres"]).arg(dir))?;
    let data = dir.join("data");
    run_cmd(
        as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null()),
    )?;
    let server = Guard::spawn(
        as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=50"])
            .stderr(Stdio::null()),
    )?;
    let start = Instant::now();
    while !psql(port, "SELECT 1").is_ok_and(|o| o.status.success()) {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("postgres did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

fn psql(port: u16, sql: &str) -> std::io::Result<std::process::Output> {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql])
        .output()
}

fn psql_ok(port: u16, sql: &str) -> anyhow::Result<()> {
    let out = psql(port, sql).context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// TPS of `pgbench -S` with 8 clients for `secs` against `port`.
fn pgbench(port: u16, secs: u32) -> anyhow::Result<f64> {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &port.to_string()])
        .args([
            "-S",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "postgres",
        ])
        .output()
        .context("running pgbench (apt-get install postgresql-contrib)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{text}"))
}

/// A sink: each connection is read to its end, then closed.
fn start_sink() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    Ok(port)
}

/// MB/s of sending `bytes` to the sink at `port` and seeing it close (so
/// the half-close went through and everything was read).
fn upload(port: u16, bytes: u64) -> anyhow::Result<f64> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    let buf = vec![0x5au8; 256 * 1024];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        tcp.write_all(&buf[..n])?;
        left -= n as u64;
    }
    tcp.shutdown(std::net::Shutdown::Write)?;
    let mut rest = [0u8; 16];
    while tcp.read(&mut rest)? > 0 {}
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Shares `name` on `port` from `a` as TCP and has `b` listen for it;
/// returns B's listener port.
fn share(a: &Daemon, b: &Daemon, name: &str, port: u16) -> anyhow::Result<u16> {
    run_cmd(
        a.devmesh()
            .args([
                "run",
                name,
                "--tcp",
                "--port",
                &port.to_string(),
                "--detach",
            ])
            .stdout(Stdio::null()),
    )?;
    let listen = free_port()?;
    let start = Instant::now();
    loop {
        let out = b
            .devmesh()
            .args(["connect", name, "--port", &listen.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if out.success() {
            return Ok(listen);
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("node B never listened for {name}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds to COPY `file` into a fresh table and back out to `out`, with
/// the output checked to be the same size.
fn copy_round_trip(port: u16, file: &Path, out: &Path) -> anyhow::Result<(f64, f64)> {
    psql_ok(
        port,
        "DROP TABLE IF EXISTS bulk; CREATE TABLE bulk (line text)",
    )?;
    let started = Instant::now();
    psql_ok(port, &format!("\\copy bulk FROM '{}'", file.display()))?;
    let copy_in = started.elapsed().as_secs_f64();
    let started = Instant::now();
    psql_ok(port, &format!("\\copy bulk TO '{}'", out.display()))?;
    let copy_out = started.elapsed().as_secs_f64();
    if std::fs::metadata(out)?.len() != std::fs::metadata(file)?.len() {
        bail!("COPY out through port {port} is not the size that went in");
    }
    Ok((copy_in, copy_out))
}

/// Lines of text totalling `bytes`, for COPY.
fn write_copy_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0;
    let mut i = 0u64;
    while written < bytes {
        let line = format!("{i:016x}{:0>110}\n", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        file.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    file.flush()?;
    Ok(())
}

/// Appends the TCP section to `md`.
pub fn section(md: &mut String, bin: &Path, quick: bool) -> anyhow::Result<()> {
    writeln!(md, "\n## TCP services (PostgreSQL, raw bytes)\n")?;
    let Some(pg) = pg_bin() else {
        writeln!(
            md,
            "Skipped: PostgreSQL is not installed (apt-get install postgresql postgresql-contrib)."
        )?;
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let pg_port = free_port()?;
    let _postgres = start_postgres(&pg, tmp.path(), pg_port)?;
    let sink = start_sink()?;
    let args = crate::node::loopback_args("bench-tcp");
    let a = Daemon::start(bin, &tmp.path().join("a"), &args)?;
    let b = Daemon::start(bin, &tmp.path().join("b"), &args)?;
    let a_addr = a.status()?["listen_addrs"][0]
        .as_str()
        .context("listen addr")?
        .to_owned();
    run_cmd(b.devmesh().args(["join", &a_addr]).stdout(Stdio::null()))?;
    let db = share(&a, &b, "db", pg_port)?;
    let bulk = share(&a, &b, "bulk", sink)?;

    let (rounds, secs, bulk_bytes, copy_bytes) = if quick {
        (1, 3, 256 * MIB, 64 * MIB)
    } else {
        (3, 10, 1024 * MIB, 1024 * MIB)
    };
    run_cmd(
        Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &pg_port.to_string(),
            ])
            .args(["-i", "-q", "-s", "10", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let (mut tps, mut mbs) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..rounds {
        for (i, port) in [pg_port, db].into_iter().enumerate() {
            tps[i].push(pgbench(port, secs)?);
        }
        for (i, port) in [sink, bulk].into_iter().enumerate() {
            mbs[i].push(upload(port, bulk_bytes)?);
        }
        eprintln!(
            "tcp round {round}: pgbench -S direct {:.0} tps, remote {:.0} tps; bulk direct {:.0} MB/s, remote {:.0} MB/s",
            tps[0][round], tps[1][round], mbs[0][round], mbs[1][round]
        );
    }
    let copy_file = tmp.path().join("copy-in.txt");
    let copy_out = tmp.path().join("copy-out.txt");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    write_copy_file(&copy_file, copy_bytes)?;
    let direct_copy = copy_round_trip(pg_port, &copy_file, &copy_out)?;
    a.reset_peak_rss()?;
    b.reset_peak_rss()?;
    let remote_copy = copy_round_trip(db, &copy_file, &copy_out)?;
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let (rss_a, rss_b) = (mb(a.peak_rss_kib()), mb(b.peak_rss_kib()));

    let figures = Figures {
        postgres: pg
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned(),
        rounds,
        secs,
        bulk_mib: bulk_bytes / MIB,
        copy_mib: copy_bytes / MIB,
        tps: [median(tps[0].clone()), median(tps[1].clone())],
        mbs: [median(mbs[0].clone()), median(mbs[1].clone())],
        copy: [direct_copy, remote_copy],
        rss: [rss_a, rss_b],
    };
    write_rows(md, &figures)?;
    Ok(())
}

/// What [`section`] measured: `[direct, remote]` pairs.
struct Figures {
    postgres: String,
    rounds: usize,
    secs: u32,
    bulk_mib: u64,
    copy_mib: u64,
    tps: [f64; 2],
    mbs: [f64; 2],
    /// (COPY in, COPY out) seconds.
    copy: [(f64, f64); 2],
    /// Peak RSS of A and B, MB.
    rss: [f64; 2],
}

/// The section's table and RSS line.
fn write_rows(md: &mut String, f: &Figures) -> anyhow::Result<()> {
    writeln!(
        md,
        "PostgreSQL {} and a byte sink on this machine, shared by node A as TCP services, used through node B's loopback listeners (`/devmesh/tcp/1` over TCP + Noise + Yamux) or directly; {} alternating rounds, medians.\n",
        f.postgres, f.rounds
    )?;
    writeln!(
        md,
        "| row | direct | through devmesh (remote) | remote / direct |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    let rows = [
        (
            format!("pgbench -S, 8 clients, {} s, TPS", f.secs),
            f.tps,
            0,
        ),
        (
            format!("raw TCP upload of {} MiB, MB/s", f.bulk_mib),
            f.mbs,
            0,
        ),
        (
            format!("COPY {} MiB in, s", f.copy_mib),
            [f.copy[0].0, f.copy[1].0],
            1,
        ),
        (
            format!("COPY {} MiB out, s", f.copy_mib),
            [f.copy[0].1, f.copy[1].1],
            1,
        ),
    ];
    for (name, [direct, remote], decimals) in rows {
        writeln!(
            md,
            "| {name} | {direct:.decimals$} | {remote:.decimals$} | {:.2} |",
            remote / direct
        )?;
    }
    writeln!(
        md,
        "\nPeak RSS (VmHWM) during the remote COPY in and out: A (provider) {:.1} MB, B (listener) {:.1} MB.",
        f.rss[0], f.rss[1]
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_both_sides_and_the_ratio() {
        let mut md = String::new();
        let figures = Figures {
            postgres: "15".into(),
            rounds: 3,
            secs: 10,
            bulk_mib: 1024,
            copy_mib: 1024,
            tps: [36447.0, 14815.0],
            mbs: [3416.0, 445.0],
            copy: [(8.1, 3.7), (8.7, 7.4)],
            rss: [26.1, 22.1],
        };
        write_rows(&mut md, &figures).unwrap();
        assert!(
            md.contains("| pgbench -S, 8 clients, 10 s, TPS | 36447 | 14815 | 0.41 |"),
            "{md}"
        );
        assert!(
            md.contains("| raw TCP upload of 1024 MiB, MB/s | 3416 | 445 | 0.13 |"),
            "{md}"
        );
        assert!(
            md.contains("| COPY 1024 MiB out, s | 3.7 | 7.4 | 2.00 |"),
            "{md}"
        );
        assert!(
            md.contains("A (provider) 26.1 MB, B (listener) 22.1 MB."),
            "{md}"
        );
    }
}
