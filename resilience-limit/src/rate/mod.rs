//! The rate limit: a GCRA limiter (governor's) over the whole service, and one per caller.

mod clock;
#[cfg(feature = "serde")]
mod config;
mod layer;
mod limits;
mod service;

#[cfg(feature = "serde")]
pub use config::{CallerRateConfig, RateLimitConfig};
pub use layer::{CallerKey, NoCallers, RateLimitLayer};
pub use service::RateLimit;

use governor::Quota;
use resilience_core::ConfigError;
use std::{num::NonZeroU32, time::Duration};

/// A rate: `per_second` calls a second on average, and up to `burst` at once after a quiet
/// spell (the GCRA's cell rate and burst tolerance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    period: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// `per_second` calls a second (more than 0, at most a billion; fractions allowed: 0.5
    /// is one call every two seconds), in bursts of up to `burst` (at least 1).
    pub fn new(per_second: f64, burst: u32) -> Result<Self, ConfigError> {
        if !(per_second > 0.0 && per_second <= 1e9) {
            return Err(ConfigError::new(
                "rate",
                per_second,
                "must be more than 0 and at most 1e9 calls a second",
            ));
        }
        let burst = NonZeroU32::new(burst)
            .ok_or_else(|| ConfigError::new("burst", burst, "must be at least 1"))?;
        Ok(Self {
            period: Duration::from_secs_f64(1.0 / per_second),
            burst,
        })
    }

    /// `per_second` calls a second, in bursts of as many (at least 1).
    pub fn per_second(per_second: f64) -> Result<Self, ConfigError> {
        // Saturating: a rate above `u32::MAX` is refused by `new` anyway.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 1..=u32::MAX first"
        )]
        let burst = per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        Self::new(per_second, burst)
    }

    pub(crate) fn quota(self) -> Quota {
        Quota::with_period(self.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}
