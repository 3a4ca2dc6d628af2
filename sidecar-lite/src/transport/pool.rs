//! [`Pool`]: the connections to one endpoint, and the client that sends each request on one.
//!
//! Keyed by the endpoint alone: whatever `Host` or `:authority` a caller sends, requests to one
//! endpoint share its connections, which are bounded ([`MAX_IDLE`] kept for reuse, idle ones
//! closed after [`IDLE_TIMEOUT`]). HTTP/1.1 connections are checked out one request at a time
//! and come back when the response body is done; HTTP/2 (with prior knowledge, or chosen by
//! ALPN) shares a connection among as many requests as its peer allows streams, and opens
//! another when every one is full (`streams.rs`). A request that a pooled connection refuses
//! before sending any of it (the peer closed it meanwhile) goes again on a new connection, as
//! hyper-util's client does. A connection that cannot be made fails with [`ConnectFailed`],
//! which retries may resend for any method. A WebSocket handshake (a request that kept its
//! `Upgrade`) goes on a new HTTP/1.1 connection of its own, which becomes the upstream half of
//! the tunnel when answered `101` and joins the pool otherwise; over HTTP/2 alone there is no
//! upgrade, and it goes as a plain request.

use super::{
    StackBody,
    streams::{Http2Connections, StreamSlot, Streams, Taken, drive},
    worker,
};
use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, StatusCode, Uri,
    header::{CONNECTION, HOST, UPGRADE},
    uri::{Authority, PathAndQuery},
};
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::{
    client::legacy::connect::Connection,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use pin_project_lite::pin_project;
use resilience_core::{BoxError, ConnectFailed, SIDECAR_ERROR};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// HTTP/1.1 connections kept for reuse per endpoint and worker; more are closed when their
/// request ends.
pub(crate) const MAX_IDLE: usize = 32;
/// How long a connection may wait unused in the pool before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/2 connections are pinged this often while they have streams, and closed if a ping is
/// not answered within it.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A connector a pool can dial with: a cloneable `Service<Uri>` whose connections hyper can
/// speak over and that tell what ALPN chose.
pub(crate) trait Dial:
    Service<Uri, Response = Self::Io, Future: Send, Error: Into<BoxError>>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The connection.
    type Io: Connection + hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
}

impl<C, R> Dial for C
where
    C: Service<Uri, Response = R, Future: Send, Error: Into<BoxError>>
        + Clone
        + Send
        + Sync
        + 'static,
    R: Connection + hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Io = R;
}

/// Which protocol a pool speaks on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// As the TLS handshake chose by ALPN: HTTP/2 for `h2`, else HTTP/1.1.
    Negotiated,
}

/// The connections to one endpoint; see the module docs. Clones share them.
pub(crate) struct Pool<C, B> {
    shared: Arc<Shared<C, B>>,
}

impl<C, B> Clone for Pool<C, B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C, B> fmt::Debug for Pool<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.shared.target)
            .field("protocol", &self.shared.protocol)
            .finish_non_exhaustive()
    }
}

struct Shared<C, B> {
    connector: C,
    /// What dials a WebSocket handshake's connection: HTTP/1.1, and only that. `None` for a
    /// pool that speaks HTTP/2 alone.
    upgrades: Option<C>,
    /// What the connector is asked to dial; it dials its one address whatever this says.
    target: Uri,
    protocol: Protocol,
    /// Whether the answers' `x-sidecar-error` is dropped (see [`Pool::for_app`]).
    drop_sidecar_flag: bool,
    /// One set per worker thread (see [`super::worker`]): a worker sends on the connections
    /// its own thread drives.
    idle: Box<[Arc<IdleConnections<B>>]>,
}

/// The connections of a pool that wait for a request.
struct IdleConnections<B>(Mutex<Idle<B>>);

struct Idle<B> {
    /// Most recently used last: the warmest connection is taken first.
    http1: Vec<(http1::SendRequest<B>, Instant)>,
    /// Connections whose response has ended while their request's body is still being sent
    /// (an upstream may answer before it has read it): idle once hyper is ready for the next
    /// request, not before, or a request would wait behind a slow upload.
    sending: Vec<http1::SendRequest<B>>,
    http2: Http2Connections<B>,
}

/// A connection checked out for one request (on HTTP/2, one of its streams).
enum Checked<B> {
    Http1(http1::SendRequest<B>),
    Http2(http2::SendRequest<B>, StreamSlot),
}

impl<C: Clone, B> Pool<C, B> {
    /// A pool of connections that `connector` makes, speaking HTTP/1.1 or HTTP/2 with prior
    /// knowledge (`protocol`).
    pub(crate) fn new(connector: C, protocol: Protocol) -> Self {
        let upgrades = (protocol == Protocol::Http1).then(|| connector.clone());
        Self::build(connector, protocol, upgrades, false)
    }

    /// A pool that speaks what each connection's TLS handshake chose by ALPN, and dials a
    /// WebSocket handshake's connection with `http1`, which offers HTTP/1.1 alone.
    pub(crate) fn negotiated(connector: C, http1: C) -> Self {
        Self::build(connector, Protocol::Negotiated, Some(http1), false)
    }

    /// A pool of connections to an app, which drops the `x-sidecar-error` of its answers: only
    /// the sidecar speaks with it to its callers, and an app that sets it must not pass for
    /// the sidecar (a peer sidecar's is its own reason, and goes on).
    pub(crate) fn for_app(connector: C, protocol: Protocol) -> Self {
        let upgrades = (protocol == Protocol::Http1).then(|| connector.clone());
        Self::build(connector, protocol, upgrades, true)
    }

    /// This pool, for a server whose requests are addressed to `target`'s scheme and
    /// authority: an HTTP/2 request that has none (one an HTTP/1.1 connection refused unsent,
    /// and whose URI it had cut to its path) gets these rather than a placeholder's.
    pub(crate) fn addressed_to(mut self, target: Uri) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.target = target;
        }
        self
    }

    fn build(
        connector: C,
        protocol: Protocol,
        upgrades: Option<C>,
        drop_sidecar_flag: bool,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                upgrades,
                target: Uri::from_static("http://endpoint/"),
                protocol,
                drop_sidecar_flag,
                idle: (0..worker::slots())
                    .map(|_| {
                        Arc::new(IdleConnections(Mutex::new(Idle {
                            http1: Vec::new(),
                            sending: Vec::new(),
                            http2: Http2Connections::new(),
                        })))
                    })
                    .collect(),
            }),
        }
    }
}

impl<B> IdleConnections<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<B>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes an HTTP/1.1 connection back when its response is done, unless the pool is full.
    fn put_back(&self, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.http1.len() + idle.sending.len() >= MAX_IDLE {
            return;
        }
        if sender.is_ready() {
            idle.http1.push((sender, Instant::now()));
        } else {
            idle.sending.push(sender);
        }
    }
}

impl<B> Idle<B> {
    /// Moves the connections that have sent their request's body to the idle ones, and drops
    /// the closed ones.
    fn settle(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(sender) = self.sending.get(i) {
            if sender.is_closed() {
                self.sending.swap_remove(i);
            } else if sender.is_ready() {
                let sender = self.sending.swap_remove(i);
                self.http1.push((sender, now));
            } else {
                i += 1;
            }
        }
    }
}

impl<C, B> Shared<C, B> {
    /// `response`, as the pool hands it on.
    fn answer<T>(&self, mut response: Response<T>) -> Response<T> {
        if self.drop_sidecar_flag {
            response.headers_mut().remove(SIDECAR_ERROR);
        }
        response
    }

    /// The calling worker's connections.
    fn slot(&self) -> &Arc<IdleConnections<B>> {
        &self.idle[worker::index() % self.idle.len()]
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle<B>> {
        self.slot().lock()
    }
}

impl<C: Dial, B: StackBody> Shared<C, B> {
    /// A connection ready for a request: a pooled one (`true`) or a new one (`false`).
    async fn checkout(self: &Arc<Self>) -> Result<(Checked<B>, bool), BoxError> {
        loop {
            let pooled = {
                let mut idle = self.idle();
                match idle.http2.take() {
                    Taken::Stream(sender, slot) => Some(Checked::Http2(sender, slot)),
                    // Every HTTP/2 connection at its peer's limit: another one.
                    Taken::Full => None,
                    Taken::None => {
                        // Past their idle time, connections are dropped, which closes them.
                        // The oldest come first (each is pushed when its request ends).
                        let now = Instant::now();
                        if !idle.sending.is_empty() {
                            idle.settle(now);
                        }
                        let expired = idle.http1.partition_point(|(_, since)| {
                            now.saturating_duration_since(*since) >= IDLE_TIMEOUT
                        });
                        idle.http1.drain(..expired);
                        idle.http1.pop().map(|(sender, _)| Checked::Http1(sender))
                    }
                }
            };
            match pooled {
                Some(Checked::Http1(mut sender)) => {
                    if sender.ready().await.is_ok() {
                        return Ok((Checked::Http1(sender), true));
                    }
                }
                // A closed one is left out at the next checkout.
                Some(Checked::Http2(mut sender, slot)) => {
                    if sender.ready().await.is_ok() {
                        return Ok((Checked::Http2(sender, slot), true));
                    }
                }
                // Boxed: dialling, the TLS handshake and hyper's handshake are kilobytes of
                // future state that every request's future would otherwise carry (and move
                // through the layers), for the few requests that open a connection.
                None => {
                    return Box::pin(self.connect())
                        .await
                        .map(|checked| (checked, false));
                }
            }
        }
    }

    /// A new connection, handshaken.
    async fn connect(self: &Arc<Self>) -> Result<Checked<B>, BoxError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(|e| ConnectFailed::new(e.into()))?;
        let http2 = match self.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Negotiated => io.connected().is_negotiated_h2(),
        };
        if http2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(HTTP2_KEEP_ALIVE)
                .keep_alive_timeout(HTTP2_KEEP_ALIVE)
                .handshake(io)
                .await
                .map_err(ConnectFailed::new)?;
            let streams = Streams::new();
            let published = streams.clone();
            tokio::spawn(async move {
                if let Err(error) = drive(connection, published).await {
                    tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
                }
            });
            let slot = self.idle().http2.add(sender.clone(), streams);
            Ok(Checked::Http2(sender, slot))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(ConnectFailed::new)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/1.1 connection ended with an error");
                }
            });
            Ok(Checked::Http1(sender))
        }
    }
}

impl<C: Dial, B: StackBody> Shared<C, B> {
    /// Sends a WebSocket handshake on a new HTTP/1.1 connection of its own: a `101` hands the
    /// connection over to the tunnel (the response's `OnUpgrade`); after any other answer it
    /// joins the pool, as a connection the pool dialled would, for the requests that follow.
    async fn send_upgrade(
        self: &Arc<Self>,
        connector: C,
        mut req: Request<B>,
    ) -> Result<Response<PooledBody<B>>, BoxError> {
        let io = connector
            .oneshot(self.target.clone())
            .await
            .map_err(|e| ConnectFailed::new(e.into()))?;
        // Wrapped twice, so that hyper's code for this connection is not the pooled
        // connections' (shared, the compiler no longer inlined that into their task, which
        // cost about 90 instructions per request).
        let (mut sender, connection) = http1::handshake(TokioIo::new(TokioIo::new(io)))
            .await
            .map_err(ConnectFailed::new)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection of an upgrade ended with an error");
            }
        });
        origin_form(&mut req);
        let response = sender.send_request(req).await?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(self.answer(response.map(PooledBody::alone)));
        }
        let back = PutBack {
            pool: self.slot().clone(),
            sender: Some(sender),
        };
        Ok(self.answer(response.map(|body| PooledBody::new(body, back))))
    }
}

/// The future of a pool's call: boxed, so that every pool (whatever its connector) and every
/// client over pools has this one future type.
pub(crate) type PoolFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody<B>>, BoxError>> + Send>>;

impl<C: Dial, B: StackBody> Service<Request<B>> for Pool<C, B> {
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = PoolFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Connections are checked out per request; there is nothing to wait for here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            // Only the edge's WebSocket handshakes keep their `Upgrade` this far.
            if req.headers().contains_key(UPGRADE) {
                match &shared.upgrades {
                    // Boxed, as a new connection is: the usual request's future carries no
                    // room for it.
                    Some(connector) => {
                        let connector = connector.clone();
                        return Box::pin(shared.send_upgrade(connector, req)).await;
                    }
                    None => {
                        req.headers_mut().remove(UPGRADE);
                        req.headers_mut().remove(CONNECTION);
                    }
                }
            }
            loop {
                let (checked, reused) = shared.checkout().await?;
                let refused = match checked {
                    Checked::Http2(mut sender, slot) => {
                        absolute_form(&mut req, &shared.target);
                        match sender.try_send_request(req).await {
                            Ok(response) => {
                                return Ok(shared.answer(
                                    response.map(|body| PooledBody::on_stream(body, slot)),
                                ));
                            }
                            Err(refused) => refused,
                        }
                    }
                    Checked::Http1(mut sender) => {
                        origin_form(&mut req);
                        match sender.try_send_request(req).await {
                            Ok(response) => {
                                let back = PutBack {
                                    pool: shared.slot().clone(),
                                    sender: Some(sender),
                                };
                                return Ok(
                                    shared.answer(response.map(|body| PooledBody::new(body, back)))
                                );
                            }
                            Err(refused) => refused,
                        }
                    }
                };
                let mut refused = refused;
                match refused.take_message() {
                    // Not sent at all, on a connection the peer had closed: once more, on a
                    // fresh one (whose own refusal is final).
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(refused.into_error().into()),
                }
            }
        })
    }
}

/// HTTP/2 wants the scheme and authority in the URI (`:scheme`, `:authority`); a request that
/// has none gets its `Host` (which an HTTP/1.1 connection that refused it unsent kept, having
/// cut the URI to its path), or else the endpoint's.
fn absolute_form<B>(req: &mut Request<B>, target: &Uri) {
    if req.uri().authority().is_some() {
        return;
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok());
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = target.scheme().cloned();
    parts.authority = host.or_else(|| target.authority().cloned());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// HTTP/1.1 sends the path alone (origin-form), with the authority in `Host`.
fn origin_form<B>(req: &mut Request<B>) {
    if let Some(authority) = req.uri().authority()
        && !req.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

/// An HTTP/1.1 connection on its way back to its pool, once its response body is done.
struct PutBack<B> {
    pool: Arc<IdleConnections<B>>,
    sender: Option<http1::SendRequest<B>>,
}

impl<B> Drop for PutBack<B> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put_back(sender);
        }
    }
}

pin_project! {
    /// A response body from a pooled connection: an HTTP/1.1 connection goes back to its pool
    /// when the body ends or is dropped (hyper closes it if the body was not read to its end,
    /// and the pool skips closed connections); an HTTP/2 stream is given back to its
    /// connection's count the same way.
    pub(crate) struct PooledBody<B> {
        #[pin]
        inner: Incoming,
        back: Option<PutBack<B>>,
        stream: Option<StreamSlot>,
    }
}

impl<B> PooledBody<B> {
    fn new(inner: Incoming, back: PutBack<B>) -> Self {
        Self {
            inner,
            back: Some(back),
            stream: None,
        }
    }

    /// A body on a connection of its own, which closes when it ends.
    fn alone(inner: Incoming) -> Self {
        Self {
            inner,
            back: None,
            stream: None,
        }
    }

    /// A body on a stream of a shared HTTP/2 connection.
    fn on_stream(inner: Incoming, stream: StreamSlot) -> Self {
        Self {
            inner,
            back: None,
            stream: Some(stream),
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // Done: the connection (or the stream's place) may take the next request now.
            drop(this.back.take());
            drop(this.stream.take());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 request that an HTTP/1.1 connection refused unsent has lost its authority
    /// to origin form; it gets its `Host` back, not the pool's placeholder.
    #[test]
    fn a_request_without_an_authority_takes_its_host_then_the_pools() {
        let target = Uri::from_static("https://api.example.test/");
        let mut req = Request::builder()
            .uri("/v1/charges?x=1")
            .header(HOST, "api.example.test:8443")
            .body(())
            .unwrap();
        absolute_form(&mut req, &Uri::from_static("http://endpoint/"));
        assert_eq!(req.uri(), "http://api.example.test:8443/v1/charges?x=1");
        let mut bare = Request::builder().uri("/").body(()).unwrap();
        absolute_form(&mut bare, &target);
        assert_eq!(bare.uri(), "https://api.example.test/");
    }
}
