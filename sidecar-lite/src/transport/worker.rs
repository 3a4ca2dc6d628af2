//! Which worker thread a call runs on, so that what a worker uses alone (its upstream
//! connections) is kept apart from what the other workers use.
//!
//! Each worker is a current-thread runtime: a connection made on it is driven by its thread,
//! and a request sent on a connection another worker made would wake that other thread twice
//! (the request, then the response). The pools therefore keep one set of connections per
//! worker, chosen by [`index`].

use std::{
    cell::Cell,
    sync::atomic::{AtomicUsize, Ordering},
};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The most workers any sidecar of this process has asked for: how many sets of connections a
/// pool made from now on keeps.
static MOST: AtomicUsize = AtomicUsize::new(1);

/// Marks the calling thread as worker `index` (the thread that starts a sidecar is worker 0).
#[cfg_attr(
    not(feature = "proxy"),
    allow(dead_code, reason = "the sidecar's workers call it")
)]
pub(crate) fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}

/// The worker the calling thread is; 0 outside the workers' threads.
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Makes room for `count` workers in the pools made from now on.
#[cfg_attr(
    not(feature = "proxy"),
    allow(dead_code, reason = "the sidecar's workers call it")
)]
pub(crate) fn reserve(count: usize) {
    MOST.fetch_max(count, Ordering::Relaxed);
}

/// How many sets of connections a pool made now keeps.
pub(crate) fn slots() -> usize {
    MOST.load(Ordering::Relaxed).max(1)
}
