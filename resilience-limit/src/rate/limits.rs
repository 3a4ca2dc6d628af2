//! [`Limits`]: the GCRA limiters of one rate limit, shared by every clone of its layer and
//! service: one over the whole service, and one per caller in a bounded set.

use super::{
    bounded::Bounded,
    clock::{TokioClock, TokioInstant},
    layer::Settings,
};
use crate::error::{RateLimited, Scope};
use governor::{
    RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use resilience_core::Enforcement;
use std::{
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;
type Keyed<K> = RateLimiter<K, Bounded<K>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// How often, at most, the callers' limiters are swept for ones that have refilled (and so
/// can be forgotten) when the set is full.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The limiters of one rate limit.
pub(crate) struct Limits<K: Hash + Eq + Clone> {
    pub(crate) name: Arc<str>,
    pub(crate) enforcement: Enforcement,
    service: Option<Direct>,
    callers: Option<Callers<K>>,
}

/// One limiter per caller, for at most `max` callers at once; callers new to a full set share
/// one more limiter of the same rate, and the callers in it keep their own.
struct Callers<K: Hash + Eq + Clone> {
    keyed: Keyed<K>,
    max: usize,
    last_sweep: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Limits<K> {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            name: settings.name.clone(),
            enforcement: settings.enforcement,
            service: settings
                .service
                .map(|rate| Direct::direct_with_clock(rate.quota(), TokioClock)),
            callers: settings.callers.map(|(rate, max)| Callers {
                keyed: Keyed::new(rate.quota(), Bounded::new(max), TokioClock),
                max: max.max(1),
                last_sweep: Mutex::new(None),
            }),
        }
    }

    /// Takes a call from `caller`'s limit and the service's. `Err` if either refuses, and
    /// the limit is enforced; a refusal in shadow mode is counted and logged only.
    pub(crate) fn admit(&self, caller: Option<&K>) -> Result<(), RateLimited> {
        match self.refusal(caller) {
            None => Ok(()),
            Some(refused) => self.refused(refused),
        }
    }

    /// Counts and logs a refusal, and refuses unless in shadow mode. Out of line, so that the
    /// admission every call takes stays small.
    #[cold]
    #[inline(never)]
    fn refused(&self, refused: RateLimited) -> Result<(), RateLimited> {
        let scope = refused.scope().as_str();
        let mode = self.enforcement.as_str();
        metrics::counter!(
            "resilience_rate_limited_total",
            "name" => self.name.to_string(),
            "scope" => scope,
            "mode" => mode,
        )
        .increment(1);
        tracing::debug!(
            name = &*self.name,
            scope,
            mode,
            retry_after = ?refused.retry_after(),
            "rate limited"
        );
        if self.enforcement.refuses() {
            Err(refused)
        } else {
            Ok(())
        }
    }

    fn refusal(&self, caller: Option<&K>) -> Option<RateLimited> {
        // The caller's own limit first: a caller over it does not spend the service's.
        if let (Some(callers), Some(caller)) = (&self.callers, caller)
            && let Err(wait) = callers.check(caller)
        {
            return Some(RateLimited::new(wait, Scope::Caller));
        }
        let service = self.service.as_ref()?;
        service.check().err().map(|not_until| {
            RateLimited::new(not_until.wait_time_from(TokioClock.now()), Scope::Service)
        })
    }
}

impl<K: Hash + Eq + Clone> Callers<K> {
    fn check(&self, caller: &K) -> Result<(), Duration> {
        let now = TokioClock.now();
        if self.keyed.len() >= self.max {
            self.sweep();
        }
        // Full of callers still inside their window: the newcomers share one limit, so memory
        // stays bounded (see `Bounded`).
        (self.keyed.check_key(caller)).map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets the callers whose limiter is full again (as if never used), at most once per
    /// [`SWEEP_EVERY`].
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|last| now.saturating_duration_since(last) < SWEEP_EVERY) {
                return;
            }
            *last = Some(now);
        }
        self.keyed.retain_recent();
    }
}
