//! [`UnavailableLayer`]: a rejection by the breaker as an HTTP `503 Service Unavailable`
//! response, for servers and proxies.

use crate::{BoxError, BreakerOpen};
use bytes::Bytes;
use http::{HeaderName, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use resilience_core::{LocalReply, Reason, SIDECAR_ERROR};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The response body of [`Unavailable`]: the inner body, or the short text of a 503.
pub type UnavailableBody<B> = Either<B, Full<Bytes>>;

/// Turns [`BreakerOpen`] errors from the inner stack into `503 Service Unavailable` responses.
///
/// The response is the [`LocalReply`] for [`Reason::BreakerOpen`]: `x-sidecar-error:
/// breaker-open` (or the header given to [`flag_header`](Self::flag_header)), `Retry-After` in
/// whole seconds (rounded up, at least 1) when the breaker knows when it lets the next probe
/// through, none when it cannot tell (forced open, every probe in flight), and a one-line
/// plain-text body.
/// Other errors pass through unchanged. Put it outside a fail-fast
/// [`CircuitBreaker`](crate::CircuitBreaker) at an HTTP edge; in library mode keep the typed
/// error instead.
#[derive(Debug, Clone)]
#[must_use]
pub struct UnavailableLayer {
    flag_header: HeaderName,
}

impl Default for UnavailableLayer {
    fn default() -> Self {
        Self {
            flag_header: SIDECAR_ERROR,
        }
    }
}

impl UnavailableLayer {
    /// A layer that answers breaker rejections with 503.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the reason in `header` instead of `x-sidecar-error`.
    pub fn flag_header(mut self, header: HeaderName) -> Self {
        self.flag_header = header;
        self
    }
}

impl<S> Layer<S> for UnavailableLayer {
    type Service = Unavailable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unavailable {
            inner,
            flag_header: self.flag_header.clone(),
        }
    }
}

/// Answers [`BreakerOpen`] errors with `503 Service Unavailable`; see [`UnavailableLayer`].
#[derive(Debug, Clone)]
pub struct Unavailable<S> {
    inner: S,
    flag_header: HeaderName,
}

impl<S> Unavailable<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        UnavailableLayer::new().layer(inner)
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
            flag_header: Some(self.flag_header.clone()),
        }
    }
}

pin_project! {
    /// The response future of [`Unavailable`].
    #[derive(Debug)]
    pub struct UnavailableFuture<F> {
        #[pin]
        inner: F,
        flag_header: Option<HeaderName>,
    }
}

impl<F, B, E> Future for UnavailableFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<UnavailableBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(err) => {
                let err = err.into();
                match err.downcast_ref::<BreakerOpen>() {
                    Some(open) => {
                        let reply = LocalReply::new(Reason::BreakerOpen)
                            .retry_after(open.retry_after())
                            .flag_header(this.flag_header.take().unwrap_or(SIDECAR_ERROR));
                        Ok(reply.into_response().map(Either::Right))
                    }
                    None => Err(err),
                }
            }
        })
    }
}
