//! The adaptive limit's behaviour with mocks and paused time: excess refused at once, a
//! cancelled call gives its place back, failures shrink the limit, and shadow mode refuses
//! nothing but counts.

use resilience_limit::{AdaptiveConcurrencyLayer, Aimd, Algorithm, Enforcement, Overloaded};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn aimd() -> Algorithm {
    Algorithm::Aimd(Aimd {
        backoff_ratio: 0.5,
        timeout: Duration::from_secs(1),
    })
}

#[tokio::test(start_paused = true)]
async fn calls_over_the_limit_are_refused_at_once_and_a_cancelled_call_frees_its_place() {
    let layer = AdaptiveConcurrencyLayer::new(aimd())
        .limits(2, 1, 10)
        .unwrap();
    let handle = layer.handle();
    let (service, mut upstream) = mock::pair::<u32, u32>();
    let mut service = layer.layer(service);
    upstream.allow(10);

    let mut first = task::spawn(service.ready().await.unwrap().call(1));
    let second = service.ready().await.unwrap().call(2);
    assert_pending!(first.poll());
    assert_eq!(handle.in_flight(), 2);
    let mut third = task::spawn(service.ready().await.unwrap().call(3));
    let refused = assert_ready_err!(third.poll());
    assert!(refused.is::<Overloaded>(), "{refused}");
    assert_eq!(refused.downcast_ref::<Overloaded>().unwrap().limit(), 2);

    drop(second);
    assert_eq!(
        handle.in_flight(),
        1,
        "the cancelled call let go of its place"
    );
    let (_, respond) = upstream.next_request().await.unwrap();
    respond.send_response(10);
    assert_eq!(assert_ready_ok!(first.poll()), 10);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn failures_shrink_the_limit_and_successes_at_full_use_grow_it() {
    let layer = AdaptiveConcurrencyLayer::new(aimd())
        .limits(8, 1, 100)
        .unwrap();
    let handle = layer.handle();
    let failing = layer.layer(service_fn(|fail: bool| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if fail {
            Err::<(), BoxError>("boom".into())
        } else {
            Ok(())
        }
    }));
    // A window (100 ms, ten calls) of failed calls, one at a time: the limit halves once.
    for _ in 0..10 {
        assert!(failing.clone().oneshot(true).await.is_err());
    }
    assert_eq!(handle.limit(), 4, "8 x 0.5");

    // A window of successful calls, the limit's worth at a time: one more. Windows this
    // quiet have every call timed.
    for _ in 0..10 {
        let calls = (0..4).map(|_| failing.clone().oneshot(false));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
    }
    assert_eq!(handle.limit(), 5, "4 + 1");
}

#[tokio::test(start_paused = true)]
async fn in_shadow_mode_calls_over_the_limit_go_through_and_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = AdaptiveConcurrencyLayer::new(aimd())
        .limits(1, 1, 10)
        .unwrap()
        .named("orders")
        .enforcement(Enforcement::Shadow);
    let (service, mut upstream) = mock::pair::<u32, u32>();
    let mut service = layer.layer(service);
    upstream.allow(2);
    let mut first = task::spawn(service.ready().await.unwrap().call(1));
    let mut second = task::spawn(service.ready().await.unwrap().call(2));
    assert_pending!(first.poll());
    assert_pending!(second.poll(), "over the limit, and still sent");
    assert_eq!(layer.handle().in_flight(), 2);

    let shed: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_concurrency_shed_total")
        .collect();
    assert_eq!(shed.len(), 1);
    let (key, _, _, value) = &shed[0];
    assert!(
        key.key()
            .labels()
            .any(|l| l.key() == "mode" && l.value() == "shadow")
    );
    assert_eq!(value, &DebugValue::Counter(1));
    for _ in 0..2 {
        let (n, respond) = upstream.next_request().await.unwrap();
        respond.send_response(n);
    }
    assert_eq!(assert_ready_ok!(first.poll()), 1);
    assert_eq!(assert_ready_ok!(second.poll()), 2);
}

/// A call refused inside the process under the limit (here by a rate limit, as a sidecar's
/// inbound stacks them) says nothing of the service's capacity: one caller over its rate
/// must not shrink the limit that every caller shares.
#[tokio::test(start_paused = true)]
async fn calls_refused_under_the_limit_leave_it_as_it_is() {
    use resilience_limit::{Rate, RateLimitLayer};
    let layer = AdaptiveConcurrencyLayer::new(aimd())
        .limits(20, 1, 100)
        .unwrap();
    let handle = layer.handle();
    let limited = layer.layer(
        RateLimitLayer::new(Rate::new(1.0, 1).unwrap())
            .layer(service_fn(|()| async { Ok::<_, BoxError>(()) })),
    );
    for _ in 0..30 {
        assert!(limited.clone().oneshot(()).await.is_ok());
        let refused = limited.clone().oneshot(()).await.unwrap_err();
        assert!(refused.is::<resilience_limit::RateLimited>(), "{refused}");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(handle.limit(), 20);
}

/// The limit's gauge appears under the name the layer was given, set to the initial limit,
/// and under no name the builder went through on the way.
#[test]
fn the_limits_gauge_is_published_under_its_name_only() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let _service = AdaptiveConcurrencyLayer::new(aimd())
        .limits(5, 1, 10)
        .unwrap()
        .enforcement(Enforcement::Enforce)
        .named("orders")
        .layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    let gauges: Vec<(String, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_concurrency_limit")
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key.key().labels().map(|l| l.value().to_owned()).collect();
            (labels.join(","), value)
        })
        .collect();
    assert_eq!(
        gauges,
        [("orders".to_owned(), DebugValue::Gauge(5.0.into()))]
    );
}
