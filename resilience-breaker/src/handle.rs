//! [`BreakerHandle`]: one circuit breaker, shared by the services that use it, to observe and
//! control.

use crate::{
    ConfigError, Counts, EjectionCap, Outcome, Permit, Policy, State, StateMachine, Transition,
    ejection::Verdict, error::BreakerOpen,
};
use metrics::{Counter, Gauge, Label, SharedString};
use std::{
    fmt,
    sync::{Arc, OnceLock, Weak},
};
use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};

const EVENTS: usize = 64;

/// One circuit breaker: its [`StateMachine`], name, metrics and subscribers.
///
/// Cloning a handle is cheap and every clone refers to the same breaker. Services built by a
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) share one; get it with
/// [`CircuitBreaker::handle`](crate::CircuitBreaker::handle), or make one first and give it to
/// [`CircuitBreakerLayer::shared`](crate::CircuitBreakerLayer::shared).
///
/// Metrics: the gauge `resilience_breaker_state{name}` (0 closed, 1 open, 2 half-open), the
/// counters `resilience_breaker_calls_total{name,outcome}` (outcome `success`, `failure`,
/// `slow_success` or `slow_failure`) and `resilience_breaker_rejected_total{name}`. Each
/// transition is also logged as an info-level tracing event.
#[derive(Clone)]
pub struct BreakerHandle {
    inner: Arc<Shared>,
}

pub(crate) struct Shared {
    machine: StateMachine,
    /// The cap on open breakers of the set this one belongs to, if any.
    cap: OnceLock<Arc<EjectionCap>>,
    name: SharedString,
    events: broadcast::Sender<Transition>,
    notify: Arc<Notify>,
    state_gauge: Gauge,
    success: Counter,
    failure: Counter,
    slow_success: Counter,
    slow_failure: Counter,
    rejected: Counter,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl BreakerHandle {
    /// A new, closed breaker named `name` in metrics and logs.
    ///
    /// The metric handles are registered now, with the recorder installed now.
    ///
    /// # Errors
    ///
    /// If the policy is not valid: the [`ConfigError`] of [`Policy::validate`], which names the
    /// first field that is wrong and its value.
    pub fn new(name: impl Into<SharedString>, policy: Policy) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self::with_labels(name.into(), Vec::new(), policy))
    }

    /// [`new`](Self::new) with extra metric labels and a policy that has passed
    /// [`Policy::validate`].
    pub(crate) fn with_labels(name: SharedString, extra: Vec<Label>, policy: Policy) -> Self {
        let mut labels = vec![Label::new("name", name.clone())];
        labels.extend(extra);
        let with = |outcome: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts("outcome", outcome));
            metrics::counter!("resilience_breaker_calls_total", l)
        };
        let shared = Shared {
            machine: StateMachine::with_valid_policy(policy, Instant::now()),
            cap: OnceLock::new(),
            events: broadcast::channel(EVENTS).0,
            notify: Arc::new(Notify::new()),
            state_gauge: metrics::gauge!("resilience_breaker_state", labels.clone()),
            success: with("success"),
            failure: with("failure"),
            slow_success: with("slow_success"),
            slow_failure: with("slow_failure"),
            rejected: metrics::counter!("resilience_breaker_rejected_total", labels),
            name,
        };
        shared.state_gauge.set(State::Closed.gauge());
        Self {
            inner: Arc::new(shared),
        }
    }

    /// Marks the breaker's metric series as in use without changing them: an exporter that
    /// drops series nobody updates for a while (a Prometheus exporter's idle timeout, say)
    /// keeps those of a quiet breaker that is still in use, and drops those of one that is
    /// gone.
    pub fn touch_metrics(&self) {
        let inner = &self.inner;
        inner.state_gauge.set(self.state().gauge());
        for counter in [
            &inner.success,
            &inner.failure,
            &inner.slow_success,
            &inner.slow_failure,
            &inner.rejected,
        ] {
            counter.increment(0);
        }
    }

    /// Whether `other` is a handle on the same breaker (not merely one of the same name).
    #[must_use]
    pub fn same_breaker(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The state machine, to drive by hand.
    #[must_use]
    pub fn machine(&self) -> &StateMachine {
        &self.inner.machine
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner.machine.state()
    }

    /// The calls in the sliding window now.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.inner.machine.counts(Instant::now())
    }

    /// Failures in a row in the Closed state.
    #[must_use]
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.machine.consecutive_failures()
    }

    /// When an Open breaker lets the next probe through; `None` in other states.
    #[must_use]
    pub fn next_probe(&self) -> Option<Instant> {
        (self.state() == State::Open).then(|| self.inner.machine.open_until())
    }

    /// Rejects every call until [`force_closed`](Self::force_closed) or [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.publish(self.inner.machine.force_open(Instant::now()));
    }

    /// Closes the breaker now with an empty window; nothing happens if it is already Closed.
    pub fn force_closed(&self) {
        self.publish(self.inner.machine.force_closed(Instant::now()));
    }

    /// Lets every call through and records nothing, until closed or reset.
    pub fn disable(&self) {
        self.publish(self.inner.machine.disable(Instant::now()));
    }

    /// Lets every call through and records it, but never trips.
    pub fn metrics_only(&self) {
        self.publish(self.inner.machine.metrics_only(Instant::now()));
    }

    /// Back to a new breaker: Closed, empty window, no backoff.
    pub fn reset(&self) {
        self.publish(self.inner.machine.reset(Instant::now()));
    }

    /// A receiver of every transition from now on. A receiver that falls more than 64
    /// transitions behind misses the oldest (see [`broadcast::error::RecvError::Lagged`]).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner.events.subscribe()
    }

    pub(crate) fn notify(&self) -> &Arc<Notify> {
        &self.inner.notify
    }

    #[inline]
    pub(crate) fn acquire(&self) -> Result<Permit, BreakerOpen> {
        let (result, transition) = self.inner.machine.acquire_with(Instant::now);
        self.publish(transition);
        if result.is_err() {
            self.inner.rejected.increment(1);
        }
        result
    }

    /// A permit for the next call, reserved now: [`StateMachine::reserve`]. A rejection is
    /// counted only if `count_rejection` (not when re-checking).
    pub(crate) fn reserve(&self, count_rejection: bool) -> Result<Permit, BreakerOpen> {
        let (result, transition) = self.inner.machine.reserve(Instant::now());
        self.publish(transition);
        if count_rejection && result.is_err() {
            self.inner.rejected.increment(1);
        }
        result
    }

    /// Counts and logs a call that the breaker would have refused, in shadow mode.
    pub(crate) fn would_reject(&self, open: &BreakerOpen) {
        metrics::counter!(
            "resilience_breaker_rejected_total",
            "name" => self.inner.name.clone(),
            "mode" => "shadow",
        )
        .increment(1);
        tracing::debug!(breaker = %self.inner.name, %open, "would reject the call (shadow mode)");
    }

    /// [`acquire`](Self::acquire) without counting a rejection: in shadow mode the call goes
    /// on, and is counted as one the breaker would have refused.
    pub(crate) fn acquire_quietly(&self) -> Result<Permit, BreakerOpen> {
        let (result, transition) = self.inner.machine.acquire_with(Instant::now);
        self.publish(transition);
        result
    }

    /// Whether the service must time each call.
    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        self.inner.machine.needs_clock()
    }

    #[inline]
    pub(crate) fn record(&self, permit: Permit, outcome: Outcome) {
        if permit.is_tracked() {
            match (outcome.is_failure(), self.inner.machine.is_slow(&outcome)) {
                (false, false) => &self.inner.success,
                (true, false) => &self.inner.failure,
                (false, true) => &self.inner.slow_success,
                (true, true) => &self.inner.slow_failure,
            }
            .increment(1);
        }
        let probe = permit.is_probe();
        let transition = self
            .inner
            .machine
            .record_with(permit, outcome, Instant::now);
        let transition = match transition {
            Some(t) if t.from == State::Closed && t.to == State::Open => self.capped(t),
            other => other,
        };
        self.publish(transition);
        if probe {
            self.inner.notify.notify_waiters();
        }
    }

    /// A trip, as the ejection cap (if any) allows it: kept, kept in place of a breaker that
    /// fails less, or undone (back to Closed with an empty window, never published).
    #[cold]
    fn capped(&self, trip: Transition) -> Option<Transition> {
        let Some(cap) = self.inner.cap.get() else {
            return Some(trip);
        };
        let rate = self.counts().failure_rate();
        match cap.decide(self, rate) {
            Verdict::Open => Some(trip),
            Verdict::OpenInsteadOf(victim) => {
                self.count_capped();
                tracing::info!(
                    breaker = %self.inner.name,
                    closed = victim.name(),
                    failure_rate = rate,
                    "ejection cap reached: opened in place of a breaker that fails less"
                );
                victim.force_closed();
                Some(trip)
            }
            Verdict::StayClosed => {
                self.count_capped();
                tracing::debug!(
                    breaker = %self.inner.name,
                    failure_rate = rate,
                    "ejection cap reached: stays closed, judged afresh"
                );
                let _ = self.inner.machine.reset(trip.at);
                None
            }
        }
    }

    fn count_capped(&self) {
        metrics::counter!(
            "resilience_breaker_ejection_capped_total",
            "name" => self.inner.name.clone(),
        )
        .increment(1);
    }

    /// Puts the breaker under `cap`, unless it is under one already.
    pub(crate) fn set_cap(&self, cap: Arc<EjectionCap>) -> bool {
        self.inner.cap.set(cap).is_ok()
    }

    pub(crate) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &Weak<Shared>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    /// Whether `weak` is this breaker.
    pub(crate) fn is(&self, weak: &Weak<Shared>) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.inner), weak.as_ptr())
    }

    /// [`StateMachine::claim`].
    pub(crate) fn claim(&self, permit: Permit) -> Option<Permit> {
        self.inner.machine.claim(permit)
    }

    /// [`StateMachine::is_stale`].
    pub(crate) fn is_stale(&self, permit: &Permit) -> bool {
        self.inner.machine.is_stale(permit)
    }

    pub(crate) fn release(&self, permit: Permit) {
        if permit.is_probe() {
            self.inner.machine.release(permit);
            self.inner.notify.notify_waiters();
        }
    }

    #[inline]
    fn publish(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.publish_cold(t);
        }
    }

    #[cold]
    fn publish_cold(&self, t: Transition) {
        let inner = &*self.inner;
        inner.state_gauge.set(t.to.gauge());
        match t.open_until {
            Some(until) => tracing::info!(
                breaker = %inner.name,
                from = %t.from,
                to = %t.to,
                open_for = ?until.saturating_duration_since(t.at),
                "circuit breaker state changed"
            ),
            None => tracing::info!(
                breaker = %inner.name,
                from = %t.from,
                to = %t.to,
                "circuit breaker state changed"
            ),
        }
        // No subscribers is fine.
        let _ = inner.events.send(t);
        inner.notify.notify_waiters();
    }
}
