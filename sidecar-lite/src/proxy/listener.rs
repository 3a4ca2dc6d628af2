//! Listeners: accept connections (in plaintext or mTLS), serve HTTP/1.1 and HTTP/2 on them,
//! and shut down gracefully.

use super::{
    activity::Activity,
    connection::{ConnectionSettings, Control, serve_connection},
};
use crate::{config::LimitsConfig, transport::ProxyBody};
use http::{Request, Response};
use hyper::body::Incoming;
use metrics::Gauge;
use resilience_mtls::MtlsAcceptor;
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::Service;

/// How a listener serves: its name (in logs and metrics), its limits, how long its connections
/// may take to finish when it drains, and the gauge of its open connections.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) name: Arc<str>,
    pub(crate) limits: LimitsConfig,
    pub(crate) grace: Duration,
    pub(crate) open: OpenConnections,
}

/// The open connections of a listener: the `sidecar_connections_open` gauge for `/metrics`,
/// and the same count for the status page (a gauge cannot be read back).
#[derive(Debug, Clone)]
pub(crate) struct OpenConnections {
    gauge: Gauge,
    count: Arc<AtomicU64>,
}

impl OpenConnections {
    pub(crate) fn new(gauge: Gauge) -> Self {
        Self {
            gauge,
            count: Arc::default(),
        }
    }

    fn opened(&self) {
        self.gauge.increment(1.0);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.gauge.decrement(1.0);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub(crate) fn now(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Marks the gauge as in use without changing it (see `[admin] metrics_idle_timeout`).
    pub(crate) fn touch(&self) {
        self.gauge.increment(0.0);
    }
}

/// The address of the client at the other end of the connection, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Serves `service` on every connection accepted from `listener` until `shutdown` completes,
/// then waits up to `grace` for the connections in flight to finish, and closes the rest.
/// Each connection speaks TLS or plaintext as `acceptor` says when it is accepted (`None`:
/// plaintext), so a reload can change the mTLS mode without rebinding.
///
/// At most `limits.max_connections` are open (and `max_connections_per_source` from one
/// address): at the limit a new connection takes the place of the oldest one that has not
/// sent a request yet, or, when every one has, is closed at once.
pub(crate) async fn serve<S>(
    setup: Listening,
    listener: TcpListener,
    acceptor: impl Fn() -> Option<Arc<MtlsAcceptor>>,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Listening {
        name,
        limits,
        grace,
        open,
    } = setup;
    let (drain, draining) = watch::channel(false);
    let settings = Arc::new(ConnectionSettings::new(&limits));
    let mut connections = JoinSet::new();
    let mut silent = SilentConnections::default();
    let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(listener = &*name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections so the set stays as small as what is open.
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(ip) = ended {
                    release(&mut per_source, ip);
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        let from_source = per_source.get(&remote.ip()).copied().unwrap_or(0);
        let refused = if limits
            .max_connections_per_source
            .is_some_and(|cap| from_source >= cap)
        {
            Some("per-source")
        } else if connections.len() >= limits.max_connections && !silent.evict_oldest() {
            Some("limit")
        } else {
            None
        };
        if let Some(reason) = refused {
            // Over a limit: close at once rather than queue; the client may retry elsewhere.
            metrics::counter!("sidecar_connections_refused_total", "listener" => name.to_string(), "reason" => reason)
                .increment(1);
            tracing::debug!(listener = &*name, %remote, reason, "connection limit reached; closing");
            drop(tcp);
            continue;
        }
        *per_source.entry(remote.ip()).or_insert(0) += 1;
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        silent.push(&activity);
        let service = service.clone();
        let acceptor = acceptor();
        let settings = settings.clone();
        let control = Control {
            activity,
            drain: draining.clone(),
        };
        let name = name.clone();
        let open = open.clone();
        connections.spawn(async move {
            open.opened();
            match acceptor {
                None => {
                    serve_connection(&name, remote, tcp, None, service, &settings, control).await;
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let peer = stream.peer_identity().cloned();
                        serve_connection(&name, remote, stream, peer, service, &settings, control)
                            .await;
                    }
                    Err(error) => {
                        tracing::debug!(listener = &*name, %remote, %error, "handshake failed");
                    }
                },
            }
            open.closed();
            remote.ip()
        });
    }
    // Free the address at once, so a reload can bind it again.
    drop(listener);
    tracing::info!(listener = &*name, "draining connections");
    drain.send_replace(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            listener = &*name,
            ?grace,
            "grace period over; closing the rest"
        );
    }
    connections.shutdown().await;
}

fn release(per_source: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(count) = per_source.get_mut(&ip) {
        *count -= 1;
        if *count == 0 {
            per_source.remove(&ip);
        }
    }
}

/// The connections that may not have sent a request yet, oldest first. Entries of closed
/// connections, and of ones that have since sent a request, are dropped as they are met.
#[derive(Debug, Default)]
struct SilentConnections(VecDeque<Weak<Activity>>);

impl SilentConnections {
    fn push(&mut self, activity: &Arc<Activity>) {
        // Weed out the ones that have spoken or gone, once they outnumber what can be open:
        // the list stays bounded by the connection limit, at constant cost per connection.
        if self.0.len() >= self.0.capacity().max(64) {
            self.0
                .retain(|weak| weak.upgrade().is_some_and(|a| a.never_requested()));
        }
        self.0.push_back(Arc::downgrade(activity));
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
