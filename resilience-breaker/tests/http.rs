//! The HTTP edge: a rejection becomes `503` with `Retry-After` and `x-sidecar-error`.
#![cfg(feature = "http")]

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::RETRY_AFTER};
use http_body_util::{BodyExt, Full};
use resilience_breaker::ServerErrorsAsFailures;
use resilience_breaker::{CircuitBreakerLayer, Policy, SIDECAR_ERROR, UnavailableLayer};
use std::time::Duration;
use tokio::time;
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_503_with_retry_after() {
    let upstream = service_fn(|_: Request<()>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"upstream")))
                .unwrap(),
        )
    });
    let policy = Policy::consecutive_failures(1)
        .open_for(Duration::from_millis(2500))
        .jitter(0.0);
    let svc = ServiceBuilder::new()
        .layer(UnavailableLayer::new())
        .layer(
            CircuitBreakerLayer::new(policy)
                .unwrap()
                .classify(ServerErrorsAsFailures::new()),
        )
        .service(upstream);

    // The upstream's own 500 passes through (and trips the breaker).
    let response = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().get(SIDECAR_ERROR).is_none());

    let response = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[SIDECAR_ERROR], "breaker-open");
    // 2.5 s rounds up to 3.
    assert_eq!(response.headers()[RETRY_AFTER], "3");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "service unavailable: the circuit breaker is open\n");

    time::advance(Duration::from_millis(2400)).await;
    let response = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        response.headers()[RETRY_AFTER],
        "1",
        "never below one second"
    );
}

#[tokio::test(start_paused = true)]
async fn other_errors_pass_through() {
    let upstream =
        service_fn(|_: Request<()>| async { Err::<Response<()>, BoxError>("refused".into()) });
    let svc = ServiceBuilder::new()
        .layer(UnavailableLayer::new())
        .layer(CircuitBreakerLayer::new(Policy::default()).unwrap())
        .service(upstream);
    assert_eq!(
        svc.oneshot(Request::new(())).await.unwrap_err().to_string(),
        "refused"
    );
}

/// A gRPC caller gets the same refusal as gRPC's `UNAVAILABLE`, trailers-only, with the wait
/// as `grpc-retry-pushback-ms`.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_a_grpc_call_with_unavailable() {
    let upstream = service_fn(|_: Request<()>| async {
        let mut response = Response::new(Full::new(Bytes::new()));
        response.headers_mut().insert("grpc-status", 14.into());
        Ok::<_, BoxError>(response)
    });
    let policy = Policy::consecutive_failures(1)
        .open_for(Duration::from_millis(2500))
        .jitter(0.0);
    let svc = ServiceBuilder::new()
        .layer(UnavailableLayer::new())
        .layer(
            CircuitBreakerLayer::new(policy)
                .unwrap()
                .classify(resilience_breaker::GrpcErrorsAsFailures::new()),
        )
        .service(upstream);
    let grpc = || {
        Request::builder()
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap()
    };
    let response = svc.clone().oneshot(grpc()).await.unwrap();
    assert!(
        response.headers().get(SIDECAR_ERROR).is_none(),
        "the app's own"
    );

    let response = svc.clone().oneshot(grpc()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(response.headers()[SIDECAR_ERROR], "breaker-open");
    assert_eq!(response.headers()["grpc-retry-pushback-ms"], "2500");
    assert!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}
