//! [`HttpPolicy`]: what is retried for `http::Request<B>`, and how its body is replayed.

use crate::{
    Action, Policy, Reason, Replay, ReplayBody, RetryClass, RetryOn,
    conditions::{CONNECT_FAILURE, as_error, is_grpc_reason},
    replay::DEFAULT_MAX_REPLAY_BODY,
    retry_after,
};
use http::{
    HeaderName, HeaderValue, Method, Request, Response, StatusCode,
    header::{RETRY_AFTER, UPGRADE},
};
use http_body::Body;
use resilience_core::{GRPC_RETRY_PUSHBACK_MS, is_grpc};
use resilience_timeout::HttpDeadline;
use std::{error::Error, fmt, time::Duration, time::SystemTime};
use tokio::time::Instant;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

/// The header on every retried attempt, carrying its number: `x-retry-attempt: 2` on the
/// first retry. The first attempt goes without it, so an upstream can tell retries apart.
pub const RETRY_ATTEMPT: HeaderName = HeaderName::from_static("x-retry-attempt");

/// Marks a request as safe to repeat whatever its method (IETF draft
/// `draft-ietf-httpapi-idempotency-key-header`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The default cap on a `Retry-After` delay that is honoured.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Retries HTTP requests: outcomes judged by a [`tower_http::classify`] classifier ([`RetryOn`]
/// by default), idempotent methods only unless told otherwise, `Retry-After` honoured up to a
/// cap, bodies replayed up to a cap.
///
/// - A request whose method is not idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT and
///   DELETE are) and that carries no `Idempotency-Key` is retried only after a connect
///   failure, when it provably never reached the server (including an HTTP/2
///   `REFUSED_STREAM`).
/// - A gRPC call (a request whose `content-type` starts with `application/grpc`; every gRPC
///   call is a POST) is also retried on a gRPC status condition that was configured
///   (`unavailable`, `resource-exhausted`, `cancelled`, `deadline-exceeded`, `internal`),
///   whatever its method: listing a status says the server declined the call with it, as in
///   gRPC's retry design (A6) and Envoy's `retry-grpc-on`. Other outcomes of a gRPC call
///   (`5xx`, `reset`...) follow the method rule.
/// - A 429 or 503 with `Retry-After` waits that long instead of the backoff; if the delay is
///   over the cap (or past the deadline), the response is returned at once. A gRPC call
///   retried on a gRPC status does the same with `grpc-retry-pushback-ms` (A6), and a
///   negative or malformed pushback returns the response: the server asks not to retry.
/// - Each retry carries [`RETRY_ATTEMPT`].
///
/// # Deadlines
///
/// No retry starts that could not finish its backoff before the request's
/// [`Deadline`](resilience_timeout::Deadline), set by a total timeout outside with the
/// [`HttpDeadline`](resilience_timeout::HttpDeadline) policy. That timeout writes the time left
/// into the request's deadline header (`grpc-timeout` or `x-request-timeout-ms`) before the
/// first attempt, or leaves it to a per-try timeout inside that writes it for every attempt;
/// each retry rewrites it with the time left then, so the upstream is never told more time
/// than there is.
#[derive(Clone)]
pub struct HttpPolicy<C = RetryOn> {
    classifier: C,
    any_method: bool,
    max_replay_body: usize,
    max_retry_after: Duration,
    wall_clock: fn() -> SystemTime,
    refused_locally: fn(&(dyn Error + 'static)) -> bool,
}

impl<C: fmt::Debug> fmt::Debug for HttpPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("classifier", &self.classifier)
            .field("any_method", &self.any_method)
            .field("max_replay_body", &self.max_replay_body)
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self::new(RetryOn::default())
    }
}

#[allow(clippy::disallowed_methods)]
fn system_clock() -> SystemTime {
    // Retry-After may be an HTTP date: comparing it needs the wall clock, read only then.
    SystemTime::now()
}

impl<C> HttpPolicy<C> {
    /// A policy judging outcomes with `classifier`, with the defaults: idempotent methods
    /// only, 64 KiB of body kept for replay, `Retry-After` honoured up to 10 s.
    pub fn new(classifier: C) -> Self {
        Self {
            classifier,
            any_method: false,
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            wall_clock: system_clock,
            refused_locally: |error| error.is::<resilience_core::RefusedLocally>(),
        }
    }

    /// Tells which errors mean an attempt was refused inside this process before it was sent
    /// (an open circuit breaker below the retry layer, say): a retry refused so gives its
    /// budget back. `is_refusal` is asked of each error in the chain of sources. By default,
    /// an error whose chain holds a [`RefusedLocally`](resilience_core::RefusedLocally), as
    /// `resilience-breaker`'s `BreakerOpen` does: breaker and retry layers built from config
    /// need no setting for it.
    #[must_use]
    pub fn refused_locally(mut self, is_refusal: fn(&(dyn Error + 'static)) -> bool) -> Self {
        self.refused_locally = is_refusal;
        self
    }

    /// Retries any method, not only idempotent ones. Only for upstreams known to tolerate it.
    #[must_use]
    pub fn retry_any_method(mut self, any: bool) -> Self {
        self.any_method = any;
        self
    }

    /// Sets how many bytes of a request body are kept for replay; a larger body goes once.
    #[must_use]
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// Sets the longest `Retry-After` delay that is waited out.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Replaces the wall clock used for `Retry-After` dates, for tests.
    #[must_use]
    pub fn wall_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.wall_clock = clock;
        self
    }

    fn is_idempotent<B>(&self, req: &Request<B>) -> bool {
        self.any_method
            || matches!(
                *req.method(),
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
            || req.headers().contains_key(IDEMPOTENCY_KEY)
    }

    /// Applies the method rule and `Retry-After` to a retryable outcome.
    fn decide<B, R>(
        &self,
        kept: &Request<B>,
        class: RetryClass,
        response: Option<&Response<R>>,
    ) -> Action {
        let RetryClass::Retryable(mut reason) = class else {
            return Action::Return;
        };
        // A connect failure never reached the server; a listed gRPC status on a gRPC call
        // means the server declined it. Anything else may have been processed.
        let grpc_declined = is_grpc_reason(&reason) && is_grpc(kept.headers());
        let safe_for_any_method = reason.name == CONNECT_FAILURE || grpc_declined;
        if !safe_for_any_method && !self.is_idempotent(kept) {
            return Action::Return;
        }
        if grpc_declined
            && let Some(value) = response.and_then(|r| r.headers().get(GRPC_RETRY_PUSHBACK_MS))
        {
            // gRPC A6: the server's pushback replaces the backoff; a negative or malformed
            // one says not to retry. Over the cap, as a long `Retry-After`, returned at once.
            match pushback(value) {
                Some(delay) if delay <= self.max_retry_after => reason.retry_after = Some(delay),
                _ => return Action::Return,
            }
        } else if let Some(response) = response
            && matches!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            && let Some(value) = response.headers().get(RETRY_AFTER)
        {
            match retry_after::parse(value, (self.wall_clock)()) {
                Some(delay) if delay > self.max_retry_after => return Action::Return,
                Some(delay) => reason.retry_after = Some(delay),
                None => tracing::debug!(?value, "ignoring malformed retry-after header"),
            }
        }
        Action::Retry(reason)
    }
}

/// A `grpc-retry-pushback-ms` value as a delay: whole milliseconds, else `None`.
fn pushback(value: &HeaderValue) -> Option<Duration> {
    retry_after::digits(value.to_str().ok()?.trim()).map(Duration::from_millis)
}

impl<C, B: Body> Replay<Request<B>> for HttpPolicy<C> {
    type Request = Request<ReplayBody<B>>;

    fn prepare(&self, req: Request<B>) -> (Self::Request, Option<Self::Request>) {
        let (parts, body) = req.into_parts();
        let (first, copy) = ReplayBody::new(body, self.max_replay_body);
        let kept = copy.map(|body| Request::from_parts(parts.clone(), body));
        (Request::from_parts(parts, first), kept)
    }

    fn replay(
        &self,
        kept: &Self::Request,
        attempt: u32,
        send_at: Instant,
    ) -> Option<Self::Request> {
        let body = kept.body().replay()?;
        let mut req = Request::new(body);
        *req.method_mut() = kept.method().clone();
        *req.uri_mut() = kept.uri().clone();
        *req.version_mut() = kept.version();
        *req.headers_mut() = kept.headers().clone();
        *req.extensions_mut() = kept.extensions().clone();
        req.headers_mut()
            .insert(RETRY_ATTEMPT, HeaderValue::from(attempt));
        // The deadline header in the kept copy was written before the first attempt: tell the
        // upstream the time left when this retry is sent, as the total timeout would.
        if let Some(deadline) = resilience_timeout::Deadline::of(&req) {
            let left = deadline.saturating_duration_since(send_at);
            // With the settings of the timeout that set the deadline (its margin, and not at
            // all when it does not propagate); the defaults for a deadline set by hand.
            HttpDeadline::of(&req)
                .unwrap_or_default()
                .rewrite(&mut req, left);
        }
        Some(req)
    }

    /// When the total timeout outside decided the request's deadline (an
    /// [`HttpDeadline`] reads the clock for it).
    fn stamped_now(&self, first: &Self::Request) -> Option<Instant> {
        resilience_timeout::Deadline::decided_at(first)
    }

    fn deadline(&self, kept: &Self::Request) -> Option<Instant> {
        resilience_timeout::Deadline::of(kept)
    }

    /// gRPC A6's and HTTP's rule: an idempotent method (or an `Idempotency-Key`), or a gRPC
    /// call; and a body read whole already (within the replay cap), so the copies cannot
    /// disturb one another. Never a request asking to switch protocols (`Upgrade`, a WebSocket
    /// handshake): each copy would open a connection of its own to become the tunnel.
    fn may_hedge(&self, kept: &Self::Request) -> bool {
        (self.is_idempotent(kept) || is_grpc(kept.headers()))
            && kept.body().is_complete()
            && !kept.headers().contains_key(UPGRADE)
    }
}

impl<C, B, R, E> Policy<Request<B>, Response<R>, E> for HttpPolicy<C>
where
    C: ClassifyResponse<FailureClass = RetryClass> + Clone,
    E: fmt::Display + 'static,
{
    fn classify(&self, kept: &Request<B>, result: &Result<Response<R>, E>) -> Action {
        match result {
            Ok(response) => match self.classifier.clone().classify_response(response) {
                ClassifiedResponse::Ready(Ok(())) => Action::Return,
                ClassifiedResponse::Ready(Err(class)) => self.decide(kept, class, Some(response)),
                // A status in trailers is known only after the body has streamed to the
                // caller; by then it is too late to retry.
                ClassifiedResponse::RequiresEos(_) => Action::Return,
            },
            Err(error) => {
                let class = self.classifier.clone().classify_error(error);
                self.decide::<B, R>(kept, class, None)
            }
        }
    }

    fn refused_locally(&self, result: &Result<Response<R>, E>) -> bool {
        let Err(error) = result else {
            return false;
        };
        let mut next = as_error(error);
        while let Some(error) = next {
            if (self.refused_locally)(error) {
                return true;
            }
            next = error.source();
        }
        false
    }
}

impl Reason {
    /// Whether the attempt provably never reached the server.
    #[must_use]
    pub fn never_sent(&self) -> bool {
        self.name == CONNECT_FAILURE
    }
}
