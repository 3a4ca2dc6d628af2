//! gRPC callers get gRPC answers: a call that either sidecar fails itself (timeout, breaker
//! open, overloaded, no endpoints, connect or upstream failure, unauthorized) is answered with
//! HTTP 200, trailers-only, the reason's `grpc-status` and `grpc-message`, and the
//! `x-sidecar-error` flag, through two sidecars with mTLS between them.
//!
//! Each reason is checked with a hyper HTTP/2 client, which sees the frames, and with grpcio
//! (`tests/grpc/client.py`), the reference client, which sees what an application sees. Without
//! grpcio installed the grpcio half is skipped with a notice, unless `REQUIRE_GRPCIO` is set
//! (as `.ci/run` sets it after installing grpcio): then it fails.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::{
    Certs,
    dns::{Answer, Dns},
    frontend_to_orders,
    grpc::{OK, UNAVAILABLE, grpc_app, grpc_request},
    http2, inbound_sidecar, outbound_addr, outbound_sidecar, sidecar, spiffe,
};
use http_body_util::BodyExt;
use sidecar_lite::Sidecar;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, time::timeout};

const GET: &str = "/shop.Orders/Get";
const HANG: &str = "/shop.Orders/Hang";
const FAIL: &str = "/shop.Orders/Fail";

const DEADLINE_EXCEEDED: u16 = 4;
const PERMISSION_DENIED: u16 = 7;

/// An "app" that accepts connections and closes them at once, counting them.
async fn closing_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, accepted)
}

/// An address where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The two sidecars between a caller and an app: `inbound_extra` goes into the inbound
/// section, `route` into the outbound one; `allow` is the inbound allow-list.
struct TwoSidecars {
    outbound: Sidecar,
    _inbound: Sidecar,
    _certs: Certs,
}

impl TwoSidecars {
    async fn start(test: &str, app: SocketAddr, allow: &str, route: &str) -> Self {
        let certs = Certs::new(test);
        let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe(allow)], "").await;
        let outbound = frontend_to_orders(&certs, &inbound, route).await;
        Self {
            outbound,
            _inbound: inbound,
            _certs: certs,
        }
    }

    fn addr(&self) -> SocketAddr {
        outbound_addr(&self.outbound)
    }
}

/// What a caller got.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    grpc_status: u16,
    flag: Option<String>,
}

impl Outcome {
    fn local(grpc_status: u16, flag: &str) -> Self {
        Self {
            grpc_status,
            flag: Some(flag.to_owned()),
        }
    }
}

/// A unary call over h2c with hyper; checks that a local reply is trailers-only.
async fn call(addr: SocketAddr, method: &str) -> Outcome {
    let response = timeout(common::STEP, http2().request(grpc_request(addr, method)))
        .await
        .expect("an answer within STEP")
        .expect("a response");
    assert_eq!(response.status(), 200, "gRPC answers are HTTP 200");
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap();
    let trailers = body.trailers().cloned().unwrap_or_default();
    let flag = headers
        .get("x-sidecar-error")
        .map(|v| v.to_str().unwrap().to_owned());
    if flag.is_some() {
        assert!(body.to_bytes().is_empty(), "a local reply has no message");
        assert!(trailers.is_empty(), "trailers-only: all in the headers");
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(headers.contains_key("grpc-message"), "{headers:?}");
    }
    let grpc_status = headers
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .expect("a grpc-status")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    Outcome { grpc_status, flag }
}

/// The same call with grpcio; `None` when grpcio is not installed and not required.
async fn call_with_grpcio(addr: SocketAddr, method: &str) -> Option<Outcome> {
    if !grpcio_available() {
        assert!(
            std::env::var_os("REQUIRE_GRPCIO").is_none(),
            "REQUIRE_GRPCIO is set but `python3 -c 'import grpc'` fails: pip install grpcio"
        );
        eprintln!("grpcio is not installed: the grpcio half of this test is skipped");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/client.py");
    let args = [script.to_owned(), addr.to_string(), method.to_owned()];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(args).output()
    });
    let output = timeout(Duration::from_secs(30), output)
        .await
        .expect("grpcio answers within 30 s")
        .unwrap()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    Some(Outcome {
        grpc_status: u16::try_from(json["code"].as_u64().unwrap()).unwrap(),
        flag: json["flag"].as_str().map(str::to_owned),
    })
}

fn grpcio_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Both clients get `expected` for a call of `method`.
async fn expect(addr: SocketAddr, method: &str, expected: &Outcome) {
    assert_eq!(&call(addr, method).await, expected, "hyper, {method}");
    if let Some(outcome) = call_with_grpcio(addr, method).await {
        assert_eq!(&outcome, expected, "grpcio, {method}");
    }
}

#[tokio::test]
async fn a_call_that_succeeds_is_untouched() {
    let (app, _) = grpc_app().await;
    let path = TwoSidecars::start("grpc-ok", app, "frontend", "").await;
    let ok = Outcome {
        grpc_status: OK,
        flag: None,
    };
    expect(path.addr(), GET, &ok).await;
}

#[tokio::test]
async fn a_timeout_is_deadline_exceeded() {
    let (app, _) = grpc_app().await;
    let route = "timeout = \"300ms\"\n";
    let path = TwoSidecars::start("grpc-timeout", app, "frontend", route).await;
    expect(
        path.addr(),
        HANG,
        &Outcome::local(DEADLINE_EXCEEDED, "timeout"),
    )
    .await;
}

#[tokio::test]
async fn an_open_breaker_is_unavailable() {
    let (app, _) = grpc_app().await;
    let route = "[outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"60s\"\n";
    let path = TwoSidecars::start("grpc-breaker", app, "frontend", route).await;
    let app_failure = Outcome {
        grpc_status: UNAVAILABLE,
        flag: None,
    };
    for _ in 0..2 {
        assert_eq!(call(path.addr(), FAIL).await, app_failure);
    }
    expect(
        path.addr(),
        GET,
        &Outcome::local(UNAVAILABLE, "breaker-open"),
    )
    .await;
}

#[tokio::test]
async fn overload_is_unavailable() {
    let (app, seen) = grpc_app().await;
    let route = "max_concurrent_requests = 1\ntimeout = \"60s\"\n";
    let path = TwoSidecars::start("grpc-overload", app, "frontend", route).await;
    let addr = path.addr();
    let hanging = tokio::spawn(async move { call(addr, HANG).await });
    assert!(common::eventually(async || seen.load(Ordering::SeqCst) == 1).await);
    expect(addr, GET, &Outcome::local(UNAVAILABLE, "overloaded")).await;
    hanging.abort();
}

#[tokio::test]
async fn a_route_without_endpoints_is_unavailable() {
    let dns = Dns::start(Answer::Fail).await;
    let certs = Certs::new("grpc-no-endpoints");
    let outbound = sidecar(&format!(
        "{}\n[discovery]\nresolver = \"{}\"\n[[outbound]]\nname = \"peer\"\n\
         listen = \"127.0.0.1:0\"\nendpoints = [\"dns:nowhere.shop.test:80\"]\n\
         server_identity = \"{}\"\n",
        certs.identity("frontend"),
        dns.addr,
        spiffe("orders"),
    ))
    .await;
    let addr = outbound_addr(&outbound);
    let expected = Outcome::local(UNAVAILABLE, "no-endpoints");
    // A call sent before discovery has looked once waits for the balancer for its
    // timeout: each try here gives up after a second.
    let refused = async || {
        timeout(Duration::from_secs(1), call(addr, GET))
            .await
            .is_ok_and(|outcome| outcome == expected)
    };
    assert!(common::eventually(refused).await);
    expect(addr, GET, &expected).await;
}

#[tokio::test]
async fn a_connect_failure_is_unavailable() {
    let certs = Certs::new("grpc-connect");
    let outbound = outbound_sidecar(&certs, "frontend", &[closed_port().await], "orders", "").await;
    expect(
        outbound_addr(&outbound),
        GET,
        &Outcome::local(UNAVAILABLE, "connect"),
    )
    .await;
}

#[tokio::test]
async fn an_upstream_failure_is_unavailable() {
    let (app, _) = closing_app().await;
    let path = TwoSidecars::start("grpc-upstream", app, "frontend", "").await;
    expect(path.addr(), GET, &Outcome::local(UNAVAILABLE, "upstream")).await;
}

#[tokio::test]
async fn an_unauthorized_caller_is_permission_denied() {
    let (app, seen) = grpc_app().await;
    let path = TwoSidecars::start("grpc-unauthorized", app, "someone-else", "").await;
    expect(
        path.addr(),
        GET,
        &Outcome::local(PERMISSION_DENIED, "unauthorized"),
    )
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

/// The inbound sidecar's local UNAVAILABLE is, to the outbound sidecar's retry policy, the
/// status it is: retried under `unavailable`, and not retried without it.
#[tokio::test]
async fn a_local_unavailable_from_the_peer_is_retried_under_unavailable() {
    for (route, tries) in [
        ("", 1),
        (
            "[outbound.retry]\non = [\"unavailable\"]\nattempts = 3\n",
            3,
        ),
    ] {
        let (app, accepted) = closing_app().await;
        let path = TwoSidecars::start("grpc-retry", app, "frontend", route).await;
        assert_eq!(
            call(path.addr(), GET).await,
            Outcome::local(UNAVAILABLE, "upstream")
        );
        assert_eq!(accepted.load(Ordering::SeqCst), tries, "{route}");
    }
}
