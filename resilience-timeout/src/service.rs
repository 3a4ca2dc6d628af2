//! [`Timeout`].

use crate::{
    BoxError, Fixed, ResponseFuture, TimeoutLayer,
    policy::{TimeoutPolicy, Verdict},
};
use metrics::SharedString;
use std::{
    task::{Context, Poll},
    time::Duration,
};
use tower_service::Service;

/// Fails a request with [`Elapsed`](crate::Elapsed) when it is not done by its deadline.
///
/// On expiry the inner response future is dropped at once, which cancels the work it was doing
/// (a connection attempt, an upstream call). `poll_ready` passes straight through: the timeout
/// covers the call, not the wait for readiness, so stack a load-shedding or concurrency layer
/// outside this one to bound queueing.
#[derive(Debug, Clone)]
pub struct Timeout<S, P = Fixed> {
    inner: S,
    timeout: Duration,
    policy: P,
    name: SharedString,
}

impl<S> Timeout<S> {
    /// Wraps `inner`, failing each request that is not done within `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self::with_policy(inner, timeout, Fixed)
    }

    /// A [`TimeoutLayer`] with the same settings.
    pub fn layer(timeout: Duration) -> TimeoutLayer {
        TimeoutLayer::new(timeout)
    }
}

impl<S, P> Timeout<S, P> {
    /// Wraps `inner` with a policy that decides each request's deadline from `timeout`.
    pub fn with_policy(inner: S, timeout: Duration, policy: P) -> Self {
        Self {
            inner,
            timeout,
            policy,
            name: SharedString::const_str("timeout"),
        }
    }

    /// Names the service in metrics and logs.
    #[must_use]
    pub fn named(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
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

impl<S, P, Req> Service<Req> for Timeout<S, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: TimeoutPolicy<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        match self.policy.verdict(self.timeout, &mut req) {
            Verdict::Until { deadline, budget } => {
                let inner = self.inner.call(req);
                ResponseFuture::running(inner, deadline, budget, self.name.clone())
            }
            Verdict::Expired => ResponseFuture::expired(self.name.clone()),
        }
    }
}
