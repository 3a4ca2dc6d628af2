//! The rate limit: a GCRA limiter (governor's) over the whole service, and one per caller.

mod bounded;
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

/// The slowest rate: one call a day.
const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
/// The longest a full burst may take to refill: a year.
const MAX_REFILL_SECONDS: f64 = 365.0 * 86_400.0;

/// A rate: `per_second` calls a second on average, and up to `burst` at once after a quiet
/// spell (the GCRA's cell rate and burst tolerance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    period: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// `per_second` calls a second (at least one a day, at most a billion a second;
    /// fractions allowed: 0.5 is one call every two seconds), in bursts of up to `burst` (at
    /// least 1, and no more than the rate refills in a year).
    pub fn new(per_second: f64, burst: u32) -> Result<Self, ConfigError> {
        if !(MIN_PER_SECOND..=1e9).contains(&per_second) {
            return Err(ConfigError::new(
                "rate",
                per_second,
                "must be at least one call a day (1/86400 a second) and at most 1e9 a second",
            ));
        }
        let burst = NonZeroU32::new(burst)
            .ok_or_else(|| ConfigError::new("burst", burst, "must be at least 1"))?;
        // The limiter keeps the time a full burst takes to refill in 64-bit nanoseconds.
        if f64::from(burst.get()) / per_second > MAX_REFILL_SECONDS {
            return Err(ConfigError::new(
                "burst",
                burst,
                "must refill within a year at the rate: lower it, or raise the rate",
            ));
        }
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
