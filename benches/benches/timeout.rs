//! Per-call cost of a timeout layer: a bare service, `tower::timeout::Timeout`, and ours, in one
//! run. Each call completes at once, so the differences are the layers' own overhead.

use benches::{bench_calls, echo, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn timeout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("timeout");
    bench_calls(&mut group, "bare", &rt, echo());
    bench_calls(
        &mut group,
        "tower",
        &rt,
        tower::timeout::Timeout::new(echo(), TIMEOUT),
    );
    bench_calls(
        &mut group,
        "resilience",
        &rt,
        resilience_timeout::Timeout::new(echo(), TIMEOUT),
    );
    group.finish();
}

criterion_group!(benches, timeout);
criterion_main!(benches);
