//! [`Bounded`]: the callers' GCRA states, at most a fixed number of them. A caller already in
//! the set keeps its own state when the set is full; only callers new to a full set share one
//! more state. governor's own keyed stores have no bound, and cannot tell a known key from a
//! new one from outside.

use governor::{
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore, keyed::ShrinkableKeyedStateStore},
};
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

/// At most `max` callers' states, and the one the newcomers to a full set share.
pub(super) struct Bounded<K> {
    callers: Mutex<HashMap<K, Caller>>,
    overflow: InMemoryState,
    max: usize,
}

/// One caller's state, with its theoretical arrival time kept aside: governor keeps its own
/// private, and [`Bounded::retain_recent`] needs it.
#[derive(Default)]
struct Caller {
    state: InMemoryState,
    arrival: AtomicU64,
}

impl<K> Bounded<K> {
    pub(super) fn new(max: usize) -> Self {
        Self {
            callers: Mutex::new(HashMap::new()),
            overflow: InMemoryState::default(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Caller>> {
        // A map of atomics, consistent after every statement.
        self.callers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for Bounded<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut callers = self.lock();
        // A known caller, the usual case: one lookup, and its key is not copied.
        if let Some(caller) = callers.get(key) {
            return caller.measure(f);
        }
        if callers.len() >= self.max {
            drop(callers);
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        callers.entry(key.clone()).or_default().measure(f)
    }
}

impl Caller {
    /// governor's measurement of this caller's state, its arrival time kept aside.
    fn measure<T, F, E>(&self, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.state
            .measure_and_replace(&NotKeyed::NonKey, |earlier| {
                let (outcome, arrival) = f(earlier)?;
                self.arrival.store(arrival.as_u64(), Ordering::Relaxed);
                Ok((outcome, arrival))
            })
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Bounded<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = drop_below.as_u64();
        self.lock()
            .retain(|_, caller| caller.arrival.load(Ordering::Relaxed) > below);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
