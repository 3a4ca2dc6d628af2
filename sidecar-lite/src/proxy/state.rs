//! [`ListenerState`]: what one listener serves with, replaced whole by a reload.
use super::{AccessLog, EdgeBody, EdgeTracer, InboundRules};
use crate::{stack::StackService, transport::worker};
use arc_swap::ArcSwap;
use resilience_mtls::MtlsAcceptor;
use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

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

    /// The calling worker's stack, taken for one request: from the worker's slot, or, when a
    /// request of the same worker has it (an HTTP/2 stream waiting for readiness), a clone.
    /// Give it back with [`ListenerState::give_back`] once the request has been called.
    pub(crate) fn take_stack(&self) -> StackService<EdgeBody> {
        self.slot()
            .take()
            .unwrap_or_else(|| lock(&self.stack).clone())
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
