//! [`RetryLayer`].

use crate::{Backoff, Budget, ConfigError, Retry};
use metrics::SharedString;
use std::sync::Arc;
use tower_layer::Layer;

/// Retries requests as its [`Policy`](crate::Policy) decides, within a number of attempts, a
/// backoff, and a [`Budget`] shared by every service the layer builds.
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryLayer<P> {
    settings: Arc<Settings<P>>,
}

/// Everything a retrying service and its futures share: one allocation, one reference count.
#[derive(Debug, Clone)]
pub(crate) struct Settings<P> {
    pub(crate) policy: P,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Arc<Budget>,
    pub(crate) name: SharedString,
}

impl<P> RetryLayer<P> {
    /// Retries what `policy` says, with the defaults: 3 attempts (counting the first), 25 ms
    /// doubling to 250 ms with full jitter, and a budget of 0.2 retries per request plus 10
    /// per second over 10 s.
    pub fn new(policy: P) -> Self {
        Self {
            settings: Arc::new(Settings {
                policy,
                max_attempts: 3,
                backoff: Backoff::default(),
                budget: Arc::new(Budget::default()),
                name: SharedString::const_str("retry"),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings<P>)) -> Self
    where
        P: Clone,
    {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// Sets the maximum number of attempts, counting the first (at least 1).
    pub fn attempts(self, max_attempts: u32) -> Result<Self, ConfigError>
    where
        P: Clone,
    {
        if max_attempts == 0 {
            return Err(ConfigError::new("attempts", 0, "must be at least 1"));
        }
        Ok(self.edit(|s| s.max_attempts = max_attempts))
    }

    /// Sets the backoff between attempts.
    pub fn backoff(self, backoff: Backoff) -> Self
    where
        P: Clone,
    {
        self.edit(|s| s.backoff = backoff)
    }

    /// The budget the services of this layer draw on: [`Budget::available`] is what it
    /// allows now.
    #[must_use]
    pub fn shared_budget(&self) -> &Arc<Budget> {
        &self.settings.budget
    }

    /// Sets the budget. Pass the same `Arc` to several layers to make them share one budget.
    pub fn budget(self, budget: Arc<Budget>) -> Self
    where
        P: Clone,
    {
        self.edit(|s| s.budget = budget)
    }

    /// Names the layer in metrics and logs, for example after the route it guards.
    pub fn named(self, name: impl Into<SharedString>) -> Self
    where
        P: Clone,
    {
        let name = name.into();
        self.edit(|s| s.name = name)
    }

    /// Changes the policy, keeping every other setting (and the shared budget).
    pub fn map_policy<Q>(self, f: impl FnOnce(P) -> Q) -> RetryLayer<Q>
    where
        P: Clone,
    {
        let settings = Arc::unwrap_or_clone(self.settings);
        RetryLayer {
            settings: Arc::new(Settings {
                policy: f(settings.policy),
                max_attempts: settings.max_attempts,
                backoff: settings.backoff,
                budget: settings.budget,
                name: settings.name,
            }),
        }
    }

    /// The policy, to hedge with the same one (see [`HedgeLayer`](crate::HedgeLayer)).
    #[must_use]
    pub fn policy(&self) -> &P {
        &self.settings.policy
    }

    /// The budget this layer's services share.
    #[must_use]
    pub fn get_budget(&self) -> &Arc<Budget> {
        &self.settings.budget
    }
}

impl<S, P> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_settings(inner, self.settings.clone())
    }
}
