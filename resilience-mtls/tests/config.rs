//! The `[identity]` config section, and the `mtls` and `allow` keys, from TOML.
#![cfg(feature = "serde")]

mod common;

use common::{paths, spiffe, tempdir};
use resilience_mtls::{AllowList, IdentityConfig, MtlsMode, dev_ca::DevCa};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
struct Inbound {
    #[serde(default)]
    mtls: MtlsMode,
    #[serde(default)]
    allow: AllowList,
}

#[test]
fn the_identity_section_reads_with_defaults_and_loads() {
    let dir = tempdir();
    let ca = DevCa::new("example.org").unwrap();
    let files = paths(dir.path(), "orders");
    ca.workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, ca.trust_pem())
        .unwrap();
    let text = format!(
        "cert = {:?}\nkey = {:?}\ntrust = {:?}\n",
        files.cert, files.key, files.trust
    );
    let config: IdentityConfig = toml::from_str(&text).unwrap();
    assert_eq!(
        config,
        IdentityConfig::new(&files.cert, &files.key, &files.trust)
    );
    assert!(!config.tls12);
    assert_eq!(config.reload_interval, Duration::from_secs(10));
    assert_eq!(config.paths(), files);
    let creds = config.load().unwrap();
    assert_eq!(creds.identity(), spiffe("ns/shop/sa/orders"));

    let config: IdentityConfig =
        toml::from_str(&format!("{text}tls12 = true\nreload_interval = \"2s\"\n")).unwrap();
    assert!(config.tls12);
    assert_eq!(config.reload_interval, Duration::from_secs(2));

    let partner = dir.path().join("partner.pem");
    std::fs::write(&partner, DevCa::new("partner.example").unwrap().trust_pem()).unwrap();
    let config: IdentityConfig = toml::from_str(&format!(
        "{text}[trust_domains]\n\"partner.example\" = {partner:?}\n"
    ))
    .unwrap();
    assert_eq!(
        config.paths(),
        files.clone().trust_domain("partner.example", &partner)
    );
    assert_eq!(
        config.load().unwrap().current().trust_domain_subjects()["partner.example"].len(),
        1
    );

    let crl = dir.path().join("ca.crl.pem");
    std::fs::write(&crl, ca.crl(&[]).unwrap()).unwrap();
    let config: IdentityConfig = toml::from_str(&format!("crls = [{crl:?}]\n{text}")).unwrap();
    assert_eq!(config.paths(), files.clone().crl(&crl));
    assert_eq!(
        config.load().unwrap().current().revocation_lists().count(),
        1
    );

    let err = toml::from_str::<IdentityConfig>(&format!("{text}reload_interval = \"soon\"\n"))
        .unwrap_err();
    assert!(err.to_string().contains("soon"), "{err}");
    let err = toml::from_str::<IdentityConfig>(&format!("{text}colour = \"blue\"\n")).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn mtls_mode_and_allow_list_read_from_the_inbound_section() {
    let inbound: Inbound = toml::from_str(
        r#"
        mtls = "permissive"
        allow = ["spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org/ns/ops/sa/*"]
        "#,
    )
    .unwrap();
    assert_eq!(inbound.mtls, MtlsMode::Permissive);
    assert!(inbound.allow.is_allowed(Some(&spiffe("ns/ops/sa/x"))));
    assert!(!inbound.allow.is_allowed(Some(&spiffe("ns/shop/sa/x"))));

    let inbound: Inbound = toml::from_str("").unwrap();
    assert_eq!(inbound.mtls, MtlsMode::Strict);
    assert!(inbound.allow.is_empty());

    let err = toml::from_str::<Inbound>(r#"mtls = "lenient""#).unwrap_err();
    assert!(err.to_string().contains("lenient"), "{err}");
    let err =
        toml::from_str::<Inbound>(r#"allow = ["spiffe://example.org/ns/ops-*"]"#).unwrap_err();
    assert!(err.to_string().contains("ns/ops-*"), "{err}");
}
