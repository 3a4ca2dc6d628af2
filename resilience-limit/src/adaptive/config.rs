//! [`AdaptiveConfig`]: an adaptive concurrency limit as a config section.

use super::{AdaptiveConcurrencyLayer, Aimd, Algorithm, Gradient2, Vegas};
use resilience_core::{ConfigError, Enforcement, duration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An adaptive concurrency limit, as the sidecar reads it from `max_concurrent_requests = {
/// ... }` (or `"adaptive"`, every key at its default) and a library loads it:
///
/// ```toml
/// algorithm = "gradient2"   # gradient2 (default) | aimd | vegas
/// initial_limit = 20        # default 20
/// min_limit = 1             # default 1
/// max_limit = 1000          # default 1000
/// mode = "enforce"          # enforce (default) | shadow: count and log, refuse nothing
/// # gradient2 only (smoothing: vegas too):
/// smoothing = 0.2           # default 0.2 (vegas: 1.0)
/// rtt_tolerance = 1.0       # default 1.0
/// long_window = 600         # default 600 windows (a window: 100 ms and 10 calls at least)
/// # aimd only:
/// # backoff_ratio = 0.9     # default 0.9
/// # timeout = "5s"          # default 5s
/// # vegas only:
/// # probe_multiplier = 30   # default 30: the lowest latency measured afresh every 30 x limit windows
/// ```
///
/// ```
/// use resilience_limit::AdaptiveConfig;
///
/// let config: AdaptiveConfig = toml::from_str("algorithm = \"aimd\"\nmax_limit = 64").unwrap();
/// let layer = config.layer().unwrap();
/// assert_eq!(layer.handle().limit(), 20);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// How the limit moves.
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// The limit at start.
    #[serde(default = "default_initial")]
    pub initial_limit: usize,
    /// The lowest the limit goes.
    #[serde(default = "default_min")]
    pub min_limit: usize,
    /// The highest the limit goes.
    #[serde(default = "default_max")]
    pub max_limit: usize,
    /// Refuse, or only count and log.
    #[serde(default)]
    pub mode: Enforcement,
    /// Gradient2 and Vegas: how much of each new estimate is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<f64>,
    /// Gradient2: how far latency may rise over its long-term average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_tolerance: Option<f64>,
    /// Gradient2: windows in the long-term average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_window: Option<u32>,
    /// AIMD: what the limit is multiplied by on a failure or timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ratio: Option<f64>,
    /// AIMD: a call slower than this counts as a failure.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Vegas: the lowest latency is measured afresh after this many times the limit in windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_multiplier: Option<u32>,
}

/// The name of an [`Algorithm`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlgorithmName {
    /// [`Gradient2`].
    #[default]
    Gradient2,
    /// [`Aimd`].
    Aimd,
    /// [`Vegas`].
    Vegas,
}

const GRADIENT2_KEY: &str = "is a key of algorithm = \"gradient2\"";
const AIMD_KEY: &str = "is a key of algorithm = \"aimd\"";
const VEGAS_KEY: &str = "is a key of algorithm = \"vegas\"";
const SMOOTHING_KEY: &str = "is a key of algorithm = \"gradient2\" or \"vegas\"";

fn default_initial() -> usize {
    20
}
fn default_min() -> usize {
    1
}
fn default_max() -> usize {
    1000
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            algorithm: AlgorithmName::default(),
            initial_limit: default_initial(),
            min_limit: default_min(),
            max_limit: default_max(),
            mode: Enforcement::default(),
            smoothing: None,
            rtt_tolerance: None,
            long_window: None,
            backoff_ratio: None,
            timeout: None,
            probe_multiplier: None,
        }
    }
}

impl AdaptiveConfig {
    /// The algorithm, with its keys checked: each within its range, and none of another
    /// algorithm's.
    pub fn algorithm(&self) -> Result<Algorithm, ConfigError> {
        use AlgorithmName::{Aimd as A, Gradient2 as G, Vegas as V};
        let keys: [(&str, bool, &[AlgorithmName], &str); 6] = [
            (
                "smoothing",
                self.smoothing.is_some(),
                &[G, V],
                SMOOTHING_KEY,
            ),
            (
                "rtt_tolerance",
                self.rtt_tolerance.is_some(),
                &[G],
                GRADIENT2_KEY,
            ),
            (
                "long_window",
                self.long_window.is_some(),
                &[G],
                GRADIENT2_KEY,
            ),
            (
                "backoff_ratio",
                self.backoff_ratio.is_some(),
                &[A],
                AIMD_KEY,
            ),
            ("timeout", self.timeout.is_some(), &[A], AIMD_KEY),
            (
                "probe_multiplier",
                self.probe_multiplier.is_some(),
                &[V],
                VEGAS_KEY,
            ),
        ];
        for (field, set, owners, reason) in keys {
            if set && !owners.contains(&self.algorithm) {
                return Err(ConfigError::new(field, "set", reason));
            }
        }
        match self.algorithm {
            AlgorithmName::Gradient2 => {
                let defaults = Gradient2::default();
                let smoothing = self.smoothing(defaults.smoothing)?;
                let tolerance = self.rtt_tolerance.unwrap_or(defaults.rtt_tolerance);
                if !(1.0..=100.0).contains(&tolerance) {
                    return Err(ConfigError::new(
                        "rtt_tolerance",
                        tolerance,
                        "must be between 1 and 100",
                    ));
                }
                let window = self.long_window.unwrap_or(defaults.long_window);
                if window == 0 {
                    return Err(ConfigError::new(
                        "long_window",
                        window,
                        "must be at least 1",
                    ));
                }
                Ok(Algorithm::Gradient2(Gradient2::new(
                    smoothing, tolerance, window,
                )))
            }
            AlgorithmName::Aimd => {
                let defaults = Aimd::default();
                let backoff_ratio = self.backoff_ratio.unwrap_or(defaults.backoff_ratio);
                if !(0.5..1.0).contains(&backoff_ratio) {
                    return Err(ConfigError::new(
                        "backoff_ratio",
                        backoff_ratio,
                        "must be at least 0.5 and less than 1",
                    ));
                }
                let timeout = self.timeout.unwrap_or(defaults.timeout);
                if timeout.is_zero() {
                    return Err(ConfigError::duration(
                        "timeout",
                        timeout,
                        "must be longer than 0",
                    ));
                }
                Ok(Algorithm::Aimd(Aimd {
                    backoff_ratio,
                    timeout,
                }))
            }
            AlgorithmName::Vegas => {
                let defaults = Vegas::default();
                let smoothing = self.smoothing(defaults.smoothing)?;
                let probe = self.probe_multiplier.unwrap_or(defaults.probe_multiplier);
                if probe == 0 {
                    return Err(ConfigError::new(
                        "probe_multiplier",
                        probe,
                        "must be at least 1",
                    ));
                }
                Ok(Algorithm::Vegas(Vegas::new(smoothing, probe)))
            }
        }
    }

    /// `smoothing`, or `default`, checked.
    fn smoothing(&self, default: f64) -> Result<f64, ConfigError> {
        let smoothing = self.smoothing.unwrap_or(default);
        if smoothing > 0.0 && smoothing <= 1.0 {
            Ok(smoothing)
        } else {
            Err(ConfigError::new(
                "smoothing",
                smoothing,
                "must be more than 0 and at most 1",
            ))
        }
    }

    /// The layer this section describes.
    pub fn layer(&self) -> Result<AdaptiveConcurrencyLayer, ConfigError> {
        Ok(AdaptiveConcurrencyLayer::new(self.algorithm()?)
            .limits(self.initial_limit, self.min_limit, self.max_limit)?
            .enforcement(self.mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Algorithm, String> {
        let config: AdaptiveConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.algorithm().map_err(|e| e.to_string())
    }

    #[test]
    fn vegas_takes_its_keys_and_smoothing_and_refuses_the_others() {
        assert_eq!(
            parse("algorithm = \"vegas\""),
            Ok(Algorithm::Vegas(Vegas::default()))
        );
        assert_eq!(
            parse("algorithm = \"vegas\"\nsmoothing = 0.5\nprobe_multiplier = 10"),
            Ok(Algorithm::Vegas(Vegas::new(0.5, 10)))
        );
        assert_eq!(
            parse("algorithm = \"vegas\"\nrtt_tolerance = 2.0").unwrap_err(),
            "invalid `rtt_tolerance` = set: is a key of algorithm = \"gradient2\""
        );
        assert_eq!(
            parse("algorithm = \"vegas\"\nbackoff_ratio = 0.8").unwrap_err(),
            "invalid `backoff_ratio` = set: is a key of algorithm = \"aimd\""
        );
        assert_eq!(
            parse("probe_multiplier = 10").unwrap_err(),
            "invalid `probe_multiplier` = set: is a key of algorithm = \"vegas\""
        );
        assert_eq!(
            parse("algorithm = \"aimd\"\nsmoothing = 0.5").unwrap_err(),
            "invalid `smoothing` = set: is a key of algorithm = \"gradient2\" or \"vegas\""
        );
        assert_eq!(
            parse("algorithm = \"vegas\"\nprobe_multiplier = 0").unwrap_err(),
            "invalid `probe_multiplier` = 0: must be at least 1"
        );
        assert_eq!(
            parse("algorithm = \"vegas\"\nsmoothing = 0.0").unwrap_err(),
            "invalid `smoothing` = 0: must be more than 0 and at most 1"
        );
    }
}
