//! Fails fast when every endpoint of a route has its breaker open, instead of letting requests
//! wait for a balancer that has nothing ready until their timeout.

use super::LiveEndpoints;
use resilience_breaker::State;
use resilience_core::{BoxError, Enforcement};
use std::{
    error::Error,
    fmt,
    future::{Ready, ready},
    task::{Context, Poll},
};
use tokio::time::Instant;
use tower::Service;

/// Every endpoint of the route is behind an open breaker. Answered with 503 and
/// `x-sidecar-error: breaker-open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoEndpointAvailable;

impl fmt::Display for NoEndpointAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every endpoint's circuit breaker is open")
    }
}

impl Error for NoEndpointAvailable {
    /// Refused here, before anything was sent: a retry gives its budget back.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&resilience_core::RefusedLocally)
    }
}

/// Discovery has looked and found no endpoint for the route (a `dns:` name that does not
/// resolve yet). Answered with 503 and `x-sidecar-error: no-endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoEndpoints;

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("discovery found no endpoint for the route")
    }
}

impl Error for NoEndpoints {
    /// Refused here, before anything was sent: a retry gives its budget back.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&resilience_core::RefusedLocally)
    }
}

/// Wraps a balanced set of endpoints: a call fails at once with [`NoEndpointAvailable`] while
/// every breaker of the current endpoints is open and none is due a probe, and with
/// [`NoEndpoints`] while discovery has found none, instead of waiting for the balancer until
/// its timeout.
#[derive(Debug)]
pub(crate) struct FailWhenAllOpen<S> {
    inner: S,
    endpoints: LiveEndpoints,
    /// The breakers' enforcement: in shadow mode, every breaker open refuses nothing either.
    breakers: Enforcement,
    /// What `poll_ready` decided for the next `call`: the two must agree, so that a call
    /// refused by the one never reaches the balancer through the other.
    reject: Option<BoxError>,
}

impl<S: Clone> Clone for FailWhenAllOpen<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.endpoints.clone(), self.breakers)
    }
}

impl<S> FailWhenAllOpen<S> {
    /// Guards `inner` with the breakers of its endpoints, as the set changes, unless the
    /// breakers are in shadow mode.
    pub(crate) fn new(inner: S, endpoints: LiveEndpoints, breakers: Enforcement) -> Self {
        Self {
            inner,
            endpoints,
            breakers,
            reject: None,
        }
    }

    /// Whether no endpoint can take a call now. An Open breaker whose open period is over
    /// takes the next call as its probe, so it counts as available: a breaker moves to
    /// half-open only when asked for a call, and rejecting here would never ask it.
    fn all_open(&self) -> bool {
        self.endpoints.all(|b| match b.state() {
            State::ForcedOpen => true,
            // The clock is read only for an open breaker, never on the healthy path.
            State::Open => b.next_probe().is_some_and(|at| at > Instant::now()),
            _ => false,
        })
    }
}

impl<S, Req> Service<Req> for FailWhenAllOpen<S>
where
    S: Service<Req, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::Either<Ready<Result<S::Response, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never wait on the balancer when it has nothing to offer: `call` answers at once.
        self.reject = if self.endpoints.none_found() {
            Some(NoEndpoints.into())
        } else if self.breakers.refuses() && self.all_open() {
            Some(NoEndpointAvailable.into())
        } else {
            None
        };
        if self.reject.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(error) = self.reject.take() {
            return futures::future::Either::Left(ready(Err(error)));
        }
        futures::future::Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resilience_breaker::{BreakerConfig, BreakerHandle};
    use std::{net::SocketAddr, time::Duration};
    use tower::{Layer, ServiceExt, service_fn};

    const OPEN_FOR: Duration = Duration::from_secs(1);

    /// A breaker opened by one failure, for `OPEN_FOR`.
    async fn opened() -> BreakerHandle {
        let config: BreakerConfig =
            toml::from_str("consecutive_failures = 1\nopen_for = \"1s\"\njitter = 0.0").unwrap();
        let breaker = config.layer().unwrap().layer(service_fn(|()| async {
            Err::<(), BoxError>("down".into())
        }));
        let handle = breaker.handle().clone();
        assert!(breaker.oneshot(()).await.is_err());
        assert_eq!(handle.state(), State::Open);
        handle
    }

    fn guarded(
        endpoints: &LiveEndpoints,
    ) -> FailWhenAllOpen<impl Service<(), Response = &'static str, Error = BoxError>> {
        guarded_with(endpoints, Enforcement::Enforce)
    }

    fn guarded_with(
        endpoints: &LiveEndpoints,
        breakers: Enforcement,
    ) -> FailWhenAllOpen<impl Service<(), Response = &'static str, Error = BoxError>> {
        FailWhenAllOpen::new(
            service_fn(|()| async { Ok::<_, BoxError>("served") }),
            endpoints.clone(),
            breakers,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_in_shadow_mode_refuse_nothing_when_all_are_open() {
        let endpoints = LiveEndpoints::default();
        endpoints.insert(addr(1), opened().await);
        let served = guarded_with(&endpoints, Enforcement::Shadow)
            .oneshot(())
            .await;
        assert_eq!(served.unwrap(), "served");
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[tokio::test(start_paused = true)]
    async fn fails_fast_while_all_are_open_and_lets_a_probe_through_when_one_is_due() {
        let endpoints = LiveEndpoints::default();
        endpoints.insert(addr(1), opened().await);
        let error = guarded(&endpoints).oneshot(()).await.unwrap_err();
        assert!(error.is::<NoEndpointAvailable>());

        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(guarded(&endpoints).oneshot(()).await.unwrap(), "served");
    }

    #[tokio::test(start_paused = true)]
    async fn call_keeps_what_poll_ready_decided() {
        let endpoints = LiveEndpoints::default();
        endpoints.insert(addr(1), opened().await);
        let mut service = guarded(&endpoints);
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        // A healthy endpoint arrives between poll_ready and call: the call still fails fast
        // rather than calling an inner service that was never made ready.
        endpoints.insert(
            addr(2),
            BreakerConfig::default()
                .layer()
                .unwrap()
                .layer(())
                .handle()
                .clone(),
        );
        let error = service.call(()).await.unwrap_err();
        assert!(error.is::<NoEndpointAvailable>());
        // The next round sees the healthy endpoint.
        assert_eq!(service.oneshot(()).await.unwrap(), "served");
    }
}
