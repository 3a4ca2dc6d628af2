//! The ejection cap of a route over real sockets: with every endpoint failing, at most
//! `max_ejection_percent` of their breakers open, and the rest stay in the balancer.

mod common;

use common::*;

#[tokio::test]
async fn with_every_endpoint_failing_only_the_capped_share_is_ejected() {
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        endpoints.push(format!("\"{}\"", status_app(500).await.0));
    }
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [{}]\n\
         retry = {{ attempts = 1 }}\n\
         [outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"60s\"\n\
         max_ejection_percent = 34.0\n",
        endpoints.join(", ")
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    for _ in 0..30 {
        let _ = text(get(format!("http://{addr}/")).await).await;
    }
    let admin = sidecar.bound.admin.unwrap();
    let status = text(get(format!("http://{admin}/status.json")).await).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let states: Vec<&str> = status["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 3);
    assert_eq!(
        states.iter().filter(|s| **s == "open").count(),
        1,
        "34 % of 3: one ejected, two kept: {states:?}"
    );
    sidecar.stop().await;
}
