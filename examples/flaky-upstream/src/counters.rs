//! What the upstream has done so far, counted as it happens.

use std::{
    collections::HashSet,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

/// Live counters, shared by every connection of one upstream.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) mid_body_resets: AtomicU64,
    pub(crate) posts: AtomicU64,
    pub(crate) duplicate_ids: AtomicU64,
    /// Every `x-request-id` seen, to count a request that arrives twice.
    pub(crate) seen_ids: Mutex<HashSet<Box<[u8]>>>,
    pub(crate) hangs: AtomicU64,
    pub(crate) slow_bodies: AtomicU64,
    pub(crate) invalid_http: AtomicU64,
    pub(crate) idle_closes: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Connections accepted.
    pub connections: u64,
    /// Requests received (each numbered in this order for the fault schedule).
    pub requests: u64,
    /// Requests answered `200 OK` at full speed.
    pub ok: u64,
    /// Requests answered with the injected error status.
    pub errors: u64,
    /// Connections reset instead of answering.
    pub resets: u64,
    /// Connections reset half-way through a response body.
    pub mid_body_resets: u64,
    /// Requests with the POST method.
    pub posts: u64,
    /// Requests whose `x-request-id` had been seen before: one request sent twice.
    pub duplicate_ids: u64,
    /// Requests left unanswered.
    pub hangs: u64,
    /// Requests answered with a body one byte at a time.
    pub slow_bodies: u64,
    /// Requests answered with bytes that are not HTTP.
    pub invalid_http: u64,
    /// Keep-alive connections closed for being idle.
    pub idle_closes: u64,
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
            ok: self.ok.load(Relaxed),
            errors: self.errors.load(Relaxed),
            resets: self.resets.load(Relaxed),
            mid_body_resets: self.mid_body_resets.load(Relaxed),
            posts: self.posts.load(Relaxed),
            duplicate_ids: self.duplicate_ids.load(Relaxed),
            hangs: self.hangs.load(Relaxed),
            slow_bodies: self.slow_bodies.load(Relaxed),
            invalid_http: self.invalid_http.load(Relaxed),
            idle_closes: self.idle_closes.load(Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Relaxed) + 1
    }

    /// Records a request's id; counts it as a duplicate if it came before.
    pub(crate) fn see_id(&self, id: &[u8]) {
        let fresh = self
            .seen_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.into());
        if !fresh {
            Self::bump(&self.duplicate_ids);
        }
    }
}
