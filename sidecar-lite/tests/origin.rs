//! HTTPS to a server outside the mesh (`tls = { server_name, trust, cert, key }`), over real
//! sockets: an HTTPS server on 127.0.0.1 with a certificate for `api.example.test`.

mod common;

use common::{Certs, full, get, outbound_addr, sidecar, text};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use resilience_mtls::{Identity, dev_ca::DevCa};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sidecar_lite::Config;
use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::net::TcpListener;

const API: &str = "api.example.test";

/// An HTTPS server with a certificate `ca` issued for `name`, answering each request with the
/// `Host` it came with and its HTTP version.
async fn https_server(ca: &DevCa, name: &str) -> SocketAddr {
    https_server_asking(ca, name, None).await
}

/// [`https_server`], asking each client for a certificate of `clients` when given, and naming
/// the identity of the one it got in `x-client`.
async fn https_server_asking(ca: &DevCa, name: &str, clients: Option<&DevCa>) -> SocketAddr {
    let issued = ca
        .issue(&Identity::parse(name).unwrap(), &Default::default())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(clients.trust_pem().as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| Identity::from_certificate(&chain[0]).ok())
                    .map_or("none".to_owned(), |id| id.to_string());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let host = req
                            .headers()
                            .get("host")
                            .map_or("none", |h| h.to_str().unwrap_or("?"))
                            .to_owned();
                        let authority = req.uri().authority().map_or("none", |a| a.as_str());
                        let said = format!("host={host} authority={authority} {:?}", req.version());
                        let mut response = Response::new(full(said));
                        response
                            .headers_mut()
                            .insert("x-client", client.parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A route called `api` to `server`, with `tls` (the inline table's keys) and `extra` keys.
fn route(server: SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        "[[outbound]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{server}\"]\n\
         tls = {{ {tls} }}\n{extra}\n"
    )
}

/// The CA's bundle, written to `certs`'s directory as `name`.
fn bundle(certs: &Certs, ca: &DevCa, name: &str) -> PathBuf {
    let path = certs.dir.join(name);
    std::fs::write(&path, ca.trust_pem()).unwrap();
    path
}

#[tokio::test]
async fn a_route_reaches_an_https_server_by_its_name() {
    let ca = DevCa::new("example.org").unwrap();
    let certs = Certs::new("origin");
    let server = https_server(&ca, API).await;
    let trust = bundle(&certs, &ca, "api-ca.pem");
    let tls = format!("server_name = \"{API}\", trust = {trust:?}");
    for (extra, version) in [
        ("", "HTTP/2.0"),
        ("endpoint_protocol = \"http1\"", "HTTP/1.1"),
    ] {
        // Beside an [identity]: a route outside the mesh needs no server_identity.
        let config = format!(
            "{}\n{}",
            certs.identity("frontend"),
            route(server, &tls, extra)
        );
        let sidecar = sidecar(&config).await;
        let response = get(format!("http://{}/v1/charges", outbound_addr(&sidecar))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let said = text(response).await;
        // The endpoint's port is not HTTPS's own, so the authority names it (RFC 9110 7.2).
        let authority = format!("{API}:{}", server.port());
        assert!(said.starts_with(&format!("host={authority} ")), "{said}");
        if version == "HTTP/2.0" {
            assert!(said.contains(&format!("authority={authority} ")), "{said}");
        }
        assert!(said.ends_with(version), "{extra}: {said}");
        sidecar.stop().await;
    }
}

#[tokio::test]
async fn a_server_not_named_so_or_not_trusted_is_refused() {
    let ca = DevCa::new("example.org").unwrap();
    let stranger = DevCa::new("example.org").unwrap();
    let certs = Certs::new("origin-refused");
    let server = https_server(&ca, API).await;
    let ours = bundle(&certs, &ca, "api-ca.pem");
    let other = bundle(&certs, &stranger, "other-ca.pem");
    for tls in [
        format!("server_name = \"other.example.test\", trust = {ours:?}"),
        format!("server_name = \"{API}\", trust = {other:?}"),
    ] {
        let sidecar = sidecar(&route(server, &tls, "")).await;
        let response = get(format!("http://{}/", outbound_addr(&sidecar))).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{tls}");
        assert_eq!(response.headers()["x-sidecar-error"], "connect", "{tls}");
        sidecar.stop().await;
    }
}

#[tokio::test]
async fn a_route_presents_its_client_certificate_to_a_server_that_asks() {
    let ca = DevCa::new("example.org").unwrap();
    let partner = DevCa::new("partner.test").unwrap();
    let certs = Certs::new("origin-client");
    let server = https_server_asking(&ca, API, Some(&partner)).await;
    let trust = bundle(&certs, &ca, "api-ca.pem");
    let ours = partner
        .issue(
            &Identity::parse("orders.partner.test").unwrap(),
            &Default::default(),
        )
        .unwrap();
    let (cert, key) = (
        certs.dir.join("client.pem"),
        certs.dir.join("client-key.pem"),
    );
    std::fs::write(&cert, &ours.cert_pem).unwrap();
    std::fs::write(&key, &ours.key_pem).unwrap();

    let without = format!("server_name = \"{API}\", trust = {trust:?}");
    let refused = sidecar(&route(server, &without, "")).await;
    let response = get(format!("http://{}/", outbound_addr(&refused))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    refused.stop().await;

    let with = format!("{without}, cert = {cert:?}, key = {key:?}");
    let sidecar = sidecar(&route(server, &with, "")).await;
    let response = get(format!("http://{}/", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-client"], "orders.partner.test");
    sidecar.stop().await;
}

#[tokio::test]
async fn what_contradicts_tls_or_cannot_be_used_is_named() {
    let server: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let error = |text: &str| Config::parse(text).unwrap_err().to_string();
    let tls = format!("server_name = \"{API}\", trust = \"ca.pem\"");
    let both = error(&route(
        server,
        &tls,
        "server_identity = \"spiffe://example.org/ns/a/sa/b\"",
    ));
    assert!(
        both.contains("`outbound[0].tls`: contradicts `server_identity`"),
        "{both}"
    );
    let plain = error(&route(server, &tls, "plaintext = true"));
    assert!(
        plain.contains("`outbound[0].plaintext`: contradicts `tls`"),
        "{plain}"
    );
    let bad = error(&route(
        server,
        "server_name = \"not a name\", trust = \"ca.pem\"",
        "",
    ));
    assert!(bad.contains("`outbound[0].tls.server_name`"), "{bad}");
    let alone = error(&route(server, &format!("{tls}, cert = \"client.pem\""), ""));
    assert!(
        alone.contains("`outbound[0].tls.cert`: needs `key` beside it"),
        "{alone}"
    );

    let missing = Config::parse(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        route(
            server,
            "server_name = \"api.example.test\", trust = \"/nonexistent/ca.pem\"",
            ""
        )
    ))
    .unwrap();
    let Err(refused) = sidecar_lite::Sidecar::start(&missing, None).await else {
        panic!("a route whose trust cannot be read started");
    };
    let refused = refused.to_string();
    assert!(
        refused.contains("tls.trust") && refused.contains("/nonexistent/ca.pem"),
        "{refused}"
    );

    // A client certificate with another's key, the two in one file or in two: the key is named.
    let ca = DevCa::new("partner.test").unwrap();
    let certs = Certs::new("origin-named");
    let trust = bundle(&certs, &ca, "ca.pem");
    let issue = |name: &str| {
        ca.issue(&Identity::parse(name).unwrap(), &Default::default())
            .unwrap()
    };
    let (ours, other) = (issue("a.partner.test"), issue("b.partner.test"));
    let (cert, key, both) = (
        certs.dir.join("a.pem"),
        certs.dir.join("b-key.pem"),
        certs.dir.join("both.pem"),
    );
    std::fs::write(&cert, &ours.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    std::fs::write(&both, format!("{}{}", ours.cert_pem, other.key_pem)).unwrap();
    for (cert, key) in [(&cert, &key), (&both, &both)] {
        let tls =
            format!("server_name = \"{API}\", trust = {trust:?}, cert = {cert:?}, key = {key:?}");
        let config = Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            route(server, &tls, "")
        ))
        .unwrap();
        let Err(refused) = sidecar_lite::Sidecar::start(&config, None).await else {
            panic!("a route whose client key is another's started");
        };
        let refused = refused.to_string();
        assert!(refused.contains("tls.key"), "{refused}");
    }
    let lone = error(&route(server, &format!("{tls}, key = \"key.pem\""), ""));
    assert!(
        lone.contains("`outbound[0].tls.key`: needs `cert` beside it"),
        "{lone}"
    );
}
