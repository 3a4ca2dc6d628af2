//! Permissive mode: mutual TLS and plaintext on one port; plaintext callers are anonymous.

mod common;

use bytes::Bytes;
use common::{HttpServer, client, credentials, get, spiffe};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use resilience_mtls::{AllowList, MtlsAcceptor, MtlsMode, SIDECAR_ERROR, dev_ca::DevCa};

async fn plain_get(url: &str) -> (StatusCode, String, Option<String>) {
    let plain: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(common::WAIT, plain.get(url.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let header = response
        .headers()
        .get(SIDECAR_ERROR)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), header)
}

#[tokio::test]
async fn permissive_mode_serves_plaintext_and_tls_on_one_port() {
    let ca = DevCa::new("example.org").unwrap();
    let acceptor = MtlsAcceptor::builder(&credentials(&ca, "ns/shop/sa/orders"))
        .mode(MtlsMode::Permissive)
        .build();
    let server = HttpServer::spawn(acceptor, None).await;

    // Plaintext: served, anonymous.
    let (status, body, _) = plain_get(&server.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "anonymous");

    // Mutual TLS on the same port: served, with the identity.
    let connector = resilience_mtls::MtlsConnector::new(
        &credentials(&ca, "ns/shop/sa/frontend"),
        spiffe("ns/shop/sa/orders"),
    );
    let (parts, body) = get(&client(connector), &server.url()).await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "spiffe://example.org/ns/shop/sa/frontend");
}

#[tokio::test]
async fn plaintext_callers_are_anonymous_to_authorization() {
    let ca = DevCa::new("example.org").unwrap();
    let creds = credentials(&ca, "ns/shop/sa/orders");
    let allow = AllowList::parse(["spiffe://example.org/ns/shop/sa/frontend"]).unwrap();
    let permissive = |allow: AllowList| {
        HttpServer::spawn(
            MtlsAcceptor::builder(&creds)
                .mode(MtlsMode::Permissive)
                .build(),
            Some(allow),
        )
    };

    let server = permissive(allow.clone()).await;
    let (status, _, header) = plain_get(&server.url()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(header.as_deref(), Some("unauthorized"));

    let server = permissive(allow.allow_anonymous(true)).await;
    let (status, body, _) = plain_get(&server.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "anonymous");
}

#[tokio::test]
async fn disabled_mode_is_plaintext_only() {
    let ca = DevCa::new("example.org").unwrap();
    let acceptor = MtlsAcceptor::builder(&credentials(&ca, "ns/shop/sa/orders"))
        .mode(MtlsMode::Disabled)
        .build();
    let server = HttpServer::spawn(acceptor, None).await;
    let (status, body, _) = plain_get(&server.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "anonymous");

    let connector = resilience_mtls::MtlsConnector::new(
        &credentials(&ca, "ns/shop/sa/frontend"),
        spiffe("ns/shop/sa/orders"),
    );
    assert!(get(&client(connector), &server.url()).await.is_err());
}
