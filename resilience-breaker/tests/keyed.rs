//! Keyed breakers: one per authority, created on demand, bounded, idle ones dropped.

use http::{Request, Response, header::HOST, uri::Authority};
use resilience_breaker::{BreakerOpen, KeyedCircuitBreakerLayer, Policy, SlidingWindow, State};
use std::time::Duration;
use tokio::time;
use tower::{BoxError, Layer, ServiceExt, service_fn};

fn policy() -> Policy {
    Policy::consecutive_failures(2)
        .window(SlidingWindow::Count(10))
        .open_for(Duration::from_secs(10))
        .jitter(0.0)
}

/// Fails every request to a host whose name starts with "bad".
fn upstream()
-> impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone
{
    service_fn(|req: Request<()>| async move {
        let host = req.uri().host().map(str::to_owned).or_else(|| {
            req.headers()
                .get(HOST)
                .map(|h| h.to_str().unwrap().to_owned())
        });
        if host.is_some_and(|h| h.starts_with("bad")) {
            Err::<Response<()>, BoxError>("connection refused".into())
        } else {
            Ok(Response::new(()))
        }
    })
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_authority_has_its_own_breaker() {
    let svc = KeyedCircuitBreakerLayer::new(policy())
        .unwrap()
        .layer(upstream());
    for _ in 0..2 {
        assert!(
            svc.clone()
                .oneshot(get("http://bad.example:8080/"))
                .await
                .is_err()
        );
    }
    let err = svc
        .clone()
        .oneshot(get("http://bad.example:8080/"))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    // Another endpoint is unaffected.
    svc.clone()
        .oneshot(get("http://good.example:8080/"))
        .await
        .unwrap();

    let breakers = svc.breakers();
    assert_eq!(breakers.len(), 2);
    let bad = Authority::from_static("bad.example:8080");
    assert_eq!(breakers.get(&bad).unwrap().state(), State::Open);
    let good = Authority::from_static("good.example:8080");
    assert_eq!(breakers.get(&good).unwrap().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_host_header_keys_origin_form_requests() {
    let svc = KeyedCircuitBreakerLayer::new(policy())
        .unwrap()
        .layer(upstream());
    let with_host = || {
        Request::get("/path")
            .header(HOST, "bad.internal")
            .body(())
            .unwrap()
    };
    for _ in 0..2 {
        assert!(svc.clone().oneshot(with_host()).await.is_err());
    }
    assert!(
        svc.clone()
            .oneshot(with_host())
            .await
            .unwrap_err()
            .is::<BreakerOpen>()
    );
    assert_eq!(
        svc.breakers().keys(),
        vec![Authority::from_static("bad.internal")]
    );
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_breaker_makes_room() {
    let svc = KeyedCircuitBreakerLayer::new(policy())
        .unwrap()
        .max_breakers(2)
        .layer(upstream());
    svc.clone().oneshot(get("http://a/")).await.unwrap();
    time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(get("http://b/")).await.unwrap();
    time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(get("http://a/")).await.unwrap(); // a is now the most recent
    time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(get("http://c/")).await.unwrap();
    let mut keys: Vec<_> = svc
        .breakers()
        .keys()
        .iter()
        .map(ToString::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "c"]);
}

#[tokio::test(start_paused = true)]
async fn idle_breakers_are_dropped() {
    let svc = KeyedCircuitBreakerLayer::new(policy())
        .unwrap()
        .max_breakers(100)
        .idle_timeout(Duration::from_secs(60))
        .layer(upstream());
    svc.clone().oneshot(get("http://a/")).await.unwrap();
    svc.clone().oneshot(get("http://b/")).await.unwrap();
    time::advance(Duration::from_secs(59)).await;
    svc.clone().oneshot(get("http://b/")).await.unwrap();
    assert_eq!(svc.breakers().evict_idle(), 0);
    time::advance(Duration::from_secs(1)).await;
    assert_eq!(svc.breakers().evict_idle(), 1, "a was idle for 60 s");
    assert_eq!(svc.breakers().keys(), vec![Authority::from_static("b")]);
    // A new key also sweeps: b has been idle for 61 s by now.
    time::advance(Duration::from_secs(60)).await;
    svc.clone().oneshot(get("http://c/")).await.unwrap();
    assert_eq!(svc.breakers().keys(), vec![Authority::from_static("c")]);
}

#[tokio::test(start_paused = true)]
async fn a_custom_key() {
    let svc = KeyedCircuitBreakerLayer::new(policy())
        .unwrap()
        .key_by(|req: &Request<()>| req.uri().path().to_owned())
        .layer(upstream());
    svc.clone().oneshot(get("http://x/one")).await.unwrap();
    svc.clone().oneshot(get("http://y/one")).await.unwrap();
    svc.clone().oneshot(get("http://x/two")).await.unwrap();
    let mut keys = svc.breakers().keys();
    keys.sort();
    assert_eq!(keys, ["/one", "/two"]);
}
