//! [`PeekGrpcTrailersLayer`]: reads a gRPC status that comes in trailers right behind the
//! response head, so a retry layer outside can judge it.

use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use resilience_core::{GRPC_STATUS, is_grpc};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The `grpc-status` of a response whose status came in trailers, as a response extension.
///
/// [`RetryOn`](crate::RetryOn) reads it when the response head has no `grpc-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailersGrpcStatus(pub i32);

/// Looks, without waiting, at the first frame of each gRPC response that has no `grpc-status`
/// in its head. When that frame is the trailers (a failed unary call: head, then trailers), it
/// records their status as a [`TrailersGrpcStatus`] extension and keeps the frame for the
/// body. A frame that is not ready is not waited for, so streams are never held up.
///
/// Put it inside a [`RetryLayer`](crate::RetryLayer), next to the client. Response bodies must
/// be `Unpin`, as hyper's are.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct PeekGrpcTrailersLayer {
    _priv: (),
}

impl PeekGrpcTrailersLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for PeekGrpcTrailersLayer {
    type Service = PeekGrpcTrailers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeekGrpcTrailers { inner }
    }
}

/// See [`PeekGrpcTrailersLayer`].
#[derive(Debug, Clone)]
pub struct PeekGrpcTrailers<S> {
    inner: S,
}

impl<S> PeekGrpcTrailers<S> {
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

impl<S, Req, B> Service<Req> for PeekGrpcTrailers<S>
where
    S: Service<Req, Response = Response<B>>,
    B: Body + Unpin,
{
    type Response = Response<PeekedBody<B>>;
    type Error = S::Error;
    type Future = PeekFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        PeekFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`PeekGrpcTrailers`].
    #[derive(Debug)]
    pub struct PeekFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for PeekFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body + Unpin,
{
    type Output = Result<Response<PeekedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx))?;
        let (mut parts, mut body) = response.into_parts();
        let mut first = None;
        if is_grpc(&parts.headers)
            && !parts.headers.contains_key(GRPC_STATUS)
            && !body.is_end_stream()
            && let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx)
        {
            if let Some(Ok(frame)) = &frame
                && let Some(status) = frame.trailers_ref().and_then(grpc_status)
            {
                parts.extensions.insert(TrailersGrpcStatus(status));
            }
            first = Some(frame);
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            PeekedBody { first, inner: body },
        )))
    }
}

pin_project! {
    /// A response body with the frame that [`PeekGrpcTrailers`] looked at put back in front.
    #[derive(Debug)]
    pub struct PeekedBody<B: Body> {
        first: Option<Option<Result<Frame<B::Data>, B::Error>>>,
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for PeekedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.first.take() {
            Some(frame) => Poll::Ready(frame),
            None => this.inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.first {
            Some(None) => true,
            Some(Some(_)) => false,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

/// The `grpc-status` in `headers`, if present and a number as the gRPC specification writes it:
/// ASCII digits only (`1*DIGIT`). A sign, spaces or other bytes make it malformed, and a
/// malformed status is never a reason to retry.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let digits = headers.get(GRPC_STATUS)?.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // ASCII digits are UTF-8; more than fit in an i32 are malformed too.
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn status(value: &[u8]) -> Option<i32> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_bytes(value).unwrap());
        grpc_status(&headers)
    }

    #[test]
    fn grpc_status_is_ascii_digits_only() {
        assert_eq!(status(b"0"), Some(0));
        assert_eq!(status(b"14"), Some(14));
        assert_eq!(status(b"014"), Some(14));
        // Found by the fuzz harness: `str::parse` took a sign and `trim` took spaces, so
        // "+14" passed for `unavailable` and retried a gRPC call.
        for bad in [
            &b"+14"[..],
            b"-14",
            b" 14",
            b"14 ",
            b"\t14",
            b"",
            b"1 4",
            b"14x",
            b"99999999999",
            b"\xd9\xa1\xd9\xa4",
        ] {
            assert_eq!(status(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(grpc_status(&HeaderMap::new()), None);
    }
}
