//! What to retry: the [`Replay`] and [`Policy`] traits, and [`RetryIf`] for any cloneable
//! request.

use std::{fmt, marker::PhantomData, time::Duration};
use tokio::time::Instant;

/// What a [`Policy`] decides after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return this outcome to the caller.
    Return,
    /// Retry, for this reason.
    Retry(Reason),
}

/// Why an attempt is retried, and how long the server asked us to wait, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// A short name for logs and metrics, such as `"gateway-error"` or `"connect-failure"`.
    pub name: &'static str,
    /// The delay the server asked for (`Retry-After`), used instead of the backoff.
    pub retry_after: Option<Duration>,
}

impl Reason {
    /// A reason with no delay of its own.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            retry_after: None,
        }
    }
}

/// How a request is kept so that it can be sent again.
///
/// How often and when (attempts, backoff, budget) is the [`RetryLayer`](crate::RetryLayer)'s
/// business; a policy only answers questions about one request ([`Replay`]) and its outcomes
/// ([`Policy`]).
pub trait Replay<Req> {
    /// The request type the inner service takes. The HTTP policy wraps the body so that it can
    /// be replayed; the generic policy passes the request through.
    type Request;

    /// Turns the caller's request into the first attempt's request and, when the request may
    /// be retried at all, a copy kept for replay.
    fn prepare(&self, req: Req) -> (Self::Request, Option<Self::Request>);

    /// A fresh copy of `kept` for attempt number `attempt` (2 for the first retry), to be sent
    /// at `send_at` (after its backoff), or `None` when it can no longer be replayed.
    fn replay(&self, kept: &Self::Request, attempt: u32, send_at: Instant)
    -> Option<Self::Request>;

    /// Whether a copy of `kept` may be sent while an earlier one is still in flight
    /// (hedging): the request may be processed twice, and its body must not be disturbed.
    /// Default: yes.
    fn may_hedge(&self, kept: &Self::Request) -> bool {
        let _ = kept;
        true
    }

    /// The time now, if `first` (the first attempt's request, as [`prepare`](Self::prepare)
    /// made it) says so: a layer outside read the clock for it on this same call. The retry
    /// layer counts the request in its budget at that instant rather than read the clock
    /// again. Default: `None`, the clock is read.
    fn stamped_now(&self, first: &Self::Request) -> Option<Instant> {
        let _ = first;
        None
    }

    /// The instant by which the request must be done, if it has one: no retry is started that
    /// could not finish its backoff before it.
    fn deadline(&self, kept: &Self::Request) -> Option<Instant> {
        let _ = kept;
        None
    }
}

/// Decides, after an attempt, whether to retry.
pub trait Policy<Req, Res, E> {
    /// Whether to retry `result`; `kept` is the copy of the request made by
    /// [`Replay::prepare`].
    fn classify(&self, kept: &Req, result: &Result<Res, E>) -> Action;

    /// Whether `result` says the attempt was refused inside this process before it was sent
    /// (an open circuit breaker, say). A retry refused this way gives its budget back: a
    /// breaker's rejection must not spend retry budget. Default: never.
    fn refused_locally(&self, result: &Result<Res, E>) -> bool {
        let _ = result;
        false
    }
}

/// Retries any cloneable request whose outcome `predicate` says is worth retrying.
///
/// ```
/// use resilience_retry::RetryIf;
///
/// // Requests are `String`s; responses are status codes.
/// let policy: RetryIf<_, String> = RetryIf::new(|result: &Result<u16, std::io::Error>| {
///     matches!(result, Ok(status) if *status >= 500) || result.is_err()
/// });
/// # let _ = policy;
/// ```
pub struct RetryIf<F, Req = ()> {
    predicate: F,
    _request: PhantomData<fn(Req)>,
}

impl<F, Req> RetryIf<F, Req> {
    /// Retries each outcome for which `predicate` returns `true`.
    pub fn new(predicate: F) -> Self {
        Self {
            predicate,
            _request: PhantomData,
        }
    }
}

impl<F: Clone, Req> Clone for RetryIf<F, Req> {
    fn clone(&self) -> Self {
        Self::new(self.predicate.clone())
    }
}

impl<F, Req> fmt::Debug for RetryIf<F, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryIf").finish_non_exhaustive()
    }
}

impl<F, Req: Clone> Replay<Req> for RetryIf<F, Req> {
    type Request = Req;

    #[inline]
    fn prepare(&self, req: Req) -> (Req, Option<Req>) {
        (req.clone(), Some(req))
    }

    fn replay(&self, kept: &Req, _attempt: u32, _send_at: Instant) -> Option<Req> {
        Some(kept.clone())
    }
}

impl<F, Req, Res, E> Policy<Req, Res, E> for RetryIf<F, Req>
where
    F: Fn(&Result<Res, E>) -> bool,
{
    #[inline]
    fn classify(&self, _kept: &Req, result: &Result<Res, E>) -> Action {
        if (self.predicate)(result) {
            Action::Retry(Reason::new("predicate"))
        } else {
            Action::Return
        }
    }
}
