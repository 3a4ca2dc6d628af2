//! The pooled client to the local app, for the inbound stack.

use super::{FixedConnector, StackBody, client};
use crate::config::AppProtocol;
use http::{Request, Response, header::CONTENT_TYPE};
use hyper::body::Incoming;
use resilience_core::{BoxError, SIDECAR_ERROR};
use std::net::SocketAddr;
use tower::Service;

/// The pooled client to the local app: HTTP/1.1, or HTTP/2 with prior knowledge for gRPC
/// (or always, as configured).
pub(crate) struct AppClient<B> {
    http1: hyper_util::client::legacy::Client<FixedConnector, B>,
    http2: hyper_util::client::legacy::Client<FixedConnector, B>,
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
            http1: client(FixedConnector::new(app), false),
            http2: client(FixedConnector::new(app), true),
            protocol,
        }
    }
}

impl<B: StackBody> Service<Request<B>> for AppClient<B> {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = futures::future::MapOk<
        futures::future::MapErr<
            hyper_util::client::legacy::ResponseFuture,
            fn(hyper_util::client::legacy::Error) -> BoxError,
        >,
        fn(Response<Incoming>) -> Response<Incoming>,
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
        let client = if http2 { &self.http2 } else { &self.http1 };
        client
            .request(req)
            .map_err(BoxError::from as fn(hyper_util::client::legacy::Error) -> BoxError)
            .map_ok(without_sidecar_flag as fn(Response<Incoming>) -> Response<Incoming>)
    }
}

/// Only the sidecar speaks with `x-sidecar-error` to its callers: an app that sets it must not
/// pass for the sidecar.
fn without_sidecar_flag(mut response: Response<Incoming>) -> Response<Incoming> {
    response.headers_mut().remove(SIDECAR_ERROR);
    response
}
