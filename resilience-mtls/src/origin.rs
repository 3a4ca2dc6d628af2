//! [`OriginConnector`]: one-way TLS to a server outside the mesh (an HTTPS API), as a
//! connector for hyper-util's client.

use crate::{
    BoxError, ConnectFuture, FailureReason, HandshakeError, MaterialError, client::MtlsConnection,
    material::certificates, metrics, provider,
};
use http::Uri;
use hyper_util::{client::legacy::connect::Connection, rt::TokioIo};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::{
    fmt, io,
    path::Path,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

/// How long a handshake may take, as the mTLS connector's default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connector that dials with `inner`, then does TLS as any HTTPS client does: it sends
/// `server_name` (SNI) and accepts the server only if its certificate chains to `roots` and is
/// valid for that name, by the web PKI's rules (webpki, through rustls). It presents no
/// certificate of its own: the server is outside the mesh, and has no identity of ours to
/// check. TLS 1.2 and 1.3; sessions resume as rustls resumes them.
///
/// ```
/// use resilience_mtls::{OriginConnector, dev_ca::DevCa};
/// use rustls_pki_types::ServerName;
///
/// let ca = DevCa::new("example.org").unwrap();
/// let roots = OriginConnector::roots_from_pem(ca.trust_pem().as_bytes(), "<trust>").unwrap();
/// let name = ServerName::try_from("api.example.org").unwrap();
/// let connector = OriginConnector::new(roots, name).alpn([&b"h2"[..], b"http/1.1"]);
/// # let _ = connector;
/// ```
#[derive(Clone)]
pub struct OriginConnector<C = ()> {
    inner: C,
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    roots: Arc<RootCertStore>,
    alpn: Vec<Vec<u8>>,
}

impl<C> fmt::Debug for OriginConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginConnector")
            .field("server_name", &self.server_name)
            .field("trust_anchors", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl OriginConnector<()> {
    /// TLS to `server_name`, whose certificate must chain to `roots`; ALPN offers nothing
    /// until [`alpn`](Self::alpn) says what. Give it a way to dial with
    /// [`wrap`](Self::wrap).
    #[must_use]
    pub fn new(roots: RootCertStore, server_name: ServerName<'static>) -> Self {
        let roots = Arc::new(roots);
        Self {
            inner: (),
            tls: tls(&roots, Vec::new()),
            server_name,
            roots,
            alpn: Vec::new(),
        }
    }

    /// The CAs of a PEM bundle, as trust anchors; errors name `path`, where the bundle was
    /// read from (a system bundle such as `/etc/ssl/certs/ca-certificates.crt` will do).
    pub fn roots_from_pem(
        pem: &[u8],
        path: impl AsRef<Path>,
    ) -> Result<RootCertStore, MaterialError> {
        let path = path.as_ref();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certificates(pem, path)?);
        if added == 0 {
            return Err(MaterialError::Trust {
                path: path.to_owned(),
                detail: "none of its certificates is a usable trust anchor".to_owned(),
            });
        }
        Ok(roots)
    }

    /// The protocols ALPN offers, most wanted first.
    #[must_use]
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self.tls = tls(&self.roots, self.alpn.clone());
        self
    }

    /// This connector over the connections `inner` makes.
    pub fn wrap<C>(self, inner: C) -> OriginConnector<C> {
        OriginConnector {
            inner,
            tls: self.tls,
            server_name: self.server_name,
            roots: self.roots,
            alpn: self.alpn,
        }
    }
}

fn tls(roots: &Arc<RootCertStore>, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsConnector {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl<C, T> Service<Uri> for OriginConnector<C>
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
        let connecting = self.inner.call(uri);
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?.into_inner();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, io)).await;
            let result = match handshake {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(error)) => Err(HandshakeError::from_io(error)),
                Err(_) => Err(HandshakeError::new(
                    FailureReason::Timeout,
                    io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"),
                )),
            };
            match result {
                Ok(stream) => {
                    let resumed =
                        stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    metrics::handshake_ok("origin", resumed);
                    Ok(MtlsConnection::new(stream))
                }
                Err(error) => {
                    metrics::handshake_failed("origin", error.reason());
                    Err(error.into())
                }
            }
        })
    }
}
