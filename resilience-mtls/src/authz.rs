//! [`AuthorizeLayer`]: admits only listed peer identities, and answers others with 403.

use crate::{AllowList, Identity, metrics};
use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use resilience_core::{Enforcement, LocalReply, Reason, SIDECAR_ERROR, is_grpc};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};
use tower_layer::Layer;
use tower_service::Service;

/// The response body of [`Authorize`]: the inner body, or the short text of a 403.
pub type AuthorizeBody<B> = Either<B, Full<Bytes>>;

/// Admits requests whose peer [`Identity`] (from the request's extensions, put there by
/// [`AddPeerIdentityLayer`]) is on an [`AllowList`]; see [`Authorize`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthorizeLayer {
    allow: Arc<AllowList>,
    flag_header: HeaderName,
    enforcement: Enforcement,
}

impl AuthorizeLayer {
    /// A layer that admits the identities in `allow`.
    pub fn new(allow: AllowList) -> Self {
        Self {
            allow: Arc::new(allow),
            flag_header: SIDECAR_ERROR,
            enforcement: Enforcement::Enforce,
        }
    }

    /// In [`Enforcement::Shadow`] mode no one is refused: a request the allow-list would
    /// refuse goes through, counted in `resilience_mtls_denied_total{mode="shadow"}` and
    /// logged as a denial would be. The default is enforced.
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.enforcement = enforcement;
        self
    }

    /// Names the reason of a denial in `header` instead of `x-sidecar-error`.
    pub fn flag_header(mut self, header: HeaderName) -> Self {
        self.flag_header = header;
        self
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            allow: self.allow.clone(),
            flag_header: self.flag_header.clone(),
            enforcement: self.enforcement,
        }
    }
}

/// Answers requests from peers that are not on the allow-list with `403 Forbidden` and
/// `x-sidecar-error: unauthorized` (the [`LocalReply`] for [`Reason::Unauthorized`]), without
/// calling the inner service; a gRPC call gets `PERMISSION_DENIED` instead (HTTP 200,
/// trailers-only), as a gRPC service would answer it.
///
/// A request without an [`Identity`] extension is anonymous (plaintext in permissive mode) and
/// is denied unless the list [allows anonymous peers](AllowList::allow_anonymous). Denials are
/// counted in `resilience_mtls_denied_total{mode}` and logged at debug level; in shadow mode
/// (see [`AuthorizeLayer::enforcement`]) they are counted and logged, and let through.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    allow: Arc<AllowList>,
    flag_header: HeaderName,
    enforcement: Enforcement,
}

impl<S> Authorize<S> {
    /// Wraps `inner`, admitting the identities in `allow`.
    pub fn new(inner: S, allow: AllowList) -> Self {
        AuthorizeLayer::new(allow).layer(inner)
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
        let allowed = self.allow.is_allowed(identity);
        if !allowed {
            metrics::denied(self.enforcement);
            tracing::debug!(
                identity = identity.map_or("anonymous", Identity::as_str),
                method = %req.method(),
                path = req.uri().path(),
                mode = self.enforcement.as_str(),
                "request denied: peer identity not allowed",
            );
        }
        if allowed || !self.enforcement.refuses() {
            AuthorizeFuture {
                state: State::Allowed {
                    inner: self.inner.call(req),
                },
            }
        } else {
            let reply = LocalReply::new(Reason::Unauthorized)
                .flag_header(self.flag_header.clone())
                .grpc(is_grpc(req.headers()));
            AuthorizeFuture {
                state: State::Denied {
                    response: Some(reply.into_response()),
                },
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
        Denied {
            response: Option<Response<Full<Bytes>>>,
        },
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
            StateProj::Denied { response } => Poll::Ready(Ok(response
                .take()
                .expect("AuthorizeFuture polled after completion")
                .map(Either::Right))),
        }
    }
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
