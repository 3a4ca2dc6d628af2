//! The adaptive concurrency limit: a limit on calls in flight that finds itself from the
//! latency and failures of the calls, as Netflix's concurrency-limits does.

mod algorithm;
#[cfg(feature = "serde")]
mod config;
mod layer;
mod limiter;
mod service;

pub use algorithm::{Aimd, Algorithm, Gradient2, Vegas};
#[cfg(feature = "serde")]
pub use config::{AdaptiveConfig, AlgorithmName};
pub use layer::{AdaptiveConcurrencyLayer, AdaptiveHandle};
pub(crate) use limiter::HeldPlace;
pub use limiter::Permit;
pub use service::AdaptiveConcurrency;
