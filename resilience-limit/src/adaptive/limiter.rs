//! [`Limiter`]: the state of one adaptive limit, shared by every clone of its layer: the
//! limit, the calls in flight, and the algorithm that moves the limit.

use super::algorithm::{Algorithm, Sample};
use crate::{error::Overloaded, future::Completion};
use resilience_core::Enforcement;
use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
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
    in_flight: AtomicUsize,
    /// Calls admitted, to time one in [`SAMPLE_EVERY`].
    admitted: AtomicUsize,
    estimate: Mutex<Estimate>,
    gauge: metrics::Gauge,
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

/// One call in this many is timed (two clock reads, and the estimate's lock when it ends); a
/// call that fails is always counted. At any rate worth limiting that is plenty of samples,
/// and it keeps the limit's cost per call near a fixed limit's.
pub(crate) const SAMPLE_EVERY: usize = 4;

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
            in_flight: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            estimate: Mutex::new(Estimate {
                algorithm,
                #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
                limit: initial as f64,
                window: Window::new(Instant::now()),
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
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits a call, or refuses it when the limit's worth are in flight (in shadow mode the
    /// refusal is counted and logged, and the call admitted).
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Permit, Overloaded> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.limit();
        if in_flight > limit {
            let mode = self.enforcement.as_str();
            metrics::counter!(
                "resilience_concurrency_shed_total",
                "name" => self.name.to_string(),
                "mode" => mode,
            )
            .increment(1);
            tracing::debug!(name = &*self.name, limit, mode, "over the adaptive limit");
            if self.enforcement.refuses() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Overloaded::new(limit));
            }
        }
        let timed = self
            .admitted
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SAMPLE_EVERY);
        Ok(Permit {
            limiter: self.clone(),
            start: timed.then(Instant::now),
            in_flight,
        })
    }

    fn record(&self, sample: Sample, timed: bool, now: Instant) {
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        estimate.window.add(sample, timed);
        let Some(sample) = estimate.window.close(now) else {
            return;
        };
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

/// A call admitted by an adaptive limit: in flight until dropped. Completing it records its
/// latency (if it was timed) or its failure; a call dropped before it completes (cancelled)
/// teaches the algorithm nothing.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    /// When the call started, for one call in [`SAMPLE_EVERY`].
    start: Option<Instant>,
    in_flight: usize,
}

impl Completion for Permit {
    fn complete(self, ok: bool) {
        if self.start.is_none() && ok {
            return;
        }
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
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
