//! Rate limits and the adaptive concurrency limit in the sidecar, over real sockets: an
//! outbound route's rate limit (and its shadow mode), the inbound rate limit per peer
//! identity, and `max_concurrent_requests` as an adaptive limit.

mod common;

use common::*;
use http::StatusCode;
use resilience_core::SIDECAR_ERROR;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

/// A plaintext outbound route to `app`, with `route` appended to its section.
async fn route_to(app: std::net::SocketAddr, route: &str) -> sidecar_lite::Sidecar {
    sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n{route}"
    ))
    .await
}

#[tokio::test]
async fn an_outbound_rate_limit_answers_429_with_retry_after() {
    let (app, hits) = status_app(200).await;
    // One request a minute: the second is refused for about a minute.
    let sidecar = route_to(app, "[outbound.rate_limit]\nrate = 0.0166\nburst = 1\n").await;
    let addr = outbound_addr(&sidecar);
    assert_eq!(
        get(format!("http://{addr}/")).await.status(),
        StatusCode::OK
    );
    let refused = get(format!("http://{addr}/")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[SIDECAR_ERROR], "rate-limited");
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=61).contains(&wait), "Retry-After: {wait}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the refused request was not sent"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn in_shadow_mode_the_outbound_rate_limit_refuses_nothing() {
    let (app, hits) = status_app(200).await;
    let sidecar = route_to(
        app,
        "[outbound.rate_limit]\nrate = 0.0166\nburst = 1\nmode = \"shadow\"\n",
    )
    .await;
    let addr = outbound_addr(&sidecar);
    for _ in 0..3 {
        assert_eq!(
            get(format!("http://{addr}/")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_inbound_rate_limit_holds_each_peer_identity_to_its_own_limit() {
    let (app, hits) = status_app(200).await;
    let certs = Certs::new("rate-per-caller");
    let inbound = inbound_sidecar(
        &certs,
        "orders",
        app,
        &[spiffe("frontend"), spiffe("billing")],
        "[inbound.rate_limit]\nper_caller = { rate = 0.0166, burst = 2 }\n",
    )
    .await;
    let frontend = frontend_to_orders(&certs, &inbound, "retry = { attempts = 1 }").await;
    let billing = outbound_sidecar(
        &certs,
        "billing",
        &[inbound.bound.inbound.unwrap()],
        "orders",
        "retry = { attempts = 1 }",
    )
    .await;
    let via = |sidecar: &sidecar_lite::Sidecar| format!("http://{}/", outbound_addr(sidecar));
    for _ in 0..2 {
        assert_eq!(get(via(&frontend)).await.status(), StatusCode::OK);
    }
    let refused = get(via(&frontend)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[SIDECAR_ERROR], "rate-limited");
    assert_eq!(
        get(via(&billing)).await.status(),
        StatusCode::OK,
        "another identity has a limit of its own"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    for sidecar in [frontend, billing, inbound] {
        sidecar.stop().await;
    }
}

#[tokio::test]
async fn an_adaptive_concurrency_limit_sheds_at_once_over_its_limit() {
    let (release, released) = watch::channel(false);
    let (app, hits) = app(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            http::Response::new(full("done"))
        }
    })
    .await;
    let sidecar = route_to(
        app,
        "max_concurrent_requests = { initial_limit = 1, min_limit = 1, max_limit = 1 }\n",
    )
    .await;
    let addr = outbound_addr(&sidecar);
    let held = tokio::spawn(get(format!("http://{addr}/held")));
    assert!(eventually(async || hits.load(Ordering::SeqCst) == 1).await);
    let shed = get(format!("http://{addr}/shed")).await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[SIDECAR_ERROR], "overloaded");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "shed, not sent");
    release.send_replace(true);
    assert_eq!(held.await.unwrap().status(), StatusCode::OK);
    sidecar.stop().await;
}

#[test]
fn check_refuses_a_per_caller_limit_outbound_and_bad_adaptive_keys() {
    let problems = |route: &str| {
        let text = format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = \
             [\"127.0.0.1:9\"]\n{route}"
        );
        sidecar_lite::Config::parse(&text).unwrap_err().to_string()
    };
    let per_caller = problems("[outbound.rate_limit]\nper_caller = { rate = 1 }\n");
    assert!(per_caller.contains("rate_limit.per_caller"), "{per_caller}");
    assert!(per_caller.contains("[inbound] only"), "{per_caller}");
    let aimd_key =
        problems("max_concurrent_requests = { smoothing = 0.5, algorithm = \"aimd\" }\n");
    assert!(
        aimd_key.contains("max_concurrent_requests.smoothing"),
        "{aimd_key}"
    );
    let word = problems("max_concurrent_requests = \"lots\"\n");
    assert!(word.contains("\"lots\" is not a limit"), "{word}");
}

#[tokio::test]
async fn a_streamed_response_holds_its_place_until_its_body_ends() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    // Each response streams what the test sends it, and ends when the test lets it go.
    let streams: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>> = Arc::default();
    let senders = streams.clone();
    let (app, _) = app(move |_req| {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        senders.lock().unwrap().push(tx);
        async move {
            let frames = futures::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok(hyper::body::Frame::data(chunk)), rx))
            });
            http::Response::new(StreamBody::new(frames).boxed_unsync())
        }
    })
    .await;
    let end = |text: &'static str| {
        let stream = streams.lock().unwrap().pop().expect("a stream open");
        async move { stream.send(Bytes::from(text)).await.unwrap() }
    };

    for limit in ["1", "{ initial_limit = 1, min_limit = 1, max_limit = 1 }"] {
        let sidecar = route_to(app, &format!("max_concurrent_requests = {limit}\n")).await;
        let addr = outbound_addr(&sidecar);
        // Its head answered, its body still streaming: the one place is taken.
        let streaming = get(format!("http://{addr}/stream")).await;
        assert_eq!(streaming.status(), StatusCode::OK, "{limit}");
        let shed = get(format!("http://{addr}/shed")).await;
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE, "{limit}");
        assert_eq!(shed.headers()[SIDECAR_ERROR], "overloaded", "{limit}");

        // The end of its body gives the place back.
        end("the end").await;
        assert_eq!(text(streaming).await, "the end");
        let next = get(format!("http://{addr}/next")).await;
        assert_eq!(next.status(), StatusCode::OK, "{limit}");
        end("next").await;
        assert_eq!(text(next).await, "next");
        sidecar.stop().await;
    }
}
