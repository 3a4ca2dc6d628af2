//! [`TimeoutConfig`]: the timeout section of a config file.

use crate::{ConfigError, HttpDeadline, ResponseBodyTimeoutLayer, TimeoutLayer, duration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The timeout settings that `sidecar-lite` reads from its config file, for library users to
/// load from the very same section: a table,
///
/// ```toml
/// timeout = "2s"                # required: the whole call, all attempts included
/// deadline_margin = "5ms"       # taken off the time the next hop is told
/// propagate_deadline = true     # tell the next hop the time left (incoming: always honoured)
/// # body_idle_timeout = "10s"   # each response body frame within this (default: none)
/// # body_timeout = "60s"        # the whole response body within this (default: none)
/// ```
///
/// or the short form, the timeout alone, every other setting at its default, as the sidecar's
/// config writes `timeout = "2s"`:
///
/// ```
/// # use resilience_timeout::TimeoutConfig;
/// # use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Route {
///     timeout: TimeoutConfig,
/// }
/// let short: Route = toml::from_str(r#"timeout = "2s""#).unwrap();
/// let table: Route = toml::from_str("[timeout]\ntimeout = \"2s\"").unwrap();
/// assert_eq!(short.timeout, TimeoutConfig::new(Duration::from_secs(2)));
/// assert_eq!(short.timeout, table.timeout);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct TimeoutConfig {
    /// How long a request may take. Required: there is no safe default for every service.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Taken off the remaining time that the next hop is told. Default 5 ms: time for this hop
    /// to send the request on.
    #[serde(default = "default_margin", with = "duration")]
    pub deadline_margin: Duration,
    /// Whether the time that remains is written into the outgoing request (`grpc-timeout`, or
    /// `x-request-timeout-ms`, added to a plain HTTP request that came without one). Default
    /// `true`: a caller that has given up should not keep the callee busy. With `false` the
    /// caller's header goes on as it came; an incoming deadline shortens ours either way.
    #[serde(default = "default_true")]
    pub propagate_deadline: bool,
    /// Each response body frame must arrive within this. Default: none, because streaming
    /// responses (server-sent events, gRPC streams) may rightly be idle for long.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub body_idle_timeout: Option<Duration>,
    /// The whole response body must arrive within this. Default: none, for the same reason.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub body_timeout: Option<Duration>,
}

// `remote = "Self"` above makes the derives inherent functions, so that these impls can wrap
// them: the table form as derived, plus the short form.
impl Serialize for TimeoutConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Self::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for TimeoutConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = TimeoutConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"2s\", or a table with `timeout`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TimeoutConfig, E> {
                duration::parse(text)
                    .map(TimeoutConfig::new)
                    .map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TimeoutConfig, A::Error> {
                TimeoutConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_any(Form)
    }
}

fn default_margin() -> Duration {
    HttpDeadline::DEFAULT_MARGIN
}

fn default_true() -> bool {
    true
}

impl TimeoutConfig {
    /// A config with `timeout` and every other setting at its default.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            deadline_margin: default_margin(),
            propagate_deadline: true,
            body_idle_timeout: None,
            body_timeout: None,
        }
    }

    /// Checks the settings, naming the first field that is wrong and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, value: Duration| {
            if value.is_zero() {
                Err(duration_error(field, value, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        positive("timeout", self.timeout)?;
        if let Some(idle) = self.body_idle_timeout {
            positive("body_idle_timeout", idle)?;
        }
        if let Some(total) = self.body_timeout {
            positive("body_timeout", total)?;
        }
        if self.deadline_margin >= self.timeout {
            return Err(duration_error(
                "deadline_margin",
                self.deadline_margin,
                "must be less than `timeout`",
            ));
        }
        Ok(())
    }

    /// The request timeout layer these settings describe, after [`validate`](Self::validate).
    pub fn layer(&self) -> Result<TimeoutLayer<HttpDeadline>, ConfigError> {
        self.validate()?;
        let policy = HttpDeadline::new()
            .margin(self.deadline_margin)
            .propagate(self.propagate_deadline)
            .originate(self.propagate_deadline);
        Ok(TimeoutLayer::new(self.timeout).with_policy(policy))
    }

    /// The response-body timeout layer these settings describe, if any body limit is set.
    pub fn body_layer(&self) -> Result<Option<ResponseBodyTimeoutLayer>, ConfigError> {
        self.validate()?;
        if self.body_idle_timeout.is_none() && self.body_timeout.is_none() {
            return Ok(None);
        }
        let mut layer = ResponseBodyTimeoutLayer::new();
        if let Some(idle) = self.body_idle_timeout {
            layer = layer.idle(idle);
        }
        if let Some(total) = self.body_timeout {
            layer = layer.total(total);
        }
        Ok(Some(layer))
    }
}

/// A duration setting that is not allowed, its value quoted as it is written in the file.
fn duration_error(field: &'static str, value: Duration, reason: &'static str) -> ConfigError {
    ConfigError::new(field, format!("\"{}\"", duration::format(value)), reason)
}
