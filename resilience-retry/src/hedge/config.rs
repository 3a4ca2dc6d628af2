//! [`HedgeConfig`]: hedging as a config section.

use super::{HedgeDelay, HedgeLayer};
use crate::Budget;
use resilience_core::{ConfigError, duration};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor, value::MapAccessDeserializer},
};
use std::{fmt, sync::Arc, time::Duration};

/// Hedging, as sidecar-lite reads `[outbound.hedge]` and a library loads it:
///
/// ```toml
/// delay = "50ms"                                  # or { percentile = 95, min = "10ms" }
/// max_attempts = 2                                # copies in all, the first included (2 to 5)
/// ```
///
/// Copies spend the route's retry budget (`[outbound.retry] budget`).
///
/// ```
/// use resilience_retry::{HedgeConfig, HedgeDelay, RetryIf};
/// use std::time::Duration;
///
/// let config: HedgeConfig = toml::from_str("delay = { percentile = 95, min = \"10ms\" }").unwrap();
/// assert_eq!(
///     config.delay,
///     HedgeDelay::Percentile { percentile: 95.0, min: Duration::from_millis(10) }
/// );
/// let policy: RetryIf<_, u32> = RetryIf::new(|result: &Result<(), tower::BoxError>| result.is_err());
/// let layer = config.layer(policy, Default::default()).unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// When the next copy goes.
    #[serde(with = "delay_serde")]
    pub delay: HedgeDelay,
    /// Copies in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    2
}

/// The delay's two spellings, for documentation: a duration, or a percentile table.
pub type HedgeDelayConfig = HedgeDelay;

impl HedgeConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.delay {
            HedgeDelay::Fixed(delay) if delay.is_zero() => {
                return Err(ConfigError::duration(
                    "delay",
                    delay,
                    "must be longer than 0",
                ));
            }
            HedgeDelay::Percentile { percentile, .. }
                if !(percentile > 0.0 && percentile < 100.0) =>
            {
                return Err(ConfigError::new(
                    "delay.percentile",
                    percentile,
                    "must be more than 0 and less than 100",
                ));
            }
            HedgeDelay::Percentile { min, .. } if min.is_zero() => {
                return Err(ConfigError::duration(
                    "delay.min",
                    min,
                    "must be longer than 0",
                ));
            }
            _ => {}
        }
        if !(2..=5).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                self.max_attempts,
                "must be between 2 and 5",
            ));
        }
        Ok(())
    }

    /// The layer, with `policy` and copies spending `budget`.
    pub fn layer<P: Clone>(
        &self,
        policy: P,
        budget: Arc<Budget>,
    ) -> Result<HedgeLayer<P>, ConfigError> {
        self.validate()?;
        Ok(HedgeLayer::new(policy, self.delay)
            .max_attempts(self.max_attempts)?
            .budget(budget))
    }
}

mod delay_serde {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Percentile {
        percentile: f64,
        #[serde(with = "duration")]
        min: Duration,
    }

    pub(super) fn serialize<S: Serializer>(delay: &HedgeDelay, s: S) -> Result<S::Ok, S::Error> {
        match *delay {
            HedgeDelay::Fixed(delay) => duration::serialize(&delay, s),
            HedgeDelay::Percentile { percentile, min } => {
                Percentile { percentile, min }.serialize(s)
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HedgeDelay, D::Error> {
        struct Delay;

        impl<'de> Visitor<'de> for Delay {
            type Value = HedgeDelay;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"50ms\", or { percentile = 95, min = \"10ms\" }")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                duration::parse(text)
                    .map(HedgeDelay::Fixed)
                    .map_err(E::custom)
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let Percentile { percentile, min } =
                    Percentile::deserialize(MapAccessDeserializer::new(map))?;
                Ok(HedgeDelay::Percentile { percentile, min })
            }
        }

        d.deserialize_any(Delay)
    }
}
