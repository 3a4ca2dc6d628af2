//! What the binary's `run` does around a [`Sidecar`]: logging, the runtime, the metrics
//! recorder, then serving until a signal.

use super::Sidecar;
use crate::config::{Config, LogFormat, log_filter};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::MetricKindMask;
use resilience_core::BoxError;
use std::path::PathBuf;

/// Histogram buckets of every latency metric, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Sidecar {
    /// Serves `config`, loaded from `path`, as the `sidecar-lite run` command does: installs
    /// logging and the Prometheus recorder, starts the runtime and the sidecar, reloads `path`
    /// when it changes or on SIGHUP, and returns after SIGTERM or SIGINT once drained. Fails
    /// if the runtime or the sidecar cannot start.
    pub fn run_process(config: Config, path: PathBuf) -> Result<(), BoxError> {
        init_logging(&config);
        // Worker 0: the sidecar starts the other workers, each on a thread of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        // Counters and gauges only: what is in use is touched by the admin server's upkeep;
        // histograms cannot be touched without a sample, and are one per listener.
        let recorder = PrometheusBuilder::new()
            .idle_timeout(
                MetricKindMask::COUNTER | MetricKindMask::GAUGE,
                Some(config.admin.metrics_idle_timeout),
            )
            .set_buckets(&LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder);
        let metrics = match recorder {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics are not recorded");
                None
            }
        };
        runtime.block_on(async {
            let sidecar = Sidecar::start(&config, metrics)
                .await
                .inspect_err(|error| {
                    tracing::error!(%error, "cannot start");
                })?;
            sidecar.run_until_signal(path).await;
            Ok(())
        })
    }
}

/// Logs to stderr, filtered by `RUST_LOG` when it is set and valid, else by `[log] filter`
/// (which `check` has validated).
fn init_logging(config: &Config) {
    use tracing_subscriber::{EnvFilter, fmt};
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| match log_filter(&text) {
            Ok(filter) => Some(filter),
            Err(error) => {
                eprintln!("RUST_LOG={text:?} is not a valid filter ({error}); using [log] filter");
                None
            }
        });
    let filter = from_env
        .or_else(|| log_filter(&config.log.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
