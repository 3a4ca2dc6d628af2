//! Handshakes over real sockets on 127.0.0.1: who gets in, who does not, and why.

mod common;

use common::{HandshakeServer, WAIT, credentials, read_all, spiffe, tcp};
use resilience_mtls::{
    Credentials, FailureReason, HandshakeError, Identity, MtlsAcceptor, MtlsConnector,
    dev_ca::{DevCa, IssueOptions},
};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::{sync::Arc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Connects with `connector`, and reads what the server says until it closes.
async fn connect_and_read(
    connector: &MtlsConnector,
    server: &HandshakeServer,
) -> Result<String, std::io::Error> {
    let tls = connector.handshake(name(), tcp(server.addr).await).await;
    let mut tls = tls.map_err(std::io::Error::from)?;
    let mut text = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut text))
        .await
        .expect("the server answers or closes")?;
    Ok(text)
}

#[tokio::test]
async fn handshake_succeeds_and_both_sides_see_the_peer_identity() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;

    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    let mut tls = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .expect("handshake");
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    let server_cert = &conn.peer_certificates().unwrap()[0];
    assert_eq!(
        Identity::from_certificate(server_cert).unwrap(),
        spiffe("ns/shop/sa/orders")
    );

    let mut text = String::new();
    tls.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "hello spiffe://example.org/ns/shop/sa/frontend\n");
    assert_eq!(
        server.next().await.unwrap(),
        Some(spiffe("ns/shop/sa/frontend"))
    );
}

#[tokio::test]
async fn strict_mode_rejects_a_client_without_a_certificate() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;

    // A rustls client with no certificate of its own.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // TLS 1.3 clients finish before the server has checked them; the refusal arrives as an
    // alert on the first read.
    let result = async {
        let mut tls = connector.connect(name(), tcp(server.addr).await).await?;
        let mut text = String::new();
        tls.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    }
    .await;
    assert!(result.is_err(), "the client was let in: {result:?}");

    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::NoClientCertificate, "{err}");
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    for other in [
        DevCa::new("other.org").unwrap(),
        // Same name as ours, another key: what a forger would make.
        DevCa::new("example.org").unwrap(),
    ] {
        client_from(&other).await;
    }
}

async fn client_from(other: &DevCa) {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;

    // The intruder trusts our CA (so it accepts our server) but its own cert is from another.
    let intruder = Credentials::new(
        other
            .issue(&spiffe("ns/shop/sa/frontend"), &IssueOptions::new())
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    let connector = MtlsConnector::new(&intruder, spiffe("ns/shop/sa/orders"));
    let result = connect_and_read(&connector, &server).await;
    assert!(result.is_err(), "the intruder was let in: {result:?}");
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::UnknownCa, "{err}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_rejected() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;

    // Valid when loaded (a week ago), expired now: the server must check at handshake time.
    let now = common::now();
    let week = Duration::from_secs(7 * 24 * 3600);
    let expired = ca
        .issue(
            &spiffe("ns/shop/sa/frontend"),
            &IssueOptions::new().valid(now - 2 * week, now - week),
        )
        .unwrap();
    let material = resilience_mtls::Material::from_pem(
        &expired.cert_pem,
        &expired.key_pem,
        ca.trust_pem(),
        now - Duration::from_secs(10 * 24 * 3600),
    )
    .unwrap();
    let connector = MtlsConnector::new(&Credentials::new(material), spiffe("ns/shop/sa/orders"));
    let result = connect_and_read(&connector, &server).await;
    assert!(result.is_err(), "the expired client was let in: {result:?}");
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::Expired, "{err}");
}

#[tokio::test]
async fn the_client_rejects_a_server_whose_identity_does_not_match() {
    let ca = DevCa::new("example.org").unwrap();
    // A valid certificate from the right CA, for the wrong workload.
    let impostor = credentials(&ca, "ns/shop/sa/inventory");
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&impostor)).await;

    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    let err = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .expect_err("the client must refuse the impostor");
    assert_eq!(err.reason(), FailureReason::IdentityMismatch, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("spiffe://example.org/ns/shop/sa/orders")
            && text.contains("spiffe://example.org/ns/shop/sa/inventory"),
        "{text}"
    );
    // The server saw the client's refusal.
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::PeerRejected, "{err}");
}

#[tokio::test]
async fn dns_identities_are_checked_against_dns_sans_not_the_dialled_host() {
    let ca = DevCa::new("example.org").unwrap();
    let dns: Identity = "orders.shop.svc".parse().unwrap();
    let server_creds = Credentials::new(
        ca.issue(&dns, &IssueOptions::new())
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;

    // Dialled as "localhost" (SNI), accepted because it is orders.shop.svc.
    let good = MtlsConnector::new(&client_creds, dns);
    assert_eq!(
        connect_and_read(&good, &server).await.unwrap(),
        "hello spiffe://example.org/ns/shop/sa/frontend\n"
    );
    server.next().await.unwrap();

    let wrong = MtlsConnector::new(&client_creds, "payments.shop.svc".parse().unwrap());
    let err = wrong
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), FailureReason::IdentityMismatch, "{err}");

    // A SPIFFE expectation is not met by a DNS-only certificate either.
    let spiffe_expected = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    let err = spiffe_expected
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), FailureReason::IdentityMismatch, "{err}");
}

#[tokio::test]
async fn the_client_rejects_a_server_from_another_ca() {
    let ca = DevCa::new("example.org").unwrap();
    let other = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&other, "ns/shop/sa/orders");
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    let err = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), FailureReason::UnknownCa, "{err}");
}

#[tokio::test]
async fn plaintext_on_a_strict_port_is_refused_as_not_tls() {
    let ca = DevCa::new("example.org").unwrap();
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&credentials(&ca, "a"))).await;
    let mut plain = tcp(server.addr).await;
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let err: HandshakeError = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::NotTls, "{err}");
}

#[tokio::test]
async fn tls12_is_refused_by_default_and_accepted_by_opt_in() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    // A TLS 1.2-only client against the default server.
    let default_server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let client12 = tls12_client(&client_creds);
    let err = client12
        .connect(name(), tcp(default_server.addr).await)
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("protocol"), "{err}");

    let mut server12 =
        HandshakeServer::spawn(MtlsAcceptor::builder(&server_creds).tls12(true).build()).await;
    let mut tls = client12
        .connect(name(), tcp(server12.addr).await)
        .await
        .expect("tls 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut text = String::new();
    tls.read_to_string(&mut text).await.unwrap();
    assert_eq!(
        server12.next().await.unwrap(),
        Some(spiffe("ns/shop/sa/frontend"))
    );

    // Our own connector with TLS 1.2 allowed still prefers TLS 1.3.
    let both = MtlsConnector::builder(&client_creds, spiffe("ns/shop/sa/orders"))
        .tls12(true)
        .build();
    let tls = both
        .handshake(name(), tcp(server12.addr).await)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// A TLS 1.2-only rustls client that presents `creds`' certificate and trusts any server.
fn tls12_client(creds: &Credentials) -> tokio_rustls::TlsConnector {
    let material = creds.current();
    let key = material.certified_key().clone();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
    .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn sessions_are_resumed() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));

    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut tls = connector
            .handshake(name(), tcp(server.addr).await)
            .await
            .unwrap();
        // Read to the end: the session ticket arrives after the handshake.
        let mut text = String::new();
        tls.read_to_string(&mut text).await.unwrap();
        kinds.push(tls.get_ref().1.handshake_kind());
        // The resumed session still carries the client's identity.
        assert_eq!(
            server.next().await.unwrap(),
            Some(spiffe("ns/shop/sa/frontend"))
        );
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert_eq!(kinds[1], Some(rustls::HandshakeKind::Resumed), "{kinds:?}");
    assert_eq!(kinds[2], Some(rustls::HandshakeKind::Resumed), "{kinds:?}");
}

#[tokio::test]
async fn the_client_rejects_an_expired_server_certificate() {
    let ca = DevCa::new("example.org").unwrap();
    let now = common::now();
    let day = Duration::from_secs(24 * 3600);
    let expired = ca
        .issue(
            &spiffe("ns/shop/sa/orders"),
            &IssueOptions::new().valid(now - 3 * day, now - day),
        )
        .unwrap();
    let material = resilience_mtls::Material::from_pem(
        &expired.cert_pem,
        &expired.key_pem,
        ca.trust_pem(),
        now - 2 * day,
    )
    .unwrap();
    let server = HandshakeServer::spawn(MtlsAcceptor::new(&Credentials::new(material))).await;
    let connector = MtlsConnector::new(
        &credentials(&ca, "ns/shop/sa/frontend"),
        spiffe("ns/shop/sa/orders"),
    );
    let err = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), FailureReason::Expired, "{err}");
}

#[tokio::test]
async fn a_client_that_never_speaks_times_out() {
    let ca = DevCa::new("example.org").unwrap();
    let acceptor = MtlsAcceptor::builder(&credentials(&ca, "ns/shop/sa/orders"))
        .handshake_timeout(Duration::from_millis(100))
        .build();
    let mut server = HandshakeServer::spawn(acceptor).await;
    let _silent = tcp(server.addr).await;
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::Timeout, "{err}");
}

/// Handshakes once with `connector` and reads to the end, so that the session ticket that
/// follows the handshake is kept for the next one; how the handshake went.
async fn handshake_kind(
    connector: &MtlsConnector,
    server: &HandshakeServer,
) -> Option<rustls::HandshakeKind> {
    let mut tls = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap();
    read_all(&mut tls).await;
    tls.get_ref().1.handshake_kind()
}

/// A full handshake, then one that resumes its session; the server accepts both.
async fn a_session_is_resumed(connector: &MtlsConnector, server: &mut HandshakeServer) {
    handshake_kind(connector, server).await;
    assert!(server.next().await.is_ok());
    assert_eq!(
        handshake_kind(connector, server).await,
        Some(rustls::HandshakeKind::Resumed)
    );
    assert!(server.next().await.is_ok());
}

#[tokio::test]
async fn a_resumed_session_is_refused_once_the_client_certificate_has_expired() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    // A certificate that expires in two seconds (certificates count whole seconds).
    let now = common::now();
    let not_after = now + Duration::from_secs(2);
    let short = ca
        .issue(
            &spiffe("ns/shop/sa/frontend"),
            &IssueOptions::new().valid(now - Duration::from_secs(60), not_after),
        )
        .unwrap();
    let client = Credentials::new(short.material(ca.trust_pem()).unwrap());
    let connector = MtlsConnector::new(&client, spiffe("ns/shop/sa/orders"));

    assert_eq!(
        handshake_kind(&connector, &server).await,
        Some(rustls::HandshakeKind::Full)
    );
    assert!(server.next().await.is_ok());
    assert_eq!(
        handshake_kind(&connector, &server).await,
        Some(rustls::HandshakeKind::Resumed),
        "resumption works while the certificate is valid"
    );
    assert!(server.next().await.is_ok());

    // The wall clock is what certificates are checked against: wait until it has passed.
    while common::now() <= not_after + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = connect_and_read(&connector, &server).await;
    assert!(
        !result
            .as_deref()
            .is_ok_and(|text| text.starts_with("hello")),
        "a resumed session outlived its certificate: {result:?}"
    );
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::Expired, "{err}");
}

#[tokio::test]
async fn a_resumed_session_is_refused_once_its_ca_has_left_the_trust_bundle() {
    let ca = DevCa::new("example.org").unwrap();
    let other = DevCa::new("example.org").unwrap();
    let server_cert = ca.workload("ns/shop/sa/orders").unwrap();
    let server_creds = Credentials::new(server_cert.material(ca.trust_pem()).unwrap());
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let connector = MtlsConnector::new(
        &credentials(&ca, "ns/shop/sa/frontend"),
        spiffe("ns/shop/sa/orders"),
    );
    a_session_is_resumed(&connector, &mut server).await;

    // The server now trusts only the other CA (same certificate of its own).
    server_creds.store(server_cert.material(other.trust_pem()).unwrap());
    let result = connect_and_read(&connector, &server).await;
    assert!(
        !result
            .as_deref()
            .is_ok_and(|text| text.starts_with("hello")),
        "a resumed session outlived the trust in its CA: {result:?}"
    );
    let err = server.next().await.unwrap_err();
    assert_eq!(err.reason(), FailureReason::UnknownCa, "{err}");
}

/// A client that moves to a certificate of a new CA does not resume the sessions of its old
/// one: they would show the server the old certificate again, which, once the server no
/// longer trusts its CA, gets every resumption refused.
#[tokio::test]
async fn a_client_that_rotates_its_certificate_starts_its_sessions_afresh() {
    let ca = DevCa::new("example.org").unwrap();
    let next = DevCa::new("example.org").unwrap();
    let both = format!("{}{}", ca.trust_pem(), next.trust_pem());
    let server_cert = ca.workload("ns/shop/sa/orders").unwrap();
    let server_creds = Credentials::new(server_cert.material(&both).unwrap());
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let client_creds = Credentials::new(
        ca.workload("ns/shop/sa/frontend")
            .unwrap()
            .material(&both)
            .unwrap(),
    );
    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    a_session_is_resumed(&connector, &mut server).await;

    // The client moves to the next CA; then the server stops trusting the first.
    let moved = next.workload("ns/shop/sa/frontend").unwrap();
    client_creds.store(moved.material(&both).unwrap());
    server_creds.store(server_cert.material(next.trust_pem()).unwrap());
    assert_eq!(
        handshake_kind(&connector, &server).await,
        Some(rustls::HandshakeKind::Full),
        "a session of the old certificate was resumed"
    );
    assert!(
        server.next().await.is_ok(),
        "the new certificate is accepted"
    );
}

/// The tickets of a handshake made with the old certificate, read only after the rotation,
/// are not resumed with the new one's sessions.
#[tokio::test]
async fn tickets_that_come_after_a_rotation_stay_with_the_old_certificate() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    let mut before = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .unwrap();
    assert!(server.next().await.is_ok());
    // Rotated while the first connection's tickets are still unread.
    client_creds.store(
        ca.workload("ns/shop/sa/frontend")
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    let mut text = String::new();
    tokio::time::timeout(WAIT, before.read_to_string(&mut text))
        .await
        .expect("the server answers or closes")
        .unwrap();
    assert_eq!(
        handshake_kind(&connector, &server).await,
        Some(rustls::HandshakeKind::Full),
        "a ticket of the old certificate was resumed"
    );
    assert!(server.next().await.is_ok());
}

#[tokio::test]
async fn a_resumed_session_is_refused_by_the_client_once_the_servers_ca_has_left_its_trust_bundle()
{
    let ca = DevCa::new("example.org").unwrap();
    let other = DevCa::new("example.org").unwrap();
    let mut server =
        HandshakeServer::spawn(MtlsAcceptor::new(&credentials(&ca, "ns/shop/sa/orders"))).await;
    let client_cert = ca.workload("ns/shop/sa/frontend").unwrap();
    let client_creds = Credentials::new(client_cert.material(ca.trust_pem()).unwrap());
    let connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    a_session_is_resumed(&connector, &mut server).await;

    // The client now trusts only the other CA (same certificate of its own).
    client_creds.store(client_cert.material(other.trust_pem()).unwrap());
    let err = connector
        .handshake(name(), tcp(server.addr).await)
        .await
        .expect_err("a resumed session outlived the client's trust in the server's CA");
    assert_eq!(err.reason(), FailureReason::UnknownCa, "{err}");
}

/// Connects through `connector`'s `Service` side and reads what the server says, so that the
/// session ticket that follows the handshake is kept; whether the session was resumed, and the
/// server's certificate.
async fn dial(
    connector: &mut MtlsConnector,
    server: &HandshakeServer,
) -> (bool, Option<CertificateDer<'static>>) {
    let uri: http::Uri = format!("http://{}", server.addr).parse().unwrap();
    let connection = tower::ServiceExt::oneshot(connector, uri)
        .await
        .expect("connected");
    let seen = (
        connection.info().resumed(),
        connection.info().peer_certificate().cloned(),
    );
    let mut text = String::new();
    tokio::time::timeout(WAIT, connection.into_inner().read_to_string(&mut text))
        .await
        .expect("the server answers or closes")
        .unwrap();
    seen
}

#[tokio::test]
async fn a_connector_dials_again_with_a_full_handshake_when_a_resumed_session_no_longer_passes() {
    let ca = DevCa::new("example.org").unwrap();
    let next = DevCa::new("example.org").unwrap();
    // The server trusts clients of the first CA throughout; its own certificate moves to the
    // next CA, as the client's trust does.
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let client_cert = ca.workload("ns/shop/sa/frontend").unwrap();
    let client_creds = Credentials::new(client_cert.material(ca.trust_pem()).unwrap());
    let mut connector = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    assert!(!dial(&mut connector, &server).await.0);
    assert!(server.next().await.is_ok());
    assert!(
        dial(&mut connector, &server).await.0,
        "sessions are resumed"
    );
    assert!(server.next().await.is_ok());

    let moved = next.workload("ns/shop/sa/orders").unwrap();
    server_creds.store(moved.material(ca.trust_pem()).unwrap());
    client_creds.store(client_cert.material(next.trust_pem()).unwrap());
    let (resumed, certificate) = dial(&mut connector, &server).await;
    assert!(!resumed, "the stale session was used again");
    assert_eq!(
        certificate,
        Some(CertificateDer::from_pem_slice(moved.cert_pem.as_bytes()).unwrap()),
        "the server's new certificate"
    );
}
