//! [`RetryConfig`]: the retry section of a config file.

use crate::{
    Backoff, Budget, Condition, ConfigError, HttpPolicy, Jitter, RetryLayer, RetryOn,
    http_policy::DEFAULT_MAX_RETRY_AFTER, replay::DEFAULT_MAX_REPLAY_BODY,
};
use http::StatusCode;
use resilience_core::duration;
use resilience_timeout::{HttpDeadline, TimeoutLayer};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::{sync::Arc, time::Duration};

/// The retry settings that `sidecar-lite` reads from its config file, for library users to
/// load from the very same section. Every key is optional.
///
/// ```toml
/// attempts = 3                                  # counting the first
/// per_try_timeout = "500ms"                     # default: none
/// on = ["connect-failure", "reset", "gateway-error"]
/// retriable_status_codes = []                   # used with "retriable-status-codes"
/// retry_any_method = false                      # default: idempotent methods only
/// backoff = { base = "25ms", max = "250ms", multiplier = 2.0, jitter = "full" }
/// budget = { ratio = 0.2, min_per_second = 10, ttl = "10s" }
/// max_replay_body = "64KiB"
/// max_retry_after = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts, counting the first. Default 3: two retries mend most transient failures,
    /// and more only add load to a struggling upstream.
    pub attempts: u32,
    /// A timeout for each attempt. Default none: only the total timeout applies.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// The conditions retried. Default `connect-failure`, `reset`, `gateway-error`: the
    /// failures that say nothing about the request itself.
    pub on: Vec<Condition>,
    /// Statuses retried under `retriable-status-codes`. Default none.
    pub retriable_status_codes: Vec<u16>,
    /// Retry non-idempotent methods too. Default `false`: a POST may not be safe to repeat.
    pub retry_any_method: bool,
    /// The backoff between attempts.
    pub backoff: BackoffConfig,
    /// The retry budget.
    pub budget: BudgetConfig,
    /// Request body kept for replay. Default 64 KiB, as Linkerd: larger bodies go once.
    #[serde(deserialize_with = "bytes", serialize_with = "bytes_out")]
    pub max_replay_body: usize,
    /// The longest `Retry-After` waited out. Default 10 s: a longer wait is better spent by
    /// the caller.
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
}

/// `backoff = { base = "25ms", max = "250ms", multiplier = 2.0, jitter = "full" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// The first delay's cap. Default 25 ms.
    #[serde(with = "duration")]
    pub base: Duration,
    /// The largest delay. Default 250 ms: retries are for blips, not outages.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Growth per retry. Default 2.
    pub multiplier: f64,
    /// `full` (default), `equal`, `decorrelated` or `none`.
    pub jitter: Jitter,
}

/// `budget = { ratio = 0.2, min_per_second = 10, ttl = "10s" }`, Linkerd's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Retries per request. Default 0.2: at most 20 % extra load on a failing upstream.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic. Default 10.
    pub min_per_second: u32,
    /// The window. Default 10 s.
    #[serde(with = "duration")]
    pub ttl: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            per_try_timeout: None,
            on: RetryOn::default().conditions().collect(),
            retriable_status_codes: Vec::new(),
            retry_any_method: false,
            backoff: BackoffConfig::default(),
            budget: BudgetConfig::default(),
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// Checks the settings, naming the first field that is wrong and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.retry_on()?;
        self.backoff()?;
        Budget::new(
            self.budget.ratio,
            self.budget.min_per_second,
            self.budget.ttl,
        )?;
        if self.attempts == 0 {
            return Err(ConfigError::new("attempts", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// The retry layer these settings describe, with a budget of its own.
    pub fn layer(&self) -> Result<RetryLayer<HttpPolicy>, ConfigError> {
        self.validate()?;
        let policy = HttpPolicy::new(self.retry_on()?)
            .retry_any_method(self.retry_any_method)
            .max_replay_body(self.max_replay_body)
            .max_retry_after(self.max_retry_after);
        let budget = Budget::new(
            self.budget.ratio,
            self.budget.min_per_second,
            self.budget.ttl,
        )?;
        Ok(RetryLayer::new(policy)
            .attempts(self.attempts)?
            .backoff(self.backoff()?)
            .budget(Arc::new(budget)))
    }

    /// The per-try timeout layer, to stack inside the retry layer, if one is set.
    #[must_use]
    pub fn per_try_timeout_layer(&self) -> Option<TimeoutLayer<HttpDeadline>> {
        self.per_try_timeout.map(|timeout| {
            TimeoutLayer::new(timeout)
                .with_policy(HttpDeadline::new())
                .named("per-try")
        })
    }

    fn retry_on(&self) -> Result<RetryOn, ConfigError> {
        let mut on = self.on.iter().fold(RetryOn::none(), |on, c| on.with(*c));
        if !self.retriable_status_codes.is_empty() {
            let codes = self
                .retriable_status_codes
                .iter()
                .map(|&code| {
                    StatusCode::from_u16(code).map_err(|_| {
                        ConfigError::new("retriable_status_codes", code, "is not an HTTP status")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let named = on.contains(Condition::RetriableStatusCodes);
            on = on.status_codes(codes);
            if !named {
                return Err(ConfigError::new(
                    "retriable_status_codes",
                    format!("{:?}", self.retriable_status_codes),
                    "has no effect unless `on` includes \"retriable-status-codes\"",
                ));
            }
        }
        Ok(on)
    }

    fn backoff(&self) -> Result<Backoff, ConfigError> {
        Ok(Backoff::new(self.backoff.base, self.backoff.max)?
            .multiplier(self.backoff.multiplier)?
            .jitter(self.backoff.jitter))
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(D::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A size in bytes: a whole number, or a string such as `"64KiB"`, `"1MiB"`, `"512B"`.
fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(n) => usize::try_from(n).map_err(D::Error::custom),
        Size::Text(text) => parse_size(&text).ok_or_else(|| {
            D::Error::custom(format!(
                "invalid size `{text}`; expected a number of bytes or a size such as \"64KiB\""
            ))
        }),
    }
}

fn bytes_out<S: Serializer>(size: &usize, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(*size as u64)
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2KB"), Some(2000));
        for bad in [
            "",
            "KiB",
            "-1KiB",
            "1.5KiB",
            "3 GiB",
            "99999999999999999999MiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
