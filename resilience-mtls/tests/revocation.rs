//! Certificate revocation lists over real sockets on 127.0.0.1: a revoked peer is refused on
//! either side of a handshake, also when it resumes a session, and a list rewritten applies to
//! the next handshake.

mod common;

use common::{HandshakeServer, WAIT, credentials, paths, read_all, spiffe, tcp, tempdir};
use resilience_mtls::{
    Credentials, FailureReason, Material, MaterialError, MaterialPaths, MtlsAcceptor,
    MtlsConnector, Rotation,
    dev_ca::{DevCa, IssuedCert},
};
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use std::{path::Path, time::Duration};

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

fn write(path: &Path, contents: &str) {
    resilience_mtls::dev_ca::write_atomic(path, contents.as_bytes()).unwrap();
}

/// The workload `path` of `ca`, written to `dir` with the CRL file `crl.pem`, which holds
/// `crl`.
fn with_crl(dir: &Path, ca: &DevCa, path: &str, crl: &str) -> (MaterialPaths, IssuedCert) {
    let name = path.rsplit('/').next().unwrap();
    let files = paths(dir, name).crl(dir.join("crl.pem"));
    let issued = ca.workload(path).unwrap();
    issued.write(&files, ca.trust_pem()).unwrap();
    write(&files.crls[0], crl);
    (files, issued)
}

/// What the server made of a client's handshake: the reason it refused it, if it did.
async fn refusal(server: &mut HandshakeServer, client: &Credentials) -> Option<FailureReason> {
    let connector = MtlsConnector::new(client, spiffe("ns/shop/sa/orders"));
    let _ = connector
        .handshake(localhost(), tcp(server.addr).await)
        .await;
    server.next().await.err().map(|e| e.reason())
}

#[tokio::test]
async fn a_revoked_client_is_refused_and_the_others_get_in() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let revoked = ca.workload("ns/shop/sa/frontend").unwrap();
    let crl = ca.crl(&[&revoked.cert_pem]).unwrap();
    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", &crl);
    let server = Credentials::load(&files).unwrap();
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let client = Credentials::new(revoked.material(ca.trust_pem()).unwrap());
    assert_eq!(
        refusal(&mut server, &client).await,
        Some(FailureReason::Revoked)
    );
    let other = credentials(&ca, "ns/shop/sa/frontend");
    assert_eq!(refusal(&mut server, &other).await, None);
}

#[tokio::test]
async fn a_client_refuses_a_revoked_server() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let server_cert = ca.workload("ns/shop/sa/orders").unwrap();
    let crl = ca.crl(&[&server_cert.cert_pem]).unwrap();
    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/frontend", &crl);
    let client = Credentials::load(&files).unwrap();
    let server = Credentials::new(server_cert.material(ca.trust_pem()).unwrap());
    let server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let connector = MtlsConnector::new(&client, spiffe("ns/shop/sa/orders"));
    let error = connector
        .handshake(localhost(), tcp(server.addr).await)
        .await
        .expect_err("a revoked server is refused");
    assert_eq!(error.reason(), FailureReason::Revoked);

    // Another certificate of the same server's, not revoked, gets through.
    let renewed = credentials(&ca, "ns/shop/sa/orders");
    let server = HandshakeServer::spawn(MtlsAcceptor::new(&renewed)).await;
    connector
        .handshake(localhost(), tcp(server.addr).await)
        .await
        .expect("a server that is not revoked");
}

/// A revocation list rewritten applies from the next handshake, and a session resumed with a
/// ticket from before it is refused too: rustls does not check a resumed session's chain.
#[tokio::test]
async fn a_list_rewritten_revokes_from_the_next_handshake_even_a_resumed_one() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", &ca.crl(&[]).unwrap());
    let server = Credentials::load(&files).unwrap();
    let _rotation = Rotation::new(files.clone())
        .poll_interval(Duration::from_millis(50))
        .spawn(&server);
    let mut server_tls = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let frontend = ca.workload("ns/shop/sa/frontend").unwrap();
    let client = Credentials::new(frontend.material(ca.trust_pem()).unwrap());
    let connector = MtlsConnector::new(&client, spiffe("ns/shop/sa/orders"));
    let mut tls = connector
        .handshake(localhost(), tcp(server_tls.addr).await)
        .await
        .unwrap();
    read_all(&mut tls).await;
    assert_eq!(
        server_tls.next().await.unwrap(),
        Some(spiffe("ns/shop/sa/frontend"))
    );

    write(&files.crls[0], &ca.crl(&[&frontend.cert_pem]).unwrap());
    let mut generation = server.subscribe();
    tokio::time::timeout(WAIT, generation.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();

    // The client resumes (its side of the handshake completes), and the server refuses.
    let resumed = connector
        .handshake(localhost(), tcp(server_tls.addr).await)
        .await
        .expect("the client's side of a resumption completes");
    assert_eq!(
        resumed.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    let refused = server_tls
        .next()
        .await
        .expect_err("a revoked client resumed");
    assert_eq!(refused.reason(), FailureReason::Revoked);
}

/// A list of one CA's leaves the peers of another CA the bundle trusts alone.
#[tokio::test]
async fn a_list_of_one_ca_leaves_another_cas_peers_alone() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let other = DevCa::new("other.org").unwrap();
    let files = paths(dir.path(), "orders").crl(dir.path().join("crl.pem"));
    ca.workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, &format!("{}{}", ca.trust_pem(), other.trust_pem()))
        .unwrap();
    let stranger = other.workload("ns/x/sa/y").unwrap();
    write(&files.crls[0], &other.crl(&[&stranger.cert_pem]).unwrap());
    let server = Credentials::load(&files).unwrap();
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    assert_eq!(
        refusal(&mut server, &credentials(&ca, "ns/shop/sa/frontend")).await,
        None
    );
    let stranger = Credentials::new(stranger.material(ca.trust_pem()).unwrap());
    assert_eq!(
        refusal(&mut server, &stranger).await,
        Some(FailureReason::Revoked)
    );
}

/// A list past its next update still applies, and says so.
#[tokio::test]
async fn a_list_past_its_next_update_still_revokes() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let revoked = ca.workload("ns/shop/sa/frontend").unwrap();
    let a_day_ago = common::now() - Duration::from_secs(24 * 3600);
    let crl = ca.crl_until(&[&revoked.cert_pem], a_day_ago).unwrap();
    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", &crl);
    let server = Credentials::load(&files).unwrap();
    let list = server.current().revocation_lists().next().cloned().unwrap();
    assert!(list.is_stale(common::now()), "{list:?}");
    assert!(list.issuer().contains("example.org"), "{list:?}");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;
    let client = Credentials::new(revoked.material(ca.trust_pem()).unwrap());
    assert_eq!(
        refusal(&mut server, &client).await,
        Some(FailureReason::Revoked)
    );
}

#[test]
fn a_file_that_holds_no_usable_list_is_named() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let load = |crl: &str| {
        let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", crl);
        Material::load(&files)
    };
    let error = load(ca.trust_pem()).unwrap_err();
    assert!(
        matches!(&error, MaterialError::Crl { path, .. } if path.ends_with("crl.pem")),
        "{error}"
    );
    assert!(error.to_string().contains("no `X509 CRL` block"), "{error}");

    let garbage = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    let error = load(garbage).unwrap_err().to_string();
    assert!(
        error.contains("crl.pem") && error.contains("list 1 cannot be read"),
        "{error}"
    );

    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", &ca.crl(&[]).unwrap());
    let missing = Material::load(&files.clone().crl(dir.path().join("nope.pem"))).unwrap_err();
    assert!(
        matches!(&missing, MaterialError::Read { path, .. } if path.ends_with("nope.pem")),
        "{missing}"
    );
    assert!(Material::load(&files).is_ok());
}

/// An intermediate CA revoked by its root's list: every certificate under it is refused.
#[tokio::test]
async fn a_revoked_intermediate_takes_its_leaves_with_it() {
    let dir = tempdir();
    let root = DevCa::new("example.org").unwrap();
    let intermediate = root.intermediate("shop").unwrap();
    let crl = root.crl(&[intermediate.cert_pem()]).unwrap();
    let (files, _) = with_crl(dir.path(), &root, "ns/shop/sa/orders", &crl);
    let server = Credentials::load(&files).unwrap();
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let under = intermediate.workload("ns/shop/sa/frontend").unwrap();
    let under = Credentials::new(under.material(root.trust_pem()).unwrap());
    assert_eq!(
        refusal(&mut server, &under).await,
        Some(FailureReason::Revoked)
    );
    let direct = credentials(&root, "ns/shop/sa/frontend");
    assert_eq!(refusal(&mut server, &direct).await, None);
}

/// webpki takes the first list of a name: two lists of one name, or a list of a name two
/// trusted CAs of different keys share, are refused at load rather than refusing one CA's
/// peers for the other's list.
#[test]
fn lists_that_could_be_taken_for_another_cas_are_refused() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let twin = DevCa::new("example.org").unwrap(); // the same name, another key
    let (files, _) = with_crl(dir.path(), &ca, "ns/shop/sa/orders", &ca.crl(&[]).unwrap());
    let second = dir.path().join("second.pem");
    write(&second, &twin.crl(&[]).unwrap());
    let error = Material::load(&files.clone().crl(&second))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("second.pem") && error.contains("has the issuer of list 1 of"),
        "{error}"
    );

    write(
        &files.trust,
        &format!("{}{}", ca.trust_pem(), twin.trust_pem()),
    );
    let error = Material::load(&files).unwrap_err().to_string();
    assert!(
        error.contains("crl.pem") && error.contains("two trusted CAs of different keys share"),
        "{error}"
    );
}

/// A federated domain's list revokes that domain's peers, and leaves ours alone.
#[tokio::test]
async fn a_federated_domains_list_applies_to_its_peers() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let partner = DevCa::new("partner.example").unwrap();
    let revoked = partner.workload("ns/pay/sa/api").unwrap();
    let bundle = dir.path().join("partner-bundle.pem");
    write(&bundle, partner.trust_pem());
    let (files, _) = with_crl(
        dir.path(),
        &ca,
        "ns/shop/sa/orders",
        &partner.crl(&[&revoked.cert_pem]).unwrap(),
    );
    let server = Credentials::load(&files.trust_domain("partner.example", &bundle)).unwrap();
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let revoked = Credentials::new(revoked.material(ca.trust_pem()).unwrap());
    assert_eq!(
        refusal(&mut server, &revoked).await,
        Some(FailureReason::Revoked)
    );
    let other = partner.workload("ns/pay/sa/other").unwrap();
    let other = Credentials::new(other.material(ca.trust_pem()).unwrap());
    assert_eq!(refusal(&mut server, &other).await, None);
    assert_eq!(
        refusal(&mut server, &credentials(&ca, "ns/shop/sa/frontend")).await,
        None
    );
}
