//! [`AdaptiveConcurrency`]: the service of an
//! [`AdaptiveConcurrencyLayer`](super::AdaptiveConcurrencyLayer).

use super::limiter::{Admission, Permit, UNSET};
use crate::future::ResponseFuture;
use resilience_core::BoxError;
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Refuses calls over the adaptive limit with [`Overloaded`](crate::Overloaded); see
/// [`AdaptiveConcurrencyLayer`](super::AdaptiveConcurrencyLayer).
pub struct AdaptiveConcurrency<S> {
    inner: S,
    limiter: Arc<Admission>,
    /// Calls until this service times one (see [`Admission::timed`]).
    countdown: u64,
}

impl<S> AdaptiveConcurrency<S> {
    pub(crate) fn new(inner: S, limiter: Arc<Admission>) -> Self {
        Self {
            inner,
            limiter,
            countdown: UNSET,
        }
    }
}

impl<S, Req> Service<Req> for AdaptiveConcurrency<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Permit>;

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

impl<S: Clone> Clone for AdaptiveConcurrency<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            countdown: UNSET,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AdaptiveConcurrency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("limit", &self.limiter.limit())
            .finish()
    }
}
