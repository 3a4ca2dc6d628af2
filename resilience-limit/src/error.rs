//! The errors of a refused call: typed, so that an HTTP edge can answer each with its status.

use resilience_core::RefusedLocally;
use std::{error::Error, fmt, time::Duration};

/// Whose limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The limit of the whole service (a route, in the sidecar).
    Service,
    /// The limit of one caller (a peer identity, in the sidecar).
    Caller,
}

impl Scope {
    /// `service` or `caller`, as a metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Caller => "caller",
        }
    }
}

/// A rate limit refused the call; it may go again after [`retry_after`](Self::retry_after).
/// At an HTTP edge: `429`, with `Retry-After` and `x-sidecar-error: rate-limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
    scope: Scope,
}

impl RateLimited {
    pub(crate) fn new(retry_after: Duration, scope: Scope) -> Self {
        Self { retry_after, scope }
    }

    /// How long until the limit lets a call through again.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Whose limit it was.
    #[must_use]
    pub fn scope(&self) -> Scope {
        self.scope
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited ({} limit); next call allowed in {:?}",
            self.scope.as_str(),
            self.retry_after
        )
    }
}

impl Error for RateLimited {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&RefusedLocally)
    }
}

/// A concurrency limit (adaptive or fixed) refused the call: as many calls as the limit allows
/// are in flight. At an HTTP edge: `503` with `x-sidecar-error: overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    limit: usize,
}

impl Overloaded {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The limit at the time of the refusal.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded: {} calls in flight, the limit", self.limit)
    }
}

impl Error for Overloaded {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&RefusedLocally)
    }
}
