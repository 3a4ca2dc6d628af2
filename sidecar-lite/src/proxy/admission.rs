//! [`Admission`]: the connection limits of one listener, one set for all its workers.
//!
//! Each worker accepts on its own socket, but `max_connections` and
//! `max_connections_per_source` are the listener's: a worker at the limit may make room by
//! evicting a silent connection that another worker serves.

use super::activity::Activity;
use crate::config::LimitsConfig;
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, Weak},
};

/// The open connections of a listener, counted against its limits.
#[derive(Debug)]
pub(crate) struct Admission {
    max_connections: usize,
    max_per_source: Option<usize>,
    /// At the limit, a kept-alive connection with no request in flight makes room too: on an
    /// admin listener, whose few places must not be held by clients that only keep their
    /// connections alive while a kubelet's probe is turned away.
    evict_idle: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    per_source: HashMap<IpAddr, usize>,
    silent: SilentConnections,
}

/// Why a connection was refused, as the `reason` label of `sidecar_connections_refused_total`.
pub(super) type Refused = &'static str;

impl Admission {
    /// The limits of `limits`, with nothing open yet.
    pub(crate) fn new(limits: &LimitsConfig) -> Arc<Self> {
        Self::with(limits, false)
    }

    /// The limits of an admin listener: as [`Admission::new`], and at the limit the connection
    /// idle the longest (none of its requests in flight) makes room when no silent one can.
    pub(crate) fn evicting_idle(limits: &LimitsConfig) -> Arc<Self> {
        Self::with(limits, true)
    }

    fn with(limits: &LimitsConfig, evict_idle: bool) -> Arc<Self> {
        Arc::new(Self {
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_source,
            evict_idle,
            state: Mutex::default(),
        })
    }

    /// Counts a connection just accepted from `source`, or refuses it: over the per-source
    /// limit, or at `max_connections` with no connection that has not sent a request yet to
    /// evict in its place. It counts until the [`Admitted`] is dropped.
    pub(super) fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        activity: &Arc<Activity>,
    ) -> Result<Admitted, Refused> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = state.per_source.get(&source).copied().unwrap_or(0);
        if self.max_per_source.is_some_and(|cap| from_source >= cap) {
            return Err("per-source");
        }
        if state.open >= self.max_connections && !state.silent.make_room(self.evict_idle) {
            return Err("limit");
        }
        state.open += 1;
        *state.per_source.entry(source).or_insert(0) += 1;
        state.silent.push(activity, self.evict_idle);
        Ok(Admitted {
            admission: self.clone(),
            source,
        })
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(super) struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self
            .admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.open -= 1;
        if let Some(count) = state.per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                state.per_source.remove(&self.source);
            }
        }
    }
}

/// The connections that may not have sent a request yet, oldest first. Entries of closed
/// connections, and of ones that have since sent a request, are dropped as they are met.
#[derive(Debug, Default)]
struct SilentConnections(VecDeque<Weak<Activity>>);

impl SilentConnections {
    /// Adds a connection just admitted. `keep_speakers`: the list also serves
    /// [`evict_idlest`](Self::evict_idlest), so connections that have sent a request stay in it.
    fn push(&mut self, activity: &Arc<Activity>, keep_speakers: bool) {
        // Weed out the ones that have spoken or gone, once they outnumber what can be open:
        // the list stays bounded by the connection limit, at constant cost per connection.
        if self.0.len() >= self.0.capacity().max(64) {
            self.0.retain(|weak| {
                weak.upgrade()
                    .is_some_and(|a| keep_speakers || a.never_requested())
            });
        }
        self.0.push_back(Arc::downgrade(activity));
    }

    /// Evicts a connection for a new one: one that has not sent a request, or with
    /// `idle_too`, else the one idle the longest; whether there was one.
    fn make_room(&mut self, idle_too: bool) -> bool {
        if idle_too {
            self.evict_idlest()
        } else {
            self.evict_oldest()
        }
    }

    /// Evicts the oldest connection that has not sent a request, else the one idle the longest
    /// (kept alive, no request in flight); whether there was one.
    fn evict_idlest(&mut self) -> bool {
        self.0.retain(|weak| weak.strong_count() > 0);
        let idlest = self
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, weak)| Some((i, weak.upgrade()?)))
            .filter_map(|(i, activity)| {
                let since = activity.idle_since()?;
                Some(((!activity.never_requested(), since), i, activity))
            })
            .min_by_key(|(key, ..)| *key);
        match idlest {
            Some((_, i, activity)) => {
                activity.evict();
                self.0.remove(i);
                true
            }
            None => false,
        }
    }

    /// Evicts the oldest connection that has not sent a request; whether there was one.
    fn evict_oldest(&mut self) -> bool {
        while let Some(oldest) = self.0.pop_front() {
            if let Some(activity) = oldest.upgrade()
                && activity.never_requested()
            {
                activity.evict();
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits(max_connections: usize, per_source: Option<usize>) -> LimitsConfig {
        LimitsConfig {
            max_connections,
            max_connections_per_source: per_source,
            ..LimitsConfig::default()
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    #[tokio::test]
    async fn at_the_limit_a_silent_connection_makes_room_and_a_busy_one_does_not() {
        let admission = Admission::new(&limits(2, None));
        let silent = Activity::new();
        let busy = Activity::new();
        let _first = admission.admit(A, &silent).unwrap();
        let _second = admission.admit(A, &busy).unwrap();
        drop(busy.start(http::Version::HTTP_11));

        let third = Activity::new();
        let _third = admission
            .admit(A, &third)
            .expect("the silent one makes room");
        assert!(
            !silent.never_requested(),
            "the silent one was asked to leave"
        );
        drop(third.start(http::Version::HTTP_11));
        assert_eq!(
            admission.admit(A, &Activity::new()).unwrap_err(),
            "limit",
            "every open connection has sent a request"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_frees_its_place_and_its_source_count() {
        let admission = Admission::new(&limits(10, Some(1)));
        let first = admission.admit(A, &Activity::new()).unwrap();
        assert_eq!(
            admission.admit(A, &Activity::new()).unwrap_err(),
            "per-source"
        );
        let _other = admission
            .admit(B, &Activity::new())
            .expect("another source");
        drop(first);
        admission
            .admit(A, &Activity::new())
            .expect("the place is free again");
    }
}
