//! Helpers shared by the integration tests: temp dirs, a dev CA, servers on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use resilience_mtls::{
    AddPeerIdentityLayer, AllowList, AuthorizeLayer, Credentials, HandshakeError, Identity,
    MaterialPaths, MtlsAcceptor, MtlsConnector, dev_ca::DevCa,
};
use std::{convert::Infallible, net::SocketAddr, path::Path, time::Duration};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tower::{ServiceBuilder, util::BoxCloneService};

/// Now, by the wall clock: certificates are valid in wall-clock time, which `tokio::time`
/// does not keep.
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the peer writes, to its end, within [`WAIT`]: read whole, a TLS stream has also taken
/// in the session tickets that follow a handshake.
pub async fn read_all(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .expect("the peer writes or closes within the wait")
        .unwrap();
    text
}

/// A fresh directory under the system temp dir, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("resilience-mtls-test-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temp dir")
}

pub fn spiffe(path: &str) -> Identity {
    format!("spiffe://example.org/{path}").parse().unwrap()
}

pub fn credentials(ca: &DevCa, path: &str) -> Credentials {
    Credentials::new(ca.workload(path).unwrap().material(ca.trust_pem()).unwrap())
}

/// Paths `<name>.pem`, `<name>-key.pem` and `ca.pem` in `dir`.
pub fn paths(dir: &Path, name: &str) -> MaterialPaths {
    MaterialPaths::new(
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
        dir.join("ca.pem"),
    )
}

/// A server that accepts connections with `acceptor`, reports each handshake's outcome, and
/// on success writes `hello <peer identity>\n` and closes.
pub struct HandshakeServer {
    pub addr: SocketAddr,
    pub outcomes: mpsc::UnboundedReceiver<Result<Option<Identity>, HandshakeError>>,
    task: JoinHandle<()>,
}

impl Drop for HandshakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HandshakeServer {
    pub async fn spawn(acceptor: MtlsAcceptor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut stream) => {
                            let peer = stream.peer_identity().cloned();
                            let name = peer.as_ref().map_or("anonymous".into(), |p| p.to_string());
                            let _ = tx.send(Ok(peer));
                            let _ = stream.write_all(format!("hello {name}\n").as_bytes()).await;
                            let _ = stream.shutdown().await;
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err));
                        }
                    }
                });
            }
        });
        Self {
            addr,
            outcomes,
            task,
        }
    }

    /// The next handshake's outcome, within [`WAIT`].
    pub async fn next(&mut self) -> Result<Option<Identity>, HandshakeError> {
        tokio::time::timeout(WAIT, self.outcomes.recv())
            .await
            .expect("a handshake within the wait")
            .expect("the server is running")
    }
}

type Svc =
    BoxCloneService<Request<Incoming>, Response<Either<Full<Bytes>, Full<Bytes>>>, Infallible>;

/// An HTTP server (HTTP/1.1 and h2) behind `acceptor` that answers each request with the
/// caller's identity (or `anonymous`), behind an authorization layer when `allow` is given.
pub struct HttpServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    pub async fn spawn(acceptor: MtlsAcceptor, allow: Option<AllowList>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let allow = allow.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let identity = stream.peer_identity().cloned();
                    let app = tower::service_fn(|req: Request<Incoming>| async move {
                        let who = req
                            .extensions()
                            .get::<Identity>()
                            .map_or("anonymous".to_owned(), ToString::to_string);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
                    });
                    let svc: Svc = match allow {
                        Some(allow) => BoxCloneService::new(
                            ServiceBuilder::new()
                                .layer(AddPeerIdentityLayer::new(identity))
                                .layer(AuthorizeLayer::new(allow))
                                .service(app),
                        ),
                        None => BoxCloneService::new(
                            ServiceBuilder::new()
                                .layer(AddPeerIdentityLayer::new(identity))
                                .map_response(|res: Response<Full<Bytes>>| res.map(Either::Left))
                                .service(app),
                        ),
                    };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper_util::service::TowerToHyperService::new(svc),
                        )
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// A hyper-util client over `connector`.
pub fn client(connector: MtlsConnector) -> Client<MtlsConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A client that opens a new connection for each request.
pub fn unpooled_client(connector: MtlsConnector) -> Client<MtlsConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// GETs `url` and returns the response with its body.
pub async fn get(
    client: &Client<MtlsConnector, Empty<Bytes>>,
    url: &str,
) -> Result<(http::response::Parts, Bytes), String> {
    let response = tokio::time::timeout(WAIT, client.get(url.parse().unwrap()))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts, body))
}

/// A plain TCP connection to `addr`.
pub async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Runs `openssl` with `args` in `dir`, and panics (failing the test, never skipping it) when
/// the command is missing or fails. CI installs openssl (see `.ci/run`).
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("the `openssl` command is required for the interop tests and is missing: {e}")
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issues a certificate with `openssl x509 -req`: `key` (an existing key file) signed by
/// `ca_cert`/`ca_key`, with the given extensions. Returns the certificate file name.
pub fn openssl_issue(
    dir: &Path,
    name: &str,
    key: &str,
    subject: &str,
    extensions: &str,
    ca_cert: &str,
    ca_key: &str,
) -> String {
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &["req", "-new", "-key", key, "-subj", subject, "-out", &csr],
    );
    let serial = format!(
        "0x{:x}",
        now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    cert
}

pub const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

pub fn leaf_ext(san: &str) -> String {
    format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
}
