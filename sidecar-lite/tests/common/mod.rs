//! Shared test fixtures: an app on 127.0.0.1, certificates made at test time, sidecars
//! started in process, and HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code, unreachable_pub)]

pub mod dns;
pub mod grpc;
pub mod load;
pub mod process;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use resilience_mtls::{
    Identity, MaterialPaths,
    dev_ca::{DevCa, IssueOptions},
};
use sidecar_lite::{Config, Sidecar};
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, time::timeout};

pub type BoxBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One Prometheus recorder for this test process, installed before any sidecar registers its
/// series, as the binary installs one; metrics are the process's, so a test that reads them
/// needs names (routes, listeners) of its own.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

pub fn full(text: impl Into<Bytes>) -> BoxBody {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Serves `handler` on 127.0.0.1 (HTTP/1.1 and h2c), counting requests.
pub async fn app<F, Fut>(handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_app(listener, handler)
}

/// Serves `handler` on a listener already bound (HTTP/1.1 and h2c), counting requests.
pub fn serve_app<F, Fut>(listener: TcpListener, handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let response = handler(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, count)
}

/// An app that echoes the request: method, path, chosen headers, and the body.
pub async fn echo_app() -> (SocketAddr, Arc<AtomicUsize>) {
    app(|req: Request<Incoming>| async move {
        let mut summary = format!(
            "{} {} {:?}\n",
            req.method(),
            req.uri().path(),
            req.version()
        );
        for name in [
            "host",
            "x-forwarded-for",
            "traceparent",
            "x-retry-attempt",
            "connection",
            "cookie",
        ] {
            if let Some(value) = req.headers().get(name) {
                summary.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
            }
        }
        // A body the proxy cut off (its caller's broke off) is echoed as what it was.
        match req.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                summary.push_str(&format!("body: {}", String::from_utf8_lossy(&body)));
            }
            Err(error) => summary.push_str(&format!("body failed: {error}")),
        }
        Response::new(full(summary))
    })
    .await
}

/// An app that answers every request with `status`.
pub async fn status_app(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    app(move |_req| async move {
        let mut response = Response::new(full(format!("status {status}")));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    })
    .await
}

/// Certificates for a trust domain, written to a fresh directory.
pub struct Certs {
    pub dir: PathBuf,
    ca: DevCa,
}

impl Certs {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sidecar-lite-{test}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            ca: DevCa::new("example.org").unwrap(),
        }
    }

    /// Writes the certificate of `spiffe://example.org/ns/shop/sa/<name>`; returns the
    /// `[identity]` section for it.
    pub fn identity(&self, name: &str) -> String {
        self.identity_with(name, &IssueOptions::default())
    }

    /// [`identity`](Self::identity), with a certificate issued with `options`.
    pub fn identity_with(&self, name: &str, options: &IssueOptions) -> String {
        let paths = MaterialPaths::new(
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
            self.dir.join("ca.pem"),
        );
        let identity = Identity::parse(&spiffe(name)).unwrap();
        self.ca
            .issue(&identity, options)
            .unwrap()
            .write(&paths, self.ca.trust_pem())
            .unwrap();
        format!(
            "[identity]\ncert = \"{}\"\nkey = \"{}\"\ntrust = \"{}\"\n",
            paths.cert.display(),
            paths.key.display(),
            paths.trust.display()
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

pub fn spiffe(name: &str) -> String {
    format!("spiffe://example.org/ns/shop/sa/{name}")
}

/// Starts a sidecar from config text (admin on a free port unless the text sets it).
pub async fn sidecar(text: &str) -> Sidecar {
    let text = if text.contains("[admin]") {
        text.to_owned()
    } else {
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n{text}")
    };
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    Sidecar::start(&config, None).await.unwrap()
}

/// The inbound sidecar of `app`, in front of it, with mTLS and an allow-list.
pub async fn inbound_sidecar(
    certs: &Certs,
    name: &str,
    app: SocketAddr,
    allow: &[String],
    extra: &str,
) -> Sidecar {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    sidecar(&format!(
        "{}\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nallow = [{}]\n{extra}\n",
        certs.identity(name),
        allow.join(", ")
    ))
    .await
}

/// The outbound sidecar of a client called `name`, with one route to `endpoints`.
pub async fn outbound_sidecar(
    certs: &Certs,
    name: &str,
    endpoints: &[SocketAddr],
    server: &str,
    route: &str,
) -> Sidecar {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    sidecar(&format!(
        "{}\n[[outbound]]\nname = \"peer\"\nlisten = \"127.0.0.1:0\"\nendpoints = [{}]\nserver_identity = \"{}\"\n{route}\n",
        certs.identity(name),
        endpoints.join(", "),
        spiffe(server),
    ))
    .await
}

/// The outbound sidecar of `frontend`, with one route (`route` its extra keys) to the inbound
/// listener of `inbound`, which must present the identity of `orders`.
pub async fn frontend_to_orders(certs: &Certs, inbound: &Sidecar, route: &str) -> Sidecar {
    outbound_sidecar(
        certs,
        "frontend",
        &[inbound.bound.inbound.unwrap()],
        "orders",
        route,
    )
    .await
}

/// An app behind its inbound sidecar, and a client's outbound sidecar in front of both.
pub struct Path {
    pub outbound: Sidecar,
    pub inbound: Sidecar,
    _certs: Certs,
}

pub async fn path_to(app: SocketAddr, test: &str) -> Path {
    let certs = Certs::new(test);
    let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe("frontend")], "").await;
    let outbound = frontend_to_orders(&certs, &inbound, "").await;
    Path {
        outbound,
        inbound,
        _certs: certs,
    }
}

pub fn outbound_addr(sidecar: &Sidecar) -> SocketAddr {
    sidecar.bound.outbound[0].1
}

pub fn http1() -> Client<hyper_util::client::legacy::connect::HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2() -> Client<hyper_util::client::legacy::connect::HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A GET of `uri` over HTTP/1.1, bounded by [`STEP`].
pub async fn get(uri: String) -> Response<Incoming> {
    let req = Request::builder().uri(uri).body(full("")).unwrap();
    timeout(STEP, http1().request(req))
        .await
        .expect("an answer within STEP")
        .expect("a response")
}

pub async fn text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Polls `check` every 10 ms until it holds, for at most [`STEP`] in all (each check bounded
/// by it too); whether it came to hold.
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(true) => return true,
            Ok(false) if tokio::time::Instant::now() < deadline => {}
            _ => return false,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bound on how long any one test step may wait.
pub const STEP: Duration = Duration::from_secs(10);
