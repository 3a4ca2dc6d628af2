//! The algorithms that move an adaptive limit, after Netflix's concurrency-limits: each takes
//! the limit and one sample (a call's latency, the calls in flight when it started, whether it
//! failed) and gives the next limit.

use std::time::Duration;

/// What one call tells the algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// From admission to completion.
    pub(crate) rtt: Duration,
    /// Calls in flight when this one was admitted, itself included.
    pub(crate) in_flight: usize,
    /// The call failed (an error from the inner service).
    pub(crate) dropped: bool,
}

/// How the limit moves.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Additive increase, multiplicative decrease: see [`Aimd`].
    Aimd(Aimd),
    /// The gradient of latency: see [`Gradient2`].
    Gradient2(Gradient2),
}

impl Default for Algorithm {
    fn default() -> Self {
        Self::Gradient2(Gradient2::default())
    }
}

impl Algorithm {
    pub(crate) fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        match self {
            Self::Aimd(aimd) => aimd.update(limit, sample),
            Self::Gradient2(gradient) => gradient.update(limit, sample),
        }
    }

    /// `aimd` or `gradient2`, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Aimd(_) => "aimd",
            Self::Gradient2(_) => "gradient2",
        }
    }
}

/// Netflix's `AIMDLimit`: the limit grows by one for each call that succeeds while at least
/// half the limit is in use, and shrinks by `backoff_ratio` for each call that fails or takes
/// longer than `timeout`. Reacts to failures and timeouts only, not to latency that rises
/// below the timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// What the limit is multiplied by on a failure or a timeout, between 0.5 and 1 (exclusive).
    pub backoff_ratio: f64,
    /// A call slower than this counts as a failure.
    pub timeout: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Aimd {
    fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        if sample.dropped || sample.rtt > self.timeout {
            limit * self.backoff_ratio
        } else if sample.in_flight.saturating_mul(2) as f64 >= limit {
            limit + 1.0
        } else {
            limit
        }
    }
}

/// Netflix's `Gradient2Limit`: the limit follows the ratio of a long-term average latency to
/// the latest one. While latency stays within `rtt_tolerance` of its long-term average the
/// limit grows by a small queue (`queue_size`, 4); past it, the limit shrinks in proportion,
/// smoothed by `smoothing`. The long-term average forgets a spell of high latency
/// quickly (when it runs at over twice the latest), so a recovered service is not held back.
/// A failed call counts as latency at twice the tolerance: failures shrink the limit too.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient2 {
    /// How much of each new estimate is taken, between 0 (exclusive) and 1.
    pub smoothing: f64,
    /// Latency may rise this many times over its long-term average before the limit shrinks;
    /// at least 1.
    pub rtt_tolerance: f64,
    /// Windows in the long-term average (an exponential moving average).
    pub long_window: u32,
    /// Calls the limit grows by while latency is within tolerance.
    pub queue_size: f64,
    long_rtt: Option<f64>,
    samples: u32,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new(0.2, 1.0, 600)
    }
}

impl Gradient2 {
    /// With the given settings; see the fields.
    #[must_use]
    pub fn new(smoothing: f64, rtt_tolerance: f64, long_window: u32) -> Self {
        Self {
            smoothing,
            rtt_tolerance,
            long_window,
            queue_size: 4.0,
            long_rtt: None,
            samples: 0,
        }
    }

    fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        let short = sample.rtt.as_secs_f64().max(1e-9);
        let long = self.average(short);
        // A spell of high latency is over: forget it faster than the window would.
        if long / short > 2.0 {
            self.long_rtt = Some(long * 0.95);
        }
        // Application-limited: too little in flight to learn anything about the limit.
        if (sample.in_flight as f64) < limit / 2.0 {
            return limit;
        }
        let gradient = if sample.dropped {
            0.5
        } else {
            (self.rtt_tolerance * long / short).clamp(0.5, 1.0)
        };
        let estimate = limit * gradient + self.queue_size;
        limit * (1.0 - self.smoothing) + estimate * self.smoothing
    }

    /// Adds `rtt` to the long-term average, and returns it. The first ten samples are a plain
    /// average (a warm-up), as Netflix's `ExpAvgMeasurement` does.
    fn average(&mut self, rtt: f64) -> f64 {
        const WARMUP: u32 = 10;
        self.samples = self.samples.saturating_add(1);
        let next = match self.long_rtt {
            None => rtt,
            Some(avg) if self.samples <= WARMUP => avg + (rtt - avg) / f64::from(self.samples),
            Some(avg) => {
                let factor = 2.0 / (f64::from(self.long_window) + 1.0);
                avg * (1.0 - factor) + rtt * factor
            }
        };
        self.long_rtt = Some(next);
        next
    }
}
