//! Deadline propagation for HTTP: [`HttpDeadline`] and the [`Deadline`] request extension.

use crate::{
    grpc_timeout::{self, GRPC_TIMEOUT},
    policy::{TimeoutPolicy, Verdict, instant_after},
};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use resilience_core::{header_value, is_grpc};
use std::{cell::RefCell, time::Duration};
use tokio::time::Instant;

/// The header that carries the remaining time of a plain (non-gRPC) HTTP request, in whole
/// milliseconds: for example `x-request-timeout-ms: 1500`. It plays the part that `grpc-timeout`
/// plays for gRPC.
pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// The instant by which a request must be done, as a request extension.
///
/// [`HttpDeadline`] inserts it; inner layers read it: a per-try timeout never outlives the total
/// deadline, and a retry layer stops when the next backoff would pass it. One extension carries
/// both the instant and, when an [`HttpDeadline`] set it, that layer's settings and the header
/// that tells the next hop: the layers further in update it in place rather than adding their
/// own, so the request's extensions are one entry to build, clone for a retry, and drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    set_by: Option<SetBy>,
    /// When the last [`HttpDeadline`] that set it read the clock.
    decided_at: Option<Instant>,
}

/// What the outermost [`HttpDeadline`] a request met left for the layers further in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetBy {
    settings: HttpDeadline,
    /// The header that carries the deadline to the next hop, if any: the one the request came
    /// with or the one written for it. Layers further in rewrite it without looking it up.
    carrier: Option<Carrier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    GrpcTimeout,
    RequestTimeoutMs,
}

impl Carrier {
    fn name(self) -> HeaderName {
        match self {
            Self::GrpcTimeout => GRPC_TIMEOUT,
            Self::RequestTimeoutMs => REQUEST_TIMEOUT_MS,
        }
    }
}

impl Deadline {
    /// A deadline at `at`, for a request extension set by hand: layers further in treat it as
    /// an outer timeout's deadline.
    #[must_use]
    pub fn new(at: Instant) -> Self {
        Self {
            at,
            set_by: None,
            decided_at: None,
        }
    }

    /// The instant by which the request must be done.
    #[must_use]
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The deadline of `req`, if a layer has set one.
    pub fn of<B>(req: &Request<B>) -> Option<Instant> {
        req.extensions().get::<Deadline>().map(|d| d.at)
    }

    /// When the [`HttpDeadline`] that last set the deadline of `req` read the clock to decide
    /// it; `None` for a deadline set by hand. A layer that `req` reaches further in on the
    /// same call can take it for the time now rather than read the clock again: a retry layer
    /// counting the request in its budget, whose buckets span a second or so.
    pub fn decided_at<B>(req: &Request<B>) -> Option<Instant> {
        req.extensions().get::<Deadline>()?.decided_at
    }

    /// The time left until the deadline, zero when it has passed.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
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
/// for every attempt. A layer further in may still turn propagation off for itself, and the
/// outermost may leave the writing to one further in ([`told_further_in`](Self::told_further_in)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDeadline {
    margin: Duration,
    propagate: bool,
    originate: bool,
    told_further_in: bool,
}

impl Default for HttpDeadline {
    fn default() -> Self {
        Self {
            margin: Self::DEFAULT_MARGIN,
            propagate: true,
            originate: false,
            told_further_in: false,
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

    /// Whether a layer further in that every attempt passes, an `HttpDeadline` of its own (a
    /// per-try timeout), tells the next hop, so that this one need not (default: no). That
    /// layer rewrites the header to the time left when the attempt leaves, so a header written
    /// here would only be replaced, and copied on the way by a retry layer that keeps the
    /// request. This layer still sets the deadline and the settings the layers further in
    /// follow (with `propagate(false)`, nobody tells). Set it only where such a layer is sure
    /// to follow: without one, the next hop is not told.
    #[must_use]
    pub fn told_further_in(mut self, told_further_in: bool) -> Self {
        self.told_further_in = told_further_in;
        self
    }

    /// The settings of the outermost `HttpDeadline` that `req` went through, which layers
    /// further in and retries follow; `None` when it went through none.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        Self::set_by(req).map(|set_by| set_by.settings)
    }

    fn set_by<B>(req: &Request<B>) -> Option<SetBy> {
        req.extensions().get::<Deadline>()?.set_by
    }
}

impl<B> TimeoutPolicy<Request<B>> for HttpDeadline {
    fn verdict(&self, timeout: Duration, req: &mut Request<B>) -> Verdict {
        let now = Instant::now();
        let mut deadline = instant_after(now, timeout);
        let outer = req.extensions().get::<Deadline>().copied();
        let (settings, carrier) = match outer.and_then(|outer| outer.set_by) {
            // An outer layer read the incoming header and may have rewritten it since, less
            // its margin: reading it again would take the margin twice. Its settings rule.
            Some(SetBy { settings, carrier }) => (
                Self {
                    propagate: settings.propagate && self.propagate,
                    ..settings
                },
                carrier,
            ),
            None => {
                let header = incoming(req.headers());
                if let (None, Some((_, incoming))) = (outer, header) {
                    deadline = deadline.min(instant_after(now, incoming));
                }
                (*self, header.map(|(carrier, _)| carrier))
            }
        };
        if let Some(outer) = outer {
            deadline = deadline.min(outer.at);
        }
        if deadline <= now {
            return Verdict::Expired;
        }

        let remaining = deadline - now;
        // This layer's own choice, not the outer one's: the layer further in tells.
        let carrier = if settings.propagate && !self.told_further_in {
            settings.tell(req, carrier, remaining)
        } else {
            carrier
        };
        match req.extensions_mut().get_mut::<Deadline>() {
            Some(outer) => {
                outer.at = deadline;
                outer.set_by.get_or_insert(SetBy { settings, carrier });
                outer.decided_at = Some(now);
            }
            None => {
                req.extensions_mut().insert(Deadline {
                    at: deadline,
                    set_by: Some(SetBy { settings, carrier }),
                    decided_at: Some(now),
                });
            }
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
            let carrier = match Self::set_by(req) {
                Some(set_by) => set_by.carrier,
                None if req.headers().contains_key(GRPC_TIMEOUT) => Some(Carrier::GrpcTimeout),
                None if req.headers().contains_key(REQUEST_TIMEOUT_MS) => {
                    Some(Carrier::RequestTimeoutMs)
                }
                None => None,
            };
            self.tell(req, carrier, remaining);
        }
    }

    /// Writes `remaining` less the margin into the `carrier` header; without one, into
    /// `grpc-timeout` for a gRPC request, and into [`REQUEST_TIMEOUT_MS`] for another when
    /// originating. Returns the header written, if any.
    fn tell<B>(
        &self,
        req: &mut Request<B>,
        carrier: Option<Carrier>,
        remaining: Duration,
    ) -> Option<Carrier> {
        let carrier = match carrier {
            Some(carrier) => carrier,
            None if is_grpc(req.headers()) => Carrier::GrpcTimeout,
            None if self.originate => Carrier::RequestTimeoutMs,
            None => return None,
        };
        let left = remaining.saturating_sub(self.margin);
        let value = match carrier {
            Carrier::GrpcTimeout => grpc_timeout::format(left),
            Carrier::RequestTimeoutMs => format_millis(left),
        };
        req.headers_mut().insert(carrier.name(), value);
        Some(carrier)
    }
}

/// The deadline header a request came in with, and the time it gives.
fn incoming(headers: &HeaderMap) -> Option<(Carrier, Duration)> {
    if let Some(value) = header_value(headers, &GRPC_TIMEOUT) {
        match grpc_timeout::parse(value) {
            Some(timeout) => return Some((Carrier::GrpcTimeout, timeout)),
            None => tracing::debug!(?value, "ignoring malformed grpc-timeout header"),
        }
    }
    if let Some(value) = header_value(headers, &REQUEST_TIMEOUT_MS) {
        match parse_millis(value) {
            Some(timeout) => return Some((Carrier::RequestTimeoutMs, timeout)),
            None => tracing::debug!(?value, "ignoring malformed x-request-timeout-ms header"),
        }
    }
    None
}

/// `left` in whole milliseconds, rounded down. The last few values made on the calling thread
/// are kept and shared: the requests of a busy route mostly start with the same time left (the
/// timeout itself, to the millisecond), and then cost a reference count instead of digits
/// formatted, checked and allocated. More than one, since a route's total timeout and its
/// per-try timeout each write their own value into every request, one after the other.
fn format_millis(left: Duration) -> HeaderValue {
    thread_local! {
        static RECENT: RefCell<Recent> = const { RefCell::new(Recent::new()) };
    }
    let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    RECENT.with_borrow_mut(|recent| recent.get_or_make(millis))
}

/// How many recent values of `x-request-timeout-ms` a thread keeps.
const RECENT_VALUES: usize = 4;

/// The values of `x-request-timeout-ms` made last on one thread, the oldest replaced first.
struct Recent {
    values: [Option<(u64, HeaderValue)>; RECENT_VALUES],
    oldest: usize,
}

impl Recent {
    const fn new() -> Self {
        Self {
            values: [const { None }; RECENT_VALUES],
            oldest: 0,
        }
    }

    fn get_or_make(&mut self, millis: u64) -> HeaderValue {
        let mut kept = self.values.iter().flatten();
        if let Some((_, value)) = kept.find(|(made_for, _)| *made_for == millis) {
            return value.clone();
        }
        let value = HeaderValue::from_str(itoa::Buffer::new().format(millis))
            .expect("decimal digits form a valid header value");
        self.values[self.oldest] = Some((millis, value.clone()));
        self.oldest = (self.oldest + 1) % RECENT_VALUES;
        value
    }
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
    fn a_kept_millis_value_is_used_only_for_the_same_millisecond() {
        let ms = Duration::from_millis;
        assert_eq!(format_millis(ms(5000)), "5000");
        assert_eq!(format_millis(ms(5000) + Duration::from_micros(999)), "5000");
        assert_eq!(format_millis(ms(4999)), "4999");
        assert_eq!(format_millis(ms(5000)), "5000");
        assert_eq!(format_millis(Duration::ZERO), "0");
        assert_eq!(format_millis(Duration::MAX), u64::MAX.to_string().as_str());
    }

    #[test]
    fn the_recent_values_are_kept_and_the_oldest_is_replaced_first() {
        let mut recent = Recent::new();
        let first = recent.get_or_make(30_000);
        assert_eq!(first, "30000");
        // A total and a per-try timeout, alternating: both values stay kept.
        assert_eq!(recent.get_or_make(10_000), "10000");
        assert_eq!(recent.get_or_make(30_000), "30000");
        assert_eq!(recent.get_or_make(10_000), "10000");
        assert_eq!(
            recent.get_or_make(30_000).as_bytes().as_ptr(),
            first.as_bytes().as_ptr(),
            "a kept value is shared, not made again"
        );
        let made = |recent: &Recent| -> Vec<u64> {
            recent
                .values
                .iter()
                .flatten()
                .map(|(millis, _)| *millis)
                .collect()
        };
        assert_eq!(made(&recent), [30_000, 10_000]);
        for millis in [1, 2, 3] {
            recent.get_or_make(millis);
        }
        assert_eq!(made(&recent), [3, 10_000, 1, 2]);
        assert_eq!(recent.get_or_make(3), "3");
        assert_eq!(made(&recent), [3, 10_000, 1, 2]);
    }

    #[test]
    fn grpc_timeout_comes_before_the_millis_header_and_the_first_value_counts() {
        let mut headers = HeaderMap::new();
        assert_eq!(incoming(&headers), None);
        headers.append(REQUEST_TIMEOUT_MS, HeaderValue::from_static("250"));
        headers.append(REQUEST_TIMEOUT_MS, HeaderValue::from_static("9"));
        assert_eq!(
            incoming(&headers),
            Some((Carrier::RequestTimeoutMs, Duration::from_millis(250)))
        );
        headers.append(GRPC_TIMEOUT, HeaderValue::from_static("3S"));
        assert_eq!(
            incoming(&headers),
            Some((Carrier::GrpcTimeout, Duration::from_secs(3)))
        );
    }

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
