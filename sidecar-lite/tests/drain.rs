//! A stop (SIGTERM, SIGINT or POST /drain) lets every accepted request finish.

mod common;

use common::*;
use http::{Request, StatusCode};
use std::{sync::atomic::Ordering, time::Duration};
use tokio::time::timeout;

const IN_FLIGHT: usize = 100;

#[tokio::test]
async fn stopping_during_100_slow_requests_lets_all_of_them_complete() {
    let (app, hits) = app(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hyper::Response::new(full("slow but fine"))
    })
    .await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            tokio::spawn(async move {
                let req = Request::builder()
                    .uri(format!("http://{addr}/{i}"))
                    .body(full(""))
                    .unwrap();
                let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
                (response.status(), text(response).await)
            })
        })
        .collect();
    // Wait until every request has reached the app (bounded), then stop.
    eventually(async || hits.load(Ordering::SeqCst) == IN_FLIGHT).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        IN_FLIGHT,
        "all requests are in flight"
    );
    let stopped = tokio::spawn(sidecar.stop());

    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "slow but fine");
    }
    timeout(STEP, stopped)
        .await
        .expect("the drain ends")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after the drain"
    );
}
