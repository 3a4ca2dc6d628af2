//! The only place that assembles layers: one outbound and one inbound stack, built from config
//! sections. Public, so that library mode calls the very same functions as the proxy.
//!
//! Outbound, outermost first (DESIGN.md §3): load shedding over a concurrency limit, injected
//! faults if configured (before the router, as Envoy's fault filter, so they are not retried),
//! the total timeout (deadline), retries, the per-try timeout (it covers the wait in the
//! balancer's queue, too), then either one endpoint behind a fail-fast breaker, or a p2c
//! peak-EWMA balancer over endpoints each behind a back-pressure breaker (the balancer routes
//! around open ones). Inside each breaker the same per-try timeout runs again, to the same
//! deadline (it reads the outer one from the request): polled first, it fires first, so an
//! attempt that times out on an endpoint counts against that endpoint, its breaker opens and
//! the balancer routes around it. The outer timeout alone would drop the call before the
//! breaker saw how it ended.
//! A `dns:` or `file:` source always gets the balancer, fed by [`crate::discovery`] as its set
//! changes.
//!
//! Inbound: load shedding over a concurrency limit, the timeout, authorization of the peer's
//! identity, then the pooled client to the app.

use crate::{
    config::{AppProtocol, DiscoveryConfig, Endpoint, InboundConfig, OutboundConfig},
    discovery::{self, LiveEndpoints, Source},
    fault::FaultLayer,
    proxy::{
        body::{ProxyBody, boxed},
        client::{FixedConnector, client, mtls_connector},
        span::count_attempt,
    },
    unavailable::{FailWhenAllOpen, NoEndpointAvailable, NoEndpoints},
};
use bytes::Bytes;
use http::{Request, Response, header::CONTENT_TYPE};
use http_body::Body;
use hyper::body::Incoming;
use resilience_breaker::{
    BreakerHandle, BreakerOpen, CircuitBreaker, CircuitBreakerLayer, Classify, Mode,
};
use resilience_mtls::{AllowList, AuthorizeLayer, ConnectorBuilder};
use resilience_retry::{PeekGrpcTrailersLayer, ReplayBody};
use resilience_timeout::{BoxError, Elapsed, HttpDeadline, TimeoutLayer};
use std::{
    fmt,
    marker::PhantomData,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tower::{
    Layer, Service, ServiceBuilder, ServiceExt,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::{Discover, ServiceList},
    load::{CompleteOnResponse, PeakEwma},
    util::BoxCloneService,
};

/// The service a stack ends in: any request body in, a streaming body out, typed errors
/// (`Elapsed`, `BreakerOpen`, `Overloaded`, connect errors) for the caller to map.
pub type StackService<B> = BoxCloneService<Request<B>, Response<ProxyBody>, BoxError>;

/// A listener's stack, replaced whole by a reload. The stack is not `Sync` (tower's
/// concurrency limit and buffer hold boxed futures), so it sits behind a mutex that is held
/// only to clone it, once per request.
#[derive(Clone)]
pub struct SharedStack(Arc<Mutex<StackService<Incoming>>>);

impl SharedStack {
    /// Shares `stack`.
    pub fn new(stack: StackService<Incoming>) -> Self {
        Self(Arc::new(Mutex::new(stack)))
    }

    /// A clone of the current stack, to serve one request.
    pub fn current(&self) -> StackService<Incoming> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the stack; requests already under way keep theirs.
    pub fn replace(&self, stack: StackService<Incoming>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = stack;
    }
}

impl fmt::Debug for SharedStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStack").finish_non_exhaustive()
    }
}

/// Requests waiting for the balancer when every endpoint is busy; beyond it the route sheds.
const BALANCER_QUEUE: usize = 1024;
/// The round-trip time assumed for an endpoint before it has been measured.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How quickly peak-EWMA forgets a slow round trip.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// A request body the stacks accept: hyper's, or any body of bytes in library mode.
pub trait StackBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}
impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static> StackBody for B {}

/// One outbound route, assembled: the service, and its endpoints with their breakers.
pub struct Outbound<B> {
    /// The route's service.
    pub service: StackService<B>,
    /// The endpoints in use now, each with its breaker, for the admin server. Kept up to date
    /// by discovery for `dns:` and `file:` sources.
    pub endpoints: LiveEndpoints,
}

impl<B> fmt::Debug for Outbound<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A config section that did not make a stack.
#[derive(Debug)]
pub struct StackError {
    /// The field, as a path: `retry.attempts`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for StackError {}

fn field_error(prefix: &str, field: &str, message: impl fmt::Display) -> StackError {
    StackError {
        field: format!("{prefix}.{field}"),
        message: message.to_string(),
    }
}

/// Builds the outbound stack of `route`. With `tls`, endpoints are dialled over mTLS and must
/// present the route's `server_identity`; without, in plaintext. `discovery` says how `dns:`
/// and `file:` endpoints are found. Must run inside a tokio runtime: the balancer gets a task
/// of its own, and so does the discovery of a `dns:` or `file:` source (it ends when the stack
/// is dropped).
pub fn outbound<B: StackBody>(
    route: &OutboundConfig,
    tls: Option<&ConnectorBuilder>,
    discovery: &DiscoveryConfig,
) -> Result<Outbound<B>, StackError> {
    let factory = EndpointFactory::<B> {
        route: route.name.clone(),
        breaker: route
            .breaker
            .layer()
            .map_err(|e| field_error("breaker", e.field(), &e))?
            .classify(EndpointClassifier {
                fair_try: route.retry.per_try_timeout.unwrap_or_default() / 2,
            }),
        tls: tls.cloned(),
        // The outer per-try timeout has already told the next hop its deadline.
        per_try: route.retry.per_try_timeout.map(|timeout| {
            TimeoutLayer::new(timeout)
                .with_policy(HttpDeadline::new().propagate(false))
                .named("per-try")
        }),
        body: PhantomData,
    };
    let live = LiveEndpoints::default();
    let endpoints_error = |message: String| StackError {
        field: "endpoints".to_owned(),
        message,
    };

    let discovered = |source, initial| {
        let changes = discovery::spawn(
            &route.name,
            source,
            initial,
            live.clone(),
            factory.dynamic(),
        );
        balanced(changes, &live)
    };

    let endpoints: EndpointService<B> = match &route.endpoints[..] {
        [Endpoint::Static(addr)] => {
            // One endpoint, for good: no balancer, and a breaker that fails fast.
            let breaker = factory.make(*addr, Mode::FailFast);
            live.insert(*addr, breaker.handle().clone());
            BoxCloneService::new(breaker)
        }
        // A set that can change, and grow from one: always the balancer.
        [Endpoint::Dns { name, port }] => {
            let (source, last_good) =
                Source::dns(discovery, name, *port).map_err(|message| StackError {
                    field: "discovery.resolver".to_owned(),
                    message,
                })?;
            discovered(source, last_good)
        }
        [Endpoint::File(path)] => {
            let (source, initial) =
                Source::file(discovery, path.clone()).map_err(endpoints_error)?;
            discovered(source, initial)
        }
        entries => {
            let mut services = Vec::with_capacity(entries.len());
            for entry in entries {
                let Endpoint::Static(addr) = entry else {
                    return Err(endpoints_error(format!(
                        "\"{entry}\" must be the route's only entry"
                    )));
                };
                let breaker = factory.make(*addr, Mode::BackPressure);
                live.insert(*addr, breaker.handle().clone());
                services.push(peak_ewma(breaker));
            }
            balanced(ServiceList::new(services), &live)
        }
    };

    let total = route
        .timeout
        .0
        .layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?
        .named("total");
    let body_timeout = route
        .timeout
        .0
        .body_layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?
        .unwrap_or_default();
    let retry = route
        .retry
        .layer()
        .map_err(|e| field_error("retry", e.field(), &e))?
        .named(route.name.clone())
        .map_policy(|policy| policy.refused_locally(is_refused_locally));
    let service = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(route.max_concurrent_requests)
        .option_layer(route.fault.clone().map(FaultLayer::new))
        .map_response(|response: Response<_>| response.map(boxed))
        .layer(body_timeout)
        .layer(total)
        .layer(retry)
        // Each attempt, for the request's span (a no-op without one).
        .map_request(count_attempt)
        .option_layer(route.retry.per_try_timeout_layer())
        .layer(PeekGrpcTrailersLayer::new())
        .service(endpoints);
    Ok(Outbound {
        service: BoxCloneService::new(service.map_err(BoxError::from)),
        endpoints: live,
    })
}

/// What an endpoint is sent: a request whose body can be replayed for retries.
type EndpointRequest<B> = Request<ReplayBody<B>>;
/// One endpoint's client, type-erased over plaintext and mTLS.
type EndpointService<B> = BoxCloneService<EndpointRequest<B>, Response<Incoming>, BoxError>;
/// How an endpoint's breaker tells failures: a 5xx, or a gRPC status in the response head
/// that says the server, not the request, is at fault (unavailable, internal, deadline
/// exceeded); and every error but a per-try timeout that left the endpoint less than a fair
/// try (the attempt's time went by waiting in the balancer's queue, not on the endpoint).
#[derive(Debug, Clone, Copy)]
struct EndpointClassifier {
    /// Half the per-try timeout: an endpoint that had at least this long and did not answer
    /// hung; one that had less was not given its chance.
    fair_try: Duration,
}

impl Classify<Response<Incoming>> for EndpointClassifier {
    fn is_failure(&self, response: &Response<Incoming>) -> bool {
        if response.status().is_server_error() {
            return true;
        }
        matches!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(b"4" | b"13" | b"14")
        )
    }

    fn counts_error(&self, error: &BoxError) -> bool {
        error
            .downcast_ref::<Elapsed>()
            .is_none_or(|elapsed| elapsed.after() >= self.fair_try)
    }
}
/// One endpoint: its client behind its own breaker.
type Breaker<B> = CircuitBreaker<EndpointService<B>, EndpointClassifier>;
/// One endpoint as the balancer sees it: with its load measured.
type Balanced<B> = PeakEwma<Breaker<B>, CompleteOnResponse>;

/// Builds each endpoint of a route, the same way for fixed and discovered ones.
struct EndpointFactory<B> {
    route: String,
    breaker: CircuitBreakerLayer<EndpointClassifier>,
    tls: Option<ConnectorBuilder>,
    /// Inside the breaker, to the outer per-try deadline (it fires first, being polled
    /// first), so that an attempt that times out on the endpoint counts against it.
    per_try: Option<TimeoutLayer<HttpDeadline>>,
    body: PhantomData<fn(B)>,
}

impl<B: StackBody> EndpointFactory<B> {
    /// The client of `addr` behind its breaker, named `<route>/<addr>` so that its metrics
    /// tell endpoints apart.
    fn make(&self, addr: SocketAddr, mode: Mode) -> Breaker<B> {
        let client: EndpointService<B> = match &self.tls {
            Some(builder) => BoxCloneService::new(
                client(mtls_connector(builder, addr), false).map_err(BoxError::from),
            ),
            None => BoxCloneService::new(
                client(FixedConnector::new(addr), false).map_err(BoxError::from),
            ),
        };
        let client = BoxCloneService::new(
            ServiceBuilder::new()
                .option_layer(self.per_try.clone())
                .service(client),
        );
        self.breaker
            .clone()
            .named(format!("{}/{addr}", self.route))
            .mode(mode)
            .layer(client)
    }

    /// What discovery calls for each new endpoint: its balanced service and its breaker.
    fn dynamic(&self) -> impl FnMut(SocketAddr) -> (Balanced<B>, BreakerHandle) + Send + 'static {
        let factory = Self {
            route: self.route.clone(),
            breaker: self.breaker.clone(),
            tls: self.tls.clone(),
            per_try: self.per_try.clone(),
            body: PhantomData,
        };
        move |addr| {
            let breaker = factory.make(addr, Mode::BackPressure);
            let handle = breaker.handle().clone();
            (peak_ewma(breaker), handle)
        }
    }
}

fn peak_ewma<B>(breaker: Breaker<B>) -> Balanced<B> {
    PeakEwma::new(
        breaker,
        DEFAULT_RTT,
        EWMA_DECAY.as_nanos() as f64,
        CompleteOnResponse::default(),
    )
}

/// A p2c peak-EWMA balancer over `endpoints`, each behind a back-pressure breaker, with a
/// queue in front; it fails at once while every breaker in `live` is open.
fn balanced<B, D>(endpoints: D, live: &LiveEndpoints) -> EndpointService<B>
where
    B: StackBody,
    D: Discover<Service = Balanced<B>> + Unpin + Send + 'static,
    D::Key: std::hash::Hash + Clone + Send,
    D::Error: Into<BoxError>,
{
    BoxCloneService::new(FailWhenAllOpen::new(
        Buffer::new(Balance::new(endpoints), BALANCER_QUEUE),
        live.clone(),
    ))
}

/// Whether an error says a retry was refused inside this process, by an endpoint's breaker,
/// before it was sent: such a retry gives its budget back (DESIGN.md §3).
fn is_refused_locally(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<BreakerOpen>() || error.is::<NoEndpointAvailable>() || error.is::<NoEndpoints>()
}

/// Builds the inbound stack: peers' requests to the app at `inbound.app`.
pub fn inbound<B: StackBody>(inbound: &InboundConfig) -> Result<StackService<B>, StackError> {
    let timeout = inbound
        .timeout
        .0
        .layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?
        .named("inbound");
    let allow = AllowList::parse(&inbound.allow)
        .map_err(|e| field_error("inbound", "allow", e))?
        .allow_anonymous(inbound.allow_anonymous);
    let app = AppClient::new(inbound.app, inbound.app_protocol);
    let body_timeout = inbound
        .timeout
        .0
        .body_layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?
        .unwrap_or_default();
    let service = ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(boxed))
        .load_shed()
        .concurrency_limit(inbound.max_concurrent_requests)
        .layer(body_timeout)
        .layer(timeout)
        .layer(AuthorizeLayer::new(allow))
        .service(app);
    Ok(BoxCloneService::new(service.map_err(BoxError::from)))
}

/// The pooled client to the local app: HTTP/1.1, or HTTP/2 with prior knowledge for gRPC
/// (or always, as configured).
struct AppClient<B> {
    http1: hyper_util::client::legacy::Client<FixedConnector, B>,
    http2: hyper_util::client::legacy::Client<FixedConnector, B>,
    protocol: AppProtocol,
}

impl<B> Clone for AppClient<B> {
    fn clone(&self) -> Self {
        Self {
            http1: self.http1.clone(),
            http2: self.http2.clone(),
            protocol: self.protocol,
        }
    }
}

impl<B: StackBody> AppClient<B> {
    fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        Self {
            http1: client(FixedConnector::new(app), false),
            http2: client(FixedConnector::new(app), true),
            protocol,
        }
    }
}

impl<B: StackBody> Service<Request<B>> for AppClient<B> {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = futures::future::MapErr<
        hyper_util::client::legacy::ResponseFuture,
        fn(hyper_util::client::legacy::Error) -> BoxError,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // hyper-util's client is always ready: it queues on its own pool.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        let http2 = match self.protocol {
            AppProtocol::Auto => grpc,
            AppProtocol::Http1 => false,
            AppProtocol::Http2 => true,
        };
        *req.version_mut() = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let client = if http2 { &self.http2 } else { &self.http1 };
        client
            .request(req)
            .map_err(BoxError::from as fn(hyper_util::client::legacy::Error) -> BoxError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a per-try timeout that gave the endpoint `budget`.
    async fn timed_out_after(budget: Duration) -> BoxError {
        let never = tower::service_fn(|()| std::future::pending::<Result<(), BoxError>>());
        TimeoutLayer::new(budget)
            .layer(never)
            .oneshot(())
            .await
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_per_try_timeout_counts_against_an_endpoint_only_after_a_fair_try() {
        let classifier = EndpointClassifier {
            fair_try: Duration::from_millis(100),
        };
        assert!(classifier.counts_error(&timed_out_after(Duration::from_millis(200)).await));
        assert!(
            !classifier.counts_error(&timed_out_after(Duration::from_millis(10)).await),
            "its time went by in the queue"
        );
        assert!(classifier.counts_error(&"connection refused".into()));
    }
}
