//! The daemon's observability settings (flag > `DEVMESH_*` environment >
//! config file > default) and their start: metrics counted by the proxy
//! and served on the front door and, when asked, on an address of their
//! own; the request log; the OTLP export of traces; the inspector.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use mesh_config::DaemonFile;
use mesh_core::NodeHandle;
use mesh_proxy::{
    Observe,
    inspect::{self, Inspector},
    metrics::Metrics,
    reqlog::{Destination, RequestLog},
    trace::otlp::{Endpoint, Exporter, Origin},
};
use tokio_util::sync::CancellationToken;

/// Observability flags of `devmeshd`.
#[derive(Debug, Default, clap::Args)]
pub struct ObserveArgs {
    /// Also serve Prometheus metrics at http://<ADDR>/metrics (they are
    /// always at http://devmesh.localhost:<proxy-port>/metrics), or `off`
    /// to count nothing
    #[arg(long, env = "DEVMESH_METRICS", value_name = "ADDR|off")]
    pub metrics: Option<String>,
    /// `text` or `json`: json writes the daemon's log lines as JSON and
    /// turns the request log on [default: text]
    #[arg(long, env = "DEVMESH_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Write one JSON line per front-door request to `stderr` or to this
    /// file (appended to)
    #[arg(long, env = "DEVMESH_REQUEST_LOG", value_name = "stderr|PATH")]
    pub request_log: Option<String>,
    /// Export traces with OTLP/HTTP (protobuf) to this URL, such as
    /// http://127.0.0.1:4318/v1/traces
    #[arg(long, env = "DEVMESH_OTLP", value_name = "URL")]
    pub otlp: Option<String>,
    /// `off` keeps no requests for `devmesh inspect` [default: on]
    #[arg(long, env = "DEVMESH_INSPECT", value_parser = ["on", "off"])]
    pub inspect: Option<String>,
    /// Most requests the inspector keeps [default: 10000]
    #[arg(long, env = "DEVMESH_INSPECT_ENTRIES", value_name = "N")]
    pub inspect_entries: Option<usize>,
    /// Most bytes the inspector keeps, such as 64MiB [default: 64MiB]
    #[arg(long, env = "DEVMESH_INSPECT_BYTES", value_name = "SIZE")]
    pub inspect_bytes: Option<String>,
    /// Keep Authorization, Cookie and Set-Cookie values in the inspector
    /// instead of masking them
    #[arg(long, env = "DEVMESH_INSPECT_SECRETS")]
    pub inspect_secrets: bool,
}

/// Where metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSetting {
    /// Not counted.
    Off,
    /// Counted and served on the front door, and on the address when given.
    On(Option<SocketAddr>),
}

/// The observability a daemon runs with.
#[derive(Debug, Clone)]
pub struct ObserveSettings {
    pub metrics: MetricsSetting,
    /// The daemon's own log lines as JSON.
    pub json: bool,
    /// Where request lines go, when the request log is on.
    pub requests: Option<Destination>,
    /// Where traces are exported to.
    pub otlp: Option<Endpoint>,
    /// The inspector's buffer, unless it is off.
    pub inspect: Option<inspect::Settings>,
}

impl ObserveSettings {
    /// Merges flags (and environment) with the config file.
    pub fn resolve(args: ObserveArgs, file: &DaemonFile) -> anyhow::Result<Self> {
        let inspect = resolve_inspect(&args, file)?;
        let metrics = match args.metrics.or(file.metrics.clone()) {
            None => MetricsSetting::On(None),
            Some(v) => parse_metrics(&v)?,
        };
        let format = args
            .log_format
            .or_else(|| file.log.format.as_ref().map(|f| f.get_ref().clone()));
        let json = format.as_deref() == Some("json");
        let on = args.request_log.is_some() || json || file.log.requests == Some(true);
        let requests = on.then(|| match args.request_log.or(file.log.file.clone()) {
            None => Destination::Stderr,
            Some(s) if s == "stderr" || s == "-" => Destination::Stderr,
            Some(path) => Destination::File(PathBuf::from(path)),
        });
        let otlp = args
            .otlp
            .or(file.otlp.clone())
            .map(|url| Endpoint::parse(&url))
            .transpose()
            .context("--otlp, DEVMESH_OTLP or `otlp` of the config file")?;
        Ok(Self {
            metrics,
            json,
            requests,
            otlp,
            inspect,
        })
    }

    /// Builds what the proxy observes with, and starts the metrics listener
    /// when one is asked for; it stops when `shutdown` is cancelled.
    pub async fn start(
        &self,
        node: &NodeHandle,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Observe> {
        let mut observe = Observe::default();
        if let Some(settings) = self.inspect {
            observe = observe.with_inspector(Inspector::new(settings));
        }
        if let Some(destination) = &self.requests {
            let log = RequestLog::start(destination.clone())
                .with_context(|| format!("opening the request log {destination:?}"))?;
            observe = observe.with_log(log);
        }
        if let Some(endpoint) = &self.otlp {
            let origin = Origin {
                service_name: "devmeshd".into(),
                instance_id: node.peer_id().to_string(),
            };
            observe = observe.with_exporter(Exporter::start(endpoint.clone(), origin));
        }
        if let MetricsSetting::On(addr) = self.metrics {
            let metrics = Arc::new(Metrics::new(node, &observe));
            if let Some(addr) = addr {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot serve metrics on {addr}; pick another address with --metrics")
                })?;
                tokio::spawn(mesh_proxy::metrics::serve(
                    listener,
                    metrics.clone(),
                    shutdown.clone(),
                ));
            }
            observe = observe.with_metrics(metrics);
        }
        Ok(observe)
    }
}

/// The inspector's settings from flags (and environment) and the file;
/// `None` when it is off.
fn resolve_inspect(
    args: &ObserveArgs,
    file: &DaemonFile,
) -> anyhow::Result<Option<inspect::Settings>> {
    let f = &file.inspect;
    let on = match args.inspect.as_deref() {
        Some(v) => v == "on",
        None => f.enabled.unwrap_or(true),
    };
    if !on {
        return Ok(None);
    }
    let max_bytes = match (&args.inspect_bytes, &f.bytes) {
        (Some(v), _) => mesh_config::parse_size(v).context("--inspect-bytes")?,
        (None, Some(v)) => mesh_config::parse_size(v.get_ref()).context("inspect.bytes")?,
        (None, None) => inspect::DEFAULT_MAX_BYTES,
    };
    Ok(Some(inspect::Settings {
        max_entries: args
            .inspect_entries
            .or(f.entries)
            .unwrap_or(inspect::DEFAULT_MAX_ENTRIES),
        max_bytes,
        secrets: args.inspect_secrets || f.secrets == Some(true),
    }))
}

/// `off`, or the address of the metrics listener.
fn parse_metrics(value: &str) -> anyhow::Result<MetricsSetting> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(MetricsSetting::Off);
    }
    value.parse().map(|a| MetricsSetting::On(Some(a))).with_context(|| {
        format!("metrics address {value:?} is invalid: expected ip:port such as 127.0.0.1:9464, or off")
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn metrics_are_on_by_default_off_or_also_on_an_address() {
        let file = |text: &str| DaemonFile::parse(Path::new("/h/config.toml"), text).unwrap();
        let resolve = |flag: Option<&str>, text: &str| {
            let args = ObserveArgs {
                metrics: flag.map(str::to_owned),
                ..ObserveArgs::default()
            };
            ObserveSettings::resolve(args, &file(text)).map(|s| s.metrics)
        };
        assert_eq!(resolve(None, "").unwrap(), MetricsSetting::On(None));
        assert_eq!(resolve(Some("off"), "").unwrap(), MetricsSetting::Off);
        let addr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(
            resolve(None, "metrics = \"127.0.0.1:9464\"\n").unwrap(),
            MetricsSetting::On(Some(addr))
        );
        assert_eq!(
            resolve(Some("OFF"), "metrics = \"127.0.0.1:9464\"\n").unwrap(),
            MetricsSetting::Off
        );
        let err = resolve(Some("9464"), "").unwrap_err().to_string();
        assert!(err.contains("expected ip:port"), "{err}");
    }

    #[test]
    fn the_request_log_is_on_by_flag_by_file_or_with_json() {
        let file = |text: &str| DaemonFile::parse(Path::new("/h/config.toml"), text).unwrap();
        let resolve =
            |args: ObserveArgs, text: &str| ObserveSettings::resolve(args, &file(text)).unwrap();
        let off = resolve(ObserveArgs::default(), "");
        assert_eq!(
            (off.requests, off.json, off.otlp.is_none()),
            (None, false, true)
        );
        let json = ObserveArgs {
            log_format: Some("json".into()),
            ..ObserveArgs::default()
        };
        let s = resolve(json, "");
        assert_eq!((s.requests, s.json), (Some(Destination::Stderr), true));
        let s = resolve(
            ObserveArgs::default(),
            "[log]\nrequests = true\nfile = \"/tmp/r.log\"\n",
        );
        assert_eq!(s.requests, Some(Destination::File("/tmp/r.log".into())));
        let flag = ObserveArgs {
            request_log: Some("stderr".into()),
            ..ObserveArgs::default()
        };
        let s = resolve(flag, "[log]\nfile = \"/tmp/r.log\"\n");
        assert_eq!((s.requests, s.json), (Some(Destination::Stderr), false));
        let s = resolve(ObserveArgs::default(), "[log]\nformat = \"json\"\n");
        assert!(s.json);
    }

    #[test]
    fn the_inspector_is_on_by_default_and_sized_by_flag_or_file() {
        let file = |text: &str| DaemonFile::parse(Path::new("/h/config.toml"), text).unwrap();
        let resolve =
            |args: ObserveArgs, text: &str| ObserveSettings::resolve(args, &file(text)).unwrap();
        assert_eq!(
            resolve(ObserveArgs::default(), "").inspect,
            Some(inspect::Settings::default())
        );
        let off = ObserveArgs {
            inspect: Some("off".into()),
            ..ObserveArgs::default()
        };
        assert_eq!(resolve(off, "").inspect, None);
        assert_eq!(
            resolve(ObserveArgs::default(), "[inspect]\nenabled = false\n").inspect,
            None
        );
        let s = resolve(
            ObserveArgs::default(),
            "[inspect]\nentries = 5\nbytes = \"1MiB\"\nsecrets = true\n",
        );
        let want = inspect::Settings {
            max_entries: 5,
            max_bytes: 1 << 20,
            secrets: true,
        };
        assert_eq!(s.inspect, Some(want));
        let flags = ObserveArgs {
            inspect_entries: Some(7),
            inspect_bytes: Some("2MiB".into()),
            ..ObserveArgs::default()
        };
        let s = resolve(flags, "[inspect]\nentries = 5\n").inspect.unwrap();
        assert_eq!((s.max_entries, s.max_bytes, s.secrets), (7, 2 << 20, false));
        let bad = ObserveArgs {
            inspect_bytes: Some("huge".into()),
            ..ObserveArgs::default()
        };
        let err = format!(
            "{:#}",
            ObserveSettings::resolve(bad, &file("")).unwrap_err()
        );
        assert!(
            err.contains("--inspect-bytes") && err.contains("64MiB"),
            "{err}"
        );
    }

    #[test]
    fn otlp_endpoints_are_checked() {
        let file =
            DaemonFile::parse(Path::new("/h/config.toml"), "otlp = \"https://x\"\n").unwrap();
        let err = ObserveSettings::resolve(ObserveArgs::default(), &file).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("must be plain http"), "{text}");
        let ok = ObserveArgs {
            otlp: Some("http://127.0.0.1:4318".into()),
            ..ObserveArgs::default()
        };
        assert!(ObserveSettings::resolve(ok, &file).unwrap().otlp.is_some());
    }
}
