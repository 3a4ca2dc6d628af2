//! One endpoint's client, over mTLS, HTTPS or in plaintext, as one type with one future
//! type: a stack over it then needs no `Either` for the choice, and every level a stack has
//! moves each request, future and response once more.

use super::{AppClient, FixedConnector, Pool, PoolFuture, PooledBody, StackBody};
use http::{
    HeaderValue, Request, Response, Uri,
    header::HOST,
    uri::{Authority, PathAndQuery, Scheme},
};
use resilience_core::BoxError;
use resilience_mtls::{MtlsConnector, OriginConnector};
use std::task::{Context, Poll};
use tower::Service;

/// The connections to one endpoint of an outbound route.
pub(crate) enum EndpointTransport<B> {
    /// Over mTLS, to a peer sidecar that must prove the route's `server_identity`.
    Mtls(Pool<MtlsConnector<FixedConnector>, B>),
    /// Over HTTPS to a server outside the mesh, each request's authority the server's
    /// name, which its certificate was checked against.
    Origin {
        pool: Pool<OriginConnector<FixedConnector>, B>,
        authority: Authority,
        /// The same as a `Host` value, made once rather than per request.
        host: HeaderValue,
    },
    /// In plaintext.
    Plain(AppClient<B>),
}

impl<B> EndpointTransport<B> {
    /// Over HTTPS, with `pool`, each request addressed to `authority`.
    pub(crate) fn origin(
        pool: Pool<OriginConnector<FixedConnector>, B>,
        authority: Authority,
    ) -> Self {
        // An authority is made of bytes a header value may hold.
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self::Origin {
            pool,
            authority,
            host,
        }
    }
}

impl<B> Clone for EndpointTransport<B> {
    fn clone(&self) -> Self {
        match self {
            Self::Mtls(pool) => Self::Mtls(pool.clone()),
            Self::Origin {
                pool,
                authority,
                host,
            } => Self::Origin {
                pool: pool.clone(),
                authority: authority.clone(),
                host: host.clone(),
            },
            Self::Plain(client) => Self::Plain(client.clone()),
        }
    }
}

/// `req` addressed to `authority` over HTTPS: its URI's scheme and authority (HTTP/2's
/// `:scheme` and `:authority`) and its `Host`. The caller addressed the sidecar; the server
/// answers for its own name, the one TLS checked.
fn addressed<B>(mut req: Request<B>, authority: &Authority, host: &HeaderValue) -> Request<B> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req.headers_mut().insert(HOST, host.clone());
    req
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
            Self::Origin {
                pool,
                authority,
                host,
            } => pool.call(addressed(req, authority, host)),
            Self::Plain(client) => client.call(req),
        }
    }
}
