//! The service: fail-fast and back-pressure modes under paused time, probes and their permits,
//! classification, slow calls, the handle, subscriptions and metrics.

use http::{Response, StatusCode};
use resilience_breaker::ServerErrorsAsFailures;
use resilience_breaker::{
    BreakerHandle, BreakerOpen, CircuitBreaker, CircuitBreakerLayer, Mode, PROBE_RESERVATION_LAPSE,
    Policy, SlidingWindow, State, classify_fn,
};
use std::time::Duration;
use tokio::time;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{BoxError, Layer, ServiceExt, service_fn};
use tower_test::mock;

const OPEN_FOR: Duration = Duration::from_secs(10);

/// Trips after 2 failures of at least 2 calls (count window of 4); one probe; no jitter.
fn policy() -> Policy {
    Policy::default()
        .failure_rate(0.5)
        .window(SlidingWindow::Count(4))
        .minimum_calls(2)
        .open_for(OPEN_FOR)
        .open_for_max(OPEN_FOR * 8)
        .jitter(0.0)
        .half_open_probes(1)
}

type Svc = tower_test::mock::Spawn<CircuitBreaker<mock::Mock<&'static str, &'static str>>>;
type Handle = mock::Handle<&'static str, &'static str>;

fn spawn(layer: CircuitBreakerLayer) -> (Svc, Handle) {
    mock::spawn_layer(layer)
}

/// Sends `req` through a ready `svc` and answers it with `ok` or an error.
async fn call(
    svc: &mut Svc,
    handle: &mut Handle,
    req: &'static str,
    ok: bool,
) -> Result<&'static str, BoxError> {
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(req);
    let (got, send) = handle
        .next_request()
        .await
        .expect("the inner service is called");
    assert_eq!(got, req);
    if ok {
        send.send_response("ok");
    } else {
        send.send_error("upstream broke");
    }
    response.await
}

async fn trip(svc: &mut Svc, handle: &mut Handle) {
    for _ in 0..2 {
        assert_eq!(
            call(svc, handle, "fail", false)
                .await
                .unwrap_err()
                .to_string(),
            "upstream broke"
        );
    }
    assert_eq!(svc.get_ref().handle().state(), State::Open);
}

/// A back-pressure service tripped open, a clone of it, and the open period over.
async fn open_period_over() -> (Svc, Handle, Svc) {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap().back_pressure());
    trip(&mut svc, &mut handle).await;
    let other = mock::Spawn::new(svc.get_ref().clone());
    time::advance(OPEN_FOR).await;
    (svc, handle, other)
}

#[tokio::test(start_paused = true)]
async fn fail_fast_rejects_at_once_without_calling_the_inner_service() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap());
    trip(&mut svc, &mut handle).await;

    time::advance(Duration::from_secs(4)).await;
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("rejected").await.unwrap_err();
    let open = err
        .downcast_ref::<BreakerOpen>()
        .expect("a typed BreakerOpen");
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(6)));
    assert_eq!(open.retry_after_secs(), Some(6));
    assert_eq!(err.to_string(), "circuit breaker is open; next probe in 6s");

    // The next request the inner service sees is the probe, not the rejected one.
    time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        call(&mut svc, &mut handle, "probe", true).await.unwrap(),
        "ok"
    );
    assert_eq!(svc.get_ref().handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap());
    trip(&mut svc, &mut handle).await;
    let breaker = svc.get_ref().handle().clone();
    let opened = time::Instant::now();
    assert_eq!(breaker.next_probe(), Some(opened + OPEN_FOR));

    time::advance(OPEN_FOR).await;
    assert!(call(&mut svc, &mut handle, "probe", false).await.is_err());
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        breaker.next_probe(),
        Some(time::Instant::now() + OPEN_FOR * 2)
    );
}

#[tokio::test(start_paused = true)]
async fn back_pressure_is_unready_while_open_and_wakes_when_a_probe_is_allowed() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap().back_pressure());
    trip(&mut svc, &mut handle).await;

    assert_pending!(svc.poll_ready());
    time::advance(OPEN_FOR - Duration::from_millis(1)).await;
    assert!(!svc.is_woken());
    assert_pending!(svc.poll_ready());
    time::advance(Duration::from_millis(1)).await;
    assert!(svc.is_woken(), "woken by the end of the open period");
    // poll_ready reserved the probe permit; call uses it.
    assert_eq!(
        call(&mut svc, &mut handle, "probe", true).await.unwrap(),
        "ok"
    );
    assert_eq!(svc.get_ref().handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn back_pressure_wakes_when_the_breaker_is_closed_by_hand() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap().back_pressure());
    trip(&mut svc, &mut handle).await;
    assert_pending!(svc.poll_ready());
    svc.get_ref().handle().force_closed();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn back_pressure_waits_for_the_probe_in_flight() {
    let (mut svc, mut handle, mut other) = open_period_over().await;
    assert_ready_ok!(svc.poll_ready());
    // The one probe permit is reserved by `svc`: a clone does not share the reservation.
    assert_pending!(other.poll_ready());
    let probe = svc.call("probe");
    let (_, send) = handle.next_request().await.unwrap();
    assert!(!other.is_woken());
    send.send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert!(other.is_woken(), "woken when the probe finished");
    assert_ready_ok!(other.poll_ready());
}

/// A balancer that reserves an endpoint's probe in `poll_ready` and then picks another
/// endpoint, and has no request after that, must not hold the probe for ever.
#[tokio::test(start_paused = true)]
async fn a_reserved_probe_left_uncalled_is_taken_by_another_service_once_it_lapses() {
    let (mut svc, mut handle, mut other) = open_period_over().await;
    assert_ready_ok!(svc.poll_ready());
    assert_pending!(other.poll_ready());

    time::advance(PROBE_RESERVATION_LAPSE - Duration::from_millis(1)).await;
    assert!(!other.is_woken());
    time::advance(Duration::from_millis(1)).await;
    assert!(other.is_woken(), "woken when the reservation lapses");
    assert_ready_ok!(other.poll_ready());
    // The service that lost the probe is unready again, and says so when asked.
    assert_pending!(svc.poll_ready());
    let probe = other.call("probe");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(other.get_ref().handle().state(), State::Closed);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_reserved_probe_was_taken_is_decided_by_the_breaker_then() {
    let (mut svc, mut handle, mut other) = open_period_over().await;
    assert_ready_ok!(svc.poll_ready());
    time::advance(PROBE_RESERVATION_LAPSE).await;
    assert_ready_ok!(other.poll_ready());
    let probe = other.call("probe");
    let _in_flight = handle.next_request().await.unwrap();
    // `svc` was ready, and is called without asking again: its probe went to `other`, so the
    // breaker, half-open with that probe in flight, refuses the call.
    let err = svc.call("late").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().state(),
        State::HalfOpen
    );
    assert_eq!(other.get_ref().handle().machine().probes_admitted(), 1);
    drop(probe);
}

/// A back-pressure service made ready while the breaker was closed, and not called before the
/// breaker opened (another clone's calls tripped it), is unready when asked again: its
/// reservation no longer holds, and the next call does not reach the endpoint.
#[tokio::test(start_paused = true)]
async fn a_reservation_made_before_the_breaker_opened_no_longer_holds() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap().back_pressure());
    let mut idle = mock::Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(idle.poll_ready());
    trip(&mut svc, &mut handle).await;
    assert_pending!(idle.poll_ready());

    // Half-open: a probe reserved in a round that then ends (another probe closed the
    // breaker) gives way to a pass.
    time::advance(OPEN_FOR).await;
    assert_ready_ok!(idle.poll_ready());
    idle.get_ref().handle().force_closed();
    assert_ready_ok!(idle.poll_ready());
    let response = idle.call("after");
    let (got, send) = handle.next_request().await.unwrap();
    assert_eq!(got, "after");
    send.send_response("ok");
    assert_eq!(response.await.unwrap(), "ok");
    assert_eq!(idle.get_ref().handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_hands_its_permit_back() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap());
    trip(&mut svc, &mut handle).await;
    time::advance(OPEN_FOR).await;

    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("abandoned");
    let _request = handle.next_request().await.unwrap();
    assert_eq!(svc.get_ref().handle().state(), State::HalfOpen);
    // While the probe is in flight, no other call goes through.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("second").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().state(),
        State::HalfOpen
    );
    // Cancelled: the permit is back, and the next call is the probe.
    drop(probe);
    assert_eq!(
        call(&mut svc, &mut handle, "probe", true).await.unwrap(),
        "ok"
    );
    assert_eq!(svc.get_ref().handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_back_pressure_service_hands_its_reserved_probe_back() {
    let (mut svc, handle, mut other) = open_period_over().await;
    assert_ready_ok!(svc.poll_ready());
    assert_pending!(other.poll_ready());
    drop(svc);
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn server_errors_count_as_failures_and_client_errors_do_not() {
    let status = |code: u16| {
        service_fn(move |_: ()| async move {
            Ok::<_, BoxError>(Response::builder().status(code).body(()).unwrap())
        })
    };
    let layer = CircuitBreakerLayer::new(policy())
        .unwrap()
        .classify(ServerErrorsAsFailures::new());
    let client_errors = layer.layer(status(404));
    for _ in 0..10 {
        let response = client_errors.clone().oneshot(()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(client_errors.handle().state(), State::Closed);
    assert_eq!(client_errors.handle().counts().failures, 0);

    let server_errors = layer.layer(status(503));
    for _ in 0..2 {
        let response = server_errors.clone().oneshot(()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(server_errors.handle().state(), State::Open);
    let err = server_errors.clone().oneshot(()).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
}

#[tokio::test(start_paused = true)]
async fn a_closure_classifies_and_errors_always_fail() {
    let svc = service_fn(|n: u32| async move {
        if n == 0 {
            Err::<u32, BoxError>("zero".into())
        } else {
            Ok(n)
        }
    });
    let svc = CircuitBreakerLayer::new(policy().minimum_calls(4))
        .unwrap()
        .classify(classify_fn(|n: &u32| *n > 100))
        .layer(svc);
    for n in [1, 500, 0, 2] {
        let _ = svc.clone().oneshot(n).await;
    }
    let counts = svc.handle().counts();
    assert_eq!((counts.calls, counts.failures), (4, 2));
    assert_eq!(svc.handle().state(), State::Open);
}

/// The caller's own body breaking off says nothing about the endpoint: by default, such an
/// error is left out of the window, where any other error is a failure.
#[tokio::test(start_paused = true)]
async fn by_default_the_callers_broken_body_is_not_the_endpoints_failure() {
    let svc = service_fn(|n: u32| async move {
        match n {
            0 => Err::<u32, BoxError>(
                resilience_core::CallerBodyFailed::new("invalid chunk size").into(),
            ),
            1 => Err("upstream broke".into()),
            _ => Ok(n),
        }
    });
    let svc = CircuitBreakerLayer::new(policy().minimum_calls(2))
        .unwrap()
        .layer(svc);
    for n in [0, 0, 0, 2] {
        let _ = svc.clone().oneshot(n).await;
    }
    let counts = svc.handle().counts();
    assert_eq!((counts.calls, counts.failures), (1, 0));
    let _ = svc.clone().oneshot(1).await;
    let counts = svc.handle().counts();
    assert_eq!((counts.calls, counts.failures), (2, 1));
}

/// A call dropped by a timeout at its deadline did not answer in time: a failure, also for a
/// probe (which reopens the breaker). A call dropped otherwise (its caller went away) is left
/// out, and a probe's permit handed back.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_at_its_deadline_is_a_failure_and_one_dropped_otherwise_is_not() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap());
    handle.allow(10);
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let cancelled = svc.call("cancelled");
        drop(cancelled);
    }
    assert_eq!(svc.get_ref().handle().counts().calls, 0, "left out");

    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let hung = svc.call("hung");
        resilience_core::drop_at_deadline(|| drop(hung));
    }
    let breaker = svc.get_ref().handle().clone();
    assert_eq!(breaker.counts().failures, 2);
    assert_eq!(breaker.state(), State::Open);

    // The probe hangs too: the breaker opens again, rather than letting the next probe go.
    time::advance(OPEN_FOR).await;
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("probe");
    assert_eq!(breaker.state(), State::HalfOpen);
    resilience_core::drop_at_deadline(|| drop(probe));
    assert_eq!(breaker.state(), State::Open);
}

/// Fails with "not mine" for errors the endpoint did not cause, which are left out.
#[derive(Clone)]
struct SkipsNotMine;

impl resilience_breaker::Classify<u32> for SkipsNotMine {
    fn is_failure(&self, _: &u32) -> bool {
        false
    }

    fn counts_error(&self, error: &BoxError) -> bool {
        error.to_string() != "not mine"
    }
}

#[tokio::test(start_paused = true)]
async fn errors_the_classifier_leaves_out_are_not_recorded_and_hand_a_probe_back() {
    let svc = service_fn(|n: u32| async move {
        match n {
            0 => Err::<u32, BoxError>("not mine".into()),
            1 => Err("mine".into()),
            n => Ok(n),
        }
    });
    let svc = CircuitBreakerLayer::new(policy())
        .unwrap()
        .classify(SkipsNotMine)
        .layer(svc);
    for n in [0, 0, 0, 2, 1] {
        let _ = svc.clone().oneshot(n).await;
    }
    let counts = svc.handle().counts();
    assert_eq!(
        (counts.calls, counts.failures),
        (2, 1),
        "the three left out"
    );

    // Open, then half-open: a probe that ends with an error left out hands its permit back.
    svc.handle().force_open();
    svc.handle().reset();
    let _ = svc.clone().oneshot(1).await;
    let _ = svc.clone().oneshot(1).await;
    assert_eq!(svc.handle().state(), State::Open);
    time::advance(OPEN_FOR).await;
    assert!(svc.clone().oneshot(0).await.is_err());
    assert_eq!(
        svc.handle().state(),
        State::HalfOpen,
        "still waiting for a real probe"
    );
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 5);
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker_measured_with_tokio_time() {
    let slow = service_fn(|delay_ms: u64| async move {
        time::sleep(Duration::from_millis(delay_ms)).await;
        Ok::<_, BoxError>(())
    });
    let policy = policy()
        .no_failure_rate()
        .minimum_calls(3)
        .slow_calls(0.5, Duration::from_millis(500));
    let svc = CircuitBreakerLayer::new(policy).unwrap().layer(slow);
    for delay in [499, 500, 100] {
        svc.clone().oneshot(delay).await.unwrap();
    }
    // 1 slow of 3: closed. The next slow call makes 2 of 4 = 50 %.
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(svc.handle().counts().slow, 1);
    svc.clone().oneshot(600).await.unwrap();
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_failures_as_time_passes() {
    let (mut svc, mut handle) = spawn(
        CircuitBreakerLayer::new(policy().window(SlidingWindow::Time(Duration::from_secs(10))))
            .unwrap(),
    );
    assert!(call(&mut svc, &mut handle, "fail", false).await.is_err());
    time::advance(Duration::from_secs(11)).await;
    // The first failure is out of the window: one failure of one call, below the minimum.
    assert!(call(&mut svc, &mut handle, "fail", false).await.is_err());
    assert_eq!(svc.get_ref().handle().state(), State::Closed);
    time::advance(Duration::from_secs(5)).await;
    assert!(call(&mut svc, &mut handle, "fail", false).await.is_err());
    assert_eq!(svc.get_ref().handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_handle_controls_the_breaker_and_reports_transitions() {
    let breaker = BreakerHandle::new("payments", policy()).unwrap();
    let mut events = breaker.subscribe();
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::shared(breaker.clone()));
    // Services from the shared layer use the given breaker.
    assert_eq!(svc.get_ref().handle().name(), "payments");

    breaker.force_open();
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("x").await.unwrap_err();
    assert_eq!(err.to_string(), "circuit breaker is forced open");

    breaker.disable();
    for _ in 0..4 {
        assert!(call(&mut svc, &mut handle, "fail", false).await.is_err());
    }
    assert_eq!(breaker.state(), State::Disabled);
    assert_eq!(breaker.counts().calls, 0);

    breaker.metrics_only();
    for _ in 0..4 {
        assert!(call(&mut svc, &mut handle, "fail", false).await.is_err());
    }
    assert_eq!(breaker.state(), State::MetricsOnly);
    assert_eq!(breaker.counts().failures, 4);

    breaker.reset();
    assert_eq!(breaker.counts().calls, 0);
    trip(&mut svc, &mut handle).await;
    breaker.force_closed();

    let mut seen = Vec::new();
    for _ in 0..6 {
        let t = events.try_recv().expect("one event per transition");
        seen.push((t.from, t.to));
    }
    assert!(events.try_recv().is_err());
    use State::*;
    assert_eq!(
        seen,
        vec![
            (Closed, ForcedOpen),
            (ForcedOpen, Disabled),
            (Disabled, MetricsOnly),
            (MetricsOnly, Closed),
            (Closed, Open),
            (Open, Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_breaker() {
    let (mut svc, mut handle) = spawn(CircuitBreakerLayer::new(policy()).unwrap());
    let clone = svc.get_ref().clone();
    trip(&mut svc, &mut handle).await;
    assert_eq!(clone.handle().state(), State::Open);
    let mut clone = mock::Spawn::new(clone);
    assert_ready_ok!(clone.poll_ready());
    assert!(clone.call("x").await.unwrap_err().is::<BreakerOpen>());
}

#[tokio::test(start_paused = true)]
async fn the_mode_can_be_set_on_the_service() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let breaker = BreakerHandle::new("direct", policy()).unwrap();
    let mut svc =
        mock::Spawn::new(CircuitBreaker::new(inner, breaker.clone()).mode(Mode::BackPressure));
    breaker.force_open();
    assert_pending!(svc.poll_ready());
    breaker.reset();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call("x");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("y");
    assert_eq!(response.await.unwrap(), "y");
}

#[test]
fn metrics_count_calls_by_outcome_rejections_and_the_state() {
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
            let svc = service_fn(|ok: bool| async move {
                if ok {
                    Ok(())
                } else {
                    Err::<(), BoxError>("no".into())
                }
            });
            let svc = CircuitBreakerLayer::new(policy())
                .unwrap()
                .named("payments")
                .layer(svc);
            // success, failure (1 of 2 = 50 %: open), then three rejections.
            for ok in [true, false, false, true, true] {
                let _ = svc.clone().oneshot(ok).await;
            }
        });
    });

    let mut values: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (key.key().name().to_owned(), labels.join(","), value)
        })
        .filter(|(_, _, v)| !matches!(v, DebugValue::Counter(0)))
        .collect();
    values.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        values,
        vec![
            (
                "resilience_breaker_calls_total".to_owned(),
                "name=payments,outcome=failure".to_owned(),
                DebugValue::Counter(1)
            ),
            (
                "resilience_breaker_calls_total".to_owned(),
                "name=payments,outcome=success".to_owned(),
                DebugValue::Counter(1)
            ),
            (
                "resilience_breaker_rejected_total".to_owned(),
                "name=payments".to_owned(),
                DebugValue::Counter(3)
            ),
            (
                "resilience_breaker_state".to_owned(),
                "name=payments".to_owned(),
                DebugValue::Gauge(1.0.into())
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_errors_in_the_response_head_count_as_failures() {
    use resilience_breaker::GrpcErrorsAsFailures;
    let grpc = |status: Option<&'static str>| {
        service_fn(move |_: ()| async move {
            let mut response = Response::builder().header("content-type", "application/grpc");
            if let Some(status) = status {
                response = response.header("grpc-status", status);
            }
            Ok::<_, BoxError>(response.body(()).unwrap())
        })
    };
    let layer = CircuitBreakerLayer::new(policy().minimum_calls(3))
        .unwrap()
        .classify(GrpcErrorsAsFailures::new());
    // OK, and a streaming response judged at its end (not seen by the breaker): successes.
    let fine = layer.layer(grpc(Some("0")));
    let streaming = layer.layer(grpc(None));
    for _ in 0..3 {
        fine.clone().oneshot(()).await.unwrap();
        streaming.clone().oneshot(()).await.unwrap();
    }
    assert_eq!(fine.handle().counts().failures, 0);
    assert_eq!(streaming.handle().counts().failures, 0);
    // UNAVAILABLE (14) in a trailers-only response: failures.
    let unavailable = layer.layer(grpc(Some("14")));
    for _ in 0..3 {
        unavailable.clone().oneshot(()).await.unwrap();
    }
    assert_eq!(unavailable.handle().state(), State::Open);
}

/// Collects the `from`/`to` fields of every tracing event.
#[derive(Default)]
struct Transitions(std::sync::Mutex<Vec<String>>);

struct Fields(Vec<String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for Transitions {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0.join(" "));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_transition_is_a_tracing_event() {
    let events = std::sync::Arc::new(Transitions::default());
    tracing::subscriber::with_default(events.clone(), || {
        // Another test's thread may have registered these callsites while no subscriber was
        // interested: ask again, now that this one is.
        tracing::callsite::rebuild_interest_cache();
        let breaker = BreakerHandle::new("payments", policy()).unwrap();
        breaker.force_open();
        breaker.reset();
        breaker.reset(); // already closed: no transition, no event
    });
    let events = events.0.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains("breaker=payments"), "{}", events[0]);
    assert!(
        events[0].contains("from=closed to=forced-open"),
        "{}",
        events[0]
    );
    assert!(
        events[1].contains("from=forced-open to=closed"),
        "{}",
        events[1]
    );
}
