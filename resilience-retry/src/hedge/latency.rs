//! [`Latencies`]: recent latencies, for a hedge delay at a percentile of them (Finagle's
//! backup requests).

use std::{
    collections::VecDeque,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Latencies kept.
const KEPT: usize = 512;
/// The percentile is computed again after this many new latencies.
const RECOMPUTE_EVERY: u32 = 64;

/// The latest [`KEPT`] latencies, and their percentile as last computed.
#[derive(Debug)]
pub(crate) struct Latencies {
    percentile: f64,
    recent: Mutex<Recent>,
    /// The percentile in nanoseconds; 0 until enough latencies are known.
    current: AtomicU64,
}

#[derive(Debug, Default)]
struct Recent {
    latencies: VecDeque<Duration>,
    since: u32,
}

impl Latencies {
    pub(crate) fn new(percentile: f64) -> Self {
        Self {
            percentile,
            recent: Mutex::default(),
            current: AtomicU64::new(0),
        }
    }

    /// The percentile of recent latencies, once [`RECOMPUTE_EVERY`] are known.
    pub(crate) fn current(&self) -> Option<Duration> {
        match self.current.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.latencies.len() == KEPT {
            recent.latencies.pop_front();
        }
        recent.latencies.push_back(latency);
        recent.since += 1;
        if recent.since < RECOMPUTE_EVERY {
            return;
        }
        recent.since = 0;
        // A selection, not a sort: linear in KEPT, on the path of the request that completes.
        let mut latencies: Vec<Duration> = recent.latencies.iter().copied().collect();
        drop(recent);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into at most KEPT latencies"
        )]
        let at = ((latencies.len() as f64 * self.percentile / 100.0).ceil() as usize)
            .clamp(1, latencies.len())
            - 1;
        let (_, nth, _) = latencies.select_nth_unstable(at);
        let nanos = u64::try_from(nth.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.current.store(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_of_the_latest_latencies() {
        let latencies = Latencies::new(90.0);
        for ms in 1..RECOMPUTE_EVERY {
            latencies.record(Duration::from_millis(u64::from(ms)));
        }
        assert_eq!(latencies.current(), None, "not enough known yet");
        latencies.record(Duration::from_millis(64));
        // 1..=64 ms: the 90th percentile is the 58th value.
        assert_eq!(latencies.current(), Some(Duration::from_millis(58)));
    }
}
