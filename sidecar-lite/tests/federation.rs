//! SPIFFE federation through a pair of sidecars, over real sockets: a partner's CA admits the
//! partner's workloads and cannot name ours.

mod common;

use common::{Certs, app, full, get, outbound_addr, sidecar, spiffe, text};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use resilience_mtls::{Identity, dev_ca::DevCa};
use sidecar_lite::{Config, Sidecar};
use std::{net::SocketAddr, path::Path, sync::atomic::Ordering};

const PARTNER_API: &str = "spiffe://partner.example/ns/pay/sa/api";

/// An app that answers with the `x-forwarded-client-cert` its inbound sidecar sent.
async fn whoami_app() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    app(|req: Request<Incoming>| async move {
        let xfcc = req
            .headers()
            .get("x-forwarded-client-cert")
            .map_or("none", |v| v.to_str().unwrap())
            .to_owned();
        Response::new(full(xfcc))
    })
    .await
}

/// The `[identity]` section of a workload that claims `claimed`, with a certificate `ca`
/// issued, trusting `trust` (a PEM file).
fn identity_of(dir: &Path, ca: &DevCa, claimed: &str, trust: &Path) -> String {
    let issued = ca
        .issue(&Identity::parse(claimed).unwrap(), &Default::default())
        .unwrap();
    let name = claimed.replace(['/', ':', '.'], "-");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    format!("[identity]\ncert = {cert:?}\nkey = {key:?}\ntrust = {trust:?}\n",)
}

/// A client's outbound sidecar, as `identity` (its `[identity]` section), with one route to
/// `orders` behind `inbound`.
async fn client(identity: &str, inbound: &Sidecar) -> Sidecar {
    sidecar(&format!(
        "{identity}\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{}\"]\nserver_identity = \"{}\"\n",
        inbound.bound.inbound.unwrap(),
        spiffe("orders"),
    ))
    .await
}

/// The inbound sidecar of `orders` in front of `app`, as `identity` (its `[identity]`
/// section), admitting `frontend` and the partner's API.
async fn orders(identity: &str, app: SocketAddr) -> Sidecar {
    sidecar(&format!(
        "{identity}\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nallow = [\"{}\", \"{PARTNER_API}\"]\n",
        spiffe("frontend"),
    ))
    .await
}

/// The answer to a GET through `client`: its status, and the app's text when it got there.
async fn through(client: &Sidecar) -> (StatusCode, String) {
    let response = get(format!("http://{}/", outbound_addr(client))).await;
    (response.status(), text(response).await)
}

#[tokio::test]
async fn a_partner_ca_admits_the_partners_workloads_and_cannot_name_ours() {
    let (app, hits) = whoami_app().await;
    let certs = Certs::new("federation");
    let section = certs.identity("orders");
    let ours = certs.dir.join("ca.pem");
    let partner = DevCa::new("partner.example").unwrap();
    let forged = identity_of(&certs.dir, &partner, &spiffe("frontend"), &ours);
    let partner_api = identity_of(&certs.dir, &partner, PARTNER_API, &ours);

    // Without federation, the partner's CA goes into the one bundle: its certificate naming
    // our frontend is believed.
    let both = certs.dir.join("both.pem");
    let ours_pem = std::fs::read_to_string(&ours).unwrap();
    std::fs::write(&both, format!("{ours_pem}{}", partner.trust_pem())).unwrap();
    let one_bundle = section.replace(&*ours.to_string_lossy(), &both.to_string_lossy());
    assert_ne!(one_bundle, section);
    let plain = orders(&one_bundle, app).await;
    let forger = client(&forged, &plain).await;
    assert_eq!(
        through(&forger).await,
        (
            StatusCode::OK,
            format!("By={};URI={}", spiffe("orders"), spiffe("frontend"))
        )
    );
    forger.stop().await;
    plain.stop().await;

    // Federated: the partner's CA, in a bundle of its own, vouches for partner.example alone.
    let bundle = certs.dir.join("partner-bundle.pem");
    std::fs::write(&bundle, partner.trust_pem()).unwrap();
    let federated = orders(
        &format!("{section}[identity.trust_domains]\n\"partner.example\" = {bundle:?}\n"),
        app,
    )
    .await;
    let hits_before = hits.load(Ordering::SeqCst);
    let forger = client(&forged, &federated).await;
    let (status, said) = through(&forger).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "the forged frontend got in: {said}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        hits_before,
        "the app never sees it"
    );

    let partner_api = client(&partner_api, &federated).await;
    assert_eq!(
        through(&partner_api).await,
        (
            StatusCode::OK,
            format!("By={};URI={PARTNER_API}", spiffe("orders"))
        )
    );

    // The operator sees which CAs vouch for which domain.
    let admin = format!("http://{}", federated.bound.admin.unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&text(get(format!("{admin}/status.json")).await).await).unwrap();
    let domains = &json["identity"]["trust_domains"];
    assert_eq!(domains.as_object().unwrap().len(), 1, "{domains}");
    let subject = domains["partner.example"][0].as_str().unwrap();
    assert!(subject.contains("partner.example"), "{domains}");
    assert_eq!(json["identity"]["trust"].as_array().unwrap().len(), 1);
    assert_eq!(json["identity"]["crls"], serde_json::json!([]));
    let page = text(get(format!("{admin}/")).await).await;
    assert!(
        page.contains("<th>trust domain partner.example</th>"),
        "{page}"
    );
}

/// A federated domain added by a reload admits its peers from the next handshake, without a
/// restart; our own certificate changed by a reload is refused, and changes nothing.
#[tokio::test]
async fn a_reload_federates_a_domain_and_keeps_our_certificate() {
    let (app, _) = whoami_app().await;
    let certs = Certs::new("federation-reload");
    let section = certs.identity("orders");
    let ours = certs.dir.join("ca.pem");
    let partner = DevCa::new("partner.example").unwrap();
    let bundle = certs.dir.join("partner-bundle.pem");
    std::fs::write(&bundle, partner.trust_pem()).unwrap();
    let text = |identity: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{identity}\n[inbound]\nlisten = \"127.0.0.1:0\"\n\
             app = \"{app}\"\nallow = [\"{PARTNER_API}\"]\n"
        )
    };
    let mut orders = sidecar(&text(&section)).await;
    let partner_api = client(
        &identity_of(&certs.dir, &partner, PARTNER_API, &ours),
        &orders,
    )
    .await;
    assert_eq!(through(&partner_api).await.0, StatusCode::BAD_GATEWAY);

    // A bundle that cannot be read refuses the reload, and leaves the trust as it was.
    let missing = certs.dir.join("missing.pem");
    let unreadable =
        format!("{section}[identity.trust_domains]\n\"partner.example\" = {missing:?}\n");
    let refused = orders
        .reload(&Config::parse(&text(&unreadable)).unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("missing.pem"), "{refused}");
    assert_eq!(through(&partner_api).await.0, StatusCode::BAD_GATEWAY);

    let federated =
        format!("{section}[identity.trust_domains]\n\"partner.example\" = {bundle:?}\n");
    orders
        .reload(&Config::parse(&text(&federated)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        through(&partner_api).await,
        (
            StatusCode::OK,
            format!("By={};URI={PARTNER_API}", spiffe("orders"))
        )
    );

    let other_cert = federated.replace("orders.pem", "frontend.pem");
    certs.identity("frontend");
    let refused = orders
        .reload(&Config::parse(&text(&other_cert)).unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("restart"), "{refused}");
    assert_eq!(through(&partner_api).await.0, StatusCode::OK);
}
