//! The outbound stack of one route: faults, shedding, the total timeout, retries and the
//! per-try timeout, over one endpoint behind a fail-fast breaker or a p2c peak-EWMA balancer
//! over endpoints each behind its own breaker.

use super::{
    LiveEndpoints, NoteEndpoint, StackBody, StackService, admission,
    balancer::PerWorker,
    count_attempt,
    discovery::{self, Source},
    fail_fast::FailWhenAllOpen,
    fault::FaultLayer,
    field_error,
    load::PublishedLoad,
};
use crate::{
    config::{
        ConcurrencyLimit, Config, ConfigProblem, DiscoveryConfig, Endpoint, FaultConfig, OriginTls,
        OutboundConfig, UpstreamProtocol,
    },
    transport::{AppClient, EndpointTransport, PooledBody, mtls_pool, origin_pool, worker},
};
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::Body;
use resilience_breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer, Classify, Mode};
use resilience_core::{BoxError, CallerBodyFailed, Enforcement, GRPC_STATUS, header_value};
use resilience_mtls::{ConnectorBuilder, MaterialError, OriginConnector, OriginPaths};
use resilience_retry::{Budget, PeekGrpcTrailersLayer, ReplayBody};
use resilience_timeout::{Elapsed, HttpDeadline, Timeout, TimeoutLayer};
use rustls_pki_types::ServerName;
use std::{fmt, marker::PhantomData, net::SocketAddr, sync::Arc, time::Duration};
use tower::{
    Layer, ServiceBuilder,
    balance::p2c::Balance,
    discover::{Discover, ServiceList},
    load::{CompleteOnResponse, PeakEwma},
    util::{BoxCloneService, Either},
};

/// The round-trip time assumed for an endpoint before it has been measured.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How quickly peak-EWMA forgets a slow round trip.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// One outbound route, assembled: the service, and its endpoints with their breakers.
pub(crate) struct Outbound<B> {
    /// The route's service.
    pub(crate) service: StackService<B>,
    /// The endpoints in use now, each with its breaker, for the admin server. Kept up to date
    /// by discovery for `dns:` and `file:` sources.
    pub(crate) endpoints: LiveEndpoints,
    /// The route's retry budget, for the admin server.
    #[cfg_attr(
        not(feature = "proxy"),
        allow(dead_code, reason = "read by the admin server")
    )]
    pub(crate) budget: Arc<Budget>,
}

impl<B> fmt::Debug for Outbound<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Builds the outbound stack of `route`, one of `config`'s `[[outbound]]` routes: what the
/// sidecar serves on the route's listener, for library mode. With the connector `tls`,
/// endpoints are dialled over mTLS and must present the route's `server_identity`; a route
/// whose config has `tls = { server_name, trust }` speaks HTTPS to servers outside the mesh;
/// any other, plaintext. `dns:` and
/// `file:` endpoints are found as `config`'s `[discovery]` says. Must run inside a tokio
/// runtime for a `dns:` or `file:` source: its discovery gets a task of its own (it ends when
/// the stack is dropped).
pub fn outbound<B>(
    config: &Config,
    route: &OutboundConfig,
    tls: Option<&ConnectorBuilder>,
) -> Result<StackService<B>, ConfigProblem>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    outbound_with_endpoints(config, route, tls).map(|outbound| outbound.service)
}

/// The connector of a route's `tls`, and the host of its requests' authority (an IPv6
/// address in brackets): its files read now (and again before each connection once they
/// change); errors name the field.
fn origin(tls: &OriginTls) -> Result<(OriginConnector, Authority), ConfigProblem> {
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| field_error("tls", "server_name", e))?;
    let host = match tls.server_name.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => tls.server_name.clone(),
    };
    let authority = Authority::try_from(host).map_err(|e| field_error("tls", "server_name", e))?;
    let mut paths = OriginPaths::new(&tls.trust);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => paths = paths.client_certificate(cert, key),
        (None, None) => {}
        (cert, _) => {
            let (field, other) = if cert.is_some() {
                ("cert", "key")
            } else {
                ("key", "cert")
            };
            return Err(field_error(
                "tls",
                field,
                format_args!("needs `{other}` beside it"),
            ));
        }
    }
    let connector = OriginConnector::from_files(paths, name)
        .map_err(|e| field_error("tls", origin_field(tls, &e), e))?;
    Ok((connector, authority))
}

/// The key of `tls` whose file `error` is about: by what the error says, since one file may
/// hold both the certificate and its key.
fn origin_field(tls: &OriginTls, error: &MaterialError) -> &'static str {
    match error {
        MaterialError::NoKey { .. }
        | MaterialError::UnsupportedKey { .. }
        | MaterialError::KeyMismatch { .. } => "key",
        MaterialError::Expired { .. } | MaterialError::NotYetValid { .. } => "cert",
        _ if error.path() == tls.trust => "trust",
        _ if tls.key.as_deref() == Some(error.path()) && tls.cert != tls.key => "key",
        _ => "cert",
    }
}

/// Whether the connector `tls` is what `config` asks of `route`: mTLS exactly when there is
/// an `[identity]` and the route does not ask for plaintext or `tls` of its own.
/// `Config::parse` holds a route to this; a `Config` made otherwise, or a library user's
/// connector, is held to it here, so that no route goes out in plaintext unasked, nor has
/// one of two settings silently dropped.
fn connector_matches(
    config: &Config,
    route: &OutboundConfig,
    tls: Option<&ConnectorBuilder>,
) -> Result<(), ConfigProblem> {
    if route.tls.is_some() && route.server_identity.is_some() {
        return Err(field_error(
            "tls",
            "server_name",
            "contradicts `server_identity`: a route outside the mesh checks no identity",
        ));
    }
    match (tls.is_some(), route.in_mesh(config.identity.is_some())) {
        (true, false) => Err(field_error(
            "outbound",
            "server_identity",
            "an mTLS connector was given for a route outside the mesh (without [identity], or \
             with `plaintext` or `tls`)",
        )),
        (false, true) => Err(field_error(
            "outbound",
            "server_identity",
            "the route speaks mTLS with [identity]: give it a connector, with its \
             server_identity (or set `plaintext = true`, or `tls`, for endpoints outside the \
             mesh)",
        )),
        _ => Ok(()),
    }
}

/// [`outbound`], with the route's endpoints and their breakers, for the admin server.
pub(crate) fn outbound_with_endpoints<B: StackBody>(
    config: &Config,
    route: &OutboundConfig,
    tls: Option<&ConnectorBuilder>,
) -> Result<Outbound<B>, ConfigProblem> {
    connector_matches(config, route, tls)?;
    let discovery = &config.discovery;
    // One fixed endpoint has no balancer to wait for: the per-try timeout inside its
    // breaker is the only one, and tells the next hop its deadline. With a balancer, one outside
    // also covers the wait for it and tells the next hop; the inner one times the
    // endpoint alone. (Both, for one endpoint, cost a second timeout per attempt for nothing:
    // the inner one fires first, to the same deadline.)
    let factory = EndpointFactory::<B> {
        route: route.name.clone(),
        breaker: route
            .breaker
            .layer()
            .map_err(|e| field_error("breaker", e.field(), &e))?
            .classify(EndpointClassifier {
                fair_try: route.retry.per_try_timeout.unwrap_or_default() / 2,
            })
            .ejection_cap(
                route
                    .breaker
                    .ejection_cap()
                    .map_err(|e| field_error("breaker", e.field(), &e))?,
            ),
        tls: tls.cloned(),
        origin: route.tls.as_ref().map(origin).transpose()?,
        protocol: route.endpoint_protocol,
        // It tells the next hop the time left as the endpoint is called: on a balanced route the
        // per-try timeout outside the balancer told it before any wait for a ready endpoint
        // (every breaker half-open with its probe out, discovery's first answer), which this
        // rewrites with what is left after it. The margin is the outermost timeout's, taken once.
        per_try: route.retry.per_try_timeout_layer(),
        body: PhantomData,
    };
    let live = LiveEndpoints::default();
    let total = route
        .total_timeout_layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?;
    let body_timeout = route
        .timeout
        .body_layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?;
    let retry = route
        .retry
        .layer()
        .map_err(|e| field_error("retry", e.field(), &e))?
        .named(route.name.clone());
    let budget = retry.shared_budget().clone();

    if let Some((addr, limit)) = plain_shape(route, body_timeout.is_some()) {
        // The usual route gets a stack of its own: the layers it has, and not the levels
        // that would pass its requests by the ones it has not (each an `Either` or an empty
        // layer, which moves every request, future and response once more), for the same
        // decisions as the general stack below.
        let breaker = factory.make_plain(addr);
        live.insert(addr, breaker.handle().clone());
        let service = ServiceBuilder::new()
            .layer(admission::fixed(limit))
            .layer(total)
            .layer(retry)
            .map_request(count_attempt)
            .layer(PeekGrpcTrailersLayer::new())
            .service(breaker);
        return Ok(Outbound {
            service: BoxCloneService::new(service),
            endpoints: live,
            budget,
        });
    }

    let endpoints = endpoints(route, &factory, &live, discovery)?;
    // Hedging takes the place of retries, with their policy and budget (gRPC A6).
    let retry_or_hedge = match &route.hedge {
        Some(hedge) => Either::Left(
            hedge
                .layer(retry.policy().clone(), budget.clone())
                .map_err(|e| field_error("hedge", e.field(), &e))?
                .named(route.name.clone()),
        ),
        None => Either::Right(retry),
    };
    let concurrency = admission::concurrency(
        &route.max_concurrent_requests,
        &route.name,
        "max_concurrent_requests",
    )?;
    let rate_limit = admission::route_rate(route.rate_limit.as_ref(), &route.name, "rate_limit")?;
    let service = ServiceBuilder::new()
        // First: a request over the rate takes no place in the concurrency limit, nor does
        // an injected fault (as Envoy's fault filter comes before the upstream's limits).
        .option_layer(rate_limit)
        .option_layer(faults(route).cloned().map(FaultLayer::new))
        // It holds each request's place in its response's body, boxed there.
        .layer(concurrency)
        .layer(body_timeout.unwrap_or_default())
        .layer(total)
        .layer(retry_or_hedge)
        // Each attempt, for the request's span (a no-op without one).
        .map_request(count_attempt)
        .option_layer(
            route
                .retry
                .per_try_timeout_layer()
                .filter(|_| !single(route)),
        )
        .layer(PeekGrpcTrailersLayer::new())
        .service(endpoints);
    Ok(Outbound {
        service: BoxCloneService::new(service),
        endpoints: live,
        budget,
    })
}

/// Whether `route` has one fixed endpoint, for good: no balancer.
fn single(route: &OutboundConfig) -> bool {
    matches!(&route.endpoints[..], [Endpoint::Static(_)])
}

/// The faults `route` injects, if it injects any (a share of 0 % injects none).
fn faults(route: &OutboundConfig) -> Option<&FaultConfig> {
    route.fault.as_ref().filter(|fault| fault.injects())
}

/// The endpoint and the concurrency limit of a route of the usual shape: one fixed endpoint,
/// a fixed concurrency limit, and no rate limit, faults, hedging, body timeouts or per-try
/// timeout.
fn plain_shape(route: &OutboundConfig, body_timeouts: bool) -> Option<(SocketAddr, usize)> {
    let (&[Endpoint::Static(addr)], ConcurrencyLimit::Fixed(limit)) =
        (&route.endpoints[..], &route.max_concurrent_requests)
    else {
        return None;
    };
    let optional_layers = route.rate_limit.is_some()
        || faults(route).is_some()
        || route.hedge.is_some()
        || route.retry.per_try_timeout.is_some()
        || body_timeouts;
    (!optional_layers).then_some((addr, *limit))
}

/// The endpoints of `route`, for the general stack: one fixed endpoint behind a fail-fast
/// breaker, or a balancer over a set.
fn endpoints<B: StackBody>(
    route: &OutboundConfig,
    factory: &EndpointFactory<B>,
    live: &LiveEndpoints,
    discovery: &DiscoveryConfig,
) -> Result<Endpoints<B>, ConfigProblem> {
    let endpoints_error = |message: String| ConfigProblem {
        field: "endpoints".to_owned(),
        line: None,
        message,
    };

    // A balancer per worker (see `balancer`), over the same endpoints and breakers.
    let workers = worker::slots();
    let discovered = |source, initial| {
        let changes = discovery::spawn(
            &route.name,
            source,
            initial,
            live.clone(),
            workers,
            factory.dynamic(workers),
        );
        balanced(changes, live, route.breaker.mode)
    };

    Ok(match &route.endpoints[..] {
        [Endpoint::Static(addr)] => {
            // One endpoint, for good: no balancer, and a breaker that fails fast.
            let breaker = factory.make(*addr, Mode::FailFast);
            live.insert(*addr, breaker.handle().clone());
            Either::Left(breaker)
        }
        // A set that can change, and grow from one: always the balancer.
        #[cfg(feature = "dns")]
        [Endpoint::Dns { name, port }] => {
            let (source, last_good) =
                Source::dns(discovery, name, *port).map_err(|message| ConfigProblem {
                    field: "discovery.resolver".to_owned(),
                    line: None,
                    message,
                })?;
            Either::Right(discovered(source, last_good))
        }
        #[cfg(not(feature = "dns"))]
        [entry @ Endpoint::Dns { .. }] => {
            return Err(endpoints_error(format!(
                "\"{entry}\" needs sidecar-lite's `dns` feature (DNS discovery)"
            )));
        }
        [Endpoint::File(path)] => {
            let (source, initial) =
                Source::file(discovery, path.clone()).map_err(endpoints_error)?;
            Either::Right(discovered(source, initial))
        }
        entries => {
            let mut breakers = Vec::with_capacity(entries.len());
            for entry in entries {
                let Endpoint::Static(addr) = entry else {
                    return Err(endpoints_error(format!(
                        "\"{entry}\" must be the route's only entry"
                    )));
                };
                let breaker = factory.make(*addr, Mode::BackPressure);
                live.insert(*addr, breaker.handle().clone());
                breakers.push((*addr, breaker));
            }
            let lists = (0..workers).map(|_| {
                ServiceList::new(
                    breakers
                        .iter()
                        .map(|(addr, breaker)| factory.balanced(breaker.clone(), *addr))
                        .collect::<Vec<_>>(),
                )
            });
            Either::Right(balanced(lists, live, route.breaker.mode))
        }
    })
}

/// What an endpoint is sent: a request whose body can be replayed for retries.
type EndpointRequest<B> = Request<ReplayBody<B>>;
/// What an endpoint answers: a response streaming from its connection pool.
type EndpointResponse<B> = Response<PooledBody<ReplayBody<B>>>;
/// The endpoints of a route: one, for good, behind its breaker; or a balancer over a set.
/// The single endpoint, the common case, is not boxed: a box costs an allocation for each
/// request's future and another for each clone the retry layer takes.
type Endpoints<B> = Either<Breaker<B>, BalancedEndpoints<B>>;
/// A balancer over endpoints, type-erased.
type BalancedEndpoints<B> = BoxCloneService<EndpointRequest<B>, EndpointResponse<B>, BoxError>;
/// One endpoint's connections: plaintext or mTLS.
type Transport<B> = EndpointTransport<ReplayBody<B>>;
/// One endpoint's client: the inner per-try timeout if configured, over the connections.
type EndpointClient<B> =
    Either<Timeout<NoteEndpoint<Transport<B>>, HttpDeadline>, NoteEndpoint<Transport<B>>>;
/// How an endpoint's breaker tells failures: a 5xx, or a gRPC status in the response head
/// that says the server, not the request, is at fault (unavailable, internal, deadline
/// exceeded); and every error but a per-try timeout that left the endpoint less than a fair
/// try (the attempt's time went by waiting for the balancer, not on the endpoint).
#[derive(Debug, Clone, Copy)]
struct EndpointClassifier {
    /// Half the per-try timeout: an endpoint that had at least this long and did not answer
    /// hung; one that had less was not given its chance.
    fair_try: Duration,
}

impl<Body> Classify<Response<Body>> for EndpointClassifier {
    fn is_failure(&self, response: &Response<Body>) -> bool {
        if response.status().is_server_error() {
            return true;
        }
        matches!(
            header_value(response.headers(), &GRPC_STATUS).map(|v| v.as_bytes()),
            Some(b"4" | b"13" | b"14")
        )
    }

    fn counts_error(&self, error: &BoxError) -> bool {
        !CallerBodyFailed::in_chain(&**error)
            && error
                .downcast_ref::<Elapsed>()
                .is_none_or(|elapsed| elapsed.after() >= self.fair_try)
    }
}
/// One endpoint: its client behind its own breaker.
type Breaker<B> = CircuitBreaker<EndpointClient<B>, EndpointClassifier>;
/// The one endpoint of a route of the usual shape (`plain_shape`): its connections behind its
/// breaker, with no per-try timeout between them.
type PlainBreaker<B> = CircuitBreaker<NoteEndpoint<Transport<B>>, EndpointClassifier>;
/// One endpoint as the balancer sees it: with its load measured, and published.
type Balanced<B> = PublishedLoad<PeakEwma<Breaker<B>, CompleteOnResponse>>;

/// Builds each endpoint of a route, the same way for fixed and discovered ones.
struct EndpointFactory<B> {
    route: String,
    breaker: CircuitBreakerLayer<EndpointClassifier>,
    tls: Option<ConnectorBuilder>,
    /// One-way TLS to a server outside the mesh, and its name as each request's authority.
    origin: Option<(OriginConnector, Authority)>,
    protocol: UpstreamProtocol,
    /// Inside the breaker, so that an attempt that times out on the endpoint counts against
    /// it; to the outer per-try deadline when there is one (it fires first, being polled
    /// first).
    per_try: Option<TimeoutLayer<HttpDeadline>>,
    body: PhantomData<fn(B)>,
}

impl<B: StackBody> EndpointFactory<B> {
    /// The client of `addr` behind its breaker: the inner per-try timeout, if any, over its
    /// connections.
    fn make(&self, addr: SocketAddr, mode: Mode) -> Breaker<B> {
        let client = ServiceBuilder::new()
            .option_layer(self.per_try.clone())
            // Past the breaker: this endpoint takes the attempt.
            .service(NoteEndpoint::new(self.transport(addr), addr));
        self.breaker(addr, mode, client)
    }

    /// The client of `addr` behind its fail-fast breaker, for a route of the usual shape:
    /// what [`EndpointFactory::make`] builds when there is no per-try timeout, without the
    /// level that passes requests by it.
    fn make_plain(&self, addr: SocketAddr) -> PlainBreaker<B> {
        let client = NoteEndpoint::new(self.transport(addr), addr);
        self.breaker(addr, Mode::FailFast, client)
    }

    /// `client`, the endpoint at `addr`, behind its own breaker, named `<route>/<addr>` so that
    /// its metrics tell endpoints apart.
    fn breaker<S>(
        &self,
        addr: SocketAddr,
        mode: Mode,
        client: S,
    ) -> CircuitBreaker<S, EndpointClassifier> {
        self.breaker
            .clone()
            .named(format!("{}/{addr}", self.route))
            .mode(mode)
            .layer(client)
    }

    /// The connections to `addr`: over mTLS when the route has `server_identity`. One pool
    /// per endpoint, whatever the requests say of their authority, speaking the route's
    /// `endpoint_protocol`: by default HTTP/2 when the peer's sidecar chooses it by ALPN; in
    /// plaintext, HTTP/1.1, and HTTP/2 with prior knowledge for gRPC (its trailers need it).
    fn transport(&self, addr: SocketAddr) -> Transport<B> {
        match (&self.tls, &self.origin) {
            (Some(builder), _) => EndpointTransport::Mtls(mtls_pool(builder, addr, self.protocol)),
            (None, Some((origin, host))) => {
                // The port too, unless it is HTTPS's own (RFC 9110, section 7.2).
                let authority = match addr.port() {
                    443 => host.clone(),
                    port => Authority::try_from(format!("{host}:{port}"))
                        .unwrap_or_else(|_| host.clone()),
                };
                EndpointTransport::origin(
                    origin_pool(origin, addr, &authority, self.protocol),
                    authority,
                )
            }
            (None, None) => EndpointTransport::Plain(AppClient::endpoint(addr, self.protocol)),
        }
    }

    /// What discovery calls for each new endpoint: its balanced service for each of
    /// `workers` balancers, and its breaker, which they share.
    fn dynamic(
        &self,
        workers: usize,
    ) -> impl FnMut(SocketAddr) -> (Vec<Balanced<B>>, BreakerHandle) + Send + 'static {
        let factory = Self {
            route: self.route.clone(),
            breaker: self.breaker.clone(),
            tls: self.tls.clone(),
            origin: self.origin.clone(),
            protocol: self.protocol,
            per_try: self.per_try.clone(),
            body: PhantomData,
        };
        move |addr| {
            let breaker = factory.make(addr, Mode::BackPressure);
            let handle = breaker.handle().clone();
            let services = (0..workers)
                .map(|_| factory.balanced(breaker.clone(), addr))
                .collect();
            (services, handle)
        }
    }

    /// `breaker`, the endpoint at `addr`, as the balancer sees it: its load measured by
    /// peak-EWMA, and published.
    fn balanced(&self, breaker: Breaker<B>, addr: SocketAddr) -> Balanced<B> {
        let measured = PeakEwma::new(
            breaker,
            DEFAULT_RTT,
            EWMA_DECAY.as_nanos() as f64,
            CompleteOnResponse::default(),
        );
        PublishedLoad::new(measured, &self.route, addr)
    }
}

/// A p2c peak-EWMA balancer per worker, each over its own view of the endpoints (one of
/// `endpoints` per worker), each endpoint behind a back-pressure breaker; it fails at once
/// while every breaker in `live` is open.
fn balanced<B, D>(
    endpoints: impl IntoIterator<Item = D>,
    live: &LiveEndpoints,
    breakers: Enforcement,
) -> BalancedEndpoints<B>
where
    B: StackBody,
    D: Discover<Service = Balanced<B>> + Unpin + Send + 'static,
    D::Key: std::hash::Hash + Clone + Send,
    D::Error: Into<BoxError>,
{
    BoxCloneService::new(FailWhenAllOpen::new(
        PerWorker::new(endpoints.into_iter().map(Balance::new), live.give_up()),
        live.clone(),
        breakers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The error of a per-try timeout that gave the endpoint `budget`.
    async fn timed_out_after(budget: Duration) -> BoxError {
        let never = tower::service_fn(|()| std::future::pending::<Result<(), BoxError>>());
        TimeoutLayer::new(budget)
            .layer(never)
            .oneshot(())
            .await
            .unwrap_err()
    }

    /// Library mode holds the connector it is given to what the config says: a mesh route
    /// with no connector would go out in plaintext unasked.
    #[tokio::test]
    async fn a_mesh_route_without_a_connector_is_refused() {
        let text = "[identity]\ncert = \"c.pem\"\nkey = \"k.pem\"\ntrust = \"t.pem\"\n\n\
                    [[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:15001\"\n\
                    endpoints = [\"127.0.0.1:1\"]\n";
        let mesh = Config::parse(&format!(
            "{text}server_identity = \"spiffe://example.org/ns/a/sa/b\"\n"
        ))
        .unwrap();
        let Err(problem) = outbound::<http_body_util::Empty<Bytes>>(&mesh, &mesh.outbound[0], None)
        else {
            panic!("a mesh route was built without a connector");
        };
        assert!(problem.message.contains("give it a connector"), "{problem}");
        let plain = Config::parse(&format!("{text}plaintext = true\n")).unwrap();
        assert!(outbound::<http_body_util::Empty<Bytes>>(&plain, &plain.outbound[0], None).is_ok());
    }

    /// The one route of a config: a route to `endpoints`, plus `extra` keys (in its own
    /// table, or tables of their own after it).
    fn route_with(endpoints: &str, extra: &str) -> OutboundConfig {
        let text = format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:15001\"\n\
             endpoints = [{endpoints}]\n{extra}"
        );
        Config::parse(&text).unwrap().outbound.remove(0)
    }

    /// Whether the route is built as the usual shape, without the optional layers' levels.
    fn takes_plain_stack(route: &OutboundConfig) -> bool {
        let body_timeouts = route.timeout.body_layer().unwrap().is_some();
        plain_shape(route, body_timeouts).is_some()
    }

    /// [`takes_plain_stack`] for one endpoint and `extra`.
    fn plain(extra: &str) -> bool {
        takes_plain_stack(&route_with("\"127.0.0.1:8080\"", extra))
    }

    #[test]
    fn only_a_route_without_optional_layers_takes_the_plain_stack() {
        assert!(plain(""));
        assert!(plain("max_concurrent_requests = 64\ntimeout = \"2s\"\n"));
        assert!(plain("[outbound.retry]\nattempts = 5\n"));
        assert!(
            plain("[outbound.fault]\nabort = { percent = 0.0, status = 503 }\n"),
            "a fault section that injects nothing adds no layer"
        );
        let two = route_with("\"127.0.0.1:8080\", \"127.0.0.1:8081\"", "");
        assert!(!takes_plain_stack(&two), "a balancer");
        for other in [
            "max_concurrent_requests = \"adaptive\"\n",
            "[outbound.rate_limit]\nrate = 100\n",
            "[outbound.fault]\nabort = { percent = 1.0, status = 503 }\n",
            "[outbound.fault]\ndelay = { percent = 1.0, duration = \"1ms\" }\n",
            "[outbound.retry]\nattempts = 1\n[outbound.hedge]\ndelay = \"10ms\"\n",
            "[outbound.retry]\nper_try_timeout = \"100ms\"\n",
            "[outbound.timeout]\ntimeout = \"2s\"\nbody_idle_timeout = \"1s\"\n",
        ] {
            assert!(!plain(other), "{other}");
        }
    }

    /// On a balanced route a request may wait before the balancer for a ready endpoint: the
    /// next hop is told the time left when the endpoint is called, after the wait, by the
    /// per-try timeout inside each endpoint (the one outside the balancer told it before).
    #[tokio::test(start_paused = true)]
    async fn a_balanced_route_tells_the_time_left_after_the_wait_for_an_endpoint() {
        let route = route_with(
            "\"127.0.0.1:8080\", \"127.0.0.1:8081\"",
            "[outbound.retry]\nper_try_timeout = \"1s\"\n",
        );
        // The endpoint answers with the request it was sent.
        let endpoint = tower::service_fn(|req: Request<()>| async move { Ok::<_, BoxError>(req) });
        // A call that waits 600 ms before its endpoint's, as one to a balancer with no endpoint
        // ready yet.
        let gate = Gate(route.retry.per_try_timeout_layer().unwrap().layer(endpoint));
        let stack = tower::ServiceBuilder::new()
            .layer(route.total_timeout_layer().unwrap())
            .layer(route.retry.per_try_timeout_layer().unwrap())
            .service(gate);
        let sent = stack.oneshot(Request::new(())).await.unwrap();
        let told: u64 = sent.headers()["x-request-timeout-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(told, 395, "1 s, less the 600 ms wait and the 5 ms margin");
    }

    /// Calls its inner service 600 ms after it is called.
    struct Gate<S>(S);

    impl<S> tower::Service<Request<()>> for Gate<S>
    where
        S: tower::Service<Request<()>> + Clone + Send + 'static,
        S::Future: Send,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            let inner = self.0.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                inner.oneshot(req).await
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_per_try_timeout_counts_against_an_endpoint_only_after_a_fair_try() {
        let classifier = EndpointClassifier {
            fair_try: Duration::from_millis(100),
        };
        let counts_error = |error: &BoxError| {
            <EndpointClassifier as Classify<Response<()>>>::counts_error(&classifier, error)
        };
        assert!(counts_error(
            &timed_out_after(Duration::from_millis(200)).await
        ));
        assert!(
            !counts_error(&timed_out_after(Duration::from_millis(10)).await),
            "its time went by in the queue"
        );
        assert!(counts_error(&"connection refused".into()));
    }
}
