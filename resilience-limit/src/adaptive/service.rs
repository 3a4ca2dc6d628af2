//! [`AdaptiveConcurrency`]: the service of an
//! [`AdaptiveConcurrencyLayer`](super::AdaptiveConcurrencyLayer).

use super::limiter::{Admission, Permit, UNSET};
use crate::future::{AtResponse, Release, ResponseFuture};
use resilience_core::BoxError;
use std::{
    fmt,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Refuses calls over the adaptive limit with [`Overloaded`](crate::Overloaded); see
/// [`AdaptiveConcurrencyLayer`](super::AdaptiveConcurrencyLayer).
pub struct AdaptiveConcurrency<S, R = AtResponse> {
    inner: S,
    limiter: Arc<Admission>,
    /// Calls until this service times one (see [`Admission::timed`]).
    countdown: u64,
    release: PhantomData<fn() -> R>,
}

impl<S, R> AdaptiveConcurrency<S, R> {
    pub(crate) fn new(inner: S, limiter: Arc<Admission>) -> Self {
        Self {
            inner,
            limiter,
            countdown: UNSET,
            release: PhantomData,
        }
    }
}

impl<S, Req, R> Service<Req> for AdaptiveConcurrency<S, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: Release<S::Response>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Permit, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Ready whatever the limit: excess is refused in `call`, at once, never queued.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let timed = self.limiter.timed(&mut self.countdown);
        match self.limiter.acquire(timed) {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(overloaded) => ResponseFuture::refused(overloaded.into()),
        }
    }
}

impl<S: Clone, R> Clone for AdaptiveConcurrency<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            countdown: UNSET,
            release: PhantomData,
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for AdaptiveConcurrency<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("limit", &self.limiter.limit())
            .finish()
    }
}
