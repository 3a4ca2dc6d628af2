//! The algorithms that move an adaptive limit, after Netflix's concurrency-limits: each takes
//! the limit and one sample (a call's latency, the calls in flight when it started, whether it
//! failed) and gives the next limit.

use std::time::Duration;

/// What one call tells the algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// From admission to completion; zero when no call of the window was timed (a window of
    /// failures only): then only `dropped` says anything.
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
    /// The queue estimated from latency over its lowest, as TCP Vegas: see [`Vegas`].
    Vegas(Vegas),
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
            Self::Vegas(vegas) => vegas.update(limit, sample),
        }
    }

    /// `aimd`, `gradient2` or `vegas`, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Aimd(_) => "aimd",
            Self::Gradient2(_) => "gradient2",
            Self::Vegas(_) => "vegas",
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
        // A window of failures only has no latency: it must not drag the long-term average
        // down, which would hold the limit low once the upstream recovers.
        let measured = (!sample.rtt.is_zero()).then(|| {
            let short = sample.rtt.as_secs_f64();
            let long = self.average(short);
            // A spell of high latency is over: forget it faster than the window would.
            if long / short > 2.0 {
                self.long_rtt = Some(long * 0.95);
            }
            (short, long)
        });
        // Application-limited: too little in flight to learn anything about the limit.
        if (sample.in_flight as f64) < limit / 2.0 {
            return limit;
        }
        let gradient = match measured {
            _ if sample.dropped => 0.5,
            Some((short, long)) => (self.rtt_tolerance * long / short).clamp(0.5, 1.0),
            None => return limit,
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

/// Netflix's `VegasLimit`, after TCP Vegas: the queue that the limit builds at the upstream is
/// estimated from how far latency has risen over the lowest seen, `limit x (1 - lowest /
/// latest)`. With `log` = log10 of the limit (at least 1), the limit grows by `6 log` while
/// there is no queue (at most `log` calls), by `log` while it is under `3 log`, and shrinks by
/// `log` past `6 log` or when a call fails; between the two it holds. The lowest latency is
/// measured afresh every `probe_multiplier` times the limit in samples, so that an upstream
/// whose unloaded latency rose is not held to a limit made for the old one.
#[derive(Debug, Clone, PartialEq)]
pub struct Vegas {
    /// How much of each new estimate is taken, between 0 (exclusive) and 1.
    pub smoothing: f64,
    /// The lowest latency is measured afresh after this many times the limit in samples; at
    /// least 1.
    pub probe_multiplier: u32,
    lowest_rtt: Option<f64>,
    since_probe: u64,
}

impl Default for Vegas {
    fn default() -> Self {
        Self::new(1.0, 30)
    }
}

impl Vegas {
    /// With the given settings; see the fields. Out of range (the config refuses them), a
    /// smoothing is taken as 1 and a multiplier as 1.
    #[must_use]
    pub fn new(smoothing: f64, probe_multiplier: u32) -> Self {
        Self {
            smoothing: if smoothing > 0.0 {
                smoothing.min(1.0)
            } else {
                1.0
            },
            probe_multiplier: probe_multiplier.max(1),
            lowest_rtt: None,
            since_probe: 0,
        }
    }

    fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        let log = limit.log10().floor().max(1.0);
        // A failure shrinks the limit whatever the latency says, and a window of failures
        // only (no latency measured) must not pass for the lowest latency.
        if sample.dropped {
            return self.smoothed(limit, limit - log);
        }
        if sample.rtt.is_zero() {
            return limit;
        }
        let rtt = sample.rtt.as_secs_f64();
        self.since_probe += 1;
        if self.since_probe as f64 >= f64::from(self.probe_multiplier) * limit {
            self.since_probe = 0;
            self.lowest_rtt = Some(rtt);
            return limit;
        }
        let lowest = match self.lowest_rtt {
            Some(lowest) if lowest <= rtt => lowest,
            _ => {
                self.lowest_rtt = Some(rtt);
                return limit;
            }
        };
        let next = if (sample.in_flight as f64) * 2.0 < limit {
            // Application-limited: too little in flight to learn anything about the limit.
            return limit;
        } else {
            let queue = (limit * (1.0 - lowest / rtt)).ceil();
            if queue <= log {
                limit + 6.0 * log
            } else if queue < 3.0 * log {
                limit + log
            } else if queue > 6.0 * log {
                limit - log
            } else {
                return limit;
            }
        };
        self.smoothed(limit, next)
    }

    fn smoothed(&self, limit: f64, next: f64) -> f64 {
        limit * (1.0 - self.smoothing) + next.max(1.0) * self.smoothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt_ms: u64, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt_ms),
            in_flight,
            dropped,
        }
    }

    #[test]
    fn vegas_grows_without_a_queue_holds_a_short_one_and_shrinks_past_it() {
        let mut vegas = Vegas::default();
        // The first sample only measures the lowest latency: 10 ms.
        assert_eq!(vegas.update(20.0, sample(10, 20, false)), 20.0);
        // No queue (latency at its lowest): up by 6 log10(20) = 6.
        assert_eq!(vegas.update(20.0, sample(10, 20, false)), 26.0);
        // A queue of ceil(20 x (1 - 10/12)) = 4 calls: between 3 and 6 log, held.
        assert_eq!(vegas.update(20.0, sample(12, 20, false)), 20.0);
        // A queue of 10: past 6 log, down by log.
        assert_eq!(vegas.update(20.0, sample(20, 20, false)), 19.0);
        // A failure: down by log whatever the latency.
        assert_eq!(vegas.update(20.0, sample(10, 20, true)), 19.0);
        // Too little in flight to tell: held.
        assert_eq!(vegas.update(20.0, sample(10, 5, false)), 20.0);
    }

    #[test]
    fn a_window_of_failures_without_latency_shrinks_the_limit_and_is_no_lowest_latency() {
        let mut vegas = Vegas::default();
        vegas.update(20.0, sample(10, 20, false));
        assert_eq!(vegas.update(20.0, sample(0, 20, true)), 19.0);
        assert_eq!(
            vegas.update(20.0, sample(0, 20, false)),
            20.0,
            "nothing measured"
        );
        // The lowest latency is still 10 ms: no queue at 10 ms, up by 6 log.
        assert_eq!(vegas.update(20.0, sample(10, 20, false)), 26.0);

        let mut gradient = Gradient2::default();
        for _ in 0..20 {
            gradient.update(20.0, sample(10, 20, false));
        }
        let before = gradient.long_rtt;
        assert!(gradient.update(20.0, sample(0, 20, true)) < 20.0);
        assert_eq!(gradient.long_rtt, before, "the average is left alone");
    }

    #[test]
    fn vegas_measures_the_lowest_latency_afresh_every_probe() {
        let mut vegas = Vegas::new(1.0, 1);
        vegas.update(20.0, sample(10, 20, false));
        // The upstream's unloaded latency rose to 20 ms: a queue of 10, as far as 10 ms says.
        assert_eq!(vegas.update(20.0, sample(20, 20, false)), 19.0);
        for _ in 0..17 {
            vegas.update(20.0, sample(20, 20, false));
        }
        // The 20th sample (1 x the limit) is the probe: 20 ms is the lowest now.
        assert_eq!(vegas.update(20.0, sample(20, 20, false)), 20.0, "the probe");
        assert_eq!(
            vegas.update(20.0, sample(20, 20, false)),
            26.0,
            "no queue now"
        );
    }
}
