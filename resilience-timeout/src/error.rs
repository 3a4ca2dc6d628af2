//! Error types.

use std::{error::Error, fmt, time::Duration};

/// The boxed error type that every layer in this crate returns.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The request did not complete before its deadline.
///
/// Returned (boxed, as [`BoxError`]) by [`Timeout`](crate::Timeout); check for it with
/// `err.is::<Elapsed>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    pub(crate) const fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long the request was allowed to take. Zero when the deadline had already passed
    /// before the request was sent.
    #[must_use]
    pub const fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after.is_zero() {
            f.write_str("deadline exceeded before the request was sent")
        } else {
            write!(f, "request timed out after {:?}", self.after)
        }
    }
}

impl Error for Elapsed {}

/// A setting with a value that is not allowed, naming the field and the value. Shared by the
/// config types of the resilience crates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: &'static str,
}

impl ConfigError {
    /// `field` may not be `value`, because `reason` (lowercase, as "must be at least 1").
    pub fn new(field: &'static str, value: impl fmt::Display, reason: &'static str) -> Self {
        Self {
            field,
            value: value.to_string(),
            reason,
        }
    }

    /// The name of the field that is wrong.
    #[must_use]
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid `{}` = {}: {}",
            self.field, self.value, self.reason
        )
    }
}

impl Error for ConfigError {}
