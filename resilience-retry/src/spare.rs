//! [`Spare`]: the service that a request's attempts after its first go through.

use std::sync::{Arc, Mutex, PoisonError};

/// A clone of the wrapped service, made once and shared by the futures of the requests, each
/// of which clones it again only when it sends another attempt. A clone per request, as
/// tower's `Retry` takes, costs the reference counts of every shared part of the stack below
/// and carries the whole service in every request's future, which each layer above moves.
///
/// Behind a mutex, locked only to clone it: a service that is `Send` but not `Sync` (a
/// `BoxCloneService`) still makes futures that are `Send`.
pub(crate) struct Spare<S>(Arc<Mutex<S>>);

impl<S: Clone> Spare<S> {
    /// A service of its own for the next attempt, to make ready and call.
    pub(crate) fn service(&self) -> S {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S> Clone for Spare<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Where a layer's service keeps its [`Spare`], made on its first request.
pub(crate) struct SpareSlot<S>(Option<Spare<S>>);

impl<S> SpareSlot<S> {
    pub(crate) fn new() -> Self {
        Self(None)
    }

    /// The wrapped service was lent out mutably and may have changed: the next request shares
    /// a fresh clone.
    pub(crate) fn forget(&mut self) {
        self.0 = None;
    }
}

impl<S: Clone> SpareSlot<S> {
    /// The spare of `current`, made now if there is none yet.
    pub(crate) fn share(&mut self, current: &S) -> Spare<S> {
        self.0
            .get_or_insert_with(|| Spare(Arc::new(Mutex::new(current.clone()))))
            .clone()
    }
}

impl<S> Clone for SpareSlot<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
