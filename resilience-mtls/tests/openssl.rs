//! Interop with a TLS stack we did not write: `openssl s_client` against our acceptor, with a
//! client certificate and without one. Fails, never skips, when `openssl` is missing.

mod common;

use common::{HandshakeServer, WAIT, paths, spiffe, tempdir};
use resilience_mtls::{Credentials, FailureReason, MtlsAcceptor, dev_ca::DevCa};
use std::{net::SocketAddr, path::Path, process::Stdio};

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

async fn s_client(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Output {
    let connect = addr.to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        "ca.pem",
        "-verify_return_error",
        "-brief",
        // Keep reading after our stdin (empty) ends, until the server closes.
        "-ign_eof",
    ];
    args.extend_from_slice(extra);
    let child = tokio::process::Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("the `openssl` command is required for the interop tests and is missing: {e}")
        });
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("openssl s_client finishes within the wait")
        .unwrap();
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A server with a dev CA certificate, and a client certificate for openssl in `dir`.
fn setup(dir: &Path) -> (Credentials, DevCa) {
    let ca = DevCa::new("example.org").unwrap();
    let server = Credentials::new(
        ca.workload("ns/shop/sa/orders")
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    ca.workload("ns/ops/sa/openssl")
        .unwrap()
        .write(&paths(dir, "client"), ca.trust_pem())
        .unwrap();
    (server, ca)
}

#[tokio::test]
async fn openssl_s_client_with_a_certificate_completes_mutual_tls() {
    let dir = tempdir();
    let (creds, _ca) = setup(dir.path());
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&creds)).await;

    let out = s_client(
        dir.path(),
        server.addr,
        &[
            "-cert",
            "client.pem",
            "-key",
            "client-key.pem",
            "-alpn",
            "h2,http/1.1",
        ],
    )
    .await;
    assert_eq!(
        server.next().await.expect("handshake"),
        Some(spiffe("ns/ops/sa/openssl")),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("hello spiffe://example.org/ns/ops/sa/openssl"),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("TLSv1.3"), "{}", out.stderr);
    assert!(out.stderr.contains("Verification: OK"), "{}", out.stderr);
    assert!(out.status.success(), "{}", out.stderr);
}

#[tokio::test]
async fn openssl_s_client_without_a_certificate_is_rejected() {
    let dir = tempdir();
    let (creds, _ca) = setup(dir.path());
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&creds)).await;

    let out = s_client(dir.path(), server.addr, &[]).await;
    let err = server.next().await.expect_err("the server must refuse it");
    assert_eq!(err.reason(), FailureReason::NoClientCertificate, "{err}");
    assert!(!out.stdout.contains("hello"), "{}", out.stdout);
    assert!(
        out.stderr.to_lowercase().contains("alert"),
        "openssl should report the server's alert: {}",
        out.stderr
    );
}

#[tokio::test]
async fn openssl_s_client_speaks_tls12_only_when_allowed() {
    let dir = tempdir();
    let (creds, _ca) = setup(dir.path());
    let cert = ["-cert", "client.pem", "-key", "client-key.pem", "-tls1_2"];

    let mut strict13 = HandshakeServer::spawn(MtlsAcceptor::new(&creds)).await;
    let out = s_client(dir.path(), strict13.addr, &cert).await;
    let err = strict13
        .next()
        .await
        .expect_err("tls 1.2 is not allowed by default");
    assert_eq!(err.reason(), FailureReason::Incompatible, "{err}");
    assert!(!out.status.success());

    let mut with12 =
        HandshakeServer::spawn(MtlsAcceptor::builder(&creds).tls12(true).build()).await;
    let out = s_client(dir.path(), with12.addr, &cert).await;
    assert_eq!(
        with12.next().await.expect("tls 1.2 handshake"),
        Some(spiffe("ns/ops/sa/openssl")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("TLSv1.2"), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("hello spiffe://example.org/ns/ops/sa/openssl")
    );
}
