//! [`AdaptiveConcurrencyLayer`]: a concurrency limit that finds itself from latency.

use super::{AdaptiveConcurrency, Algorithm, limiter::Admission};
use crate::future::AtResponse;
use resilience_core::{ConfigError, Enforcement};
use std::{fmt, marker::PhantomData, sync::Arc};
use tower_layer::Layer;

/// Admits as many calls at once as the limit allows and refuses the rest at once with
/// [`Overloaded`](crate::Overloaded) (never queued); the limit moves between `min` and `max`
/// as the [`Algorithm`] reads the calls' latencies and failures. Every clone of the layer,
/// and every service it makes, shares one limit.
///
/// The algorithm sees a window of calls at a time (at least 100 ms and ten calls, or 1 s and
/// one). Every failure counts; of the successes, a quiet limit times each one, and a busy one
/// forty to eighty a window (at most one call in 256), so that a busy limit costs no more per
/// call than a fixed one: one atomic add to admit a call and one to release it.
///
/// ```
/// use resilience_limit::{AdaptiveConcurrencyLayer, Algorithm, Overloaded};
/// use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = AdaptiveConcurrencyLayer::new(Algorithm::default()).limits(1, 1, 100)?;
/// let mut service = layer.layer(service_fn(|n: u32| async move {
///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///     Ok::<_, BoxError>(n)
/// }));
/// let first = service.ready().await?.call(1); // in flight: the limit's worth
/// let refused = service.ready().await?.call(2).await.unwrap_err();
/// assert!(refused.is::<Overloaded>());
/// assert_eq!(first.await?, 1);
/// assert_eq!(layer.handle().in_flight(), 0);
/// # Ok(())
/// # }
/// ```
///
/// A call's place is given back when the service answers it, as `R` ([`AtResponse`], the
/// default) says; with the `http` feature, `until_body_end` holds it until the response's
/// body ends. The latency the algorithm reads is still the answer's.
#[must_use]
pub struct AdaptiveConcurrencyLayer<R = AtResponse> {
    settings: Settings,
    limiter: Arc<Admission>,
    release: PhantomData<fn() -> R>,
}

impl<R> Clone for AdaptiveConcurrencyLayer<R> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            limiter: self.limiter.clone(),
            release: PhantomData,
        }
    }
}

/// What an [`AdaptiveConcurrencyLayer`] was built with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) enforcement: Enforcement,
    pub(crate) algorithm: Algorithm,
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl AdaptiveConcurrencyLayer {
    /// A limit moved by `algorithm`, starting at 20, between 1 and 1000 (Netflix's initial
    /// limit; see [`limits`](Self::limits)).
    pub fn new(algorithm: Algorithm) -> Self {
        Self::with(Settings {
            name: Arc::from("default"),
            enforcement: Enforcement::Enforce,
            algorithm,
            initial: 20,
            min: 1,
            max: 1000,
        })
    }
}

impl<R> AdaptiveConcurrencyLayer<R> {
    fn with(settings: Settings) -> Self {
        let limiter = Arc::new(Admission::new(&settings));
        Self {
            settings,
            limiter,
            release: PhantomData,
        }
    }

    /// This limit (the same one, shared), each call's place given back as `R2` says.
    pub fn release<R2>(self) -> AdaptiveConcurrencyLayer<R2> {
        AdaptiveConcurrencyLayer {
            settings: self.settings,
            limiter: self.limiter,
            release: PhantomData,
        }
    }

    /// Starts at `initial`, and stays between `min` (at least 1) and `max`.
    pub fn limits(self, initial: usize, min: usize, max: usize) -> Result<Self, ConfigError> {
        if min == 0 {
            return Err(ConfigError::new("min_limit", min, "must be at least 1"));
        }
        if max < min {
            return Err(ConfigError::new(
                "max_limit",
                max,
                "must be at least min_limit",
            ));
        }
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::new(
                "initial_limit",
                initial,
                "must be between min_limit and max_limit",
            ));
        }
        Ok(Self::with(Settings {
            initial,
            min,
            max,
            ..self.settings
        }))
    }

    /// The name in metrics (`resilience_concurrency_limit{name}`,
    /// `resilience_concurrency_shed_total{name}`) and logs. Default `default`.
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        Self::with(Settings {
            name: name.into(),
            ..self.settings
        })
    }

    /// In [`Enforcement::Shadow`] mode nothing is refused: each call over the limit is
    /// counted (`mode="shadow"`) and logged, and the limit still learns. Default: enforced.
    pub fn enforcement(self, enforcement: Enforcement) -> Self {
        Self::with(Settings {
            enforcement,
            ..self.settings
        })
    }

    /// A handle on the limit, to read it.
    pub fn handle(&self) -> AdaptiveHandle {
        AdaptiveHandle(self.limiter.clone())
    }
}

impl<S, R> Layer<S> for AdaptiveConcurrencyLayer<R> {
    type Service = AdaptiveConcurrency<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        self.limiter.publish();
        AdaptiveConcurrency::new(inner, self.limiter.clone())
    }
}

impl<R> fmt::Debug for AdaptiveConcurrencyLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("settings", &self.settings)
            .field("limit", &self.limiter.limit())
            .finish()
    }
}

/// Reads an adaptive limit: what it is now, and how many calls it has in flight.
#[derive(Debug, Clone)]
pub struct AdaptiveHandle(Arc<Admission>);

impl AdaptiveHandle {
    /// The limit now.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.0.limit()
    }

    /// Calls in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }
}
