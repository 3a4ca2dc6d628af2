//! The next hop is told its deadline: every attempt an outbound route sends carries one
//! `x-request-timeout-ms`, the time left when it leaves (less the 5 ms margin), from the total
//! timeout or, when the route has one, from the per-try timeout that every attempt passes.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use http::{Request, Response, StatusCode};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::time::timeout;

type Seen = Arc<Mutex<Vec<Vec<u64>>>>;

/// An app that keeps every value of `x-request-timeout-ms` of each request it is sent in
/// `seen`, which its peers share; it answers 503 to the first request any of them is sent and
/// 200 to the rest.
async fn recording_app(seen: Seen) -> SocketAddr {
    let (addr, _) = app(move |req: Request<_>| {
        let seen = seen.clone();
        async move {
            let values = req
                .headers()
                .get_all("x-request-timeout-ms")
                .iter()
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap())
                .collect();
            let mut seen = seen.lock().unwrap();
            seen.push(values);
            let mut response = Response::new(full("answer"));
            if seen.len() == 1 {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .await;
    addr
}

/// One GET through a sidecar with the route `[[outbound]]` plus `route`, to `endpoints`, with
/// the caller's `x-request-timeout-ms` if any; what the app saw of each attempt.
async fn told(route: &str, endpoints: usize, caller: Option<&str>) -> Vec<Vec<u64>> {
    let seen = Seen::default();
    let mut apps = Vec::new();
    for _ in 0..endpoints {
        apps.push(format!("\"{}\"", recording_app(seen.clone()).await));
    }
    let endpoints = apps.join(", ");
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [{endpoints}]\n{route}"
    ))
    .await;
    let mut req = Request::builder().uri(format!("http://{}/", outbound_addr(&sidecar)));
    if let Some(caller) = caller {
        req = req.header("x-request-timeout-ms", caller);
    }
    let response = timeout(STEP, http1().request(req.body(full("")).unwrap()))
        .await
        .expect("an answer within STEP")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK, "{route}");
    sidecar.stop().await;
    seen.lock().unwrap().clone()
}

/// Each attempt carried exactly one value, within `(low, high]`.
fn each_told_once_within(seen: &[Vec<u64>], low: u64, high: u64, case: &str) {
    assert_eq!(seen.len(), 2, "{case}: a 503, then its retry");
    for values in seen {
        assert!(
            matches!(values[..], [ms] if ms > low && ms <= high),
            "{case}: {seen:?} not one value in ({low}, {high}]"
        );
    }
}

#[tokio::test]
async fn each_attempt_is_told_the_time_left_once() {
    let total = "timeout = \"5s\"\n";
    let per_try = "timeout = \"5s\"\n[outbound.retry]\nper_try_timeout = \"1s\"\n";
    for (case, route, endpoints, caller, low, high) in [
        ("the total timeout", total, 1, None, 4_000, 4_995),
        (
            "the caller's shorter deadline",
            total,
            1,
            Some("300"),
            0,
            295,
        ),
        ("a per-try timeout", per_try, 1, None, 500, 995),
        ("a per-try timeout, balanced", per_try, 2, None, 500, 995),
        (
            "a per-try timeout, the caller's",
            per_try,
            1,
            Some("300"),
            0,
            295,
        ),
    ] {
        let seen = told(route, endpoints, caller).await;
        each_told_once_within(&seen, low, high, case);
    }
}
