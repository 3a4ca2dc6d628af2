//! Success-path cost per call of each of our layers and of the whole library stack, beside a
//! bare service, tower's `timeout` and `retry`, and tower-resilience's retry and circuit
//! breaker, in one run. Every call succeeds at once, so the differences are each layer's own
//! overhead.
//!
//! Two groups:
//! - `layers`: `u64` in, `u64` out; each layer alone, then the stacks: ours (total timeout,
//!   retry, per-try timeout, breaker) and tower's equivalent (tower's timeout, retry and
//!   timeout again, tower-resilience's breaker, since tower has none).
//! - `layers-http`: `http::Request` in, `http::Response` out; the stack that
//!   `sidecar_lite::outbound` builds (the very layers, in its order, from a parsed
//!   `[[outbound]]` section), around an in-memory endpoint instead of the pooled client, beside
//!   tower's equivalent and the bare endpoint. This is the library mode's cost without the
//!   network. `stack/resilience-outbound-fixed-timeouts` is the same stack with both timeouts
//!   a plain timer, as tower's are: the difference is what deadline propagation costs.
//!
//! Configured alike throughout: 3 attempts, retries on error (5xx and gateway errors for HTTP)
//! within a budget of 20 % plus 10/s over 10 s, a 30 s total and 10 s per-try timeout, a
//! breaker at 50 % failures over 100 calls, at least 20 calls, 5 s open.

use benches::{bench_calls, echo, runtime};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use resilience_breaker::{CircuitBreakerLayer, Mode, classify_fn};
use resilience_limit::FixedConcurrencyLayer;
use resilience_retry::{PeekGrpcTrailersLayer, ReplayBody, RetryIf, RetryLayer};
use resilience_timeout::{Fixed, HttpDeadline, TimeoutLayer, TimeoutPolicy};
use sidecar_lite::Config;
use std::{convert::Infallible, fmt::Debug, future, sync::Arc, time::Duration};
use tokio::runtime::Runtime;
use tower::{
    Layer, Service, ServiceBuilder, ServiceExt,
    retry::{
        Policy,
        budget::{Budget as _, TpsBudget},
    },
    service_fn,
    util::BoxCloneService,
};
use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrCircuitBreakerLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOTAL: Duration = Duration::from_secs(30);
const PER_TRY: Duration = Duration::from_secs(10);
const OPEN_FOR: Duration = Duration::from_secs(5);

/// The route the HTTP stacks are built from: the sidecar's own section and parser.
const ROUTE: &str = r#"
[[outbound]]
name = "bench"
listen = "127.0.0.1:0"
endpoints = ["127.0.0.1:9"]
timeout = "30s"

[outbound.retry]
attempts = 3
per_try_timeout = "10s"
on = ["connect-failure", "reset", "gateway-error"]

[outbound.breaker]
failure_rate = 0.5
window = { calls = 100 }
minimum_calls = 20
open_for = "5s"
"#;

/// tower's retry, configured like ours: up to 2 retries when `failed` says so, within a budget.
#[derive(Clone)]
struct TowerPolicy<F> {
    retries_left: usize,
    budget: Arc<TpsBudget>,
    failed: F,
}

fn tower_policy<F>(failed: F) -> TowerPolicy<F> {
    TowerPolicy {
        retries_left: 2,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        failed,
    }
}

trait CloneRequest: Sized {
    fn clone_request(&self) -> Option<Self>;
}

impl CloneRequest for u64 {
    fn clone_request(&self) -> Option<Self> {
        Some(*self)
    }
}

impl CloneRequest for Request<Full<Bytes>> {
    fn clone_request(&self) -> Option<Self> {
        let mut clone = Request::new(self.body().clone());
        *clone.method_mut() = self.method().clone();
        *clone.uri_mut() = self.uri().clone();
        *clone.headers_mut() = self.headers().clone();
        Some(clone)
    }
}

impl<Req, Res, E, F> Policy<Req, Res, E> for TowerPolicy<F>
where
    Req: CloneRequest,
    F: Fn(&Result<Res, E>) -> bool + Clone,
{
    type Future = future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if !(self.failed)(result) {
            self.budget.deposit();
            None
        } else if self.retries_left > 0 && self.budget.withdraw() {
            self.retries_left -= 1;
            Some(future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        req.clone_request()
    }
}

fn tower_resilience_breaker() -> TrCircuitBreakerLayer {
    TrCircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .wait_duration_in_open(OPEN_FOR)
        .permitted_calls_in_half_open(3)
        .build()
        .expect("a valid tower-resilience config")
}

fn tower_resilience_retry<Req: Clone, Res, E>() -> tower_resilience::retry::RetryLayer<Req, Res, E>
{
    tower_resilience::retry::RetryLayer::<Req, Res, E>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(25))
        .budget(
            tower_resilience::retry::RetryBudgetBuilder::new()
                .token_bucket()
                .build()
                .expect("a valid budget"),
        )
        .build()
}

fn our_breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        resilience_breaker::Policy::default()
            .failure_rate(0.5)
            .window(resilience_breaker::SlidingWindow::Count(100))
            .minimum_calls(20)
            .open_for(OPEN_FOR)
            .half_open_probes(3),
    )
    .expect("a valid policy")
}

/// A body boxed as sidecar-lite's `ProxyBody` is.
fn boxed<B>(body: B) -> sidecar_lite::ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
}

fn boxed_error<E: Debug>(error: E) -> BoxError {
    format!("{error:?}").into()
}

fn each_layer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("layers");
    bench_calls(&mut group, "bare", &rt, echo());

    bench_calls(
        &mut group,
        "timeout/tower",
        &rt,
        tower::timeout::Timeout::new(echo(), TOTAL),
    );
    bench_calls(
        &mut group,
        "timeout/resilience",
        &rt,
        resilience_timeout::Timeout::new(echo(), TOTAL),
    );

    let failed = |result: &Result<u64, Infallible>| result.is_err();
    bench_calls(
        &mut group,
        "retry/tower",
        &rt,
        tower::retry::RetryLayer::new(tower_policy(failed)).layer(echo()),
    );
    bench_calls(
        &mut group,
        "retry/tower-resilience",
        &rt,
        tower_resilience_retry::<u64, u64, Infallible>().layer(echo()),
    );
    bench_calls(
        &mut group,
        "retry/resilience",
        &rt,
        RetryLayer::new(RetryIf::new(failed)).layer(echo()),
    );

    // tower-resilience builds its service inside the runtime (it may touch tokio there).
    let theirs = rt.block_on(async { tower_resilience_breaker().layer(echo()) });
    bench_calls(&mut group, "breaker/tower-resilience", &rt, theirs);
    bench_calls(
        &mut group,
        "breaker/resilience",
        &rt,
        our_breaker().layer(echo()),
    );

    // The stacks, outermost first: total timeout, retry, per-try timeout, breaker.
    let failed = |result: &Result<u64, BoxError>| result.is_err();
    let tower_stack = rt.block_on(async {
        ServiceBuilder::new()
            .timeout(TOTAL)
            .layer(tower::retry::RetryLayer::new(tower_policy(failed)))
            .timeout(PER_TRY)
            .map_err(boxed_error)
            .layer(tower_resilience_breaker())
            .service(echo())
    });
    bench_calls(&mut group, "stack/tower", &rt, tower_stack);
    let our_stack = ServiceBuilder::new()
        .layer(resilience_timeout::TimeoutLayer::new(TOTAL))
        .layer(RetryLayer::new(RetryIf::new(failed)))
        .layer(resilience_timeout::TimeoutLayer::new(PER_TRY))
        .layer(our_breaker())
        .service(echo());
    bench_calls(&mut group, "stack/resilience", &rt, our_stack);
    group.finish();
}

/// An in-memory endpoint: answers `200 OK` with a short body at once.
fn endpoint<B: Send + 'static>()
-> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_: Request<B>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
    })
}

/// Runs an HTTP service with `u64` in and out, so that [`bench_calls`] can drive it: each call
/// builds a `GET` (the same cost for every variant) and reads the status.
fn from_u64<S, B>(
    svc: S,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + 'static
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    svc.map_request(|_: u64| {
        Request::get("http://bench/")
            .body(Full::default())
            .expect("a request")
    })
    .map_response(|response: Response<B>| u64::from(response.status().as_u16()))
}

fn is_gateway_error<B>(response: &Response<B>) -> bool {
    matches!(
        response.status(),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The stack of `sidecar_lite::outbound` for one endpoint, layer for layer, from the
/// parsed route; the pooled client is replaced by the in-memory endpoint. `policy` sets both
/// timeouts' policy: the route's own (`HttpDeadline`: deadlines honoured, carried to the layers
/// further in and told to the next hop) as the sidecar builds it, or `Fixed` (a timer and
/// nothing else, as tower's timeout) to price the deadline's work apart from the layers that
/// tower also has.
fn outbound_stack<P>(
    rt: &Runtime,
    policy: impl Fn(TimeoutLayer<HttpDeadline>) -> TimeoutLayer<P>,
) -> BoxCloneService<Request<Full<Bytes>>, Response<sidecar_lite::ProxyBody>, BoxError>
where
    P: TimeoutPolicy<Request<Full<Bytes>>>
        + TimeoutPolicy<Request<ReplayBody<Full<Bytes>>>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let config = Config::parse(ROUTE).expect("the bench route parses");
    let route = config.outbound_route("bench").expect("the bench route");
    let breaker = route
        .breaker()
        .layer()
        .expect("a breaker")
        .named(route.name().to_owned())
        .mode(Mode::FailFast)
        .classify(classify_fn(|response: &Response<_>| {
            response.status().is_server_error()
        }));
    let total = policy(route.total_timeout_layer().expect("a timeout"));
    let retry = route
        .retry()
        .layer()
        .expect("a retry")
        .named(route.name().to_owned());
    let _guard = rt.enter();
    let service = ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(boxed))
        // The sidecar's fixed limit: refused at once, nothing queued, each place held until
        // the response's body ends (tower's below sheds with `LoadShed` over
        // `ConcurrencyLimit`, and gives the place back at the answer).
        .layer(
            FixedConcurrencyLayer::new(
                route
                    .max_concurrent_requests()
                    .expect("the bench's route has a fixed limit"),
            )
            .until_body_end(),
        )
        .layer(total)
        .layer(retry)
        .layer(PeekGrpcTrailersLayer::new())
        .layer(breaker)
        // One endpoint: the per-try timeout runs inside its breaker, as the sidecar's does.
        .option_layer(route.retry().per_try_timeout_layer().map(policy))
        .service(endpoint::<ReplayBody<Full<Bytes>>>());
    BoxCloneService::new(service.map_err(BoxError::from))
}

/// tower's equivalent of [`outbound_stack`]: the same shedding, limit and boxing; tower's
/// timeouts and retry; tower-resilience's breaker.
fn tower_http_stack(
    rt: &Runtime,
) -> BoxCloneService<Request<Full<Bytes>>, Response<sidecar_lite::ProxyBody>, BoxError> {
    let failed = |result: &Result<Response<Full<Bytes>>, BoxError>| match result {
        Ok(response) => is_gateway_error(response),
        Err(_) => true,
    };
    let service = rt.block_on(async {
        ServiceBuilder::new()
            .map_response(|response: Response<Full<Bytes>>| response.map(boxed))
            .load_shed()
            .concurrency_limit(1024)
            .timeout(TOTAL)
            .layer(tower::retry::RetryLayer::new(tower_policy(failed)))
            .timeout(PER_TRY)
            .map_err(boxed_error)
            .layer(tower_resilience_breaker())
            .service(endpoint::<Full<Bytes>>())
    });
    BoxCloneService::new(service.map_err(BoxError::from))
}

fn http_stack(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("layers-http");
    bench_calls(&mut group, "bare", &rt, from_u64(endpoint::<Full<Bytes>>()));
    bench_calls(
        &mut group,
        "stack/tower",
        &rt,
        from_u64(tower_http_stack(&rt)),
    );
    bench_calls(
        &mut group,
        "stack/resilience-outbound",
        &rt,
        from_u64(outbound_stack(&rt, |layer| layer)),
    );
    bench_calls(
        &mut group,
        "stack/resilience-outbound-fixed-timeouts",
        &rt,
        from_u64(outbound_stack(&rt, |layer| layer.with_policy(Fixed))),
    );
    group.finish();
}

fn config() -> Criterion {
    // Short runs: the machine is small and shared; the figures are ratios within one run.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = each_layer, http_stack
}
criterion_main!(benches);
