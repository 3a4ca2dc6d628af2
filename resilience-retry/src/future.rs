//! The response future of [`Retry`](crate::Retry).

use crate::{
    Policy, Replay,
    budget::Withdrawal,
    layer::Settings,
    policy::{Action, Reason},
    spare::Spare,
};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::time::{Instant, Sleep, sleep};
use tower_service::Service;

pin_project! {
    /// Completes with the outcome of the last attempt.
    pub struct ResponseFuture<S, P, Req>
    where
        P: Replay<Req>,
        S: Service<<P as Replay<Req>>::Request>,
    {
        #[pin]
        state: State<S::Future>,
        // What retries go through, and the layer's settings.
        spare: Spare<S, Arc<Settings<P>>>,
        // The copy of the request kept for replay; `None` when it cannot be retried.
        kept: Option<<P as Replay<Req>>::Request>,
        // The next attempt, planned before the last outcome is given up. Boxed: the future
        // of every request would otherwise carry room for it, for the few that retry.
        next: Option<Box<NextAttempt<S, <P as Replay<Req>>::Request>>>,
        attempt: u32,
        delay: Duration,
        // The budget taken by the attempt under way, if it is a retry.
        withdrawal: Option<Withdrawal>,
    }
}

/// A retry on its way: its request, and the clone of the service it goes through.
struct NextAttempt<S, R> {
    service: S,
    request: R,
}

const PLANNED: &str = "a retry is planned before waiting for readiness";

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        BackingOff { #[pin] sleep: Sleep },
        WaitingReady,
    }
}

impl<S, P, Req> ResponseFuture<S, P, Req>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request>,
{
    pub(crate) fn new(
        future: S::Future,
        spare: Spare<S, Arc<Settings<P>>>,
        kept: Option<<P as Replay<Req>>::Request>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            spare,
            kept,
            next: None,
            attempt: 1,
            delay: Duration::ZERO,
            withdrawal: None,
        }
    }
}

/// Why a retry that the policy wanted is not made.
#[derive(Clone, Copy)]
enum GiveUp {
    Attempts,
    Deadline,
    Budget,
    NotReplayable,
}

impl GiveUp {
    fn label(self) -> &'static str {
        match self {
            Self::Attempts => "attempts_exhausted",
            Self::Deadline => "deadline",
            Self::Budget => "budget_exhausted",
            Self::NotReplayable => "not_replayable",
        }
    }
}

impl<S, P, Req> Future for ResponseFuture<S, P, Req>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request>,
    S: Clone,
    P: Policy<<P as Replay<Req>>::Request, S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let Some(kept) = this.kept.as_ref() else {
                        return Poll::Ready(result);
                    };
                    let settings = &**this.spare.settings();
                    if let Some(withdrawal) = this.withdrawal.take()
                        && settings.policy.refused_locally(&result)
                    {
                        // This retry never left the process: it costs no budget.
                        settings.budget.refund(withdrawal);
                    }
                    let reason = match settings.policy.classify(kept, &result) {
                        Action::Return => return Poll::Ready(result),
                        Action::Retry(reason) => reason,
                    };
                    let (next, delay, withdrawal) =
                        match plan_retry(settings, kept, reason, *this.attempt, *this.delay) {
                            Ok(planned) => planned,
                            Err(give_up) => {
                                record_give_up(settings, give_up, reason, *this.attempt);
                                return Poll::Ready(result);
                            }
                        };
                    // The failed outcome is dropped here, releasing its connection before the
                    // backoff.
                    drop(result);
                    *this.attempt += 1;
                    *this.delay = delay;
                    *this.next = Some(Box::new(NextAttempt {
                        service: this.spare.service(),
                        request: next,
                    }));
                    *this.withdrawal = Some(withdrawal);
                    record_retry(settings, reason, *this.attempt, delay);
                    if delay.is_zero() {
                        this.state.set(State::WaitingReady);
                    } else {
                        this.state.set(State::BackingOff {
                            sleep: sleep(delay),
                        });
                    }
                }
                StateProj::BackingOff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::WaitingReady);
                }
                StateProj::WaitingReady => {
                    ready!(this.next.as_mut().expect(PLANNED).service.poll_ready(cx))?;
                    let NextAttempt {
                        mut service,
                        request,
                    } = *this.next.take().expect(PLANNED);
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// Checks every limit on one more attempt, cheapest first, and makes the next attempt's
/// request last, once the retry is certain: making it may retire the previous attempt's
/// request (a [`ReplayBody`](crate::ReplayBody) copy stops reading), which must not happen when
/// that attempt's response is returned after all. A retry refused because the request cannot
/// be replayed gives back what it took from the budget, so it costs nothing.
/// Returns the next attempt's request and the delay before it.
fn plan_retry<P, Req>(
    settings: &Settings<P>,
    kept: &P::Request,
    reason: Reason,
    attempt: u32,
    previous_delay: Duration,
) -> Result<(P::Request, Duration, Withdrawal), GiveUp>
where
    P: Replay<Req>,
{
    if attempt >= settings.max_attempts {
        return Err(GiveUp::Attempts);
    }
    let delay = reason
        .retry_after
        .unwrap_or_else(|| settings.backoff.delay(attempt - 1, previous_delay));
    // A delay too large to add to the clock (a huge backoff cap or `Retry-After` cap) ends
    // past any deadline; `Instant + Duration` would panic on it.
    let now = Instant::now();
    let send_at = now.checked_add(delay);
    if let Some(deadline) = settings.policy.deadline(kept)
        && send_at.is_none_or(|start| start >= deadline)
    {
        return Err(GiveUp::Deadline);
    }
    let Some(withdrawal) = settings.budget.take() else {
        return Err(GiveUp::Budget);
    };
    // Without a deadline, the send time only matters to a policy as a hint; overflow means
    // "far away", for which now is as good an answer as any.
    let Some(next) = settings
        .policy
        .replay(kept, attempt + 1, send_at.unwrap_or(now))
    else {
        settings.budget.refund(withdrawal);
        return Err(GiveUp::NotReplayable);
    };
    Ok((next, delay, withdrawal))
}

fn record_retry<P>(settings: &Settings<P>, reason: Reason, attempt: u32, delay: Duration) {
    metrics::counter!(
        "resilience_retry_attempts_total",
        "layer" => settings.name.clone(),
        "outcome" => "retried",
    )
    .increment(1);
    tracing::debug!(
        layer = %settings.name,
        attempt,
        reason = reason.name,
        ?delay,
        "retrying request"
    );
}

fn record_give_up<P>(settings: &Settings<P>, give_up: GiveUp, reason: Reason, attempt: u32) {
    metrics::counter!(
        "resilience_retry_attempts_total",
        "layer" => settings.name.clone(),
        "outcome" => give_up.label(),
    )
    .increment(1);
    if let GiveUp::Budget = give_up {
        metrics::counter!(
            "resilience_retry_budget_exhausted_total",
            "layer" => settings.name.clone(),
        )
        .increment(1);
    }
    tracing::debug!(
        layer = %settings.name,
        attempt,
        reason = reason.name,
        outcome = give_up.label(),
        "not retrying"
    );
}
