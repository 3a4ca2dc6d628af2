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
            timer: Timer,
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
                timer: Timer::Unarmed { deadline },
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

pin_project! {
    /// The deadline's timer, armed when the inner future first has to wait: a call answered at
    /// once (a local reply, a cache, a breaker's refusal) never touches the runtime's timer.
    #[project = TimerProj]
    #[derive(Debug)]
    enum Timer {
        Unarmed { deadline: Instant },
        Armed { #[pin] sleep: Sleep },
    }
}

impl Timer {
    fn deadline(&self) -> Instant {
        match self {
            Self::Unarmed { deadline } => *deadline,
            Self::Armed { sleep } => sleep.deadline(),
        }
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                TimerProj::Armed { sleep } => return sleep.poll(cx),
                TimerProj::Unarmed { deadline } => {
                    let deadline = *deadline;
                    self.set(Self::Armed {
                        sleep: sleep_until(deadline),
                    });
                }
            }
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
                mut timer,
                budget,
            } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    match result.map_err(Into::into) {
                        // An inner timeout that fired at our deadline: ours is the one that
                        // bound, and says so.
                        Err(error)
                            if error.is::<Elapsed>() && Instant::now() >= timer.deadline() =>
                        {
                            counted = true;
                        }
                        result => return Poll::Ready(result),
                    }
                } else {
                    ready!(timer.as_mut().poll(cx));
                }
                *budget
            }
            StateProj::Expired => Duration::ZERO,
            StateProj::Done => panic!("timeout ResponseFuture polled after completion"),
        };
        // Drop the inner future now, not when the caller gets round to dropping us: whatever it
        // holds (a connection, a permit, a buffer) is released at the deadline, and knows why
        // (a circuit breaker inside counts its call as timed out).
        resilience_core::drop_at_deadline(|| this.state.set(State::Done));
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
