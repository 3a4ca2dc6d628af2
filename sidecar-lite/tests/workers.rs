//! Thread per core: each worker accepts on a socket of its own and serves what it accepted,
//! and what must be one is one across workers. Each test opens connections until the status
//! page shows one held by each of two workers, then drives them apart: a breaker opened by
//! traffic on one worker rejects on the other, and keeps the other worker's balancer off its
//! endpoint; one retry budget spans both, and the concurrency limit is one limit.

mod common;

use common::{BoxBody, STEP, app, eventually, full, get, sidecar, status_app, text};
use http::{Request, Response, StatusCode};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use resilience_core::SIDECAR_ERROR;
use sidecar_lite::Sidecar;
use std::{net::SocketAddr, sync::atomic::Ordering};
use tokio::{net::TcpStream, sync::watch, time::timeout};

const ROUTE: &str = "shared";

/// A sidecar with two workers and one outbound route to `app`, with `route` appended to the
/// route's section.
async fn two_workers(app: SocketAddr, route: &str) -> Sidecar {
    two_workers_to(&[app], route).await
}

/// [`two_workers`], the route balancing over `endpoints`.
async fn two_workers_to(endpoints: &[SocketAddr], route: &str) -> Sidecar {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    sidecar(&format!(
        "[runtime]\nworker_threads = 2\n\n[[outbound]]\nname = \"{ROUTE}\"\n\
         listen = \"127.0.0.1:0\"\nendpoints = [{}]\n{route}",
        endpoints.join(", ")
    ))
    .await
}

/// The route listener's open connections by worker, from `/status.json`.
async fn by_worker(sidecar: &Sidecar) -> Vec<u64> {
    let admin = sidecar.bound.admin.unwrap();
    let json = text(get(format!("http://{admin}/status.json")).await).await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let listener = json["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == format!("outbound/{ROUTE}"))
        .expect("the route's listener");
    listener["connections_by_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// An HTTP/1.1 connection to `addr`, not yet used.
async fn connect(addr: SocketAddr) -> SendRequest<BoxBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// Two connections to the route, the first accepted by worker 0, the second by worker 1.
/// Connections are opened one at a time, each kept until the status page has counted it, so
/// which worker took it is known; the kernel spreads them by their addresses, so a few
/// suffice (at most 64 are tried).
async fn one_on_each_worker(sidecar: &Sidecar) -> [SendRequest<BoxBody>; 2] {
    let addr = sidecar.bound.outbound[0].1;
    let mut held = Vec::new();
    let mut found: [Option<SendRequest<BoxBody>>; 2] = [None, None];
    let mut counted = by_worker(sidecar).await;
    assert_eq!(counted, [0, 0], "two workers, nothing open");
    for _ in 0..64 {
        let sender = connect(addr).await;
        let mut now = Vec::new();
        assert!(
            eventually(async || {
                now = by_worker(sidecar).await;
                now.iter().sum::<u64>() == counted.iter().sum::<u64>() + 1
            })
            .await,
            "the new connection is counted"
        );
        let worker = (0..2).find(|&w| now[w] > counted[w]).unwrap();
        counted = now;
        if found[worker].is_none() {
            found[worker] = Some(sender);
        } else {
            held.push(sender);
        }
        if found.iter().all(Option::is_some) {
            let [first, second] = found;
            return [first.unwrap(), second.unwrap()];
        }
    }
    panic!("64 connections, all on one worker: {counted:?}");
}

/// No retries, and each breaker open for a minute after `failures` failures in a row.
fn breaking_after(failures: u32) -> String {
    format!(
        "retry = {{ attempts = 1 }}\n[outbound.breaker]\nconsecutive_failures = {failures}\n\
         open_for = \"60s\"\n"
    )
}

/// A GET of `/` on `sender`'s connection.
async fn send(sender: &mut SendRequest<BoxBody>) -> Response<hyper::body::Incoming> {
    timeout(STEP, sender.ready()).await.unwrap().unwrap();
    let req = Request::builder()
        .uri("/")
        .header("host", "shared.test")
        .body(full(""))
        .unwrap();
    timeout(STEP, sender.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

/// The `x-sidecar-error` flag of a response, if any.
fn flag(response: &Response<hyper::body::Incoming>) -> Option<&str> {
    response
        .headers()
        .get(SIDECAR_ERROR)
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_breaker_opened_by_one_worker_rejects_on_the_other() {
    let (app, hits) = status_app(500).await;
    let sidecar = two_workers(app, &breaking_after(3)).await;
    let [mut first, mut second] = one_on_each_worker(&sidecar).await;
    for _ in 0..3 {
        let response = send(&mut first).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let _ = text(response).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    let response = send(&mut second).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flag(&response), Some("breaker-open"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "the other worker sent nothing to the app"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn an_endpoint_whose_breaker_one_worker_opened_is_left_out_by_the_others_balancer() {
    let (failing, failed) = status_app(500).await;
    let (healthy, _) = status_app(200).await;
    let sidecar = two_workers_to(&[failing, healthy], &breaking_after(1)).await;
    let [mut first, mut second] = one_on_each_worker(&sidecar).await;
    // Worker 0's balancer picks at random: within a few requests one goes to the failing
    // endpoint and opens its breaker.
    for _ in 0..64 {
        let response = send(&mut first).await;
        let _ = text(response).await;
        if failed.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    assert_eq!(failed.load(Ordering::SeqCst), 1, "one request failed");

    // Worker 1's balancer has its own load estimates but the same breakers: it sends
    // everything to the healthy endpoint (at random over both, 20 requests would all miss
    // the failing one once in a million runs).
    for _ in 0..20 {
        let response = send(&mut second).await;
        assert_eq!(response.status(), StatusCode::OK);
        let _ = text(response).await;
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        1,
        "nothing more to the open breaker"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn one_retry_budget_spans_the_workers() {
    let (app, hits) = status_app(503).await;
    // No share of requests, a reserve of 5 retries (1 a second over 5 s): five requests retry
    // once each, and then none does, on either worker.
    let sidecar = two_workers(
        app,
        "[outbound.retry]\nattempts = 2\non = [\"gateway-error\"]\n\
         backoff = { base = \"1ms\", max = \"1ms\" }\n\
         budget = { ratio = 0.0, min_per_second = 1, ttl = \"5s\" }\n",
    )
    .await;
    let [mut first, mut second] = one_on_each_worker(&sidecar).await;
    for n in 1..=5 {
        let response = send(&mut first).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let _ = text(response).await;
        assert_eq!(hits.load(Ordering::SeqCst), 2 * n, "retried once");
    }
    let response = send(&mut first).await;
    let _ = text(response).await;
    assert_eq!(hits.load(Ordering::SeqCst), 11, "the budget is spent");

    let response = send(&mut second).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = text(response).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        12,
        "spent for the other worker too: not retried"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn the_concurrency_limit_is_one_limit_across_workers() {
    let (release, released) = watch::channel(false);
    let (app, hits) = app(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(full("done"))
        }
    })
    .await;
    let sidecar = two_workers(app, "max_concurrent_requests = 1\n").await;
    let [mut first, mut second] = one_on_each_worker(&sidecar).await;

    timeout(STEP, first.ready()).await.unwrap().unwrap();
    let held = first.send_request(
        Request::builder()
            .uri("/")
            .header("host", "shared.test")
            .body(full(""))
            .unwrap(),
    );
    let held = tokio::spawn(held);
    assert!(
        eventually(async || hits.load(Ordering::SeqCst) == 1).await,
        "the first request reached the app"
    );

    let response = send(&mut second).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flag(&response), Some("overloaded"));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "shed, not sent");

    release.send_replace(true);
    let response = timeout(STEP, held).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let _ = text(response).await;
    // The first worker first: the request the second shed must have left nothing waiting for
    // the permit in that worker's stack, or the permit would go there and sit idle.
    let response = send(&mut first).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "room again on the first worker"
    );
    let _ = text(response).await;
    let response = send(&mut second).await;
    assert_eq!(response.status(), StatusCode::OK, "room again");
    let _ = text(response).await;
    sidecar.stop().await;
}
