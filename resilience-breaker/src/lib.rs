//! Circuit breaking for [tower] services, with the semantics of resilience4j: count-based and
//! time-based sliding windows, failure-rate and slow-call-rate thresholds, half-open probes,
//! open durations that back off, and one breaker per endpoint.
//!
//! ```
//! use resilience_breaker::{
//!     BreakerOpen, CircuitBreakerLayer, ConfigError, Policy, SlidingWindow, State,
//! };
//! use std::time::Duration;
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ConfigError> {
//! let failing = service_fn(|_: ()| async { Err::<(), BoxError>("upstream is down".into()) });
//! let policy = Policy::default()
//!     .failure_rate(0.5)
//!     .window(SlidingWindow::Count(10))
//!     .minimum_calls(5)
//!     .open_for(Duration::from_secs(5))
//!     .jitter(0.0);
//! let mut service = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(policy)?.named("payments"))
//!     .service(failing);
//!
//! for _ in 0..5 {
//!     let err = service.ready().await.unwrap().call(()).await.unwrap_err();
//!     assert_eq!(err.to_string(), "upstream is down");
//! }
//! // Five failures of five calls: the breaker is open, and calls fail at once.
//! assert_eq!(service.handle().state(), State::Open);
//! let err = service.ready().await.unwrap().call(()).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().expect("rejected by the breaker");
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - [`StateMachine`] is the breaker itself: [`State`] (Closed, Open, HalfOpen, and the manual
//!   ForcedOpen, Disabled and MetricsOnly), a lock-free [`SlidingWindow`] and the rules of a
//!   [`Policy`]. It has no clock and does no I/O: it is given the time, and it returns the
//!   [`Transition`]s it makes. In the Closed state, checking the state is one atomic load and
//!   recording an outcome a few atomic operations: no lock, no allocation.
//! - It trips when, over at least `minimum_calls`, the failure rate or the slow-call rate reaches
//!   its threshold, or after `consecutive_failures` failures in a row. Open, it rejects calls for
//!   `open_for`, then half-open lets `half_open_probes` probes through: if all succeed it
//!   closes, if any fails (or is slow, with a slow-call rule) it opens again, for `open_for`
//!   times `open_for_multiplier` per consecutive re-open, up to `open_for_max`, less a random
//!   share of up to `jitter`.
//! - [`CircuitBreaker`] (from [`CircuitBreakerLayer`]) puts it in front of a service, in one of
//!   two [`Mode`]s: fail-fast (`call` fails at once with [`BreakerOpen`], which says when the
//!   next probe is allowed) or back-pressure (`poll_ready` is pending while open, for use under
//!   a balancer). A probe whose future is dropped hands its permit back.
//! - Every constructor that takes a [`Policy`] checks it first ([`Policy::validate`]) and
//!   returns a [`ConfigError`] naming the field that is wrong and its value, so a breaker never
//!   runs with a policy that does not make sense, and nothing panics on one.
//! - [`Classify`] says which responses are failures; an `Err` always is. With the `http`
//!   feature, any [`tower_http::classify::ClassifyResponse`] works for HTTP, for example
//!   [`ServerErrorsAsFailures`] (5xx) or [`GrpcErrorsAsFailures`], re-exported here so that
//!   no `tower-http` of a matching version is needed beside this crate.
//! - [`BreakerHandle`] observes and controls a breaker: state, counts, `force_open`,
//!   `force_closed`, `disable`, `reset`, and [`subscribe`](BreakerHandle::subscribe) to its
//!   transitions.
//! - [`KeyedCircuitBreakerLayer`] (feature `http`) keeps one breaker per key, by default the
//!   request's authority,
//!   bounded in number (least recently used dropped first) with idle ones dropped.
//!
//! # Keyed breakers (feature `http`)
//!
//! ```
//! use http::{Request, Response};
//! use resilience_breaker::{KeyedCircuitBreakerLayer, Policy};
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//! use resilience_breaker::ServerErrorsAsFailures;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let client = service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(())) });
//! let client = ServiceBuilder::new()
//!     .layer(
//!         KeyedCircuitBreakerLayer::new(Policy::default())?
//!             .classify(ServerErrorsAsFailures::new())
//!             .max_breakers(256),
//!     )
//!     .service(client);
//!
//! let request = Request::get("http://10.0.0.7:8080/pay").body(())?;
//! client.clone().oneshot(request).await?;
//! assert_eq!(client.breakers().len(), 1); // one breaker, for 10.0.0.7:8080
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP (feature `http`)
//!
//! [`UnavailableLayer`] answers a rejection with `503 Service Unavailable`, `Retry-After` when
//! the next probe's time is known, and `x-sidecar-error: breaker-open` instead of an error: the
//! [`LocalReply`](resilience_core::LocalReply) of `resilience-core`, the same as sidecar-lite's.
//!
//! # Config (feature `serde`)
//!
//! [`BreakerConfig`] is the breaker section of a `sidecar-lite` config file; library users load
//! the same section and call [`BreakerConfig::layer`].
//!
//! # Metrics
//!
//! The gauge `resilience_breaker_state{name}` (0 closed, 1 open, 2 half-open), the counters
//! `resilience_breaker_calls_total{name,outcome}` (`success`, `failure`, `slow_success`,
//! `slow_failure`) and `resilience_breaker_rejected_total{name}`; keyed breakers add a `key`
//! label. Each transition is an info-level tracing event.
//!
//! How this crate fits with the others: `ARCHITECTURE.md` at the root of the workspace's
//! repository.
//!
//! [tower]: https://docs.rs/tower

#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
mod ejection;
mod error;
mod future;
mod handle;
mod layer;
mod policy;
mod service;
mod state;
mod window;

#[cfg(feature = "http")]
pub mod keyed;

#[cfg(feature = "http")]
mod unavailable;

#[cfg(feature = "serde")]
mod config;

pub use classify::{Classify, ClassifyFn, ErrorsAsFailures, classify_fn};
pub use ejection::EjectionCap;
pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use handle::BreakerHandle;
pub use layer::CircuitBreakerLayer;
pub use policy::Policy;
pub use resilience_core::{BoxError, ConfigError, Enforcement, RandomSource, ThreadRandom};
pub use service::{CircuitBreaker, Mode};
pub use state::{Outcome, PROBE_RESERVATION_LAPSE, Permit, State, StateMachine, Transition};
pub use window::{Counts, SlidingWindow};

#[cfg(feature = "http")]
pub use keyed::{BreakerMap, ByAuthority, KeyOf, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};

#[cfg(feature = "http")]
pub use resilience_core::SIDECAR_ERROR;
/// The classifiers of `tower-http` that [`CircuitBreakerLayer::classify`] takes for HTTP and
/// gRPC, re-exported so that a service needs no `tower-http` of its own at a matching version.
#[cfg(feature = "http")]
pub use tower_http::classify::{
    GrpcCode, GrpcErrorsAsFailures, ServerErrorsAsFailures, StatusInRangeAsFailures,
};
#[cfg(feature = "http")]
pub use unavailable::{
    BreakerReply, Unavailable, UnavailableBody, UnavailableFuture, UnavailableLayer,
};

#[cfg(feature = "serde")]
pub use config::{BreakerConfig, WindowConfig};

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
