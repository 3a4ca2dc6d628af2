//! Two timeouts in one stack, around and inside a retrying service.

use resilience_timeout::{Elapsed, TimeoutLayer};
use std::{
    future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::time::{self, Instant};
use tower::{BoxError, ServiceBuilder, ServiceExt, retry::Policy, service_fn};

/// Retries every failure, without limit: only the total timeout can stop it.
#[derive(Clone)]
struct RetryAll;

impl<Req: Clone, Res> Policy<Req, Res, BoxError> for RetryAll {
    type Future = future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        result.is_err().then(|| future::ready(()))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// A service whose first `hangs` calls never answer; later calls answer at once.
fn hangs_then_answers(
    hangs: usize,
) -> (
    impl tower::Service<(), Response = &'static str, Error = BoxError, Future: Send> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |()| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < hangs {
                future::pending::<()>().await;
            }
            Ok::<_, BoxError>("ok")
        }
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_lets_the_retry_reach_a_healthy_attempt() {
    let (inner, calls) = hangs_then_answers(2);
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(2)).named("total"))
        .retry(RetryAll)
        .layer(TimeoutLayer::new(Duration::from_millis(300)).named("per-try"))
        .service(inner);

    let start = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two attempts timed out at 300 ms each, the third answered at once.
    assert_eq!(start.elapsed(), Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn total_timeout_caps_all_attempts() {
    let (inner, calls) = hangs_then_answers(usize::MAX);
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)).named("total"))
        .retry(RetryAll)
        .layer(TimeoutLayer::new(Duration::from_millis(300)).named("per-try"))
        .service(inner);

    let start = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    let elapsed = err
        .downcast_ref::<Elapsed>()
        .expect("the total timeout fired");
    assert_eq!(elapsed.after(), Duration::from_secs(1));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // Attempts started at 0, 300, 600 and 900 ms; the fourth was cut short by the total.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Nothing is left running once the call has failed.
    time::advance(Duration::from_secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
