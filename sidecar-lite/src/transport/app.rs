//! The pooled client to the local app, for the inbound stack.

use super::{FixedConnector, Pool, PooledBody, Protocol, StackBody};
use crate::config::AppProtocol;
use http::{Request, Response, header::CONTENT_TYPE};
use resilience_core::{BoxError, SIDECAR_ERROR};
use std::net::SocketAddr;
use tower::Service;

/// The pooled client to the local app: HTTP/1.1, or HTTP/2 with prior knowledge for gRPC
/// (or always, as configured).
pub(crate) struct AppClient<B> {
    http1: Pool<FixedConnector, B>,
    http2: Pool<FixedConnector, B>,
    protocol: AppProtocol,
}

impl<B> Clone for AppClient<B> {
    fn clone(&self) -> Self {
        Self {
            http1: self.http1.clone(),
            http2: self.http2.clone(),
            protocol: self.protocol,
        }
    }
}

impl<B: StackBody> AppClient<B> {
    pub(crate) fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        Self {
            http1: Pool::new(FixedConnector::new(app), Protocol::Http1),
            http2: Pool::new(FixedConnector::new(app), Protocol::Http2),
            protocol,
        }
    }
}

impl<B: StackBody> Service<Request<B>> for AppClient<B> {
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = futures::future::MapOk<
        <Pool<FixedConnector, B> as Service<Request<B>>>::Future,
        fn(Response<PooledBody<B>>) -> Response<PooledBody<B>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // hyper-util's client is always ready: it queues on its own pool.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        let http2 = match self.protocol {
            AppProtocol::Auto => grpc,
            AppProtocol::Http1 => false,
            AppProtocol::Http2 => true,
        };
        *req.version_mut() = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let client = if http2 {
            &mut self.http2
        } else {
            &mut self.http1
        };
        client
            .call(req)
            .map_ok(without_sidecar_flag as fn(Response<PooledBody<B>>) -> Response<PooledBody<B>>)
    }
}

/// Only the sidecar speaks with `x-sidecar-error` to its callers: an app that sets it must not
/// pass for the sidecar.
fn without_sidecar_flag<B>(mut response: Response<B>) -> Response<B> {
    response.headers_mut().remove(SIDECAR_ERROR);
    response
}
