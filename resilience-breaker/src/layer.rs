//! [`CircuitBreakerLayer`].

use crate::{
    BreakerHandle, CircuitBreaker, ConfigError, EjectionCap, ErrorsAsFailures, Mode, Policy,
};
use metrics::SharedString;
use resilience_core::Enforcement;
use std::sync::Arc;
use tower_layer::Layer;

/// Wraps services in a [`CircuitBreaker`].
///
/// By default each service the layer makes gets a breaker of its own (clones of that service
/// share it); [`shared`](Self::shared) makes every service use one given breaker instead.
/// Cloning the layer clones a policy, a name and a classifier.
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    policy: Policy,
    name: SharedString,
    mode: Mode,
    enforcement: Enforcement,
    classifier: C,
    shared: Option<BreakerHandle>,
    cap: Option<Arc<EjectionCap>>,
}

impl CircuitBreakerLayer {
    /// A fail-fast layer with `policy`, in which only `Err`s count as failures.
    ///
    /// # Errors
    ///
    /// If the policy is not valid: the [`ConfigError`] of [`Policy::validate`], which names the
    /// first field that is wrong and its value. A layer that exists holds a valid policy, so
    /// making services with it cannot fail.
    ///
    /// ```
    /// use resilience_breaker::{CircuitBreakerLayer, Policy};
    ///
    /// let err = CircuitBreakerLayer::new(Policy::default().failure_rate(1.5)).unwrap_err();
    /// assert_eq!((err.field(), err.value()), ("failure_rate", "1.5"));
    /// ```
    pub fn new(policy: Policy) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self {
            policy,
            name: SharedString::const_str("breaker"),
            mode: Mode::FailFast,
            enforcement: Enforcement::Enforce,
            classifier: ErrorsAsFailures,
            shared: None,
            cap: None,
        })
    }

    /// A fail-fast layer whose services all use `breaker`.
    pub fn shared(breaker: BreakerHandle) -> Self {
        Self {
            policy: breaker.machine().policy().clone(),
            name: SharedString::from(breaker.name().to_owned()),
            mode: Mode::FailFast,
            enforcement: Enforcement::Enforce,
            classifier: ErrorsAsFailures,
            shared: Some(breaker),
            cap: None,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Names the breakers in metrics and logs, for example the upstream's name.
    pub fn named(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the mode: [`Mode::FailFast`] (the default) or [`Mode::BackPressure`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// In [`Enforcement::Shadow`] mode the breaker trips, probes and closes as it would
    /// enforced, and refuses nothing: each call it would refuse goes through, is counted in
    /// `resilience_breaker_rejected_total{name, mode="shadow"}` and logged, and its outcome is
    /// not recorded (an enforced breaker would not have seen it). The default is enforced.
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.enforcement = enforcement;
        self
    }

    /// Puts every breaker this layer makes under `cap`: at most its share of them open at
    /// once (one per endpoint of a route, say).
    pub fn ejection_cap(mut self, cap: Arc<EjectionCap>) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Sets [`Mode::BackPressure`]: unready while open, for use under a balancer.
    pub fn back_pressure(self) -> Self {
        self.mode(Mode::BackPressure)
    }

    /// Replaces the classifier, for example with
    /// [`ServerErrorsAsFailures`](tower_http::classify::ServerErrorsAsFailures).
    pub fn classify<D>(self, classifier: D) -> CircuitBreakerLayer<D> {
        CircuitBreakerLayer {
            policy: self.policy,
            name: self.name,
            mode: self.mode,
            enforcement: self.enforcement,
            classifier,
            shared: self.shared,
            cap: self.cap,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let breaker = self.shared.clone().unwrap_or_else(|| {
            // Validated by `new`, or taken from a breaker that was.
            BreakerHandle::with_labels(self.name.clone(), Vec::new(), self.policy.clone())
        });
        if let Some(cap) = &self.cap {
            cap.join(&breaker);
        }
        CircuitBreaker::new(inner, breaker)
            .classify(self.classifier.clone())
            .mode(self.mode)
            .enforcement(self.enforcement)
    }
}
