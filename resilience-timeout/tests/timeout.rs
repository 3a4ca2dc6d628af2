//! The core `Timeout`: exact deadlines under paused time, dropping the inner future, readiness.

use resilience_timeout::{Elapsed, TimeoutLayer};
use std::time::Duration;
use tokio::{sync::oneshot, time};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_test::mock;

const LIMIT: Duration = Duration::from_millis(100);
const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_response_one_millisecond_before_the_deadline_passes() {
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(TimeoutLayer::new(LIMIT));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call("hello"));
    let (_, send) = handle
        .next_request()
        .await
        .expect("request reaches the inner service");

    time::advance(LIMIT - MS).await;
    assert_pending!(response.poll());
    send.send_response("world");

    assert_eq!(assert_ready_ok!(response.poll()), "world");
}

#[tokio::test(start_paused = true)]
async fn a_response_at_the_deadline_fails_with_elapsed() {
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(TimeoutLayer::new(LIMIT));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call("hello"));
    let (_, _send) = handle
        .next_request()
        .await
        .expect("request reaches the inner service");

    time::advance(LIMIT).await;
    let err = assert_ready!(response.poll()).expect_err("the deadline has passed");
    let elapsed = err
        .downcast_ref::<Elapsed>()
        .expect("a typed Elapsed error");
    assert_eq!(elapsed.after(), LIMIT);
    assert_eq!(elapsed.layer(), "timeout");
    assert_eq!(
        err.to_string(),
        "timed out: no answer within 100ms (layer `timeout`)"
    );
}

#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_at_the_deadline() {
    let (alive_tx, mut alive_rx) = oneshot::channel::<()>();
    let mut alive_tx = Some(alive_tx);
    let inner = service_fn(move |_: ()| {
        // The inner future owns the sender: the receiver sees it closed once the future is gone.
        let guard = alive_tx.take();
        async move {
            time::sleep(Duration::from_secs(60)).await;
            drop(guard);
            Ok::<_, BoxError>(())
        }
    });
    let mut svc = TimeoutLayer::new(LIMIT).layer_into(inner);
    let mut response = task::spawn(svc.ready().await.unwrap().call(()));

    assert_pending!(response.poll());
    assert!(matches!(
        alive_rx.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    ));

    time::advance(LIMIT).await;
    assert!(assert_ready!(response.poll()).unwrap_err().is::<Elapsed>());
    // Still holding the outer future, yet the inner one is already gone.
    assert!(matches!(
        alive_rx.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ));
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(TimeoutLayer::new(LIMIT));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call("hello"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("upstream broke");
    let err = assert_ready!(response.poll()).unwrap_err();
    assert!(!err.is::<Elapsed>());
    assert_eq!(err.to_string(), "upstream broke");
}

/// The timer is armed only when the inner future has to wait: a runtime without a timer
/// driver (where arming one panics) still serves a call that is answered at once.
#[test]
fn an_answer_ready_at_once_arms_no_timer() {
    let no_timers = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let answer = no_timers.block_on(
        TimeoutLayer::new(LIMIT)
            .layer_into(service_fn(|name: &'static str| async move {
                Ok::<_, BoxError>(format!("hello, {name}"))
            }))
            .oneshot("world"),
    );
    assert_eq!(answer.expect("answered within the timeout"), "hello, world");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_passes_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(TimeoutLayer::new(LIMIT));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    // Waiting for readiness is not covered by the timeout.
    time::advance(LIMIT * 10).await;
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[test]
fn each_timeout_is_counted_by_layer_name() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let hang = service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>());
            let svc = TimeoutLayer::new(LIMIT).named("per-try").layer_into(hang);
            for _ in 0..3 {
                assert!(svc.clone().oneshot(()).await.unwrap_err().is::<Elapsed>());
            }
        });
    });

    let counts: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_timeout_total")
        .map(|(key, _, _, value)| {
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (labels, value)
        })
        .collect();
    assert_eq!(
        counts,
        vec![(
            vec![("layer".to_owned(), "per-try".to_owned())],
            DebugValue::Counter(3)
        )]
    );
}

/// `layer_into` keeps the tests short: build the layered service in one expression.
trait LayerInto: Sized {
    fn layer_into<S>(&self, inner: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S>,
    {
        tower::Layer::layer(self, inner)
    }
}

impl<P> LayerInto for TimeoutLayer<P> {}
