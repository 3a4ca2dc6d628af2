//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use crate::{BoxError, BreakerHandle, BreakerOpen, Classify, Outcome, Permit};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::time::Instant;

pin_project! {
    /// Completes with the inner response, recording its outcome in the breaker; or at once with
    /// [`BreakerOpen`] when the breaker rejected the call.
    ///
    /// Dropping the future before it completes hands a half-open probe permit back, so that a
    /// cancelled probe cannot wedge the breaker half-open.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        call: Option<Call<C>>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called {
            #[pin]
            inner: F,
        },
        Rejected {
            error: Option<BreakerOpen>,
        },
    }
}

/// A permit that is released if the call it was for never finishes.
pub(crate) struct PermitGuard {
    breaker: BreakerHandle,
    permit: Option<Permit>,
}

impl PermitGuard {
    pub(crate) fn new(breaker: BreakerHandle, permit: Permit) -> Self {
        Self {
            breaker,
            permit: Some(permit),
        }
    }

    /// The guard of a reserved permit, claimed for its call now: `None` if its place was
    /// taken ([`StateMachine::claim`](crate::StateMachine::claim)).
    pub(crate) fn claim(mut self) -> Option<Self> {
        let permit = self.permit.take()?;
        let permit = self.breaker.claim(permit)?;
        self.permit = Some(permit);
        Some(self)
    }

    /// Whether this guard's reserved permit no longer lets its call through
    /// ([`StateMachine::is_stale`](crate::StateMachine::is_stale)).
    pub(crate) fn is_stale(&self) -> bool {
        self.permit
            .as_ref()
            .is_some_and(|permit| self.breaker.is_stale(permit))
    }

    pub(crate) fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }

    fn record(mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, outcome);
        }
    }
}

/// A call dropped before it ended: by a timeout at its deadline, a failure (the endpoint did
/// not answer in time); otherwise left out (its caller went away, or another copy won), and a
/// probe's permit handed back.
impl Drop for PermitGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            if resilience_core::dropped_at_deadline() {
                self.breaker
                    .record(permit, Outcome::failure(Duration::ZERO));
            } else {
                self.breaker.release(permit);
            }
        }
    }
}

impl fmt::Debug for PermitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitGuard")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

/// What the future needs to record the outcome.
#[derive(Debug)]
pub(crate) struct Call<C> {
    guard: PermitGuard,
    started: Option<Instant>,
    classifier: C,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(inner: F, guard: PermitGuard, classifier: C) -> Self {
        let started = guard.breaker().needs_clock().then(Instant::now);
        Self {
            kind: Kind::Called { inner },
            call: Some(Call {
                guard,
                started,
                classifier,
            }),
        }
    }

    /// A call the breaker would have refused, let through in shadow mode: its outcome is not
    /// recorded.
    pub(crate) fn unrecorded(inner: F) -> Self {
        Self {
            kind: Kind::Called { inner },
            call: None,
        }
    }

    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            call: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { inner } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(call) = this.call.take() {
                    let failed = match &result {
                        Ok(response) => call.classifier.is_failure(response),
                        // Not recorded: dropping the call's guard hands its permit back.
                        Err(error) if !call.classifier.counts_error(error) => {
                            return Poll::Ready(result);
                        }
                        Err(_) => true,
                    };
                    let elapsed = call
                        .started
                        .map(|started| started.elapsed())
                        .unwrap_or_default();
                    call.guard.record(if failed {
                        Outcome::failure(elapsed)
                    } else {
                        Outcome::success(elapsed)
                    });
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("circuit breaker ResponseFuture polled after completion")
                .into())),
        }
    }
}
