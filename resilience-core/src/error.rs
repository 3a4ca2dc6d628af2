//! The error types every resilience crate uses.

use std::{error::Error, fmt, time::Duration};

/// The boxed error type that every layer of the resilience crates returns; check for a typed
/// leaf error with `err.is::<T>()`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A setting with a value that is not allowed, naming the field and the value. The one config
/// error of the resilience crates, so a chain of `?` over several of them needs no boxing.
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

    /// The same, for a duration, written as `Debug` writes it (`250ms`).
    pub fn duration(field: &'static str, value: Duration, reason: &'static str) -> Self {
        Self::new(field, format!("{value:?}"), reason)
    }

    /// The same error, of a field named `field` where it is read (`per_caller.rate` for a
    /// rate's `rate`, say).
    #[must_use]
    pub fn named(mut self, field: &'static str) -> Self {
        self.field = field;
        self
    }

    /// The name of the field that is wrong.
    #[must_use]
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The value that was given, as text.
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
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

/// No connection could be made to the upstream, so the request was never sent: what a retry
/// policy may resend for any method (`connect-failure`), and what an HTTP edge answers with
/// `502 connect`. Clients return it with the reason as its source.
#[derive(Debug)]
pub struct ConnectFailed(BoxError);

impl ConnectFailed {
    /// A connection attempt that failed because of `reason`.
    pub fn new(reason: impl Into<BoxError>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to the upstream: {}", self.0)
    }
}

impl Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// The caller's request body failed while it was being sent on: a malformed chunk, a body cut
/// off by a caller that went away. The caller's fault, not the upstream's: it sits in the
/// error's chain of sources, so a circuit breaker leaves the call out of its window (the
/// default classifier, and sidecar-lite's), a retry policy does not send it again, and an HTTP
/// edge answers `400 bad-request`. A proxy wraps its incoming body's errors in it.
#[derive(Debug)]
pub struct CallerBodyFailed(BoxError);

impl CallerBodyFailed {
    /// The caller's body failed because of `reason`.
    pub fn new(reason: impl Into<BoxError>) -> Self {
        Self(reason.into())
    }

    /// Whether `error` or one of its sources is a [`CallerBodyFailed`].
    #[must_use]
    pub fn in_chain(error: &(dyn Error + 'static)) -> bool {
        in_chain::<Self>(error)
    }
}

impl fmt::Display for CallerBodyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the caller's request body failed: {}", self.0)
    }
}

impl Error for CallerBodyFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Marks an error that refused a call inside this process, before anything was sent: an open
/// circuit breaker, say. It sits in the error's chain of sources, so a retry layer that
/// finds it knows the attempt cost the upstream nothing, and gives its retry budget back,
/// without depending on the crate that refused.
///
/// ```
/// use resilience_core::RefusedLocally;
/// use std::{error::Error, fmt};
///
/// #[derive(Debug)]
/// struct Full;
/// impl fmt::Display for Full {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("queue full")
///     }
/// }
/// impl Error for Full {
///     fn source(&self) -> Option<&(dyn Error + 'static)> {
///         Some(&RefusedLocally)
///     }
/// }
///
/// assert!(RefusedLocally::in_chain(&Full));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedLocally;

impl RefusedLocally {
    /// Whether `error` or one of its sources is a [`RefusedLocally`].
    #[must_use]
    pub fn in_chain(error: &(dyn Error + 'static)) -> bool {
        in_chain::<Self>(error)
    }
}

impl fmt::Display for RefusedLocally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused inside this process; nothing was sent")
    }
}

impl Error for RefusedLocally {}

/// Whether `error` or one of its sources is a `T`.
fn in_chain<T: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    std::iter::successors(Some(error), |&e| e.source()).any(|e| e.is::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_value() {
        let err = ConfigError::duration("open_for", Duration::from_millis(250), "must be longer");
        assert_eq!(err.field(), "open_for");
        assert_eq!(err.value(), "250ms");
        assert_eq!(
            err.to_string(),
            "invalid `open_for` = 250ms: must be longer"
        );
    }
}
