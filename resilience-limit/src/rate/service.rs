//! [`RateLimit`]: the service of a [`RateLimitLayer`](super::RateLimitLayer).

use super::{CallerKey, limits::Limits};
use crate::future::ResponseFuture;
use resilience_core::BoxError;
use std::{
    fmt,
    hash::Hash,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Refuses calls beyond its limits with [`RateLimited`](crate::RateLimited); see
/// [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimit<S, K: Hash + Eq + Clone, F> {
    inner: S,
    limits: Arc<Limits<K>>,
    caller: F,
}

impl<S, K: Hash + Eq + Clone, F> RateLimit<S, K, F> {
    pub(crate) fn new(inner: S, limits: Arc<Limits<K>>, caller: F) -> Self {
        Self {
            inner,
            limits,
            caller,
        }
    }
}

impl<S, K, F, Req> Service<Req> for RateLimit<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: CallerKey<Req, K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let caller = self.caller.caller(&req);
        match self.limits.admit(caller.as_ref()) {
            Ok(()) => ResponseFuture::called(self.inner.call(req), ()),
            Err(refused) => ResponseFuture::refused(refused.into()),
        }
    }
}

impl<S: Clone, K: Hash + Eq + Clone, F: Clone> Clone for RateLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
            caller: self.caller.clone(),
        }
    }
}

impl<S: fmt::Debug, K: Hash + Eq + Clone, F> fmt::Debug for RateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.limits.name)
            .finish_non_exhaustive()
    }
}
