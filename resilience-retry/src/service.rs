//! [`Retry`].

use crate::{Policy, Replay, ResponseFuture, layer::Settings, spare::SpareSlot};
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Retries requests as its policy decides; see [`RetryLayer`](crate::RetryLayer).
pub struct Retry<S, P> {
    inner: S,
    // What retries go through, with the settings.
    spare: SpareSlot<S, Arc<Settings<P>>>,
    settings: Arc<Settings<P>>,
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            spare: self.spare.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, P> Retry<S, P> {
    pub(crate) fn from_settings(inner: S, settings: Arc<Settings<P>>) -> Self {
        Self {
            inner,
            spare: SpareSlot::new(),
            settings,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.spare.forget();
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
        let stamp = self.settings.policy.stamped_now(&first);
        self.settings.budget.deposit_at(stamp);
        // The first attempt uses the readiness reserved in `poll_ready`; retries go through
        // clones of the spare, which wait for readiness anew.
        let spare = self.spare.share(&self.inner, &self.settings);
        let future = self.inner.call(first);
        ResponseFuture::new(future, spare, kept)
    }
}
