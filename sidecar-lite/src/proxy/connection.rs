//! One accepted connection: served with hyper (HTTP/1.1 or HTTP/2), watched for silence, and
//! closed gracefully when the listener drains.

use super::{
    OpenConnections,
    activity::{Activity, InFlight, Moving, Tracked},
    framing::{Framing, FramingGuard},
    stream_tasks::StreamTasks,
    upgrade::{ClientUpgrade, TunnelSlot},
};
use crate::{
    config::LimitsConfig,
    transport::{ProxyBody, local_response},
};
use http::{HeaderValue, Request, Response, header::CONNECTION};
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use pin_project_lite::pin_project;
use resilience_core::{LocalReply, Reason};
use resilience_mtls::Identity;
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};

/// Streams a client may reset before the server has accepted them (HTTP/2 rapid reset,
/// CVE-2023-44487); beyond it the connection is closed.
const MAX_PENDING_RESETS: usize = 20;
/// Idle HTTP/2 connections are pinged this often, and closed if the ping is not answered
/// within the same time.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// What the listener keeps of a connection it serves: its activity, through which it evicts
/// the connection or drains it (closes it gracefully); and its count of open connections, for
/// the tunnel the connection may become.
pub(super) struct Control {
    pub(super) activity: Arc<Activity>,
    pub(super) open: OpenConnections,
}

/// How long a connection asked to close may take before it is dropped; and how long a
/// listener waits, at the end of its drain, for the HTTP/2 streams of the connections it cut.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How every connection of a listener is served.
pub(super) struct ConnectionSettings {
    builder: auto::Builder<StreamTasks>,
    /// The tasks of the HTTP/2 streams the builder serves.
    pub(super) streams: StreamTasks,
    max_head_bytes: usize,
    max_headers: usize,
    /// From accept to the first request head.
    first_request: Duration,
    /// From the end of the last request to the next one.
    idle: Duration,
}

impl ConnectionSettings {
    pub(super) fn new(limits: &LimitsConfig) -> Self {
        let streams = StreamTasks::default();
        Self {
            builder: hardened_builder(limits, streams.clone()),
            streams,
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
            first_request: limits.header_read_timeout,
            idle: limits.idle_timeout,
        }
    }
}

/// An HTTP/1.1 and HTTP/2 server builder with `limits` applied.
fn hardened_builder(limits: &LimitsConfig, streams: StreamTasks) -> auto::Builder<StreamTasks> {
    let mut builder = auto::Builder::new(streams);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Not hyper's: it arms a timer for every request head. The connection's own timer
        // keeps the same rule (see `Activity::silent`).
        .header_read_timeout(None)
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

/// Serves one accepted connection, plaintext or TLS, until it closes (or, become a WebSocket
/// tunnel, until the tunnel ends: see [`super::upgrade`]), the drain ends it, or
/// it is closed for silence: no first request within `header_read_timeout` of the accept (the
/// protocol sniff and the HTTP/2 handshake included), no request for `idle_timeout` since the
/// last one ended, requests in flight while no byte moved either way for `idle_timeout`, or
/// evicted by the listener for a connection that has something to say.
/// Closing is graceful (an HTTP/2 GOAWAY); a peer that does not let go within
/// [`CLOSE_GRACE`] is dropped.
pub(super) async fn serve_connection<IO, S>(
    name: &str,
    remote: SocketAddr,
    io: IO,
    peer: Option<Identity>,
    service: S,
    settings: &ConnectionSettings,
    control: Control,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let framing = Arc::new(Framing::default());
    let Control { activity, open } = control;
    let io = FramingGuard::new(
        Moving::new(io, activity.clone()),
        framing.clone(),
        settings.max_head_bytes,
        settings.max_headers,
    );
    let listener: Arc<str> = name.into();
    let tracked = activity.clone();
    let tunnel = Arc::new(TunnelSlot::default());
    let claimed = tunnel.clone();
    let per_request = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = tracked.start(req.version());
        if framing.next_is_ambiguous() {
            return Answer::at_once(ambiguous_framing(&listener, remote), in_flight);
        }
        ClientUpgrade::mark(&mut req, &claimed);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        Answer::called(service.call(req), in_flight)
    });
    let connection = settings
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), per_request);
    tokio::pin!(connection);
    let mut draining = false;
    let mut closing_since: Option<Instant> = None;
    loop {
        let wake = match closing_since {
            Some(since) => since + CLOSE_GRACE,
            None => activity.next_check(settings.first_request, settings.idle),
        };
        tokio::select! {
            // In this order, without drawing a random one for each wake (twice a request): the
            // connection's own work first.
            biased;
            result = connection.as_mut() => {
                let tunnel = tunnel.take();
                match result {
                    // A WebSocket handshake answered `101`: hyper has let go of the
                    // connection. Not on one asked to close (its drain asked, if not yet
                    // seen here): a drain would only cut it.
                    Ok(()) => {
                        if let Some(tunnel) = tunnel
                            && !activity.is_draining()
                            && closing_since.is_none()
                        {
                            let _open = open.tunnel();
                            // Boxed: a tunnel's state would otherwise make every
                            // connection's future larger, for the few that become one.
                            Box::pin(tunnel.run(name, remote, &activity, settings.idle)).await;
                        }
                    }
                    // Before it let go (the `101` could not be written): nothing to carry,
                    // and dropping the tunnel closes its upstream half.
                    Err(error) => {
                        tracing::debug!(listener = name, %remote, %error, "connection ended with an error");
                    }
                }
                return;
            }
            () = activity.drained(), if !draining && closing_since.is_none() => {
                // The listener's drain grace bounds this one.
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.evicted(), if closing_since.is_none() => {
                tracing::debug!(listener = name, %remote, "silent connection evicted for a new one");
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake) => {
                if closing_since.is_some() {
                    tracing::debug!(listener = name, %remote, "did not close when asked; dropped");
                    return;
                }
                if let Some(why) = activity.silent(settings.first_request, settings.idle) {
                    metrics::counter!("sidecar_connections_closed_idle_total", "listener" => name.to_owned(), "reason" => why)
                        .increment(1);
                    tracing::debug!(listener = name, %remote, why, "closing a silent connection");
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
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

pin_project! {
    /// One request's answer: the service's, or one made at once; in flight, for the
    /// connection's activity, until its body has been sent or dropped. Polled again after it
    /// completed, it stays pending (hyper never does so).
    struct Answer<F> {
        #[pin]
        call: Option<F>,
        at_once: Option<Response<ProxyBody>>,
        in_flight: Option<InFlight>,
    }
}

impl<F> Answer<F> {
    fn called(call: F, in_flight: InFlight) -> Self {
        Self {
            call: Some(call),
            at_once: None,
            in_flight: Some(in_flight),
        }
    }

    fn at_once(response: Response<ProxyBody>, in_flight: InFlight) -> Self {
        Self {
            call: None,
            at_once: Some(response),
            in_flight: Some(in_flight),
        }
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = Result<Response<Tracked<ProxyBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.call.as_mut().as_pin_mut() {
            Some(call) => {
                let Ok(response) = ready!(call.poll(cx));
                this.call.set(None);
                response
            }
            None => match this.at_once.take() {
                Some(response) => response,
                None => return Poll::Pending,
            },
        };
        match this.in_flight.take() {
            Some(in_flight) => Poll::Ready(Ok(response.map(|body| Tracked::new(body, in_flight)))),
            None => Poll::Pending,
        }
    }
}
