//! [`RateLimitConfig`]: a rate limit as a config section.

use super::{Rate, RateLimitLayer};
use resilience_core::{ConfigError, Enforcement};
use serde::{Deserialize, Serialize};
use std::hash::Hash;

/// A rate limit, as the sidecar reads it from `[inbound.rate_limit]` or
/// `[outbound.rate_limit]` and a library loads it from its own file:
///
/// ```toml
/// rate = 1000            # calls a second over the whole service; omit for no such limit
/// burst = 200            # default: one second's worth
/// mode = "enforce"       # enforce (default) | shadow: count and log, refuse nothing
/// per_caller = { rate = 100, burst = 20, max_callers = 1024 }   # default: none
/// ```
///
/// ```
/// use resilience_limit::RateLimitConfig;
///
/// let config: RateLimitConfig = toml::from_str("rate = 50\nburst = 10").unwrap();
/// let layer = config.layer().unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls a second over the whole service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Calls at once after a quiet spell. Default: `rate`, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Refuse, or only count and log.
    #[serde(default)]
    pub mode: Enforcement,
    /// A limit for each caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_caller: Option<CallerRateConfig>,
}

/// The limit of each caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerRateConfig {
    /// Calls a second from one caller.
    pub rate: f64,
    /// Calls at once from one caller. Default: `rate`, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Callers with a limiter of their own at once; beyond them, calls share one more.
    #[serde(default = "default_max_callers")]
    pub max_callers: usize,
}

fn default_max_callers() -> usize {
    1024
}

/// `per_second` and `burst` as a [`Rate`], errors naming `fields` (the rate's, the burst's).
fn rate(
    per_second: f64,
    burst: Option<u32>,
    fields: (&'static str, &'static str),
) -> Result<Rate, ConfigError> {
    let rate = match burst {
        Some(burst) => Rate::new(per_second, burst),
        None => Rate::per_second(per_second),
    };
    rate.map_err(|e| {
        let field = if e.field() == "burst" {
            fields.1
        } else {
            fields.0
        };
        e.named(field)
    })
}

const SERVICE: (&str, &str) = ("rate", "burst");
const CALLER: (&str, &str) = ("per_caller.rate", "per_caller.burst");

impl RateLimitConfig {
    /// Checks the values: a rate above 0, a burst of at least 1, at least one limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate.is_none() && self.per_caller.is_none() {
            return Err(ConfigError::new(
                "rate",
                "none",
                "set `rate`, `per_caller`, or both",
            ));
        }
        if let Some(per_second) = self.rate {
            rate(per_second, self.burst, SERVICE)?;
        } else if self.burst.is_some() {
            return Err(ConfigError::new("burst", "set", "needs `rate`"));
        }
        if let Some(caller) = &self.per_caller {
            rate(caller.rate, caller.burst, CALLER)?;
            if caller.max_callers == 0 {
                return Err(ConfigError::new(
                    "per_caller.max_callers",
                    0,
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The layer, without per-caller limits (a `per_caller` table is an error here: use
    /// [`layer_per_caller`](Self::layer_per_caller), which says who the caller is).
    pub fn layer(&self) -> Result<RateLimitLayer, ConfigError> {
        self.validate()?;
        if self.per_caller.is_some() {
            return Err(ConfigError::new(
                "per_caller",
                "set",
                "needs a way to tell callers apart (inbound only in the sidecar)",
            ));
        }
        let service = self.service_rate()?;
        Ok(service
            .map_or_else(RateLimitLayer::unlimited, RateLimitLayer::new)
            .enforcement(self.mode))
    }

    /// The layer, with per-caller limits keyed by `caller` when `per_caller` is set.
    pub fn layer_per_caller<K: Hash + Eq + Clone, F>(
        &self,
        caller: F,
    ) -> Result<RateLimitLayer<K, F>, ConfigError> {
        self.validate()?;
        let service = self.service_rate()?;
        let base = service
            .map_or_else(RateLimitLayer::unlimited, RateLimitLayer::new)
            .enforcement(self.mode);
        let (per_caller, max) = match &self.per_caller {
            Some(c) => (rate(c.rate, c.burst, CALLER)?, c.max_callers),
            None => return Ok(base.without_callers(caller)),
        };
        Ok(base.per_caller(per_caller, max, caller))
    }

    fn service_rate(&self) -> Result<Option<Rate>, ConfigError> {
        self.rate
            .map(|per_second| rate(per_second, self.burst, SERVICE))
            .transpose()
    }
}
