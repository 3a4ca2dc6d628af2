//! The attempts of one request, counted for its span: the retry layer sends each attempt
//! through [`count_attempt`], and the edge reads the count when the request ends.

use http::Request;
use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

/// Counts the attempts of one request on an outbound route, as a request extension: the
/// retry layer copies it onto every attempt, and the stack counts each one below the retry
/// layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts(Arc<AtomicU32>);

impl Attempts {
    /// Counts one more attempt.
    pub(crate) fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The attempts so far.
    #[must_use]
    pub(crate) fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts an attempt of `req`, if its span asked for attempts to be counted.
pub(crate) fn count_attempt<B>(req: Request<B>) -> Request<B> {
    if let Some(attempts) = req.extensions().get::<Attempts>() {
        attempts.record();
    }
    req
}
