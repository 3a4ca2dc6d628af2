//! [`LocalReply`]: a response that a proxy or an HTTP-edge layer makes itself, instead of one
//! from upstream. One [`Reason`] maps to one status and one flag everywhere, in the breaker's
//! `503`, the timeout's `504`, the authorization's `403` and every answer of `sidecar-lite`,
//! as Envoy's response flags do. A gRPC caller gets the same reason as a gRPC status instead,
//! in a trailers-only response, as Envoy and Linkerd answer gRPC calls they fail themselves.

use crate::retry_after_secs;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use http_body_util::Full;
use std::{fmt, time::Duration};

/// The header that names why a response was made locally: its value is a [`Reason::flag`].
/// The default of every layer that answers locally; each takes another name if needed.
pub const SIDECAR_ERROR: HeaderName = HeaderName::from_static("x-sidecar-error");

/// `grpc-status`, as a name made once: looking a header up by a string parses the string for
/// every lookup, which on a hot path (a response's head read for every request) costs more
/// than the lookup itself.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether a message is gRPC: its `content-type` is `application/grpc` or one of its forms
/// (`application/grpc+proto`, `application/grpc-web`, ...). A local reply to such a request is
/// a gRPC status (see [`LocalReply::grpc`]); every crate tells gRPC by this one test.
#[must_use]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a message is gRPC-Web (`application/grpc-web`, `application/grpc-web-text`...),
/// which, unlike the rest of gRPC, works over HTTP/1.1.
#[must_use]
pub fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"))
}

/// gRPC status codes that local replies use, by their number in the gRPC spec.
mod grpc_code {
    pub(super) const UNKNOWN: u16 = 2;
    pub(super) const DEADLINE_EXCEEDED: u16 = 4;
    pub(super) const PERMISSION_DENIED: u16 = 7;
    pub(super) const RESOURCE_EXHAUSTED: u16 = 8;
    pub(super) const UNIMPLEMENTED: u16 = 12;
    pub(super) const INTERNAL: u16 = 13;
    pub(super) const UNAVAILABLE: u16 = 14;
    pub(super) const UNAUTHENTICATED: u16 = 16;
}

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
    /// A rate limit refused the call: `429`.
    RateLimited,
    /// More header fields than the proxy takes: `431`.
    HeadersTooLarge,
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
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The value of the [`SIDECAR_ERROR`] header: `timeout`, `breaker-open`, `no-endpoints`,
    /// `overloaded`, `connect`, `upstream`, `unauthorized`, `bad-request`, `fault-injected`,
    /// `not-found`, `method-not-allowed`, `rate-limited` or `headers-too-large`.
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
            Self::RateLimited => "rate-limited",
            Self::HeadersTooLarge => "headers-too-large",
        }
    }

    /// The gRPC status of a reply for this reason, to a gRPC caller: `DEADLINE_EXCEEDED` (4)
    /// for a timeout; `UNAVAILABLE` (14) for an open breaker, no endpoints, overload, a
    /// connect or upstream failure and an injected fault; `PERMISSION_DENIED` (7) for an
    /// unauthorized caller; `RESOURCE_EXHAUSTED` (8) for a rate limit; otherwise the code gRPC maps the reason's HTTP status to
    /// (`INTERNAL` for `400` and `431`, `UNIMPLEMENTED` for `404` and `405`).
    #[must_use]
    pub const fn grpc_status(self) -> u16 {
        match self {
            Self::Timeout => grpc_code::DEADLINE_EXCEEDED,
            Self::BreakerOpen
            | Self::NoEndpoints
            | Self::Overloaded
            | Self::Connect
            | Self::Upstream
            | Self::FaultInjected => grpc_code::UNAVAILABLE,
            Self::Unauthorized => grpc_code::PERMISSION_DENIED,
            Self::BadRequest | Self::HeadersTooLarge => grpc_code::INTERNAL,
            Self::NotFound | Self::MethodNotAllowed => grpc_code::UNIMPLEMENTED,
            Self::RateLimited => grpc_code::RESOURCE_EXHAUSTED,
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
            Self::RateLimited => "too many requests: the rate limit is reached",
            Self::HeadersTooLarge => "request header fields too large",
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
/// (see [`retry_after_secs`]), and a one-line plain-text body. To a gRPC caller (see
/// [`grpc`](Self::grpc)) the same reason is a trailers-only gRPC response instead.
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
    grpc: bool,
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
            grpc: false,
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

    /// Answers as gRPC when `grpc` is true (the request was a gRPC call: see [`is_grpc`]):
    /// HTTP `200`, `content-type: application/grpc`, no body, and in the headers (a
    /// trailers-only response) the reason's [`grpc_status`](Reason::grpc_status), its text as
    /// `grpc-message`, the flag, and, when the wait is known, `grpc-retry-pushback-ms` beside
    /// `Retry-After`. An injected fault with a configured HTTP status gets the gRPC status that
    /// gRPC maps that HTTP status to.
    ///
    /// ```
    /// use resilience_core::{LocalReply, Reason, SIDECAR_ERROR};
    ///
    /// let response = LocalReply::new(Reason::Timeout).grpc(true).into_response();
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(response.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED
    /// assert_eq!(response.headers()[SIDECAR_ERROR], "timeout");
    /// ```
    pub fn grpc(mut self, grpc: bool) -> Self {
        self.grpc = grpc;
        self
    }

    /// Why the reply was made.
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The gRPC status of this reply, when answered as gRPC.
    fn grpc_status(&self) -> u16 {
        if self.reason == Reason::FaultInjected {
            return grpc_status_of_http(self.status);
        }
        self.reason.grpc_status()
    }

    /// The response.
    #[must_use]
    pub fn into_response(self) -> Response<Full<Bytes>> {
        if self.grpc {
            return self.into_grpc_response();
        }
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

    fn into_grpc_response(self) -> Response<Full<Bytes>> {
        // A trailers-only response: everything in the one header block, and the end of the
        // stream right after it, as the gRPC over HTTP/2 spec writes it.
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, HeaderValue::from(self.grpc_status()));
        if let Ok(message) = HeaderValue::from_str(&percent_encode(self.text)) {
            headers.insert(GRPC_MESSAGE, message);
        }
        headers.insert(self.header, HeaderValue::from_static(self.reason.flag()));
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(millis));
        }
        response
    }
}

const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's `grpc-retry-pushback-ms` (A6): how long the server asks a client to wait before it
/// retries; negative, or not a number, asks it not to.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC status for an HTTP status, as gRPC's "HTTP to gRPC status code mapping" gives it.
fn grpc_status_of_http(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => grpc_code::INTERNAL,
        401 => grpc_code::UNAUTHENTICATED,
        403 => grpc_code::PERMISSION_DENIED,
        404 => grpc_code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => grpc_code::UNAVAILABLE,
        _ => grpc_code::UNKNOWN,
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%` itself.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (b' '..=b'~').contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    const ALL: [Reason; 12] = [
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
        Reason::RateLimited,
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
            (429, "rate-limited"),
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
    async fn a_grpc_caller_gets_a_trailers_only_grpc_status() {
        let expected = [4, 14, 14, 14, 14, 14, 7, 13, 14, 12, 12, 8];
        for (reason, code) in ALL.into_iter().zip(expected) {
            let response = LocalReply::new(reason).grpc(true).into_response();
            assert_eq!(response.status(), StatusCode::OK, "{reason}");
            let headers = response.headers();
            assert_eq!(headers[CONTENT_TYPE], "application/grpc");
            assert_eq!(
                headers["grpc-status"],
                code.to_string().as_str(),
                "{reason}"
            );
            assert_eq!(headers["grpc-message"], reason.text());
            assert_eq!(headers[SIDECAR_ERROR], reason.flag());
            assert!(headers.get(RETRY_AFTER).is_none());
            assert!(headers.get("grpc-retry-pushback-ms").is_none());
            assert!(response.body().is_end_stream(), "no body: trailers-only");
        }
    }

    #[test]
    fn a_known_wait_is_a_grpc_pushback_too() {
        let response = LocalReply::new(Reason::BreakerOpen)
            .retry_after(Some(Duration::from_millis(2500)))
            .grpc(true)
            .into_response();
        assert_eq!(response.headers()["grpc-retry-pushback-ms"], "2500");
        assert_eq!(response.headers()[RETRY_AFTER], "3");
    }

    #[test]
    fn an_injected_fault_maps_its_http_status_for_grpc() {
        for (status, code) in [
            (503, "14"),
            (403, "7"),
            (401, "16"),
            (418, "2"),
            (400, "13"),
        ] {
            let response = LocalReply::new(Reason::FaultInjected)
                .status(StatusCode::from_u16(status).unwrap())
                .grpc(true)
                .into_response();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["grpc-status"], code, "{status}");
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% off: naïve"), "50%25 off: na%C3%AFve");
        let response = LocalReply::new(Reason::BadRequest)
            .text("bad request: 100% wrong")
            .grpc(true)
            .into_response();
        assert_eq!(
            response.headers()["grpc-message"],
            "bad request: 100%25 wrong"
        );
    }

    #[test]
    fn grpc_is_told_by_the_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
            ("text/plain", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&headers), grpc, "{ct}");
        }
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
