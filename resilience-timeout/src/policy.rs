//! How a [`Timeout`](crate::Timeout) decides when a request must be done.

use std::time::Duration;
use tokio::time::Instant;

/// When a request must complete, as decided by a [`TimeoutPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request may run until this instant.
    Until {
        /// The instant at which the request times out.
        deadline: Instant,
        /// The time the request was given, for errors and metrics.
        budget: Duration,
    },
    /// The request's deadline has passed already: fail without calling the inner service.
    Expired,
}

/// Decides the deadline of each request, given the configured timeout.
///
/// A policy may also rewrite the request, for example to tell the next hop how much time
/// remains. [`Fixed`] applies the configured timeout as it is; with the `http` feature,
/// [`HttpDeadline`](crate::HttpDeadline) honours and propagates incoming deadlines.
pub trait TimeoutPolicy<Req> {
    /// Returns when `req` must be done, given the configured `timeout`.
    fn verdict(&self, timeout: Duration, req: &mut Req) -> Verdict;
}

/// The configured timeout, applied to every request as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed;

impl<Req> TimeoutPolicy<Req> for Fixed {
    #[inline]
    fn verdict(&self, timeout: Duration, _req: &mut Req) -> Verdict {
        Verdict::Until {
            deadline: instant_after(Instant::now(), timeout),
            budget: timeout,
        }
    }
}

/// `now + timeout`, saturating: a timeout too large to represent never fires, as with
/// `Duration::MAX` in tokio itself.
#[inline]
#[must_use]
pub fn instant_after(now: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    now.checked_add(timeout).unwrap_or_else(|| now + CENTURY)
}
