//! [`Classify`]: which responses count as failures, and which errors count at all.

use crate::BoxError;
#[cfg(feature = "http")]
use http::Response;
#[cfg(feature = "http")]
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

/// Decides whether a response counts as a failure for the breaker. An `Err` from the inner
/// service is a failure, unless [`counts_error`](Classify::counts_error) says it is not the
/// endpoint's doing, in which case the call is not recorded at all.
///
/// Every [`tower_http::classify::ClassifyResponse`] classifies `http::Response`s:
/// [`ServerErrorsAsFailures`](tower_http::classify::ServerErrorsAsFailures) (5xx) and
/// [`GrpcErrorsAsFailures`](tower_http::classify::GrpcErrorsAsFailures) (a `grpc-status` other
/// than OK in the response head, the trailers-only form that gRPC uses for errors). A response
/// that such a classifier can only judge at the end of its body counts as a success: the
/// breaker judges the response head. [`ErrorsAsFailures`], the default, works for any response
/// type; [`classify_fn`] turns a closure into a classifier.
pub trait Classify<Res>: Clone {
    /// Whether `response` counts as a failure.
    fn is_failure(&self, response: &Res) -> bool;

    /// Whether `error` is recorded, as a failure; `false` leaves the call out of the window
    /// (a half-open probe permit is handed back). By default every error counts but the
    /// caller's own ([`CallerBodyFailed`](resilience_core::CallerBodyFailed) in its chain). An
    /// error that says nothing about the endpoint belongs out: a timeout whose time went by
    /// before the call reached the endpoint, say.
    #[inline]
    fn counts_error(&self, error: &BoxError) -> bool {
        !resilience_core::CallerBodyFailed::in_chain(&**error)
    }
}

/// The default classifier: every response is a success, every `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsFailures;

impl<Res> Classify<Res> for ErrorsAsFailures {
    #[inline]
    fn is_failure(&self, _: &Res) -> bool {
        false
    }
}

#[cfg(feature = "http")]
impl<C, B> Classify<Response<B>> for C
where
    C: ClassifyResponse + Clone,
{
    fn is_failure(&self, response: &Response<B>) -> bool {
        matches!(
            self.clone().classify_response(response),
            ClassifiedResponse::Ready(Err(_))
        )
    }
}

/// A classifier made from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> std::fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassifyFn")
    }
}

/// A classifier that calls `f` on each response: `true` means failure.
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn(f)
}

impl<F, Res> Classify<Res> for ClassifyFn<F>
where
    F: Fn(&Res) -> bool + Clone,
{
    #[inline]
    fn is_failure(&self, response: &Res) -> bool {
        (self.0)(response)
    }
}
