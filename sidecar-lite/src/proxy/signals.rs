//! The golden signals of one listener over the last minutes, for the status page: requests per
//! second, success rate, latency percentiles, retries, and local rejections by reason; and, on
//! the inbound listener, the peer identities seen. Everything lives in fixed-size rings and
//! tables, so nothing grows with traffic or with the number of callers.

use serde::Serialize;
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

/// The span of one bucket of the ring.
const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: five minutes, for the charts.
const BUCKETS: usize = 30;
/// Buckets in the recent window of the figures: the last minute.
const WINDOW: usize = 6;
/// The `x-sidecar-error` flags counted one by one; any other is `other`.
const FLAGS: [&str; 11] = [
    "timeout",
    "breaker-open",
    "no-endpoints",
    "overloaded",
    "connect",
    "upstream",
    "unauthorized",
    "bad-request",
    "fault-injected",
    "not-found",
    "method-not-allowed",
];
/// Peer identities counted one by one; requests of any other count as `other`.
pub(crate) const MAX_PEERS: usize = 64;
/// Latency buckets: bucket `i` holds latencies below `10 us * 2^((i + 1) / 4)`, about 19 %
/// wide each, from 10 us up to about 3 minutes (the last one holds everything longer).
const LATENCY_BUCKETS: usize = 96;

/// One finished request, as the edge saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    pub(crate) latency: Duration,
    /// Answered without a 5xx and without a local rejection.
    pub(crate) success: bool,
    pub(crate) attempts: u32,
    /// The `x-sidecar-error` flag of the answer, if any.
    pub(crate) flag: Option<&'a str>,
}

/// The signals of one listener; shared by its requests, read by the admin server.
#[derive(Debug)]
pub(crate) struct ListenerSignals {
    started: Instant,
    recent: Mutex<Ring>,
    peers: Mutex<Peers>,
}

#[derive(Debug)]
struct Ring {
    buckets: Box<[Bucket; BUCKETS]>,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Which interval since `started` this bucket holds.
    interval: u64,
    requests: u64,
    successes: u64,
    /// Requests sent more than once.
    retried: u64,
    /// Attempts beyond the first.
    retries: u64,
    /// Local rejections by flag, in [`FLAGS`] order, then `other`.
    rejected: [u64; FLAGS.len() + 1],
    latency: [u32; LATENCY_BUCKETS],
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            interval: u64::MAX,
            requests: 0,
            successes: 0,
            retried: 0,
            retries: 0,
            rejected: [0; FLAGS.len() + 1],
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

#[derive(Debug, Default)]
struct Peers {
    counts: HashMap<Box<str>, u64>,
    other: u64,
}

impl ListenerSignals {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            recent: Mutex::new(Ring {
                buckets: Box::new(std::array::from_fn(|_| Bucket::default())),
            }),
            peers: Mutex::new(Peers::default()),
        }
    }

    fn interval(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started);
        u64::try_from(elapsed.as_millis() / BUCKET.as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a finished request at `now`.
    pub(crate) fn record(&self, now: Instant, outcome: Outcome<'_>) {
        let interval = self.interval(now);
        let mut ring = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut ring.buckets[(interval % BUCKETS as u64) as usize];
        if slot.interval != interval {
            *slot = Bucket {
                interval,
                ..Bucket::default()
            };
        }
        slot.requests += 1;
        slot.successes += u64::from(outcome.success);
        if outcome.attempts > 1 {
            slot.retried += 1;
            slot.retries += u64::from(outcome.attempts - 1);
        }
        if let Some(flag) = outcome.flag {
            let index = FLAGS.iter().position(|f| *f == flag).unwrap_or(FLAGS.len());
            slot.rejected[index] += 1;
        }
        slot.latency[latency_bucket(outcome.latency)] += 1;
    }

    /// Counts a request from `peer` (a verified identity), among at most [`MAX_PEERS`] named
    /// ones.
    pub(crate) fn peer(&self, peer: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = peers.counts.get_mut(peer) {
            *count += 1;
        } else if peers.counts.len() < MAX_PEERS {
            peers.counts.insert(peer.into(), 1);
        } else {
            peers.other += 1;
        }
    }

    /// The figures at `now`: the last minute, the last five minutes by 10-second interval,
    /// and the peers seen.
    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        let current = self.interval(now);
        let ring = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // The interval `back` steps before the current one, if the ring still holds it.
        let at = |back: u64| {
            let interval = current.checked_sub(back)?;
            let bucket = &ring.buckets[(interval % BUCKETS as u64) as usize];
            Some(bucket).filter(|b| b.interval == interval)
        };
        // The window: the current interval so far and the five before it, so it spans 50 to
        // 60 seconds; rates are over the time it really spans (less just after start).
        let mut window = Bucket::default();
        for back in 0..WINDOW as u64 {
            if let Some(bucket) = at(back) {
                window.add(bucket);
            }
        }
        let since_start = now.saturating_duration_since(self.started);
        let into_current =
            since_start.saturating_sub(BUCKET * u32::try_from(current).unwrap_or(u32::MAX));
        let span = (BUCKET * (WINDOW as u32 - 1) + into_current).min(since_start);
        let series = (0..BUCKETS as u64)
            .rev()
            .map(|back| {
                let bucket = at(back).cloned().unwrap_or_default();
                // The current interval has run only so long.
                let seconds = if back == 0 {
                    into_current.as_secs_f64().max(1.0)
                } else {
                    BUCKET.as_secs_f64()
                };
                Point {
                    seconds_ago: back * BUCKET.as_secs(),
                    rps: bucket.requests as f64 / seconds,
                    p99_ms: percentile(&bucket.latency, 0.99).map(|d| d.as_secs_f64() * 1e3),
                }
            })
            .collect();
        drop(ring);
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen: Vec<PeerCount> = peers
            .counts
            .iter()
            .map(|(identity, requests)| PeerCount {
                identity: identity.to_string(),
                requests: *requests,
            })
            .collect();
        seen.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.identity.cmp(&b.identity))
        });
        Snapshot {
            window: window.summary(span),
            series,
            peers: seen,
            other_peers: peers.other,
        }
    }
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.retried += other.retried;
        self.retries += other.retries;
        for (sum, n) in self.rejected.iter_mut().zip(other.rejected) {
            *sum += n;
        }
        for (sum, n) in self.latency.iter_mut().zip(other.latency) {
            *sum += n;
        }
    }

    fn summary(&self, span: Duration) -> Summary {
        let seconds = span.as_secs_f64().max(1.0);
        let share = |n: u64| (self.requests > 0).then(|| n as f64 / self.requests as f64);
        let ms = |q: f64| percentile(&self.latency, q).map(|d| d.as_secs_f64() * 1e3);
        Summary {
            window_seconds: span.as_secs_f64(),
            requests: self.requests,
            rps: self.requests as f64 / seconds,
            success_rate: share(self.successes),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            retries_per_second: self.retries as f64 / seconds,
            retried_share: share(self.retried),
            rejected: FLAGS
                .iter()
                .copied()
                .chain(["other"])
                .zip(self.rejected)
                .filter(|(_, n)| *n > 0)
                .map(|(reason, requests)| Rejected {
                    reason: reason.to_owned(),
                    requests,
                })
                .collect(),
        }
    }
}

/// The bucket of a latency.
fn latency_bucket(latency: Duration) -> usize {
    let micros = latency.as_secs_f64() * 1e6;
    if micros < 10.0 {
        return 0;
    }
    // Bucket i holds [10 us * 2^(i/4), 10 us * 2^((i+1)/4)).
    let index = ((micros / 10.0).log2() * 4.0).floor() as usize;
    index.min(LATENCY_BUCKETS - 1)
}

/// The upper bound of bucket `index`: what a percentile in it is reported as, so that a
/// figure errs on the slow side by at most one bucket's width (about 19 %).
fn bucket_bound(index: usize) -> Duration {
    Duration::from_secs_f64(10e-6 * 2f64.powf((index + 1) as f64 / 4.0))
}

/// The `q` quantile of a latency histogram; `None` when it is empty.
fn percentile(histogram: &[u32; LATENCY_BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = histogram.iter().map(|n| u64::from(*n)).sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest latency with at least q of them at or
    // below it.
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (index, n) in histogram.iter().enumerate() {
        seen += u64::from(*n);
        if seen >= rank {
            return Some(bucket_bound(index));
        }
    }
    Some(bucket_bound(LATENCY_BUCKETS - 1))
}

/// One listener's figures, as the status page and `/status.json` show them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snapshot {
    /// The last minute.
    pub(crate) window: Summary,
    /// The last five minutes by 10-second interval, oldest first.
    pub(crate) series: Vec<Point>,
    /// Peer identities seen (inbound), most requests first.
    pub(crate) peers: Vec<PeerCount>,
    /// Requests from peers beyond the first [`MAX_PEERS`].
    pub(crate) other_peers: u64,
}

/// The golden signals over a window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) window_seconds: f64,
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    /// Requests answered without a 5xx and without a local rejection; `None` without requests.
    pub(crate) success_rate: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) retries_per_second: f64,
    /// Requests sent more than once, as a share of requests.
    pub(crate) retried_share: Option<f64>,
    /// Local rejections by `x-sidecar-error` reason.
    pub(crate) rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rejected {
    pub(crate) reason: String,
    pub(crate) requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub(crate) seconds_ago: u64,
    pub(crate) rps: f64,
    pub(crate) p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerCount {
    pub(crate) identity: String,
    pub(crate) requests: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(latency_ms: u64) -> Outcome<'static> {
        Outcome {
            latency: Duration::from_millis(latency_ms),
            success: true,
            attempts: 1,
            flag: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_minute_has_rate_success_latency_retries_and_rejections() {
        let start = Instant::now();
        let signals = ListenerSignals::new(start);
        // 90 requests over the first 30 s: 80 fine at 1..80 ms, 6 retried once, 4 refused.
        for i in 1..=80u64 {
            signals.record(start + Duration::from_millis(i * 300), ok(i));
        }
        for _ in 0..6 {
            let retried = Outcome {
                attempts: 2,
                ..ok(5)
            };
            signals.record(start + Duration::from_secs(20), retried);
        }
        for flag in ["breaker-open", "breaker-open", "timeout", "made-up"] {
            let refused = Outcome {
                success: false,
                flag: Some(flag),
                ..ok(1)
            };
            signals.record(start + Duration::from_secs(25), refused);
        }
        let at = start + Duration::from_secs(30);
        let window = signals.snapshot(at).window;
        assert_eq!(window.requests, 90);
        assert_eq!(window.window_seconds, 30.0);
        assert!((window.rps - 3.0).abs() < 1e-9, "{}", window.rps);
        assert!((window.success_rate.unwrap() - 86.0 / 90.0).abs() < 1e-9);
        assert!((window.retries_per_second - 6.0 / 30.0).abs() < 1e-9);
        assert!((window.retried_share.unwrap() - 6.0 / 90.0).abs() < 1e-9);
        let rejected: Vec<(&str, u64)> = window
            .rejected
            .iter()
            .map(|r| (r.reason.as_str(), r.requests))
            .collect();
        assert_eq!(
            rejected,
            [("timeout", 1), ("breaker-open", 2), ("other", 1)]
        );
        // Percentiles err slow by at most one bucket (19 %).
        let p50 = window.p50_ms.unwrap();
        let p99 = window.p99_ms.unwrap();
        assert!((35.0..=35.0 * 1.19).contains(&p50), "p50 {p50}");
        assert!((80.0..=80.0 * 1.19).contains(&p99), "p99 {p99}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_keeps_the_last_minute_and_the_series_five() {
        let start = Instant::now();
        let signals = ListenerSignals::new(start);
        // One request a second for 400 s.
        for s in 0..400u64 {
            signals.record(start + Duration::from_secs(s), ok(10));
        }
        let snapshot = signals.snapshot(start + Duration::from_secs(400));
        // The current interval (400..410 s) holds nothing yet; the window is the 50 s before.
        assert_eq!(snapshot.window.requests, 50);
        assert_eq!(snapshot.window.window_seconds, 50.0);
        assert!((snapshot.window.rps - 1.0).abs() < 1e-9);
        assert_eq!(snapshot.series.len(), BUCKETS);
        assert_eq!(snapshot.series[0].seconds_ago, 290);
        assert_eq!(snapshot.series[BUCKETS - 1].seconds_ago, 0);
        assert!(
            snapshot.series[..BUCKETS - 1]
                .iter()
                .all(|p| (p.rps - 1.0).abs() < 1e-9)
        );
        // Nothing older than five minutes is left, however long it ran.
        let later = signals.snapshot(start + Duration::from_secs(1000));
        assert_eq!(later.window.requests, 0);
        assert_eq!(later.window.success_rate, None);
        assert!(
            later
                .series
                .iter()
                .all(|p| p.rps == 0.0 && p.p99_ms.is_none())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn peers_are_counted_up_to_a_bound() {
        let signals = ListenerSignals::new(Instant::now());
        for i in 0..(MAX_PEERS + 10) {
            signals.peer(&format!("spiffe://example.org/ns/shop/sa/caller-{i}"));
        }
        signals.peer("spiffe://example.org/ns/shop/sa/caller-0");
        let snapshot = signals.snapshot(Instant::now());
        assert_eq!(snapshot.peers.len(), MAX_PEERS);
        assert_eq!(snapshot.other_peers, 10);
        assert_eq!(
            snapshot.peers[0].identity,
            "spiffe://example.org/ns/shop/sa/caller-0"
        );
        assert_eq!(snapshot.peers[0].requests, 2);
    }

    #[test]
    fn latency_buckets_are_ordered_and_bounded() {
        let mut last = 0;
        for micros in [
            1,
            10,
            12,
            100,
            1_000,
            10_000,
            1_000_000,
            100_000_000,
            u64::MAX / 2,
        ] {
            let index = latency_bucket(Duration::from_micros(micros));
            assert!(index >= last && index < LATENCY_BUCKETS, "{micros}");
            assert!(micros > 200_000_000 || bucket_bound(index) > Duration::from_micros(micros));
            last = index;
        }
    }
}
