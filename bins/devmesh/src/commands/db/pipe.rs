//! Running pg_dump and pg_restore with a progress bar: bytes that pass,
//! and tables restored out of the tables there are.

use std::{path::Path, process::Stdio};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    process::{Child, ChildStderr, Command},
};

use super::tools::restored_table;

/// A progress bar of bytes, with the tables restored as its message; it
/// draws on stderr only when that is a terminal.
pub fn bar(tables: usize, total_bytes: Option<u64>) -> ProgressBar {
    let bar = match total_bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {binary_bytes} {binary_bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(format!("tables 0/{tables}"));
    bar
}

/// Copies `from` to `to`, counting bytes on `bar`; closes `to` at the end.
pub async fn copy_counted<R, W>(mut from: R, mut to: W, bar: &ProgressBar) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        bar.inc(n as u64);
    }
}

/// Reads pg_restore's verbose stderr: each table whose data it loads
/// moves the bar's count; the other lines are kept for an error message.
pub async fn watch_restore(
    stderr: ChildStderr,
    tables: usize,
    bar: &ProgressBar,
) -> (usize, String) {
    let mut lines = BufReader::new(stderr).lines();
    let (mut done, mut said) = (0, String::new());
    while let Ok(Some(line)) = lines.next_line().await {
        if restored_table(&line).is_some() {
            done += 1;
            bar.set_message(format!("tables {done}/{}", tables.max(done)));
        } else if line.contains("error") || line.contains("warning") || line.contains("FATAL") {
            said.push_str(&line);
            said.push('\n');
        }
    }
    (done, said)
}

/// `pg_restore --no-owner --no-acl --verbose` into `into`, reading the
/// archive on its stdin.
pub fn pg_restore(into: &str, clean: bool) -> anyhow::Result<Child> {
    let mut cmd = Command::new("pg_restore");
    cmd.args(["--no-owner", "--no-acl", "--verbose", "-d", into]);
    if clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true)
        .spawn()
        .context("starting pg_restore (apt-get install postgresql-client)")
}

/// Waits for `child` named `tool`, failing with what it said.
pub async fn finish(mut child: Child, tool: &str, said: &str) -> anyhow::Result<()> {
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for {tool}"))?;
    if !status.success() {
        anyhow::bail!("{tool} failed ({status}): {}", said.trim());
    }
    Ok(())
}

/// Collects a child's stderr.
pub async fn read_all(stderr: Option<ChildStderr>) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = stderr {
        let _ = stderr.read_to_string(&mut text).await;
    }
    text
}

/// The size of `path`, for the bar of a restore from a file.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}
