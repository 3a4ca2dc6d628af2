//! [`Limiter`]: the state of one adaptive limit, shared by every clone of its layer: the
//! limit, the calls in flight, and the algorithm that moves the limit.

use super::algorithm::{Algorithm, Sample};
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

/// One adaptive limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) name: Arc<str>,
    pub(crate) enforcement: Enforcement,
    min: usize,
    max: usize,
    /// The limit as admission reads it: the estimate, rounded, between `min` and `max`.
    limit: AtomicUsize,
    /// Calls admitted (the high 32 bits, wrapping) and in flight (the low 32): one atomic
    /// add admits a call and numbers it, for the one-in-`stride` timing.
    calls: AtomicU64,
    /// One admitted call in this many is timed: a power of two, from 1 (every call, until
    /// the first window closes) to [`MAX_STRIDE`].
    stride: AtomicU64,
    estimate: Mutex<Estimate>,
    gauge: metrics::Gauge,
}

#[derive(Debug)]
struct Estimate {
    algorithm: Algorithm,
    limit: f64,
    window: Window,
    /// The admission count (`calls`' high half) when the window opened.
    admitted_at_open: u32,
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
/// In `calls`, one admission: one more admitted, one more in flight.
const ADMIT: u64 = (1 << 32) | 1;
/// In `calls`, the calls in flight.
const IN_FLIGHT: u64 = (1 << 32) - 1;

/// The calls completed since the last update.
#[derive(Debug)]
struct Window {
    start: Instant,
    calls: u32,
    /// Of `calls`, those timed.
    timed: u32,
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
            rtt_sum: Duration::ZERO,
            max_in_flight: 0,
            dropped: false,
        }
    }

    fn add(&mut self, sample: Sample, timed: bool) {
        self.calls += 1;
        if timed {
            self.timed += 1;
            self.rtt_sum += sample.rtt;
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
            // Only failures, untimed: their latency says nothing, the failure does.
            rtt: self.rtt_sum.checked_div(self.timed).unwrap_or_default(),
            in_flight: self.max_in_flight,
            dropped: self.dropped,
        };
        *self = Self::new(now);
        Some(sample)
    }
}

impl Limiter {
    pub(crate) fn new(
        name: Arc<str>,
        enforcement: Enforcement,
        algorithm: Algorithm,
        initial: usize,
        min: usize,
        max: usize,
    ) -> Self {
        let initial = initial.clamp(min, max);
        let gauge = metrics::gauge!("resilience_concurrency_limit", "name" => name.to_string());
        #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
        gauge.set(initial as f64);
        Self {
            name,
            enforcement,
            min,
            max,
            limit: AtomicUsize::new(initial),
            calls: AtomicU64::new(0),
            stride: AtomicU64::new(1),
            estimate: Mutex::new(Estimate {
                algorithm,
                #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
                limit: initial as f64,
                window: Window::new(Instant::now()),
                admitted_at_open: 0,
            }),
            gauge,
        }
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        in_flight(self.calls.load(Ordering::Relaxed))
    }

    /// Admits a call, or refuses it when the limit's worth are in flight (in shadow mode the
    /// refusal is counted and logged, and the call admitted).
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Permit, Overloaded> {
        let calls = self
            .calls
            .fetch_add(ADMIT, Ordering::AcqRel)
            .wrapping_add(ADMIT);
        let in_flight = in_flight(calls);
        let limit = self.limit();
        if in_flight > limit {
            self.over_limit(limit)?;
        }
        let stride = self.stride.load(Ordering::Relaxed);
        let timed = (calls >> 32) & (stride - 1) == 0;
        Ok(Permit {
            limiter: self.clone(),
            start: timed.then(Instant::now),
            in_flight,
        })
    }

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
            // Not admitted after all: its number goes to the next call.
            self.calls.fetch_sub(ADMIT, Ordering::AcqRel);
            return Err(Overloaded::new(limit));
        }
        Ok(())
    }

    #[inline(never)]
    fn record(&self, sample: Sample, timed: bool, now: Instant) {
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        estimate.window.add(sample, timed);
        let Some(sample) = estimate.window.close(now) else {
            return;
        };
        let admitted = admitted(self.calls.load(Ordering::Relaxed));
        let in_window = admitted.wrapping_sub(estimate.admitted_at_open);
        estimate.admitted_at_open = admitted;
        self.stride.store(stride_for(in_window), Ordering::Relaxed);
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
        if self.limit.swap(rounded, Ordering::Relaxed) != rounded {
            #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
            self.gauge.set(rounded as f64);
            tracing::trace!(
                name = &*self.name,
                algorithm = estimate.algorithm.name(),
                limit = rounded,
                "adaptive limit moved"
            );
        }
    }
}

fn in_flight(calls: u64) -> usize {
    usize::try_from(calls & IN_FLIGHT).unwrap_or(usize::MAX)
}

fn admitted(calls: u64) -> u32 {
    u32::try_from(calls >> 32).unwrap_or(u32::MAX)
}

/// The stride that times about [`TIMED_PER_WINDOW`] of a window's `admitted` calls.
fn stride_for(admitted: u32) -> u64 {
    let wanted = u64::from(admitted / TIMED_PER_WINDOW).max(1);
    // The power of two at or below: rounding down times more calls, never fewer.
    (1 << wanted.ilog2()).min(MAX_STRIDE)
}

/// A call admitted by an adaptive limit: in flight until dropped. Completing it records its
/// latency (if it was timed) or its failure; a call dropped before it completes (cancelled)
/// teaches the algorithm nothing.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    /// When the call started, for the timed calls (one in the limit's stride).
    start: Option<Instant>,
    in_flight: usize,
}

impl Completion for Permit {
    fn complete(self, ok: bool) {
        if self.start.is_some() || !ok {
            self.record(ok);
        }
    }
}

impl Permit {
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
            self.start.is_some(),
            now,
        );
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::algorithm::Aimd;

    fn limiter() -> Arc<Limiter> {
        Arc::new(Limiter::new(
            Arc::from("test"),
            Enforcement::Enforce,
            Algorithm::Aimd(Aimd::default()),
            1000,
            1,
            100_000,
        ))
    }

    #[test]
    fn the_stride_times_about_a_window_worth_of_calls() {
        assert_eq!(stride_for(0), 1);
        assert_eq!(stride_for(TIMED_PER_WINDOW - 1), 1);
        assert_eq!(stride_for(2 * TIMED_PER_WINDOW), 2);
        assert_eq!(
            stride_for(3 * TIMED_PER_WINDOW),
            2,
            "rounded down: more timed"
        );
        assert_eq!(stride_for(100 * TIMED_PER_WINDOW), 64);
        assert_eq!(stride_for(u32::MAX), MAX_STRIDE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_window_makes_the_next_one_time_fewer_calls() {
        let limiter = limiter();
        let timed = |permits: &[Permit]| permits.iter().filter(|p| p.start.is_some()).count();

        // A quiet start: every call timed.
        let permits: Vec<_> = (0..8 * TIMED_PER_WINDOW)
            .map(|_| limiter.acquire().unwrap())
            .collect();
        assert_eq!(timed(&permits), permits.len());
        assert_eq!(limiter.in_flight(), permits.len());
        tokio::time::advance(MIN_WINDOW).await;
        for permit in permits {
            permit.complete(true);
        }
        assert_eq!(limiter.in_flight(), 0);

        // That window saw eight windows' worth: one call in eight is timed now.
        let permits: Vec<_> = (0..64).map(|_| limiter.acquire().unwrap()).collect();
        assert_eq!(timed(&permits), 8);
    }

    #[test]
    fn in_flight_counts_down_as_admissions_wrap() {
        let limiter = limiter();
        limiter.calls.store(!IN_FLIGHT, Ordering::Relaxed);
        let permit = limiter.acquire().unwrap();
        assert_eq!(limiter.in_flight(), 1);
        assert_eq!(
            admitted(limiter.calls.load(Ordering::Relaxed)),
            0,
            "wrapped"
        );
        drop(permit);
        assert_eq!(limiter.in_flight(), 0);
    }
}
