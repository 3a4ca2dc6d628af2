//! [`HedgeFuture`]: the first copy of a request, and the copies sent after it.

use super::Settings;
use crate::{Policy, Reason, Replay, budget::Withdrawal, policy::Action, spare::Spare};
use pin_project_lite::pin_project;
use resilience_timeout::instant_after;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

pin_project! {
    /// Completes with the first answer that wins; see [`HedgeLayer`](super::HedgeLayer).
    pub struct HedgeFuture<S, P, Req>
    where
        P: Replay<Req>,
        S: Service<<P as Replay<Req>>::Request>,
    {
        // The first copy, unboxed: the common case costs no allocation for copies.
        #[pin]
        first: Option<S::Future>,
        // The copies, each with the retry it took from the budget.
        copies: Vec<(Pin<Box<S::Future>>, Withdrawal)>,
        // What copies go through: shared, and cloned into `sender` when the first is due;
        // and the layer's settings.
        spare: Spare<S, Arc<Settings<P>>>,
        sender: Option<Box<S>>,
        // The request kept for copies; `None` once no more may be sent.
        kept: Option<<P as Replay<Req>>::Request>,
        sent: u32,
        started: Instant,
        // When the next copy is due.
        timer: Option<Pin<Box<Sleep>>>,
        // The next copy goes at once: an answer that does not win came in (gRPC A6).
        now: bool,
        // The last answer that did not win, returned if nothing better comes. Boxed, as
        // `sender`: room for them in every request's future is paid for by the few that hedge.
        fallback: Option<Box<Result<S::Response, S::Error>>>,
    }
}

impl<S, P, Req> HedgeFuture<S, P, Req>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request>,
{
    pub(crate) fn new(
        first: S::Future,
        spare: Spare<S, Arc<Settings<P>>>,
        kept: Option<<P as Replay<Req>>::Request>,
    ) -> Self {
        Self {
            first: Some(first),
            copies: Vec::new(),
            spare,
            sender: None,
            kept,
            sent: 1,
            started: Instant::now(),
            timer: None,
            now: false,
            fallback: None,
        }
    }
}

impl<S, P, Req> Future for HedgeFuture<S, P, Req>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request> + Clone,
    P: Policy<<P as Replay<Req>>::Request, S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let settings = &**this.spare.settings();
        loop {
            // An answer that has come in, if any: one at a time, so that none waits in a
            // buffer (a loser goes round the loop again, which polls the rest once more).
            let mut answer = None;
            if let Some(first) = this.first.as_mut().as_pin_mut()
                && let Poll::Ready(result) = first.poll(cx)
            {
                this.first.set(None);
                answer = Some((result, None));
            }
            if answer.is_none()
                && let Some((i, result)) =
                    this.copies
                        .iter_mut()
                        .enumerate()
                        .find_map(|(i, (copy, _))| match copy.as_mut().poll(cx) {
                            Poll::Ready(result) => Some((i, result)),
                            Poll::Pending => None,
                        })
            {
                let (_, withdrawal) = this.copies.swap_remove(i);
                answer = Some((result, Some(withdrawal)));
            }
            if let Some((result, copy)) = answer {
                // Refused inside the process (an open breaker, no endpoint): nothing was sent,
                // so it costs no budget, says nothing of the latency, and wins nothing while
                // another copy may still answer.
                let refused = settings.policy.refused_locally(&result);
                if refused && let Some(withdrawal) = copy {
                    settings.budget.refund(withdrawal);
                }
                let verdict = match this.kept.as_ref() {
                    Some(kept) => settings.policy.classify(kept, &result),
                    None => Action::Return,
                };
                let more = this.kept.is_some() && *this.sent < settings.max_attempts;
                let pending = this.first.is_some() || !this.copies.is_empty();
                let loses = (refused || matches!(verdict, Action::Retry(_))) && (more || pending);
                if loses {
                    *this.fallback = Some(Box::new(result));
                    // The next copy goes at once (gRPC A6), or once the pause the server asked
                    // for (`Retry-After`, `grpc-retry-pushback-ms`) is over.
                    match verdict {
                        Action::Retry(Reason {
                            retry_after: Some(pause),
                            ..
                        }) => {
                            *this.now = false;
                            let at = instant_after(Instant::now(), pause);
                            *this.timer = Some(Box::pin(sleep_until(at)));
                        }
                        _ => *this.now = true,
                    }
                    continue;
                }
                if !refused && let Some(latencies) = &settings.latencies {
                    latencies.record(this.started.elapsed());
                }
                if copy.is_some() && !refused {
                    metrics::counter!("resilience_hedge_won_total", "name" => settings.name.clone())
                        .increment(1);
                }
                // The other copies are dropped with this future: cancelled.
                return Poll::Ready(result);
            }

            let in_flight = this.first.is_some() || !this.copies.is_empty();
            let may_send = this.kept.is_some() && *this.sent < settings.max_attempts;
            if !may_send {
                *this.kept = None;
                if !in_flight {
                    // Nothing in flight, nothing more to send: the last answer that lost.
                    return match this.fallback.take() {
                        Some(result) => Poll::Ready(*result),
                        None => Poll::Pending,
                    };
                }
                return Poll::Pending;
            }

            // Is the next copy due?
            let due = *this.now || {
                let delay = settings.delay();
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(sleep_until(instant_after(*this.started, delay)))
                });
                timer.as_mut().poll(cx).is_ready()
            };
            if !due {
                return Poll::Pending;
            }
            // Asked when a copy is due, not at the first poll: a request's body is read by its
            // connection's task, which has not run yet when the call is made, and a copy may
            // go only once the body is whole (it must not take the first attempt's frames).
            if !this
                .kept
                .as_ref()
                .is_some_and(|kept| settings.policy.may_hedge(kept))
            {
                *this.kept = None;
                continue;
            }
            let spare = &*this.spare;
            let sender = this.sender.get_or_insert_with(|| Box::new(spare.service()));
            match sender.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    *this.kept = None;
                    if !in_flight {
                        return Poll::Ready(Err(error));
                    }
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let Some(withdrawal) = settings.budget.take() else {
                tracing::debug!(name = %settings.name, "no budget left: no more copies");
                *this.kept = None;
                continue;
            };
            let attempt = *this.sent + 1;
            let now = Instant::now();
            let Some(copy) = this
                .kept
                .as_ref()
                .and_then(|kept| settings.policy.replay(kept, attempt, now))
            else {
                settings.budget.refund(withdrawal);
                *this.kept = None;
                continue;
            };
            *this.sent = attempt;
            *this.now = false;
            // The copy after this one is due a delay after it.
            *this.timer = Some(Box::pin(sleep_until(instant_after(now, settings.delay()))));
            metrics::counter!("resilience_hedge_sent_total", "name" => settings.name.clone())
                .increment(1);
            tracing::debug!(name = %settings.name, attempt, "hedged: another copy sent");
            this.copies.push((Box::pin(sender.call(copy)), withdrawal));
        }
    }
}
