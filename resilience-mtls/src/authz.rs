//! [`AuthorizeLayer`]: admits only listed peer identities, and answers others with 403.

use crate::{AllowList, Identity, metrics};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The header on every response that the proxy makes itself, naming why.
pub const SIDECAR_ERROR: HeaderName = HeaderName::from_static("x-sidecar-error");

const BODY: &str = "forbidden: the peer identity is not allowed to call this service\n";

/// The response body of [`Authorize`]: the inner body, or the short text of a 403.
pub type AuthorizeBody<B> = Either<B, Full<Bytes>>;

/// Admits requests whose peer [`Identity`] (from the request's extensions, put there by
/// [`AddPeerIdentityLayer`]) is on an [`AllowList`]; see [`Authorize`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthorizeLayer {
    allow: Arc<AllowList>,
}

impl AuthorizeLayer {
    /// A layer that admits the identities in `allow`.
    pub fn new(allow: AllowList) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            allow: self.allow.clone(),
        }
    }
}

/// Answers requests from peers that are not on the allow-list with `403 Forbidden` and
/// `x-sidecar-error: unauthorized`, without calling the inner service.
///
/// A request without an [`Identity`] extension is anonymous (plaintext in permissive mode) and
/// is denied unless the list [allows anonymous peers](AllowList::allow_anonymous). Denials are
/// counted in `resilience_mtls_denied_total` and logged at debug level.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    allow: Arc<AllowList>,
}

impl<S> Authorize<S> {
    /// Wraps `inner`, admitting the identities in `allow`.
    pub fn new(inner: S, allow: AllowList) -> Self {
        Self {
            inner,
            allow: Arc::new(allow),
        }
    }

    /// The allow-list.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<AuthorizeBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthorizeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let identity = req.extensions().get::<Identity>();
        if self.allow.is_allowed(identity) {
            AuthorizeFuture {
                state: State::Allowed {
                    inner: self.inner.call(req),
                },
            }
        } else {
            metrics::denied();
            tracing::debug!(
                identity = identity.map_or("anonymous", Identity::as_str),
                method = %req.method(),
                path = req.uri().path(),
                "request denied: peer identity not allowed",
            );
            AuthorizeFuture {
                state: State::Denied,
            }
        }
    }
}

pin_project! {
    /// The response future of [`Authorize`].
    #[derive(Debug)]
    pub struct AuthorizeFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Allowed {
            #[pin]
            inner: F,
        },
        Denied,
    }
}

impl<F, B, E> Future for AuthorizeFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuthorizeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Allowed { inner } => {
                Poll::Ready(ready!(inner.poll(cx)).map(|res| res.map(Either::Left)))
            }
            StateProj::Denied => Poll::Ready(Ok(forbidden())),
        }
    }
}

fn forbidden<B>() -> Response<AuthorizeBody<B>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        BODY.as_bytes(),
    ))));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(SIDECAR_ERROR, HeaderValue::from_static("unauthorized"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Puts one connection's peer [`Identity`] into each request's extensions; see
/// [`AddPeerIdentity`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AddPeerIdentityLayer {
    identity: Option<Identity>,
}

impl AddPeerIdentityLayer {
    /// A layer for a connection whose peer is `identity` (`None`: anonymous), usually
    /// `stream.peer_identity().cloned()` of an [`MtlsStream`](crate::MtlsStream).
    pub fn new(identity: Option<Identity>) -> Self {
        Self { identity }
    }
}

impl<S> Layer<S> for AddPeerIdentityLayer {
    type Service = AddPeerIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddPeerIdentity {
            inner,
            identity: self.identity.clone(),
        }
    }
}

/// Inserts the connection's peer [`Identity`] into each request's extensions (and removes any
/// that was there, so that an identity can never be forged from further up the stack).
#[derive(Debug, Clone)]
pub struct AddPeerIdentity<S> {
    inner: S,
    identity: Option<Identity>,
}

impl<S> AddPeerIdentity<S> {
    /// Wraps `inner` for a connection whose peer is `identity`.
    pub fn new(inner: S, identity: Option<Identity>) -> Self {
        Self { inner, identity }
    }

    /// The peer identity this service adds.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
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

impl<S, B> Service<Request<B>> for AddPeerIdentity<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match &self.identity {
            Some(identity) => {
                req.extensions_mut().insert(identity.clone());
            }
            None => {
                req.extensions_mut().remove::<Identity>();
            }
        }
        self.inner.call(req)
    }
}
