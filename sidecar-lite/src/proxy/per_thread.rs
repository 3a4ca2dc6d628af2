//! Values a worker thread keeps from one request to the next, so that requests asking for the
//! same one share it rather than each making and allocating its own.

use std::{cell::RefCell, thread::LocalKey};

/// The value kept in `slot` if `same` holds for it and what it was made from; otherwise the
/// one `make` makes, kept in its place for the next request on the thread. A hit clones the
/// value alone; a miss costs what making it costs.
pub(super) fn kept_or_made<K, V: Clone>(
    slot: &'static LocalKey<RefCell<Option<(K, V)>>>,
    same: impl FnOnce(&K, &V) -> bool,
    make: impl FnOnce() -> Option<(K, V)>,
) -> Option<V> {
    slot.with_borrow_mut(|kept| {
        if let Some((from, value)) = kept.as_ref()
            && same(from, value)
        {
            return Some(value.clone());
        }
        let (from, value) = make()?;
        *kept = Some((from, value.clone()));
        Some(value)
    })
}
