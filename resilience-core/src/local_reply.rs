//! [`LocalReply`]: a response that a proxy or an HTTP-edge layer makes itself, instead of one
//! from upstream. One [`Reason`] maps to one status and one flag everywhere, in the breaker's
//! `503`, the timeout's `504`, the authorization's `403` and every answer of `sidecar-lite`,
//! as Envoy's response flags do.

use crate::retry_after_secs;
use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use http_body_util::Full;
use std::{fmt, time::Duration};

/// The header that names why a response was made locally: its value is a [`Reason::flag`].
/// The default of every layer that answers locally; each takes another name if needed.
pub const SIDECAR_ERROR: HeaderName = HeaderName::from_static("x-sidecar-error");

/// Why a response was made locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The upstream did not answer within the deadline: `504`.
    Timeout,
    /// A circuit breaker refused the call: `503`.
    BreakerOpen,
    /// Discovery found no endpoint for the route: `503`.
    NoEndpoints,
    /// Too many requests in flight: `503`.
    Overloaded,
    /// No connection could be made to the upstream: `502`.
    Connect,
    /// The upstream connection failed during the call: `502`.
    Upstream,
    /// The caller's identity is not allowed: `403`.
    Unauthorized,
    /// The request cannot be forwarded as it is: `400`.
    BadRequest,
    /// A fault injected on purpose, to test how callers cope: `503` unless the fault's
    /// configuration names another status (see [`LocalReply::status`]).
    FaultInjected,
    /// No such endpoint (of an admin server, say): `404`.
    NotFound,
    /// The endpoint exists but not for this method: `405`.
    MethodNotAllowed,
}

impl Reason {
    /// The HTTP status of a reply for this reason.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BreakerOpen | Self::NoEndpoints | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Connect | Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::Unauthorized => StatusCode::FORBIDDEN,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::FaultInjected => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The value of the [`SIDECAR_ERROR`] header: `timeout`, `breaker-open`, `no-endpoints`,
    /// `overloaded`, `connect`, `upstream`, `unauthorized`, `bad-request`, `fault-injected`,
    /// `not-found` or `method-not-allowed`.
    #[must_use]
    pub const fn flag(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::BreakerOpen => "breaker-open",
            Self::NoEndpoints => "no-endpoints",
            Self::Overloaded => "overloaded",
            Self::Connect => "connect",
            Self::Upstream => "upstream",
            Self::Unauthorized => "unauthorized",
            Self::BadRequest => "bad-request",
            Self::FaultInjected => "fault-injected",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
        }
    }

    /// The one-line body of a reply for this reason, unless the reply says more.
    #[must_use]
    pub const fn text(self) -> &'static str {
        match self {
            Self::Timeout => "gateway timeout: the upstream did not answer in time",
            Self::BreakerOpen => "service unavailable: the circuit breaker is open",
            Self::NoEndpoints => "service unavailable: discovery found no endpoint for this route",
            Self::Overloaded => "service unavailable: too many requests in flight",
            Self::Connect => "bad gateway: cannot connect to the upstream",
            Self::Upstream => "bad gateway: the upstream connection failed",
            Self::Unauthorized => {
                "forbidden: the peer identity is not allowed to call this service"
            }
            Self::BadRequest => "bad request: the request cannot be forwarded",
            Self::FaultInjected => "fault injected: request aborted",
            Self::NotFound => "not found",
            Self::MethodNotAllowed => "method not allowed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.flag())
    }
}

/// A response made locally: the [`Reason`]'s status, its flag in [`SIDECAR_ERROR`] (or the
/// header given to [`flag_header`](Self::flag_header)), `Retry-After` when the wait is known
/// (see [`retry_after_secs`]), and a one-line plain-text body.
///
/// ```
/// use resilience_core::{LocalReply, Reason, SIDECAR_ERROR};
/// use std::time::Duration;
///
/// let response = LocalReply::new(Reason::BreakerOpen)
///     .retry_after(Some(Duration::from_millis(2500)))
///     .into_response();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()[SIDECAR_ERROR], "breaker-open");
/// assert_eq!(response.headers()["retry-after"], "3");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalReply {
    reason: Reason,
    status: StatusCode,
    text: &'static str,
    retry_after: Option<Duration>,
    header: HeaderName,
}

impl LocalReply {
    /// A reply for `reason`, with its default text.
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            status: reason.status(),
            text: reason.text(),
            retry_after: None,
            header: SIDECAR_ERROR,
        }
    }

    /// Says more than the reason's default text: one line, without its newline.
    pub fn text(mut self, text: &'static str) -> Self {
        self.text = text;
        self
    }

    /// Answers with `status` instead of the reason's: only for [`Reason::FaultInjected`],
    /// whose status is configured; every other reason keeps its one status.
    pub fn status(mut self, status: StatusCode) -> Self {
        if self.reason == Reason::FaultInjected {
            self.status = status;
        }
        self
    }

    /// The wait after which the caller may try again, when known: it becomes `Retry-After`.
    pub fn retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// Names the reason in `header` instead of [`SIDECAR_ERROR`].
    pub fn flag_header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Why the reply was made.
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The response.
    #[must_use]
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(format!("{}\n", self.text))));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(self.header, HeaderValue::from_static(self.reason.flag()));
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const ALL: [Reason; 11] = [
        Reason::Timeout,
        Reason::BreakerOpen,
        Reason::NoEndpoints,
        Reason::Overloaded,
        Reason::Connect,
        Reason::Upstream,
        Reason::Unauthorized,
        Reason::BadRequest,
        Reason::FaultInjected,
        Reason::NotFound,
        Reason::MethodNotAllowed,
    ];

    #[tokio::test]
    async fn each_reason_has_its_status_flag_and_text() {
        let expected = [
            (504, "timeout"),
            (503, "breaker-open"),
            (503, "no-endpoints"),
            (503, "overloaded"),
            (502, "connect"),
            (502, "upstream"),
            (403, "unauthorized"),
            (400, "bad-request"),
            (503, "fault-injected"),
            (404, "not-found"),
            (405, "method-not-allowed"),
        ];
        for (reason, (status, flag)) in ALL.into_iter().zip(expected) {
            let response = LocalReply::new(reason).into_response();
            assert_eq!(response.status(), status, "{reason}");
            assert_eq!(response.headers()[SIDECAR_ERROR], flag);
            assert!(response.headers().get(RETRY_AFTER).is_none(), "{reason}");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("{}\n", reason.text()));
        }
    }

    #[test]
    fn retry_after_only_when_the_wait_is_known() {
        let reply = LocalReply::new(Reason::Overloaded).retry_after(Some(Duration::from_millis(1)));
        assert_eq!(reply.into_response().headers()[RETRY_AFTER], "1");
        let reply = LocalReply::new(Reason::BreakerOpen).retry_after(None);
        assert!(reply.into_response().headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn only_an_injected_fault_changes_its_status() {
        let fault = LocalReply::new(Reason::FaultInjected).status(StatusCode::IM_A_TEAPOT);
        assert_eq!(fault.into_response().status(), StatusCode::IM_A_TEAPOT);
        let timeout = LocalReply::new(Reason::Timeout).status(StatusCode::OK);
        assert_eq!(
            timeout.into_response().status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[tokio::test]
    async fn the_header_name_and_the_text_can_change() {
        let response = LocalReply::new(Reason::BadRequest)
            .text("bad request: two Host headers")
            .flag_header(HeaderName::from_static("x-mesh-error"))
            .into_response();
        assert_eq!(response.headers()["x-mesh-error"], "bad-request");
        assert!(response.headers().get(SIDECAR_ERROR).is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "bad request: two Host headers\n");
    }
}
