//! Timeouts for [tower] services: total and per-try, deadline propagation over `grpc-timeout`,
//! and `504 Gateway Timeout` at HTTP edges.
//!
//! ```
//! use resilience_timeout::{Elapsed, TimeoutLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|name: &'static str| async move {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, std::convert::Infallible>(format!("hello, {name}"))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)).named("total"))
//!     .service(slow);
//!
//! let err = service.oneshot("world").await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # }
//! ```
//!
//! # Total and per-try timeouts
//!
//! The same layer serves twice in one stack: outside a retry layer it caps the whole call, all
//! attempts and backoff included; inside it caps each attempt. With the `http` feature and the
//! [`HttpDeadline`] policy, the inner timeout also never outlives the outer one, because the
//! outer layer records its [`Deadline`] in the request.
//!
//! ```
//! use resilience_timeout::TimeoutLayer;
//! use std::{future, time::Duration};
//! use tower::{BoxError, ServiceBuilder, retry::Policy, service_fn};
//!
//! /// Retries failed calls, up to `left` more times.
//! #[derive(Clone)]
//! struct Attempts { left: usize }
//!
//! impl<Req: Clone, Res> Policy<Req, Res, BoxError> for Attempts {
//!     type Future = future::Ready<()>;
//!     fn retry(&mut self, _: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
//!         (result.is_err() && self.left > 0).then(|| {
//!             self.left -= 1;
//!             future::ready(())
//!         })
//!     }
//!     fn clone_request(&mut self, req: &Req) -> Option<Req> {
//!         Some(req.clone())
//!     }
//! }
//!
//! let service = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)).named("total"))
//!     .retry(Attempts { left: 2 })
//!     .layer(TimeoutLayer::new(Duration::from_millis(500)).named("per-try"))
//!     .service(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
//! # let _ = service;
//! ```
//!
//! # HTTP (feature `http`)
//!
//! - [`HttpDeadline`]: a policy that honours an incoming `grpc-timeout` (or
//!   [`x-request-timeout-ms`](REQUEST_TIMEOUT_MS)) header, fails at once when the deadline has
//!   passed, and tells the next hop how much time remains.
//! - [`GatewayTimeoutLayer`]: answers a timeout with `504 Gateway Timeout` and
//!   `x-sidecar-error: timeout` instead of an error, for servers and proxies.
//! - [`ResponseBodyTimeoutLayer`]: idle and total timeouts for response bodies.
//!
//! # Config (feature `serde`)
//!
//! [`TimeoutConfig`] is the timeout section of a `sidecar-lite` config file; library users load
//! the same section and call [`TimeoutConfig::layer`].
//!
//! # Metrics
//!
//! `resilience_timeout_total{layer}` counts timeouts by layer name (see
//! [`TimeoutLayer::named`]); each timeout also emits a debug-level tracing event.
//!
//! How this crate fits with the others: `ARCHITECTURE.md` at the root of the workspace's
//! repository.
//!
//! [tower]: https://docs.rs/tower

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod future;
mod layer;
mod policy;
mod service;

#[cfg(feature = "http")]
mod body;
#[cfg(feature = "http")]
mod deadline;
#[cfg(feature = "http")]
mod gateway;
#[cfg(feature = "http")]
pub mod grpc_timeout;

#[cfg(feature = "serde")]
mod config;
#[cfg(feature = "serde")]
pub use resilience_core::duration;

pub use error::Elapsed;
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
pub use policy::{Fixed, TimeoutPolicy, Verdict, instant_after};
pub use resilience_core::{BoxError, ConfigError};
pub use service::Timeout;

#[cfg(feature = "http")]
pub use body::{
    BodyTimeout, ResponseBodyTimeout, ResponseBodyTimeoutFuture, ResponseBodyTimeoutLayer,
    TimeoutBody,
};
#[cfg(feature = "http")]
pub use deadline::{Deadline, HttpDeadline, REQUEST_TIMEOUT_MS};
#[cfg(feature = "http")]
pub use gateway::{
    GatewayTimeout, GatewayTimeoutBody, GatewayTimeoutFuture, GatewayTimeoutLayer, TimeoutReply,
};
#[cfg(feature = "http")]
pub use resilience_core::SIDECAR_ERROR;

#[cfg(feature = "serde")]
pub use config::TimeoutConfig;

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
