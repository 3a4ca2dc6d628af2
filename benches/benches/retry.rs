//! Success-path cost of a retry layer, in one run: a bare service; `tower::retry` with a
//! policy equivalent to ours (3 attempts, a `TpsBudget` deposit per request, retry on error);
//! tower-resilience's retry (3 attempts, exponential backoff, a token-bucket budget); and ours
//! (3 attempts, backoff with full jitter, the default budget). Every call succeeds at once, so
//! the differences are each layer's own overhead.

use benches::{bench_calls, echo, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use resilience_retry::{RetryIf, RetryLayer};
use std::{convert::Infallible, future, sync::Arc, time::Duration};
use tower::{
    Layer,
    retry::{
        Policy,
        budget::{Budget as _, TpsBudget},
    },
};

/// tower's retry, configured like ours: up to 2 retries on error, within a budget.
#[derive(Clone)]
struct TowerPolicy {
    retries_left: usize,
    budget: Arc<TpsBudget>,
}

impl Policy<u64, u64, Infallible> for TowerPolicy {
    type Future = future::Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, Infallible>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.retries_left > 0 && self.budget.withdraw() => {
                self.retries_left -= 1;
                Some(future::ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn retry(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("retry");
    bench_calls(&mut group, "bare", &rt, echo());

    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let tower_retry = tower::retry::RetryLayer::new(TowerPolicy {
        retries_left: 2,
        budget,
    });
    bench_calls(&mut group, "tower", &rt, tower_retry.layer(echo()));

    let tower_resilience = tower_resilience::retry::RetryLayer::<u64, u64, Infallible>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(25))
        .budget(
            tower_resilience::retry::RetryBudgetBuilder::new()
                .token_bucket()
                .build()
                .expect("a valid budget"),
        )
        .build();
    bench_calls(
        &mut group,
        "tower-resilience",
        &rt,
        tower_resilience.layer(echo()),
    );

    let ours = RetryLayer::new(RetryIf::new(|result: &Result<u64, Infallible>| {
        result.is_err()
    }));
    bench_calls(&mut group, "resilience", &rt, ours.layer(echo()));
    group.finish();
}

criterion_group!(benches, retry);
criterion_main!(benches);
