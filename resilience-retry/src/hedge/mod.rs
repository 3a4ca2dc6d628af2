//! Hedged requests: after a delay with no answer, the same request again, and the first
//! answer wins (Finagle's backup requests, gRPC A6's `hedgingPolicy`).

#[cfg(feature = "serde")]
mod config;
mod future;
mod latency;

#[cfg(feature = "serde")]
pub use config::{HedgeConfig, HedgeDelayConfig};
pub use future::HedgeFuture;

use crate::{Budget, Policy, Replay, spare::SpareSlot};
use latency::Latencies;
use metrics::SharedString;
use resilience_core::ConfigError;
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tower_layer::Layer;
use tower_service::Service;

/// When a copy is sent: a fixed delay after the previous one, or the latency that a
/// percentile of recent calls stayed under (never less than `min`; `min` until enough calls
/// are known).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// This long after the previous copy.
    Fixed(Duration),
    /// The `percentile` (0 to 100) of recent latencies, at least `min`.
    Percentile {
        /// Which percentile, such as 95.
        percentile: f64,
        /// The least delay, and the delay until enough latencies are known.
        min: Duration,
    },
}

/// Sends the request again, to what the inner service picks (another endpoint, behind a
/// balancer), when no answer has come within the [`HedgeDelay`]; the first answer wins and
/// the other copies are dropped, which cancels them (their connections see a reset or close).
///
/// - At most `max_attempts` copies in all, the first included.
/// - Each copy after the first spends one retry from the [`Budget`] (the same one a
///   [`RetryLayer`](crate::RetryLayer) would spend, when shared): hedging never adds more load
///   than the budget allows. Without budget, no copy is sent.
/// - Only requests the policy says may go twice at once ([`Replay::may_hedge`]: for HTTP, an
///   idempotent method, an `Idempotency-Key` or a gRPC call, with a body read whole within the
///   replay cap; never a request asking to switch protocols, such as a WebSocket handshake).
/// - As gRPC A6: an answer the policy would retry (a non-fatal status) does not win: the next
///   copy goes at once, or once the pause the answer asks for (`Retry-After`,
///   `grpc-retry-pushback-ms`) is over, and the last such answer is returned if nothing better
///   comes. A copy refused inside the process (an open breaker: `RefusedLocally`) does not win
///   either, and gives its retry back to the budget.
///
/// Metrics: `resilience_hedge_sent_total{name}` (copies sent after the first) and
/// `resilience_hedge_won_total{name}` (calls a later copy answered first); a debug event per
/// copy sent.
///
/// ```
/// use resilience_retry::{Budget, HedgeDelay, HedgeLayer, RetryIf};
/// use std::{sync::Arc, time::Duration};
/// use tower::{BoxError, Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let policy = RetryIf::new(|result: &Result<&'static str, BoxError>| result.is_err());
/// let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(10)))
///     .max_attempts(2)?
///     .budget(Arc::new(Budget::new(0.1, 10, Duration::from_secs(10))?));
/// // The first copy is slow, the second fast: the second answers.
/// let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let service = layer.layer(service_fn(move |_: u32| {
///     let first = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
///     async move {
///         let wait = if first { 1000 } else { 1 };
///         tokio::time::sleep(Duration::from_millis(wait)).await;
///         Ok::<_, BoxError>(if first { "slow" } else { "hedge" })
///     }
/// }));
/// assert_eq!(service.oneshot(7).await?, "hedge");
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct HedgeLayer<P> {
    settings: Arc<Settings<P>>,
}

#[derive(Clone)]
pub(crate) struct Settings<P> {
    pub(crate) policy: P,
    pub(crate) delay: HedgeDelay,
    pub(crate) max_attempts: u32,
    pub(crate) budget: Arc<Budget>,
    pub(crate) latencies: Option<Arc<Latencies>>,
    pub(crate) name: SharedString,
}

impl<P> Settings<P> {
    /// How long after the previous copy the next one goes.
    pub(crate) fn delay(&self) -> Duration {
        match self.delay {
            HedgeDelay::Fixed(delay) => delay,
            HedgeDelay::Percentile { min, .. } => self
                .latencies
                .as_ref()
                .and_then(|latencies| latencies.current())
                .map_or(min, |p| p.max(min)),
        }
    }
}

impl<P> HedgeLayer<P> {
    /// Hedges as `policy` and `delay` say, with the defaults: 2 copies at most, and a budget of
    /// 0.2 per request plus 10 per second over 10 s (the retry layer's default).
    pub fn new(policy: P, delay: HedgeDelay) -> Self {
        let latencies = match delay {
            HedgeDelay::Fixed(_) => None,
            HedgeDelay::Percentile { percentile, .. } => Some(Arc::new(Latencies::new(percentile))),
        };
        Self {
            settings: Arc::new(Settings {
                policy,
                delay,
                max_attempts: 2,
                budget: Arc::new(Budget::default()),
                latencies,
                name: SharedString::const_str("hedge"),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings<P>)) -> Self
    where
        P: Clone,
    {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// At most `n` copies in all, the first included: 2 to 5 (gRPC A6's cap).
    pub fn max_attempts(self, n: u32) -> Result<Self, ConfigError>
    where
        P: Clone,
    {
        if !(2..=5).contains(&n) {
            return Err(ConfigError::new(
                "max_attempts",
                n,
                "must be between 2 and 5",
            ));
        }
        Ok(self.with(|s| s.max_attempts = n))
    }

    /// The budget that copies spend: share a [`RetryLayer`](crate::RetryLayer)'s
    /// ([`shared_budget`](crate::RetryLayer::shared_budget)) to bound both together.
    pub fn budget(self, budget: Arc<Budget>) -> Self
    where
        P: Clone,
    {
        self.with(|s| s.budget = budget)
    }

    /// The name in metrics and logs, such as the route's.
    pub fn named(self, name: impl Into<SharedString>) -> Self
    where
        P: Clone,
    {
        let name = name.into();
        self.with(|s| s.name = name)
    }

    /// The budget copies spend.
    #[must_use]
    pub fn shared_budget(&self) -> &Arc<Budget> {
        &self.settings.budget
    }
}

impl<P> Clone for HedgeLayer<P> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
        }
    }
}

impl<P> fmt::Debug for HedgeLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("delay", &self.settings.delay)
            .field("max_attempts", &self.settings.max_attempts)
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

impl<S, P> Layer<S> for HedgeLayer<P> {
    type Service = Hedge<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            spare: SpareSlot::new(),
            settings: self.settings.clone(),
        }
    }
}

/// Hedges requests as its layer says; see [`HedgeLayer`].
pub struct Hedge<S, P> {
    inner: S,
    // What copies go through, with the settings.
    spare: SpareSlot<S, Arc<Settings<P>>>,
    settings: Arc<Settings<P>>,
}

impl<S: Clone, P> Clone for Hedge<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            spare: self.spare.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Hedge<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, P, Req> Service<Req> for Hedge<S, P>
where
    P: Replay<Req>,
    S: Service<<P as Replay<Req>>::Request> + Clone,
    P: Policy<<P as Replay<Req>>::Request, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HedgeFuture<S, P, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (first, kept) = self.settings.policy.prepare(req);
        let stamp = self.settings.policy.stamped_now(&first);
        self.settings.budget.deposit_at(stamp);
        // The copies go through a clone of the spare, made ready when one is due.
        let spare = self.spare.share(&self.inner, &self.settings);
        let future = self.inner.call(first);
        HedgeFuture::new(future, spare, kept)
    }
}
