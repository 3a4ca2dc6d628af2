//! [`MtlsConnector`]: the client side of mutual TLS, as a connector for hyper-util's client.

use crate::{
    BoxError, Credentials, HandshakeError, Identity,
    credentials::ClientCertResolver,
    error::HANDSHAKE_TIMEOUT,
    metrics, provider,
    resumed::verify_resumed,
    sessions::{PerCertificate, Tls},
    verifier::ServerVerifier,
};
use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use rustls::{ClientConfig, HandshakeKind, client::danger::ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName};
use std::{
    fmt,
    future::Future,
    io,
    net::Ipv4Addr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tower_service::Service;

/// Builds an [`MtlsConnector`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectorBuilder {
    credentials: Credentials,
    expected: Identity,
    tls12: bool,
    alpn: Vec<Vec<u8>>,
    handshake_timeout: Duration,
    resumption: bool,
}

impl ConnectorBuilder {
    /// Whether TLS 1.2 is offered besides TLS 1.3; default `false`.
    pub fn tls12(mut self, enabled: bool) -> Self {
        self.tls12 = enabled;
        self
    }

    /// The ALPN protocols offered, most preferred first; default `h2`, `http/1.1`.
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How long the TLS handshake may take once connected; default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether sessions are resumed; default `true`.
    pub fn resumption(mut self, enabled: bool) -> Self {
        self.resumption = enabled;
        self
    }

    /// The rustls client config these settings describe.
    #[must_use]
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.handshaker().tls.current().connector.config().clone()
    }

    /// The handshakes these settings describe: the rustls config, with the verifier and the
    /// session store it was made with.
    fn handshaker(&self) -> Handshaker {
        let provider = provider();
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let verifier = Arc::new(ServerVerifier::new(
            self.credentials.clone(),
            self.expected.clone(),
            provider.clone(),
        ));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(ClientCertResolver(self.credentials.clone())));
        config.alpn_protocols = self.alpn.clone();
        Handshaker {
            tls: PerCertificate::new(self.credentials.clone(), config, self.resumption),
            verifier,
            timeout: self.handshake_timeout,
        }
    }

    /// A connector over hyper-util's [`HttpConnector`] (TCP, with `TCP_NODELAY`).
    pub fn build(self) -> MtlsConnector<HttpConnector> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        self.wrap(http)
    }

    /// A connector that does TLS over the connections that `inner` makes.
    pub fn wrap<C>(self, inner: C) -> MtlsConnector<C> {
        MtlsConnector {
            inner,
            tls: Arc::new(self.handshaker()),
            expected: self.expected,
        }
    }
}

/// A connector for hyper-util's `Client` (a tower `Service<Uri>`) that dials the URI's host,
/// presents our certificate, and accepts the server only if its certificate chains to our
/// trust bundle and names the expected identity: a SPIFFE ID, or a DNS name.
///
/// The dialled host does not count: a sidecar dials an IP address and still knows whom it must
/// reach. TLS is used whatever the URI's scheme, so an `http://` URI from an application is
/// upgraded to mutual TLS. The connector presents the current certificate from
/// [`Credentials`] at each handshake, resumes sessions (checking the server's chain again, and
/// dialling once more for a full handshake when it no longer passes), and counts handshakes in
/// `resilience_mtls_handshakes_total{side="client"}`.
///
/// Each response from the client carries a [`TlsInfo`] extension: whom the connection reached.
#[derive(Clone)]
pub struct MtlsConnector<C = HttpConnector> {
    inner: C,
    tls: Arc<Handshaker>,
    expected: Identity,
}

impl<C: fmt::Debug> fmt::Debug for MtlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("inner", &self.inner)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl MtlsConnector {
    /// A connector that reaches only servers with the `expected` identity, with the default
    /// settings.
    #[must_use]
    pub fn new(credentials: &Credentials, expected: Identity) -> Self {
        Self::builder(credentials, expected).build()
    }

    /// A builder for a connector that reaches only servers with the `expected` identity.
    pub fn builder(credentials: &Credentials, expected: Identity) -> ConnectorBuilder {
        ConnectorBuilder {
            credentials: credentials.clone(),
            expected,
            tls12: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            handshake_timeout: HANDSHAKE_TIMEOUT,
            resumption: true,
        }
    }
}

impl<C> MtlsConnector<C> {
    /// The identity that servers must present.
    #[must_use]
    pub fn expected_identity(&self) -> &Identity {
        &self.expected
    }

    /// The inner connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The inner connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner connector.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// Runs the client handshake over `io`, an established connection. `server_name` is sent
    /// as SNI (nothing is sent for an IP address); the server is checked against the expected
    /// identity, not against `server_name`.
    pub async fn handshake<IO>(
        &self,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.tls.handshake(server_name, io).await
    }
}

/// A connector's client handshakes: its TLS config, and what checks a resumed session again.
struct Handshaker {
    /// The connector for our certificate now, with its sessions.
    tls: PerCertificate,
    verifier: Arc<ServerVerifier>,
    timeout: Duration,
}

impl Handshaker {
    /// The handshake, counted; see [`attempt`](Self::attempt).
    async fn handshake<IO>(
        &self,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.attempt(server_name, io)
            .await
            .map_err(|refused| refused.error)
    }

    /// The handshake, counted. A resumed session's server chain is verified again (see
    /// [`verify_resumed`]); when it no longer passes, the handshake fails as `stale` and the
    /// server name's sessions are forgotten, so that the next handshake is a full one.
    async fn attempt<IO>(
        &self,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<TlsStream<IO>, Refused>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.tls.current();
        let connecting = tls.connector.connect(server_name.clone(), io);
        let connecting = async { connecting.await.map_err(HandshakeError::from_io) };
        let result = match HandshakeError::within(self.timeout, connecting).await {
            Ok(stream) => self.reverify_resumed(&tls, &server_name, stream),
            Err(error) => Err(Refused::new(error)),
        };
        match &result {
            Ok(stream) => {
                let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                metrics::handshake_ok("client", resumed);
            }
            Err(Refused { error, .. }) => {
                metrics::handshake_failed("client", error.reason());
                tracing::debug!(reason = %error.reason(), %error, "outbound tls handshake failed");
            }
        }
        result
    }

    fn reverify_resumed<IO>(
        &self,
        tls: &Tls,
        server_name: &ServerName<'static>,
        stream: TlsStream<IO>,
    ) -> Result<TlsStream<IO>, Refused> {
        verify_resumed(stream.get_ref().1, |end_entity, intermediates, now| {
            self.verifier
                .verify_server_cert(end_entity, intermediates, server_name, &[], now)
                .map(|_| ())
        })
        .map(|()| stream)
        .map_err(|error| {
            tls.forget(server_name);
            Refused { error, stale: true }
        })
    }
}

/// A client handshake that failed.
struct Refused {
    error: HandshakeError,
    /// A resumed session's server chain failed when checked again: its sessions are forgotten,
    /// and a full handshake on a new connection may pass (the server may have a new
    /// certificate by now).
    stale: bool,
}

impl Refused {
    fn new(error: HandshakeError) -> Self {
        Self {
            error,
            stale: false,
        }
    }
}

/// The server name a connector sends (SNI): the expected identity when it is a DNS name, and
/// none for a SPIFFE ID (an IP address is never sent). Never the request's host: that is the
/// caller's to choose, travels in clear, and must not decide what the handshake says.
fn server_name(expected: &Identity) -> ServerName<'static> {
    match expected {
        Identity::Dns(name) => ServerName::try_from(name.clone())
            .unwrap_or(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into())),
        Identity::Spiffe(_) => ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()),
    }
}

impl<C, T> Service<Uri> for MtlsConnector<C>
where
    C: Service<Uri, Response = TokioIo<T>> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: AsyncRead + AsyncWrite + Connection + Unpin + Send + 'static,
{
    type Response = MtlsConnection<T>;
    type Error = BoxError;
    type Future = ConnectFuture<T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let name = server_name(&self.expected);
        let connecting = self.inner.call(uri.clone());
        let mut redial = self.inner.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?.into_inner();
            match tls.attempt(name.clone(), io).await {
                Ok(stream) => Ok(MtlsConnection::new(stream)),
                // A session that no longer passes is not the server's last word: once more,
                // on a new connection, with a full handshake checked as any.
                Err(Refused { stale: true, .. }) => {
                    std::future::poll_fn(|cx| redial.poll_ready(cx))
                        .await
                        .map_err(Into::into)?;
                    let io = redial.call(uri).await.map_err(Into::into)?.into_inner();
                    Ok(MtlsConnection::new(tls.handshake(name, io).await?))
                }
                Err(refused) => Err(refused.error.into()),
            }
        })
    }
}

/// The future of [`MtlsConnector`]'s `call`: a connection and a handshake, once per
/// connection rather than per request, so boxed.
pub type ConnectFuture<T> =
    Pin<Box<dyn Future<Output = Result<MtlsConnection<T>, BoxError>> + Send>>;

/// Whom a client connection reached: inserted into each response's extensions by hyper-util's
/// client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    peer_identity: Option<Identity>,
    peer_certificate: Option<CertificateDer<'static>>,
    resumed: bool,
}

impl TlsInfo {
    /// The server's identity, as its certificate names it.
    #[must_use]
    pub fn peer_identity(&self) -> Option<&Identity> {
        self.peer_identity.as_ref()
    }

    /// The server's leaf certificate.
    #[must_use]
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificate.as_ref()
    }

    /// Whether the session was resumed.
    #[must_use]
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

/// A client connection made by [`MtlsConnector`] (or [`OriginConnector`](crate::OriginConnector)):
/// TLS over the inner connector's stream, ready for hyper.
#[derive(Debug)]
pub struct MtlsConnection<T> {
    io: TokioIo<TlsStream<T>>,
    info: TlsInfo,
}

impl<T> MtlsConnection<T> {
    pub(crate) fn new(stream: TlsStream<T>) -> Self {
        let conn = stream.get_ref().1;
        let peer_certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned();
        let info = TlsInfo {
            peer_identity: peer_certificate
                .as_ref()
                .and_then(|cert| Identity::from_certificate(cert).ok()),
            peer_certificate,
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        };
        Self {
            io: TokioIo::new(stream),
            info,
        }
    }

    /// Whom the connection reached.
    #[must_use]
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &TlsStream<T> {
        self.io.inner()
    }

    /// Consumes `self`, returning the TLS stream.
    pub fn into_inner(self) -> TlsStream<T> {
        self.io.into_inner()
    }
}

impl<T: Connection + AsyncRead + AsyncWrite + Unpin> Connection for MtlsConnection<T> {
    fn connected(&self) -> Connected {
        let (tcp, tls) = self.io.inner().get_ref();
        let connected = tcp.connected().extra(self.info.clone());
        if tls.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> hyper::rt::Read for MtlsConnection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> hyper::rt::Write for MtlsConnection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
