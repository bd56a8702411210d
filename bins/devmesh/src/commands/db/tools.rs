//! The PostgreSQL client tools `devmesh db` runs, and the pure checks
//! around them: which major version a tool or a server is, whether the
//! tools can dump and restore it, and what pg_restore's verbose output
//! says about progress.

use std::process::Stdio;

use anyhow::Context as _;
use tokio::process::Command;

/// How a PostgreSQL server behind a listener is reached.
#[derive(Debug, Clone)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

impl Conn {
    /// The libpq flags of this connection, for psql and pg_dump.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            self.user.clone(),
        ]
    }
}

/// The major version in a tool's `--version` line:
/// `pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` is 15.
pub fn tool_major(line: &str) -> Option<u32> {
    let version = line.split(") ").nth(1)?.split_whitespace().next()?;
    version.split('.').next()?.parse().ok()
}

/// The major version of a `server_version_num`: 150014 is 15, 90624 is 9.
pub fn server_major(num: &str) -> Option<u32> {
    let n: u32 = num.trim().parse().ok()?;
    Some(n / 10_000)
}

/// Why the client tools cannot work with a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// pg_dump refuses servers newer than itself.
    DumpTooOld { dump: u32, server: u32 },
    /// pg_restore cannot read archives of a newer pg_dump.
    RestoreTooOld { restore: u32, dump: u32 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::DumpTooOld { dump, server } => write!(
                f,
                "pg_dump {dump} cannot dump a PostgreSQL {server} server (pg_dump refuses newer servers); install the client tools of version {server} or newer (apt-get install postgresql-client-{server}) and put them first in PATH"
            ),
            Mismatch::RestoreTooOld { restore, dump } => write!(
                f,
                "pg_restore {restore} cannot read a dump of pg_dump {dump}; use the pg_restore of the same installation as pg_dump (version {dump} or newer)"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Checks that pg_dump `dump` can dump server `server`, and, when a
/// restore follows, that pg_restore `restore` can read what it writes.
pub fn check_versions(dump: u32, server: u32, restore: Option<u32>) -> Result<(), Mismatch> {
    if dump < server {
        return Err(Mismatch::DumpTooOld { dump, server });
    }
    match restore {
        Some(restore) if restore < dump => Err(Mismatch::RestoreTooOld { restore, dump }),
        _ => Ok(()),
    }
}

/// The table a line of `pg_restore --verbose` starts loading:
/// `pg_restore: processing data for table "public.t"` names `public.t`.
pub fn restored_table(line: &str) -> Option<&str> {
    let rest = line.split("processing data for table ").nth(1)?;
    Some(rest.trim().trim_matches('"'))
}

/// Runs `tool --version` and returns its major version.
pub async fn installed_major(tool: &str) -> anyhow::Result<u32> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {tool} --version: is the PostgreSQL client installed (apt-get install postgresql-client)?"))?;
    let line = String::from_utf8_lossy(&out.stdout);
    tool_major(line.trim())
        .with_context(|| format!("{tool} --version printed {:?}, not a version", line.trim()))
}

/// Runs one query with psql against `conn` and returns its unaligned
/// output.
pub async fn query(conn: &Conn, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(conn.flags())
        .args(["-d", &conn.database, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running psql (apt-get install postgresql-client)")?;
    if !out.status.success() {
        anyhow::bail!(
            "psql on {}:{}: {}",
            conn.host,
            conn.port,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_tools_and_servers() {
        assert_eq!(
            tool_major("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(tool_major("pg_restore (PostgreSQL) 16.2"), Some(16));
        assert_eq!(tool_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(tool_major("command not found"), None);
        assert_eq!(server_major("150014\n"), Some(15));
        assert_eq!(server_major("170000"), Some(17));
        assert_eq!(server_major("90624"), Some(9));
        assert_eq!(server_major("fifteen"), None);
    }

    #[test]
    fn the_tools_must_be_as_new_as_the_server() {
        assert_eq!(check_versions(15, 15, Some(15)), Ok(()));
        assert_eq!(check_versions(16, 15, None), Ok(()));
        let old = check_versions(14, 15, Some(14)).unwrap_err();
        assert_eq!(
            old,
            Mismatch::DumpTooOld {
                dump: 14,
                server: 15
            }
        );
        let text = old.to_string();
        assert!(
            text.starts_with("pg_dump 14 cannot dump a PostgreSQL 15 server"),
            "{text}"
        );
        assert!(text.contains("postgresql-client-15"), "{text}");
        assert_eq!(
            check_versions(16, 15, Some(15)),
            Err(Mismatch::RestoreTooOld {
                restore: 15,
                dump: 16
            })
        );
    }

    #[test]
    fn restore_progress_lines() {
        assert_eq!(
            restored_table("pg_restore: processing data for table \"public.orders\""),
            Some("public.orders")
        );
        assert_eq!(
            restored_table("pg_restore: creating TABLE \"public.orders\""),
            None
        );
    }
}
