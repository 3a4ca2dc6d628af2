//! The retry budget: retries may not exceed a ratio of requests, over a sliding window.

use crate::ConfigError;
use std::{
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// A retry taken from a [`Budget`], by the epoch of the bucket it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Withdrawal(u64);

/// Fixed-point unit: one retry costs `UNIT`; each request deposits `ratio * UNIT`. With a
/// million units to a retry, every ratio with up to six decimals is exact (tower's `TpsBudget`
/// truncates `1 / ratio` and so over-allows: ratio 0.6 allows one retry per request, tower
/// issue 857).
const UNIT: i64 = 1_000_000;
/// The window is kept in this many buckets; deposits and withdrawals expire a bucket at a time.
const BUCKETS: usize = 10;

/// Bounds retries to `ratio` x requests over a `ttl` window, plus `min_per_second` x `ttl`.
///
/// This is the Finagle and Linkerd retry budget: every request deposits `ratio` of a retry,
/// every retry withdraws one, and both expire after `ttl`; a reserve of
/// `min_per_second * ttl` retries lets a service with little traffic retry at all. Shared by
/// every clone of a [`RetryLayer`](crate::RetryLayer) and every service it builds, so the
/// bound holds across all of them. The defaults are Linkerd's: 0.2, 10 per second, 10 s.
#[derive(Debug)]
pub struct Budget {
    deposit: i64,
    reserve: i64,
    ratio: f64,
    min_per_second: u32,
    ttl: Duration,
    bucket_nanos: u128,
    start: Instant,
    /// The index of the newest bucket, counted in bucket widths since `start`.
    newest: AtomicU64,
    /// Deposits minus withdrawals, in units, per bucket (a ring indexed by epoch).
    balance: [AtomicI64; BUCKETS],
    /// Serializes withdrawals and the expiry of old buckets. Deposits, one per request, take
    /// no lock while their bucket is current.
    expiry: Mutex<()>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10)).expect("the defaults are valid")
    }
}

impl Budget {
    /// A budget allowing `ratio` retries per request (0 to 1000) plus `min_per_second` retries
    /// per second, over a window of `ttl` (1 ms to 60 s).
    pub fn new(ratio: f64, min_per_second: u32, ttl: Duration) -> Result<Self, ConfigError> {
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(ConfigError::new(
                "budget.ratio",
                ratio,
                "must be between 0 and 1000",
            ));
        }
        if ttl < Duration::from_millis(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("{ttl:?}"),
                "must be between 1ms and 60s",
            ));
        }
        // Exact in integers: min_per_second * ttl (in ms) / 1000 retries, times UNIT.
        let reserve = i64::from(min_per_second) * ttl.as_millis() as i64 * (UNIT / 1000);
        Ok(Self {
            deposit: (ratio * UNIT as f64).round() as i64,
            reserve,
            ratio,
            min_per_second,
            ttl,
            bucket_nanos: (ttl.as_nanos() / BUCKETS as u128).max(1),
            start: Instant::now(),
            newest: AtomicU64::new(0),
            balance: std::array::from_fn(|_| AtomicI64::new(0)),
            expiry: Mutex::new(()),
        })
    }

    /// The ratio of retries to requests.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The retries per second allowed whatever the traffic.
    #[must_use]
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The window over which deposits and withdrawals count.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records a request: it earns `ratio` of a retry. Lock-free unless a bucket expires.
    pub fn deposit(&self) {
        self.deposit_at(None);
    }

    /// Records a request made at `stamp`, a reading of the clock taken a moment ago
    /// ([`Replay::stamped_now`](crate::Replay::stamped_now)), or now without one: a reading
    /// older than the newest bucket counts in the newest.
    pub(crate) fn deposit_at(&self, stamp: Option<Instant>) {
        let epoch = self.epoch(stamp.unwrap_or_else(Instant::now));
        if epoch == self.newest.load(Ordering::Acquire) {
            self.balance[slot(epoch)].fetch_add(self.deposit, Ordering::AcqRel);
        } else {
            let _expiry = self.lock();
            let newest = self.expire(epoch);
            self.balance[slot(newest)].fetch_add(self.deposit, Ordering::AcqRel);
        }
    }

    /// Takes one retry from the budget; `false` when there is none left.
    pub fn withdraw(&self) -> bool {
        self.take().is_some()
    }

    /// Takes one retry, returning where it was taken from, so that it can be given back.
    pub(crate) fn take(&self) -> Option<Withdrawal> {
        let _expiry = self.lock();
        let newest = self.expire(self.epoch(Instant::now()));
        // Under the lock no other withdrawal can spend the same balance; deposits racing with
        // this sum only add to it.
        if self.reserve + self.sum() >= UNIT {
            self.balance[slot(newest)].fetch_sub(UNIT, Ordering::AcqRel);
            Some(Withdrawal(newest))
        } else {
            None
        }
    }

    /// Gives back a retry taken by [`take`](Self::take) that was not made after all, into the
    /// bucket it came from; if that bucket has expired, the withdrawal has expired with it
    /// and there is nothing to give back.
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        let _expiry = self.lock();
        let newest = self.expire(self.epoch(Instant::now()));
        if withdrawal.0 + BUCKETS as u64 > newest {
            self.balance[slot(withdrawal.0)].fetch_add(UNIT, Ordering::AcqRel);
        }
    }

    /// The whole retries that could be taken now.
    #[must_use]
    pub fn available(&self) -> u64 {
        let _expiry = self.lock();
        self.expire(self.epoch(Instant::now()));
        u64::try_from((self.reserve + self.sum()) / UNIT).unwrap_or(0)
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.bucket_nanos) as u64
    }

    fn sum(&self) -> i64 {
        self.balance.iter().map(|b| b.load(Ordering::Acquire)).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guard protects no data of its own: a poisoned lock is as good as a clean one.
        self.expiry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Empties every bucket that has left the window by `epoch`, with the lock held, and
    /// returns the newest epoch.
    fn expire(&self, epoch: u64) -> u64 {
        let newest = self.newest.load(Ordering::Acquire);
        if epoch <= newest {
            return newest;
        }
        let expired = (epoch - newest).min(BUCKETS as u64);
        for step in 1..=expired {
            self.balance[slot(newest + step)].store(0, Ordering::Release);
        }
        self.newest.store(epoch, Ordering::Release);
        epoch
    }
}

/// The bucket of an epoch in the ring.
fn slot(epoch: u64) -> usize {
    (epoch % BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_rejected_naming_the_field() {
        let ttl = Duration::from_secs(10);
        assert_eq!(
            Budget::new(-0.1, 0, ttl).unwrap_err().field(),
            "budget.ratio"
        );
        assert_eq!(
            Budget::new(f64::NAN, 0, ttl).unwrap_err().field(),
            "budget.ratio"
        );
        assert_eq!(
            Budget::new(0.2, 0, Duration::ZERO).unwrap_err().field(),
            "budget.ttl"
        );
        assert_eq!(
            Budget::new(0.2, 0, Duration::from_secs(61))
                .unwrap_err()
                .field(),
            "budget.ttl"
        );
    }

    /// A request counted at a reading of the clock taken before the newest bucket began (a
    /// stamp from a layer outside) is counted in the newest bucket: it neither rewinds the
    /// window nor lands in a bucket that expires sooner.
    #[tokio::test(start_paused = true)]
    async fn a_stale_reading_counts_in_the_newest_bucket() {
        let budget = Budget::new(1.0, 0, Duration::from_secs(10)).unwrap();
        let stamped = Instant::now();
        tokio::time::advance(Duration::from_millis(5_500)).await;
        budget.deposit();
        budget.deposit_at(Some(stamped));
        assert_eq!(budget.sum(), 2 * UNIT);
        // The first bucket leaves the window; the one both requests are in does not.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw());
    }
}
