//! Fault injection per outbound route, as Istio's `VirtualService` `fault`: abort a share of
//! requests with a status, delay a share by a duration. For testing how an app copes; off
//! unless configured.

use crate::{
    config::FaultConfig,
    transport::{ProxyBody, local_response},
};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use resilience_core::{BoxError, LocalReply, Reason, is_grpc};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::time::Sleep;
use tower::{Layer, Service};

/// Injects the faults of a [`FaultConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub(crate) struct FaultLayer {
    config: FaultConfig,
}

impl FaultLayer {
    /// A layer injecting `config`'s faults.
    pub(crate) fn new(config: FaultConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault {
            inner,
            config: self.config.clone(),
        }
    }
}

/// See [`FaultLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Fault<S> {
    inner: S,
    config: FaultConfig,
}

impl<S, B> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError> + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = FaultFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(abort) = &self.config.abort
            && chance(abort.percent)
        {
            let status =
                StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            metrics::counter!("sidecar_faults_injected_total", "fault" => "abort").increment(1);
            return FaultFuture::new(State::Aborted {
                response: Some(local_response(
                    LocalReply::new(Reason::FaultInjected)
                        .status(status)
                        .grpc(is_grpc(req.headers())),
                )),
            });
        }
        if let Some(delay) = &self.config.delay
            && chance(delay.percent)
        {
            metrics::counter!("sidecar_faults_injected_total", "fault" => "delay").increment(1);
            // The ready service (and whatever it reserved) carries the request after the
            // delay; `self` goes on with a fresh clone that has reserved nothing.
            let clone = self.inner.clone();
            return FaultFuture::new(State::Delayed {
                sleep: tokio::time::sleep(delay.duration),
                inner: Some(std::mem::replace(&mut self.inner, clone)),
                req: Some(req),
            });
        }
        FaultFuture::new(State::Passed {
            future: self.inner.call(req),
        })
    }
}

impl<S: Service<R>, R> FaultFuture<S, R> {
    fn new(state: State<S, R>) -> Self {
        Self { state }
    }
}

/// Whether an event with this percentage chance happens now.
fn chance(percent: f64) -> bool {
    rand::random::<f64>() * 100.0 < percent
}

pin_project! {
    /// The response future of [`Fault`].
    pub(crate) struct FaultFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: Service<R>,
    {
        // The request goes through untouched.
        Passed { #[pin] future: S::Future },
        // The request was aborted.
        Aborted { response: Option<Response<ProxyBody>> },
        // The request waits, then goes through.
        Delayed { #[pin] sleep: Sleep, inner: Option<S>, req: Option<R> },
    }
}

impl<S, R> Future for FaultFuture<S, R>
where
    S: Service<R, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Passed { future } => return future.poll(cx),
                StateProj::Aborted { response } => {
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| "fault future polled after completion".into()),
                    );
                }
                StateProj::Delayed { sleep, inner, req } => {
                    ready!(sleep.poll(cx));
                    let (Some(mut inner), Some(req)) = (inner.take(), req.take()) else {
                        return Poll::Ready(Err("fault future polled after completion".into()));
                    };
                    let future = inner.call(req);
                    state.set(State::Passed { future });
                }
            }
        }
    }
}
