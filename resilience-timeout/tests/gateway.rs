//! `GatewayTimeoutLayer`: a timeout becomes a 504 that says so; nothing else changes.
#![cfg(feature = "http")]

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use resilience_timeout::{GatewayTimeoutLayer, SIDECAR_ERROR, TimeoutLayer};
use std::{future, time::Duration};
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn a_timeout_is_answered_with_504_and_the_sidecar_error_header() {
    let hang = service_fn(|_: Request<()>| future::pending::<Result<Response<String>, BoxError>>());
    let svc = ServiceBuilder::new()
        .layer(GatewayTimeoutLayer::new())
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(hang);

    let response = svc
        .oneshot(Request::new(()))
        .await
        .expect("a response, not an error");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()[SIDECAR_ERROR], "timeout");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        "gateway timeout: the upstream did not answer in time\n"
    );
}

/// A gRPC caller gets the timeout as gRPC's `DEADLINE_EXCEEDED`, trailers-only.
#[tokio::test(start_paused = true)]
async fn a_grpc_call_that_times_out_gets_deadline_exceeded() {
    let hang = service_fn(|_: Request<()>| future::pending::<Result<Response<String>, BoxError>>());
    let svc = ServiceBuilder::new()
        .layer(GatewayTimeoutLayer::new())
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(hang);
    let request = Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(
        response.headers()["grpc-message"],
        "gateway timeout: the upstream did not answer in time"
    );
    assert_eq!(response.headers()[SIDECAR_ERROR], "timeout");
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

#[tokio::test(start_paused = true)]
async fn responses_and_other_errors_pass_through() {
    let ok =
        service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(String::from("hi"))) });
    let response = GatewayTimeoutLayer::new()
        .layer_service(ok)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(SIDECAR_ERROR).is_none());
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "hi"
    );

    let failing =
        service_fn(|_: Request<()>| async { Err::<Response<String>, BoxError>("refused".into()) });
    let err = GatewayTimeoutLayer::new()
        .layer_service(failing)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "refused");
}

trait LayerService {
    fn layer_service<S>(&self, inner: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S>,
    {
        tower::Layer::layer(self, inner)
    }
}

impl LayerService for GatewayTimeoutLayer {}
