//! The attempts of one request, for its span and its access-log line: the retry layer sends
//! each attempt through [`count_attempt`], each endpoint notes itself with [`NoteEndpoint`],
//! and the edge reads both when the request ends.

use http::Request;
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
};
use tower::Service;

/// The attempts of one request, as a request extension that the edge puts in when it wants
/// them: the retry layer copies it onto every attempt, the stack counts each one below the
/// retry layer, and the endpoint that takes an attempt names itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts(Arc<Record>);

#[derive(Debug, Default)]
struct Record {
    count: AtomicU32,
    endpoint: Mutex<Option<SocketAddr>>,
}

impl Attempts {
    /// Counts one more attempt.
    pub(crate) fn record(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The attempts so far.
    #[cfg(feature = "proxy")]
    #[must_use]
    pub(crate) fn count(&self) -> u32 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The endpoint of the latest attempt that reached one.
    #[cfg(feature = "proxy")]
    #[must_use]
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *self
            .0
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts an attempt of `req`, if its edge asked for attempts to be counted.
pub(crate) fn count_attempt<B>(req: Request<B>) -> Request<B> {
    if let Some(attempts) = req.extensions().get::<Attempts>() {
        attempts.record();
    }
    req
}

/// An endpoint's client that notes, on each attempt it takes, that the endpoint took it (if
/// the request's edge asked for attempts to be counted). A named service rather than a
/// `map_request` closure, so that an endpoint's whole stack has a type and needs no box.
#[derive(Debug, Clone)]
pub(crate) struct NoteEndpoint<S> {
    inner: S,
    endpoint: SocketAddr,
}

impl<S> NoteEndpoint<S> {
    pub(crate) fn new(inner: S, endpoint: SocketAddr) -> Self {
        Self { inner, endpoint }
    }
}

impl<S: Service<Request<B>>, B> Service<Request<B>> for NoteEndpoint<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(attempts) = req.extensions().get::<Attempts>() {
            *attempts
                .0
                .endpoint
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(self.endpoint);
        }
        self.inner.call(req)
    }
}
