//! SPIFFE federation over real sockets on 127.0.0.1: a federated trust domain's CA vouches for
//! that domain's peers alone, and the trust bundle no longer vouches for them.

mod common;

use common::{HandshakeServer, WAIT, read_all, tcp, tempdir};
use resilience_mtls::{
    Credentials, FailureReason, Identity, Material, MaterialError, MaterialPaths, MtlsAcceptor,
    MtlsConnector, Rotation,
    dev_ca::{DevCa, IssueOptions},
};
use rustls_pki_types::ServerName;
use std::{path::Path, time::Duration};
use tempfile::TempDir;

const PARTNER: &str = "partner.example";
const PARTNER_API: &str = "spiffe://partner.example/ns/pay/sa/api";

fn id(text: &str) -> Identity {
    text.parse().unwrap()
}

/// Our CA (`example.org`) and a partner's (`partner.example`).
struct Domains {
    ours: DevCa,
    partner: DevCa,
    dir: TempDir,
}

impl Domains {
    fn new() -> Self {
        Self {
            ours: DevCa::new("example.org").unwrap(),
            partner: DevCa::new(PARTNER).unwrap(),
            dir: tempdir(),
        }
    }

    fn file(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Paths of `identity`'s certificate from `ca`, with `trust` as the trust bundle and no
    /// federated domain yet.
    fn paths(&self, name: &str, ca: &DevCa, identity: &str, trust: &str) -> MaterialPaths {
        let issued = ca.issue(&id(identity), &Default::default()).unwrap();
        MaterialPaths::new(
            self.file(&format!("{name}.pem"), &issued.cert_pem),
            self.file(&format!("{name}-key.pem"), &issued.key_pem),
            self.file(&format!("{name}-trust.pem"), trust),
        )
    }

    /// A workload of ours, `spiffe://example.org/<path>` issued by `ca`, federated with the
    /// partner's domain.
    fn ours_federated(&self, ca: &DevCa, path: &str) -> Credentials {
        let name = path.replace('/', "-");
        let paths = self
            .paths(
                &name,
                ca,
                &format!("spiffe://example.org/{path}"),
                self.ours.trust_pem(),
            )
            .trust_domain(
                PARTNER,
                self.file("partner-bundle.pem", self.partner.trust_pem()),
            );
        Credentials::load(&paths).unwrap()
    }

    /// A workload that claims `identity`, issued by `ca`, trusting our CA (the partner's side
    /// of the federation is not what these tests look at).
    fn peer(&self, ca: &DevCa, identity: &str) -> Credentials {
        let name = identity.replace(['/', ':'], "-");
        Credentials::load(&self.paths(&name, ca, identity, self.ours.trust_pem())).unwrap()
    }
}

/// The identity the server saw, or the reason it refused the handshake.
async fn server_sees(
    server: &mut HandshakeServer,
    client: &Credentials,
) -> Result<Identity, FailureReason> {
    let connector = MtlsConnector::new(client, id("spiffe://example.org/ns/shop/sa/orders"));
    let name = ServerName::try_from("localhost").unwrap();
    // The client's own view does not matter here: the server's outcome says who got in.
    let _ = connector.handshake(name, tcp(server.addr).await).await;
    match server.next().await {
        Ok(peer) => Ok(peer.expect("a verified client identity")),
        Err(error) => Err(error.reason()),
    }
}

#[tokio::test]
async fn a_federated_domains_peer_gets_in_with_its_own_ca() {
    let domains = Domains::new();
    let server = domains.ours_federated(&domains.ours, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;
    let partner = domains.peer(&domains.partner, PARTNER_API);
    assert_eq!(
        server_sees(&mut server, &partner).await,
        Ok(id(PARTNER_API))
    );
    // Our own domain's peers still chain to the trust bundle.
    let frontend = domains.peer(&domains.ours, "spiffe://example.org/ns/shop/sa/frontend");
    assert_eq!(
        server_sees(&mut server, &frontend).await,
        Ok(id("spiffe://example.org/ns/shop/sa/frontend"))
    );
}

/// The hole federation closes: with the partner's CA simply added to the trust bundle, it
/// vouches for a certificate that claims one of our own workloads.
#[tokio::test]
async fn without_federation_a_partner_ca_in_the_bundle_vouches_for_our_domain_too() {
    let domains = Domains::new();
    let both = format!(
        "{}{}",
        domains.ours.trust_pem(),
        domains.partner.trust_pem()
    );
    let server = domains.paths(
        "orders",
        &domains.ours,
        "spiffe://example.org/ns/shop/sa/orders",
        &both,
    );
    let mut server =
        HandshakeServer::spawn(MtlsAcceptor::new(&Credentials::load(&server).unwrap())).await;
    let forged = domains.peer(&domains.partner, "spiffe://example.org/ns/shop/sa/frontend");
    assert_eq!(
        server_sees(&mut server, &forged).await,
        Ok(id("spiffe://example.org/ns/shop/sa/frontend"))
    );
}

#[tokio::test]
async fn a_federated_ca_cannot_vouch_for_our_trust_domain() {
    let domains = Domains::new();
    let server = domains.ours_federated(&domains.ours, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;
    let forged = domains.peer(&domains.partner, "spiffe://example.org/ns/shop/sa/frontend");
    assert_eq!(
        server_sees(&mut server, &forged).await,
        Err(FailureReason::UnknownCa)
    );
}

#[tokio::test]
async fn our_ca_cannot_vouch_for_a_federated_domain_nor_for_an_unlisted_one() {
    let domains = Domains::new();
    let server = domains.ours_federated(&domains.ours, "ns/shop/sa/orders");
    let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;
    for claimed in [PARTNER_API, "spiffe://third.example/ns/x/sa/y"] {
        let forged = domains.peer(&domains.ours, claimed);
        assert_eq!(
            server_sees(&mut server, &forged).await,
            Err(FailureReason::UnknownCa),
            "{claimed}"
        );
    }
    // A DNS identity still chains to the trust bundle.
    let dns = domains.peer(&domains.ours, "db.example.org");
    assert_eq!(
        server_sees(&mut server, &dns).await,
        Ok(id("db.example.org"))
    );
}

/// The client side: a server that claims the partner's identity must chain to the partner's
/// bundle.
#[tokio::test]
async fn a_client_checks_a_federated_servers_chain_against_its_domains_bundle() {
    let domains = Domains::new();
    let client = domains.ours_federated(&domains.ours, "ns/shop/sa/frontend");
    let expected = PARTNER_API;
    for (issuer, passes) in [(&domains.partner, true), (&domains.ours, false)] {
        let server = domains.peer(issuer, expected);
        let mut server = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;
        let connector = MtlsConnector::new(&client, id(expected));
        let name = ServerName::try_from("localhost").unwrap();
        let result = connector.handshake(name, tcp(server.addr).await).await;
        match result {
            Ok(mut tls) => {
                assert!(
                    passes,
                    "a server our CA vouched for as {expected} was accepted"
                );
                read_all(&mut tls).await;
                assert_eq!(
                    server.next().await.unwrap(),
                    Some(id("spiffe://example.org/ns/shop/sa/frontend"))
                );
            }
            Err(error) => {
                assert!(!passes, "the partner's own server was refused: {error}");
                assert_eq!(error.reason(), FailureReason::UnknownCa);
            }
        }
    }
}

/// A server certificate our CA issued for a DNS name, which also claims the partner's SPIFFE
/// ID: a client that expects the DNS name checks it against the partner's bundle, since that
/// is the identity it would report.
#[tokio::test]
async fn a_server_expected_by_dns_name_that_claims_a_federated_id_chains_to_its_domain() {
    let domains = Domains::new();
    let client = domains.ours_federated(&domains.ours, "ns/shop/sa/frontend");
    let options = IssueOptions::new().dns_name("orders.example.org");
    for (issuer, passes) in [(&domains.partner, true), (&domains.ours, false)] {
        let issued = issuer.issue(&id(PARTNER_API), &options).unwrap();
        let material = issued.material(domains.ours.trust_pem()).unwrap();
        let server = HandshakeServer::spawn(MtlsAcceptor::new(&Credentials::new(material))).await;
        let connector = MtlsConnector::new(&client, id("orders.example.org"));
        let name = ServerName::try_from("orders.example.org").unwrap();
        match connector.handshake(name, tcp(server.addr).await).await {
            Ok(tls) => {
                assert!(passes, "our CA vouched for {PARTNER_API}");
                assert_eq!(tls.get_ref().1.peer_certificates().map(<[_]>::len), Some(1));
            }
            Err(error) => {
                assert!(!passes, "the partner's own server was refused: {error}");
                assert_eq!(error.reason(), FailureReason::UnknownCa);
            }
        }
    }
}

fn load_error(paths: &MaterialPaths) -> String {
    Material::load(paths).unwrap_err().to_string()
}

#[test]
fn a_ca_in_two_bundles_or_a_bad_domain_name_is_refused_naming_the_file() {
    let domains = Domains::new();
    let ours = || {
        domains.paths(
            "orders",
            &domains.ours,
            "spiffe://example.org/ns/shop/sa/orders",
            domains.ours.trust_pem(),
        )
    };
    let partner = domains.file("partner-bundle.pem", domains.partner.trust_pem());
    let also_ours = domains.file("also-ours.pem", domains.ours.trust_pem());

    let twice = load_error(&ours().trust_domain(PARTNER, &also_ours));
    assert!(twice.contains("also-ours.pem"), "{twice}");
    assert!(twice.contains("orders-trust.pem"), "{twice}");
    assert!(
        twice.contains("certificate 1 has the key of a CA in"),
        "{twice}"
    );

    let both = domains.file(
        "both.pem",
        &format!(
            "{}{}",
            domains.partner.trust_pem(),
            domains.ours.trust_pem()
        ),
    );
    let twice = load_error(&ours().trust_domain(PARTNER, &both));
    assert!(
        twice.contains("both.pem") && twice.contains("certificate 2 has the key of a CA in"),
        "{twice}"
    );

    let bad = load_error(&ours().trust_domain("Partner.Example", &partner));
    assert!(
        bad.contains("partner-bundle.pem")
            && bad.contains("`Partner.Example` is not a SPIFFE trust domain"),
        "{bad}"
    );

    let ours_listed = load_error(&ours().trust_domain("example.org", &partner));
    assert!(
        ours_listed.contains("`example.org` is our own trust domain"),
        "{ours_listed}"
    );

    let missing =
        Material::load(&ours().trust_domain(PARTNER, domains.dir.path().join("nope.pem")))
            .unwrap_err();
    assert!(
        matches!(&missing, MaterialError::Read { path, .. } if path.ends_with("nope.pem")),
        "{missing}"
    );

    let loaded = Material::load(&ours().trust_domain(PARTNER, &partner)).unwrap();
    let subjects = loaded.trust_domain_subjects();
    assert_eq!(subjects.keys().collect::<Vec<_>>(), [PARTNER]);
    assert_eq!(subjects[PARTNER].len(), 1);
    assert!(subjects[PARTNER][0].contains(PARTNER), "{subjects:?}");
}

/// A federated domain's bundle rotates like the other files: a new CA of the partner's is
/// trusted once its bundle is rewritten.
#[tokio::test]
async fn a_federated_bundle_rewritten_is_loaded_by_the_rotation() {
    let domains = Domains::new();
    let paths = domains
        .paths(
            "orders",
            &domains.ours,
            "spiffe://example.org/ns/shop/sa/orders",
            domains.ours.trust_pem(),
        )
        .trust_domain(
            PARTNER,
            domains.file("partner-bundle.pem", domains.partner.trust_pem()),
        );
    let server = Credentials::load(&paths).unwrap();
    let _rotation = Rotation::new(paths.clone())
        .poll_interval(Duration::from_millis(50))
        .spawn(&server);
    let mut server_tls = HandshakeServer::spawn(MtlsAcceptor::new(&server)).await;

    let renewed = DevCa::new(PARTNER).unwrap();
    let api = domains.peer(&renewed, PARTNER_API);
    assert_eq!(
        server_sees(&mut server_tls, &api).await,
        Err(FailureReason::UnknownCa)
    );

    write(&paths.trust_domains[PARTNER], renewed.trust_pem());
    let mut generation = server.subscribe();
    tokio::time::timeout(WAIT, generation.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        server_sees(&mut server_tls, &api).await,
        Ok(id(PARTNER_API))
    );
}

fn write(path: &Path, contents: &str) {
    resilience_mtls::dev_ca::write_atomic(path, contents.as_bytes()).unwrap();
}

/// A root renewed under a new name keeps its key, and with it the power to sign as the old
/// name: the same key in the trust bundle and a federated bundle is refused.
#[test]
fn a_ca_key_in_two_bundles_under_two_names_is_refused() {
    let domains = Domains::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let root = |name: &str| {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    };
    let old = format!("{}{}", domains.ours.trust_pem(), root("partner root 2025"));
    let paths = domains
        .paths(
            "orders",
            &domains.ours,
            "spiffe://example.org/ns/shop/sa/orders",
            &old,
        )
        .trust_domain(
            PARTNER,
            domains.file("renewed.pem", &root("partner root 2026")),
        );
    let error = load_error(&paths);
    assert!(
        error.contains("renewed.pem") && error.contains("certificate 1 has the key of a CA in"),
        "{error}"
    );
}
