//! Success-path cost per call of the limits of resilience-limit, beside tower's `RateLimit`
//! and `ConcurrencyLimit` and tower-resilience's rate limiter and adaptive limiter, in one
//! run. Every limit is far above what the bench reaches, so no call is refused or waits: the
//! differences are each layer's own overhead.
//!
//! - rate: ours (GCRA, governor, on tokio's clock; one limit for every clone), tower's
//!   `RateLimit` (a limit per clone), the same behind a `Buffer` (how tower gives one limit to
//!   all callers), tower-resilience's `RateLimiterLayer` (fixed window), each at a billion
//!   calls a second.
//! - hedge: ours and tower-resilience's, at a delay of 100 ms that no call reaches (the cost
//!   of hedging when no copy is sent).
//! - concurrency: ours adaptive (Gradient2, the default), ours adaptive (AIMD, Vegas), tower's
//!   `ConcurrencyLimit` (fixed, with load shedding, as the sidecar's fixed limit),
//!   tower-resilience's `AdaptiveLimiterLayer` (AIMD), each starting at a limit of 1000.

use benches::{bench_calls, echo, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use resilience_limit::{AdaptiveConcurrencyLayer, Aimd, Algorithm, Rate, RateLimitLayer, Vegas};
use resilience_retry::{HedgeDelay, HedgeLayer, RetryIf};
use std::time::Duration;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_resilience::{
    adaptive::{AdaptiveLimiterLayer, Aimd as TrAimd},
    hedge::HedgeLayer as TrHedgeLayer,
    ratelimiter::RateLimiterLayer as TrRateLimiterLayer,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LIMIT: usize = 1000;

fn limits(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("limits");
    bench_calls(&mut group, "bare", &rt, echo());

    let rate = Rate::new(1e9, u32::MAX).expect("a rate");
    bench_calls(
        &mut group,
        "rate/ours",
        &rt,
        RateLimitLayer::new(rate).layer(echo()),
    );
    bench_calls(&mut group, "rate/tower", &rt, TowerRate::new());
    // tower's limit is per clone; one limit for all callers is a buffer in front of it.
    bench_calls(
        &mut group,
        "rate/tower-buffered",
        &rt,
        tower::buffer::Buffer::new(TowerRate::new(), 1024),
    );
    let tr_rate = TrRateLimiterLayer::builder()
        .limit_for_period(1_000_000_000)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("a tower-resilience rate limiter");
    bench_calls(
        &mut group,
        "rate/tower-resilience",
        &rt,
        tr_rate.layer(echo()),
    );

    let adaptive = |algorithm| {
        AdaptiveConcurrencyLayer::new(algorithm)
            .limits(LIMIT, 1, 10 * LIMIT)
            .expect("limits")
    };
    bench_calls(
        &mut group,
        "concurrency/ours-gradient2",
        &rt,
        adaptive(Algorithm::default()).layer(echo()),
    );
    bench_calls(
        &mut group,
        "concurrency/ours-aimd",
        &rt,
        adaptive(Algorithm::Aimd(Aimd::default())).layer(echo()),
    );
    bench_calls(
        &mut group,
        "concurrency/ours-vegas",
        &rt,
        adaptive(Algorithm::Vegas(Vegas::default())).layer(echo()),
    );
    bench_calls(
        &mut group,
        "concurrency/tower-fixed",
        &rt,
        ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(LIMIT)
            .service(echo())
            .map_err(BoxError::from),
    );
    let tr_adaptive = AdaptiveLimiterLayer::new(
        TrAimd::builder()
            .initial_limit(LIMIT)
            .max_limit(10 * LIMIT)
            .build()
            .expect("a tower-resilience AIMD"),
    );
    bench_calls(
        &mut group,
        "concurrency/tower-resilience-aimd",
        &rt,
        tr_adaptive.layer(echo()),
    );

    // Hedging, no copy fired: every call answers at once, well before the delay.
    let policy: RetryIf<_, u64> =
        RetryIf::new(|result: &Result<u64, std::convert::Infallible>| result.is_err());
    bench_calls(
        &mut group,
        "hedge/ours",
        &rt,
        HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(100))).layer(echo()),
    );
    let tr_hedge = TrHedgeLayer::builder()
        .delay(Duration::from_millis(100))
        .max_hedged_attempts(2)
        .build();
    bench_calls(
        &mut group,
        "hedge/tower-resilience",
        &rt,
        tr_hedge.layer(echo()),
    );
    group.finish();
}

/// tower's `RateLimit`, which is not `Clone` (each instance has its own window): a clone is a
/// new one, at the same rate, which is all `bench_calls` needs (it clones once per batch).
struct TowerRate(tower::limit::RateLimit<Echo>);

type Echo =
    tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, std::convert::Infallible>>>;

impl TowerRate {
    fn new() -> Self {
        let echo: Echo = tower::service_fn(|n| std::future::ready(Ok(n)));
        Self(tower::limit::RateLimitLayer::new(1_000_000_000, Duration::from_secs(1)).layer(echo))
    }
}

impl Clone for TowerRate {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl tower::Service<u64> for TowerRate {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u64, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, n: u64) -> Self::Future {
        self.0.call(n)
    }
}

criterion_group!(benches, limits);
criterion_main!(benches);
