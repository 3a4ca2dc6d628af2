//! The one `Retry-After` rule of every local reply.

use std::time::Duration;

/// A wait as a `Retry-After` header gives it: whole seconds, rounded up and at least 1
/// (saturating), so that a client that waits that long is not turned away again. A reply whose
/// wait is not known carries no `Retry-After` at all rather than a guess.
#[must_use]
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_never_below_one_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(4)), 4);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }
}
