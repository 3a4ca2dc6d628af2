//! [`ListenerState`]: what one listener serves with, replaced whole by a reload.
use super::{AccessLog, EdgeBody, EdgeTracer, InboundRules};
use crate::stack::StackService;
use arc_swap::ArcSwap;
use resilience_mtls::MtlsAcceptor;
use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

/// Everything a reload may change about a listener, in one value: its stack, its TLS acceptor
/// (`None` serves plaintext), its tracer and its access log. `run` owns one swap cell of it per listener and
/// stores a new one on reload; connections read the acceptor at accept, requests the stack and
/// tracer when they start. Requests in flight keep what they started with.
pub(crate) struct ListenerState {
    /// Not `Sync` (tower's concurrency limit and buffer hold boxed futures), so behind a mutex
    /// held only to clone it.
    stack: Mutex<StackService<EdgeBody>>,
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
            acceptor,
            tracer,
            access_log,
            inbound,
        }
    }

    /// A clone of the stack, to serve one request.
    pub(crate) fn stack(&self) -> StackService<EdgeBody> {
        self.stack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
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
