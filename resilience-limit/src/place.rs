//! [`Place`]: a completed call's place under one of the concurrency limits, for a [`Release`]
//! policy to hold as long as it says.
//!
//! [`Release`]: crate::Release

use crate::{FixedPermit, Permit, adaptive::HeldPlace};

/// A call's place under one of this crate's concurrency limits, once the call has been
/// answered (and its answer recorded): given back when dropped.
#[derive(Debug)]
pub struct Place {
    _held: Held,
}

/// One pointer each, so that what holds a place grows by two words, not by a whole permit.
#[derive(Debug)]
enum Held {
    /// A call under no concurrency limit (a rate limit's).
    Nothing,
    Fixed(#[allow(dead_code, reason = "held for its drop")] FixedPermit),
    Adaptive(#[allow(dead_code, reason = "held for its drop")] HeldPlace),
}

impl From<()> for Place {
    fn from((): ()) -> Self {
        Self {
            _held: Held::Nothing,
        }
    }
}

impl From<FixedPermit> for Place {
    fn from(permit: FixedPermit) -> Self {
        Self {
            _held: Held::Fixed(permit),
        }
    }
}

impl From<Permit> for Place {
    fn from(permit: Permit) -> Self {
        Self {
            _held: Held::Adaptive(permit.into_place()),
        }
    }
}
