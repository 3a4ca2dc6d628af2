//! [`RateLimitLayer`]: a rate limit over a service, and optionally one per caller.

use super::{Rate, RateLimit, limits::Limits};
use resilience_core::Enforcement;
use std::{fmt, hash::Hash, sync::Arc};
use tower_layer::Layer;

/// Which caller a request comes from, for per-caller limits. Any `Fn(&Req) -> Option<K>` is
/// one; `None` (no caller known) is held to the service's limit only.
pub trait CallerKey<Req, K> {
    /// The caller of `req`, if known.
    fn caller(&self, req: &Req) -> Option<K>;
}

impl<Req, K, F: Fn(&Req) -> Option<K>> CallerKey<Req, K> for F {
    fn caller(&self, req: &Req) -> Option<K> {
        self(req)
    }
}

/// No per-caller limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallers;

impl<Req> CallerKey<Req, ()> for NoCallers {
    fn caller(&self, _: &Req) -> Option<()> {
        None
    }
}

/// Refuses calls beyond a rate, at once, with [`RateLimited`](crate::RateLimited) (never
/// queued): over the whole service, and, with [`per_caller`](Self::per_caller), per caller.
/// Every clone of the layer, and every service it makes, shares the same limiters.
///
/// ```
/// use resilience_limit::{Rate, RateLimitLayer, RateLimited};
/// use tower::{BoxError, Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = RateLimitLayer::new(Rate::new(10.0, 2)?);
/// let service = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// assert_eq!(service.clone().oneshot(1).await?, 1);
/// assert_eq!(service.clone().oneshot(2).await?, 2);
/// let refused = service.clone().oneshot(3).await.unwrap_err();
/// let refused = refused.downcast_ref::<RateLimited>().unwrap();
/// assert_eq!(refused.retry_after().as_millis(), 100); // one call every 100 ms
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RateLimitLayer<K: Hash + Eq + Clone = (), F = NoCallers> {
    settings: Settings,
    /// Built from `settings` by each builder method, so that every clone shares it.
    limits: Arc<Limits<K>>,
    caller: F,
}

/// What a [`RateLimitLayer`] was built with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) enforcement: Enforcement,
    pub(crate) service: Option<Rate>,
    pub(crate) callers: Option<(Rate, usize)>,
}

impl RateLimitLayer {
    /// At most `rate` calls over the whole service.
    pub fn new(rate: Rate) -> Self {
        Self::with(Settings {
            name: Arc::from("default"),
            enforcement: Enforcement::Enforce,
            service: Some(rate),
            callers: None,
        })
    }

    /// No limit over the whole service: for [`per_caller`](Self::per_caller) limits only.
    pub fn unlimited() -> Self {
        Self::with(Settings {
            name: Arc::from("default"),
            enforcement: Enforcement::Enforce,
            service: None,
            callers: None,
        })
    }

    /// Each caller, as `caller` tells it from the request, is held to `rate` too. At most
    /// `max_callers` callers have a limiter of their own at once (a caller whose limiter has
    /// refilled is forgotten); beyond them, while the set is full, calls share one more
    /// limiter of `rate`, so memory stays bounded whoever calls.
    pub fn per_caller<K: Hash + Eq + Clone, F>(
        self,
        rate: Rate,
        max_callers: usize,
        caller: F,
    ) -> RateLimitLayer<K, F> {
        let settings = Settings {
            callers: Some((rate, max_callers)),
            ..self.settings
        };
        RateLimitLayer {
            limits: Arc::new(Limits::new(&settings)),
            settings,
            caller,
        }
    }
}

impl RateLimitLayer {
    /// The same limits, with `caller` telling callers apart but no limit per caller (for a
    /// config whose `per_caller` is unset).
    #[cfg(feature = "serde")]
    pub(crate) fn without_callers<K: Hash + Eq + Clone, F>(
        self,
        caller: F,
    ) -> RateLimitLayer<K, F> {
        RateLimitLayer {
            limits: Arc::new(Limits::new(&self.settings)),
            settings: self.settings,
            caller,
        }
    }
}

impl<K: Hash + Eq + Clone> RateLimitLayer<K, NoCallers> {
    fn with(settings: Settings) -> Self {
        Self {
            limits: Arc::new(Limits::new(&settings)),
            settings,
            caller: NoCallers,
        }
    }
}

impl<K: Hash + Eq + Clone, F> RateLimitLayer<K, F> {
    /// The name in metrics (`resilience_rate_limited_total{name}`) and logs. Default
    /// `default`.
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self.limits = Arc::new(Limits::new(&self.settings));
        self
    }

    /// In [`Enforcement::Shadow`] mode nothing is refused: each call the limit would refuse
    /// is counted (`mode="shadow"`) and logged instead. Default: enforced.
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.settings.enforcement = enforcement;
        self.limits = Arc::new(Limits::new(&self.settings));
        self
    }
}

impl<S, K: Hash + Eq + Clone, F: Clone> Layer<S> for RateLimitLayer<K, F> {
    type Service = RateLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limits.clone(), self.caller.clone())
    }
}

impl<K: Hash + Eq + Clone, F: Clone> Clone for RateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            limits: self.limits.clone(),
            caller: self.caller.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, F> fmt::Debug for RateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
