//! Rotation: files replaced under continuous requests; no request fails, new connections see
//! the new certificate, invalid files are rejected and the old material kept.

mod common;

use common::{HttpServer, WAIT, client, credentials, get, paths, spiffe, tempdir, unpooled_client};
use http::StatusCode;
use resilience_mtls::{
    Credentials, MaterialPaths, MtlsAcceptor, MtlsConnector, Rotation, RotationStatus, TlsInfo,
    dev_ca::{DevCa, IssueOptions, write_atomic},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;

fn leaf(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A CA, and the files and credentials of `orders` under a new directory (kept alive by the
/// returned guard).
fn orders_on_disk() -> (tempfile::TempDir, DevCa, MaterialPaths, Credentials) {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "orders");
    ca.workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, ca.trust_pem())
        .unwrap();
    let creds = Credentials::load(&files).unwrap();
    (dir, ca, files, creds)
}

/// Waits, within [`WAIT`], until `status` satisfies `f`.
async fn wait_for(
    status: &mut watch::Receiver<RotationStatus>,
    f: impl FnMut(&RotationStatus) -> bool,
) -> RotationStatus {
    tokio::time::timeout(WAIT, status.wait_for(f))
        .await
        .expect("the rotation task reacts within the wait")
        .expect("the rotation task is running")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_continuous_requests_fails_no_request() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "orders");
    let first = ca.workload("ns/shop/sa/orders").unwrap();
    first.write(&files, ca.trust_pem()).unwrap();

    let server_creds = Credentials::load(&files).unwrap();
    let rotation = Rotation::new(files.clone())
        .poll_interval(Duration::from_millis(200))
        .spawn(&server_creds);
    assert!(rotation.is_watching_files());
    let mut status = rotation.status();
    let server = HttpServer::spawn(MtlsAcceptor::new(&server_creds), None).await;
    let url = server.url();

    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let expected = spiffe("ns/shop/sa/orders");

    // Two request loops until told to stop (and never more than 20 000 requests or 60 s):
    // one over pooled keep-alive connections (which live through the rotations), one with a
    // new connection, so a new handshake, for every request.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for pooled in [true, false] {
        let connector = MtlsConnector::new(&client_creds, expected.clone());
        let http = if pooled {
            client(connector)
        } else {
            unpooled_client(connector)
        };
        let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut certs_seen: Vec<CertificateDer<'static>> = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                    break;
                }
                match get(&http, &url).await {
                    Ok((parts, _)) if parts.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let info = parts.extensions.get::<TlsInfo>().unwrap();
                        let cert = info.peer_certificate().unwrap();
                        if !certs_seen.contains(cert) {
                            certs_seen.push(cert.clone());
                        }
                    }
                    Ok((parts, _)) => failures.push(format!("status {}", parts.status)),
                    Err(err) => failures.push(err),
                }
            }
            (pooled, failures, certs_seen)
        }));
    }

    for round in 1..=4u64 {
        // Some requests before each rotation.
        let before = ok.load(Ordering::Relaxed);
        tokio::time::timeout(WAIT, async {
            while ok.load(Ordering::Relaxed) < before + 20 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("requests flow");

        let next = ca.issue(&expected, &IssueOptions::new()).unwrap();
        if round == 2 {
            // A writer that replaces the files one by one, in place: for a moment the
            // certificate and key do not match, and that state must be rejected, not used.
            std::fs::write(&files.cert, &next.cert_pem).unwrap();
            std::fs::write(&files.key, &next.key_pem).unwrap();
        } else {
            write_atomic(&files.key, next.key_pem.as_bytes()).unwrap();
            write_atomic(&files.cert, next.cert_pem.as_bytes()).unwrap();
        }
        wait_for(&mut status, |s| s.reloads >= round).await;
        assert_eq!(server_creds.generation(), round);

        // A new connection (a new client: no session to resume) sees the new certificate.
        let fresh = client(MtlsConnector::new(&client_creds, expected.clone()));
        let (parts, _) = get(&fresh, &url).await.unwrap();
        let info = parts.extensions.get::<TlsInfo>().unwrap();
        assert_eq!(
            info.peer_certificate(),
            Some(&leaf(&next.cert_pem)),
            "round {round}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for handle in loops {
        let (pooled, failed, certs_seen) = handle.await.unwrap();
        failures.extend(failed);
        if pooled {
            // The live (h2, keep-alive) connection was never dropped: it still speaks to the
            // certificate of its original handshake.
            assert_eq!(certs_seen, [leaf(&first.cert_pem)]);
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) >= 80);
}

#[tokio::test]
async fn invalid_new_files_are_rejected_and_the_old_material_kept() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "orders");
    let first = ca.workload("ns/shop/sa/orders").unwrap();
    first.write(&files, ca.trust_pem()).unwrap();
    let creds = Credentials::load(&files).unwrap();
    let rotation = Rotation::new(files.clone())
        .poll_interval(Duration::from_millis(100))
        .spawn(&creds);
    let mut status = rotation.status();

    // Garbage in the certificate file.
    write_atomic(&files.cert, b"not a certificate\n").unwrap();
    let seen = wait_for(&mut status, |s| s.rejections >= 1).await;
    let error = seen.last_error.unwrap();
    assert!(error.contains("orders.pem"), "{error}");
    assert_eq!(creds.generation(), 0);
    assert_eq!(creds.current().chain()[0], leaf(&first.cert_pem));

    // A key that belongs to another certificate.
    let other = ca.workload("ns/shop/sa/orders").unwrap();
    write_atomic(&files.cert, first.cert_pem.as_bytes()).unwrap();
    write_atomic(&files.key, other.key_pem.as_bytes()).unwrap();
    let seen = wait_for(&mut status, |s| s.rejections >= 2).await;
    assert!(seen.last_error.unwrap().contains("does not match"));
    assert_eq!(creds.generation(), 0);

    // A missing file.
    std::fs::remove_file(&files.trust).unwrap();
    let seen = wait_for(&mut status, |s| s.rejections >= 3).await;
    assert!(seen.last_error.unwrap().contains("ca.pem"));
    assert_eq!(creds.generation(), 0);

    // Good files again: taken.
    other.write(&files, ca.trust_pem()).unwrap();
    wait_for(&mut status, |s| s.reloads >= 1).await;
    assert_eq!(creds.generation(), 1);
    assert_eq!(creds.current().chain()[0], leaf(&other.cert_pem));
}

#[tokio::test]
async fn polling_alone_sees_changes() {
    let (_dir, ca, files, creds) = orders_on_disk();
    let rotation = Rotation::new(files.clone())
        .watch_files(false)
        .poll_interval(Duration::from_millis(50))
        .spawn(&creds);
    assert!(!rotation.is_watching_files());
    let mut generation = creds.subscribe();

    let next = ca.workload("ns/shop/sa/payments").unwrap();
    next.write(&files, ca.trust_pem()).unwrap();
    tokio::time::timeout(WAIT, generation.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.identity(), spiffe("ns/shop/sa/payments"));
}

/// What a rotation of `files` into `creds`, polling every 20 ms, has done after three checks.
async fn after_three_checks(files: &MaterialPaths, creds: &Credentials) -> RotationStatus {
    let rotation = Rotation::new(files.clone())
        .watch_files(false)
        .poll_interval(Duration::from_millis(20))
        .spawn(creds);
    wait_for(&mut rotation.status(), |s| s.checks >= 3).await
}

/// Files rewritten between loading the credentials and starting their rotation are loaded at
/// the first check, not left until they change again (cert-manager's next write may come
/// after the old certificate has expired).
#[tokio::test]
async fn files_rewritten_before_the_rotation_starts_are_loaded_at_its_first_check() {
    let (_dir, ca, files, creds) = orders_on_disk();
    let next = ca.workload("ns/shop/sa/payments").unwrap();
    next.write(&files, ca.trust_pem()).unwrap();
    let status = after_three_checks(&files, &creds).await;
    assert_eq!(status.reloads, 1, "{status:?}");
    assert_eq!(creds.identity(), spiffe("ns/shop/sa/payments"));
}

/// Files that are what the credentials were loaded from are not loaded again.
#[tokio::test]
async fn files_unchanged_since_the_credentials_were_loaded_are_not_loaded_again() {
    let (_dir, _ca, files, creds) = orders_on_disk();
    let status = after_three_checks(&files, &creds).await;
    assert_eq!(status.reloads, 0, "{status:?}");
    assert_eq!(creds.generation(), 0);
}

#[tokio::test]
async fn a_new_trust_bundle_applies_to_new_handshakes() {
    let dir = tempdir();
    let old_ca = DevCa::new("example.org").unwrap();
    let new_ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "orders");
    old_ca
        .workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, old_ca.trust_pem())
        .unwrap();
    let server_creds = Credentials::load(&files).unwrap();
    let rotation = Rotation::new(files.clone())
        .poll_interval(Duration::from_millis(100))
        .spawn(&server_creds);
    let mut status = rotation.status();
    let server = HttpServer::spawn(MtlsAcceptor::new(&server_creds), None).await;

    // A client from the new CA that trusts both CAs.
    let both = format!("{}{}", old_ca.trust_pem(), new_ca.trust_pem());
    let client_creds = Credentials::new(
        new_ca
            .workload("ns/shop/sa/frontend")
            .unwrap()
            .material(&both)
            .unwrap(),
    );
    let connect = || {
        client(MtlsConnector::new(
            &client_creds,
            spiffe("ns/shop/sa/orders"),
        ))
    };
    assert!(get(&connect(), &server.url()).await.is_err());

    // The server moves to the new CA's certificate and trusts both.
    let cert = new_ca.workload("ns/shop/sa/orders").unwrap();
    let mut moved = files.clone();
    moved.trust = dir.path().join("ca.pem");
    cert.write(&moved, &both).unwrap();
    wait_for(&mut status, |s| s.reloads >= 1).await;
    let (parts, body) = get(&connect(), &server.url()).await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "spiffe://example.org/ns/shop/sa/frontend");
}

#[tokio::test]
async fn a_certificate_refused_as_not_yet_valid_is_taken_once_it_is() {
    let (_dir, ca, files, creds) = orders_on_disk();
    let rotation = Rotation::new(files.clone())
        .watch_files(false)
        .poll_interval(Duration::from_millis(100))
        .spawn(&creds);
    let mut status = rotation.status();

    // Issued by a CA whose clock runs two seconds ahead of this one (certificates count whole
    // seconds, so it is refused now and valid in at most three).
    let now = common::now();
    let ahead = ca
        .issue(
            &spiffe("ns/shop/sa/payments"),
            &IssueOptions::new().valid(
                now + Duration::from_secs(2),
                now + Duration::from_secs(24 * 3600),
            ),
        )
        .unwrap();
    ahead.write(&files, ca.trust_pem()).unwrap();
    let seen = wait_for(&mut status, |s| s.rejections >= 1).await;
    assert!(
        seen.last_error.unwrap().contains("not valid before"),
        "refused as not valid yet"
    );
    assert_eq!(creds.generation(), 0);

    // The same files, unchanged: taken once their time has come.
    wait_for(&mut status, |s| s.reloads >= 1).await;
    assert_eq!(creds.identity(), spiffe("ns/shop/sa/payments"));
}
