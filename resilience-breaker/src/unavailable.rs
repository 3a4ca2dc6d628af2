//! [`UnavailableLayer`]: a rejection by the breaker as an HTTP `503 Service Unavailable`
//! response, for servers and proxies.

use crate::{BoxError, BreakerOpen};
use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The header on every response that the proxy makes itself, naming why (the same header as
/// `resilience_timeout::SIDECAR_ERROR`).
pub const SIDECAR_ERROR: HeaderName = HeaderName::from_static("x-sidecar-error");

const BODY: &str = "service unavailable: the circuit breaker is open\n";

/// The response body of [`Unavailable`]: the inner body, or the short text of a 503.
pub type UnavailableBody<B> = Either<B, Full<Bytes>>;

/// Turns [`BreakerOpen`] errors from the inner stack into `503 Service Unavailable` responses.
///
/// The response carries `x-sidecar-error: breaker-open`, `Retry-After` in whole seconds
/// (rounded up, at least 1; 1 when the breaker cannot tell) and a one-line plain-text body.
/// Other errors pass through unchanged. Put it outside a fail-fast
/// [`CircuitBreaker`](crate::CircuitBreaker) at an HTTP edge; in library mode keep the typed
/// error instead.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct UnavailableLayer {
    _priv: (),
}

impl UnavailableLayer {
    /// A layer that answers breaker rejections with 503.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for UnavailableLayer {
    type Service = Unavailable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unavailable { inner }
    }
}

/// Answers [`BreakerOpen`] errors with `503 Service Unavailable`; see [`UnavailableLayer`].
#[derive(Debug, Clone)]
pub struct Unavailable<S> {
    inner: S,
}

impl<S> Unavailable<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for Unavailable<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<UnavailableBody<B>>;
    type Error = BoxError;
    type Future = UnavailableFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        UnavailableFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`Unavailable`].
    #[derive(Debug)]
    pub struct UnavailableFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for UnavailableFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<UnavailableBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(err) => {
                let err = err.into();
                match err.downcast_ref::<BreakerOpen>() {
                    Some(open) => Ok(unavailable(open)),
                    None => Err(err),
                }
            }
        })
    }
}

fn unavailable<B>(open: &BreakerOpen) -> Response<UnavailableBody<B>> {
    let seconds = open.retry_after_secs().unwrap_or(1);
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        BODY.as_bytes(),
    ))));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(SIDECAR_ERROR, HeaderValue::from_static("breaker-open"));
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
