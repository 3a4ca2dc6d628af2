//! [`LocalReplyLayer`]: typed errors from the inner service answered as [`LocalReply`]s, for
//! HTTP edges. The timeout's `504` and the breaker's `503` layers are this layer with their
//! own [`ReplyTo`].

use crate::{BoxError, LocalReply, SIDECAR_ERROR, is_grpc};
use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// Which errors a [`LocalReplyLayer`] answers, and with what; `None` lets the error through.
/// Any `Fn(&BoxError) -> Option<LocalReply> + Clone` is one.
pub trait ReplyTo: Clone {
    /// The reply to `error`, if it is one this layer answers.
    fn reply_to(&self, error: &BoxError) -> Option<LocalReply>;
}

impl<F: Fn(&BoxError) -> Option<LocalReply> + Clone> ReplyTo for F {
    fn reply_to(&self, error: &BoxError) -> Option<LocalReply> {
        self(error)
    }
}

/// The response body of a [`LocalReplyService`]: the inner body, or a local reply's text.
pub type LocalReplyBody<B> = Either<B, Full<Bytes>>;

/// Answers the errors that `R` recognises with local replies; other errors pass through. A
/// gRPC request (see [`is_grpc`]) gets its reply as a gRPC status ([`LocalReply::grpc`]).
///
/// ```
/// use resilience_core::{BoxError, LocalReply, LocalReplyLayer, Reason, SIDECAR_ERROR};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let overloaded = |error: &BoxError| {
///     (error.to_string() == "busy").then(|| LocalReply::new(Reason::Overloaded))
/// };
/// let service = LocalReplyLayer::replying(overloaded).layer(service_fn(|_: http::Request<()>| async {
///     Err::<http::Response<String>, BoxError>("busy".into())
/// }));
/// let response = service.clone().oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()[SIDECAR_ERROR], "overloaded");
///
/// // The same to a gRPC caller: UNAVAILABLE.
/// let grpc = http::Request::builder().header("content-type", "application/grpc").body(()).unwrap();
/// let response = service.oneshot(grpc).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["grpc-status"], "14");
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalReplyLayer<R> {
    replies: R,
    flag_header: HeaderName,
}

impl<R: ReplyTo + Default> Default for LocalReplyLayer<R> {
    fn default() -> Self {
        Self::replying(R::default())
    }
}

impl<R: ReplyTo + Default> LocalReplyLayer<R> {
    /// A layer that answers as `R`'s default says.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: ReplyTo> LocalReplyLayer<R> {
    /// A layer that answers as `replies` says.
    pub fn replying(replies: R) -> Self {
        Self {
            replies,
            flag_header: SIDECAR_ERROR,
        }
    }

    /// Names the reason in `header` instead of [`SIDECAR_ERROR`].
    pub fn flag_header(mut self, header: HeaderName) -> Self {
        self.flag_header = header;
        self
    }
}

impl<S, R: ReplyTo> Layer<S> for LocalReplyLayer<R> {
    type Service = LocalReplyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        LocalReplyService {
            inner,
            replies: self.replies.clone(),
            flag_header: self.flag_header.clone(),
        }
    }
}

/// The service of [`LocalReplyLayer`].
#[derive(Debug, Clone)]
pub struct LocalReplyService<S, R> {
    inner: S,
    replies: R,
    flag_header: HeaderName,
}

impl<S, R> LocalReplyService<S, R> {
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

impl<S, R, ReqBody, B> Service<Request<ReqBody>> for LocalReplyService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    R: ReplyTo,
{
    type Response = Response<LocalReplyBody<B>>;
    type Error = BoxError;
    type Future = LocalReplyFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        LocalReplyFuture {
            grpc,
            inner: self.inner.call(req),
            replies: self.replies.clone(),
            flag_header: Some(self.flag_header.clone()),
        }
    }
}

pin_project! {
    /// The response future of [`LocalReplyService`].
    #[derive(Debug)]
    pub struct LocalReplyFuture<F, R> {
        #[pin]
        inner: F,
        replies: R,
        flag_header: Option<HeaderName>,
        grpc: bool,
    }
}

impl<F, R, B, E> Future for LocalReplyFuture<F, R>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    R: ReplyTo,
{
    type Output = Result<Response<LocalReplyBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(error) => {
                let error = error.into();
                match this.replies.reply_to(&error) {
                    Some(reply) => {
                        let header = this.flag_header.take().unwrap_or(SIDECAR_ERROR);
                        let reply = reply.flag_header(header).grpc(*this.grpc);
                        Ok(reply.into_response().map(Either::Right))
                    }
                    None => Err(error),
                }
            }
        })
    }
}
