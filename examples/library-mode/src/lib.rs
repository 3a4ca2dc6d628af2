//! Library mode: an HTTP service that calls its upstream through `sidecar_lite::outbound`,
//! the very function the sidecar builds its outbound routes with, from the very same
//! `[[outbound]]` TOML section, parsed by sidecar-lite's own config types. The same section
//! means the same timeouts, retries and breaker in both modes; here there is no extra process
//! and no extra hop.
//!
//! Run it from the workspace root, beside the flaky upstream (which fails 30 % of requests
//! with a 503; the route retries them):
//!
//! ```sh
//! cargo run --release -p example-flaky-upstream -- --listen 127.0.0.1:8080 --error-rate 0.3 &
//! cargo run --release -p example-library-mode -- --config examples/library-mode/library.toml \
//!     --route upstream --listen 127.0.0.1:8081
//! curl -i http://127.0.0.1:8081/hello        # 200 every time
//! ```
//!
//! With an `[identity]` section in the file and `server_identity` on the route, the calls go
//! over mutual TLS (to a peer's inbound sidecar, say), as the sidecar's would.

/// The workspace README's Rust examples, compiled (and run unless `no_run`) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use resilience_mtls::RotationHandle;
use sidecar_lite::{Config, OutboundConfig, ProxyBody, StackService, local_reply};
use std::{convert::Infallible, error::Error, fmt, future::Future, sync::Arc};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Errors of this example, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The header that names why the stack answered a request itself (as the sidecar's does).
pub const SIDECAR_ERROR: &str = "x-sidecar-error";

/// The request body this service sends upstream: whole, so retries can replay it.
pub type RequestBody = Full<Bytes>;

/// Parses sidecar-lite config text with sidecar-lite's own parser (so every key, default and
/// validation rule is the sidecar's), and picks the `[[outbound]]` route called `name`.
pub fn route(text: &str, name: &str) -> Result<(Config, OutboundConfig), BoxError> {
    let config = Config::parse(text)?;
    let route = config
        .outbound_route(name)
        .cloned()
        .ok_or_else(|| format!("no [[outbound]] route named \"{name}\" in the config"))?;
    Ok((config, route))
}

/// A client for one upstream: the route's outbound stack (load shedding, total timeout,
/// retries, per-try timeout, breaker, pooled connections) in process.
#[derive(Clone)]
pub struct UpstreamClient {
    service: StackService<RequestBody>,
    authority: String,
    /// Keeps the certificate rotation task running (dropping the last clone stops it).
    _rotation: Option<Arc<RotationHandle>>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Builds the stack of `route` with `stack::outbound`, over mTLS when the config has an
    /// `[identity]` and the route a `server_identity`. Must run inside a tokio runtime.
    /// Certificates are re-read when their files change, as the sidecar's are, for as long as
    /// a clone of this client lives.
    pub fn new(config: &Config, route: &OutboundConfig) -> Result<Self, BoxError> {
        let (tls, rotation) = match (config.identity(), route.server_identity()) {
            (Some(identity), Some(expected)) => {
                let credentials = identity.load()?;
                let connector = identity.connector(&credentials, expected.clone());
                let rotation = identity.rotation().spawn(&credentials);
                (Some(connector), Some(Arc::new(rotation)))
            }
            _ => (None, None),
        };
        let service = sidecar_lite::outbound(config, route, tls.as_ref())?;
        Ok(Self {
            service,
            authority: route.name().to_owned(),
            _rotation: rotation,
        })
    }

    /// Sends `request` through the stack. Its URI needs only a path: the authority is the
    /// route's name, and the stack dials the route's endpoints whatever the URI says.
    pub fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, BoxError>> + Send + 'static {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri = format!("http://{}{path}", self.authority).parse::<Uri>();
        // The future owns its clone of the stack: the stack is Send, not Sync.
        let service = self.service.clone();
        async move {
            *request.uri_mut() = uri?;
            service.oneshot(request).await
        }
    }

    /// `GET path` through the stack.
    pub fn get(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Response<ProxyBody>, BoxError>> + Send + 'static {
        let request = Request::get(path).body(Full::default());
        let service = self.clone();
        async move { service.send(request?).await }
    }
}

/// The example service, on every connection `listener` accepts: `GET /anything` calls the
/// upstream's `/anything` through `client` and answers with the upstream's status and
/// `upstream answered <status>: <body>`. When the stack gives up (timeout, open breaker,
/// overload, connect failure), the answer is the one the sidecar would send, flagged with
/// `x-sidecar-error`.
pub async fn serve(listener: TcpListener, client: UpstreamClient) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(handle(client, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(client: UpstreamClient, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let answer = match client.get(&path).await {
        Ok(response) => response,
        // A plain GET: never a gRPC call, so an HTTP status.
        Err(error) => local_reply(&error, false),
    };
    let (parts, body) = answer.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            let mut response =
                Response::new(Full::from(format!("upstream body failed: {error}\n")));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            return response;
        }
    };
    let mut text = format!("upstream answered {}: ", parts.status).into_bytes();
    text.extend_from_slice(&body);
    let mut response = Response::new(Full::from(text));
    *response.status_mut() = parts.status;
    if let Some(flag) = parts.headers.get(SIDECAR_ERROR) {
        response.headers_mut().insert(SIDECAR_ERROR, flag.clone());
    }
    response
}
