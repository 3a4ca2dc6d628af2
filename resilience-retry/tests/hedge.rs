//! Hedged requests on paused time: a copy after the delay, the first answer wins and the
//! rest are cancelled; no copy when the answer is early, without budget, for a method that
//! may not go twice, or beyond `max_attempts`; a non-fatal answer sends the next copy at once
//! (gRPC A6); the percentile delay follows recent latencies.
#![cfg(all(feature = "http", feature = "serde"))]

mod http_support;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use resilience_retry::{Budget, HedgeConfig, HedgeDelay, HedgeLayer, HttpPolicy, RetryIf};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;
use tower::{BoxError, Layer, ServiceExt, service_fn};

const DELAY: Duration = Duration::from_millis(50);

fn budget() -> Arc<Budget> {
    Arc::new(Budget::new(0.0, 100, Duration::from_secs(10)).unwrap())
}

/// Counts what it is sent and what is cancelled; the n-th call (from 0) takes `latency(n)`
/// and answers `answer(n)`.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicU32>,
    cancelled: Arc<AtomicU32>,
}

struct Cancelled(Arc<AtomicU32>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Upstream {
    fn service<Req: Send + 'static>(
        &self,
        latency: impl Fn(u32) -> Duration + Clone + Send + 'static,
        answer: impl Fn(u32) -> u16 + Clone + Send + 'static,
    ) -> impl tower::Service<Req, Response = Response<String>, Error = BoxError, Future: Send> + Clone
    {
        let (calls, cancelled) = (self.calls.clone(), self.cancelled.clone());
        service_fn(move |_: Req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let guard = Cancelled(cancelled.clone(), false);
            let (latency, answer) = (latency.clone(), answer.clone());
            async move {
                // Moved whole, so that dropping the future drops it.
                let mut guard = guard;
                tokio::time::sleep(latency(n)).await;
                guard.1 = true;
                let mut response = Response::new(format!("call {n}"));
                *response.status_mut() = StatusCode::from_u16(answer(n)).unwrap();
                Ok::<_, BoxError>(response)
            }
        })
    }
}

fn get() -> Request<Empty<bytes::Bytes>> {
    Request::new(Empty::new())
}

/// A service that numbers its calls from 0 and answers call `n` with `answer(n, request)`; and
/// how many calls it has had.
fn numbered<Req, F, Fut>(
    answer: F,
) -> (
    Arc<AtomicU32>,
    impl tower::Service<Req, Response = Response<String>, Error = BoxError, Future = Fut> + Clone,
)
where
    F: Fn(u32, Req) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<Response<String>, BoxError>>,
{
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = service_fn(move |req| answer(counted.fetch_add(1, Ordering::SeqCst), req));
    (calls, service)
}

fn layer() -> HedgeLayer<HttpPolicy> {
    HedgeLayer::new(HttpPolicy::default(), HedgeDelay::Fixed(DELAY)).budget(budget())
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_answer_loses_to_a_copy_and_is_cancelled() {
    let upstream = Upstream::default();
    let service = layer().layer(upstream.service(
        |n| Duration::from_millis(if n == 0 { 1000 } else { 10 }),
        |_| 200,
    ));
    let start = Instant::now();
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.into_body(), "call 1");
    assert_eq!(start.elapsed(), DELAY + Duration::from_millis(10));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        upstream.cancelled.load(Ordering::SeqCst),
        1,
        "the slow one was dropped"
    );
}

/// A delay the clock cannot count to (`Duration::MAX`, "never") sends no copy, and does not
/// overflow the clock.
#[tokio::test(start_paused = true)]
async fn a_delay_of_duration_max_never_hedges() {
    let upstream = Upstream::default();
    let service = HedgeLayer::new(HttpPolicy::default(), HedgeDelay::Fixed(Duration::MAX))
        .budget(budget())
        .layer(upstream.service(|_| Duration::from_secs(3600), |_| 200));
    assert_eq!(service.oneshot(get()).await.unwrap().into_body(), "call 0");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_answer_before_the_delay_sends_no_copy_and_spends_no_budget() {
    let upstream = Upstream::default();
    let layer = layer();
    let before = layer.shared_budget().available();
    let service = layer.layer(upstream.service(|_| Duration::from_millis(10), |_| 200));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.into_body(), "call 0");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.shared_budget().available(), before);
}

/// A copy refused inside the process (an open breaker: `RefusedLocally` in its error's chain)
/// sent nothing: it wins nothing while the first copy may still answer, and gives its retry
/// back to the budget.
#[tokio::test(start_paused = true)]
async fn a_copy_refused_locally_loses_and_gives_its_retry_back() {
    let (calls, upstream) = numbered(|n, _| async move {
        if n > 0 {
            return Err::<Response<String>, BoxError>(Box::new(http_support::OpenBreaker));
        }
        tokio::time::sleep(DELAY * 2).await;
        Ok(Response::new("call 0".to_owned()))
    });
    let layer = layer();
    let before = layer.shared_budget().available();
    let service = layer.layer(upstream);
    let started = Instant::now();
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.into_body(), "call 0");
    assert_eq!(started.elapsed(), DELAY * 2, "the first copy's answer");
    assert!(calls.load(Ordering::SeqCst) >= 2, "a copy was tried");
    assert_eq!(layer.shared_budget().available(), before);
}

#[tokio::test(start_paused = true)]
async fn without_budget_no_copy_is_sent() {
    let upstream = Upstream::default();
    let empty = Arc::new(Budget::new(0.0, 0, Duration::from_secs(10)).unwrap());
    let service = layer()
        .budget(empty)
        .layer(upstream.service(|_| Duration::from_millis(200), |_| 200));
    assert_eq!(service.oneshot(get()).await.unwrap().into_body(), "call 0");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_goes_once_unless_idempotent_or_grpc() {
    for (method, key, grpc, copies) in [
        (Method::POST, false, false, 1),
        (Method::POST, true, false, 2),
        (Method::POST, false, true, 2),
        (Method::PUT, false, false, 2),
    ] {
        let upstream = Upstream::default();
        let service = layer().layer(upstream.service(|_| Duration::from_millis(200), |_| 200));
        let mut req = get();
        *req.method_mut() = method.clone();
        if key {
            req.headers_mut()
                .insert("idempotency-key", "k1".parse().unwrap());
        }
        if grpc {
            req.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
        }
        service.oneshot(req).await.unwrap();
        assert_eq!(
            upstream.calls.load(Ordering::SeqCst),
            copies,
            "{method} key={key} grpc={grpc}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_websocket_handshake_goes_once() {
    let upstream = Upstream::default();
    let service = layer().layer(upstream.service(|_| Duration::from_millis(200), |_| 200));
    let mut req = get();
    req.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    req.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    service.oneshot(req).await.unwrap();
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

/// A gRPC call carries a body, which its connection reads after the call is made: the copy
/// goes once the body is whole, not never (the rule was asked at the first poll, before any
/// body had been read, so only empty requests were ever hedged).
#[tokio::test(start_paused = true)]
async fn a_grpc_call_with_a_body_is_hedged_once_its_body_has_been_read() {
    let (calls, upstream) = numbered(
        |n, req: Request<resilience_retry::ReplayBody<Full<bytes::Bytes>>>| async move {
            // Read a moment after the call, as a connection's task reads it.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let body = req.into_body().collect().await?.to_bytes();
            let latency = if n == 0 { 1000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(latency)).await;
            Ok::<_, BoxError>(Response::new(format!("call {n}: {} bytes", body.len())))
        },
    );
    let mut req = Request::new(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x01x")));
    *req.method_mut() = Method::POST;
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let response = layer().layer(upstream).oneshot(req).await.unwrap();
    assert_eq!(response.into_body(), "call 1: 6 bytes");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// With three attempts, a copy sent while the one before it is still sending its body does
/// not cut that one's body off: once the body has been read whole, copies replay it side by
/// side.
#[tokio::test(start_paused = true)]
async fn a_copy_does_not_cut_off_the_body_of_the_copy_before_it() {
    let (calls, upstream) = numbered(
        |n, req: Request<resilience_retry::ReplayBody<Full<bytes::Bytes>>>| async move {
            let mut body = req.into_body();
            let first = body.frame().await.expect("a frame")?;
            assert!(first.is_data());
            // The second copy is still sending when the third goes.
            let pause = if n == 1 { 100 } else { 0 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            body.collect().await?;
            let latency = if n == 1 { 0 } else { 1000 };
            tokio::time::sleep(Duration::from_millis(latency)).await;
            Ok::<_, BoxError>(Response::new(format!("call {n}")))
        },
    );
    let mut req = Request::new(Full::new(bytes::Bytes::from_static(b"order")));
    *req.method_mut() = Method::PUT;
    let layer = layer().max_attempts(3).unwrap();
    let response = layer.layer(upstream).oneshot(req).await.unwrap();
    assert_eq!(response.into_body(), "call 1");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_caps_the_copies() {
    let upstream = Upstream::default();
    let service = layer()
        .max_attempts(3)
        .unwrap()
        .layer(upstream.service(|_| Duration::from_millis(500), |_| 200));
    let start = Instant::now();
    assert_eq!(service.oneshot(get()).await.unwrap().into_body(), "call 0");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(500),
        "the first answered first"
    );
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.cancelled.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_non_fatal_answer_sends_the_next_copy_at_once() {
    let upstream = Upstream::default();
    let service = layer().layer(upstream.service(
        |n| Duration::from_millis(if n == 0 { 5 } else { 20 }),
        |n| if n == 0 { 503 } else { 200 },
    ));
    let start = Instant::now();
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(25),
        "the copy went at 5 ms, not at the delay"
    );

    // Every copy non-fatal: the last one is the answer.
    let upstream = Upstream::default();
    let service = layer().layer(upstream.service(|_| Duration::from_millis(5), |_| 503));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.into_body(), "call 1");
}

/// A non-fatal answer that asks for a pause (`Retry-After`, or gRPC's pushback) holds the next
/// copy back until the pause is over (gRPC A6), instead of sending it at once.
#[tokio::test(start_paused = true)]
async fn a_non_fatal_answer_that_asks_for_a_pause_holds_the_next_copy_until_then() {
    let (_, upstream) = numbered(|n, _| async move {
        if n > 0 {
            return Ok::<_, BoxError>(Response::new(format!("call {n}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut response = Response::new("call 0".to_owned());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
        Ok(response)
    });
    let service = layer().layer(upstream);
    let start = Instant::now();
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.into_body(), "call 1");
    assert_eq!(start.elapsed(), Duration::from_millis(1005));
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_recent_latencies() {
    let upstream = Upstream::default();
    let latencies = Arc::new(AtomicU32::new(20));
    let read = latencies.clone();
    let policy = RetryIf::new(|result: &Result<Response<String>, BoxError>| result.is_err());
    let service = HedgeLayer::new(
        policy,
        HedgeDelay::Percentile {
            percentile: 95.0,
            min: Duration::from_millis(5),
        },
    )
    .budget(budget())
    .layer(upstream.service(
        move |_| Duration::from_millis(u64::from(read.load(Ordering::SeqCst))),
        |_| 200,
    ));
    // Before 64 calls are known: the minimum, 5 ms, so every 20 ms call is hedged.
    service.clone().oneshot(1_u32).await.unwrap();
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);
    for _ in 0..64 {
        service.clone().oneshot(1).await.unwrap();
    }
    // Now the 95th percentile of ~20 ms: a call of 20 ms is not hedged, one of 40 ms is.
    let calls = upstream.calls.load(Ordering::SeqCst);
    service.clone().oneshot(1).await.unwrap();
    assert_eq!(upstream.calls.load(Ordering::SeqCst), calls + 1);
    latencies.store(40, Ordering::SeqCst);
    service.oneshot(1).await.unwrap();
    assert_eq!(upstream.calls.load(Ordering::SeqCst), calls + 3);
}

#[test]
fn the_config_names_what_is_wrong() {
    for (text, expected) in [
        (
            "delay = { percentile = 100, min = \"1ms\" }",
            "`delay.percentile`",
        ),
        ("delay = \"10ms\"\nmax_attempts = 9", "`max_attempts` = 9"),
    ] {
        let config: HedgeConfig = toml::from_str(text).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
    for (text, expected) in [
        ("delay = \"soon\"", "soon"),
        ("delay = \"0s\"", "greater than zero"),
        ("delay = { percentile = 95 }", "missing field `min`"),
    ] {
        let error = toml::from_str::<HedgeConfig>(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}
