//! The listeners' sections: `[inbound]` and each `[[outbound]]` route, with identities and
//! allow-lists parsed into typed values once, here.

use super::{endpoints::Endpoint, limits::ConcurrencyLimit};
use resilience_breaker::BreakerConfig;
use resilience_core::{ConfigError, Enforcement};
use resilience_limit::RateLimitConfig;
use resilience_mtls::{AllowList, Identity, IdentityPattern, MtlsMode};
use resilience_retry::{HedgeConfig, RetryConfig};
use resilience_timeout::{HttpDeadline, TimeoutConfig, TimeoutLayer};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// `[inbound]`: other sidecars to our app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Where peers connect. Required.
    pub(crate) listen: SocketAddr,
    /// Our app. Required.
    pub(crate) app: SocketAddr,
    /// `strict` (default), `permissive` or `disabled`.
    #[serde(default)]
    pub(crate) mtls: MtlsMode,
    /// Peer identities allowed in: exact, or with `*` for one path segment. Default: none,
    /// so nobody is let in until the operator says who may call.
    #[serde(default, with = "super::text::list")]
    pub(crate) allow: Vec<IdentityPattern>,
    /// Admit callers without an identity: plaintext callers in `permissive` or `disabled`
    /// mode. Default `false`.
    #[serde(default)]
    pub(crate) allow_anonymous: bool,
    /// `enforce` (the default), or `shadow`: a caller `allow` would refuse is served, and
    /// counted (`resilience_mtls_denied_total{mode="shadow"}`) and logged as refused.
    #[serde(default)]
    pub(crate) allow_mode: Enforcement,
    /// The timeout for each request to the app. Default 15 s.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: TimeoutConfig,
    /// Requests in flight at once; beyond it, 503 at once: a number (default 1024),
    /// `"adaptive"`, or a table of `resilience_limit::AdaptiveConfig` keys.
    #[serde(default)]
    pub(crate) max_concurrent_requests: ConcurrencyLimit,
    /// A rate limit over all callers and, with `per_caller`, per peer identity: the keys of
    /// `resilience_limit::RateLimitConfig`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit: Option<RateLimitConfig>,
    /// How to speak to the app: `auto` (HTTP/2 for gRPC, HTTP/1.1 otherwise; the default),
    /// `http1` or `http2` (h2c with prior knowledge).
    #[serde(default)]
    pub(crate) app_protocol: UpstreamProtocol,
}

/// The HTTP a sidecar speaks to what is behind it: the app (`app_protocol`) or an outbound
/// route's endpoints (`endpoint_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UpstreamProtocol {
    /// In plaintext, HTTP/2 (h2c) for gRPC requests and HTTP/1.1 for the rest; over mTLS,
    /// what the peer takes by ALPN of the two, offered HTTP/2 first.
    #[default]
    Auto,
    /// HTTP/1.1 always.
    Http1,
    /// HTTP/2 always: with prior knowledge in plaintext, the only one offered over mTLS.
    Http2,
}

/// `[[outbound]]`: our app to one remote service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The route's name, in metrics and logs. Required and unique.
    pub(crate) name: String,
    /// Where our app sends its plain HTTP for this service. Required; a loopback address
    /// unless `allow_remote_callers`.
    pub(crate) listen: SocketAddr,
    /// Let `listen` be an address other clients on the network can reach. Whoever reaches it
    /// calls out with this workload's identity, so the default is `false`, and a non-loopback
    /// `listen` is refused without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) allow_remote_callers: bool,
    /// The peers' inbound listeners. Required: one or more `IP:PORT` addresses, or one
    /// discovered source, `dns:NAME:PORT` or `file:PATH` (see [`Endpoint`]).
    pub(crate) endpoints: Vec<Endpoint>,
    /// The identity the peers must present. Required with `[identity]`, unless `plaintext` or
    /// `tls`; without `[identity]` (and without `tls`) the route speaks plaintext.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::text::option"
    )]
    pub(crate) server_identity: Option<Identity>,
    /// Speak plaintext to these endpoints although there is an `[identity]`: for a service
    /// outside the mesh, which has no identity to check. Default `false`: with `[identity]`,
    /// a route without `server_identity` is refused rather than sent in plaintext unasked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) plaintext: bool,
    /// TLS to endpoints outside the mesh (an HTTPS API): `{ server_name = "...", trust =
    /// "ca-bundle.pem" }`, with `cert` and `key` for a server that asks for a client
    /// certificate. Default: none. Excludes `server_identity` and `plaintext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<OriginTls>,
    /// How to speak to the endpoints: `auto` (the default), `http1` or `http2`. `auto` is
    /// HTTP/2 to a peer sidecar over mTLS (offered first by ALPN; the faster of the two
    /// between sidecars in `benches/load`), and in plaintext HTTP/2 with prior knowledge for
    /// gRPC and HTTP/1.1 for the rest. gRPC needs HTTP/2.
    #[serde(default)]
    pub(crate) endpoint_protocol: UpstreamProtocol,
    /// The total timeout, all attempts included: `"2s"`, or a table with the keys of
    /// `resilience_timeout::TimeoutConfig`. Default 15 s.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: TimeoutConfig,
    /// Retries: the keys of `resilience_retry::RetryConfig`.
    #[serde(default)]
    pub(crate) retry: RetryConfig,
    /// Hedged requests: the keys of `resilience_retry::HedgeConfig`. Default: none. A route
    /// hedges or retries (gRPC A6): with `hedge`, `retry.attempts` must be 1; copies spend the
    /// retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hedge: Option<HedgeConfig>,
    /// The circuit breaker of each endpoint: the keys of `resilience_breaker::BreakerConfig`.
    #[serde(default)]
    pub(crate) breaker: BreakerConfig,
    /// Requests in flight at once; beyond it, 503 at once: a number (default 1024),
    /// `"adaptive"`, or a table of `resilience_limit::AdaptiveConfig` keys.
    #[serde(default)]
    pub(crate) max_concurrent_requests: ConcurrencyLimit,
    /// A rate limit over the route: the keys of `resilience_limit::RateLimitConfig`, without
    /// `per_caller` (every caller of an outbound route is the local app). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit: Option<RateLimitConfig>,
    /// Faults to inject, for testing how the app copes. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<FaultConfig>,
}

/// `tls = { server_name, trust, cert, key }` on an outbound route: HTTPS to a server outside
/// the mesh, as any HTTPS client speaks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginTls {
    /// The server's name: sent by SNI, checked against its certificate (a DNS name, or an IP
    /// address for a certificate with an IP address SAN), and the authority (`Host`) of every
    /// request the route sends.
    pub(crate) server_name: String,
    /// The CAs its certificate must chain to, in PEM (the system's bundle, such as
    /// `/etc/ssl/certs/ca-certificates.crt`, will do).
    pub(crate) trust: PathBuf,
    /// Our client certificate chain in PEM, for a server that asks for one; with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// The private key of `cert`, in PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
}

/// `[outbound.fault]`: abort or delay a share of requests, as Istio's `fault`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultConfig {
    /// `abort = { percent = 10.0, status = 503 }`: answer that share at once with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) abort: Option<AbortFault>,
    /// `delay = { percent = 5.0, duration = "100ms" }`: hold that share before sending it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delay: Option<DelayFault>,
}

/// An injected abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortFault {
    /// The share of requests aborted, in percent (0 to 100).
    pub(crate) percent: f64,
    /// The status they get (200 to 599).
    pub(crate) status: u16,
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DelayFault {
    /// The share of requests delayed, in percent (0 to 100).
    pub(crate) percent: f64,
    /// How long they are held.
    #[serde(with = "resilience_timeout::duration")]
    pub(crate) duration: Duration,
}

impl FaultConfig {
    /// Whether any request can be aborted or delayed: a share above 0 %.
    pub(crate) fn injects(&self) -> bool {
        self.abort.as_ref().is_some_and(|abort| abort.percent > 0.0)
            || self.delay.as_ref().is_some_and(|delay| delay.percent > 0.0)
    }
}

fn default_timeout() -> TimeoutConfig {
    TimeoutConfig::new(Duration::from_secs(15))
}

impl InboundConfig {
    /// The identities let in: `allow`, and anonymous callers if `allow_anonymous`.
    pub(crate) fn allow_list(&self) -> AllowList {
        self.allow
            .iter()
            .cloned()
            .fold(AllowList::new(), AllowList::allow)
            .allow_anonymous(self.allow_anonymous)
    }
}

impl OutboundConfig {
    /// The route's name, in metrics and logs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's endpoints as the file writes them: `IP:PORT` addresses, or one `dns:` or
    /// `file:` source.
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(ToString::to_string).collect()
    }

    /// The identity the route's peers must present, when it speaks mTLS.
    #[must_use]
    pub fn server_identity(&self) -> Option<&Identity> {
        self.server_identity.as_ref()
    }

    /// Whether the route speaks plaintext to its endpoints although there is an `[identity]`.
    #[must_use]
    pub fn plaintext(&self) -> bool {
        self.plaintext
    }

    /// Whether the route speaks mTLS to peer sidecars, given whether there is an
    /// `[identity]`: unless it asks for plaintext or for HTTPS to a server outside the
    /// mesh.
    pub(crate) fn in_mesh(&self, identity: bool) -> bool {
        identity && !self.plaintext && self.tls.is_none()
    }

    /// The total timeout, all attempts included.
    #[must_use]
    pub fn timeout(&self) -> &TimeoutConfig {
        &self.timeout
    }

    /// The total timeout as the route's stack takes it, named `total`. With a per-try timeout
    /// every attempt passes one, which tells the next hop the time left as the attempt leaves,
    /// so the total leaves that header to it rather than write one it would replace.
    pub fn total_timeout_layer(&self) -> Result<TimeoutLayer<HttpDeadline>, ConfigError> {
        let total = self.timeout.layer()?.named("total");
        let told = total
            .policy()
            .told_further_in(self.retry.per_try_timeout.is_some());
        Ok(total.with_policy(told))
    }

    /// The retry section.
    #[must_use]
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// The breaker of each endpoint.
    #[must_use]
    pub fn breaker(&self) -> &BreakerConfig {
        &self.breaker
    }

    /// Requests in flight at once, beyond which requests get 503 at once; `None` when the
    /// limit is adaptive.
    #[must_use]
    pub fn max_concurrent_requests(&self) -> Option<usize> {
        self.max_concurrent_requests.fixed()
    }
}
