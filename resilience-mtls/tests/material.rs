//! Loading certificate material: clear errors naming the file for each bad input, and
//! certificates and keys made by openssl (PKCS#8, PKCS#1, SEC1; RSA, ECDSA P-256/P-384,
//! Ed25519; chains with an intermediate CA) working end to end.

mod common;

use common::{
    CA_EXT, HandshakeServer, leaf_ext, openssl, openssl_issue, paths, spiffe, tcp, tempdir,
};
use resilience_mtls::{
    Credentials, Identity, Material, MaterialError, MaterialPaths, MtlsAcceptor, MtlsConnector,
    dev_ca::{DevCa, IssueOptions},
};
use std::{path::Path, time::Duration};
use tokio::io::AsyncReadExt;

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

/// A directory with a good `orders.pem`, `orders-key.pem` and `ca.pem`.
fn good(dir: &Path) -> (DevCa, MaterialPaths) {
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir, "orders");
    ca.workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, ca.trust_pem())
        .unwrap();
    (ca, files)
}

fn assert_names(err: &MaterialError, file: &Path, words: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&file.display().to_string()),
        "`{text}` does not name {}",
        file.display()
    );
    assert!(text.contains(words), "`{text}` does not say `{words}`");
    assert_eq!(err.path(), file);
}

#[test]
fn good_material_loads_with_its_identity_and_validity() {
    let dir = tempdir();
    let (_, files) = good(dir.path());
    let material = Material::load(&files).unwrap();
    assert_eq!(material.identity(), &spiffe("ns/shop/sa/orders"));
    let now = common::now();
    assert!(material.expires_in(now) > Duration::from_secs(23 * 3600));
    assert!(material.lifetime_left(now) > 0.9);
    // The dev CA's root is the one trust anchor, named by its subject.
    let subjects = material.trust_subjects();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(subjects[0].starts_with("CN="), "{subjects:?}");
    assert!(subjects[0].contains("example.org"), "{subjects:?}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempdir();
    let (_, mut files) = good(dir.path());
    files.trust = dir.path().join("nowhere.pem");
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::Read { .. }));
    assert_names(&err, &files.trust, "cannot read");
}

#[test]
fn pem_without_a_certificate_is_named() {
    let dir = tempdir();
    let (_, mut files) = good(dir.path());
    // The key file given as the certificate.
    files.cert = files.key.clone();
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::NoCertificate { .. }), "{err}");
    assert_names(&err, &files.cert, "no certificate");

    write(dir.path(), "empty.pem", "");
    files.cert = dir.path().join("empty.pem");
    let err = Material::load(&files).unwrap_err();
    assert_names(&err, &files.cert, "no certificate");

    let (_, mut files) = good(dir.path());
    write(dir.path(), "text.pem", "hello\n");
    files.trust = dir.path().join("text.pem");
    let err = Material::load(&files).unwrap_err();
    assert_names(&err, &files.trust, "no certificate");
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let dir = tempdir();
    let (_, mut files) = good(dir.path());
    files.key = files.cert.clone();
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::NoKey { .. }), "{err}");
    assert_names(&err, &files.key, "no private key");
}

#[test]
fn broken_pem_is_named() {
    let dir = tempdir();
    let (_, mut files) = good(dir.path());
    write(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    files.cert = dir.path().join("broken.pem");
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::BadPem { .. }), "{err}");
    assert_names(&err, &files.cert, "invalid PEM");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_named() {
    let dir = tempdir();
    let (ca, files) = good(dir.path());
    let other = ca.workload("ns/shop/sa/orders").unwrap();
    std::fs::write(&files.key, other.key_pem).unwrap();
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&files.key.display().to_string()), "{text}");
    assert_names(&err, &files.cert, "does not match");
}

#[test]
fn a_certificate_expired_at_load_is_named() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "old");
    let now = common::now();
    let day = Duration::from_secs(24 * 3600);
    ca.issue(
        &spiffe("ns/shop/sa/old"),
        &IssueOptions::new().valid(now - 3 * day, now - day),
    )
    .unwrap()
    .write(&files, ca.trust_pem())
    .unwrap();
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::Expired { .. }), "{err}");
    assert_names(&err, &files.cert, "expired on");

    // The same files were fine two days ago.
    Material::load_at(&files, now - 2 * day).unwrap();

    let files = paths(dir.path(), "future");
    ca.issue(
        &spiffe("ns/shop/sa/future"),
        &IssueOptions::new().valid(now + day, now + 3 * day),
    )
    .unwrap()
    .write(&files, ca.trust_pem())
    .unwrap();
    let err = Material::load(&files).unwrap_err();
    assert_names(&err, &files.cert, "not valid before");
}

#[test]
fn a_certificate_without_an_identity_is_named() {
    let dir = tempdir();
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=no sans",
            "-days",
            "1",
            "-out",
            "cert.pem",
        ],
    );
    let files = MaterialPaths::new(d.join("cert.pem"), d.join("key.pem"), d.join("cert.pem"));
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, MaterialError::Identity { .. }), "{err}");
    assert_names(&err, &files.cert, "no identity");
}

/// A PKI made with openssl: an RSA root (PKCS#1 key), a P-384 intermediate (SEC1 key), and
/// leaves of every supported kind under the intermediate, their chains including it.
struct OpensslPki {
    dir: tempfile::TempDir,
}

impl OpensslPki {
    fn new() -> Self {
        let dir = tempdir();
        let d = dir.path();
        openssl(d, &["genrsa", "-traditional", "-out", "root.key", "2048"]);
        assert!(
            std::fs::read_to_string(d.join("root.key"))
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "root.key",
                "-subj",
                "/CN=openssl test root",
                "-days",
                "30",
                "-sha256",
                "-extensions",
                "v3_ca",
                "-out",
                "root.pem",
            ],
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "int.key",
            ],
        );
        openssl_issue(
            d,
            "int",
            "int.key",
            "/CN=openssl test intermediate",
            &format!("{CA_EXT}basicConstraints=critical,CA:TRUE,pathlen:0\n"),
            "root.pem",
            "root.key",
        );
        Self { dir }
    }

    /// Issues a leaf for `identity` with the key in `key_file` (already generated), and
    /// returns its paths, the chain file holding the leaf then the intermediate.
    fn leaf(&self, name: &str, key_file: &str, san: &str) -> MaterialPaths {
        let d = self.dir.path();
        let cert = openssl_issue(
            d,
            name,
            key_file,
            &format!("/CN={name}"),
            &leaf_ext(san),
            "int.pem",
            "int.key",
        );
        let chain = format!(
            "{}{}",
            std::fs::read_to_string(d.join(&cert)).unwrap(),
            std::fs::read_to_string(d.join("int.pem")).unwrap()
        );
        std::fs::write(d.join(format!("{name}-chain.pem")), chain).unwrap();
        MaterialPaths::new(
            d.join(format!("{name}-chain.pem")),
            d.join(key_file),
            d.join("root.pem"),
        )
    }

    fn genkey(&self, args: &[&str]) {
        openssl(self.dir.path(), args);
    }
}

#[tokio::test]
async fn openssl_made_keys_and_chains_work_end_to_end() {
    let pki = OpensslPki::new();
    let key_kinds: [(&str, &[&str], &str); 5] = [
        (
            "rsa-pkcs1",
            &["genrsa", "-traditional", "-out", "rsa-pkcs1.key", "2048"],
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "rsa-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa-pkcs8.key",
            ],
            "-----BEGIN PRIVATE KEY-----",
        ),
        (
            "p256-sec1",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "p256-sec1.key",
            ],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            "p384-sec1",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "p384-sec1.key",
            ],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            "ed25519",
            &["genpkey", "-algorithm", "ED25519", "-out", "ed25519.key"],
            "-----BEGIN PRIVATE KEY-----",
        ),
    ];
    // The client: a P-256 PKCS#8 key, also from openssl.
    pki.genkey(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "client.key",
    ]);
    let client_files = pki.leaf(
        "client",
        "client.key",
        "URI:spiffe://example.org/ns/shop/sa/frontend",
    );
    let client = Credentials::load(&client_files).unwrap();

    for (name, genkey, pem_header) in key_kinds {
        pki.genkey(genkey);
        let key_file = format!("{name}.key");
        let key_text = std::fs::read_to_string(pki.dir.path().join(&key_file)).unwrap();
        assert!(key_text.starts_with(pem_header), "{name}: {key_text}");
        let san = format!("URI:spiffe://example.org/ns/shop/sa/{name}, DNS:{name}.shop.svc");
        let files = pki.leaf(name, &key_file, &san);
        let material = Material::load(&files).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(material.chain().len(), 2, "{name}: leaf and intermediate");
        let expected = spiffe(&format!("ns/shop/sa/{name}"));
        assert_eq!(material.identity(), &expected);

        // Serve with it; our client verifies the chain through the intermediate.
        let mut server =
            HandshakeServer::spawn(MtlsAcceptor::new(&Credentials::new(material))).await;
        let connector = MtlsConnector::new(&client, expected);
        let mut tls = connector
            .handshake("localhost".try_into().unwrap(), tcp(server.addr).await)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut text = String::new();
        tls.read_to_string(&mut text).await.unwrap();
        assert_eq!(
            text, "hello spiffe://example.org/ns/shop/sa/frontend\n",
            "{name}"
        );
        assert_eq!(
            server.next().await.unwrap(),
            Some(spiffe("ns/shop/sa/frontend"))
        );

        // A DNS expectation is met through the DNS SAN.
        let dns: Identity = format!("{name}.shop.svc").parse().unwrap();
        MtlsConnector::new(&client, dns)
            .handshake("localhost".try_into().unwrap(), tcp(server.addr).await)
            .await
            .unwrap_or_else(|e| panic!("{name} by dns: {e}"));
    }
}
