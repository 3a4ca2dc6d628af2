//! Listeners: accept connections (in plaintext or mTLS), serve HTTP/1.1 and HTTP/2 on them,
//! and shut down gracefully.

use super::framing::{Framing, FramingGuard};
use crate::{
    config::LimitsConfig,
    transport::{ProxyBody, local_response},
};
use http::{HeaderValue, Request, Response, header::CONNECTION};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use resilience_core::{LocalReply, Reason};
use resilience_mtls::{Identity, MtlsAcceptor};
use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    task::JoinSet,
};
use tower::{Service, ServiceExt};

/// The address of the client at the other end of the connection, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Serves `service` on every connection accepted from `listener` until `shutdown` completes,
/// then waits up to `grace` for the connections in flight to finish, and closes the rest.
/// Each connection speaks TLS or plaintext as `acceptor` says when it is accepted (`None`:
/// plaintext), so a reload can change the mTLS mode without rebinding.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S>(
    name: Arc<str>,
    listener: TcpListener,
    acceptor: impl Fn() -> Option<Arc<MtlsAcceptor>>,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: LimitsConfig,
) where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let settings = Arc::new(ConnectionSettings::new(&limits));
    let open = metrics::gauge!("sidecar_connections_open", "listener" => name.to_string());
    let mut connections = JoinSet::new();
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
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        if connections.len() >= limits.max_connections {
            // Over the limit: close at once rather than queue; the client may retry elsewhere.
            metrics::counter!("sidecar_connections_refused_total", "listener" => name.to_string())
                .increment(1);
            tracing::debug!(listener = &*name, %remote, "connection limit reached; closing");
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let acceptor = acceptor();
        let settings = settings.clone();
        let watcher = graceful.watcher();
        let name = name.clone();
        let open = open.clone();
        connections.spawn(async move {
            open.increment(1.0);
            match acceptor {
                None => {
                    serve_connection(&name, remote, tcp, None, service, &settings, watcher).await
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let peer = stream.peer_identity().cloned();
                        serve_connection(&name, remote, stream, peer, service, &settings, watcher)
                            .await;
                    }
                    Err(error) => {
                        tracing::debug!(listener = &*name, %remote, %error, "handshake failed");
                    }
                },
            }
            open.decrement(1.0);
        });
    }
    // Free the address at once, so a reload can bind it again.
    drop(listener);
    tracing::info!(listener = &*name, "draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = &*name,
            ?grace,
            "grace period over; closing the rest"
        );
    }
    connections.shutdown().await;
}

/// Streams a client may reset before the server has accepted them (HTTP/2 rapid reset,
/// CVE-2023-44487); beyond it the connection is closed.
const MAX_PENDING_RESETS: usize = 20;
/// Idle HTTP/2 connections are pinged this often, and closed if the ping is not answered
/// within the same time.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How every connection of a listener is served.
struct ConnectionSettings {
    builder: auto::Builder<TokioExecutor>,
    max_head_bytes: usize,
    max_headers: usize,
}

impl ConnectionSettings {
    fn new(limits: &LimitsConfig) -> Self {
        Self {
            builder: hardened_builder(limits),
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
        }
    }
}

/// An HTTP/1.1 and HTTP/2 server builder with `limits` applied.
fn hardened_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_INTERVAL);
    builder
}

/// Serves one accepted connection, plaintext or TLS, until it closes or the drain ends it.
async fn serve_connection<IO, S>(
    name: &str,
    remote: SocketAddr,
    io: IO,
    peer: Option<Identity>,
    service: S,
    settings: &ConnectionSettings,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let framing = Arc::new(Framing::default());
    let io = FramingGuard::new(
        io,
        framing.clone(),
        settings.max_head_bytes,
        settings.max_headers,
    );
    let listener: Arc<str> = name.into();
    let per_request = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let rejected = framing
            .next_is_ambiguous()
            .then(|| ambiguous_framing(&listener, remote));
        req.extensions_mut().insert(ClientAddr(remote));
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        let service = service.clone();
        async move {
            match rejected {
                Some(response) => Ok(response),
                None => service.oneshot(req).await,
            }
        }
    });
    let connection = settings
        .builder
        .serve_connection(TokioIo::new(io), per_request);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(listener = name, %remote, %error, "connection ended with an error");
    }
}

/// The answer to a request carrying both `Content-Length` and `Transfer-Encoding`: never
/// forwarded, and hyper closes the connection after it.
fn ambiguous_framing(listener: &str, remote: SocketAddr) -> Response<ProxyBody> {
    metrics::counter!("sidecar_requests_rejected_total", "listener" => listener.to_owned(), "reason" => "ambiguous-framing")
        .increment(1);
    tracing::debug!(
        listener,
        %remote,
        "request with both Content-Length and Transfer-Encoding; answered 400"
    );
    let mut response = local_response(
        LocalReply::new(Reason::BadRequest)
            .text("bad request: both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)"),
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
