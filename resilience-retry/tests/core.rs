//! The generic retry core: attempts, backoff timing, the shared budget, readiness.

use resilience_retry::{Backoff, Budget, Jitter, RetryIf, RetryLayer};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

const MS: Duration = Duration::from_millis(1);

type Outcome = Result<&'static str, &'static str>;

fn retry_errors() -> RetryIf<fn(&Outcome) -> bool, u32> {
    RetryIf::new(|result: &Outcome| result.is_err())
}

/// A service that answers with `script[n]` on its n-th call (the last entry thereafter), and
/// records when each call arrived.
fn scripted(
    script: Vec<Outcome>,
) -> (
    impl Service<u32, Response = &'static str, Error = &'static str, Future: Send> + Clone,
    Arc<Mutex<Vec<Instant>>>,
) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let svc = service_fn(move |_: u32| {
        let mut log = log.lock().unwrap();
        log.push(Instant::now());
        let outcome = script[(log.len() - 1).min(script.len() - 1)];
        async move { outcome }
    });
    (svc, calls)
}

fn no_jitter(base: Duration, max: Duration) -> Backoff {
    Backoff::new(base, max).unwrap().jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn a_success_is_returned_at_once_without_touching_the_budget() {
    let (inner, calls) = scripted(vec![Ok("fine")]);
    let layer = RetryLayer::new(retry_errors());
    let budget = layer.get_budget().clone();
    let before = budget.available();
    let svc = layer.layer(inner);
    assert_eq!(svc.oneshot(1).await, Ok("fine"));
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert!(budget.available() >= before, "a success withdraws nothing");
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_up_to_the_attempt_limit_and_the_last_outcome_returned() {
    let (inner, calls) = scripted(vec![Err("first"), Err("second"), Err("third"), Ok("late")]);
    let svc = RetryLayer::new(retry_errors())
        .attempts(3)
        .unwrap()
        .backoff(no_jitter(10 * MS, 100 * MS))
        .layer(inner);
    assert_eq!(svc.oneshot(1).await, Err("third"));
    assert_eq!(calls.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_returns_the_success() {
    let (inner, calls) = scripted(vec![Err("busy"), Ok("done")]);
    let svc = RetryLayer::new(retry_errors()).layer(inner);
    assert_eq!(svc.oneshot(1).await, Ok("done"));
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_retry() {
    let (inner, calls) = scripted(vec![Err("busy")]);
    let svc = RetryLayer::new(retry_errors())
        .attempts(1)
        .unwrap()
        .layer(inner);
    assert_eq!(svc.oneshot(1).await, Err("busy"));
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(
        RetryLayer::new(retry_errors())
            .attempts(0)
            .unwrap_err()
            .to_string(),
        "invalid `attempts` = 0: must be at least 1"
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_are_spaced_by_the_backoff() {
    let (inner, calls) = scripted(vec![Err("busy")]);
    let svc = RetryLayer::new(retry_errors())
        .attempts(4)
        .unwrap()
        .backoff(no_jitter(10 * MS, 25 * MS))
        .layer(inner);
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await, Err("busy"));
    let offsets: Vec<_> = calls.lock().unwrap().iter().map(|t| *t - start).collect();
    // 10 ms, then 20 ms, then the 25 ms cap.
    assert_eq!(offsets, [Duration::ZERO, 10 * MS, 30 * MS, 55 * MS]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_draws_from_the_injected_source() {
    let draws = Arc::new(AtomicUsize::new(0));
    let counter = draws.clone();
    let backoff = Backoff::new(100 * MS, 1000 * MS).unwrap().random(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        0.25
    });
    let (inner, calls) = scripted(vec![Err("busy")]);
    let svc = RetryLayer::new(retry_errors())
        .backoff(backoff)
        .layer(inner);
    let start = Instant::now();
    let _ = svc.oneshot(1).await;
    let offsets: Vec<_> = calls.lock().unwrap().iter().map(|t| *t - start).collect();
    // 0.25 of 100 ms, then 0.25 of 200 ms.
    assert_eq!(offsets, [Duration::ZERO, 25 * MS, 75 * MS]);
    assert_eq!(draws.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_last_outcome_and_is_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (inner, calls) = scripted(vec![Err("busy")]);
    let budget = Arc::new(Budget::new(0.0, 0, Duration::from_secs(10)).unwrap());
    let svc = RetryLayer::new(retry_errors())
        .budget(budget)
        .named("orders")
        .layer(inner);

    let _guard = metrics::set_default_local_recorder(&recorder);
    assert_eq!(svc.oneshot(1).await, Err("busy"));
    assert_eq!(calls.lock().unwrap().len(), 1, "no retry without budget");

    let exhausted: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_retry_budget_exhausted_total")
        .map(|(.., value)| value)
        .collect();
    assert_eq!(exhausted, [DebugValue::Counter(1)]);
}

#[tokio::test(start_paused = true)]
async fn every_service_built_by_one_layer_shares_its_budget() {
    // Reserve of exactly one retry (1 per second over 1 s), no ratio.
    let budget = Arc::new(Budget::new(0.0, 1, Duration::from_secs(1)).unwrap());
    let layer = RetryLayer::new(retry_errors()).budget(budget);
    let (a, a_calls) = scripted(vec![Err("busy")]);
    let (b, b_calls) = scripted(vec![Err("busy")]);
    let _ = layer.clone().layer(a).oneshot(1).await;
    let _ = layer.layer(b).oneshot(1).await;
    // The first service took the only retry; the second had none left.
    assert_eq!(a_calls.lock().unwrap().len(), 2);
    assert_eq!(b_calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_inner_service_to_be_ready() {
    let layer = RetryLayer::new(RetryIf::new(|r: &Result<&str, BoxError>| r.is_err()))
        .backoff(no_jitter(MS, MS));
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call("req"));

    let (_, send) = handle.next_request().await.unwrap();
    handle.allow(0);
    send.send_error("busy");
    assert_pending!(response.poll());
    tokio::time::advance(10 * MS).await;
    // The backoff is over, but the service is not ready: no second attempt yet.
    assert_pending!(response.poll());
    assert_pending!(task::spawn(handle.next_request()).poll());

    handle.allow(1);
    assert_pending!(response.poll());
    let (req, send) = handle
        .next_request()
        .await
        .expect("the retry goes out once ready");
    assert_eq!(req, "req");
    send.send_response("ok");
    assert_eq!(assert_ready!(response.poll()).unwrap(), "ok");
}

/// A service that fails with its name, and logs which one each attempt went through.
#[derive(Clone)]
struct Named(&'static str, Arc<Mutex<Vec<&'static str>>>);

impl Service<u32> for Named {
    type Response = &'static str;
    type Error = &'static str;
    type Future = std::future::Ready<Outcome>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), &'static str>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.1.lock().unwrap().push(self.0);
        std::future::ready(Err(self.0))
    }
}

#[tokio::test(start_paused = true)]
async fn retries_go_through_the_inner_service_as_changed_through_get_mut() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut svc = RetryLayer::new(retry_errors())
        .attempts(2)
        .unwrap()
        .backoff(no_jitter(MS, MS))
        .layer(Named("old", log.clone()));
    assert_eq!(svc.ready().await.unwrap().call(1).await, Err("old"));
    svc.get_mut().0 = "new";
    assert_eq!(svc.ready().await.unwrap().call(2).await, Err("new"));
    assert_eq!(*log.lock().unwrap(), ["old", "old", "new", "new"]);
}

#[test]
fn futures_over_a_service_that_is_send_but_not_sync_are_send() {
    fn send<T: Send>() {}
    type Boxed = tower::util::BoxCloneService<u32, &'static str, &'static str>;
    type Policy = RetryIf<fn(&Outcome) -> bool, u32>;
    send::<resilience_retry::ResponseFuture<Boxed, Policy, u32>>();
    send::<resilience_retry::HedgeFuture<Boxed, Policy, u32>>();
}
