//! [`ResponseFuture`]: the inner service's future, or the refusal of a limit.

use pin_project_lite::pin_project;
use resilience_core::BoxError;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

pin_project! {
    /// The future of a limited service: the inner call, holding `G` (a permit, or nothing)
    /// until it completes, or a refusal, ready at once.
    #[project = Projected]
    pub struct ResponseFuture<F, G> {
        #[pin]
        state: State<F, G>,
    }
}

pin_project! {
    #[project = StateProjected]
    enum State<F, G> {
        Called { #[pin] future: F, guard: Option<G> },
        Refused { error: Option<BoxError> },
    }
}

/// What a call's guard learns when the call completes: whether it succeeded. A call refused
/// inside this process ([`RefusedLocally`](resilience_core::RefusedLocally): a rate limit, an
/// open breaker) or whose caller's body broke off
/// ([`CallerBodyFailed`](resilience_core::CallerBodyFailed)) is not a completion: its guard is
/// dropped, as a cancelled call's is, since it says nothing of the service's capacity.
pub trait Completion {
    /// The call completed, `Ok` or not.
    fn complete(self, ok: bool);
}

/// Whether `error` is one that says nothing of the service's capacity.
fn says_nothing_of_the_service(error: &(dyn std::error::Error + 'static)) -> bool {
    resilience_core::RefusedLocally::in_chain(error)
        || resilience_core::CallerBodyFailed::in_chain(error)
}

impl Completion for () {
    fn complete(self, _: bool) {}
}

impl<F, G> ResponseFuture<F, G> {
    pub(crate) fn called(future: F, guard: G) -> Self {
        Self {
            state: State::Called {
                future,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, G, T, E> Future for ResponseFuture<F, G>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    G: Completion,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Projected { state } = self.project();
        match state.project() {
            StateProjected::Called { future, guard } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(guard) = guard.take() {
                    match &result {
                        // Dropped uncompleted, as a cancelled call: it teaches nothing.
                        Err(error) if says_nothing_of_the_service(&**error) => drop(guard),
                        _ => guard.complete(result.is_ok()),
                    }
                }
                Poll::Ready(result)
            }
            StateProjected::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
        }
    }
}
