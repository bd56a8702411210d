//! `devmesh db`: PostgreSQL services of the mesh, cloned, dumped and
//! restored with the PostgreSQL client tools through this node's loopback
//! listener of the service (`devmesh connect`).

mod pipe;
mod tools;

use std::{path::PathBuf, process::Stdio};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mesh_control::{ListenerStatus, Request, Status};
use tokio::process::Command;

use self::tools::Conn;
use crate::{Failure, daemon, output};

/// `devmesh db <action>`.
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Copy a teammate's PostgreSQL into a local database, through the mesh
    /// (pg_dump, then pg_restore --no-owner --no-acl)
    Clone(CloneArgs),
    /// Dump a teammate's PostgreSQL to a file (pg_dump's custom format)
    Snapshot(SnapshotArgs),
    /// Restore a dump file into a local database (--no-owner --no-acl)
    Restore(RestoreArgs),
    /// Every TCP service of the mesh: version, provider, local listener
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// The database to read, behind this node's listener of `service`.
#[derive(Debug, Args)]
pub struct Source {
    /// The TCP service that is a PostgreSQL server
    pub service: String,
    /// Database to read on it
    #[arg(long, default_value = "postgres")]
    pub database: String,
    /// PostgreSQL user to read as
    #[arg(long, default_value = "postgres")]
    pub user: String,
    /// Only the schema, no rows
    #[arg(long)]
    pub schema_only: bool,
    /// Only this table (repeat for several)
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
}

/// `devmesh db clone`.
#[derive(Debug, Args)]
pub struct CloneArgs {
    #[command(flatten)]
    pub source: Source,
    /// Where to restore, a libpq URL such as postgres://localhost/app_dev
    /// [default: a database named like the service, made with createdb]
    #[arg(long)]
    pub into: Option<String>,
    /// Drop the objects that exist in the target first
    #[arg(long)]
    pub clean: bool,
}

/// `devmesh db snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub source: Source,
    /// File to write
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `devmesh db restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A dump of `devmesh db snapshot` (or pg_dump -Fc)
    pub file: PathBuf,
    /// Where to restore, a libpq URL such as postgres://localhost/app_dev
    #[arg(long)]
    pub into: String,
    /// Drop the objects that exist in the target first
    #[arg(long)]
    pub clean: bool,
}

/// Runs `devmesh db <action>`.
pub async fn db(home: &std::path::Path, action: DbAction) -> Result<(), Failure> {
    match action {
        DbAction::Status { json } => status(home, json).await,
        DbAction::Clone(args) => clone(home, args).await,
        DbAction::Snapshot(args) => snapshot(home, args).await,
        DbAction::Restore(args) => restore(args).await,
    }
}

/// `devmesh db status`: the TCP services, with this node's listeners.
async fn status(home: &std::path::Path, json: bool) -> Result<(), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    let services: Vec<_> = status
        .services
        .into_iter()
        .filter(|s| s.protocol == "tcp")
        .collect();
    output::emit(json, &services, |services| {
        if services.is_empty() {
            println!(
                "no TCP services on the mesh: share one with `devmesh run <name> --tcp --port <port>`"
            );
        }
        for s in services {
            let reach = match (&s.listen, s.port) {
                (Some(listen), _) => listen.clone(),
                (None, Some(port)) => format!("127.0.0.1:{port} (this node)"),
                (None, None) => "(no listener: devmesh connect)".into(),
            };
            println!(
                "{}  {}  {}  {}  {reach}",
                s.name, s.version, s.provider, s.route
            );
        }
    });
    Ok(())
}

/// The source database behind this node's listener of its service, and
/// its major version.
async fn source_conn(home: &std::path::Path, source: &Source) -> Result<(Conn, u32), Failure> {
    let mut client = daemon::connect_or_start(home).await?;
    let status: Status = client.call_as(&Request::Status).await?;
    let listener: Option<&ListenerStatus> = status
        .listeners
        .iter()
        .find(|l| l.service == source.service);
    let local = status
        .services
        .iter()
        .find(|s| s.name == source.service && s.port.is_some());
    let addr = match (listener.and_then(|l| l.listen.clone()), local) {
        (Some(listen), _) => listen,
        (None, Some(local)) => format!("127.0.0.1:{}", local.port.unwrap_or_default()),
        (None, None) => {
            let why = listener.and_then(|l| l.problem.clone()).unwrap_or_else(|| {
                format!("{} is not a TCP service this node knows", source.service)
            });
            return Err(Failure::failed(anyhow::anyhow!(
                "no listener for {}: {why}; see `devmesh db status`, or `devmesh connect {} --port <port>`",
                source.service,
                source.service
            )));
        }
    };
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
        .with_context(|| format!("listener address {addr:?}"))?;
    let conn = Conn {
        host,
        port,
        user: source.user.clone(),
        database: source.database.clone(),
    };
    let num = tools::query(&conn, "SHOW server_version_num")
        .await
        .with_context(|| format!("asking {} for its version", source.service))?;
    let major = tools::server_major(&num)
        .with_context(|| format!("{} answered server_version_num {num:?}", source.service))?;
    Ok((conn, major))
}

/// pg_dump of `source` on `conn`, its archive on stdout.
fn pg_dump(conn: &Conn, source: &Source) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = Command::new("pg_dump");
    cmd.args(["-Fc", "--no-owner", "--no-acl"])
        .args(conn.flags());
    if source.schema_only {
        cmd.arg("--schema-only");
    }
    for table in &source.tables {
        cmd.args(["-t", table]);
    }
    cmd.arg(&conn.database)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting pg_dump (apt-get install postgresql-client)")
}

/// How many tables the dump has: those asked for, or every user table.
async fn table_count(conn: &Conn, source: &Source) -> usize {
    if !source.tables.is_empty() || source.schema_only {
        return if source.schema_only {
            0
        } else {
            source.tables.len()
        };
    }
    let sql = "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')";
    tools::query(conn, sql)
        .await
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `devmesh db clone`: pg_dump through the listener piped into pg_restore.
async fn clone(home: &std::path::Path, args: CloneArgs) -> Result<(), Failure> {
    let (conn, server) = source_conn(home, &args.source).await?;
    let dump = tools::installed_major("pg_dump").await?;
    let restore = tools::installed_major("pg_restore").await?;
    tools::check_versions(dump, server, Some(restore)).map_err(Failure::failed)?;
    let into = match args.into {
        Some(into) => into,
        None => create_default(&args.source.service).await?,
    };
    let tables = table_count(&conn, &args.source).await;
    let bar = pipe::bar(tables, None);
    let mut dumper = pg_dump(&conn, &args.source)?;
    let mut restorer = pipe::pg_restore(&into, args.clean)?;
    let (from, to) = (
        dumper.stdout.take().context("pg_dump's stdout")?,
        restorer.stdin.take().context("pg_restore's stdin")?,
    );
    let restore_err = restorer.stderr.take().context("pg_restore's stderr")?;
    let dump_err = dumper.stderr.take();
    let (copied, (restored, restore_said), dump_said) = tokio::join!(
        pipe::copy_counted(from, to, &bar),
        pipe::watch_restore(restore_err, tables, &bar),
        pipe::read_all(dump_err),
    );
    bar.finish_and_clear();
    pipe::finish(dumper, "pg_dump", &dump_said).await?;
    pipe::finish(restorer, "pg_restore", &restore_said).await?;
    let bytes = copied.context("piping pg_dump into pg_restore")?;
    eprintln!(
        "devmesh: cloned {} ({restored} tables, {bytes} bytes of dump) into {into}",
        args.source.service
    );
    Ok(())
}

/// Makes the database `service` with createdb (libpq's defaults) when it
/// does not exist, and returns its connection string.
async fn create_default(service: &str) -> Result<String, Failure> {
    let out = Command::new("createdb")
        .arg(service)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running createdb (apt-get install postgresql-client)")?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !said.contains("already exists") {
        return Err(Failure::failed(anyhow::anyhow!(
            "making the local database {service} failed: {}; pass --into postgres://<host>/<database>",
            said.trim()
        )));
    }
    Ok(format!("dbname={service}"))
}

/// `devmesh db snapshot`: pg_dump through the listener to a file.
async fn snapshot(home: &std::path::Path, args: SnapshotArgs) -> Result<(), Failure> {
    let (conn, server) = source_conn(home, &args.source).await?;
    let dump = tools::installed_major("pg_dump").await?;
    tools::check_versions(dump, server, None).map_err(Failure::failed)?;
    let file = tokio::fs::File::create(&args.output)
        .await
        .with_context(|| format!("creating {}", args.output.display()))?;
    let bar = pipe::bar(table_count(&conn, &args.source).await, None);
    let mut dumper = pg_dump(&conn, &args.source)?;
    let from = dumper.stdout.take().context("pg_dump's stdout")?;
    let (copied, said) = tokio::join!(
        pipe::copy_counted(from, file, &bar),
        pipe::read_all(dumper.stderr.take())
    );
    bar.finish_and_clear();
    pipe::finish(dumper, "pg_dump", &said).await?;
    let bytes = copied.with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "devmesh: wrote a snapshot of {} ({bytes} bytes) to {}",
        args.source.service,
        args.output.display()
    );
    Ok(())
}

/// `devmesh db restore`: a dump file into a local database.
async fn restore(args: RestoreArgs) -> Result<(), Failure> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("opening {}", args.file.display()))?;
    let bar = pipe::bar(0, pipe::file_size(&args.file));
    let mut restorer = pipe::pg_restore(&args.into, args.clean)?;
    let to = restorer.stdin.take().context("pg_restore's stdin")?;
    let restore_err = restorer.stderr.take().context("pg_restore's stderr")?;
    let (copied, (restored, said)) = tokio::join!(
        pipe::copy_counted(file, to, &bar),
        pipe::watch_restore(restore_err, 0, &bar)
    );
    bar.finish_and_clear();
    pipe::finish(restorer, "pg_restore", &said).await?;
    copied.context("feeding pg_restore")?;
    eprintln!(
        "devmesh: restored {} ({restored} tables)",
        args.file.display()
    );
    Ok(())
}
