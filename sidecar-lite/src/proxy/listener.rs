//! Listeners: accept connections (in plaintext or mTLS), serve HTTP/1.1 and HTTP/2 on them,
//! and shut down gracefully.

use super::{
    activity::Activity,
    admission::Admission,
    connection::{CLOSE_GRACE, ConnectionSettings, Control, serve_connection},
    headers::forwarded_element,
};
use crate::{
    config::LimitsConfig,
    transport::{Coalesced, ProxyBody, worker},
};
use http::{HeaderValue, Request, Response};
use hyper::{body::Incoming, service::Service};
use metrics::Gauge;
use resilience_mtls::MtlsAcceptor;
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, task::JoinSet};

/// How a listener serves: its name (in logs and metrics), its limits and what counts against
/// them, how long its connections may take to finish when it drains, and the gauge of its open
/// connections.
#[derive(Debug, Clone)]
pub(crate) struct Listening {
    pub(crate) name: Arc<str>,
    pub(crate) limits: LimitsConfig,
    pub(crate) admission: Arc<Admission>,
    pub(crate) grace: Duration,
    pub(crate) open: OpenConnections,
    /// Run when the listener stops accepting, once its socket is closed: whatever else keeps
    /// the address open (a reload's spare descriptors of it) lets it go too.
    pub(crate) closed: OnClosed,
}

/// See [`Listening::closed`]; by default nothing.
#[derive(Clone, Default)]
pub(crate) struct OnClosed(pub(crate) Option<Arc<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for OnClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OnClosed").field(&self.0.is_some()).finish()
    }
}

/// One connection counted in [`OpenConnections`] while it lives.
struct OpenConnection<'a>(&'a OpenConnections);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.gauge.decrement(1.0);
        self.0.here().fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections of a listener: the `sidecar_connections_open` gauge for `/metrics`,
/// and the same count by worker for the status page (a gauge cannot be read back); and of
/// those, the WebSocket tunnels (`sidecar_tunnels_open`).
#[derive(Debug, Clone)]
pub(crate) struct OpenConnections {
    gauge: Gauge,
    by_worker: Arc<[AtomicU64]>,
    tunnels: Gauge,
}

/// A tunnel counted in [`OpenConnections`] while it lives.
pub(super) struct OpenTunnel(Gauge);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl OpenConnections {
    pub(crate) fn new(gauge: Gauge, tunnels: Gauge) -> Self {
        Self {
            gauge,
            by_worker: (0..worker::slots()).map(|_| AtomicU64::new(0)).collect(),
            tunnels,
        }
    }

    /// Counts a tunnel open until the returned guard is dropped.
    pub(super) fn tunnel(&self) -> OpenTunnel {
        self.tunnels.increment(1.0);
        OpenTunnel(self.tunnels.clone())
    }

    /// The count of the calling thread's worker.
    fn here(&self) -> &AtomicU64 {
        &self.by_worker[worker::index() % self.by_worker.len()]
    }

    /// Counts a connection open until the returned guard is dropped: at its end, or when its
    /// task is cut at the drain grace (aborted, it never reaches its end).
    fn opened(&self) -> OpenConnection<'_> {
        self.gauge.increment(1.0);
        self.here().fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// Connections open now.
    pub(crate) fn now(&self) -> u64 {
        self.by_worker
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections open now on each worker, worker 0 first.
    pub(crate) fn by_worker(&self, workers: usize) -> Vec<u64> {
        self.by_worker
            .iter()
            .take(workers)
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Marks the gauges as in use without changing them (see `[admin] metrics_idle_timeout`).
    pub(crate) fn touch(&self) {
        self.gauge.increment(0.0);
        self.tunnels.increment(0.0);
    }
}

/// The address of the client at the other end of the connection, given to the service made
/// for it (see [`serve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    pub(crate) addr: SocketAddr,
    /// The client's IP as an `x-forwarded-for` element, formatted once per connection: each
    /// request's copy shares its bytes.
    pub(crate) forwarded: HeaderValue,
}

impl ClientAddr {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            forwarded: forwarded_element(addr.ip()),
        }
    }
}

/// Serves what `serve_client` makes for each connection's client on every connection accepted
/// from `listener` until `shutdown` completes,
/// then waits up to `grace` for the connections in flight to finish, and closes the rest.
/// Each connection speaks TLS or plaintext as `acceptor` says when it is accepted (`None`:
/// plaintext), so a reload can change the mTLS mode without rebinding.
///
/// A listener served by several workers runs this on each, with a socket of its own, and one
/// [`Admission`] for all: at most `limits.max_connections` are open (and
/// `max_connections_per_source` from one address); at the limit a new connection takes the
/// place of the oldest one that has not sent a request yet, or, when every one has, is closed
/// at once.
pub(crate) async fn serve<S>(
    setup: Listening,
    listener: TcpListener,
    acceptor: impl Fn() -> Option<Arc<MtlsAcceptor>>,
    serve_client: impl Fn(ClientAddr) -> S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Listening {
        name,
        limits,
        admission,
        grace,
        open,
        closed,
    } = setup;
    let settings = Arc::new(ConnectionSettings::new(&limits));
    let mut connections = JoinSet::new();
    // Each connection's activity, to drain them all at shutdown; closed ones are pruned as
    // the list grows past twice the tasks.
    let mut activities: Vec<Weak<Activity>> = Vec::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            // Shutdown first: once a reload has told this listener to stop, it accepts
            // nothing more, so a connection made after the reload returns is the new
            // listener's, on an address it took over (both hold the one socket).
            biased;
            () = &mut shutdown => break,
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
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let activity = Activity::new();
        let admitted = match admission.admit(remote.ip(), &activity) {
            Ok(admitted) => admitted,
            Err(reason) => {
                // Over a limit: close at once rather than queue; the client may retry elsewhere.
                metrics::counter!("sidecar_connections_refused_total", "listener" => name.to_string(), "reason" => reason)
                    .increment(1);
                tracing::debug!(listener = &*name, %remote, reason, "connection limit reached; closing");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tcp = Coalesced::new(tcp);
        let service = serve_client(ClientAddr::new(remote));
        let acceptor = acceptor();
        let settings = settings.clone();
        if activities.len() >= 2 * connections.len() + 64 {
            activities.retain(|activity| activity.strong_count() > 0);
        }
        activities.push(Arc::downgrade(&activity));
        let control = Control {
            activity,
            open: open.clone(),
        };
        let name = name.clone();
        let open = open.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            let _open = open.opened();
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
        });
    }
    tracing::info!(listener = &*name, "draining connections");
    for activity in activities.iter().filter_map(Weak::upgrade) {
        activity.drain();
    }
    // Free the address at once, so a reload can bind it again; after the connections are
    // told, so that a caller that finds it closed knows they are draining.
    drop(listener);
    if let Some(closed) = &closed.0 {
        closed();
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            listener = &*name,
            ?grace,
            "grace period over; closing the rest"
        );
    }
    connections.shutdown().await;
    // The HTTP/2 streams of the connections just cut end on their own workers: wait for them,
    // so that their access-log lines are sent before the stop writes the log out.
    if !settings.streams.ended(CLOSE_GRACE).await {
        tracing::warn!(
            listener = &*name,
            "HTTP/2 streams still running after the drain"
        );
    }
}
