//! Several endpoints: retries move onto a healthy one, and the breaker of a failing one opens
//! so that traffic flows to the rest.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use http::{Request, StatusCode};
use std::sync::atomic::Ordering;
use tokio::time::timeout;

const REQUESTS: usize = 100;

/// A route over two plaintext endpoints, one always 503, one healthy, with retries enough to
/// reach the healthy one and a breaker that trips after 4 calls at 50 % failures.
async fn route_over(
    failing: std::net::SocketAddr,
    healthy: std::net::SocketAddr,
) -> sidecar_lite::Sidecar {
    sidecar(&format!(
        r#"
[[outbound]]
name = "orders"
listen = "127.0.0.1:0"
endpoints = ["{failing}", "{healthy}"]

[outbound.retry]
attempts = 6
on = ["gateway-error"]
backoff = {{ base = "1ms", max = "5ms" }}

[outbound.breaker]
failure_rate = 0.5
minimum_calls = 4
window = {{ calls = 10 }}
open_for = "30s"
"#
    ))
    .await
}

#[tokio::test]
async fn a_503_from_one_endpoint_is_retried_onto_another_and_its_breaker_opens() {
    let (failing, failing_hits) = status_app(503).await;
    let (healthy, healthy_hits) = status_app(200).await;
    let sidecar = route_over(failing, healthy).await;
    let client = http1();
    for i in 0..REQUESTS {
        let req = Request::builder()
            .uri(format!("http://{}/item/{i}", outbound_addr(&sidecar)))
            .body(full(""))
            .unwrap();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        let flag = response.headers().get("x-sidecar-error").cloned();
        let status = response.status();
        let body = text(response).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i} was not retried onto the healthy endpoint: {flag:?} {body} (failing saw {})",
            failing_hits.load(Ordering::SeqCst)
        );
    }
    let failing = failing_hits.load(Ordering::SeqCst);
    let healthy = healthy_hits.load(Ordering::SeqCst);
    println!("{REQUESTS} requests: failing endpoint saw {failing}, healthy endpoint saw {healthy}");
    assert_eq!(healthy, REQUESTS);
    // The failing endpoint's breaker opens after at most a handful of calls (minimum 4 in a
    // window of 10) and stays open for the rest of the run.
    assert!(
        (1..=10).contains(&failing),
        "the failing endpoint saw {failing} requests"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn when_every_breaker_is_open_requests_fail_fast_with_503() {
    let (a, a_hits) = status_app(503).await;
    let (b, b_hits) = status_app(503).await;
    let sidecar = sidecar(&format!(
        r#"
[[outbound]]
name = "orders"
listen = "127.0.0.1:0"
endpoints = ["{a}", "{b}"]
timeout = "5s"
retry = {{ attempts = 1 }}
breaker = {{ minimum_calls = 2, window = {{ calls = 10 }}, open_for = "30s", max_ejection_percent = 100.0 }}
"#
    ))
    .await;
    // Every endpoint may be ejected (the default cap keeps half of them in the balancer).
    let client = http1();
    let mut flags = Vec::new();
    for i in 0..20 {
        let req = Request::builder()
            .uri(format!("http://{}/{i}", outbound_addr(&sidecar)))
            .body(full(""))
            .unwrap();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        flags.push(response.headers().get("x-sidecar-error").cloned());
    }
    let upstream = a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst);
    // Both breakers open after two failures each; the rest are refused by the sidecar at once,
    // not queued until the 5 s timeout (which would answer 504).
    assert!(upstream <= 4, "the endpoints saw {upstream} requests");
    let refused = flags
        .iter()
        .filter(|f| f.as_ref().is_some_and(|v| v == "breaker-open"))
        .count();
    assert_eq!(refused, 20 - upstream, "{flags:?}");
    sidecar.stop().await;
}
