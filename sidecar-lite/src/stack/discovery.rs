//! Service discovery for outbound routes: the endpoints of a `dns:NAME:PORT` or `file:PATH`
//! source, found and refreshed by a task of their own, fed to the balancer as a
//! [`tower::discover`] stream of changes.
//!
//! The task compares each new set with the current one and sends only the difference: an
//! endpoint that stays keeps its service, so its breaker and its peak-EWMA estimate; a new one
//! is inserted before a gone one is removed, so the balancer is never left empty by a change;
//! requests already sent to a removed endpoint finish on it. A failed lookup or an unreadable
//! file keeps the last good set, is logged and counted. A route rebuilt by a reload starts with
//! the set its `dns:` name last resolved to (a `file:` is read at once), so it has endpoints
//! from its first request even while lookups fail.
//!
//! The task lives as long as the stream: when the balancer that holds the stream is dropped
//! (a reload replaced the route, or the sidecar stopped), the task sees its channel closed and
//! ends, waiting or not.
//!
//! Metrics: `sidecar_endpoint_changes_total{route, change="added"|"removed"}`,
//! `sidecar_dns_failures_total{route}` and `sidecar_endpoint_file_failures_total{route}`.

#[cfg(feature = "dns")]
use super::dns::DnsSource;
use super::{balancer::GiveUp, fail_fast::NoEndpoints};
use crate::config::{DiscoveryConfig, parse_endpoints_file};
use arc_swap::ArcSwap;
use futures::Stream;
use futures::task::AtomicWaker;
use resilience_breaker::BreakerHandle;
use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    fmt,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::oneshot;
use tower::discover::Change;

/// The endpoints a route balances over now, each with its breaker. Discovery updates it as
/// the set changes, so the admin server and the all-breakers-open check see the current set.
#[derive(Clone, Default)]
pub(crate) struct LiveEndpoints(
    Arc<ArcSwap<BTreeMap<SocketAddr, BreakerHandle>>>,
    /// Whether discovery has looked at least once, so that an empty set means none found
    /// rather than not looked for yet.
    Arc<AtomicBool>,
);

impl LiveEndpoints {
    /// The endpoints now, each with its breaker, in address order.
    #[must_use]
    pub(crate) fn snapshot(&self) -> Arc<BTreeMap<SocketAddr, BreakerHandle>> {
        self.0.load_full()
    }

    /// The addresses now, in order.
    #[cfg(any(test, feature = "proxy"))]
    #[must_use]
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.0.load().keys().copied().collect()
    }

    /// Whether discovery has looked and found no endpoint at all.
    pub(crate) fn none_found(&self) -> bool {
        self.1.load(Ordering::Acquire) && self.0.load().is_empty()
    }

    /// Discovery has looked once (whatever it found).
    fn looked(&self) {
        self.1.store(true, Ordering::Release);
    }

    /// For a balancer's calls waiting for an endpoint: [`NoEndpoints`] once discovery has
    /// looked and found none, so that they stop waiting as new calls are refused. Discovery
    /// wakes the balancers when that becomes so.
    pub(crate) fn give_up(&self) -> GiveUp {
        let live = self.clone();
        Arc::new(move || live.none_found().then(|| NoEndpoints.into()))
    }

    /// Whether there is at least one endpoint and every one's breaker is in `open`.
    pub(crate) fn all(&self, open: impl Fn(&BreakerHandle) -> bool) -> bool {
        let endpoints = self.0.load();
        !endpoints.is_empty() && endpoints.values().all(open)
    }

    pub(crate) fn insert(&self, addr: SocketAddr, breaker: BreakerHandle) {
        self.0.rcu(|endpoints| {
            let mut endpoints = BTreeMap::clone(endpoints);
            endpoints.insert(addr, breaker.clone());
            endpoints
        });
    }

    fn remove(&self, addr: SocketAddr) {
        self.0.rcu(|endpoints| {
            let mut endpoints = BTreeMap::clone(endpoints);
            endpoints.remove(&addr);
            endpoints
        });
    }
}

impl fmt::Debug for LiveEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.load().iter()).finish()
    }
}

/// Where a route's endpoints come from, when they can change.
pub(crate) enum Source {
    /// Every A and AAAA record of a name, at a port.
    #[cfg(feature = "dns")]
    Dns(Box<DnsSource>),
    /// The addresses listed in a file.
    File {
        path: PathBuf,
        poll: Duration,
        /// The content last applied (or found wrong), and the content last read.
        applied: Vec<u8>,
        seen: Vec<u8>,
    },
}

impl Source {
    /// A `dns:` source, asking the resolver of `config`, and the set that the same name last
    /// resolved to in this process (empty if none): a route rebuilt by a reload starts with
    /// it, so it has endpoints at once, even while lookups fail.
    #[cfg(feature = "dns")]
    pub(crate) fn dns(
        config: &DiscoveryConfig,
        name: &str,
        port: u16,
    ) -> Result<(Self, Vec<SocketAddr>), String> {
        DnsSource::new(config, name, port)
            .map(|(dns, last_good)| (Self::Dns(Box::new(dns)), last_good))
    }

    /// A `file:` source and the addresses it lists now. The file is read here, so the route
    /// starts with its endpoints (or does not start).
    pub(crate) fn file(
        config: &DiscoveryConfig,
        path: PathBuf,
    ) -> Result<(Self, Vec<SocketAddr>), String> {
        let content = std::fs::read(&path)
            .map_err(|e| format!("\"file:{}\": cannot read the file: {e}", path.display()))?;
        let addrs = parse_endpoints_file(&String::from_utf8_lossy(&content))
            .map_err(|e| format!("\"file:{}\": {e}", path.display()))?;
        let source = Self::File {
            path,
            poll: config.file_poll,
            applied: content.clone(),
            seen: content,
        };
        Ok((source, addrs))
    }

    /// Looks again: the new set if there is one to apply, and how long to wait before the
    /// next look.
    async fn refresh(&mut self, route: &str) -> (Option<BTreeSet<SocketAddr>>, Duration) {
        match self {
            #[cfg(feature = "dns")]
            Self::Dns(dns) => dns.refresh(route).await,
            Self::File {
                path,
                poll,
                applied,
                seen,
            } => {
                let content = match tokio::fs::read(&*path).await {
                    Ok(content) => content,
                    Err(error) => {
                        // Logged and counted once per failure, not once per poll.
                        if !seen.is_empty() {
                            file_failure(route, path, &format!("cannot read the file: {error}"));
                            seen.clear();
                        }
                        return (None, *poll);
                    }
                };
                // Applied once it reads the same twice in a row: not while being written.
                let stable = content == *seen;
                *seen = content;
                if !stable || *seen == *applied {
                    return (None, *poll);
                }
                applied.clone_from(seen);
                match parse_endpoints_file(&String::from_utf8_lossy(applied)) {
                    Ok(addrs) => (Some(addrs.into_iter().collect()), *poll),
                    Err(error) => {
                        file_failure(route, path, &error);
                        (None, *poll)
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "dns")]
            Self::Dns(dns) => fmt::Debug::fmt(dns, f),
            Self::File { path, .. } => write!(f, "file:{}", path.display()),
        }
    }
}

fn file_failure(route: &str, path: &std::path::Path, error: &str) {
    tracing::warn!(route, path = %path.display(), error, "endpoints file not used; keeping the endpoints found before");
    metrics::counter!("sidecar_endpoint_file_failures_total", "route" => route.to_owned())
        .increment(1);
}

/// A balancer's view of discovery: the changes to its set of endpoints, keyed by address.
/// Dropping every balancer's view stops the discovery task.
pub(crate) struct Discovered<S> {
    changes: Arc<Pending<S>>,
    /// Dropped with the last balancer: the discovery task sees it gone and stops.
    _route: Arc<oneshot::Sender<()>>,
}

impl<S> Stream for Discovered<S> {
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(change) = self.changes.take() {
            return Poll::Ready(Some(Ok(change)));
        }
        self.changes.waker.register(cx.waker());
        // A change sent between the first look and the registration would not wake us.
        match self.changes.take() {
            Some(change) => Poll::Ready(Some(Ok(change))),
            None => Poll::Pending,
        }
    }
}

/// The changes on their way to the balancer, at most one per address (the latest). The
/// balancer reads them only when it has a request in hand, so on an idle route a change
/// replaces the one before it for the same address rather than queue behind it: what waits
/// is bounded by the number of addresses, however often the records flap.
struct Pending<S> {
    changes: Mutex<BTreeMap<SocketAddr, Change<SocketAddr, S>>>,
    waker: AtomicWaker,
}

impl<S> Default for Pending<S> {
    fn default() -> Self {
        Self {
            changes: Mutex::new(BTreeMap::new()),
            waker: AtomicWaker::new(),
        }
    }
}

impl<S> Pending<S> {
    /// Queues `change`, replacing any change of the same address not yet taken. (The
    /// balancer takes an insert of an address it has as a replacement, and ignores the
    /// removal of one it does not.)
    fn send(&self, change: Change<SocketAddr, S>) {
        let addr = match &change {
            Change::Insert(addr, _) | Change::Remove(addr) => *addr,
        };
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr, change);
        self.waker.wake();
    }

    /// The next change: insertions first, so that the balancer is never left empty.
    fn take(&self) -> Option<Change<SocketAddr, S>> {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let insert = changes
            .iter()
            .find(|(_, change)| matches!(change, Change::Insert(..)))
            .map(|(addr, _)| *addr);
        match insert {
            Some(addr) => changes.remove(&addr),
            None => changes.pop_first().map(|(_, change)| change),
        }
    }
}

impl<S> fmt::Debug for Discovered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered").finish_non_exhaustive()
    }
}

/// Starts discovering the endpoints of `source` for `route`, beginning with `initial`, for
/// `balancers` balancers, each with its own view of the changes: `make` builds each new
/// endpoint's service for each of them (around one breaker, which they share, recorded in
/// `live`). Must run inside a tokio runtime.
pub(crate) fn spawn<S, F>(
    route: &str,
    mut source: Source,
    initial: Vec<SocketAddr>,
    live: LiveEndpoints,
    balancers: usize,
    make: F,
) -> Vec<Discovered<S>>
where
    S: Send + 'static,
    F: FnMut(SocketAddr) -> (Vec<S>, BreakerHandle) + Send + 'static,
{
    let changes: Vec<Arc<Pending<S>>> = (0..balancers).map(|_| Arc::default()).collect();
    let (alive, mut gone) = oneshot::channel::<()>();
    let alive = Arc::new(alive);
    let mut tracker = Tracker {
        route: route.to_owned(),
        live,
        make,
        tx: changes.clone(),
    };
    tracker.apply(initial.into_iter().collect());
    tracing::debug!(route, ?source, "discovering endpoints");
    tokio::spawn(async move {
        let route = tracker.route.clone();
        loop {
            let (found, wait) = tokio::select! {
                _ = &mut gone => break,
                found = source.refresh(&route) => found,
            };
            if let Some(addrs) = found {
                tracker.apply(addrs);
            }
            // After applying what was found, so that an empty set means none found.
            tracker.live.looked();
            if tracker.live.none_found() {
                // Calls waiting for an endpoint learn there is none (`LiveEndpoints::give_up`).
                tracker.tx.iter().for_each(|changes| changes.waker.wake());
            }
            tokio::select! {
                _ = &mut gone => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!(route, "route gone: discovery stopped");
    });
    changes
        .into_iter()
        .map(|changes| Discovered {
            changes,
            _route: alive.clone(),
        })
        .collect()
}

/// The discovery task's state: the set the balancers have, and how to change it.
struct Tracker<S, F> {
    route: String,
    live: LiveEndpoints,
    make: F,
    /// Each balancer's changes.
    tx: Vec<Arc<Pending<S>>>,
}

impl<S, F: FnMut(SocketAddr) -> (Vec<S>, BreakerHandle)> Tracker<S, F> {
    /// Sends the balancer the difference between its set and `addrs`: additions first.
    fn apply(&mut self, addrs: BTreeSet<SocketAddr>) {
        let current = self.live.snapshot();
        let added: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !current.contains_key(a))
            .copied()
            .collect();
        let removed: Vec<SocketAddr> = current
            .keys()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return;
        }
        for &addr in &added {
            let (services, breaker) = (self.make)(addr);
            self.live.insert(addr, breaker);
            for (tx, service) in self.tx.iter().zip(services) {
                tx.send(Change::Insert(addr, service));
            }
        }
        for &addr in &removed {
            // Dropping the balancers' services drops the endpoint's breaker with them.
            self.live.remove(addr);
            for tx in &self.tx {
                tx.send(Change::Remove(addr));
            }
        }
        let route = self.route.clone();
        tracing::info!(route, ?added, ?removed, now = ?addrs, "endpoints changed");
        for (change, count) in [("added", added.len()), ("removed", removed.len())] {
            if count > 0 {
                metrics::counter!("sidecar_endpoint_changes_total", "route" => route.clone(), "change" => change)
                    .increment(count as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;
    use super::{LiveEndpoints, Tracker};
    use resilience_breaker::{BreakerConfig, BreakerHandle, State};
    use std::{
        collections::BTreeSet,
        net::SocketAddr,
        sync::{Arc, Mutex},
    };
    use tower::{Layer, discover::Change};

    fn breaker() -> BreakerHandle {
        BreakerConfig::default()
            .layer()
            .unwrap()
            .layer(())
            .handle()
            .clone()
    }

    fn set(addrs: &[SocketAddr]) -> BTreeSet<SocketAddr> {
        addrs.iter().copied().collect()
    }

    #[test]
    fn only_the_difference_is_sent_and_endpoints_that_stay_are_kept() {
        let [a, b, c]: [SocketAddr; 3] =
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| a.parse().unwrap());
        let made = Arc::new(Mutex::new(Vec::new()));
        let live = LiveEndpoints::default();
        let pending = Arc::new(Pending::default());
        let mut tracker = Tracker {
            route: "orders".to_owned(),
            live: live.clone(),
            make: {
                let made = made.clone();
                move |addr| {
                    made.lock().unwrap().push(addr);
                    (vec![addr], breaker())
                }
            },
            tx: vec![pending.clone()],
        };
        tracker.apply(set(&[a, b]));
        // Marks b's breaker, to tell it from a new one.
        live.snapshot()[&b].force_open();
        tracker.apply(set(&[b, c]));
        tracker.apply(set(&[c, b]));

        // b was built once, and keeps its breaker; a's is gone with it.
        assert_eq!(*made.lock().unwrap(), [a, b, c]);
        assert_eq!(live.addrs(), [b, c]);
        assert_eq!(live.snapshot()[&b].state(), State::ForcedOpen);
        assert_eq!(live.snapshot()[&c].state(), State::Closed);
        let mut changes = Vec::new();
        while let Some(change) = pending.take() {
            changes.push(match change {
                Change::Insert(addr, service) => {
                    assert_eq!(addr, service);
                    format!("+{addr}")
                }
                Change::Remove(addr) => format!("-{addr}"),
            });
        }
        // Additions before removals, so the balancer is never left empty by a change; a was
        // added and removed before the balancer looked, so only its removal is left.
        assert_eq!(changes, ["+10.0.0.2:80", "+10.0.0.3:80", "-10.0.0.1:80"]);
    }

    #[test]
    fn records_flapping_on_an_idle_route_leave_one_change_per_address() {
        let [a, b]: [SocketAddr; 2] = ["10.0.0.1:80", "10.0.0.2:80"].map(|a| a.parse().unwrap());
        let pending = Arc::new(Pending::default());
        let mut tracker = Tracker {
            route: "orders".to_owned(),
            live: LiveEndpoints::default(),
            make: |addr| (vec![addr], breaker()),
            tx: vec![pending.clone()],
        };
        // Nothing reads the changes (no request comes) while the records flap 1000 times,
        // ending with a alone.
        let (one, two) = (set(&[a]), set(&[a, b]));
        for i in 0..=1000 {
            tracker.apply(if i % 2 == 0 { one.clone() } else { two.clone() });
        }
        assert_eq!(pending.changes.lock().unwrap().len(), 2);
        // The last word for each address: a is in, b was removed.
        assert!(matches!(pending.take(), Some(Change::Insert(addr, _)) if addr == a));
        assert!(matches!(pending.take(), Some(Change::Remove(addr)) if addr == b));
        assert!(pending.take().is_none());
    }

    #[test]
    fn all_open_needs_at_least_one_endpoint() {
        let live = LiveEndpoints::default();
        assert!(!live.all(|_| true));
        live.insert("10.0.0.1:80".parse().unwrap(), breaker());
        assert!(live.all(|_| true));
        assert!(!live.all(|_| false));
    }
}
