//! [`CircuitBreaker`].

use crate::{
    BoxError, BreakerHandle, CircuitBreakerLayer, Classify, ConfigError, ErrorsAsFailures, Policy,
    ResponseFuture, future::PermitGuard,
};
use resilience_core::Enforcement;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    sync::futures::OwnedNotified,
    time::{Sleep, sleep_until},
};
use tower_service::Service;

/// How a breaker that does not let calls through shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `poll_ready` is ready (as the inner service is) and `call` fails at once with
    /// [`BreakerOpen`](crate::BreakerOpen). For a single endpoint: the caller learns at once.
    #[default]
    FailFast,
    /// `poll_ready` is pending while the breaker is open, and wakes when a probe is allowed
    /// (or the breaker is closed by hand). For use under a balancer, which routes around an
    /// unready endpoint. The permit is reserved in `poll_ready` and used by the next `call`; a
    /// ready service holds it until then, or until it is dropped. A half-open probe is held so
    /// for [`PROBE_RESERVATION_LAPSE`](crate::PROBE_RESERVATION_LAPSE) at least: after that, a
    /// service that finds every probe taken takes its place (a balancer that picked another
    /// endpoint, and then had no request, would otherwise keep the breaker half-open with no
    /// probe sent), and the service that lost it is unready again. A `call` without a ready
    /// `poll_ready`, or one whose probe was taken, is not a panic: the breaker decides then,
    /// as in fail-fast mode.
    BackPressure,
}

/// Stops calling an inner service that keeps failing; see the [crate docs](crate).
///
/// Clones share the breaker (its state and window) but not a reservation made by
/// `poll_ready`.
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: BreakerHandle,
    classifier: C,
    mode: Mode,
    enforcement: Enforcement,
    reserved: Option<PermitGuard>,
    waiting: Option<Waiting>,
}

/// A back-pressure service waiting for the breaker to let a call through.
struct Waiting {
    /// Fires on every transition and whenever a probe finishes.
    notified: Pin<Box<OwnedNotified>>,
    /// Fires when the open period ends.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Waiting {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let notified = self.notified.as_mut().poll(cx).is_ready();
        let slept = self
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if notified || slept {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("classifier", &self.classifier)
            .field("mode", &self.mode)
            .field("enforcement", &self.enforcement)
            .field("reserved", &self.reserved.is_some())
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            mode: self.mode,
            enforcement: self.enforcement,
            reserved: None,
            waiting: None,
        }
    }
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` with `breaker`, in fail-fast mode; only `Err`s count as failures.
    pub fn new(inner: S, breaker: BreakerHandle) -> Self {
        Self {
            inner,
            breaker,
            classifier: ErrorsAsFailures,
            mode: Mode::FailFast,
            enforcement: Enforcement::Enforce,
            reserved: None,
            waiting: None,
        }
    }

    /// A [`CircuitBreakerLayer`] with `policy`.
    ///
    /// # Errors
    ///
    /// If the policy is not valid; see [`CircuitBreakerLayer::new`].
    pub fn layer(policy: Policy) -> Result<CircuitBreakerLayer, ConfigError> {
        CircuitBreakerLayer::new(policy)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Replaces the classifier that says which responses are failures.
    pub fn classify<D>(self, classifier: D) -> CircuitBreaker<S, D> {
        CircuitBreaker {
            inner: self.inner,
            breaker: self.breaker,
            classifier,
            mode: self.mode,
            enforcement: self.enforcement,
            reserved: None,
            waiting: None,
        }
    }

    /// Sets the mode.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the enforcement: see [`CircuitBreakerLayer::enforcement`].
    #[must_use]
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.enforcement = enforcement;
        self
    }

    /// The breaker, to observe and control.
    pub fn handle(&self) -> &BreakerHandle {
        &self.breaker
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

    /// Back-pressure: reserve a permit, or arrange to be woken when one may be free.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.reserved {
            // A probe reserved too long ago may have been taken by another caller, and a
            // reservation made in another state no longer holds: reserve again.
            Some(guard) if guard.is_stale() => self.reserved = None,
            Some(_) => return Poll::Ready(()),
            None => {}
        }
        if let Some(waiting) = &mut self.waiting {
            if waiting.poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.waiting = None;
        }
        if let Ok(permit) = self.breaker.reserve(true) {
            self.reserved = Some(PermitGuard::new(self.breaker.clone(), permit));
            return Poll::Ready(());
        }
        // Listen first, then look again: a transition between the two cannot be missed.
        let mut notified = Box::pin(self.breaker.notify().clone().notified_owned());
        notified.as_mut().enable();
        match self.breaker.reserve(false) {
            Ok(permit) => {
                self.reserved = Some(PermitGuard::new(self.breaker.clone(), permit));
                Poll::Ready(())
            }
            Err(open) => {
                let mut waiting = Waiting {
                    notified,
                    sleep: open.next_probe().map(|at| Box::pin(sleep_until(at))),
                };
                if waiting.poll(cx).is_ready() {
                    // Something changed already: come back at once rather than loop here.
                    cx.waker().wake_by_ref();
                } else {
                    self.waiting = Some(waiting);
                }
                Poll::Pending
            }
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // In shadow mode the breaker holds nothing back, under a balancer neither.
        if self.mode == Mode::BackPressure
            && self.enforcement.refuses()
            && self.poll_permit(cx).is_pending()
        {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let guard = match self.reserved.take().and_then(PermitGuard::claim) {
            Some(guard) => guard,
            // Fail-fast; or back-pressure with no permit reserved (`call` without a ready
            // `poll_ready`, which breaks the `Service` contract), or with a reserved probe
            // whose place another caller took after it lapsed: the breaker decides now.
            None if self.enforcement.refuses() => match self.breaker.acquire() {
                Ok(permit) => PermitGuard::new(self.breaker.clone(), permit),
                Err(open) => return ResponseFuture::rejected(open),
            },
            None => match self.breaker.acquire_quietly() {
                Ok(permit) => PermitGuard::new(self.breaker.clone(), permit),
                Err(open) => {
                    self.breaker.would_reject(&open);
                    return ResponseFuture::unrecorded(self.inner.call(req));
                }
            },
        };
        ResponseFuture::called(self.inner.call(req), guard, self.classifier.clone())
    }
}
