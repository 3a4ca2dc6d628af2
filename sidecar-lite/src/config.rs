//! The config file: parsed and validated here, and nothing else.
//!
//! Every section that a middleware crate also reads (`timeout`, `retry`, `breaker`,
//! `identity`) deserializes into that crate's own config type, so library users load the very
//! same TOML. See `examples/sidecar.toml` for every key with its default.

use resilience_breaker::BreakerConfig;
pub use resilience_mtls::MtlsMode;
use resilience_mtls::{IdentityConfig, IdentityPattern};
use resilience_retry::RetryConfig;
use resilience_timeout::TimeoutConfig;
use serde::{Deserialize, Deserializer, Serialize};
use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Our workload identity: certificate, key and trust bundle. Needed for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// Traffic from other sidecars to our app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// Traffic from our app to remote services, one route each.
    #[serde(default)]
    pub outbound: Vec<OutboundConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The async runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Limits on each client connection, for every listener.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Tracing export: a span for each proxied request, sent to an OTLP collector. Off when
    /// the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// How `dns:` and `file:` endpoints are discovered.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
}

/// `[discovery]`: how the endpoints of `dns:` and `file:` sources are found and refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The DNS server asked for `dns:` endpoints, `IP:PORT` (UDP, then TCP). Default: the
    /// system's resolver configuration (`/etc/resolv.conf`, with its search domains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<SocketAddr>,
    /// The longest time between two lookups of a `dns:` name. A name is looked up again
    /// sooner when its records' TTL runs out, but not more often than once a second (or once
    /// per `dns_refresh`, if shorter). Default 5 s.
    #[serde(default = "default_dns_refresh", with = "resilience_timeout::duration")]
    pub dns_refresh: Duration,
    /// How often a `file:` source is checked for changes. A change is applied once the file
    /// reads the same twice in a row, so a file being written is not read half-way.
    /// Default 1 s.
    #[serde(default = "default_file_poll", with = "resilience_timeout::duration")]
    pub file_poll: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            resolver: None,
            dns_refresh: default_dns_refresh(),
            file_poll: default_file_poll(),
        }
    }
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

fn default_file_poll() -> Duration {
    Duration::from_secs(1)
}

/// The shortest `dns_refresh` and `file_poll` accepted: shorter would spin.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(10);

/// One entry of an outbound route's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A fixed address: `10.0.0.7:15006`.
    Static(SocketAddr),
    /// `dns:NAME:PORT`: every A and AAAA record of `NAME`, each at `PORT`, looked up again
    /// as `[discovery]` says.
    Dns {
        /// The name looked up.
        name: String,
        /// The port of every address found.
        port: u16,
    },
    /// `file:PATH`: the addresses listed in a file, re-read when it changes. See
    /// [`parse_endpoints_file`] for the format.
    File(PathBuf),
}

impl Endpoint {
    /// Whether the set of addresses can change while the route serves.
    #[must_use]
    pub fn is_dynamic(&self) -> bool {
        !matches!(self, Self::Static(_))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(addr) => write!(f, "{addr}"),
            Self::Dns { name, port } => write!(f, "dns:{name}:{port}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("dns:") {
            let Some((name, port)) = rest.rsplit_once(':') else {
                return Err(format!("\"{text}\" needs a port: dns:NAME:PORT"));
            };
            let port = match port.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "\"{text}\": \"{port}\" is not a port from 1 to 65535 (dns:NAME:PORT)"
                    ));
                }
                Ok(port) => port,
            };
            let valid = |label: &str| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            let bare = name.strip_suffix('.').unwrap_or(name);
            if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid) {
                return Err(format!(
                    "\"{text}\": \"{name}\" is not a DNS name (dns:NAME:PORT)"
                ));
            }
            Ok(Self::Dns {
                name: name.to_owned(),
                port,
            })
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err(format!("\"{text}\" needs a path: file:PATH"));
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            text.parse().map(Self::Static).map_err(|_| {
                format!("\"{text}\" is not an IP:PORT address, dns:NAME:PORT or file:PATH")
            })
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The addresses in an endpoints file: one `IP:PORT` a line (blank lines and `#` comments
/// skipped), or a JSON array of `"IP:PORT"` strings, or a JSON object whose `endpoints` key
/// holds such an array. The problem, with its line, if any entry is not an address; an empty
/// list is a problem too (it would leave the route with nowhere to send).
pub fn parse_endpoints_file(text: &str) -> Result<Vec<SocketAddr>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Json {
        List(Vec<String>),
        Object { endpoints: Vec<String> },
    }
    let trimmed = text.trim_start();
    let mut addrs = Vec::new();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let list = match serde_json::from_str::<Json>(text) {
            Ok(Json::List(list) | Json::Object { endpoints: list }) => list,
            Err(e) => {
                return Err(format!(
                    "not a JSON array of \"IP:PORT\" strings (or {{\"endpoints\": [...]}}): {e}"
                ));
            }
        };
        for (i, entry) in list.iter().enumerate() {
            let addr = entry
                .trim()
                .parse()
                .map_err(|_| format!("entry {i}: \"{entry}\" is not an IP:PORT address"))?;
            addrs.push(addr);
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let addr = line
                .parse()
                .map_err(|_| format!("line {}: \"{line}\" is not an IP:PORT address", n + 1))?;
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err("lists no endpoint".to_owned());
    }
    Ok(addrs)
}

/// `[tracing]`: each proxied request becomes a span (a server span on the inbound listener,
/// a client span on outbound routes), child of the caller's W3C `traceparent`, exported in
/// batches over OTLP/HTTP with protobuf. Export never holds a request up: finished spans
/// wait in a bounded queue, and when it is full they are dropped and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL, `http://host:4318/v1/traces`; a bare
    /// `http://host:4318` or a path of `/` means `/v1/traces`. Plain HTTP: a collector or
    /// agent on the same host or network. Required.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans. Default `sidecar-lite`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces that are sampled, from 0 to 1. A caller's `traceparent`
    /// decides for its trace, sampled or not (parent-based sampling). Default 1.0.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Finished spans waiting to be exported; beyond it new spans are dropped and counted in
    /// `sidecar_spans_dropped_total`. Default 2048.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Spans per export request, at most (and at most `queue_size`). Default 512.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a finished span may wait for a full batch before it is sent. Default 5 s.
    #[serde(
        default = "default_export_interval",
        with = "resilience_timeout::duration"
    )]
    pub export_interval: Duration,
    /// Time for one export request, retries included; a batch that does not make it is
    /// dropped and counted. Default 10 s.
    #[serde(
        default = "default_export_timeout",
        with = "resilience_timeout::duration"
    )]
    pub export_timeout: Duration,
}

impl TracingConfig {
    /// A section that exports to `otlp_endpoint`, every other key at its default.
    #[must_use]
    pub fn new(otlp_endpoint: impl Into<String>) -> Self {
        Self {
            otlp_endpoint: otlp_endpoint.into(),
            service_name: default_service_name(),
            sampling_ratio: default_sampling_ratio(),
            queue_size: default_queue_size(),
            batch_size: default_batch_size(),
            export_interval: default_export_interval(),
            export_timeout: default_export_timeout(),
        }
    }

    /// The URL spans are posted to: `otlp_endpoint`, with `/v1/traces` when it has no path.
    pub fn endpoint(&self) -> Result<http::Uri, String> {
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

/// `[limits]`: what one client may ask of a listener, so a bad one cannot hurt the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time to send a whole request head, and to start the next one on a kept-alive
    /// connection (slowloris, idle keep-alive). Default 10 s.
    #[serde(
        default = "default_header_read_timeout",
        with = "resilience_timeout::duration"
    )]
    pub header_read_timeout: Duration,
    /// Headers per request; more get 431. Default 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Bytes of a request head (HTTP/1.1) or header list (HTTP/2); more get 431. Default 64 KiB.
    #[serde(default = "default_max_head_bytes")]
    pub max_head_bytes: usize,
    /// Open connections per listener; more are closed at once. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 256.
    #[serde(default = "default_max_streams")]
    pub http2_max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            max_headers: default_max_headers(),
            max_head_bytes: default_max_head_bytes(),
            max_connections: default_max_connections(),
            http2_max_concurrent_streams: default_max_streams(),
        }
    }
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
pub struct AdminConfig {
    /// Where the admin server listens. Default `127.0.0.1:15000`: loopback only, because it
    /// can drain the proxy.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

/// `[inbound]`: other sidecars to our app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Where peers connect. Required.
    pub listen: SocketAddr,
    /// Our app. Required.
    pub app: SocketAddr,
    /// `strict` (default), `permissive` or `disabled`.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Peer identities allowed in: exact, or with `*` for one path segment. Default: none,
    /// so nobody is let in until the operator says who may call.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Admit callers without an identity: plaintext callers in `permissive` or `disabled`
    /// mode. Default `false`.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// The timeout for each request to the app. Default 15 s.
    #[serde(default = "default_timeout")]
    pub timeout: TimeoutSetting,
    /// Requests in flight at once; beyond it, 503 at once. Default 1024.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// How to speak to the app: `auto` (HTTP/2 for gRPC, HTTP/1.1 otherwise; the default),
    /// `http1` or `http2` (h2c with prior knowledge).
    #[serde(default)]
    pub app_protocol: AppProtocol,
}

/// The protocol spoken to the local app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/2 (h2c) for gRPC requests, HTTP/1.1 for the rest.
    #[default]
    Auto,
    /// HTTP/1.1 always.
    Http1,
    /// HTTP/2 with prior knowledge always.
    Http2,
}

/// `[[outbound]]`: our app to one remote service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The route's name, in metrics and logs. Required and unique.
    pub name: String,
    /// Where our app sends its plain HTTP for this service. Required.
    pub listen: SocketAddr,
    /// The peers' inbound listeners. Required: one or more `IP:PORT` addresses, or one
    /// discovered source, `dns:NAME:PORT` or `file:PATH` (see [`Endpoint`]).
    pub endpoints: Vec<Endpoint>,
    /// The identity the peers must present. Required with `[identity]`; without `[identity]`
    /// the route speaks plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// The total timeout, all attempts included: `"2s"`, or a table with the keys of
    /// `resilience_timeout::TimeoutConfig`. Default 15 s.
    #[serde(default = "default_timeout")]
    pub timeout: TimeoutSetting,
    /// Retries: the keys of `resilience_retry::RetryConfig`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker of each endpoint: the keys of `resilience_breaker::BreakerConfig`.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Requests in flight at once; beyond it, 503 at once. Default 1024.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// Faults to inject, for testing how the app copes. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultConfig>,
}

/// `[outbound.fault]`: abort or delay a share of requests, as Istio's `fault`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// `abort = { percent = 10.0, status = 503 }`: answer that share at once with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
    /// `delay = { percent = 5.0, duration = "100ms" }`: hold that share before sending it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
}

/// An injected abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortFault {
    /// The share of requests aborted, in percent (0 to 100).
    pub percent: f64,
    /// The status they get (200 to 599).
    pub status: u16,
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayFault {
    /// The share of requests delayed, in percent (0 to 100).
    pub percent: f64,
    /// How long they are held.
    #[serde(with = "resilience_timeout::duration")]
    pub duration: Duration,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set. Default `info`.
    #[serde(default = "default_log_filter")]
    pub filter: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
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

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads. Default: one per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish. Default 30 s,
    /// Kubernetes' default termination grace period.
    #[serde(default = "default_drain_grace", with = "resilience_timeout::duration")]
    pub drain_grace: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: None,
            drain_grace: default_drain_grace(),
        }
    }
}

fn default_drain_grace() -> Duration {
    Duration::from_secs(30)
}

/// A timeout written as `"2s"` or as a full `resilience_timeout::TimeoutConfig` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TimeoutSetting(pub TimeoutConfig);

impl<'de> Deserialize<'de> for TimeoutSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A string is the short form; anything else must be the full table.
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(text) => resilience_timeout::duration::parse(&text)
                .map(|d| Self(TimeoutConfig::new(d)))
                .map_err(serde::de::Error::custom),
            other => other
                .try_into::<TimeoutConfig>()
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn default_timeout() -> TimeoutSetting {
    TimeoutSetting(TimeoutConfig::new(Duration::from_secs(15)))
}

fn default_concurrency() -> usize {
    1024
}

/// A problem in the config file: where (the field's path and, when found, its line) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as a path: `outbound[0].retry.attempts`.
    pub field: String,
    /// The line in the file, 1-based, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when read from one.
    pub file: Option<String>,
    /// The problems, in file order as far as known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{file}: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let file = Some(path.display().to_string());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError {
                field: "(file)".to_owned(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&text).map_err(|mut errors| {
            errors.file = file;
            errors
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigErrors {
            file: None,
            errors: vec![parse_error(text, &e)],
        })?;
        let errors: Vec<ConfigError> = config
            .problems()
            .into_iter()
            .map(|(field, message)| ConfigError {
                line: locate(text, &field),
                field,
                message,
            })
            .collect();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors { file: None, errors })
        }
    }

    /// Every semantic problem, as (field path, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut listeners = HashSet::new();
        let mut listen = |field: String, addr: SocketAddr, problems: &mut Vec<(String, String)>| {
            // Port 0 asks the system for a free port: never a clash.
            if addr.port() != 0 && !listeners.insert(addr) {
                problems.push((field, format!("{addr} is already used by another listener")));
            }
        };
        listen("admin.listen".into(), self.admin.listen, &mut problems);

        if let Some(inbound) = &self.inbound {
            listen("inbound.listen".into(), inbound.listen, &mut problems);
            if inbound.mtls != MtlsMode::Disabled && self.identity.is_none() {
                problems.push((
                    "inbound.mtls".into(),
                    "needs an [identity] section (or set mtls = \"disabled\")".into(),
                ));
            }
            for (i, pattern) in inbound.allow.iter().enumerate() {
                if let Err(e) = IdentityPattern::from_str(pattern) {
                    problems.push((format!("inbound.allow[{i}]"), format!("\"{pattern}\": {e}")));
                }
            }
            timeout_problems("inbound.timeout", &inbound.timeout, &mut problems);
            if let Some(problem) = concurrency_problem(inbound.max_concurrent_requests) {
                problems.push(("inbound.max_concurrent_requests".into(), problem));
            }
        }

        let mut names = HashSet::new();
        for (i, route) in self.outbound.iter().enumerate() {
            let at = |key: &str| format!("outbound[{i}].{key}");
            if route.name.trim().is_empty() {
                problems.push((at("name"), "must not be empty".into()));
            } else if !names.insert(route.name.as_str()) {
                problems.push((
                    at("name"),
                    format!("\"{}\" is used by another route", route.name),
                ));
            }
            listen(at("listen"), route.listen, &mut problems);
            endpoint_problems(&at("endpoints"), &route.endpoints, &mut problems);
            match (&route.server_identity, &self.identity) {
                (Some(id), Some(_)) => {
                    if let Err(e) = resilience_mtls::Identity::from_str(id) {
                        problems.push((at("server_identity"), format!("\"{id}\": {e}")));
                    }
                }
                (Some(_), None) => problems.push((
                    at("server_identity"),
                    "needs an [identity] section to speak mTLS".into(),
                )),
                (None, Some(_)) => problems.push((
                    at("server_identity"),
                    "is required with [identity]: the peers' certificates are checked against it"
                        .into(),
                )),
                (None, None) => {}
            }
            timeout_problems(&at("timeout"), &route.timeout, &mut problems);
            if let Err(e) = route.retry.validate() {
                problems.push((at(&format!("retry.{}", e.field())), e.to_string()));
            }
            if let Err(e) = route.breaker.validate() {
                problems.push((at(&format!("breaker.{}", e.field())), e.to_string()));
            }
            if let Some(problem) = concurrency_problem(route.max_concurrent_requests) {
                problems.push((at("max_concurrent_requests"), problem));
            }
            if let Some(fault) = &route.fault {
                let percent = |field: String, value: f64, problems: &mut Vec<(String, String)>| {
                    if !(0.0..=100.0).contains(&value) {
                        problems
                            .push((field, format!("{value} is not a percentage from 0 to 100")));
                    }
                };
                if let Some(abort) = &fault.abort {
                    percent(at("fault.abort.percent"), abort.percent, &mut problems);
                    if !(200..=599).contains(&abort.status) {
                        problems.push((
                            at("fault.abort.status"),
                            format!("{} is not a status from 200 to 599", abort.status),
                        ));
                    }
                }
                if let Some(delay) = &fault.delay {
                    percent(at("fault.delay.percent"), delay.percent, &mut problems);
                }
            }
        }
        let limits = &self.limits;
        for (field, value, min) in [
            ("limits.max_headers", limits.max_headers, 1),
            ("limits.max_head_bytes", limits.max_head_bytes, 8192),
            ("limits.max_connections", limits.max_connections, 1),
            (
                "limits.http2_max_concurrent_streams",
                limits.http2_max_concurrent_streams as usize,
                1,
            ),
        ] {
            if value < min {
                problems.push((
                    field.into(),
                    format!("{value} is below the minimum of {min}"),
                ));
            }
        }
        if limits.max_head_bytes > u32::MAX as usize {
            problems.push(("limits.max_head_bytes".into(), "must fit in 32 bits".into()));
        }
        for (field, value) in [
            ("discovery.dns_refresh", self.discovery.dns_refresh),
            ("discovery.file_poll", self.discovery.file_poll),
        ] {
            if value < MIN_DISCOVERY_INTERVAL {
                problems.push((
                    field.into(),
                    format!(
                        "{} is below the minimum of {}",
                        resilience_timeout::duration::format(value),
                        resilience_timeout::duration::format(MIN_DISCOVERY_INTERVAL)
                    ),
                ));
            }
        }
        if self.discovery.resolver.is_some_and(|r| r.port() == 0) {
            problems.push((
                "discovery.resolver".into(),
                "needs a port other than 0".into(),
            ));
        }
        if self.runtime.worker_threads == Some(0) {
            problems.push(("runtime.worker_threads".into(), "must be at least 1".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            problems.push(("log.filter".into(), format!("\"{}\": {e}", self.log.filter)));
        }
        if let Some(tracing) = &self.tracing {
            tracing_problems(tracing, &mut problems);
        }
        problems
    }

    /// The effective config, every default filled in, as TOML.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

/// The most requests in flight one listener may allow: far beyond what one process serves,
/// and far below what the semaphore behind the limit can count.
const MAX_CONCURRENCY: usize = 1 << 20;

fn concurrency_problem(limit: usize) -> Option<String> {
    match limit {
        0 => Some("must be at least 1".into()),
        n if n > MAX_CONCURRENCY => Some(format!("{n} is over the maximum of {MAX_CONCURRENCY}")),
        _ => None,
    }
}

/// The most spans the export queue may hold.
const MAX_SPAN_QUEUE: usize = 1 << 20;

fn tracing_problems(tracing: &TracingConfig, problems: &mut Vec<(String, String)>) {
    if let Err(e) = tracing.endpoint() {
        problems.push(("tracing.otlp_endpoint".into(), e));
    }
    if tracing.service_name.trim().is_empty() {
        problems.push(("tracing.service_name".into(), "must not be empty".into()));
    }
    if !(0.0..=1.0).contains(&tracing.sampling_ratio) {
        problems.push((
            "tracing.sampling_ratio".into(),
            format!("{} is not a ratio from 0 to 1", tracing.sampling_ratio),
        ));
    }
    match tracing.queue_size {
        0 => problems.push(("tracing.queue_size".into(), "must be at least 1".into())),
        n if n > MAX_SPAN_QUEUE => problems.push((
            "tracing.queue_size".into(),
            format!("{n} is over the maximum of {MAX_SPAN_QUEUE}"),
        )),
        _ => {}
    }
    if tracing.batch_size == 0 {
        problems.push(("tracing.batch_size".into(), "must be at least 1".into()));
    }
    for (field, value) in [
        ("tracing.export_interval", tracing.export_interval),
        ("tracing.export_timeout", tracing.export_timeout),
    ] {
        if value.is_zero() {
            problems.push((field.into(), "must be more than zero".into()));
        }
    }
}

/// A route's `endpoints`: at least one; a `dns:` or `file:` source alone; a file that exists
/// and lists addresses.
fn endpoint_problems(field: &str, endpoints: &[Endpoint], problems: &mut Vec<(String, String)>) {
    if endpoints.is_empty() {
        problems.push((field.into(), "needs at least one endpoint".into()));
        return;
    }
    if endpoints.len() > 1
        && let Some(source) = endpoints.iter().find(|e| e.is_dynamic())
    {
        problems.push((
            field.into(),
            format!("\"{source}\" must be the route's only entry: list either addresses or one dns: or file: source"),
        ));
    }
    for endpoint in endpoints {
        if let Endpoint::File(path) = endpoint {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Err(e) = parse_endpoints_file(&text) {
                        problems.push((field.into(), format!("\"{endpoint}\": {e}")));
                    }
                }
                Err(e) => problems.push((
                    field.into(),
                    format!("\"{endpoint}\": cannot read the file: {e}"),
                )),
            }
        }
    }
}

fn timeout_problems(field: &str, timeout: &TimeoutSetting, problems: &mut Vec<(String, String)>) {
    if let Err(e) = timeout.0.validate() {
        problems.push((format!("{field}.{}", e.field()), e.to_string()));
    }
}

/// A TOML syntax or type error, with its line and the key it concerns.
fn parse_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let field = line
        .and_then(|n| text.lines().nth(n - 1))
        .and_then(|l| l.split('=').next())
        .map(|k| k.trim().trim_matches(['[', ']']).to_owned())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "(syntax)".to_owned());
    ConfigError {
        field,
        line,
        message: error.message().to_owned(),
    }
}

/// The line where `field` (a path like `outbound[1].retry.backoff.base`) is set, found by
/// walking table headers and keys; else the header of the nearest enclosing table.
fn locate(text: &str, field: &str) -> Option<usize> {
    let within = |path: &str| field == path || field.starts_with(&format!("{path}."));
    let mut enclosing = None;
    let mut table: Vec<String> = Vec::new();
    let mut array_counts = std::collections::HashMap::<String, usize>::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_owned();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = vec![format!("{name}[{count}]")];
            *count += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // A sub-table of the latest array element keeps its index: [outbound.retry].
            let mut segments: Vec<String> = name.trim().split('.').map(str::to_owned).collect();
            if let Some(first) = table.first()
                && first.split('[').next() == Some(segments[0].as_str())
            {
                segments[0] = first.clone();
            }
            table = segments;
        } else if let Some((key, _)) = line.split_once('=') {
            let mut path = table.clone();
            path.push(key.trim().to_owned());
            // The exact key, or an inline table holding it (backoff = { base = ... }).
            if within(&path.join(".")) {
                return Some(n + 1);
            }
            continue;
        } else {
            continue;
        }
        // The deepest table that holds the field: [outbound.breaker] over [[outbound]].
        if within(&table.join(".")) && enclosing.is_none_or(|(depth, _)| table.len() > depth) {
            enclosing = Some((table.len(), n + 1));
        }
    }
    enclosing.map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::{Config, Endpoint, locate, parse_endpoints_file};
    use std::path::PathBuf;

    fn route(endpoints: &str) -> String {
        format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:15001\"\nendpoints = [{endpoints}]\n"
        )
    }

    /// The single error of `text`, as printed.
    fn error(text: &str) -> String {
        let errors = Config::parse(text).unwrap_err();
        assert_eq!(errors.errors.len(), 1, "{errors}");
        errors.to_string()
    }

    #[test]
    fn endpoints_are_addresses_dns_names_or_files() {
        let cases = [
            (
                "10.0.0.7:15006",
                Endpoint::Static("10.0.0.7:15006".parse().unwrap()),
            ),
            ("[::1]:80", Endpoint::Static("[::1]:80".parse().unwrap())),
            (
                "dns:payments.shop.svc.cluster.local:15006",
                Endpoint::Dns {
                    name: "payments.shop.svc.cluster.local".into(),
                    port: 15006,
                },
            ),
            (
                "dns:payments.:80",
                Endpoint::Dns {
                    name: "payments.".into(),
                    port: 80,
                },
            ),
            (
                "file:/etc/endpoints.json",
                Endpoint::File(PathBuf::from("/etc/endpoints.json")),
            ),
        ];
        for (text, endpoint) in cases {
            assert_eq!(text.parse::<Endpoint>().unwrap(), endpoint, "{text}");
            assert_eq!(endpoint.to_string(), text);
        }
        for (text, problem) in [
            ("dns:payments.shop.svc", "needs a port: dns:NAME:PORT"),
            ("dns:payments:0", "is not a port"),
            ("dns:payments:http", "is not a port"),
            ("dns::80", "is not a DNS name"),
            ("dns:pay ments:80", "is not a DNS name"),
            ("file:", "needs a path"),
            (
                "payments:80",
                "is not an IP:PORT address, dns:NAME:PORT or file:PATH",
            ),
        ] {
            let error = text.parse::<Endpoint>().unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn endpoint_errors_name_the_line_and_field() {
        let text = route("\"dns:payments.shop.svc\"");
        let message = error(&text);
        assert!(message.contains("line 4: `endpoints`"), "{message}");
        assert!(message.contains("needs a port: dns:NAME:PORT"), "{message}");

        let message = error(&route("\"file:/nonexistent/endpoints.txt\""));
        assert!(
            message.contains("line 4: `outbound[0].endpoints`: \"file:/nonexistent/endpoints.txt\": cannot read the file"),
            "{message}"
        );

        let message = error(&route("\"10.0.0.7:80\", \"dns:payments:80\""));
        assert!(
            message.contains(
                "`outbound[0].endpoints`: \"dns:payments:80\" must be the route's only entry"
            ),
            "{message}"
        );

        let message = error(&format!(
            "[discovery]\ndns_refresh = \"1ms\"\n{}",
            route("\"dns:payments:80\"")
        ));
        assert!(
            message.contains("line 2: `discovery.dns_refresh`: 1ms is below the minimum of 10ms"),
            "{message}"
        );
        let message = error(&format!(
            "[discovery]\nresolver = \"10.0.0.1\"\n{}",
            route("\"dns:payments:80\"")
        ));
        assert!(message.contains("line 2: `resolver`"), "{message}");

        let config = Config::parse(&format!(
            "[discovery]\nresolver = \"127.0.0.1:5353\"\n{}",
            route("\"dns:payments:80\"")
        ))
        .unwrap();
        assert_eq!(
            config.discovery.resolver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert!(
            config
                .to_toml()
                .contains("endpoints = [\"dns:payments:80\"]")
        );
    }

    #[test]
    fn endpoint_files_hold_lines_or_json() {
        let a = "10.0.0.7:80".parse().unwrap();
        let b = "[fd00::8]:80".parse().unwrap();
        for text in [
            "10.0.0.7:80\n[fd00::8]:80\n",
            "# pods\n\n  10.0.0.7:80  # first\n[fd00::8]:80",
            "[\"10.0.0.7:80\", \"[fd00::8]:80\"]",
            "{\"endpoints\": [\"10.0.0.7:80\", \"[fd00::8]:80\"]}",
        ] {
            assert_eq!(parse_endpoints_file(text).unwrap(), vec![a, b], "{text}");
        }
        for (text, problem) in [
            (
                "10.0.0.7:80\nten.0.0.8:80\n",
                "line 2: \"ten.0.0.8:80\" is not an IP:PORT address",
            ),
            (
                "[\"10.0.0.7:80\", \"x\"]",
                "entry 1: \"x\" is not an IP:PORT address",
            ),
            ("{\"pods\": []}", "not a JSON array"),
            ("# nothing yet\n", "lists no endpoint"),
            ("[]", "lists no endpoint"),
        ] {
            let error = parse_endpoints_file(text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn fields_are_located_by_table_and_key() {
        let text = "[admin]\nlisten = \"127.0.0.1:1\"\n\n[[outbound]]\nname = \"a\"\n\n[[outbound]]\nname = \"b\"\nretry = { attempts = 0 }\n\n[outbound.breaker]\nfailure_rate = 2.0\n";
        assert_eq!(locate(text, "admin.listen"), Some(2));
        assert_eq!(locate(text, "outbound[1].name"), Some(8));
        assert_eq!(locate(text, "outbound[1].retry.attempts"), Some(9));
        assert_eq!(locate(text, "outbound[1].breaker.failure_rate"), Some(12));
        // A key left at its default: the enclosing table's header.
        assert_eq!(locate(text, "outbound[1].breaker.window"), Some(11));
        assert_eq!(locate(text, "inbound.listen"), None);
    }
}
