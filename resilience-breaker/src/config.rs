//! [`BreakerConfig`]: the breaker section of a config file.

use crate::{CircuitBreakerLayer, ConfigError, EjectionCap, Policy, SlidingWindow};
use resilience_core::{Enforcement, duration};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};

/// The circuit-breaker settings that `sidecar-lite` reads from its config file (the
/// `[outbound.breaker]` section), for library users to load from the very same section.
///
/// ```toml
/// failure_rate = 0.5                # trip at >= 50 % failures ...
/// window = { calls = 100 }          # ... of the last 100 calls, or { duration = "10s" }
/// minimum_calls = 20                # judge no rate over fewer calls
/// open_for = "5s"                   # reject calls this long, then probe
/// open_for_max = "60s"              # the open time doubles on each re-open up to this
/// open_for_multiplier = 2.0
/// jitter = 0.1                      # open times are up to 10 % shorter, at random
/// half_open_probes = 3              # all must succeed to close
/// # slow_call_rate = 0.8            # also trip at >= 80 % slow calls (default: off)
/// # slow_call_duration = "2s"       # a call this long or longer is slow (default 60s)
/// # consecutive_failures = 5        # also trip after 5 failures in a row (default: off)
/// mode = "enforce"                  # or "shadow": trip, count and log, refuse nothing
/// max_ejection_percent = 50.0       # of a route's endpoints, at most this share open at once
/// ```
///
/// Every default is [`Policy`]'s, with the reason given there. One rule ties two keys: when
/// `consecutive_failures` is set and `failure_rate` is not, no failure rate is judged (the
/// consecutive-failures mode); when neither is set, `failure_rate` is 0.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip when at least this share of the window's calls failed, in `(0, 1]`. Default 0.5
    /// (see above for the consecutive-failures mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Which calls the rates are judged over. Default the last 100 calls.
    #[serde(default = "default_window")]
    pub window: WindowConfig,
    /// No rate is judged over fewer calls. Default 20.
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    /// Trip when at least this share of the window's calls were slow, in `(0, 1]`. Default
    /// off: what is slow depends on the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<f64>,
    /// A call this long or longer is slow. Default 60 s (resilience4j's).
    #[serde(default = "default_slow_call_duration", with = "duration")]
    pub slow_call_duration: Duration,
    /// Also trip after this many failures in a row. Default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// How long the breaker stays open the first time. Default 5 s.
    #[serde(default = "default_open_for", with = "duration")]
    pub open_for: Duration,
    /// The longest it stays open after repeated re-opens. Default 60 s.
    #[serde(default = "default_open_for_max", with = "duration")]
    pub open_for_max: Duration,
    /// The open time is multiplied by this on each consecutive re-open. Default 2.
    #[serde(default = "default_multiplier")]
    pub open_for_multiplier: f64,
    /// Open times are shortened by a random share of up to this, in `[0, 1)`. Default 0.1.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// How many probes the half-open breaker lets through. Default 3.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
    /// `enforce` (the default), or `shadow`: trip, count and log, and refuse nothing.
    #[serde(default)]
    pub mode: Enforcement,
    /// Of a set of breakers (a route's endpoints), the most that may be open at once, in
    /// percent; at least one always may. Default 50: see [`EjectionCap`] for why.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: f64,
}

fn default_max_ejection_percent() -> f64 {
    50.0
}

/// The sliding window: `{ calls = 100 }` or `{ duration = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last N calls.
    Calls(u32),
    /// The calls of the last stretch of time.
    #[serde(with = "duration")]
    Duration(Duration),
}

fn default_window() -> WindowConfig {
    match Policy::DEFAULT_WINDOW {
        SlidingWindow::Count(n) => WindowConfig::Calls(n),
        SlidingWindow::Time(d) => WindowConfig::Duration(d),
    }
}
fn default_minimum_calls() -> u32 {
    Policy::DEFAULT_MINIMUM_CALLS
}
fn default_slow_call_duration() -> Duration {
    Policy::DEFAULT_SLOW_CALL_DURATION
}
fn default_open_for() -> Duration {
    Policy::DEFAULT_OPEN_FOR
}
fn default_open_for_max() -> Duration {
    Policy::DEFAULT_OPEN_FOR_MAX
}
fn default_multiplier() -> f64 {
    Policy::DEFAULT_OPEN_FOR_MULTIPLIER
}
fn default_jitter() -> f64 {
    Policy::DEFAULT_JITTER
}
fn default_probes() -> u32 {
    Policy::DEFAULT_HALF_OPEN_PROBES
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: None,
            window: default_window(),
            minimum_calls: default_minimum_calls(),
            slow_call_rate: None,
            slow_call_duration: default_slow_call_duration(),
            consecutive_failures: None,
            open_for: default_open_for(),
            open_for_max: default_open_for_max(),
            open_for_multiplier: default_multiplier(),
            jitter: default_jitter(),
            half_open_probes: default_probes(),
            mode: Enforcement::Enforce,
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

impl BreakerConfig {
    /// The policy these settings describe, after [`validate`](Self::validate).
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let failure_rate = match (self.failure_rate, self.consecutive_failures) {
            (Some(rate), _) => Some(rate),
            (None, Some(_)) => None,
            (None, None) => Some(Policy::DEFAULT_FAILURE_RATE),
        };
        let mut policy = Policy::default()
            .window(match self.window {
                WindowConfig::Calls(n) => SlidingWindow::Count(n),
                WindowConfig::Duration(d) => SlidingWindow::Time(d),
            })
            .minimum_calls(self.minimum_calls)
            .open_for(self.open_for)
            .open_for_max(self.open_for_max)
            .open_for_multiplier(self.open_for_multiplier)
            .jitter(self.jitter)
            .half_open_probes(self.half_open_probes);
        policy.failure_rate = failure_rate;
        policy.slow_call_rate = self.slow_call_rate;
        policy.slow_call_duration = self.slow_call_duration;
        policy.consecutive_failures = self.consecutive_failures;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the settings, naming the first field that is wrong and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let _ = self.policy()?;
        self.ejection_cap().map(drop)
    }

    /// A cap for the breakers of one set (one route's endpoints), at `max_ejection_percent`.
    pub fn ejection_cap(&self) -> Result<Arc<EjectionCap>, ConfigError> {
        EjectionCap::new(self.max_ejection_percent)
    }

    /// The fail-fast layer these settings describe, after [`validate`](Self::validate).
    pub fn layer(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        Ok(CircuitBreakerLayer::new(self.policy()?)?.enforcement(self.mode))
    }
}
