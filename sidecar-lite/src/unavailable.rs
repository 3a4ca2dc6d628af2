//! Fails fast when every endpoint of a route has its breaker open, instead of letting requests
//! queue in front of a balancer that has nothing ready until their timeout.

use crate::discovery::LiveEndpoints;
use resilience_breaker::State;
use resilience_timeout::BoxError;
use std::{
    error::Error,
    fmt,
    future::{Ready, ready},
    task::{Context, Poll},
};
use tower::Service;

/// Every endpoint of the route is behind an open breaker. Answered with 503 and
/// `x-sidecar-error: breaker-open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEndpointAvailable;

impl fmt::Display for NoEndpointAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every endpoint's circuit breaker is open")
    }
}

impl Error for NoEndpointAvailable {}

/// Wraps a balanced set of endpoints: a call fails at once with [`NoEndpointAvailable`] while
/// every breaker of the current endpoints is open.
#[derive(Debug, Clone)]
pub struct FailWhenAllOpen<S> {
    inner: S,
    endpoints: LiveEndpoints,
}

impl<S> FailWhenAllOpen<S> {
    /// Guards `inner` with the breakers of its endpoints, as the set changes.
    pub fn new(inner: S, endpoints: LiveEndpoints) -> Self {
        Self { inner, endpoints }
    }

    fn all_open(&self) -> bool {
        self.endpoints
            .all(|b| matches!(b.state(), State::Open | State::ForcedOpen))
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
        if self.all_open() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.all_open() {
            return futures::future::Either::Left(ready(Err(NoEndpointAvailable.into())));
        }
        futures::future::Either::Right(self.inner.call(req))
    }
}
