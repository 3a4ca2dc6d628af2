//! Closed-state cost per call of a circuit breaker, in one run: a bare service,
//! tower-resilience's circuit breaker, and ours (count window, and time window which also reads
//! the clock), each configured alike (failure rate 50 % over the last 100 calls, 20 calls
//! minimum, 5 s open, 3 half-open probes). Every call succeeds at once, so the breaker stays
//! Closed and the differences are each layer's own overhead: single-threaded, and with two
//! threads calling through clones that share one breaker.

use benches::{bench_calls, bench_calls_threaded, echo, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use resilience_breaker::{CircuitBreakerLayer, Policy, SlidingWindow};
use std::time::Duration;
use tower::Layer;
use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrCircuitBreakerLayer;

const OPEN_FOR: Duration = Duration::from_secs(5);

fn ours(window: SlidingWindow) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        Policy::default()
            .failure_rate(0.5)
            .window(window)
            .minimum_calls(20)
            .open_for(OPEN_FOR)
            .half_open_probes(3),
    )
    .expect("a valid policy")
}

fn tower_resilience() -> TrCircuitBreakerLayer {
    TrCircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .wait_duration_in_open(OPEN_FOR)
        .permitted_calls_in_half_open(3)
        .build()
        .expect("a valid tower-resilience config")
}

fn breaker(c: &mut Criterion) {
    let rt = runtime();
    let count = SlidingWindow::Count(100);
    let time = SlidingWindow::Time(Duration::from_secs(10));

    let mut group = c.benchmark_group("breaker/1-thread");
    bench_calls(&mut group, "bare", &rt, echo());
    // tower-resilience builds its service inside the runtime (it may touch tokio there).
    let theirs = rt.block_on(async { tower_resilience().layer(echo()) });
    bench_calls(&mut group, "tower-resilience", &rt, theirs);
    bench_calls(&mut group, "resilience", &rt, ours(count).layer(echo()));
    bench_calls(
        &mut group,
        "resilience-time-window",
        &rt,
        ours(time).layer(echo()),
    );
    group.finish();

    let mut group = c.benchmark_group("breaker/2-threads");
    bench_calls_threaded(&mut group, "bare", 2, echo());
    let theirs = rt.block_on(async { tower_resilience().layer(echo()) });
    bench_calls_threaded(&mut group, "tower-resilience", 2, theirs);
    bench_calls_threaded(&mut group, "resilience", 2, ours(count).layer(echo()));
    bench_calls_threaded(
        &mut group,
        "resilience-time-window",
        2,
        ours(time).layer(echo()),
    );
    group.finish();
}

criterion_group!(benches, breaker);
criterion_main!(benches);
