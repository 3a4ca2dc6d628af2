//! One endpoint's client, over mTLS or in plaintext, as one type with one future type: a
//! stack over it then needs no `Either` for the choice, and every level a stack has moves
//! each request, future and response once more.

use super::{AppClient, FixedConnector, Pool, PoolFuture, PooledBody, StackBody};
use http::{Request, Response};
use resilience_core::BoxError;
use resilience_mtls::MtlsConnector;
use std::task::{Context, Poll};
use tower::Service;

/// The connections to one endpoint of an outbound route.
pub(crate) enum EndpointTransport<B> {
    /// Over mTLS, to a peer sidecar that must prove the route's `server_identity`.
    Mtls(Pool<MtlsConnector<FixedConnector>, B>),
    /// In plaintext.
    Plain(AppClient<B>),
}

impl<B> Clone for EndpointTransport<B> {
    fn clone(&self) -> Self {
        match self {
            Self::Mtls(pool) => Self::Mtls(pool.clone()),
            Self::Plain(client) => Self::Plain(client.clone()),
        }
    }
}

impl<B: StackBody> Service<Request<B>> for EndpointTransport<B> {
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = PoolFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both check a connection out for each request: nothing to wait for here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> PoolFuture<B> {
        match self {
            Self::Mtls(pool) => pool.call(req),
            Self::Plain(client) => client.call(req),
        }
    }
}
