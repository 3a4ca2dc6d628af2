//! [`IdentityConfig`]: the `[identity]` section of a config file.

use crate::{
    Credentials, Identity, MaterialError, MaterialPaths, MtlsAcceptor, MtlsConnector, Rotation,
    client::ConnectorBuilder, server::AcceptorBuilder,
};
use resilience_core::duration;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

/// Where our certificate material lives and how it is used, as `sidecar-lite` reads it from
/// its config file; library users load the very same section.
///
/// ```toml
/// cert = "certs/orders.pem"        # required: our chain, leaf first
/// key = "certs/orders-key.pem"     # required: PKCS#8, PKCS#1 or SEC1 PEM
/// trust = "certs/ca.pem"           # required: the CAs that peers' certificates chain to
/// tls12 = false                    # also accept and offer TLS 1.2 (default: TLS 1.3 only)
/// reload_interval = "10s"          # re-read the files this often besides watching them
/// crls = ["certs/ca.crl.pem"]      # certificate revocation lists of our CAs (default none)
///
/// # SPIFFE federation: each of these trust domains' peers is checked against its own bundle
/// # alone; `trust` then vouches only for our own trust domain and DNS identities.
/// [trust_domains]
/// "partner.example" = "certs/partner-bundle.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Our certificate chain in PEM, leaf first.
    pub cert: PathBuf,
    /// Our private key in PEM.
    pub key: PathBuf,
    /// The trust bundle for peers, in PEM.
    pub trust: PathBuf,
    /// Whether TLS 1.2 is allowed besides TLS 1.3. Default `false`.
    #[serde(default)]
    pub tls12: bool,
    /// How often the files are re-read besides the file watch. Default 10 s.
    #[serde(default = "default_reload_interval", with = "duration")]
    pub reload_interval: Duration,
    /// Federated SPIFFE trust domains, each with the file of its own CA bundle. Default none.
    /// A peer whose SPIFFE ID is of one of them must chain to that bundle, and no other; with
    /// any listed, `trust` vouches only for our own trust domain (which must not be listed)
    /// and DNS identities, and a SPIFFE ID of any other trust domain is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trust_domains: BTreeMap<String, PathBuf>,
    /// Files of certificate revocation lists (PEM `X509 CRL` blocks) of the CAs of any bundle
    /// (ours, and federated domains') or of intermediate CAs under them. Default none. A peer
    /// whose certificate, or an intermediate CA of whose chain, a list revokes is refused, on
    /// either side of a handshake and when a session resumes; a certificate whose issuer has
    /// no list here is not checked. The files rotate with the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<PathBuf>,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

impl IdentityConfig {
    /// A config for the three files, with the other settings at their defaults.
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        trust: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            trust: trust.into(),
            tls12: false,
            reload_interval: default_reload_interval(),
            trust_domains: BTreeMap::new(),
            crls: Vec::new(),
        }
    }

    /// The paths: ours, the trust bundle and the federated trust domains' bundles.
    #[must_use]
    pub fn paths(&self) -> MaterialPaths {
        let mut paths = MaterialPaths::new(&self.cert, &self.key, &self.trust);
        paths.trust_domains.clone_from(&self.trust_domains);
        paths.crls.clone_from(&self.crls);
        paths
    }

    /// Loads and checks the material.
    pub fn load(&self) -> Result<Credentials, MaterialError> {
        Credentials::load(&self.paths())
    }

    /// Rotation for these files; start it with [`Rotation::spawn`].
    pub fn rotation(&self) -> Rotation {
        Rotation::new(self.paths()).poll_interval(self.reload_interval)
    }

    /// An acceptor builder with these settings.
    pub fn acceptor(&self, credentials: &Credentials) -> AcceptorBuilder {
        MtlsAcceptor::builder(credentials).tls12(self.tls12)
    }

    /// A connector builder with these settings, for servers with the `expected` identity.
    pub fn connector(&self, credentials: &Credentials, expected: Identity) -> ConnectorBuilder {
        MtlsConnector::builder(credentials, expected).tls12(self.tls12)
    }
}
