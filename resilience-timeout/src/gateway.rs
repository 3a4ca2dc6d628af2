//! [`GatewayTimeoutLayer`]: a timeout as an HTTP `504 Gateway Timeout` response, for servers and
//! proxies.

use crate::{BoxError, Elapsed};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The header on every response that the proxy makes itself, naming why.
pub const SIDECAR_ERROR: HeaderName = HeaderName::from_static("x-sidecar-error");

const BODY: &str = "gateway timeout: the upstream did not answer in time\n";

/// The response body of [`GatewayTimeout`]: the inner body, or the short text of a 504.
pub type GatewayTimeoutBody<B> = Either<B, Full<Bytes>>;

/// Turns [`Elapsed`] errors from the inner stack into `504 Gateway Timeout` responses.
///
/// The response carries `x-sidecar-error: timeout` and a one-line plain-text body. Other errors
/// pass through unchanged. Put it outside a [`Timeout`](crate::Timeout) at an HTTP edge; in
/// library mode keep the typed error instead.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct GatewayTimeoutLayer {
    _priv: (),
}

impl GatewayTimeoutLayer {
    /// A layer that answers timeouts with 504.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for GatewayTimeoutLayer {
    type Service = GatewayTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayTimeout { inner }
    }
}

/// Answers [`Elapsed`] errors with `504 Gateway Timeout`; see [`GatewayTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct GatewayTimeout<S> {
    inner: S,
}

impl<S> GatewayTimeout<S> {
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
        }
    }
}

pin_project! {
    /// The response future of [`GatewayTimeout`].
    #[derive(Debug)]
    pub struct GatewayTimeoutFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for GatewayTimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<GatewayTimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(err) => {
                let err = err.into();
                if err.is::<Elapsed>() {
                    Ok(gateway_timeout())
                } else {
                    Err(err)
                }
            }
        })
    }
}

fn gateway_timeout<B>() -> Response<GatewayTimeoutBody<B>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        BODY.as_bytes(),
    ))));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(SIDECAR_ERROR, HeaderValue::from_static("timeout"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
