//! [`ResponseFuture`]: the inner service's future, or the refusal of a limit.

use crate::Place;
use pin_project_lite::pin_project;
use resilience_core::BoxError;
use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

pin_project! {
    /// The future of a limited service: the inner call, holding `G` (a permit, or nothing)
    /// until it completes and then as long as `R` says, or a refusal, ready at once.
    #[project = Projected]
    pub struct ResponseFuture<F, G, R = AtResponse> {
        #[pin]
        state: State<F, G>,
        release: PhantomData<fn() -> R>,
    }
}

pin_project! {
    #[project = StateProjected]
    enum State<F, G> {
        Called { #[pin] future: F, guard: Option<G> },
        Refused { error: Option<BoxError> },
    }
}

const POLLED_AFTER_COMPLETION: &str = "polled after completion";

/// What a call's guard learns when the call completes: whether it succeeded. A call refused
/// inside this process ([`RefusedLocally`](resilience_core::RefusedLocally): a rate limit, an
/// open breaker) or whose caller's body broke off
/// ([`CallerBodyFailed`](resilience_core::CallerBodyFailed)) is not a completion: its guard is
/// dropped, as a cancelled call's is, since it says nothing of the service's capacity. The
/// guard holds the call's place until it is dropped: at once, or with the response, as the
/// limit's [`Release`] says.
pub trait Completion {
    /// The call completed, `Ok` or not.
    fn complete(&mut self, ok: bool);
}

/// When a call gives its place under a concurrency limit back, once the service has answered
/// it (and the answer has been recorded): the response `T` of a call holding a [`Place`]
/// becomes the limited service's response, which may hold the place for as long as it likes.
pub trait Release<T> {
    /// The limited service's response.
    type Response;
    /// The response of a call that holds `place`.
    fn release(response: T, place: Place) -> Self::Response;
}

/// The place is given back when the service answers, as tower's `ConcurrencyLimit` gives it
/// back: the default. With the `http` feature, `AtBodyEnd` holds it until the response's body
/// ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtResponse;

impl<T> Release<T> for AtResponse {
    type Response = T;

    fn release(response: T, _place: Place) -> T {
        response
    }
}

/// Whether `error` is one that says nothing of the service's capacity.
fn says_nothing_of_the_service(error: &(dyn std::error::Error + 'static)) -> bool {
    resilience_core::RefusedLocally::in_chain(error)
        || resilience_core::CallerBodyFailed::in_chain(error)
}

impl Completion for () {
    fn complete(&mut self, _: bool) {}
}

impl<F, G, R> ResponseFuture<F, G, R> {
    pub(crate) fn called(future: F, guard: G) -> Self {
        Self {
            state: State::Called {
                future,
                guard: Some(guard),
            },
            release: PhantomData,
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
            release: PhantomData,
        }
    }
}

impl<F, G, R, T, E> Future for ResponseFuture<F, G, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    G: Completion + Into<Place>,
    R: Release<T>,
{
    type Output = Result<R::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Projected { state, .. } = self.project();
        match state.project() {
            StateProjected::Called { future, guard } => {
                // Not the inner future again, once it has completed.
                if guard.is_none() {
                    return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                }
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let Some(mut guard) = guard.take() else {
                    return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                };
                Poll::Ready(match result {
                    Ok(response) => {
                        guard.complete(true);
                        Ok(R::release(response, guard.into()))
                    }
                    // Dropped uncompleted, as a cancelled call: it teaches nothing.
                    Err(error) if says_nothing_of_the_service(&*error) => Err(error),
                    Err(error) => {
                        guard.complete(false);
                        Err(error)
                    }
                })
            }
            StateProjected::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| POLLED_AFTER_COMPLETION.into()))),
        }
    }
}
