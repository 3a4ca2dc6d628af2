//! Deadline propagation for HTTP: [`HttpDeadline`] and the [`Deadline`] request extension.

use crate::{
    grpc_timeout::{self, GRPC_TIMEOUT},
    policy::{TimeoutPolicy, Verdict, instant_after},
};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use resilience_core::is_grpc;
use std::time::Duration;
use tokio::time::Instant;

/// The header that carries the remaining time of a plain (non-gRPC) HTTP request, in whole
/// milliseconds: for example `x-request-timeout-ms: 1500`. It plays the part that `grpc-timeout`
/// plays for gRPC.
pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// The instant by which a request must be done, as a request extension.
///
/// [`HttpDeadline`] inserts it; inner layers read it: a per-try timeout never outlives the total
/// deadline, and a retry layer stops when the next backoff would pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline of `req`, if a layer has set one.
    pub fn of<B>(req: &Request<B>) -> Option<Instant> {
        req.extensions().get::<Deadline>().map(|d| d.0)
    }

    /// The time left until the deadline, zero when it has passed.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// A [`TimeoutPolicy`] for HTTP that honours and propagates deadlines.
///
/// For each request:
/// 1. The deadline is the earliest of: now plus the configured timeout, and a [`Deadline`]
///    already in the request's extensions (set by an outer layer in this process, which read
///    the incoming header); or, when there is none, now plus the time in an incoming
///    `grpc-timeout` header, or else an incoming [`REQUEST_TIMEOUT_MS`] header. Malformed
///    headers are ignored, with a debug event.
/// 2. A deadline that has already passed fails at once, without calling the inner service.
/// 3. The deadline is stored as a [`Deadline`] extension, and the time that remains, less the
///    margin, is written back into the header it came in (gRPC requests that came without one
///    get a `grpc-timeout`, and with [`originate`](Self::originate) plain HTTP requests get an
///    [`REQUEST_TIMEOUT_MS`]), so the next hop stops waiting when we do.
///
/// The outermost `HttpDeadline` a request meets decides the margin and whether to propagate:
/// it stores itself in the request ([`HttpDeadline::of`]), and layers further in (a per-try
/// timeout) and retries follow it, so the margin is taken once and `propagate(false)` holds
/// for every attempt. A layer further in may still turn propagation off for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDeadline {
    margin: Duration,
    propagate: bool,
    originate: bool,
}

impl Default for HttpDeadline {
    fn default() -> Self {
        Self {
            margin: Self::DEFAULT_MARGIN,
            propagate: true,
            originate: false,
        }
    }
}

impl HttpDeadline {
    /// The default margin: time for this hop to send the request on, taken off the deadline
    /// that the next hop is told.
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(5);

    /// Honours and propagates deadlines with the default margin.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time taken off the deadline that the next hop is told.
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Whether to write the remaining time into the outgoing request (default: yes). With
    /// `false` incoming deadlines are still honoured.
    #[must_use]
    pub fn propagate(mut self, propagate: bool) -> Self {
        self.propagate = propagate;
        self
    }

    /// Whether a plain HTTP request that came without a deadline header gets one: an
    /// [`REQUEST_TIMEOUT_MS`] with the time that remains, so that a request this service
    /// starts tells the next hop its deadline too (default: no; gRPC requests always get a
    /// `grpc-timeout`). [`TimeoutConfig::layer`](crate::TimeoutConfig::layer) turns it on with
    /// `propagate_deadline`, in library mode as in the sidecar.
    #[must_use]
    pub fn originate(mut self, originate: bool) -> Self {
        self.originate = originate;
        self
    }

    /// The settings of the outermost `HttpDeadline` that `req` went through, which layers
    /// further in and retries follow; `None` when it went through none.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        req.extensions().get::<Self>().copied()
    }
}

impl<B> TimeoutPolicy<Request<B>> for HttpDeadline {
    fn verdict(&self, timeout: Duration, req: &mut Request<B>) -> Verdict {
        let now = Instant::now();
        let mut deadline = instant_after(now, timeout);
        let header = incoming(req.headers());
        match Deadline::of(req) {
            // An outer layer read the incoming header and may have rewritten it since, less
            // its margin: reading it again would take the margin twice.
            Some(outer) => deadline = deadline.min(outer),
            None => {
                if let Some((_, incoming)) = header {
                    deadline = deadline.min(instant_after(now, incoming));
                }
            }
        }
        let settings = match Self::of(req) {
            Some(outer) => Self {
                propagate: outer.propagate && self.propagate,
                ..outer
            },
            None => {
                req.extensions_mut().insert(*self);
                *self
            }
        };
        if deadline <= now {
            return Verdict::Expired;
        }
        req.extensions_mut().insert(Deadline(deadline));

        let remaining = deadline - now;
        if settings.propagate {
            settings.tell(req, header.map(|(name, _)| name), remaining);
        }
        Verdict::Until {
            deadline,
            budget: remaining,
        }
    }
}

impl HttpDeadline {
    /// Rewrites the deadline header of `req` with `remaining` less the margin: the header it
    /// carries (`grpc-timeout`, else `x-request-timeout-ms`), or `grpc-timeout` for a gRPC
    /// request without one. A retry layer calls it so that each retry tells the next hop the
    /// time left when it is sent. Does nothing when propagation is off.
    pub fn rewrite<B>(&self, req: &mut Request<B>, remaining: Duration) {
        if self.propagate {
            let present = [GRPC_TIMEOUT, REQUEST_TIMEOUT_MS]
                .into_iter()
                .find(|name| req.headers().contains_key(name));
            self.tell(req, present, remaining);
        }
    }

    /// Writes `remaining` less the margin into `header`; without one, into `grpc-timeout` for
    /// a gRPC request, and into [`REQUEST_TIMEOUT_MS`] for another when originating.
    fn tell<B>(&self, req: &mut Request<B>, header: Option<HeaderName>, remaining: Duration) {
        let name = match header {
            Some(name) => name,
            None if is_grpc(req.headers()) => GRPC_TIMEOUT,
            None if self.originate => REQUEST_TIMEOUT_MS,
            None => return,
        };
        let left = remaining.saturating_sub(self.margin);
        let value = if name == GRPC_TIMEOUT {
            grpc_timeout::format(left)
        } else {
            HeaderValue::from(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        };
        req.headers_mut().insert(name, value);
    }
}

/// The deadline header a request came in with, and the time it gives.
fn incoming(headers: &HeaderMap) -> Option<(HeaderName, Duration)> {
    if let Some(value) = headers.get(GRPC_TIMEOUT) {
        match grpc_timeout::parse(value) {
            Some(timeout) => return Some((GRPC_TIMEOUT, timeout)),
            None => tracing::debug!(?value, "ignoring malformed grpc-timeout header"),
        }
    }
    if let Some(value) = headers.get(REQUEST_TIMEOUT_MS) {
        match parse_millis(value) {
            Some(timeout) => return Some((REQUEST_TIMEOUT_MS, timeout)),
            None => tracing::debug!(?value, "ignoring malformed x-request-timeout-ms header"),
        }
    }
    None
}

/// Whole milliseconds: ASCII digits only, no sign, at most 12 of them (about 31 years).
fn parse_millis(value: &HeaderValue) -> Option<Duration> {
    let digits = value.as_bytes();
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let millis = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_header_accepts_digits_only() {
        let ok = |s: &str| parse_millis(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(ok("0"), Some(Duration::ZERO));
        assert_eq!(ok(""), None);
        assert_eq!(ok("-5"), None);
        assert_eq!(ok("+5"), None);
        assert_eq!(ok("1.5"), None);
        assert_eq!(ok("1234567890123"), None);
    }
}
