//! Authorization by peer identity, through a real hyper server and client over mutual TLS.

mod common;

use common::{HttpServer, client, credentials, get, spiffe};
use http::StatusCode;
use resilience_mtls::{
    AllowList, AuthorizeLayer, Identity, MtlsAcceptor, MtlsConnector, SIDECAR_ERROR, TlsInfo,
    dev_ca::DevCa,
};
use std::convert::Infallible;
use tower::{ServiceExt, service_fn};

fn allow() -> AllowList {
    AllowList::parse([
        "spiffe://example.org/ns/shop/sa/frontend",
        "spiffe://example.org/ns/ops/sa/*",
    ])
    .unwrap()
}

#[tokio::test]
async fn listed_identities_are_served_and_others_get_403() {
    let ca = DevCa::new("example.org").unwrap();
    let server = HttpServer::spawn(
        MtlsAcceptor::new(&credentials(&ca, "ns/shop/sa/orders")),
        Some(allow()),
    )
    .await;

    for (caller, allowed) in [
        ("ns/shop/sa/frontend", true),
        ("ns/ops/sa/deployer", true),
        ("ns/shop/sa/inventory", false),
        ("ns/ops/sa/deployer/extra", false),
    ] {
        let connector = MtlsConnector::new(&credentials(&ca, caller), spiffe("ns/shop/sa/orders"));
        let (parts, body) = get(&client(connector), &server.url()).await.unwrap();
        if allowed {
            assert_eq!(parts.status, StatusCode::OK, "{caller}");
            assert_eq!(body, spiffe(caller).to_string(), "{caller}");
            assert!(!parts.headers.contains_key(SIDECAR_ERROR));
            let info = parts.extensions.get::<TlsInfo>().expect("tls info");
            assert_eq!(info.peer_identity(), Some(&spiffe("ns/shop/sa/orders")));
        } else {
            assert_eq!(parts.status, StatusCode::FORBIDDEN, "{caller}");
            assert_eq!(parts.headers[SIDECAR_ERROR], "unauthorized", "{caller}");
            assert!(
                String::from_utf8_lossy(&body).starts_with("forbidden"),
                "{body:?}"
            );
        }
    }
}

#[tokio::test]
async fn h2_and_http1_are_both_served_through_alpn() {
    let ca = DevCa::new("example.org").unwrap();
    let server = HttpServer::spawn(
        MtlsAcceptor::new(&credentials(&ca, "ns/shop/sa/orders")),
        Some(allow()),
    )
    .await;
    let creds = credentials(&ca, "ns/shop/sa/frontend");
    for (alpn, version) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let connector = MtlsConnector::builder(&creds, spiffe("ns/shop/sa/orders"))
            .alpn([alpn])
            .build();
        let (parts, _) = get(&client(connector), &server.url()).await.unwrap();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, version);
    }
}

#[tokio::test]
async fn anonymous_requests_are_denied_unless_allowed() {
    let svc = |allow: AllowList| {
        tower::ServiceBuilder::new()
            .layer(AuthorizeLayer::new(allow))
            .service(service_fn(|_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            }))
    };
    let response = svc(allow()).oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()[SIDECAR_ERROR], "unauthorized");

    let response = svc(allow().allow_anonymous(true))
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert::<Identity>(spiffe("ns/ops/sa/anyone"));
    let response = svc(allow()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn in_shadow_mode_a_caller_not_allowed_is_served_and_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = tower::ServiceBuilder::new()
        .layer(AuthorizeLayer::new(allow()).enforcement(resilience_mtls::Enforcement::Shadow))
        .service(service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert::<Identity>(spiffe("ns/shop/sa/inventory"));
    let response = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "served in shadow mode");
    assert!(!response.headers().contains_key(SIDECAR_ERROR));
    let mut allowed = http::Request::new(());
    allowed
        .extensions_mut()
        .insert::<Identity>(spiffe("ns/shop/sa/frontend"));
    assert_eq!(svc.oneshot(allowed).await.unwrap().status(), StatusCode::OK);

    let denied: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_mtls_denied_total")
        .map(|(key, _, _, value)| {
            let mode: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
            (mode, value)
        })
        .collect();
    assert_eq!(
        denied,
        [(vec!["shadow".to_owned()], DebugValue::Counter(1))],
        "the one caller not allowed, counted as shadow"
    );
}

/// A gRPC caller that is not allowed gets gRPC's `PERMISSION_DENIED`, trailers-only.
#[tokio::test]
async fn a_grpc_caller_that_is_not_allowed_gets_permission_denied() {
    let svc = tower::ServiceBuilder::new()
        .layer(AuthorizeLayer::new(allow()))
        .service(service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }));
    let mut req = http::Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert::<Identity>(spiffe("ns/shop/sa/inventory"));
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "7");
    assert_eq!(response.headers()[SIDECAR_ERROR], "unauthorized");
    assert_eq!(response.headers()["content-type"], "application/grpc");
}

#[tokio::test]
async fn an_identity_cannot_be_forged_into_a_plaintext_request() {
    // AddPeerIdentity removes an identity that an inner layer did not put there.
    let inner = service_fn(|req: http::Request<()>| async move {
        Ok::<_, Infallible>(req.extensions().get::<Identity>().cloned())
    });
    let svc = resilience_mtls::AddPeerIdentity::new(inner, None);
    let mut req = http::Request::new(());
    req.extensions_mut().insert::<Identity>(spiffe("forged"));
    assert_eq!(svc.oneshot(req).await.unwrap(), None);
}
