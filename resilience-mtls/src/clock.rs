//! The one place where this crate reads the wall clock.

use std::time::SystemTime;

/// Now, by the wall clock.
///
/// Certificate validity is wall-clock time: `tokio::time` has no calendar, so expiry checks
/// cannot use it. Every function that checks validity takes the time as an argument; only the
/// convenience entry points (loading material, the rotation task, the dev CA) read it here.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock() -> SystemTime {
    SystemTime::now()
}
