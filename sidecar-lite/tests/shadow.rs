//! Shadow mode over real sockets: a breaker that trips and refuses nothing, and an allow-list
//! that lets a caller it does not list through. (The rate limit's shadow mode is in
//! `limits.rs`.)

mod common;

use common::*;
use http::StatusCode;
use resilience_core::SIDECAR_ERROR;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn a_shadow_breaker_trips_and_every_request_still_reaches_the_app() {
    let (app, hits) = status_app(500).await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
         retry = {{ attempts = 1 }}\n\
         [outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"60s\"\nmode = \"shadow\"\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    for _ in 0..5 {
        let response = get(format!("http://{addr}/")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !response.headers().contains_key(SIDECAR_ERROR),
            "not refused"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "every request reached the app"
    );
    let admin = sidecar.bound.admin.unwrap();
    let breakers = text(get(format!("http://{admin}/breakers")).await).await;
    assert!(
        breakers.contains("open"),
        "and yet the breaker tripped: {breakers}"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn a_shadow_allow_list_serves_a_caller_it_does_not_list() {
    let (app, hits) = status_app(200).await;
    let certs = Certs::new("shadow-allow");
    let inbound = inbound_sidecar(
        &certs,
        "orders",
        app,
        &[spiffe("billing")],
        "allow_mode = \"shadow\"\n",
    )
    .await;
    let frontend = frontend_to_orders(&certs, &inbound, "").await;
    let response = get(format!("http://{}/", outbound_addr(&frontend))).await;
    assert_eq!(response.status(), StatusCode::OK, "not listed, served");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    frontend.stop().await;
    inbound.stop().await;
}
