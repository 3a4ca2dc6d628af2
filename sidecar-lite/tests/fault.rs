//! Injected aborts and delays land at their configured rates.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use http::{Request, StatusCode};
use std::time::Duration;
use tokio::time::{Instant, timeout};

const REQUESTS: usize = 2000;

#[tokio::test]
async fn aborts_and_delays_land_within_five_points_of_their_rates() {
    let (app, hits) = status_app(200).await;
    let sidecar = sidecar(&format!(
        r#"
[[outbound]]
name = "orders"
listen = "127.0.0.1:0"
endpoints = ["{app}"]
fault = {{ abort = {{ percent = 10.0, status = 418 }}, delay = {{ percent = 20.0, duration = "10ms" }} }}
"#
    ))
    .await;
    let client = http1();
    let (mut aborted, mut delayed, mut passed) = (0usize, 0usize, 0usize);
    for i in 0..REQUESTS {
        let req = Request::builder()
            .uri(format!("http://{}/{i}", outbound_addr(&sidecar)))
            .body(full(""))
            .unwrap();
        let start = Instant::now();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        match response.status() {
            StatusCode::IM_A_TEAPOT => {
                assert_eq!(response.headers()["x-sidecar-error"], "fault-injected");
                aborted += 1;
            }
            StatusCode::OK if start.elapsed() >= Duration::from_millis(10) => delayed += 1,
            StatusCode::OK => passed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let share = |n: usize| 100.0 * n as f64 / REQUESTS as f64;
    println!(
        "{REQUESTS} requests: {:.1} % aborted, {:.1} % delayed, {:.1} % passed",
        share(aborted),
        share(delayed),
        share(passed)
    );
    assert!(
        (share(aborted) - 10.0).abs() <= 5.0,
        "aborted {}",
        share(aborted)
    );
    // Delays apply to requests that were not aborted: 20 % of the other 90 %.
    assert!(
        (share(delayed) - 18.0).abs() <= 5.0,
        "delayed {}",
        share(delayed)
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        REQUESTS - aborted,
        "aborted requests never reach the app"
    );
    sidecar.stop().await;
}
