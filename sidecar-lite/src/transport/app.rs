//! The pooled plaintext client: to the local app, for the inbound stack, and to a plaintext
//! endpoint of an outbound route. HTTP/2 with prior knowledge for gRPC (its trailers need it),
//! HTTP/1.1 for the rest.

use super::{FixedConnector, Pool, PoolFuture, PooledBody, Protocol, StackBody};
use crate::config::UpstreamProtocol;
use http::{Request, Response};
use resilience_core::{BoxError, is_grpc, is_grpc_web};
use std::net::SocketAddr;
use tower::Service;

/// A pooled plaintext client: HTTP/1.1, or HTTP/2 with prior knowledge for gRPC (or always,
/// as configured).
pub(crate) struct AppClient<B> {
    http1: Pool<FixedConnector, B>,
    http2: Pool<FixedConnector, B>,
    protocol: UpstreamProtocol,
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
    /// The client to the local app at `app`.
    pub(crate) fn new(app: SocketAddr, protocol: UpstreamProtocol) -> Self {
        Self::over(app, protocol, Pool::for_app)
    }

    /// The client to a plaintext endpoint of an outbound route (an upstream, or a peer
    /// sidecar without mTLS), speaking `protocol`, whose `x-sidecar-error` is kept.
    pub(crate) fn endpoint(addr: SocketAddr, protocol: UpstreamProtocol) -> Self {
        Self::over(addr, protocol, Pool::new)
    }

    /// Its two pools to `addr`, each made by `pool`.
    fn over(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        pool: fn(FixedConnector, Protocol) -> Pool<FixedConnector, B>,
    ) -> Self {
        Self {
            http1: pool(FixedConnector::new(addr), Protocol::Http1),
            http2: pool(FixedConnector::new(addr), Protocol::Http2),
            protocol,
        }
    }
}

impl<B: StackBody> Service<Request<B>> for AppClient<B> {
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = PoolFuture<B>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The pools check a connection out for each request: nothing to wait for here.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // gRPC needs HTTP/2, but for gRPC-Web, which exists to work over HTTP/1.1.
        let grpc = is_grpc(req.headers()) && !is_grpc_web(req.headers());
        let http2 = match self.protocol {
            UpstreamProtocol::Auto => grpc,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
        *req.version_mut() = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        if http2 {
            self.http2.call(req)
        } else {
            self.http1.call(req)
        }
    }
}
