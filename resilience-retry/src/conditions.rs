//! [`RetryOn`]: which HTTP and gRPC outcomes are retried, by name, as a
//! [`tower_http::classify`] classifier.

use crate::{
    ConfigError, Reason,
    grpc_trailers::{TrailersGrpcStatus, grpc_status},
};
use http::{HeaderMap, Response, StatusCode};
use resilience_core::is_grpc;
use std::{any::Any, error::Error, fmt, io, str::FromStr, sync::Arc};
use tower_http::classify::{ClassifiedResponse, ClassifyEos, ClassifyResponse};

/// The reason name for a request that never reached the server: retried for any method.
pub const CONNECT_FAILURE: &str = "connect-failure";

/// How a classifier judges a failed outcome, as its `tower_http::classify` failure class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Worth another attempt, for this reason.
    Retryable(Reason),
    /// A failure that another attempt would not mend.
    NotRetryable,
}

/// A retry condition, by the name used in config files (Envoy's `retry_on` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// `5xx`: any 5xx response, a per-try timeout, or no response at all (what
    /// `connect-failure` and `reset` cover), as Envoy's `5xx`.
    ServerError,
    /// `gateway-error`: 502, 503 or 504, a per-try timeout, or no response at all, as Envoy's
    /// `gateway-error`.
    GatewayError,
    /// `connect-failure`: the request provably never reached the server: the connection
    /// could not be made, or an HTTP/2 server refused the stream (`REFUSED_STREAM`, or a
    /// `GOAWAY` that left the stream unprocessed). Retried for any method.
    ConnectFailure,
    /// `reset`: the connection was reset or closed, or an HTTP/2 stream reset, before a
    /// response arrived, or what arrived was not an HTTP response (as Envoy's `reset` covers
    /// a protocol error).
    Reset,
    /// `retriable-status-codes`: the statuses listed in [`RetryOn::status_codes`].
    RetriableStatusCodes,
    /// A gRPC status, read from the `grpc-status` header of a response.
    Grpc(GrpcCode),
}

/// The gRPC status codes that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// `cancelled` (1).
    Cancelled = 1,
    /// `deadline-exceeded` (4).
    DeadlineExceeded = 4,
    /// `resource-exhausted` (8).
    ResourceExhausted = 8,
    /// `internal` (13).
    Internal = 13,
    /// `unavailable` (14).
    Unavailable = 14,
}

const NAMES: [(&str, Condition); 10] = [
    ("5xx", Condition::ServerError),
    ("gateway-error", Condition::GatewayError),
    (CONNECT_FAILURE, Condition::ConnectFailure),
    ("reset", Condition::Reset),
    ("retriable-status-codes", Condition::RetriableStatusCodes),
    ("cancelled", Condition::Grpc(GrpcCode::Cancelled)),
    (
        "deadline-exceeded",
        Condition::Grpc(GrpcCode::DeadlineExceeded),
    ),
    (
        "resource-exhausted",
        Condition::Grpc(GrpcCode::ResourceExhausted),
    ),
    ("internal", Condition::Grpc(GrpcCode::Internal)),
    ("unavailable", Condition::Grpc(GrpcCode::Unavailable)),
];

impl Condition {
    /// The condition's name in config files.
    #[must_use]
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("unknown", |(name, _)| name)
    }

    fn bit(self) -> u16 {
        1 << NAMES.iter().position(|(_, c)| *c == self).unwrap_or(0)
    }
}

impl FromStr for Condition {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                ConfigError::new(
                    "on",
                    format!("\"{name}\""),
                    "unknown retry condition; expected one of 5xx, gateway-error, \
                     connect-failure, reset, retriable-status-codes, cancelled, \
                     deadline-exceeded, resource-exhausted, internal, unavailable",
                )
            })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of conditions under which an HTTP request is retried.
///
/// The default is Envoy's safe trio: `connect-failure`, `reset` and `gateway-error`.
///
/// Cloning is cheap (a reference count): `tower_http::classify` takes the classifier by value,
/// so [`HttpPolicy`](crate::HttpPolicy) clones it for every outcome it judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    conditions: u16,
    // Shared, not a `Vec`: a clone per response must not copy the list.
    status_codes: Arc<[StatusCode]>,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self::none()
            .with(Condition::ConnectFailure)
            .with(Condition::Reset)
            .with(Condition::GatewayError)
    }
}

impl RetryOn {
    /// No conditions: nothing is retried.
    #[must_use]
    pub fn none() -> Self {
        Self {
            conditions: 0,
            status_codes: Arc::new([]),
        }
    }

    /// The conditions named, as in a config file: `["5xx", "unavailable"]`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, ConfigError> {
        names
            .iter()
            .try_fold(Self::none(), |on, name| Ok(on.with(name.as_ref().parse()?)))
    }

    /// Adds a condition.
    #[must_use]
    pub fn with(mut self, condition: Condition) -> Self {
        self.conditions |= condition.bit();
        self
    }

    /// Sets the statuses retried under `retriable-status-codes` (and adds that condition).
    #[must_use]
    pub fn status_codes(mut self, codes: impl IntoIterator<Item = StatusCode>) -> Self {
        self.status_codes = codes.into_iter().collect();
        self.with(Condition::RetriableStatusCodes)
    }

    /// Whether `condition` is in the set.
    #[must_use]
    pub fn contains(&self, condition: Condition) -> bool {
        self.conditions & condition.bit() != 0
    }

    /// The conditions in the set, in their canonical order.
    pub fn conditions(&self) -> impl Iterator<Item = Condition> + '_ {
        NAMES.iter().map(|(_, c)| *c).filter(|c| self.contains(*c))
    }

    /// The statuses retried under `retriable-status-codes`.
    #[must_use]
    pub fn retriable_status_codes(&self) -> &[StatusCode] {
        &self.status_codes
    }

    fn retryable(&self, condition: Condition) -> RetryClass {
        if self.contains(condition) {
            RetryClass::Retryable(Reason::new(condition.name()))
        } else {
            RetryClass::NotRetryable
        }
    }

    fn classify_status(&self, status: StatusCode) -> Result<(), RetryClass> {
        let gateway = matches!(status.as_u16(), 502..=504);
        if gateway && self.contains(Condition::GatewayError) {
            return Err(self.retryable(Condition::GatewayError));
        }
        if status.is_server_error() && self.contains(Condition::ServerError) {
            return Err(self.retryable(Condition::ServerError));
        }
        if self.contains(Condition::RetriableStatusCodes) && self.status_codes.contains(&status) {
            return Err(self.retryable(Condition::RetriableStatusCodes));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(RetryClass::NotRetryable);
        }
        Ok(())
    }

    fn classify_grpc(&self, headers: &HeaderMap) -> Option<Result<(), RetryClass>> {
        grpc_status(headers).map(|code| self.classify_grpc_code(code))
    }

    fn classify_grpc_code(&self, code: i32) -> Result<(), RetryClass> {
        if code == 0 {
            return Ok(());
        }
        let retryable = NAMES.iter().find_map(|(_, c)| match c {
            Condition::Grpc(g) if *g as i32 == code && self.contains(*c) => Some(*c),
            _ => None,
        });
        Err(match retryable {
            Some(condition) => self.retryable(condition),
            None => RetryClass::NotRetryable,
        })
    }

    /// Classifies an error from the inner service by walking its chain of sources: a failed
    /// connect, a refused or reset HTTP/2 stream, a reset or closed connection, or a per-try
    /// timeout.
    fn classify_any_error(&self, error: &(dyn Error + 'static)) -> RetryClass {
        let mut next = Some(error);
        while let Some(error) = next {
            // The caller's body broke off: sending it again would break off again, and the
            // errors below it (hyper's parse error, say) are the caller's, not the upstream's.
            if error.is::<resilience_core::CallerBodyFailed>() {
                return RetryClass::NotRetryable;
            }
            if let Some(condition) = error_condition(error) {
                return match condition {
                    // A per-try timeout is the gateway-error family, as in Envoy.
                    Condition::GatewayError if !self.contains(Condition::GatewayError) => {
                        self.retryable(Condition::ServerError)
                    }
                    // No response at all: Envoy's `5xx` and `gateway-error` include it. The
                    // reason keeps its own name, so that only a connect failure is resent
                    // for any method.
                    Condition::ConnectFailure | Condition::Reset
                        if self.contains(Condition::ServerError)
                            || self.contains(Condition::GatewayError) =>
                    {
                        RetryClass::Retryable(Reason::new(condition.name()))
                    }
                    condition => self.retryable(condition),
                };
            }
            next = error.source();
        }
        RetryClass::NotRetryable
    }
}

fn error_condition(error: &(dyn Error + 'static)) -> Option<Condition> {
    if error.is::<resilience_core::ConnectFailed>() {
        return Some(Condition::ConnectFailure);
    }
    if let Some(err) = error.downcast_ref::<hyper_util::client::legacy::Error>()
        && err.is_connect()
    {
        return Some(Condition::ConnectFailure);
    }
    if let Some(err) = error.downcast_ref::<io::Error>() {
        return match err.kind() {
            io::ErrorKind::ConnectionRefused => Some(Condition::ConnectFailure),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Some(Condition::Reset),
            _ => None,
        };
    }
    if let Some(err) = error.downcast_ref::<hyper::Error>()
        && (err.is_incomplete_message() || err.is_closed() || err.is_canceled() || err.is_parse())
    {
        return Some(Condition::Reset);
    }
    if let Some(err) = error.downcast_ref::<h2::Error>() {
        return h2_condition(err);
    }
    if error.is::<resilience_timeout::Elapsed>() {
        return Some(Condition::GatewayError);
    }
    None
}

/// An HTTP/2 error, as hyper carries it in its source chain.
///
/// `REFUSED_STREAM` (RFC 9113 §8.7) and a GOAWAY from the server (which h2 reports only to
/// streams above the GOAWAY's last stream ID, or opened after it) both guarantee that the
/// server did not process the request: as good as a connect failure, safe to resend for any
/// method (gRPC A6 "transparent retries"). Any other stream reset may have been processed.
fn h2_condition(err: &h2::Error) -> Option<Condition> {
    if err.reason() == Some(h2::Reason::REFUSED_STREAM) || (err.is_go_away() && err.is_remote()) {
        return Some(Condition::ConnectFailure);
    }
    err.is_reset().then_some(Condition::Reset)
}

/// Whether `reason` is a gRPC status condition (`unavailable`, `cancelled`...): one that a
/// gRPC server reports when it declined the call.
pub(crate) fn is_grpc_reason(reason: &Reason) -> bool {
    NAMES
        .iter()
        .any(|(name, c)| matches!(c, Condition::Grpc(_)) && *name == reason.name)
}

impl ClassifyResponse for RetryOn {
    type FailureClass = RetryClass;
    type ClassifyEos = GrpcTrailers;

    fn classify_response<B>(
        self,
        response: &Response<B>,
    ) -> ClassifiedResponse<RetryClass, GrpcTrailers> {
        if is_grpc(response.headers()) {
            let status = grpc_status(response.headers()).or_else(|| {
                response
                    .extensions()
                    .get::<TrailersGrpcStatus>()
                    .map(|s| s.0)
            });
            return match status {
                Some(code) => ClassifiedResponse::Ready(self.classify_grpc_code(code)),
                // The status comes in the trailers, after the body.
                None => ClassifiedResponse::RequiresEos(GrpcTrailers { on: self }),
            };
        }
        ClassifiedResponse::Ready(self.classify_status(response.status()))
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> RetryClass {
        match as_error(error) {
            Some(error) => self.classify_any_error(error),
            None => RetryClass::NotRetryable,
        }
    }
}

/// The error behind a generic `E`, when it is one of the error types services return.
pub(crate) fn as_error<E: 'static>(error: &E) -> Option<&(dyn Error + 'static)> {
    let any = error as &dyn Any;
    if let Some(boxed) = any.downcast_ref::<Box<dyn Error + Send + Sync>>() {
        return Some(&**boxed);
    }
    if let Some(err) = any.downcast_ref::<hyper_util::client::legacy::Error>() {
        return Some(err);
    }
    if let Some(err) = any.downcast_ref::<hyper::Error>() {
        return Some(err);
    }
    any.downcast_ref::<io::Error>()
        .map(|e| e as &(dyn Error + 'static))
}

/// Classifies a gRPC response by the `grpc-status` in its trailers.
#[derive(Debug, Clone)]
pub struct GrpcTrailers {
    on: RetryOn,
}

impl ClassifyEos for GrpcTrailers {
    type FailureClass = RetryClass;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), RetryClass> {
        trailers
            .and_then(|t| self.on.classify_grpc(t))
            .unwrap_or(Ok(()))
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> RetryClass {
        self.on.classify_error(error)
    }
}
