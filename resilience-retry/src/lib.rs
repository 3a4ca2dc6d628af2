//! Retries for [tower] services that are safe to turn on everywhere.
//!
//! - **Bounded**: at most `attempts` tries (3 by default, counting the first), and a retry
//!   [`Budget`] shared by every clone of the layer: retries may not exceed `ratio` x requests
//!   over a window, plus a small reserve, so a failing upstream sees at most
//!   `1 + ratio` times its normal traffic, never a retry storm.
//! - **Spread out**: exponential [`Backoff`] with full, equal or decorrelated [`Jitter`].
//! - **Deadline-aware**: no retry starts that could not finish its backoff before the request's
//!   deadline (a [`resilience_timeout::Deadline`] set by a total timeout outside).
//! - **Cheap on success**: the copy of the request that the policy keeps for replay, and two
//!   reference counts per call. Retries go through clones of one spare clone of the inner
//!   service, made on the first request (and again after
//!   [`Retry::get_mut`]), not through the clone that took the first attempt: as with any
//!   tower service, the clones of the inner service are expected to share its state.
//!
//! ```
//! use resilience_retry::{Backoff, RetryIf, RetryLayer};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Busy on the first call, fine after that.
//! static CALLS: AtomicU32 = AtomicU32::new(0);
//! let flaky = service_fn(|name: &'static str| async move {
//!     match CALLS.fetch_add(1, Ordering::SeqCst) {
//!         0 => Err("busy"),
//!         _ => Ok(format!("hello, {name}")),
//!     }
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::new(RetryIf::new(|result: &Result<String, &str>| result.is_err()))
//!             .attempts(3)?
//!             .backoff(Backoff::new(Duration::from_millis(10), Duration::from_secs(1))?),
//!     )
//!     .service(flaky);
//!
//! assert_eq!(service.oneshot("world").await?, "hello, world");
//! assert_eq!(CALLS.load(Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP (feature `http`)
//!
//! [`HttpPolicy`] retries `http::Request<B>` with any body: conditions by name (`5xx`,
//! `gateway-error`, `connect-failure`, `reset`, `retriable-status-codes`, gRPC codes), only
//! idempotent methods unless configured otherwise, `Retry-After` honoured, an attempt header on
//! every retry, and request bodies replayed up to a cap (64 KiB by default) without ever being
//! collected whole. A gRPC status is read from the response head or, with
//! [`PeekGrpcTrailersLayer`] inside the retry layer, from trailers that follow the head at once.
//!
//! The services below the layer receive `http::Request<`[`ReplayBody`]`<B>>`, the body it can
//! send again: build the client for that body type (with hyper-util,
//! `Client<_, ReplayBody<Full<Bytes>>>`). Put each attempt's circuit breaker outside its
//! per-try timeout, so that an attempt that times out counts against the breaker.
//!
//! A gRPC call is a POST, so it is not idempotent by method; a gRPC status condition that was
//! configured (`unavailable`, `resource-exhausted`...) still retries it when the request's
//! `content-type` is `application/grpc*`, because the server declined the call with that
//! status (gRPC A6, Envoy's `retry-grpc-on`). Requests that provably never reached the server
//! (a failed connect, an HTTP/2 `REFUSED_STREAM` or `GOAWAY`) are retried whatever their
//! method.
//!
//! **Deadline headers.** A total timeout with
//! [`HttpDeadline`](resilience_timeout::HttpDeadline) outside the retry layer writes the time
//! left (`grpc-timeout` / `x-request-timeout-ms`) into the request; each retry rewrites it
//! with the time left when the retry is sent.
//!
//! # Config (feature `serde`)
//!
//! [`RetryConfig`] is the retry section of a `sidecar-lite` config file; library users load
//! the same section and call [`RetryConfig::layer`].
//!
//! # Metrics
//!
//! `resilience_retry_attempts_total{layer, outcome}` counts retries (`outcome="retried"`) and
//! retries given up (`attempts_exhausted`, `deadline`, `budget_exhausted`, `not_replayable`);
//! `resilience_retry_budget_exhausted_total{layer}` counts budget refusals. Each retry emits a
//! debug-level tracing event with the attempt number and the reason.
//!
//! How this crate fits with the others: `ARCHITECTURE.md` at the root of the workspace's
//! repository.
//!
//! [tower]: https://docs.rs/tower

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
mod future;
mod hedge;
mod layer;
mod policy;
mod service;
mod spare;

#[cfg(feature = "http")]
mod conditions;
#[cfg(feature = "http")]
mod grpc_trailers;
#[cfg(feature = "http")]
mod http_policy;
#[cfg(feature = "http")]
mod replay;
#[cfg(feature = "http")]
pub mod retry_after;

#[cfg(feature = "serde")]
mod config;

pub use backoff::{Backoff, Jitter};
pub use budget::Budget;
pub use future::ResponseFuture;
pub use hedge::{Hedge, HedgeDelay, HedgeFuture, HedgeLayer};
pub use layer::RetryLayer;
pub use policy::{Action, Policy, Reason, Replay, RetryIf};
pub use resilience_core::{BoxError, ConfigError, RandomSource, ThreadRandom};
pub use service::Retry;

#[cfg(feature = "http")]
pub use conditions::{CONNECT_FAILURE, Condition, GrpcCode, GrpcTrailers, RetryClass, RetryOn};
#[cfg(feature = "http")]
pub use grpc_trailers::{
    PeekFuture, PeekGrpcTrailers, PeekGrpcTrailersLayer, PeekedBody, TrailersGrpcStatus,
};
#[cfg(feature = "http")]
pub use http_policy::{DEFAULT_MAX_RETRY_AFTER, HttpPolicy, IDEMPOTENCY_KEY, RETRY_ATTEMPT};
#[cfg(feature = "http")]
pub use replay::{DEFAULT_MAX_REPLAY_BODY, NotReplayable, ReplayBody};

#[cfg(feature = "serde")]
pub use config::{BackoffConfig, BudgetConfig, RetryConfig};
#[cfg(feature = "serde")]
pub use hedge::{HedgeConfig, HedgeDelayConfig};

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
