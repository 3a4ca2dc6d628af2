//! Limits for tower services, each refusing at once what is over it (never queueing), with a
//! shadow mode that only counts and logs:
//!
//! - [`RateLimitLayer`]: a GCRA rate limit (governor's) over the whole service, and one per
//!   caller in a bounded set; a refusal is [`RateLimited`], with how long to wait.
//! - [`AdaptiveConcurrencyLayer`]: a limit on calls in flight that finds itself from their
//!   latency and failures ([`Gradient2`], [`Aimd`] or [`Vegas`], after Netflix's
//!   concurrency-limits); a refusal is [`Overloaded`].
//! - [`FixedConcurrencyLayer`]: a fixed limit on calls in flight, refused the same way (where
//!   tower's `LoadShed` over `ConcurrencyLimit` leaves a queued acquire in a shed service).
//!
//! With the `http` feature, [`LimitReplyLayer`] answers refusals as `429` and `503` with
//! `x-sidecar-error`; with `serde`, [`RateLimitConfig`] and [`AdaptiveConfig`] read the same
//! sections that sidecar-lite reads.
//!
//! ```
//! use resilience_limit::{AdaptiveConcurrencyLayer, Algorithm, Rate, RateLimitLayer};
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(Rate::per_second(100.0)?))
//!     .layer(AdaptiveConcurrencyLayer::new(Algorithm::default()))
//!     .service(service_fn(|name: String| async move { Ok::<_, BoxError>(name.len()) }));
//! assert_eq!(service.oneshot("orders".to_owned()).await?, 6);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics: `resilience_rate_limited_total{name, scope, mode}`,
//! `resilience_concurrency_shed_total{name, mode}` and the gauge
//! `resilience_concurrency_limit{name}`. Each refusal is a `debug` event.
//! How the crates fit together: `ARCHITECTURE.md` at the root of the workspace's repository.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod error;
mod fixed;
mod future;
#[cfg(feature = "http")]
mod held;
#[cfg(feature = "http")]
mod http;
mod place;
mod rate;

pub use adaptive::{
    AdaptiveConcurrency, AdaptiveConcurrencyLayer, AdaptiveHandle, Aimd, Algorithm, Gradient2,
    Permit, Vegas,
};
#[cfg(feature = "serde")]
pub use adaptive::{AdaptiveConfig, AlgorithmName};
pub use error::{Overloaded, RateLimited, Scope};
pub use fixed::{FixedConcurrency, FixedConcurrencyLayer, FixedPermit};
pub use future::{AtResponse, Completion, Release, ResponseFuture};
#[cfg(feature = "http")]
pub use held::{AtBodyEnd, HeldBody};
#[cfg(feature = "http")]
pub use http::{LimitReply, LimitReplyLayer, reply_to};
pub use place::Place;
pub use rate::{CallerKey, NoCallers, Rate, RateLimit, RateLimitLayer};
#[cfg(feature = "serde")]
pub use rate::{CallerRateConfig, RateLimitConfig};
pub use resilience_core::{BoxError, Enforcement};

/// The README's example, compiled as a doctest so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
