//! Error types.

use metrics::SharedString;
use std::{error::Error, fmt, time::Duration};

/// The request did not complete before its deadline.
///
/// Returned (boxed, as [`BoxError`](crate::BoxError)) by [`Timeout`](crate::Timeout); check for it with
/// `err.is::<Elapsed>()`. It names the layer whose deadline it was (see
/// [`TimeoutLayer::named`](crate::TimeoutLayer::named)): when an inner timeout (a per-try
/// one) fires at the very deadline of an outer one (the total), the outer one reports, since
/// its deadline is the one that bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    layer: SharedString,
    after: Duration,
}

impl Elapsed {
    pub(crate) const fn new(layer: SharedString, after: Duration) -> Self {
        Self { layer, after }
    }

    /// How long the request was allowed to take by this layer. Zero when the deadline had
    /// already passed before the request was sent.
    #[must_use]
    pub const fn after(&self) -> Duration {
        self.after
    }

    /// The name of the timeout layer that fired: `timeout` unless it was
    /// [named](crate::TimeoutLayer::named) (`total`, `per-try`, ...).
    #[must_use]
    pub fn layer(&self) -> &str {
        &self.layer
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after.is_zero() {
            write!(
                f,
                "timed out: the deadline had passed before the request was sent (layer `{}`)",
                self.layer
            )
        } else {
            write!(
                f,
                "timed out: no answer within {:?} (layer `{}`)",
                self.after, self.layer
            )
        }
    }
}

impl Error for Elapsed {}
