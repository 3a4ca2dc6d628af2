//! The connectors of the upstream pools: each dials one fixed address, in plaintext or over
//! mTLS.

use super::{Coalesced, Pool, Protocol};
use crate::config::UpstreamProtocol;
use http::{Uri, uri::Authority};
use hyper_util::rt::TokioIo;
use resilience_mtls::{ConnectorBuilder, MtlsConnector, OriginConnector};
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpStream;
use tower::Service;

/// How long a connection attempt may take (Envoy's default `connect_timeout`); past it the
/// attempt fails as a connect failure, which retries may resend for any method.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connector that dials one address whatever the request's URI says, so that the URI can
/// keep the caller's authority (Host and `:authority` are preserved end to end).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedConnector {
    addr: SocketAddr,
}

impl FixedConnector {
    /// Dials `addr`.
    #[must_use]
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

impl Service<Uri> for FixedConnector {
    type Response = TokioIo<Coalesced<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.addr;
        // Boxed: one allocation per new connection, not per request.
        Box::pin(async move {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Coalesced::new(stream)))
        })
    }
}

/// A pool whose connections `dial` makes, each offering by ALPN the protocols it is given:
/// the HTTP versions `protocol` allows (a WebSocket handshake's connection offers HTTP/1.1
/// alone).
fn by_alpn<C: Clone, B>(protocol: UpstreamProtocol, dial: impl Fn(&[&[u8]]) -> C) -> Pool<C, B> {
    match protocol {
        UpstreamProtocol::Auto => {
            Pool::negotiated(dial(&[b"h2", b"http/1.1"]), dial(&[b"http/1.1"]))
        }
        UpstreamProtocol::Http1 => Pool::new(dial(&[b"http/1.1"]), Protocol::Http1),
        UpstreamProtocol::Http2 => Pool::new(dial(&[b"h2"]), Protocol::Http2),
    }
}

/// The pool of connections to `addr` over HTTPS to a server outside the mesh
/// (`origin`, without ALPN set yet) whose requests go to `authority`, offering by ALPN the
/// HTTP versions `protocol` allows.
pub(crate) fn origin_pool<B>(
    origin: &OriginConnector,
    addr: SocketAddr,
    authority: &Authority,
    protocol: UpstreamProtocol,
) -> Pool<OriginConnector<FixedConnector>, B> {
    let pool = by_alpn(protocol, |alpn| {
        origin
            .clone()
            .alpn(alpn.iter().copied())
            .wrap(FixedConnector::new(addr))
    });
    let target = Uri::builder()
        .scheme("https")
        .authority(authority.clone())
        .path_and_query("/")
        .build();
    match target {
        Ok(target) => pool.addressed_to(target),
        Err(_) => pool,
    }
}

/// The pool of connections to `addr` over mTLS with the settings of `builder`, checking the
/// peer's identity and offering by ALPN the HTTP versions `protocol` allows.
pub(crate) fn mtls_pool<B>(
    builder: &ConnectorBuilder,
    addr: SocketAddr,
    protocol: UpstreamProtocol,
) -> Pool<MtlsConnector<FixedConnector>, B> {
    by_alpn(protocol, |alpn| {
        builder
            .clone()
            .alpn(alpn.iter().copied())
            .wrap(FixedConnector::new(addr))
    })
}
