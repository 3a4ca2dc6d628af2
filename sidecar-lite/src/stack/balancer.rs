//! A route's balancer, one per worker, borrowed by each call on its own thread.
//!
//! tower's p2c `Balance` needs `&mut self`, and what its `poll_ready` finds ready is what the
//! next `call` uses. The usual way to share one is a `Buffer`: a task that owns the balancer
//! and takes requests over a channel. That costs every request two task switches, a channel
//! message and a oneshot (without them, a two-endpoint route's request path takes 0.91x the
//! instructions: `benches/load/instructions.py --endpoints 2`), and with several workers a
//! crossing to the buffer's thread and back. Here each worker has a balancer of its own (the
//! endpoints' breakers and connection pools stay shared; each balancer keeps its own load
//! estimates, as Envoy's per-worker load balancers do), and a call locks its worker's balancer
//! for a `poll_ready` and, when that finds an endpoint ready, the `call`, so no other call can
//! take the readiness in between.
//!
//! When no endpoint is ready, the call waits to be told: the balancer is polled with a waker
//! that wakes every waiting call of its worker, and each tries again. The waiting calls are
//! bounded by the route's concurrency limit, which is always there in front. A call stops
//! waiting when the route's `give_up` says waiting is futile (discovery has looked and found
//! no endpoint): whatever makes that so wakes the balancer, as a change of its endpoints does.

use crate::transport::worker;
use futures::task::ArcWake;
use pin_project_lite::pin_project;
use resilience_core::BoxError;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
};
use tokio::sync::{Notify, futures::OwnedNotified};
use tower::Service;

/// A balancer per worker; clones share them.
pub(crate) struct PerWorker<S> {
    slots: Arc<[Slot<S>]>,
}

/// What a call that finds no endpoint ready answers with instead of waiting, if anything.
pub(crate) type GiveUp = Arc<dyn Fn() -> Option<BoxError> + Send + Sync>;

/// One worker's balancer.
struct Slot<S> {
    balancer: Mutex<S>,
    /// The calls waiting for an endpoint to be ready.
    waiting: Arc<Notify>,
    /// What the balancer is polled with: it wakes every waiting call.
    waker: Waker,
    give_up: GiveUp,
}

/// Wakes every call waiting on a worker's balancer.
struct WakeWaiting(Arc<Notify>);

impl ArcWake for WakeWaiting {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.notify_waiters();
    }
}

impl<S> PerWorker<S> {
    /// One balancer per worker, from `balancers`, which has one for each (or one, shared by
    /// all, outside the sidecar's workers). A call that finds no endpoint ready waits, unless
    /// `give_up` has an error for it.
    pub(crate) fn new(balancers: impl IntoIterator<Item = S>, give_up: GiveUp) -> Self {
        let slots: Arc<[Slot<S>]> = balancers
            .into_iter()
            .map(|balancer| {
                let waiting = Arc::new(Notify::new());
                Slot {
                    balancer: Mutex::new(balancer),
                    waker: futures::task::waker(Arc::new(WakeWaiting(waiting.clone()))),
                    waiting,
                    give_up: give_up.clone(),
                }
            })
            .collect();
        assert!(!slots.is_empty(), "a balancer for at least one worker");
        Self { slots }
    }
}

impl<S> Clone for PerWorker<S> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
        }
    }
}

impl<S> fmt::Debug for PerWorker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerWorker")
            .field("workers", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for PerWorker<S>
where
    S: Service<Req, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    /// Always ready: a call waits in its future, for its own worker's balancer.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture {
            slots: self.slots.clone(),
            worker: worker::index() % self.slots.len(),
            state: State::Waiting {
                request: Some(request),
                notified: None,
            },
        }
    }
}

pin_project! {
    /// A call: waiting for its worker's balancer to have an endpoint ready, then the
    /// endpoint's answer.
    pub(crate) struct ResponseFuture<S: Service<Req>, Req> {
        slots: Arc<[Slot<S>]>,
        worker: usize,
        #[pin]
        state: State<S::Future, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, Req> {
        Waiting {
            request: Option<Req>,
            // Set while no endpoint is ready: completes when the balancer wakes.
            #[pin]
            notified: Option<OwnedNotified>,
        },
        Called {
            #[pin]
            future: F,
        },
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Error = BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let called = match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Waiting {
                    request,
                    mut notified,
                } => {
                    if let Some(waiting) = notified.as_mut().as_pin_mut() {
                        if waiting.poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        notified.set(None);
                    }
                    let slot = &this.slots[*this.worker];
                    // Made before the balancer is polled: a wake that comes after this, even
                    // before the call starts waiting, completes it.
                    let woken = slot.waiting.clone().notified_owned();
                    let mut balancer = slot.balancer.lock().unwrap_or_else(PoisonError::into_inner);
                    match balancer.poll_ready(&mut Context::from_waker(&slot.waker)) {
                        Poll::Ready(Ok(())) => {
                            let request = request.take().expect("polled after it completed");
                            balancer.call(request)
                        }
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {
                            drop(balancer);
                            if let Some(error) = (slot.give_up)() {
                                return Poll::Ready(Err(error));
                            }
                            notified.set(Some(woken));
                            let waiting = notified.as_mut().as_pin_mut().expect("just set");
                            if waiting.poll(cx).is_ready() {
                                // Woken while being polled: let other tasks run before trying
                                // again, rather than spin here.
                                notified.set(None);
                                cx.waker().wake_by_ref();
                            }
                            return Poll::Pending;
                        }
                    }
                }
            };
            this.state.set(State::Called { future: called });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// A balancer ready only once opened (or failing, once failed), answering each call with
    /// its request and how many calls came before it. It keeps the waker of its last
    /// `poll_ready`, as a balancer's pending endpoints do.
    #[derive(Clone, Default)]
    struct Gate {
        ready: Arc<AtomicBool>,
        failed: Arc<AtomicBool>,
        /// Whether the route's `give_up` says waiting is futile.
        futile: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Gate {
        fn give_up(&self) -> GiveUp {
            let futile = self.futile.clone();
            Arc::new(move || {
                futile
                    .load(Ordering::SeqCst)
                    .then(|| "no endpoint to wait for".into())
            })
        }

        /// A balancer per worker over this gate alone.
        fn per_worker(&self) -> PerWorker<Self> {
            PerWorker::new([self.clone()], self.give_up())
        }

        fn set(&self, flag: &AtomicBool) {
            flag.store(true, Ordering::SeqCst);
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
    }

    impl Service<u32> for Gate {
        type Response = (u32, usize);
        type Error = BoxError;
        type Future = std::future::Ready<Result<(u32, usize), BoxError>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.failed.load(Ordering::SeqCst) {
                return Poll::Ready(Err("every endpoint is gone".into()));
            }
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, request: u32) -> Self::Future {
            assert!(self.ready.load(Ordering::SeqCst), "called before ready");
            std::future::ready(Ok((request, self.calls.fetch_add(1, Ordering::SeqCst))))
        }
    }

    /// Lets every spawned task run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    type Call = tokio::task::JoinHandle<Result<(u32, usize), BoxError>>;

    /// A closed gate as the one worker's balancer, and `count` calls waiting on it.
    async fn waiting(count: u32) -> (Gate, Vec<Call>) {
        let gate = Gate::default();
        let service = gate.per_worker();
        let calls: Vec<Call> = (0..count)
            .map(|i| tokio::spawn(service.clone().oneshot(i)))
            .collect();
        settle().await;
        assert!(calls.iter().all(|call| !call.is_finished()));
        (gate, calls)
    }

    #[tokio::test]
    async fn a_ready_balancer_takes_the_call_at_once() {
        let gate = Gate::default();
        gate.set(&gate.ready);
        let service = gate.per_worker();
        assert_eq!(service.oneshot(7).await.unwrap(), (7, 0));
    }

    #[tokio::test]
    async fn every_call_waiting_for_an_endpoint_goes_when_one_is_ready() {
        let (gate, calls) = waiting(3).await;
        // The gate keeps one waker, the balancer's own, which wakes all three.
        gate.set(&gate.ready);
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().unwrap().0);
        }
        assert_eq!(answers, [0, 1, 2]);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_balancer_error_ends_every_waiting_call() {
        let (gate, calls) = waiting(2).await;
        gate.set(&gate.failed);
        for call in calls {
            let error = call.await.unwrap().unwrap_err();
            assert_eq!(error.to_string(), "every endpoint is gone");
        }
        assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_balancer_that_has_failed_fails_a_new_call() {
        let gate = Gate::default();
        gate.set(&gate.failed);
        let error = gate.per_worker().oneshot(0).await.unwrap_err();
        assert_eq!(error.to_string(), "every endpoint is gone");
    }

    #[tokio::test]
    async fn every_waiting_call_gives_up_when_waiting_becomes_futile() {
        let (gate, calls) = waiting(2).await;
        // What makes waiting futile wakes the balancer, as discovery does.
        gate.set(&gate.futile);
        for call in calls {
            let error = call.await.unwrap().unwrap_err();
            assert_eq!(error.to_string(), "no endpoint to wait for");
        }
        assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_ready_endpoint_is_called_even_when_waiting_would_be_futile() {
        let gate = Gate::default();
        gate.set(&gate.futile);
        gate.set(&gate.ready);
        assert_eq!(gate.per_worker().oneshot(3).await.unwrap(), (3, 0));
    }

    #[tokio::test]
    async fn a_call_dropped_while_waiting_leaves_the_others_waiting() {
        let (gate, mut calls) = waiting(2).await;
        let kept = calls.pop().unwrap();
        calls.pop().unwrap().abort();
        settle().await;
        gate.set(&gate.ready);
        assert_eq!(kept.await.unwrap().unwrap(), (1, 0));
    }
}
