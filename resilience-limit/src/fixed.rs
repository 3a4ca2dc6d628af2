//! [`FixedConcurrencyLayer`]: at most so many calls in flight; the rest refused at once.

use crate::{
    error::Overloaded,
    future::{AtResponse, Completion, Release, ResponseFuture},
};
use resilience_core::BoxError;
use std::{
    fmt,
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};
use tower_layer::Layer;
use tower_service::Service;

/// At most `max` calls in flight over a service and its clones; a call over the limit is
/// refused with [`Overloaded`] at once, never queued.
///
/// Unlike tower's `LoadShed` over `ConcurrencyLimit`, readiness never waits for a permit: a
/// shed call leaves nothing queued in the limit. A service kept and reused after a shed (a
/// proxy's per-worker stack, say) would otherwise hold a queued acquire, and the next permit
/// released would go to it, idle, instead of to the next call.
///
/// ```
/// use resilience_limit::{FixedConcurrencyLayer, Overloaded};
/// use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (release, wait) = tokio::sync::oneshot::channel::<()>();
/// let wait = std::sync::Mutex::new(Some(wait));
/// let mut service = ServiceBuilder::new()
///     .layer(FixedConcurrencyLayer::new(1))
///     .service(service_fn(move |_: ()| {
///         let wait = wait.lock().unwrap().take();
///         async move {
///             if let Some(wait) = wait {
///                 let _ = wait.await;
///             }
///             Ok::<_, BoxError>("done")
///         }
///     }));
/// let first = service.ready().await.unwrap().call(());
/// let refused = service.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(refused.is::<Overloaded>());
/// release.send(()).unwrap();
/// assert_eq!(first.await.unwrap(), "done");
/// assert_eq!(service.oneshot(()).await.unwrap(), "done");
/// # }
/// ```
///
/// A call's place is given back when the service answers it, as `R` ([`AtResponse`], the
/// default) says; with the `http` feature, `until_body_end` holds it until the response's
/// body ends, so that a stream counts for as long as it lasts.
pub struct FixedConcurrencyLayer<R = AtResponse> {
    max: usize,
    release: PhantomData<fn() -> R>,
}

impl<R> Clone for FixedConcurrencyLayer<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for FixedConcurrencyLayer<R> {}

impl<R> fmt::Debug for FixedConcurrencyLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedConcurrencyLayer")
            .field("max", &self.max)
            .finish()
    }
}

impl FixedConcurrencyLayer {
    /// At most `max` calls in flight over each service this layer makes (and its clones).
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            max,
            release: PhantomData,
        }
    }
}

impl<R> FixedConcurrencyLayer<R> {
    /// This limit, each call's place given back as `R2` says.
    #[must_use]
    pub fn release<R2>(self) -> FixedConcurrencyLayer<R2> {
        FixedConcurrencyLayer {
            max: self.max,
            release: PhantomData,
        }
    }
}

impl<S, R> Layer<S> for FixedConcurrencyLayer<R> {
    type Service = FixedConcurrency<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        FixedConcurrency {
            inner,
            limit: Arc::new(Limit {
                in_flight: AtomicUsize::new(0),
                max: self.max,
            }),
            release: PhantomData,
        }
    }
}

/// The service of a [`FixedConcurrencyLayer`]; its clones share the limit.
pub struct FixedConcurrency<S, R = AtResponse> {
    inner: S,
    limit: Arc<Limit>,
    release: PhantomData<fn() -> R>,
}

impl<S: Clone, R> Clone for FixedConcurrency<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limit: self.limit.clone(),
            release: PhantomData,
        }
    }
}

struct Limit {
    in_flight: AtomicUsize,
    max: usize,
}

/// A call's place under a [`FixedConcurrencyLayer`]'s limit, given up when the call completes
/// or is dropped.
pub struct FixedPermit(Arc<Limit>);

impl Drop for FixedPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Completion for FixedPermit {
    fn complete(&mut self, _: bool) {}
}

impl fmt::Debug for FixedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedPermit").finish_non_exhaustive()
    }
}

impl<S, Req, R> Service<Req> for FixedConcurrency<S, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: Release<S::Response>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, FixedPermit, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Ready whatever the limit: excess is refused in `call`, at once, never queued.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let limit = &self.limit;
        // A compare-and-swap, not an add taken back on refusal: a refusal's passing count
        // would refuse a call that fits.
        let admitted = limit
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            ResponseFuture::called(self.inner.call(req), FixedPermit(limit.clone()))
        } else {
            ResponseFuture::refused(Overloaded::new(limit.max).into())
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for FixedConcurrency<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedConcurrency")
            .field("inner", &self.inner)
            .field("max", &self.limit.max)
            .field("in_flight", &self.limit.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}
