//! [`RandomSource`]: where jitter comes from, injectable so that tests are exact.

/// A source of uniform random numbers in `[0, 1)`, for the jitter of backoff and of open
/// durations. The default, [`ThreadRandom`], draws from `rand`'s thread-local generator;
/// tests inject a fixed sequence (any `Fn() -> f64` is a source) so that delays are exact.
pub trait RandomSource: Send + Sync + 'static {
    /// The next number, in `[0, 1)`.
    fn next_f64(&self) -> f64;
}

/// The thread-local generator of the `rand` crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl RandomSource for ThreadRandom {
    fn next_f64(&self) -> f64 {
        rand::random::<f64>()
    }
}

impl<F: Fn() -> f64 + Send + Sync + 'static> RandomSource for F {
    fn next_f64(&self) -> f64 {
        self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_are_sources() {
        let fixed = || 0.25;
        assert_eq!(fixed.next_f64(), 0.25);
        let drawn = ThreadRandom.next_f64();
        assert!((0.0..1.0).contains(&drawn));
    }
}
