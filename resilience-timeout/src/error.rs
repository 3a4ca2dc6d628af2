//! Error types.

use std::{error::Error, fmt, time::Duration};

/// The request did not complete before its deadline.
///
/// Returned (boxed, as [`BoxError`](crate::BoxError)) by [`Timeout`](crate::Timeout); check for it with
/// `err.is::<Elapsed>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    pub(crate) const fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long the request was allowed to take. Zero when the deadline had already passed
    /// before the request was sent.
    #[must_use]
    pub const fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after.is_zero() {
            f.write_str("deadline exceeded before the request was sent")
        } else {
            write!(f, "request timed out after {:?}", self.after)
        }
    }
}

impl Error for Elapsed {}
