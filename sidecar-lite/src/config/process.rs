//! The sections about the process rather than a listener: `[admin]`, `[limits]`, `[log]`,
//! `[runtime]`.

use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

/// `[limits]`: what one client may ask of a listener, so a bad one cannot hurt the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    /// Time to send a whole request head, and to start the next one on a kept-alive
    /// connection (slowloris, idle keep-alive). Default 10 s.
    #[serde(
        default = "default_header_read_timeout",
        with = "resilience_core::duration"
    )]
    pub(crate) header_read_timeout: Duration,
    /// Headers per request; more get 431. Default 100.
    #[serde(default = "default_max_headers")]
    pub(crate) max_headers: usize,
    /// Bytes of a request head (HTTP/1.1) or header list (HTTP/2); more get 431. Default 64 KiB.
    #[serde(default = "default_max_head_bytes")]
    pub(crate) max_head_bytes: usize,
    /// Time from the end of one request to the next on a kept-alive HTTP/1.1 or HTTP/2
    /// connection; an idle connection is closed after it (HTTP/1.1 also by
    /// `header_read_timeout`, whichever is shorter). With requests in flight, the time no byte
    /// may move either way (a caller that stopped reading its answer): as Envoy's
    /// `stream_idle_timeout`, for the whole connection. Default 5 min.
    #[serde(default = "default_idle_timeout", with = "resilience_core::duration")]
    pub(crate) idle_timeout: Duration,
    /// Open connections per listener. At the limit a new connection takes the place of the
    /// oldest one that has not sent a request yet; when every one has, it is closed at once.
    /// Default 10000.
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// Open connections per listener from one client address; more are closed at once.
    /// Default: no such limit (a sidecar's callers often share one address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_connections_per_source: Option<usize>,
    /// Concurrent HTTP/2 streams per connection. Default 256.
    #[serde(default = "default_max_streams")]
    pub(crate) http2_max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            max_headers: default_max_headers(),
            max_head_bytes: default_max_head_bytes(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_source: None,
            http2_max_concurrent_streams: default_max_streams(),
        }
    }
}

#[cfg(feature = "proxy")]
impl LimitsConfig {
    /// The admin listener's limits: these, with room for only a few dozen connections at
    /// once (probes, scrapes, an operator), so that no flood of them can cost much. (Its
    /// admission also lets the connection idle the longest make room: see
    /// `Admission::evicting_idle`.)
    pub(crate) fn for_admin(&self) -> Self {
        Self {
            max_connections: ADMIN_MAX_CONNECTIONS.min(self.max_connections),
            ..self.clone()
        }
    }
}

/// Connections the admin listener keeps open at once.
#[cfg(feature = "proxy")]
const ADMIN_MAX_CONNECTIONS: usize = 64;

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_headers() -> usize {
    100
}

fn default_max_head_bytes() -> usize {
    64 * 1024
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_streams() -> u32 {
    256
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Where the admin server listens. Default `127.0.0.1:15000`: loopback only, because it
    /// can drain the proxy.
    #[serde(default = "default_admin_listen")]
    pub(crate) listen: SocketAddr,
    /// A second listener that answers only `GET /live` and `GET /ready`, for probes from
    /// outside the pod (the kubelet's), so that the admin server itself can stay on loopback.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probes: Option<SocketAddr>,
    /// How long a counter or gauge may go unchanged before `/metrics` stops reporting it (and
    /// the recorder frees it), as for the breakers of endpoints that discovery removed. What
    /// is still in use is kept, however quiet. Default 10 min.
    #[serde(default = "default_metrics_idle", with = "resilience_core::duration")]
    pub(crate) metrics_idle_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            probes: None,
            metrics_idle_timeout: default_metrics_idle(),
        }
    }
}

fn default_metrics_idle() -> Duration {
    Duration::from_secs(600)
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set. Default `info`.
    #[serde(default = "default_log_filter")]
    pub(crate) filter: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: default_log_filter(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_filter() -> String {
    "info".to_owned()
}

/// A log filter (`[log] filter` or `RUST_LOG`) as tracing-subscriber can take it safely: each
/// comma-separated directive trimmed, empty ones dropped. tracing-subscriber 0.3 parses a
/// directive trimmed but slices it untrimmed, so `"info, hypé=warn"` made it panic in the
/// middle of a character; trimmed, the same filter is parsed, or refused with an error.
#[cfg(feature = "proxy")]
pub(crate) fn log_filter(
    text: &str,
) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    tracing_subscriber::EnvFilter::try_new(directives.join(","))
}

#[cfg(all(test, feature = "proxy"))]
mod tests {
    use super::log_filter;

    #[test]
    fn filters_with_spaces_and_non_ascii_targets_parse_or_fail_without_panicking() {
        for text in [
            "info, hypé=warn",
            " hypé=warn ,info",
            "info,  ",
            "é",
            "info, [é]=warn",
        ] {
            let _ = log_filter(text);
        }
        assert!(log_filter("info, hyper=warn").is_ok());
        assert!(log_filter("info, hypé=warn").is_ok());
    }
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The most `[runtime] worker_threads` may be.
pub(crate) const MAX_WORKER_THREADS: usize = 256;

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeConfig {
    /// Worker threads, each a current-thread runtime with its own sockets and upstream
    /// connections. Default: one per core; at most [`MAX_WORKER_THREADS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) worker_threads: Option<usize>,
    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish. Default 30 s,
    /// Kubernetes' default termination grace period.
    #[serde(default = "default_drain_grace", with = "resilience_core::duration")]
    pub(crate) drain_grace: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: None,
            drain_grace: default_drain_grace(),
        }
    }
}

impl RuntimeConfig {
    /// The worker threads to start: as configured, else one per core.
    #[cfg_attr(
        not(feature = "proxy"),
        allow(dead_code, reason = "the sidecar's workers")
    )]
    pub(crate) fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

fn default_drain_grace() -> Duration {
    Duration::from_secs(30)
}
