//! Sliding windows of call outcomes: the last N calls, or the last T of time in buckets.
//!
//! Both kinds are lock-free: recording an outcome is a few relaxed atomic operations and never
//! allocates. Under concurrency the counts are exact once every racing update has landed; a read
//! that races with an update may miss it, which only shifts a trip decision by one call.

use std::{
    sync::atomic::{
        AtomicU8, AtomicU32, AtomicU64,
        Ordering::{AcqRel, Acquire, Relaxed, Release},
    },
    time::Duration,
};
use tokio::time::Instant;

/// How many buckets a time-based window is cut into.
pub(crate) const TIME_BUCKETS: usize = 10;

/// The calls a sliding window holds, and how many of them failed or were slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls in the window.
    pub calls: u32,
    /// Calls in the window that failed.
    pub failures: u32,
    /// Calls in the window slower than the slow-call duration (failed or not).
    pub slow: u32,
}

impl Counts {
    /// The share of calls that failed, in `[0, 1]`; zero for an empty window.
    #[must_use]
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// The share of calls that were slow, in `[0, 1]`; zero for an empty window.
    #[must_use]
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// Which calls a breaker judges: the last N, or those of the last stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls (resilience4j's `COUNT_BASED`).
    Count(u32),
    /// The calls of the last stretch of time (resilience4j's `TIME_BASED`), kept in ten
    /// buckets: a bucket leaves the window whole, so the window covers between nine and ten
    /// tenths of the duration.
    Time(Duration),
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(Box<TimeWindow>),
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow, origin: Instant) -> Self {
        match kind {
            SlidingWindow::Count(n) => Self::Count(CountWindow::new(n as usize)),
            SlidingWindow::Time(d) => Self::Time(Box::new(TimeWindow::new(d, origin))),
        }
    }

    /// Whether recording needs the current time.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Records one call and returns the counts that include it.
    #[inline]
    pub(crate) fn record(&self, now: impl FnOnce() -> Instant, failed: bool, slow: bool) -> Counts {
        match self {
            Self::Count(w) => w.record(failed, slow),
            Self::Time(w) => w.record(now(), failed, slow),
        }
    }

    pub(crate) fn counts(&self, now: Instant) -> Counts {
        match self {
            Self::Count(w) => w.counts(),
            Self::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// A ring of the last N outcomes with running totals, on a cache line of its own: it is
/// written by every call, the breaker's state only read.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// The number of the next call. It wraps at 2^32: once every four billion calls a few slots
    /// are overwritten out of turn, which the running totals follow exactly.
    next: AtomicU32,
    /// `slots.len()`, and its magic number for [`fastmod`].
    len: u32,
    magic: u64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        let len = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
        Self {
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            len,
            magic: fastmod_magic(len),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    #[inline]
    fn record(&self, failed: bool, slow: bool) -> Counts {
        let code = RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let index = fastmod(self.next.fetch_add(1, Relaxed), self.magic, self.len) as usize;
        let old = self.slots[index].swap(code, Relaxed);
        if old == 0 {
            self.calls.fetch_add(1, Relaxed);
        }
        adjust(&self.failures, old & FAILED != 0, failed);
        adjust(&self.slow, old & SLOW != 0, slow);
        self.counts()
    }

    fn counts(&self) -> Counts {
        // A counter may dip below zero for an instant when two updates of one slot race; it is
        // read as a signed number and clamped.
        let max = self.len;
        let read = |c: &AtomicU32| (c.load(Relaxed) as i32).clamp(0, max as i32) as u32;
        Counts {
            calls: read(&self.calls),
            failures: read(&self.failures),
            slow: read(&self.slow),
        }
    }

    fn clear(&self) {
        for slot in &*self.slots {
            slot.store(0, Relaxed);
        }
        self.next.store(0, Relaxed);
        self.calls.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.slow.store(0, Relaxed);
    }
}

/// The magic number for `a % d` by [`fastmod`] (Lemire, Kaser and Kurz, "Faster remainder by
/// direct computation", 2019): a division costs tens of cycles on the hot path, this two
/// multiplications.
fn fastmod_magic(d: u32) -> u64 {
    (u64::MAX / u64::from(d)).wrapping_add(1)
}

/// `a % d`, exact for every 32-bit `a` and `d > 0`.
#[inline]
fn fastmod(a: u32, magic: u64, d: u32) -> u32 {
    let low = magic.wrapping_mul(u64::from(a));
    ((u128::from(low) * u128::from(d)) >> 64) as u32
}

#[inline]
fn adjust(counter: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            counter.fetch_add(1, Relaxed);
        }
        (true, false) => {
            counter.fetch_sub(1, Relaxed);
        }
        _ => {}
    }
}

/// A bucket's epoch while its first call of a new epoch empties it.
const RESETTING: u64 = u64::MAX;
/// How many times a call looks again at a bucket being emptied before giving up.
const RESET_WAIT: u32 = 100_000;

/// Buckets of outcomes, each covering a tenth of the window.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    origin: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; TIME_BUCKETS],
}

#[derive(Debug, Default)]
struct Bucket {
    /// The bucket's number since `origin`, plus one; zero means never used.
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl TimeWindow {
    fn new(duration: Duration, origin: Instant) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self {
            origin,
            bucket_nanos: (nanos / TIME_BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        // Capped below RESETTING, which no real epoch may equal.
        u64::try_from(since / u128::from(self.bucket_nanos))
            .unwrap_or(u64::MAX)
            .min(RESETTING - 2)
            + 1
    }

    fn record(&self, now: Instant, failed: bool, slow: bool) -> Counts {
        let epoch = self.epoch(now);
        let bucket = &self.buckets[(epoch % TIME_BUCKETS as u64) as usize];
        // The first call of a new epoch empties the bucket. It marks the bucket RESETTING while
        // it does, so no call of the new epoch can count itself in and then be wiped out; the
        // others wait for the epoch to be published. Bounded: a call that waits too long (its
        // resetter descheduled) is dropped, as one outcome among many.
        for spin in 0..RESET_WAIT {
            let seen = bucket.epoch.load(Acquire);
            if seen == epoch {
                bucket.calls.fetch_add(1, Relaxed);
                if failed {
                    bucket.failures.fetch_add(1, Relaxed);
                }
                if slow {
                    bucket.slow.fetch_add(1, Relaxed);
                }
                break;
            }
            if seen == RESETTING {
                if spin < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if seen > epoch {
                // The bucket already belongs to a later epoch: this call is too late to count.
                break;
            }
            if bucket
                .epoch
                .compare_exchange(seen, RESETTING, AcqRel, Acquire)
                .is_ok()
            {
                bucket.calls.store(0, Relaxed);
                bucket.failures.store(0, Relaxed);
                bucket.slow.store(0, Relaxed);
                bucket.epoch.store(epoch, Release);
            }
        }
        self.sum(epoch)
    }

    fn counts(&self, now: Instant) -> Counts {
        self.sum(self.epoch(now))
    }

    fn sum(&self, epoch: u64) -> Counts {
        let mut counts = Counts::default();
        for bucket in &self.buckets {
            let e = bucket.epoch.load(Relaxed);
            if e != 0 && e <= epoch && e + TIME_BUCKETS as u64 > epoch {
                // Saturating: a long window under heavy load may hold more than 2^32 calls.
                counts.calls = counts.calls.saturating_add(bucket.calls.load(Relaxed));
                counts.failures = counts
                    .failures
                    .saturating_add(bucket.failures.load(Relaxed));
                counts.slow = counts.slow.saturating_add(bucket.slow.load(Relaxed));
            }
        }
        counts
    }

    fn clear(&self) {
        for bucket in &self.buckets {
            bucket.epoch.store(0, Relaxed);
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_window_forgets_the_oldest_call() {
        let w = CountWindow::new(3);
        assert_eq!(w.record(true, false).failures, 1);
        w.record(false, true);
        let c = w.record(false, false);
        assert_eq!((c.calls, c.failures, c.slow), (3, 1, 1));
        // The failure is pushed out.
        let c = w.record(false, false);
        assert_eq!((c.calls, c.failures, c.slow), (3, 0, 1));
        let c = w.record(false, false);
        assert_eq!((c.calls, c.failures, c.slow), (3, 0, 0));
        w.clear();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn fastmod_is_the_remainder() {
        let mut x: u32 = 0x9e37_79b9;
        for d in (1..=1_000).chain([65_535, 65_536, 1_000_000, u32::MAX - 1, u32::MAX]) {
            let magic = fastmod_magic(d);
            for a in [0, 1, d - 1, d, d.wrapping_add(1), u32::MAX - 1, u32::MAX, x] {
                assert_eq!(fastmod(a, magic, d), a % d, "{a} % {d}");
            }
            // xorshift: a different pseudo-random numerator for each divisor.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
        }
    }

    #[test]
    fn the_time_window_drops_whole_buckets() {
        let t0 = Instant::now();
        let w = TimeWindow::new(Duration::from_secs(10), t0);
        w.record(t0, true, false);
        w.record(t0 + Duration::from_millis(999), false, false);
        let c = w.record(t0 + Duration::from_secs(9), false, true);
        assert_eq!((c.calls, c.failures, c.slow), (3, 1, 1));
        // At 10 s the first bucket (0..1 s) has left the window.
        let c = w.counts(t0 + Duration::from_secs(10));
        assert_eq!((c.calls, c.failures, c.slow), (1, 0, 1));
        // A bucket slot reused ten buckets later starts from zero.
        let c = w.record(t0 + Duration::from_secs(20), false, false);
        assert_eq!((c.calls, c.failures, c.slow), (1, 0, 0));
    }
}
