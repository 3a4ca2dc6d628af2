//! `[tracing]`: span export over OTLP.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[tracing]`: each proxied request becomes a span (a server span on the inbound listener,
/// a client span on outbound routes), child of the caller's W3C `traceparent`, exported in
/// batches over OTLP/HTTP with protobuf. Export never holds a request up: finished spans
/// wait in a bounded queue, and when it is full they are dropped and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL, `http://host:4318/v1/traces`; a bare
    /// `http://host:4318` or a path of `/` means `/v1/traces`. Plain HTTP: a collector or
    /// agent on the same host or network. Required.
    pub(crate) otlp_endpoint: String,
    /// The `service.name` of the spans. Default `sidecar-lite`.
    #[serde(default = "default_service_name")]
    pub(crate) service_name: String,
    /// The share of new traces that are sampled, from 0 to 1. A caller's `traceparent`
    /// decides for its trace, sampled or not (parent-based sampling). Default 1.0.
    #[serde(default = "default_sampling_ratio")]
    pub(crate) sampling_ratio: f64,
    /// Finished spans waiting to be exported; beyond it new spans are dropped and counted in
    /// `sidecar_spans_dropped_total`. Default 2048.
    #[serde(default = "default_queue_size")]
    pub(crate) queue_size: usize,
    /// Spans per export request, at most (and at most `queue_size`). Default 512.
    #[serde(default = "default_batch_size")]
    pub(crate) batch_size: usize,
    /// How long a finished span may wait for a full batch before it is sent. Default 5 s.
    #[serde(
        default = "default_export_interval",
        with = "resilience_core::duration"
    )]
    pub(crate) export_interval: Duration,
    /// Time for one export request, retries included; a batch that does not make it is
    /// dropped and counted. Default 10 s.
    #[serde(default = "default_export_timeout", with = "resilience_core::duration")]
    pub(crate) export_timeout: Duration,
}

impl TracingConfig {
    /// The URL spans are posted to: `otlp_endpoint`, with `/v1/traces` when it has no path.
    pub(crate) fn endpoint(&self) -> Result<http::Uri, String> {
        let uri: http::Uri = self
            .otlp_endpoint
            .parse()
            .map_err(|e| format!("\"{}\" is not a URL: {e}", self.otlp_endpoint))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "\"{}\": https is not supported; send to a collector or agent over http",
                    self.otlp_endpoint
                ));
            }
            _ => {
                return Err(format!("\"{}\" is not an http:// URL", self.otlp_endpoint));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("\"{}\" has no host", self.otlp_endpoint));
        }
        if uri.path() != "/" {
            return Ok(uri);
        }
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        http::Uri::from_parts(parts).map_err(|e| e.to_string())
    }
}

fn default_service_name() -> String {
    "sidecar-lite".to_owned()
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_queue_size() -> usize {
    2048
}

fn default_batch_size() -> usize {
    512
}

fn default_export_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_bare_endpoint_gets_the_traces_path_and_the_defaults() {
        let config =
            Config::parse("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n").unwrap();
        let tracing = config.tracing.unwrap();
        assert_eq!(
            tracing.endpoint().unwrap().to_string(),
            "http://127.0.0.1:4318/v1/traces",
            "a bare endpoint gets the traces path"
        );
        assert_eq!(tracing.sampling_ratio, 1.0);
        assert_eq!(tracing.queue_size, 2048);
    }
}
