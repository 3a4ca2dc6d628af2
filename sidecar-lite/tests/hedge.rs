//! Hedged requests over real sockets: a route over a slow endpoint and a fast one answers
//! every request from the fast one soon after the hedge delay, whichever the balancer tried
//! first; and a route cannot both retry and hedge.

mod common;

use common::*;
use http::StatusCode;
use std::{sync::atomic::Ordering, time::Duration};
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn a_copy_to_the_fast_endpoint_answers_for_the_slow_one() {
    let (slow, slow_hits) = app(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        http::Response::new(full("slow"))
    })
    .await;
    let (fast, _) = app(|_req| async { http::Response::new(full("fast")) }).await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"{slow}\", \"{fast}\"]\nretry = {{ attempts = 1 }}\n\
         hedge = {{ delay = \"50ms\", max_attempts = 2 }}\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let start = Instant::now();
    for _ in 0..10 {
        let response = timeout(Duration::from_secs(2), get(format!("http://{addr}/")))
            .await
            .expect("answered long before the slow endpoint would have");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "fast");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        slow_hits.load(Ordering::SeqCst) >= 1,
        "the balancer tried the slow endpoint at least once, and the copy won"
    );
    sidecar.stop().await;
}

#[test]
fn a_route_hedges_or_retries_not_both() {
    let text = "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\n\
                endpoints = [\"127.0.0.1:9\"]\nhedge = { delay = \"50ms\" }\n";
    let error = sidecar_lite::Config::parse(text).unwrap_err().to_string();
    assert!(error.contains("outbound[0].hedge"), "{error}");
    assert!(error.contains("retry.attempts = 1"), "{error}");
}
