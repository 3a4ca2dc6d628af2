//! [`TimeoutLayer`].

use crate::{Fixed, Timeout};
use metrics::SharedString;
use std::time::Duration;
use tower_layer::Layer;

/// Applies a timeout to requests; see [`Timeout`].
///
/// The layer is cheap configuration: cloning it clones a duration, a policy and a name.
#[derive(Debug, Clone)]
#[must_use]
pub struct TimeoutLayer<P = Fixed> {
    timeout: Duration,
    policy: P,
    name: SharedString,
}

impl TimeoutLayer {
    /// A layer that fails each request that is not done within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            policy: Fixed,
            name: SharedString::const_str("timeout"),
        }
    }
}

impl<P> TimeoutLayer<P> {
    /// Names the layer in metrics and logs, for example `"total"` or `"per-try"`.
    pub fn named(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces the policy that turns the configured timeout into each request's deadline.
    pub fn with_policy<Q>(self, policy: Q) -> TimeoutLayer<Q> {
        TimeoutLayer {
            timeout: self.timeout,
            policy,
            name: self.name,
        }
    }

    /// The policy that turns the configured timeout into each request's deadline.
    #[must_use]
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The configured timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S, P: Clone> Layer<S> for TimeoutLayer<P> {
    type Service = Timeout<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::with_policy(inner, self.timeout, self.policy.clone()).named(self.name.clone())
    }
}
