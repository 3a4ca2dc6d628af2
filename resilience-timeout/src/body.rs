//! Response-body timeouts: [`ResponseBodyTimeoutLayer`] and [`TimeoutBody`].

use crate::{BoxError, policy::instant_after};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    error::Error,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::time::{Instant, Sleep, sleep};
use tower_layer::Layer;
use tower_service::Service;

/// Bounds how long a response body may take: each frame within an idle timeout, the whole body
/// within a total timeout.
///
/// The total clock starts when the response head arrives. The idle clock measures only the
/// upstream: it starts when the reader asks for a frame that is not there yet, so a reader
/// that is slow to ask (back-pressure) never makes the upstream look idle.
///
/// A body that runs out of time ends with a [`BodyTimeout`] error in its stream; the response
/// head has already been sent, so there is no status to change.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct ResponseBodyTimeoutLayer {
    limits: BodyLimits,
}

#[derive(Debug, Clone, Copy, Default)]
struct BodyLimits {
    idle: Option<Duration>,
    total: Option<Duration>,
}

impl ResponseBodyTimeoutLayer {
    /// A layer with no limits set; add them with [`idle`](Self::idle) and
    /// [`total`](Self::total).
    pub fn new() -> Self {
        Self::default()
    }

    /// Each body frame must arrive within `idle` of the reader asking for it and finding none
    /// ready; time the reader spends before asking does not count.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.limits.idle = Some(idle);
        self
    }

    /// The whole body must arrive within `total` of the response head.
    pub fn total(mut self, total: Duration) -> Self {
        self.limits.total = Some(total);
        self
    }
}

impl<S> Layer<S> for ResponseBodyTimeoutLayer {
    type Service = ResponseBodyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseBodyTimeout {
            inner,
            limits: self.limits,
        }
    }
}

/// Wraps each response body in a [`TimeoutBody`]; see [`ResponseBodyTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct ResponseBodyTimeout<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> ResponseBodyTimeout<S> {
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

impl<S, Req, B> Service<Req> for ResponseBodyTimeout<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<TimeoutBody<B>>;
    type Error = S::Error;
    type Future = ResponseBodyTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseBodyTimeoutFuture {
            inner: self.inner.call(req),
            limits: self.limits,
        }
    }
}

pin_project! {
    /// The response future of [`ResponseBodyTimeout`].
    #[derive(Debug)]
    pub struct ResponseBodyTimeoutFuture<F> {
        #[pin]
        inner: F,
        limits: BodyLimits,
    }
}

impl<F, B, E> Future for ResponseBodyTimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TimeoutBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let limits = *this.limits;
        Poll::Ready(Ok(response.map(|body| TimeoutBody::new(body, limits))))
    }
}

pin_project! {
    /// A body that fails with [`BodyTimeout`] when a frame, or the whole body, is late.
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        #[pin]
        idle_sleep: Option<Sleep>,
        // Whether the reader is waiting on the upstream: the idle clock runs only then.
        waiting: bool,
        total: Option<Duration>,
        #[pin]
        total_sleep: Option<Sleep>,
    }
}

impl<B> TimeoutBody<B> {
    fn new(inner: B, limits: BodyLimits) -> Self {
        Self {
            inner,
            idle: limits.idle,
            idle_sleep: limits.idle.map(sleep),
            waiting: false,
            total: limits.total,
            total_sleep: limits.total.map(sleep),
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // The total limit first: a body that always has a frame ready must still end on time.
        if let (Some(total), Some(sleep)) = (this.total, this.total_sleep.as_pin_mut())
            && sleep.poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(BodyTimeout::total(*total).into())));
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let (Some(idle), Some(mut sleep)) = (this.idle, this.idle_sleep.as_pin_mut()) {
            if !*this.waiting {
                // The upstream is behind from now on. Until this poll the reader was busy
                // (or had just begun), and time it spent is not the upstream's idleness.
                *this.waiting = true;
                sleep.as_mut().reset(instant_after(Instant::now(), *idle));
            }
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Some(Err(BodyTimeout::idle(*idle).into())));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body was too slow: a frame did not arrive within the idle timeout, or the body
/// was not complete within the total timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout {
    idle: bool,
    after: Duration,
}

impl BodyTimeout {
    fn idle(after: Duration) -> Self {
        Self { idle: true, after }
    }

    fn total(after: Duration) -> Self {
        Self { idle: false, after }
    }

    /// Whether the idle timeout (rather than the total one) ran out.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The limit that was exceeded.
    #[must_use]
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.idle {
            write!(f, "response body idle for {:?}", self.after)
        } else {
            write!(f, "response body not complete within {:?}", self.after)
        }
    }
}

impl Error for BodyTimeout {}
