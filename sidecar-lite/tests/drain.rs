//! A stop (SIGTERM, SIGINT or POST /drain) lets every accepted request finish.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::{process, *};
use http::{Request, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{task::JoinHandle, time::timeout};

const IN_FLIGHT: usize = 100;
const ANSWER: &str = "slow but fine";

/// An app that takes half a second over each request.
async fn slow_app() -> (SocketAddr, Arc<AtomicUsize>) {
    app(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hyper::Response::new(full(ANSWER))
    })
    .await
}

/// Sends [`IN_FLIGHT`] requests to `addr`, request `i` through `client(i)`, and waits
/// (bounded) until the app holds all of them.
async fn slow_requests(
    addr: SocketAddr,
    hits: &AtomicUsize,
    client: impl Fn(usize) -> Client<HttpConnector, BoxBody>,
) -> Vec<JoinHandle<(StatusCode, String)>> {
    let calls = (0..IN_FLIGHT)
        .map(|i| {
            let client = client(i);
            tokio::spawn(async move {
                let req = Request::builder()
                    .uri(format!("http://{addr}/{i}"))
                    .body(full(""))
                    .unwrap();
                let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
                (response.status(), text(response).await)
            })
        })
        .collect();
    eventually(async || hits.load(Ordering::SeqCst) == IN_FLIGHT).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        IN_FLIGHT,
        "all requests are in flight"
    );
    calls
}

async fn all_complete(calls: Vec<JoinHandle<(StatusCode, String)>>) {
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, ANSWER);
    }
}

#[tokio::test]
async fn stopping_during_100_slow_requests_lets_all_of_them_complete() {
    let (app, hits) = slow_app().await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let calls = slow_requests(addr, &hits, |_| http1()).await;
    let stopped = tokio::spawn(sidecar.stop());
    all_complete(calls).await;
    timeout(STEP, stopped)
        .await
        .expect("the drain ends")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after the drain"
    );
}

/// The binary, stopped by a real SIGTERM while 100 slow requests are in flight (half of them
/// streams of one HTTP/2 connection): every one completes, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_binary_during_100_slow_requests_lets_all_of_them_complete() {
    let (app, hits) = slow_app().await;
    let listen = process::free_addr();
    let mut sidecar = process::SidecarProcess::start(
        "sigterm",
        &format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\n"
        ),
    )
    .await;
    let h2 = http2();
    let calls = slow_requests(
        listen,
        &hits,
        |i| {
            if i % 2 == 0 { http1() } else { h2.clone() }
        },
    )
    .await;
    sidecar.signal("TERM");
    assert!(
        eventually(async || sidecar.get("/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE).await,
        "/ready turns false while draining (the admin listener outlives the drain)"
    );
    all_complete(calls).await;
    let exit = sidecar.wait_exit().await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_rust_log_that_tracing_subscriber_would_panic_on_is_served_with() {
    // `RUST_LOG` with a space after a comma, then a non-ASCII target: the binary panicked in
    // tracing-subscriber's directive parser before serving anything.
    let mut sidecar = process::SidecarProcess::start_with(
        "rust-log",
        "",
        "",
        &[("RUST_LOG", "info, hyp\u{e9}=warn")],
    )
    .await;
    assert_eq!(sidecar.get("/live").await.0, StatusCode::OK);
    sidecar.signal("TERM");
    assert!(sidecar.wait_exit().await.success());
}
