//! [`OriginConnector`]: TLS to a server outside the mesh (an HTTPS API), as a
//! connector for hyper-util's client; with a client certificate for a server that asks for
//! one, and its files read again when they change.

use crate::{
    BoxError, ConnectFuture, HandshakeError, MaterialError,
    client::MtlsConnection,
    clock::wall_clock,
    error::HANDSHAKE_TIMEOUT,
    material::{certificates, certified_key, leaf, leaf_validity, read},
    metrics, provider,
};
use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::{client::legacy::connect::Connection, rt::TokioIo};
use rustls::{
    ClientConfig, RootCertStore, SignatureScheme, client::ResolvesClientCert, sign::CertifiedKey,
};
use rustls_pki_types::ServerName;
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tower_service::Service;

/// A connector that dials with `inner`, then does TLS as any HTTPS client does: it sends
/// `server_name` (SNI) and accepts the server only if its certificate chains to the trusted
/// CAs and is valid for that name, by the web PKI's rules (webpki, through rustls). It presents
/// a certificate of its own only when given one ([`from_files`](Self::from_files) with
/// [`OriginPaths::client_certificate`]), to a server that asks for one; the server is outside
/// the mesh and checks no identity of ours. TLS 1.2 and 1.3; sessions resume as rustls resumes
/// them.
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
    server_name: ServerName<'static>,
    alpn: Arc<[Vec<u8>]>,
    /// The TLS config connections are made with now, for these ALPN protocols; shared by the
    /// clones.
    current: Arc<ArcSwap<Loaded>>,
    /// The files it was read from, looked at again before each connection; shared by the
    /// clones and by copies with other ALPN protocols, each of which makes its TLS config
    /// again when the files' settings move on.
    files: Option<Arc<Files>>,
}

impl<C> fmt::Debug for OriginConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("OriginConnector")
            .field("server_name", &self.server_name)
            .field("trust_anchors", &current.settings.roots.len())
            .field("client_certificate", &current.settings.client.is_some())
            .field("files", &self.files.as_ref().map(|files| &files.paths))
            .finish_non_exhaustive()
    }
}

/// Where an [`OriginConnector`]'s files are: the CAs the server's certificate must chain to,
/// and, for a server that asks for one, our client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginPaths {
    /// The CAs in PEM (a system bundle such as `/etc/ssl/certs/ca-certificates.crt` will do).
    pub trust: PathBuf,
    /// Our certificate chain in PEM, leaf first, and its private key in PEM (PKCS#8, PKCS#1
    /// or SEC1), as [`MaterialPaths`](crate::MaterialPaths)'s `cert` and `key`; the leaf
    /// needs no identity of the mesh.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

impl OriginPaths {
    /// The trust bundle at `trust`, and no client certificate.
    pub fn new(trust: impl Into<PathBuf>) -> Self {
        Self {
            trust: trust.into(),
            client_certificate: None,
        }
    }

    /// These paths, with a client certificate: the chain at `cert`, its key at `key`.
    #[must_use]
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.trust.as_path()).chain(
            self.client_certificate
                .iter()
                .flat_map(|(cert, key)| [cert.as_path(), key.as_path()]),
        )
    }
}

/// The trust anchors and client certificate of a connector.
#[derive(Clone)]
struct Settings {
    roots: Arc<RootCertStore>,
    client: Option<Arc<CertifiedKey>>,
    /// When the client certificate expires.
    client_not_after: Option<SystemTime>,
}

/// [`Settings`] and the TLS connector made of them.
struct Loaded {
    settings: Settings,
    /// The generation of the files' settings it was made of (see [`Files`]).
    generation: u64,
    tls: tokio_rustls::TlsConnector,
}

impl Loaded {
    fn new(settings: Settings, generation: u64, alpn: &[Vec<u8>]) -> Self {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_root_certificates(settings.roots.clone());
        let mut config = match &settings.client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(Presents(key.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.to_vec();
        Self {
            settings,
            generation,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }
}

/// Presents one certificate to a server that asks for one.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl OriginConnector<()> {
    /// TLS to `server_name`, whose certificate must chain to `roots`; ALPN offers nothing
    /// until [`alpn`](Self::alpn) says what. Give it a way to dial with
    /// [`wrap`](Self::wrap).
    #[must_use]
    pub fn new(roots: RootCertStore, server_name: ServerName<'static>) -> Self {
        let settings = Settings {
            roots: Arc::new(roots),
            client: None,
            client_not_after: None,
        };
        Self::with(settings, server_name, None)
    }

    /// TLS to `server_name` with the files of `paths`, read and checked now. Errors name the
    /// file at fault: a trust bundle without a usable CA, a client certificate expired or
    /// not valid yet, a key that is not its own.
    ///
    /// Before each new connection the files' metadata (size, times, inode) is looked at.
    /// Files that changed are read again (off the caller's thread), checked the same way, and
    /// used from then on, by this connector, its clones and its copies; files that do not
    /// load (a certificate written before its key, say) are logged, counted in
    /// `resilience_mtls_origin_reloads_total{result="error"}`, and the ones in use kept until
    /// the files change again (or, for files that could not be read or a certificate not
    /// valid yet, until a later connection tries again). Live connections are untouched.
    pub fn from_files(
        paths: OriginPaths,
        server_name: ServerName<'static>,
    ) -> Result<Self, MaterialError> {
        let stamp = Stamp::of(&paths);
        let settings = load(&paths)?;
        let files = Files {
            paths,
            server: server_name.to_str().into_owned(),
            state: Mutex::new(FilesState {
                seen: stamp,
                retry_at: None,
                loading: false,
                generation: 0,
                settings: settings.clone(),
            }),
        };
        files.loaded(&settings);
        Ok(Self::with(settings, server_name, Some(Arc::new(files))))
    }

    fn with(
        settings: Settings,
        server_name: ServerName<'static>,
        files: Option<Arc<Files>>,
    ) -> Self {
        let alpn: Arc<[Vec<u8>]> = Arc::new([]);
        Self {
            inner: (),
            server_name,
            current: Arc::new(ArcSwap::from_pointee(Loaded::new(settings, 0, &alpn))),
            alpn,
            files,
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
        let current = self.current.load();
        let loaded = Loaded::new(current.settings.clone(), current.generation, &self.alpn);
        self.current = Arc::new(ArcSwap::from_pointee(loaded));
        self
    }

    /// This connector over the connections `inner` makes.
    pub fn wrap<C>(self, inner: C) -> OriginConnector<C> {
        OriginConnector {
            inner,
            server_name: self.server_name,
            alpn: self.alpn,
            current: self.current,
            files: self.files,
        }
    }
}

/// The trust bundle and client certificate of `paths`, read and checked now.
fn load(paths: &OriginPaths) -> Result<Settings, MaterialError> {
    let roots = OriginConnector::roots_from_pem(&read(&paths.trust)?, &paths.trust)?;
    let (client, client_not_after) = match &paths.client_certificate {
        None => (None, None),
        Some((cert, key)) => {
            let chain = certificates(&read(cert)?, cert)?;
            let (_, not_after) = leaf_validity(&leaf(&chain, cert)?, cert, wall_clock())?;
            let client = certified_key(chain, &read(key)?, cert, key)?;
            (Some(Arc::new(client)), Some(not_after))
        }
    };
    Ok(Settings {
        roots: Arc::new(roots),
        client,
        client_not_after,
    })
}

/// How long after files that could not be read (or a client certificate not valid yet) a
/// connection tries them again, although they look the same.
const RETRY: Duration = Duration::from_secs(10);

/// A connector's files, what was last seen of them, and what they last loaded into.
struct Files {
    paths: OriginPaths,
    /// The server's name, as the metrics label it.
    server: String,
    state: Mutex<FilesState>,
}

struct FilesState {
    /// The stamp of the files last read (or being read), whether they loaded or not.
    seen: Stamp,
    /// When files that look the same are read again: after an error that a later read may
    /// not meet (a file that could not be read, a certificate not valid yet).
    retry_at: Option<Instant>,
    /// Whether a read is under way: one at a time, so that an older read finishing last
    /// cannot undo a newer one.
    loading: bool,
    /// Counts the settings loaded; a connector copy whose TLS config is of an older one
    /// makes it again.
    generation: u64,
    settings: Settings,
}

impl Files {
    /// Reads the files again if they changed since they were last read (or a retry is due),
    /// and waits for the read: the store is done where the files are read, so a caller that
    /// gives up waiting loses nothing.
    async fn refresh(self: &Arc<Self>) {
        let stamp = Stamp::of(&self.paths);
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let retry = state.retry_at.is_some_and(|at| Instant::now() >= at);
            if state.loading || (state.seen == stamp && !retry) {
                return;
            }
            state.loading = true;
            state.seen = stamp;
            state.retry_at = None;
        }
        let files = self.clone();
        // Reading and parsing a bundle is blocking file I/O: not on the caller's thread.
        let read = tokio::task::spawn_blocking(move || {
            let loaded = load(&files.paths);
            files.finish(loaded);
        });
        if read.await.is_err() {
            // The read panicked (it does not, but a lost read must not stop the next).
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.loading = false;
            state.retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// Stores what a read of the files gave.
    fn finish(&self, loaded: Result<Settings, MaterialError>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.loading = false;
        match loaded {
            Ok(settings) => {
                self.loaded(&settings);
                state.settings = settings;
                state.generation += 1;
                metrics::origin_reload(&self.server, true);
                tracing::info!(server_name = %self.server, "origin TLS files read again");
            }
            Err(error) => {
                state.retry_at = match &error {
                    MaterialError::Read { .. } => Some(Instant::now() + RETRY),
                    MaterialError::NotYetValid { valid_from, .. } => {
                        let wait = valid_from.duration_since(wall_clock()).unwrap_or_default();
                        Some(Instant::now() + wait.max(RETRY))
                    }
                    _ => None,
                };
                metrics::origin_reload(&self.server, false);
                tracing::warn!(server_name = %self.server, %error, "origin TLS files rejected; keeping the ones in use");
            }
        }
    }

    /// The settings last loaded, if they are newer than `generation`.
    fn newer_than(&self, generation: u64) -> Option<(Settings, u64)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.generation != generation).then(|| (state.settings.clone(), state.generation))
    }

    /// Tells the metrics of `settings`, loaded from these files.
    fn loaded(&self, settings: &Settings) {
        if let Some(not_after) = settings.client_not_after {
            metrics::origin_cert_not_after(&self.server, not_after);
        }
    }
}

/// What the metadata of a connector's files says: enough to tell that one was rewritten or
/// replaced (a Kubernetes secret's files are swapped by a symbolic link) without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<FileStamp>>);

/// A file's size, modification time and, on Unix, its device, inode and change time (which
/// a `chmod` that makes it readable moves).
type FileStamp = (u64, Option<SystemTime>, [i64; 4]);

impl Stamp {
    /// The files' metadata, read here: a few `stat` calls before a connection.
    fn of(paths: &OriginPaths) -> Self {
        Self(
            paths
                .files()
                .map(|path| {
                    std::fs::metadata(path)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok(), unix(&m)))
                })
                .collect(),
        )
    }
}

#[cfg(unix)]
#[allow(clippy::cast_possible_wrap)]
fn unix(metadata: &std::fs::Metadata) -> [i64; 4] {
    use std::os::unix::fs::MetadataExt;
    [
        metadata.dev() as i64,
        metadata.ino() as i64,
        metadata.ctime(),
        metadata.ctime_nsec(),
    ]
}

#[cfg(not(unix))]
fn unix(_: &std::fs::Metadata) -> [i64; 4] {
    [0; 4]
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
        let name = self.server_name.clone();
        let (current, files, alpn) = (self.current.clone(), self.files.clone(), self.alpn.clone());
        Box::pin(async move {
            if let Some(files) = files {
                files.refresh().await;
                if let Some((settings, generation)) = files.newer_than(current.load().generation) {
                    current.store(Arc::new(Loaded::new(settings, generation, &alpn)));
                }
            }
            let tls = current.load().tls.clone();
            let io = connecting.await.map_err(Into::into)?.into_inner();
            let handshake = async { tls.connect(name, io).await.map_err(HandshakeError::from_io) };
            match HandshakeError::within(HANDSHAKE_TIMEOUT, handshake).await {
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
