//! [`Retry`].

use crate::{Policy, Replay, ResponseFuture, layer::Settings};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Retries requests as its policy decides; see [`RetryLayer`](crate::RetryLayer).
#[derive(Debug)]
pub struct Retry<S, P> {
    inner: S,
    settings: Arc<Settings<P>>,
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S, P> Retry<S, P> {
    pub(crate) fn from_settings(inner: S, settings: Arc<Settings<P>>) -> Self {
        Self { inner, settings }
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

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request> + Clone,
    P: Policy<<P as Replay<Req>>::Request, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, P, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let (first, kept) = self.settings.policy.prepare(req);
        self.settings.budget.deposit();
        // The readiness reserved in `poll_ready` belongs to `self.inner`: the first attempt uses
        // it, and the future keeps that service for its retries, which wait for readiness anew.
        // `self` goes on with a fresh clone that has reserved nothing.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let future = ready.call(first);
        ResponseFuture::new(future, ready, self.settings.clone(), kept)
    }
}
