//! [`drop_at_deadline`]: a layer that drops an inner call because its deadline passed says so,
//! for as long as the drop takes, so that what the call held knows why it ends.

use std::cell::Cell;

thread_local! {
    static AT_DEADLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `drop`, which drops an inner call whose deadline has passed, with
/// [`dropped_at_deadline`] true on this thread meanwhile.
///
/// A timeout outside a circuit breaker drops the breaker's call when it fires; without this,
/// the breaker could not tell that from a caller who went away, and an upstream that never
/// answers would never trip it. With it, the breaker counts the call as a failure, as Envoy's
/// outlier detection counts a route timeout against the host of each request in flight.
///
/// ```
/// use resilience_core::{drop_at_deadline, dropped_at_deadline};
///
/// struct Call;
/// impl Drop for Call {
///     fn drop(&mut self) {
///         assert!(dropped_at_deadline());
///     }
/// }
/// drop_at_deadline(|| drop(Call));
/// assert!(!dropped_at_deadline());
/// ```
pub fn drop_at_deadline<R>(drop: impl FnOnce() -> R) -> R {
    /// Puts the flag back as it was, also if `drop` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            AT_DEADLINE.set(self.0);
        }
    }
    let _restore = Restore(AT_DEADLINE.replace(true));
    drop()
}

/// Whether what is being dropped on this thread now is dropped because its deadline passed
/// (inside [`drop_at_deadline`]).
#[must_use]
pub fn dropped_at_deadline() -> bool {
    AT_DEADLINE.get()
}
