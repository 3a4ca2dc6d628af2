//! [`ListenerState`]: what one listener serves with, replaced whole by a reload.
use super::{AccessLog, EdgeBody, EdgeTracer, InboundRules};
use crate::{
    stack::StackService,
    transport::{ProxyBody, worker},
};
use arc_swap::ArcSwap;
use http::{Request, Response};
use resilience_core::BoxError;
use resilience_mtls::MtlsAcceptor;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, ready},
};
use tower::Service;

/// Everything a reload may change about a listener, in one value: its stack, its TLS acceptor
/// (`None` serves plaintext), its tracer and its access log. `run` owns one swap cell of it per listener and
/// stores a new one on reload; connections read the acceptor at accept, requests the stack and
/// tracer when they start. Requests in flight keep what they started with.
pub(crate) struct ListenerState {
    /// Not `Sync` (tower's concurrency limit and buffer hold boxed futures), so behind a mutex
    /// held only to clone it.
    stack: Mutex<StackService<EdgeBody>>,
    /// A clone of the stack for each worker, lent to one request at a time from its readiness
    /// to its call (see [`ListenerState::take_stack`]): a request does not clone the stack.
    lent: Box<[Mutex<Option<StackService<EdgeBody>>>]>,
    pub(crate) acceptor: Option<Arc<MtlsAcceptor>>,
    pub(crate) tracer: Option<EdgeTracer>,
    pub(crate) access_log: Option<AccessLog>,
    /// The rules of the inbound listener; `None` on outbound routes.
    pub(crate) inbound: Option<InboundRules>,
}

/// A listener's swap cell.
pub(crate) type SharedListenerState = Arc<ArcSwap<ListenerState>>;

impl ListenerState {
    pub(crate) fn new(
        stack: StackService<EdgeBody>,
        acceptor: Option<Arc<MtlsAcceptor>>,
        tracer: Option<EdgeTracer>,
        access_log: Option<AccessLog>,
        inbound: Option<InboundRules>,
    ) -> Self {
        Self {
            stack: Mutex::new(stack),
            lent: (0..worker::slots()).map(|_| Mutex::new(None)).collect(),
            acceptor,
            tracer,
            access_log,
            inbound,
        }
    }

    /// A clone of the stack, which shares its state (breakers, budgets, limits, connections).
    pub(crate) fn stack(&self) -> StackService<EdgeBody> {
        lock(&self.stack).clone()
    }

    /// The call of `req` down the stack, made when polled: the stack is lent for the call
    /// only (see [`ListenerState::take_stack`]), and the response is awaited without it.
    pub(crate) fn call(self: Arc<Self>, req: Request<EdgeBody>) -> StackCall {
        let stack = self.take_stack();
        StackCall::Waiting {
            state: self,
            stack,
            req: Some(req),
        }
    }

    /// The calling worker's stack, taken for one request: from the worker's slot, or, when a
    /// request of the same worker has it (an HTTP/2 stream waiting for readiness), a clone.
    /// Give it back with [`ListenerState::give_back`] once the request has been called.
    pub(crate) fn take_stack(&self) -> StackService<EdgeBody> {
        self.slot().take().unwrap_or_else(|| self.stack())
    }

    /// Puts a stack taken by [`ListenerState::take_stack`] back in the calling worker's slot.
    pub(crate) fn give_back(&self, stack: StackService<EdgeBody>) {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = Some(stack);
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<StackService<EdgeBody>>> {
        lock(&self.lent[worker::index() % self.lent.len()])
    }
}

type StackFuture = <StackService<EdgeBody> as Service<Request<EdgeBody>>>::Future;

/// A request on its way down a listener's stack: waiting for the stack's readiness, then
/// called. A small future that is `Unpin`, so that the edge awaits it in place: an `async fn`
/// would hold the request once more, in every request's future.
#[expect(
    clippy::large_enum_variant,
    reason = "boxing the waiting request would cost an allocation per request, to save room no other value uses"
)]
pub(crate) enum StackCall {
    Waiting {
        state: Arc<ListenerState>,
        stack: StackService<EdgeBody>,
        req: Option<Request<EdgeBody>>,
    },
    Called(StackFuture),
}

impl Future for StackCall {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut *self {
                Self::Waiting { stack, req, .. } => {
                    ready!(stack.poll_ready(cx))?;
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err("polled after completion".into()));
                    };
                    let called = stack.call(req);
                    if let Self::Waiting { state, stack, .. } =
                        std::mem::replace(&mut *self, Self::Called(called))
                    {
                        state.give_back(stack);
                    }
                }
                Self::Called(called) => return called.as_mut().poll(cx),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for ListenerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerState")
            .field("tls", &self.acceptor.is_some())
            .field("tracing", &self.tracer.is_some())
            .field("access_log", &self.access_log.is_some())
            .finish_non_exhaustive()
    }
}
