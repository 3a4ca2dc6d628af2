//! [`GatewayTimeoutLayer`]: a timeout as an HTTP `504 Gateway Timeout` response, for servers and
//! proxies.

use crate::{BoxError, Elapsed};
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

/// The response body of [`GatewayTimeout`]: the inner body, or the short text of a 504.
pub type GatewayTimeoutBody<B> = Either<B, Full<Bytes>>;

/// Turns [`Elapsed`] errors from the inner stack into `504 Gateway Timeout` responses.
///
/// The response is the [`LocalReply`] for [`Reason::Timeout`]: `x-sidecar-error: timeout` (or
/// the header given to [`flag_header`](Self::flag_header)) and a one-line plain-text body.
/// Other errors pass through unchanged. Put it outside a [`Timeout`](crate::Timeout) at an HTTP edge; in
/// library mode keep the typed error instead.
#[derive(Debug, Clone)]
#[must_use]
pub struct GatewayTimeoutLayer {
    flag_header: HeaderName,
}

impl Default for GatewayTimeoutLayer {
    fn default() -> Self {
        Self {
            flag_header: SIDECAR_ERROR,
        }
    }
}

impl GatewayTimeoutLayer {
    /// A layer that answers timeouts with 504.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the reason in `header` instead of `x-sidecar-error`.
    pub fn flag_header(mut self, header: HeaderName) -> Self {
        self.flag_header = header;
        self
    }
}

impl<S> Layer<S> for GatewayTimeoutLayer {
    type Service = GatewayTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayTimeout {
            inner,
            flag_header: self.flag_header.clone(),
        }
    }
}

/// Answers [`Elapsed`] errors with `504 Gateway Timeout`; see [`GatewayTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct GatewayTimeout<S> {
    inner: S,
    flag_header: HeaderName,
}

impl<S> GatewayTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        GatewayTimeoutLayer::new().layer(inner)
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

impl<S, Req, B> Service<Req> for GatewayTimeout<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<GatewayTimeoutBody<B>>;
    type Error = BoxError;
    type Future = GatewayTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        GatewayTimeoutFuture {
            inner: self.inner.call(req),
            flag_header: Some(self.flag_header.clone()),
        }
    }
}

pin_project! {
    /// The response future of [`GatewayTimeout`].
    #[derive(Debug)]
    pub struct GatewayTimeoutFuture<F> {
        #[pin]
        inner: F,
        flag_header: Option<HeaderName>,
    }
}

impl<F, B, E> Future for GatewayTimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<GatewayTimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(err) => {
                let err = err.into();
                if err.is::<Elapsed>() {
                    let reply = LocalReply::new(Reason::Timeout)
                        .flag_header(this.flag_header.take().unwrap_or(SIDECAR_ERROR));
                    Ok(reply.into_response().map(Either::Right))
                } else {
                    Err(err)
                }
            }
        })
    }
}
