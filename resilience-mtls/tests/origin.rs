//! [`OriginConnector`] over real sockets: TLS to a server outside the mesh, our client
//! certificate for a server that asks for one, and its files read again when they change.

mod common;

use common::{HandshakeServer, WAIT, now, tempdir};
use hyper_util::client::legacy::connect::HttpConnector;
use resilience_mtls::{
    Credentials, Identity, Material, MaterialError, MtlsAcceptor, OriginConnector, OriginPaths,
    dev_ca::{DevCa, IssueOptions, IssuedCert, write_atomic, write_private},
};
use rustls_pki_types::ServerName;
use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    task::Poll,
    time::Duration,
};
use tokio::io::AsyncReadExt;
use tower::{Service, ServiceExt};

const API: &str = "api.example.test";

/// A server for [`API`] with a certificate of `server_ca`, asking every client for a
/// certificate of `client_ca`.
async fn server(server_ca: &DevCa, client_ca: &DevCa) -> HandshakeServer {
    let issued = server_ca
        .issue(&Identity::parse(API).unwrap(), &IssueOptions::default())
        .unwrap();
    let material = Material::from_pem(
        &issued.cert_pem,
        &issued.key_pem,
        client_ca.trust_pem(),
        now(),
    )
    .unwrap();
    HandshakeServer::spawn(MtlsAcceptor::new(&Credentials::new(material))).await
}

fn client_cert(ca: &DevCa, name: &str) -> IssuedCert {
    ca.issue(&Identity::parse(name).unwrap(), &IssueOptions::default())
        .unwrap()
}

/// The files of a connector in `dir`: `trust` as the trust bundle, `client` as our
/// certificate and key.
fn write(dir: &Path, trust: &str, client: Option<&IssuedCert>) -> OriginPaths {
    let paths = OriginPaths::new(dir.join("trust.pem"));
    write_atomic(&paths.trust, trust.as_bytes()).unwrap();
    let Some(client) = client else {
        return paths;
    };
    let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
    write_atomic(&cert, client.cert_pem.as_bytes()).unwrap();
    write_private(&key, client.key_pem.as_bytes()).unwrap();
    paths.client_certificate(cert, key)
}

fn connector(paths: OriginPaths) -> OriginConnector<HttpConnector> {
    OriginConnector::from_files(paths, ServerName::try_from(API).unwrap())
        .unwrap()
        .wrap(HttpConnector::new())
}

/// A server for [`API`] with a certificate of `server_ca` that asks every client for one of
/// `client_ca`, and a directory for a connector's files.
struct Setup {
    server_ca: DevCa,
    client_ca: DevCa,
    server: HandshakeServer,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let (server_ca, client_ca) = (
            DevCa::new("api.test").unwrap(),
            DevCa::new("us.test").unwrap(),
        );
        let server = server(&server_ca, &client_ca).await;
        Self {
            server_ca,
            client_ca,
            server,
            dir: tempdir(),
        }
    }

    /// Writes the connector's files: the server's CA as the bundle and, with `client`, a
    /// certificate of the client CA for that name.
    fn write(&self, client: Option<&str>) -> OriginPaths {
        let issued = client.map(|name| client_cert(&self.client_ca, name));
        write(self.dir.path(), self.server_ca.trust_pem(), issued.as_ref())
    }
}

/// What the server writes to a connection `connector` makes to it, or why there is none.
async fn hello(connector: &mut OriginConnector<HttpConnector>, server: SocketAddr) -> String {
    said(connector, server).await.0
}

/// [`hello`], and whether the connection resumed a session.
async fn said(
    connector: &mut OriginConnector<HttpConnector>,
    server: SocketAddr,
) -> (String, bool) {
    let uri = format!("http://{server}").parse().unwrap();
    let connecting = async { connector.ready().await?.call(uri).await };
    let connection = match tokio::time::timeout(WAIT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return (format!("error: {error}"), false),
        Err(_) => panic!("no connection within the wait"),
    };
    let resumed = connection.info().resumed();
    let mut text = String::new();
    let mut stream = connection.into_inner();
    match tokio::time::timeout(WAIT, stream.read_to_string(&mut text)).await {
        Ok(Ok(_)) => (text, resumed),
        Ok(Err(error)) => (format!("error: {error}"), resumed),
        Err(_) => panic!("the server neither wrote nor closed within the wait"),
    }
}

#[tokio::test]
async fn presents_its_client_certificate_to_a_server_that_asks() {
    let mut setup = Setup::new().await;
    let mut connector = connector(setup.write(Some("orders.us.test")));

    assert_eq!(
        hello(&mut connector, setup.server.addr).await,
        "hello orders.us.test\n"
    );
    assert_eq!(
        setup.server.next().await.unwrap(),
        Some(Identity::parse("orders.us.test").unwrap())
    );
}

#[tokio::test]
async fn without_a_client_certificate_a_server_that_asks_refuses() {
    let mut setup = Setup::new().await;
    let mut connector = connector(setup.write(None));

    let said = hello(&mut connector, setup.server.addr).await;
    assert!(said.starts_with("error: "), "{said}");
    let refused = setup.server.next().await.unwrap_err();
    assert_eq!(refused.reason().as_str(), "no-client-certificate");
}

#[tokio::test]
async fn changed_files_are_read_again_before_the_next_connection() {
    let setup = Setup::new().await;
    let server = &setup.server;
    let paths = setup.write(Some("first.us.test"));
    let mut connector = connector(paths.clone());
    let mut clone = connector.clone();
    assert_eq!(
        hello(&mut connector, server.addr).await,
        "hello first.us.test\n"
    );

    // A rotated client certificate: used from the next connection on, by every clone.
    setup.write(Some("second.us.test"));
    assert_eq!(
        hello(&mut clone, server.addr).await,
        "hello second.us.test\n"
    );
    let resumed = said(&mut connector, server.addr).await;
    assert_eq!(resumed, ("hello second.us.test\n".to_owned(), true));

    // A trust bundle the server does not chain to: the server is refused (the session above
    // is not resumed past the new bundle: files read again make a TLS config, and a session
    // store, of their own), then accepted again once the bundle is back.
    let other = DevCa::new("other.test").unwrap();
    write_atomic(&paths.trust, other.trust_pem().as_bytes()).unwrap();
    let said = hello(&mut connector, server.addr).await;
    assert!(
        said.starts_with("error: tls handshake failed (unknown-ca)"),
        "{said}"
    );
    write_atomic(&paths.trust, setup.server_ca.trust_pem().as_bytes()).unwrap();
    assert_eq!(
        hello(&mut connector, server.addr).await,
        "hello second.us.test\n"
    );
}

#[tokio::test]
async fn files_that_do_not_load_leave_the_ones_in_use() {
    let setup = Setup::new().await;
    let server = &setup.server;
    let paths = setup.write(Some("first.us.test"));
    let mut connector = connector(paths.clone());
    let (cert, key) = paths.client_certificate.clone().unwrap();

    // The new certificate written, its key not yet: the pair is refused, the old one kept.
    let second = client_cert(&setup.client_ca, "second.us.test");
    write_atomic(&cert, second.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        hello(&mut connector, server.addr).await,
        "hello first.us.test\n"
    );
    // A trust bundle cut off part-way is refused too.
    write_atomic(&paths.trust, b"-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    assert_eq!(
        hello(&mut connector, server.addr).await,
        "hello first.us.test\n"
    );

    // Once the key and the bundle are written, the new pair is used.
    write_private(&key, second.key_pem.as_bytes()).unwrap();
    write_atomic(&paths.trust, setup.server_ca.trust_pem().as_bytes()).unwrap();
    assert_eq!(
        hello(&mut connector, server.addr).await,
        "hello second.us.test\n"
    );
}

#[test]
fn load_errors_name_the_file_at_fault() {
    let (server_ca, client_ca) = (
        DevCa::new("api.test").unwrap(),
        DevCa::new("us.test").unwrap(),
    );
    let dir = tempdir();
    let name = || ServerName::try_from(API).unwrap();
    let load = |paths: OriginPaths| OriginConnector::from_files(paths, name()).unwrap_err();
    let at = |file: &str| -> PathBuf { dir.path().join(file) };

    let missing = OriginPaths::new(at("nowhere.pem"));
    assert!(matches!(load(missing), MaterialError::Read { path, .. } if path == at("nowhere.pem")));

    let paths = write(
        dir.path(),
        server_ca.trust_pem(),
        Some(&client_cert(&client_ca, "a.us.test")),
    );
    let (cert, key) = paths.client_certificate.clone().unwrap();
    let other = client_cert(&client_ca, "b.us.test");
    write_private(&key, other.key_pem.as_bytes()).unwrap();
    assert!(matches!(
        load(paths.clone()),
        MaterialError::KeyMismatch { cert: c, key: k } if c == cert && k == key
    ));

    let day = Duration::from_secs(86_400);
    let expired = client_ca
        .issue(
            &Identity::parse("old.us.test").unwrap(),
            &IssueOptions::default().valid(now() - 3 * day, now() - day),
        )
        .unwrap();
    let paths = write(dir.path(), server_ca.trust_pem(), Some(&expired));
    assert!(matches!(load(paths), MaterialError::Expired { path, .. } if path == cert));

    write_atomic(&at("trust.pem"), b"not a certificate").unwrap();
    let paths = OriginPaths::new(at("trust.pem"));
    assert!(
        matches!(load(paths), MaterialError::NoCertificate { path } if path == at("trust.pem"))
    );
}

#[tokio::test]
async fn copies_with_other_protocols_read_changed_files_too() {
    let setup = Setup::new().await;
    let server = &setup.server;
    let paths = setup.write(Some("first.us.test"));
    let origin = OriginConnector::from_files(paths, ServerName::try_from(API).unwrap()).unwrap();
    // As a proxy makes them: one copy for each protocol it offers, from one connector.
    let mut h2 = origin.clone().alpn([&b"h2"[..]]).wrap(HttpConnector::new());
    let mut http1 = origin.alpn([&b"http/1.1"[..]]).wrap(HttpConnector::new());

    setup.write(Some("second.us.test"));
    assert_eq!(hello(&mut h2, server.addr).await, "hello second.us.test\n");
    assert_eq!(
        hello(&mut http1, server.addr).await,
        "hello second.us.test\n"
    );
}

#[tokio::test]
async fn a_connection_given_up_while_the_files_are_read_loses_nothing() {
    let setup = Setup::new().await;
    let server = &setup.server;
    let mut connector = connector(setup.write(Some("first.us.test")));

    setup.write(Some("second.us.test"));
    // Polled once: the read of the changed files starts; then the caller gives up. (Once,
    // exactly: a timeout of zero fires at the timer's next tick, by which time a handshake on
    // 127.0.0.1 may be over.)
    let uri: http::Uri = format!("http://{}", server.addr).parse().unwrap();
    {
        let mut given_up = std::pin::pin!(connector.call(uri));
        let first =
            std::future::poll_fn(|cx| Poll::Ready(given_up.as_mut().poll(cx).map(|_| ()))).await;
        assert!(
            first.is_pending(),
            "the connection was not made at its first poll"
        );
    }

    // The read goes on without it: a later connection presents the new certificate (one made
    // while the read is still under way may present the old one).
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let said = hello(&mut connector, server.addr).await;
            if said != "hello first.us.test\n" {
                return said;
            }
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(waited.await.unwrap(), "hello second.us.test\n");
}
