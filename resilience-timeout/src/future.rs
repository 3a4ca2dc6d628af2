//! The response future of [`Timeout`](crate::Timeout).

use crate::{BoxError, Elapsed};
use metrics::SharedString;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// Completes with the inner response, or with [`Elapsed`] at the deadline.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        name: SharedString,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            sleep: Sleep,
            budget: Duration,
        },
        // The deadline passed before the call; the inner service was never called.
        Expired,
        // Timed out: the inner future has been dropped.
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(
        inner: F,
        deadline: Instant,
        budget: Duration,
        name: SharedString,
    ) -> Self {
        Self {
            state: State::Running {
                inner,
                sleep: sleep_until(deadline),
                budget,
            },
            name,
        }
    }

    pub(crate) fn expired(name: SharedString) -> Self {
        Self {
            state: State::Expired,
            name,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // An inner timeout's error taken over: that layer has counted the timeout already.
        let mut counted = false;
        let budget = match this.state.as_mut().project() {
            StateProj::Running {
                inner,
                sleep,
                budget,
            } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    match result.map_err(Into::into) {
                        // An inner timeout that fired at our deadline: ours is the one that
                        // bound, and says so.
                        Err(error)
                            if error.is::<Elapsed>() && Instant::now() >= sleep.deadline() =>
                        {
                            counted = true;
                        }
                        result => return Poll::Ready(result),
                    }
                } else {
                    ready!(sleep.poll(cx));
                }
                *budget
            }
            StateProj::Expired => Duration::ZERO,
            StateProj::Done => panic!("timeout ResponseFuture polled after completion"),
        };
        // Drop the inner future now, not when the caller gets round to dropping us: whatever it
        // holds (a connection, a permit, a buffer) is released at the deadline.
        this.state.set(State::Done);
        if !counted {
            record_timeout(this.name, budget);
        }
        Poll::Ready(Err(Elapsed::new(this.name.clone(), budget).into()))
    }
}

fn record_timeout(name: &SharedString, budget: Duration) {
    metrics::counter!("resilience_timeout_total", "layer" => name.clone()).increment(1);
    tracing::debug!(layer = %name, ?budget, "request timed out");
}
