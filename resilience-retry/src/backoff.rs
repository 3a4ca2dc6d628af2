//! Exponential backoff with jitter.

use crate::ConfigError;
use resilience_core::{RandomSource, ThreadRandom};
use std::{fmt, sync::Arc, time::Duration};

/// How the delay before each retry is randomised (AWS, "Exponential Backoff and Jitter").
///
/// With `cap(n) = min(max, base * multiplier^n)` for the n-th retry (n = 0 first):
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Jitter {
    /// `random(0, cap(n))`: spreads retries the most; the default.
    #[default]
    Full,
    /// `cap(n) / 2 + random(0, cap(n) / 2)`: never less than half the cap.
    Equal,
    /// `min(max, random(base, previous * 3))`: grows from the previous delay.
    Decorrelated,
    /// `cap(n)`, exactly.
    None,
}

/// Exponential backoff: `base`, times `multiplier` per retry, capped at `max`, with [`Jitter`].
#[derive(Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
    random: Arc<dyn RandomSource>,
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("base", &self.base)
            .field("max", &self.max)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl Default for Backoff {
    /// 25 ms doubling up to 250 ms, full jitter: the defaults of `examples/sidecar.toml`.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
            multiplier: 2.0,
            jitter: Jitter::Full,
            random: Arc::new(ThreadRandom),
        }
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`, with full jitter. Fails when `base` is zero or
    /// `max` is less than `base`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        Self::default().with(base, max, 2.0)
    }

    /// Sets the factor by which the cap grows on each retry (at least 1).
    pub fn multiplier(self, multiplier: f64) -> Result<Self, ConfigError> {
        let (base, max) = (self.base, self.max);
        self.with(base, max, multiplier)
    }

    fn with(mut self, base: Duration, max: Duration, multiplier: f64) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new(
                "backoff.base",
                format!("{base:?}"),
                "must be greater than zero",
            ));
        }
        if max < base {
            return Err(ConfigError::new(
                "backoff.max",
                format!("{max:?}"),
                "must be at least `backoff.base`",
            ));
        }
        if !(multiplier >= 1.0 && multiplier.is_finite()) {
            return Err(ConfigError::new(
                "backoff.multiplier",
                multiplier,
                "must be a finite number of at least 1",
            ));
        }
        self.base = base;
        self.max = max;
        self.multiplier = multiplier;
        Ok(self)
    }

    /// Sets the jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Replaces the random source, for deterministic tests.
    #[must_use]
    pub fn random(mut self, random: impl RandomSource) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The delay before retry number `retry` (0 for the first retry), given the previous delay
    /// (used by decorrelated jitter; zero before the first retry).
    #[must_use]
    pub fn delay(&self, retry: u32, previous: Duration) -> Duration {
        let cap = self.cap(retry);
        let r = self.random.next_f64().clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => cap.mul_f64(r),
            Jitter::Equal => cap / 2 + (cap / 2).mul_f64(r),
            Jitter::Decorrelated => {
                let upper = previous.max(self.base).saturating_mul(3).min(self.max);
                (self.base + (upper.saturating_sub(self.base)).mul_f64(r)).min(self.max)
            }
        }
    }

    /// `min(max, base * multiplier^retry)`, without overflow.
    fn cap(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let scaled = self.base.as_secs_f64() * factor;
        if scaled.is_finite() && scaled < self.max.as_secs_f64() {
            Duration::from_secs_f64(scaled)
        } else {
            self.max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(jitter: Jitter, r: f64) -> Backoff {
        Backoff::new(10 * MS, 100 * MS)
            .unwrap()
            .jitter(jitter)
            .random(move || r)
    }

    #[test]
    fn the_cap_grows_by_the_multiplier_up_to_max() {
        let b = backoff(Jitter::None, 0.5);
        let delays: Vec<_> = (0..6).map(|n| b.delay(n, Duration::ZERO)).collect();
        assert_eq!(
            delays,
            [10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS]
        );
        assert_eq!(b.delay(u32::MAX, Duration::ZERO), 100 * MS);
        let tripled = b.multiplier(3.0).unwrap();
        assert_eq!(tripled.delay(2, Duration::ZERO), 90 * MS);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        assert_eq!(
            backoff(Jitter::Full, 0.0).delay(2, Duration::ZERO),
            Duration::ZERO
        );
        assert_eq!(backoff(Jitter::Full, 0.5).delay(2, Duration::ZERO), 20 * MS);
        assert_eq!(
            backoff(Jitter::Full, 0.999).delay(2, Duration::ZERO),
            40 * MS * 999 / 1000
        );
    }

    #[test]
    fn equal_jitter_never_goes_below_half_the_cap() {
        assert_eq!(
            backoff(Jitter::Equal, 0.0).delay(2, Duration::ZERO),
            20 * MS
        );
        assert_eq!(
            backoff(Jitter::Equal, 0.5).delay(2, Duration::ZERO),
            30 * MS
        );
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_delay() {
        let b = backoff(Jitter::Decorrelated, 0.5);
        // random(base, 3 * previous): 10 + (30 - 10) / 2 = 20 ms from a 10 ms start.
        assert_eq!(b.delay(0, Duration::ZERO), 20 * MS);
        assert_eq!(b.delay(1, 20 * MS), 35 * MS);
        // Capped at max.
        assert_eq!(b.delay(5, 90 * MS), 55 * MS);
        assert!(backoff(Jitter::Decorrelated, 0.999).delay(5, 90 * MS) <= 100 * MS);
    }

    #[test]
    fn bad_settings_are_rejected_naming_the_field() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS).unwrap_err().field(),
            "backoff.base"
        );
        assert_eq!(
            Backoff::new(10 * MS, MS).unwrap_err().field(),
            "backoff.max"
        );
        let err = Backoff::default().multiplier(0.5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `backoff.multiplier` = 0.5: must be a finite number of at least 1"
        );
        assert!(Backoff::default().multiplier(f64::NAN).is_err());
    }
}
