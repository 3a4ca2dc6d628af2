//! [`MtlsAcceptor`]: the server side of mutual TLS, in strict, permissive or disabled mode.

use crate::{
    Credentials, FailureReason, HandshakeError, Identity, MtlsStream, Rewind,
    credentials::{ClientVerifier, ServerCertResolver},
    error::HANDSHAKE_TIMEOUT,
    metrics, provider,
    resumed::verify_resumed,
};
use rustls::{
    HandshakeKind, ServerConfig,
    server::{ServerSessionMemoryCache, danger::ClientCertVerifier},
};
use std::{fmt, io, str::FromStr, sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::TlsAcceptor;

/// The first byte of every TLS record that opens a connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// How an acceptor treats incoming connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum MtlsMode {
    /// TLS only, and the client must present a certificate that chains to the trust bundle.
    #[default]
    Strict,
    /// Mutual TLS as in strict mode, or plaintext, on the same port: told apart by the first
    /// byte. Plaintext connections have no identity (they are anonymous). For migrations.
    Permissive,
    /// Plaintext only; no TLS.
    Disabled,
}

impl MtlsMode {
    /// The mode's name as in config files: `strict`, `permissive` or `disabled`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
            Self::Disabled => "disabled",
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MtlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "permissive" => Ok(Self::Permissive),
            "disabled" => Ok(Self::Disabled),
            other => Err(format!(
                "invalid mtls mode `{other}`: expected strict, permissive or disabled"
            )),
        }
    }
}

/// Builds an [`MtlsAcceptor`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AcceptorBuilder {
    credentials: Credentials,
    mode: MtlsMode,
    tls12: bool,
    alpn: Vec<Vec<u8>>,
    handshake_timeout: Duration,
    session_cache: usize,
}

impl AcceptorBuilder {
    /// The mode; default [`MtlsMode::Strict`].
    pub fn mode(mut self, mode: MtlsMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether TLS 1.2 is accepted besides TLS 1.3; default `false`.
    pub fn tls12(mut self, enabled: bool) -> Self {
        self.tls12 = enabled;
        self
    }

    /// The ALPN protocols offered, most preferred first; default `h2`, `http/1.1`.
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How long a client may take to complete its handshake; default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many sessions the server keeps for resumption; default 1024. Zero turns
    /// resumption off.
    pub fn session_cache(mut self, sessions: usize) -> Self {
        self.session_cache = sessions;
        self
    }

    /// The acceptor.
    pub fn build(self) -> MtlsAcceptor {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let verifier = Arc::new(ClientVerifier(self.credentials.clone()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(ServerCertResolver(self.credentials.clone())));
        config.alpn_protocols = self.alpn;
        if self.session_cache == 0 {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        } else {
            // TLS 1.3 resumes with stateless tickets; TLS 1.2 with session IDs in the cache.
            config.session_storage = ServerSessionMemoryCache::new(self.session_cache);
            if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
                config.ticketer = ticketer;
            }
        }
        MtlsAcceptor {
            mode: self.mode,
            tls: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: self.handshake_timeout,
            verifier,
        }
    }
}

/// Accepts connections for a server: verifies the client's certificate against the trust
/// bundle, presents ours, and yields the stream with the client's [`Identity`].
///
/// The certificate, key and trust bundle are read from [`Credentials`] at each handshake, so a
/// rotation applies to the next connection. TLS 1.3 only unless
/// [`tls12`](AcceptorBuilder::tls12) is set; ALPN `h2` and `http/1.1`; session resumption on.
/// Handshakes are counted in `resilience_mtls_handshakes_total` (see [`crate::metrics`]).
#[derive(Clone)]
pub struct MtlsAcceptor {
    mode: MtlsMode,
    tls: TlsAcceptor,
    handshake_timeout: Duration,
    /// Checks a resumed session's client chain again, against the trust and time of now.
    verifier: Arc<ClientVerifier>,
}

impl fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("mode", &self.mode)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// A strict acceptor with the default settings.
    #[must_use]
    pub fn new(credentials: &Credentials) -> Self {
        Self::builder(credentials).build()
    }

    /// A builder for an acceptor that uses `credentials`.
    pub fn builder(credentials: &Credentials) -> AcceptorBuilder {
        AcceptorBuilder {
            credentials: credentials.clone(),
            mode: MtlsMode::Strict,
            tls12: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            handshake_timeout: HANDSHAKE_TIMEOUT,
            session_cache: 1024,
        }
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> MtlsMode {
        self.mode
    }

    /// The rustls server config, for use with other TLS plumbing.
    #[must_use]
    pub fn config(&self) -> &Arc<ServerConfig> {
        self.tls.config()
    }

    /// Accepts one connection: the TLS handshake (strict and permissive modes) or nothing
    /// (plaintext in permissive and disabled modes).
    ///
    /// Fails with [`HandshakeError`], whose [`reason`](HandshakeError::reason) says why:
    /// for example [`FailureReason::NoClientCertificate`] or [`FailureReason::UnknownCa`].
    pub async fn accept<IO>(&self, io: IO) -> Result<MtlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if self.mode == MtlsMode::Disabled {
            return Ok(MtlsStream::plain(Rewind::new(io, None)));
        }
        let result = HandshakeError::within(self.handshake_timeout, self.handshake(io)).await;
        match &result {
            Ok(stream) => {
                if let Some(conn) = stream.tls_connection() {
                    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                    metrics::handshake_ok("server", resumed);
                }
            }
            Err(err) => {
                metrics::handshake_failed("server", err.reason());
                tracing::debug!(reason = %err.reason(), error = %err, "inbound tls handshake failed");
            }
        }
        result
    }

    /// See [`verify_resumed`]: the client chain of a resumed session, checked again.
    fn reverify_resumed(&self, conn: &rustls::ServerConnection) -> Result<(), HandshakeError> {
        verify_resumed(conn, |end_entity, intermediates, now| {
            self.verifier
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ())
        })
    }

    async fn handshake<IO>(&self, mut io: IO) -> Result<MtlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut first = [0u8; 1];
        let n = io.read(&mut first).await.map_err(HandshakeError::from_io)?;
        if n == 0 {
            return Err(HandshakeError::new(
                FailureReason::Io,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the first byte",
                ),
            ));
        }
        let io = Rewind::new(io, Some(first[0]));
        if first[0] != TLS_HANDSHAKE {
            return match self.mode {
                MtlsMode::Permissive => Ok(MtlsStream::plain(io)),
                _ => Err(HandshakeError::new(
                    FailureReason::NotTls,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the client did not start a tls handshake (plaintext on a strict port?)",
                    ),
                )),
            };
        }
        let stream = self.tls.accept(io).await.map_err(HandshakeError::from_io)?;
        self.reverify_resumed(stream.get_ref().1)?;
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(Identity::from_certificate);
        match identity {
            Some(Ok(identity)) => Ok(MtlsStream::tls(stream, identity)),
            // The verifier refuses certificates without an identity, so this is a defence.
            Some(Err(err)) => Err(HandshakeError::new(
                FailureReason::NoIdentity,
                io::Error::new(io::ErrorKind::InvalidData, err),
            )),
            None => Err(HandshakeError::new(
                FailureReason::NoClientCertificate,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the client presented no certificate",
                ),
            )),
        }
    }
}
