//! The daemon's observability settings (flag > `DEVMESH_*` environment >
//! config file > default) and their start: metrics counted by the proxy
//! and served on the front door and, when asked, on an address of their own.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use mesh_config::DaemonFile;
use mesh_core::NodeHandle;
use mesh_proxy::{Observe, metrics::Metrics};
use tokio_util::sync::CancellationToken;

/// Observability flags of `devmeshd`.
#[derive(Debug, Default, clap::Args)]
pub struct ObserveArgs {
    /// Also serve Prometheus metrics at http://<ADDR>/metrics (they are
    /// always at http://devmesh.localhost:<proxy-port>/metrics), or `off`
    /// to count nothing
    #[arg(long, env = "DEVMESH_METRICS", value_name = "ADDR|off")]
    pub metrics: Option<String>,
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
}

impl ObserveSettings {
    /// Merges flags (and environment) with the config file.
    pub fn resolve(args: ObserveArgs, file: &DaemonFile) -> anyhow::Result<Self> {
        let metrics = match args.metrics.or(file.metrics.clone()) {
            None => MetricsSetting::On(None),
            Some(v) => parse_metrics(&v)?,
        };
        Ok(Self { metrics })
    }

    /// Builds what the proxy observes with, and starts the metrics listener
    /// when one is asked for; it stops when `shutdown` is cancelled.
    pub async fn start(
        &self,
        node: &NodeHandle,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Observe> {
        let mut observe = Observe::default();
        if let MetricsSetting::On(addr) = self.metrics {
            let metrics = Arc::new(Metrics::new(node));
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
}
