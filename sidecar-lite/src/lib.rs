//! `sidecar-lite`: a small proxy that runs beside an application and stacks the resilience
//! middleware crates (timeout, retry, circuit breaker, mutual TLS) from one config file.
//!
//! The modules read as the path of a request, with no import running back up: `config`
//! (parse and validate into typed values, nothing else) feeds `proxy` (the edge: listeners,
//! connections, framing, header rules, spans, local replies), which hands each request to
//! `stack` (the only place that assembles layers), which ends in `transport` (the clients to
//! peers and to the app); `run` (lifecycle, signals, reload) and `admin` stand beside them.
//! `ARCHITECTURE.md` at the root of the repository walks one request through both sidecars.
//!
//! Features: `proxy` (default) is the sidecar itself (listeners, admin server, reload, OTLP
//! export, access logs, the binary) and brings `dns` (`dns:` endpoints, with
//! hickory-resolver). A service that only builds stacks from config sections depends on this
//! crate with `default-features = false`: the config types and the stack builders over the
//! four middleware crates, without clap, OpenTelemetry, hickory-resolver, the Prometheus
//! exporter or tracing-subscriber.
//!
//! What is public is what library users and the binary need:
//!
//! - [`Config`] parses and validates a config file; [`OutboundConfig`] and [`InboundConfig`]
//!   are its routes.
//! - [`outbound`] and [`inbound`] build the very stacks the sidecar serves, for library mode;
//!   [`local_reply`] answers their errors as the sidecar does.
//! - `Sidecar` runs a whole config, as the binary does (feature `proxy`).
//!
//! ```no_run
//! use sidecar_lite::{Config, outbound, local_reply};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = Config::parse(r#"
//!     [[outbound]]
//!     name = "payments"
//!     listen = "127.0.0.1:15001"
//!     endpoints = ["127.0.0.1:8080"]
//!     timeout = "2s"
//!     [outbound.retry]
//!     attempts = 3
//! "#)?;
//! let route = config.outbound_route("payments").expect("the route is in the file");
//! let stack = outbound::<Full<Bytes>>(&config, route, None)?;
//! let request = http::Request::get("http://payments/charge").body(Full::default())?;
//! let grpc = resilience_core::is_grpc(request.headers());
//! let response = match stack.oneshot(request).await {
//!     Ok(response) => response,
//!     Err(error) => local_reply(&error, grpc), // 504 timeout, 503 breaker-open, ...
//! };
//! println!("{}", response.status());
//! # Ok(()) }
//! ```

#[cfg(feature = "proxy")]
mod admin;
mod config;
mod proxy;
#[cfg(feature = "proxy")]
mod run;
mod stack;
mod transport;

pub use config::{Config, ConfigErrors, ConfigProblem, InboundConfig, OutboundConfig};
pub use proxy::local_reply;
#[cfg(feature = "proxy")]
pub use run::{Bound, Sidecar};
pub use stack::{StackService, inbound, outbound};
pub use transport::ProxyBody;

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
