//! [`Admission`] and [`Limiter`]: one adaptive limit, shared by every clone of its layer:
//! the limit, the calls in flight, and the algorithm that moves the limit.

use super::{
    algorithm::{Algorithm, Sample},
    layer::Settings,
};
use crate::{error::Overloaded, future::Completion};
use resilience_core::Enforcement;
use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// Admission to one adaptive limit: the layer, its services and its handle share it. It is the
/// one owner of its [`Limiter`] besides the permits of the calls in flight, so the limiter's
/// `Arc` strong count, less this one, is the calls in flight: admitting a call is the one
/// atomic add of cloning that `Arc` into its permit, and releasing it the one of dropping it.
/// A caller reads the count after its own add, so it counts itself and every call admitted
/// before it: two racing for the last place can both be refused, never both admitted.
#[derive(Debug)]
pub(crate) struct Admission(Arc<Limiter>);

/// The state of one adaptive limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) name: Arc<str>,
    pub(crate) enforcement: Enforcement,
    min: usize,
    max: usize,
    /// The limit as admission reads it: the estimate, rounded, between `min` and `max`.
    limit: AtomicUsize,
    /// One call in this many is timed: a power of two, from 1 (every call, until the first
    /// window closes) to [`MAX_STRIDE`]. Each service counts its own calls down to its next
    /// timed one ([`Admission::timed`]); calls refused count too.
    stride: AtomicU64,
    /// Services that have made their first call: spreads where their countdowns start.
    services: AtomicU64,
    estimate: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    algorithm: Algorithm,
    limit: f64,
    window: Window,
}

/// A window closes, and the algorithm sees its calls as one sample, once it is at least
/// [`MIN_WINDOW`] long and has [`MIN_SAMPLES`] calls, or [`MAX_WINDOW`] long with one: one
/// call's latency reflects the load of the moment it was admitted, so acting on each call
/// alone would chase its own tail (Netflix's `WindowedLimit` does the same).
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(100);
/// See [`MIN_WINDOW`].
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(1);
/// See [`MIN_WINDOW`].
pub(crate) const MIN_SAMPLES: u32 = 10;

/// Timed calls a window aims for. Timing a call costs two clock reads and the estimate's
/// lock when it ends; the more calls a window sees, the fewer of them are timed (one in
/// `stride`), so a busy limit costs no more per call than a fixed one, and a quiet one still
/// times every call. A call that fails is always counted.
const TIMED_PER_WINDOW: u32 = 4 * MIN_SAMPLES;
/// The sparsest timing: one admitted call in this many.
const MAX_STRIDE: u64 = 256;
/// A service's countdown before its first call (see [`Admission::timed`]).
pub(crate) const UNSET: u64 = u64::MAX;

/// The calls completed since the last update.
#[derive(Debug)]
struct Window {
    start: Instant,
    calls: u32,
    /// Of `calls`, those timed that succeeded: the latency averaged. A failure's latency says
    /// nothing of the service's (a refused connection fails in microseconds), so it is left
    /// out, as Netflix's `WindowedLimit` leaves out dropped samples.
    timed: u32,
    /// The calls admitted that the timed ones stand for: each stood for the stride it was
    /// timed under.
    admitted: u64,
    rtt_sum: Duration,
    max_in_flight: usize,
    dropped: bool,
}

impl Window {
    fn new(start: Instant) -> Self {
        Self {
            start,
            calls: 0,
            timed: 0,
            admitted: 0,
            rtt_sum: Duration::ZERO,
            max_in_flight: 0,
            dropped: false,
        }
    }

    fn add(&mut self, sample: Sample, timed: Option<u64>) {
        self.calls += 1;
        if let Some(stride) = timed {
            self.admitted = self.admitted.saturating_add(stride);
            if !sample.dropped {
                self.timed += 1;
                self.rtt_sum += sample.rtt;
            }
        }
        self.max_in_flight = self.max_in_flight.max(sample.in_flight);
        self.dropped |= sample.dropped;
    }

    /// The window as one sample, if it is complete at `now`.
    fn close(&mut self, now: Instant) -> Option<Sample> {
        let age = now.saturating_duration_since(self.start);
        let complete = (age >= MIN_WINDOW && self.calls >= MIN_SAMPLES)
            || (age >= MAX_WINDOW && self.calls > 0);
        if !complete {
            return None;
        }
        let sample = Sample {
            // Only failures: their latency says nothing, the failure does.
            rtt: self.rtt_sum.checked_div(self.timed).unwrap_or_default(),
            in_flight: self.max_in_flight,
            dropped: self.dropped,
        };
        *self = Self::new(now);
        Some(sample)
    }
}

impl Admission {
    pub(crate) fn new(settings: &Settings) -> Self {
        let Settings {
            name,
            enforcement,
            algorithm,
            initial,
            min,
            max,
        } = settings.clone();
        let initial = initial.clamp(min, max);
        Self(Arc::new(Limiter {
            name,
            enforcement,
            min,
            max,
            limit: AtomicUsize::new(initial),
            stride: AtomicU64::new(1),
            services: AtomicU64::new(0),
            estimate: Mutex::new(Estimate {
                algorithm,
                #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
                limit: initial as f64,
                window: Window::new(Instant::now()),
            }),
        }))
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        self.0.limit.load(Ordering::Relaxed)
    }

    /// Sets the limit's gauge: once a service uses it (not for each step of a layer's
    /// builder, which would leave a series under each name it went through), then at each
    /// window's close.
    pub(crate) fn publish(&self) {
        publish(&self.0.name, self.limit());
    }

    /// Calls in flight now: the permits alive.
    pub(crate) fn in_flight(&self) -> usize {
        Arc::strong_count(&self.0) - 1
    }

    /// Admits a call, or refuses it when the limit's worth are in flight (in shadow mode the
    /// refusal is counted and logged, and the call admitted). A `timed` call (with the stride
    /// it was timed under, from [`timed`](Self::timed)) has its latency measured.
    pub(crate) fn acquire(&self, timed: Option<u64>) -> Result<Permit, Overloaded> {
        let limiter = self.0.clone();
        // This call included (see `Admission`).
        let in_flight = Arc::strong_count(&limiter) - 1;
        let limit = self.limit();
        if in_flight > limit {
            // A refusal drops `limiter`: the call is no longer counted.
            limiter.over_limit(limit)?;
        }
        Ok(Permit {
            limiter,
            start: timed.map(|_| Instant::now()),
            stride: timed.unwrap_or(0),
            in_flight,
        })
    }

    /// Whether a service's next call is timed (then with the stride it is timed under),
    /// counting down `countdown`, the service's own, to it: one call in the stride.
    pub(crate) fn timed(&self, countdown: &mut u64) -> Option<u64> {
        let stride = self.0.stride.load(Ordering::Relaxed);
        if *countdown == UNSET {
            // Where a new service starts is drawn at its first call, one service after
            // another: services that each make one call (a clone per call, however many
            // clones that takes) still time one call in the stride between them.
            *countdown = self.0.services.fetch_add(1, Ordering::Relaxed) & (stride - 1);
        }
        if *countdown == 0 {
            *countdown = stride - 1;
            Some(stride)
        } else {
            // A stride that shrank shortens the wait too.
            *countdown = (*countdown).min(stride) - 1;
            None
        }
    }
}

impl Limiter {
    /// Counts and logs a call over the limit, and refuses it unless in shadow mode. Out of
    /// line (as [`record`](Self::record)), so that the admission every call takes stays small.
    #[cold]
    #[inline(never)]
    fn over_limit(&self, limit: usize) -> Result<(), Overloaded> {
        let mode = self.enforcement.as_str();
        metrics::counter!(
            "resilience_concurrency_shed_total",
            "name" => self.name.to_string(),
            "mode" => mode,
        )
        .increment(1);
        tracing::debug!(name = &*self.name, limit, mode, "over the adaptive limit");
        if self.enforcement.refuses() {
            return Err(Overloaded::new(limit));
        }
        Ok(())
    }

    #[inline(never)]
    fn record(&self, sample: Sample, timed: Option<u64>, now: Instant) {
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        estimate.window.add(sample, timed);
        let admitted = estimate.window.admitted;
        let Some(sample) = estimate.window.close(now) else {
            return;
        };
        self.stride.store(stride_for(admitted), Ordering::Relaxed);
        let current = estimate.limit;
        #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
        let next = estimate
            .algorithm
            .update(current, sample)
            .clamp(self.min as f64, self.max as f64);
        estimate.limit = next;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to min..=max first"
        )]
        let rounded = next.round() as usize;
        // Each window, moved or not: the exporter drops a series left unchanged for its idle
        // timeout, and a limit that holds still would otherwise vanish from it for good.
        publish(&self.name, rounded);
        if self.limit.swap(rounded, Ordering::Relaxed) != rounded {
            tracing::trace!(
                name = &*self.name,
                algorithm = estimate.algorithm.name(),
                limit = rounded,
                "adaptive limit moved"
            );
        }
    }
}

/// Sets `resilience_concurrency_limit{name}`, looked up each time rather than held: a held
/// handle would go on writing, after an idle spell, to a series the exporter has dropped.
fn publish(name: &Arc<str>, limit: usize) {
    #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
    metrics::gauge!("resilience_concurrency_limit", "name" => metrics::SharedString::from(name.clone()))
        .set(limit as f64);
}

/// The stride that times about [`TIMED_PER_WINDOW`] of a window's `admitted` calls.
fn stride_for(admitted: u64) -> u64 {
    let wanted = (admitted / u64::from(TIMED_PER_WINDOW)).max(1);
    // The power of two at or below: rounding down times more calls, never fewer.
    (1 << wanted.ilog2()).min(MAX_STRIDE)
}

/// A call admitted by an adaptive limit: in flight until dropped (its clone of the limiter's
/// `Arc` is what counts it). Completing it records its
/// latency (if it was timed) or its failure; a call dropped before it completes (cancelled)
/// teaches the algorithm nothing.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    /// When the call started, for the timed calls (one in the limit's stride).
    start: Option<Instant>,
    /// The stride it was timed under (0 if not timed).
    stride: u64,
    in_flight: usize,
}

impl Completion for Permit {
    fn complete(&mut self, ok: bool) {
        if self.start.is_some() || !ok {
            self.record(ok);
        }
    }
}

/// A completed call's place under an adaptive limit, still held: its share of the limiter,
/// without what the call's completion needed (see [`Admission::in_flight`]).
#[derive(Debug)]
pub(crate) struct HeldPlace(#[allow(dead_code, reason = "held for its count")] Arc<Limiter>);

impl Permit {
    /// The place this permit holds, once its call has completed: smaller, for a response
    /// body to carry.
    pub(crate) fn into_place(self) -> HeldPlace {
        HeldPlace(self.limiter)
    }

    #[inline(never)]
    fn record(&self, ok: bool) {
        let now = Instant::now();
        let rtt = self
            .start
            .map(|start| now.saturating_duration_since(start))
            .unwrap_or_default();
        self.limiter.record(
            Sample {
                rtt,
                in_flight: self.in_flight,
                dropped: !ok,
            },
            self.start.map(|_| self.stride),
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::algorithm::Aimd;

    fn admission(limit: usize) -> Admission {
        Admission::new(&Settings {
            name: Arc::from("test"),
            enforcement: Enforcement::Enforce,
            algorithm: Algorithm::Aimd(Aimd::default()),
            initial: limit,
            min: 1,
            max: 100_000,
        })
    }

    #[test]
    fn a_windows_latency_is_that_of_the_calls_that_succeeded() {
        let start = Instant::now();
        let sample = |ms, dropped| Sample {
            rtt: Duration::from_millis(ms),
            in_flight: 1,
            dropped,
        };
        let mut window = Window::new(start);
        // A connection refused in a millisecond says nothing of the service's latency.
        window.add(sample(1, true), Some(1));
        window.add(sample(10, false), Some(1));
        let closed = window.close(start + MAX_WINDOW).expect("complete");
        assert_eq!(closed.rtt, Duration::from_millis(10));
        assert!(closed.dropped);

        let mut failures = Window::new(start);
        failures.add(sample(1, true), Some(1));
        let closed = failures.close(start + MAX_WINDOW).expect("complete");
        assert_eq!(closed.rtt, Duration::ZERO, "failures only: no latency");
    }

    #[test]
    fn the_stride_times_about_a_window_worth_of_calls() {
        let per_window = u64::from(TIMED_PER_WINDOW);
        assert_eq!(stride_for(0), 1);
        assert_eq!(stride_for(per_window - 1), 1);
        assert_eq!(stride_for(2 * per_window), 2);
        assert_eq!(stride_for(3 * per_window), 2, "rounded down: more timed");
        assert_eq!(stride_for(100 * per_window), 64);
        assert_eq!(stride_for(u64::MAX), MAX_STRIDE);
    }

    #[test]
    fn permits_are_the_calls_in_flight_and_the_limit_holds() {
        let admission = admission(2);
        let first = admission.acquire(None).unwrap();
        let second = admission.acquire(None).unwrap();
        assert_eq!(admission.in_flight(), 2);
        assert!(admission.acquire(None).is_err(), "over the limit");
        assert_eq!(admission.in_flight(), 2, "a refused call is not counted");
        drop(first);
        assert_eq!(admission.in_flight(), 1);
        let third = admission.acquire(None).unwrap();
        drop((second, third));
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_window_makes_the_next_one_time_fewer_calls() {
        let admission = admission(1000);
        let mut countdown = 0;
        let mut call = || admission.acquire(admission.timed(&mut countdown)).unwrap();

        // A quiet start: every call timed. Eight windows' worth complete within the first
        // window, and one more after it closes the window.
        let permits: Vec<_> = (0..8 * TIMED_PER_WINDOW).map(|_| call()).collect();
        assert!(permits.iter().all(|p| p.start.is_some()));
        for mut permit in permits {
            permit.complete(true);
        }
        tokio::time::advance(MIN_WINDOW).await;
        call().complete(true);

        // One call in eight is timed now.
        let permits: Vec<_> = (0..64).map(|_| call()).collect();
        assert_eq!(permits.iter().filter(|p| p.start.is_some()).count(), 8);
    }

    #[test]
    fn services_used_once_each_still_time_one_call_in_the_stride() {
        let admission = admission(1000);
        admission.0.stride.store(4, Ordering::Relaxed);
        // Two clones made for each call and only the second used, as nested wrappers do:
        // a service's place is drawn at its first call, so the unused clones take none.
        let timed = (0..16)
            .filter(|_| {
                let (_unused, mut used) = (UNSET, UNSET);
                admission.timed(&mut used).is_some()
            })
            .count();
        assert_eq!(timed, 4);
    }
}
