//! [`Spare`]: the service that a request's attempts after its first go through.

use std::sync::{Arc, Mutex, PoisonError};

/// A clone of the wrapped service, made once and shared by the futures of the requests, each
/// of which clones it again only when it sends another attempt. A clone per request, as
/// tower's `Retry` takes, costs the reference counts of every shared part of the stack below
/// and carries the whole service in every request's future, which each layer above moves.
///
/// It carries the layer's settings too (`T`), so that a request's future holds one shared
/// reference, taken with one reference count, rather than one for each.
///
/// The service is behind a mutex, locked only to clone it: a service that is `Send` but not
/// `Sync` (a `BoxCloneService`) still makes futures that are `Send`.
pub(crate) struct Spare<S, T>(Arc<Shared<S, T>>);

struct Shared<S, T> {
    settings: T,
    service: Mutex<S>,
}

impl<S, T> Spare<S, T> {
    /// The settings of the layer that made it.
    pub(crate) fn settings(&self) -> &T {
        &self.0.settings
    }
}

impl<S: Clone, T> Spare<S, T> {
    /// A service of its own for the next attempt, to make ready and call.
    pub(crate) fn service(&self) -> S {
        self.0
            .service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S, T> Clone for Spare<S, T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Where a layer's service keeps its [`Spare`], made on its first request.
pub(crate) struct SpareSlot<S, T>(Option<Spare<S, T>>);

impl<S, T> SpareSlot<S, T> {
    pub(crate) fn new() -> Self {
        Self(None)
    }

    /// The wrapped service was lent out mutably and may have changed: the next request shares
    /// a fresh clone.
    pub(crate) fn forget(&mut self) {
        self.0 = None;
    }
}

impl<S: Clone, T: Clone> SpareSlot<S, T> {
    /// The spare of `current`, with `settings`, made now if there is none yet.
    pub(crate) fn share(&mut self, current: &S, settings: &T) -> Spare<S, T> {
        self.0
            .get_or_insert_with(|| {
                Spare(Arc::new(Shared {
                    settings: settings.clone(),
                    service: Mutex::new(current.clone()),
                }))
            })
            .clone()
    }
}

impl<S, T> Clone for SpareSlot<S, T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
