//! Keyed breakers: one breaker per key (by default the request's authority), created on
//! demand, bounded in number, idle ones dropped.

use crate::{
    BoxError, BreakerHandle, Classify, ConfigError, ErrorsAsFailures, Policy, ResponseFuture,
    future::PermitGuard,
};
use http::{Request, header::HOST, uri::Authority};
use metrics::{Label, SharedString};
use std::{
    collections::HashMap,
    fmt::{self, Display},
    hash::Hash,
    marker::PhantomData,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Picks the breaker for a request.
pub trait KeyOf<Req> {
    /// The key: one breaker per distinct value. Its text labels the breaker's metrics.
    type Key: Clone + Eq + Hash + Display + Send + Sync + 'static;

    /// The key of `req`.
    fn key_of(&self, req: &Req) -> Self::Key;
}

impl<F, Req, Q> KeyOf<Req> for F
where
    F: Fn(&Req) -> Q,
    Q: Clone + Eq + Hash + Display + Send + Sync + 'static,
{
    type Key = Q;

    fn key_of(&self, req: &Req) -> Q {
        self(req)
    }
}

/// The default key: the request URI's authority, else its `Host` header, else `unknown`
/// (one breaker shared by all requests that name no authority).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByAuthority;

impl<B> KeyOf<Request<B>> for ByAuthority {
    type Key = Authority;

    fn key_of(&self, req: &Request<B>) -> Authority {
        if let Some(authority) = req.uri().authority() {
            return authority.clone();
        }
        req.headers()
            .get(HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .unwrap_or_else(|| Authority::from_static("unknown"))
    }
}

/// The breakers of a keyed service, by key: to look at or control one endpoint's breaker.
///
/// At most [`max_breakers`](KeyedCircuitBreakerLayer::max_breakers) are kept. Whenever a new key
/// comes, breakers unused for the [`idle_timeout`](KeyedCircuitBreakerLayer::idle_timeout) are
/// dropped, and if the map is still full the least recently used one is too;
/// [`evict_idle`](Self::evict_idle) sweeps on demand. A dropped breaker's endpoint starts afresh, Closed, on its next request.
pub struct BreakerMap<Q> {
    inner: Arc<MapInner<Q>>,
}

struct MapInner<Q> {
    name: SharedString,
    policy: Policy,
    max: usize,
    idle: Duration,
    origin: Instant,
    map: RwLock<HashMap<Q, Entry>>,
}

struct Entry {
    breaker: BreakerHandle,
    /// Nanoseconds from `origin` to the last use.
    last_used: AtomicU64,
}

impl<Q> Clone for BreakerMap<Q> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<Q> fmt::Debug for BreakerMap<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerMap")
            .field("name", &self.inner.name)
            .field("max", &self.inner.max)
            .field("idle", &self.inner.idle)
            .finish_non_exhaustive()
    }
}

impl<Q: Clone + Eq + Hash + Display> BreakerMap<Q> {
    /// An empty map of breakers named `name`, each with `policy`, holding at most `max` (at
    /// least one) and dropping those unused for `idle`.
    ///
    /// # Errors
    ///
    /// If the policy is not valid: the [`ConfigError`] of [`Policy::validate`], which names the
    /// first field that is wrong and its value.
    pub fn new(
        name: impl Into<SharedString>,
        policy: Policy,
        max: usize,
        idle: Duration,
    ) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self::with_valid_policy(name.into(), policy, max, idle))
    }

    /// [`new`](Self::new) with a policy that has passed [`Policy::validate`].
    fn with_valid_policy(name: SharedString, policy: Policy, max: usize, idle: Duration) -> Self {
        Self {
            inner: Arc::new(MapInner {
                name,
                policy,
                max: max.max(1),
                idle,
                origin: Instant::now(),
                map: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The breaker of `key`, if there is one.
    #[must_use]
    pub fn get(&self, key: &Q) -> Option<BreakerHandle> {
        self.read().get(key).map(|e| e.breaker.clone())
    }

    /// The breaker of `key`, created if there is none.
    pub fn breaker(&self, key: &Q) -> BreakerHandle {
        let now = self.nanos(Instant::now());
        if let Some(entry) = self.read().get(key) {
            entry.last_used.store(now, Relaxed);
            return entry.breaker.clone();
        }
        self.insert(key, now)
    }

    #[cold]
    fn insert(&self, key: &Q, now: u64) -> BreakerHandle {
        let mut map = self
            .inner
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = map.get(key) {
            entry.last_used.store(now, Relaxed);
            return entry.breaker.clone();
        }
        // New keys are rare next to calls: sweep out the idle breakers on each one.
        let idle = u64::try_from(self.inner.idle.as_nanos()).unwrap_or(u64::MAX);
        map.retain(|_, e| now.saturating_sub(e.last_used.load(Relaxed)) < idle);
        if map.len() >= self.inner.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let breaker = BreakerHandle::with_labels(
            self.inner.name.clone(),
            vec![Label::new("key", key.to_string())],
            self.inner.policy.clone(),
        );
        map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
    }

    /// Drops every breaker unused for longer than the idle timeout; returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = self.nanos(Instant::now());
        let idle = u64::try_from(self.inner.idle.as_nanos()).unwrap_or(u64::MAX);
        let mut map = self
            .inner
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, e| now.saturating_sub(e.last_used.load(Relaxed)) < idle);
        before - map.len()
    }

    /// How many breakers there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that have a breaker.
    #[must_use]
    pub fn keys(&self) -> Vec<Q> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Q, Entry>> {
        self.inner
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.inner.origin).as_nanos())
            .unwrap_or(u64::MAX)
    }
}

/// Wraps services in a [`KeyedCircuitBreaker`]: one breaker per key.
#[derive(Debug, Clone)]
#[must_use]
pub struct KeyedCircuitBreakerLayer<F = ByAuthority, Q = Authority, C = ErrorsAsFailures> {
    policy: Policy,
    name: SharedString,
    key_of: F,
    classifier: C,
    max: usize,
    idle: Duration,
    _key: PhantomData<fn() -> Q>,
}

impl KeyedCircuitBreakerLayer {
    /// At most 1024 breakers: a sidecar talks to tens of endpoints, a gateway to hundreds;
    /// beyond that the least recently used endpoint loses its history.
    pub const DEFAULT_MAX_BREAKERS: usize = 1024;
    /// 5 minutes: an endpoint unused that long has usually left the pool.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

    /// A layer with one breaker per request authority, each with `policy`.
    ///
    /// # Errors
    ///
    /// If the policy is not valid: the [`ConfigError`] of [`Policy::validate`], which names the
    /// first field that is wrong and its value. A layer that exists holds a valid policy, so
    /// making services with it cannot fail.
    pub fn new(policy: Policy) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self {
            policy,
            name: SharedString::const_str("breaker"),
            key_of: ByAuthority,
            classifier: ErrorsAsFailures,
            max: Self::DEFAULT_MAX_BREAKERS,
            idle: Self::DEFAULT_IDLE_TIMEOUT,
            _key: PhantomData,
        })
    }
}

impl<F, Q, C> KeyedCircuitBreakerLayer<F, Q, C> {
    /// Names the breakers in metrics (`name`, with the key in the `key` label) and logs.
    pub fn named(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// Keys requests with `f` instead of by authority.
    pub fn key_by<G, Req, R>(self, f: G) -> KeyedCircuitBreakerLayer<G, R, C>
    where
        G: KeyOf<Req, Key = R>,
    {
        KeyedCircuitBreakerLayer {
            policy: self.policy,
            name: self.name,
            key_of: f,
            classifier: self.classifier,
            max: self.max,
            idle: self.idle,
            _key: PhantomData,
        }
    }

    /// Replaces the classifier.
    pub fn classify<D>(self, classifier: D) -> KeyedCircuitBreakerLayer<F, Q, D> {
        KeyedCircuitBreakerLayer {
            policy: self.policy,
            name: self.name,
            key_of: self.key_of,
            classifier,
            max: self.max,
            idle: self.idle,
            _key: PhantomData,
        }
    }

    /// Keeps at most this many breakers.
    pub fn max_breakers(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Drops breakers unused for this long (checked when a new key comes).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }
}

impl<S, F, Q, C> Layer<S> for KeyedCircuitBreakerLayer<F, Q, C>
where
    F: Clone,
    C: Clone,
    Q: Clone + Eq + Hash + Display,
{
    type Service = KeyedCircuitBreaker<S, F, Q, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
            // Validated by `KeyedCircuitBreakerLayer::new`.
            breakers: BreakerMap::with_valid_policy(
                self.name.clone(),
                self.policy.clone(),
                self.max,
                self.idle,
            ),
        }
    }
}

/// One circuit breaker per key, in fail-fast mode: a request whose key's breaker is open
/// fails at once with [`BreakerOpen`](crate::BreakerOpen); other keys are unaffected.
///
/// Clones share the breakers.
#[derive(Debug, Clone)]
pub struct KeyedCircuitBreaker<S, F = ByAuthority, Q = Authority, C = ErrorsAsFailures> {
    inner: S,
    key_of: F,
    classifier: C,
    breakers: BreakerMap<Q>,
}

impl<S, F, Q, C> KeyedCircuitBreaker<S, F, Q, C> {
    /// The breakers, by key.
    pub fn breakers(&self) -> &BreakerMap<Q> {
        &self.breakers
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, Q, C, Req> Service<Req> for KeyedCircuitBreaker<S, F, Q, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: KeyOf<Req, Key = Q>,
    Q: Clone + Eq + Hash + Display,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.breakers.breaker(&self.key_of.key_of(&req));
        match breaker.acquire() {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(req),
                PermitGuard::new(breaker, permit),
                self.classifier.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
