//! `GET /status.json`, and the figures of the status page: the golden signals of each listener
//! over the last minute and the last five, each endpoint's breaker and load, our identity and
//! its certificate, and the process. Every list in it is bounded by what exists (listeners,
//! endpoints) or by a fixed size (transitions, peers, the five-minute series).

use super::{AdminState, RouteBreaker, process};
use crate::proxy::Snapshot;
use resilience_breaker::{BreakerHandle, Transition};
use resilience_mtls::Credentials;
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::SystemTime,
};
use tokio::{sync::broadcast, time::Instant};

/// Transitions kept per breaker.
const TRANSITIONS: usize = 8;

/// Everything `/status.json` reports.
#[derive(Debug, Serialize)]
pub(super) struct Status {
    pub(super) process: ProcessView,
    pub(super) identity: Option<IdentityView>,
    pub(super) listeners: Vec<ListenerView>,
    pub(super) endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
pub(super) struct ProcessView {
    pub(super) version: &'static str,
    pub(super) status: &'static str,
    pub(super) uptime_seconds: u64,
    pub(super) worker_threads: usize,
    pub(super) rss_bytes: Option<u64>,
    pub(super) cpu_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct IdentityView {
    pub(super) identity: String,
    pub(super) not_before: String,
    pub(super) not_after: String,
    pub(super) expires_in_seconds: u64,
    /// The share of the certificate's lifetime still ahead, from 0 to 1.
    pub(super) lifetime_left: f64,
    /// Less than 20 % of the lifetime is left: rotation is late.
    pub(super) expiring_soon: bool,
    /// The subjects of the CAs we trust.
    pub(super) trust: Vec<String>,
    /// Each federated trust domain, with the subjects of its bundle's CAs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) trust_domains: BTreeMap<String, Vec<String>>,
    /// The certificate revocation lists in force.
    pub(super) crls: Vec<CrlView>,
}

/// A certificate revocation list in force.
#[derive(Debug, Serialize)]
pub(super) struct CrlView {
    pub(super) issuer: String,
    /// When its next update is due (RFC 3339), if it says.
    pub(super) next_update: Option<String>,
    /// Past its next update: it still applies, but revocations since are unknown.
    pub(super) overdue: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct ListenerView {
    pub(super) name: String,
    pub(super) address: Option<SocketAddr>,
    pub(super) connections_open: u64,
    /// The same, by worker thread (each accepts on a socket of its own), worker 0 first.
    pub(super) connections_by_worker: Vec<u64>,
    /// Retries the route's budget would allow now (outbound routes).
    pub(super) retry_budget: Option<u64>,
    #[serde(flatten)]
    pub(super) signals: Snapshot,
}

#[derive(Debug, Serialize)]
pub(super) struct EndpointView {
    pub(super) route: String,
    pub(super) endpoint: SocketAddr,
    pub(super) state: &'static str,
    pub(super) calls: u32,
    pub(super) failure_rate: f64,
    pub(super) slow_call_rate: f64,
    /// The balancer's estimate of the endpoint's pending work (peak-EWMA latency times
    /// requests in flight, in nanoseconds); `None` for a route of one endpoint, which has no
    /// balancer, or before the balancer has looked at it.
    pub(super) load: Option<f64>,
    /// The latest transitions, newest first.
    pub(super) transitions: Vec<TransitionView>,
}

#[derive(Debug, Serialize)]
pub(super) struct TransitionView {
    pub(super) from: &'static str,
    pub(super) to: &'static str,
    pub(super) seconds_ago: f64,
}

/// The latest transitions of each breaker in use, kept by watching each one's broadcast of
/// transitions from the first time it is seen; breakers no longer in use are forgotten.
#[derive(Debug, Default)]
pub(crate) struct Transitions(Mutex<HashMap<String, Watched>>);

#[derive(Debug)]
struct Watched {
    /// The breaker watched: a reload builds a new one under the same name.
    handle: BreakerHandle,
    receiver: broadcast::Receiver<Transition>,
    recent: VecDeque<Transition>,
}

impl Transitions {
    /// Takes in what each breaker of `breakers` announced since the last call.
    pub(super) fn refresh(&self, breakers: &[RouteBreaker]) {
        let mut watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watched.retain(|name, _| breakers.iter().any(|b| b.handle.name() == name));
        for breaker in breakers {
            let entry = watched
                .entry(breaker.handle.name().to_owned())
                .or_insert_with(|| Watched {
                    handle: breaker.handle.clone(),
                    receiver: breaker.handle.subscribe(),
                    recent: VecDeque::with_capacity(TRANSITIONS),
                });
            if !entry.handle.same_breaker(&breaker.handle) {
                // Rebuilt by a reload: watch the new one, keeping what the old one went through.
                entry.handle = breaker.handle.clone();
                entry.receiver = breaker.handle.subscribe();
            }
            loop {
                match entry.receiver.try_recv() {
                    Ok(transition) => {
                        if entry.recent.len() == TRANSITIONS {
                            entry.recent.pop_front();
                        }
                        entry.recent.push_back(transition);
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn recent(&self, handle: &BreakerHandle, now: Instant) -> Vec<TransitionView> {
        let watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watched.get(handle.name()).map_or_else(Vec::new, |w| {
            w.recent
                .iter()
                .rev()
                .map(|t| TransitionView {
                    from: t.from.as_str(),
                    to: t.to.as_str(),
                    seconds_ago: now.saturating_duration_since(t.at).as_secs_f64(),
                })
                .collect()
        })
    }
}

/// The status now.
pub(super) fn status(state: &AdminState) -> Status {
    let now = Instant::now();
    let serving = state.serving.load();
    let breakers = serving.breakers();
    state.transitions.refresh(&breakers);
    let loads = endpoint_loads(state);
    let listeners = serving
        .listener_metrics
        .iter()
        .map(|metrics| {
            let name = metrics.name().to_owned();
            let address = serving
                .listeners
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, addr)| *addr);
            let retry_budget = name.strip_prefix("outbound/").and_then(|route| {
                serving
                    .routes
                    .iter()
                    .find(|r| r.route == route)
                    .and_then(|r| r.budget.as_ref())
                    .map(|b| b.available())
            });
            ListenerView {
                name,
                address,
                connections_open: metrics.open.now(),
                connections_by_worker: metrics.open.by_worker(state.workers),
                retry_budget,
                signals: metrics.signals().snapshot(now),
            }
        })
        .collect::<Vec<_>>();
    let mut listeners = listeners;
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let endpoints = breakers
        .iter()
        .map(|breaker| {
            let counts = breaker.handle.counts();
            EndpointView {
                route: breaker.route.clone(),
                endpoint: breaker.endpoint,
                state: breaker.handle.state().as_str(),
                calls: counts.calls,
                failure_rate: counts.failure_rate(),
                slow_call_rate: if counts.calls == 0 {
                    0.0
                } else {
                    f64::from(counts.slow) / f64::from(counts.calls)
                },
                load: loads
                    .get(&(breaker.route.clone(), breaker.endpoint.to_string()))
                    .copied(),
                transitions: state.transitions.recent(&breaker.handle, now),
            }
        })
        .collect();
    Status {
        process: ProcessView {
            version: env!("CARGO_PKG_VERSION"),
            status: state.status(),
            uptime_seconds: now.saturating_duration_since(state.started).as_secs(),
            worker_threads: state.workers,
            rss_bytes: process::resident_bytes(),
            cpu_seconds: process::cpu_seconds(),
        },
        identity: state.credentials.as_ref().map(identity),
        listeners,
        endpoints,
    }
}

fn identity(credentials: &Credentials) -> IdentityView {
    let material = credentials.current();
    #[allow(
        clippy::disallowed_methods,
        reason = "certificate validity is wall-clock time"
    )]
    let now = SystemTime::now();
    let lifetime_left = material.lifetime_left(now);
    IdentityView {
        identity: material.identity().to_string(),
        not_before: humantime::format_rfc3339_seconds(material.not_before()).to_string(),
        not_after: humantime::format_rfc3339_seconds(material.not_after()).to_string(),
        expires_in_seconds: material.expires_in(now).as_secs(),
        lifetime_left,
        expiring_soon: lifetime_left < 0.2,
        trust: material.trust_subjects(),
        trust_domains: material.trust_domain_subjects(),
        crls: material
            .revocation_lists()
            .map(|list| CrlView {
                issuer: list.issuer().to_owned(),
                next_update: list
                    .next_update()
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                overdue: list.is_stale(now),
            })
            .collect(),
    }
}

/// The balancer's load estimate of each endpoint, `(route, endpoint) -> cost`, from the
/// `sidecar_endpoint_load` gauges (see the outbound stack); empty without a recorder.
fn endpoint_loads(state: &AdminState) -> HashMap<(String, String), f64> {
    let Some(handle) = &state.metrics else {
        return HashMap::new();
    };
    handle
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("sidecar_endpoint_load{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            Some((
                (label("route")?, label("endpoint")?),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}
