//! Error types.

use crate::State;
use std::{error::Error, fmt, time::Duration};
use tokio::time::Instant;

/// The breaker did not let the call through.
///
/// Returned (boxed, as [`BoxError`](crate::BoxError)) by [`CircuitBreaker`](crate::CircuitBreaker) in fail-fast
/// mode; check for it with `err.is::<BreakerOpen>()`. The inner service was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    state: State,
    next_probe: Option<Instant>,
    retry_after: Option<Duration>,
}

impl BreakerOpen {
    pub(crate) fn new(state: State, next_probe: Option<Instant>, now: Instant) -> Self {
        Self {
            state,
            next_probe,
            retry_after: next_probe.map(|at| at.saturating_duration_since(now)),
        }
    }

    /// The state that rejected the call: [`State::Open`], [`State::HalfOpen`] (every probe
    /// permit taken) or [`State::ForcedOpen`].
    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    /// When the breaker lets the next probe through: the end of the open period, or, half-open
    /// with a probe reserved and not yet called, when that reservation lapses
    /// ([`PROBE_RESERVATION_LAPSE`](crate::PROBE_RESERVATION_LAPSE)). `None` when that is not
    /// known in advance: the breaker is forced open, or half-open with every probe in flight
    /// (it decides when they finish).
    #[must_use]
    pub const fn next_probe(&self) -> Option<Instant> {
        self.next_probe
    }

    /// How long from the rejection until [`next_probe`](Self::next_probe), if known.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds for a `Retry-After` header:
    /// rounded up, and at least 1, so that a client that waits that long finds a probe
    /// allowed.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(resilience_core::retry_after_secs)
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (State::ForcedOpen, _) => f.write_str("circuit breaker is forced open"),
            (State::HalfOpen, _) => {
                f.write_str("circuit breaker is half-open and every probe is taken")
            }
            (_, Some(after)) => write!(f, "circuit breaker is open; next probe in {after:?}"),
            (_, None) => f.write_str("circuit breaker is open"),
        }
    }
}

impl Error for BreakerOpen {
    /// [`RefusedLocally`](resilience_core::RefusedLocally): the call was refused here, before
    /// anything was sent, so a retry layer above gives its retry budget back.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&resilience_core::RefusedLocally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_breaker_is_a_local_refusal() {
        let open = BreakerOpen::new(State::Open, None, Instant::now());
        assert!(resilience_core::RefusedLocally::in_chain(&open));
    }
}
