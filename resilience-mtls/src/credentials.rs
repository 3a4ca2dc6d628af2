//! [`Credentials`]: the current [`Material`], swapped atomically, and the rustls hooks that read
//! it at each handshake.

use crate::{Identity, Material, MaterialError, MaterialPaths, clock::wall_clock, metrics};
use arc_swap::ArcSwap;
use rustls::{
    DistinguishedName, SignatureScheme,
    client::ResolvesClientCert,
    server::{
        ClientHello, ResolvesServerCert,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};
use tokio::sync::watch;

/// Our current certificate material, shared by acceptors and connectors and replaced at once
/// for all of them by [`store`](Self::store) (which the [rotation task](crate::Rotation) calls).
///
/// Every new handshake reads the material that is current when it starts; connections already
/// established keep the keys they agreed and are not disturbed. Cloning is cheap and shares the
/// material.
///
/// A resumed TLS session carries the peer's certificates from the session it resumes; both
/// sides check them again against the current trust bundle and time, and refuse the session
/// when they no longer pass (a connector then dials once more, with a full handshake).
#[derive(Clone)]
pub struct Credentials {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Material>,
    generation: watch::Sender<u64>,
    warned: AtomicBool,
    /// A warning was logged that a revocation list of the current material is overdue.
    warned_stale_list: AtomicBool,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("current", &*self.shared.current.load())
            .field("generation", &*self.shared.generation.borrow())
            .finish()
    }
}

impl Credentials {
    /// Credentials that start with `material`.
    #[must_use]
    pub fn new(material: Material) -> Self {
        let credentials = Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(material),
                generation: watch::Sender::new(0),
                warned: AtomicBool::new(false),
                warned_stale_list: AtomicBool::new(false),
            }),
        };
        credentials.record_expiry(wall_clock());
        credentials
    }

    /// Loads [`Material`] from `paths` and starts with it.
    pub fn load(paths: &MaterialPaths) -> Result<Self, MaterialError> {
        Material::load(paths).map(Self::new)
    }

    /// The material in use now.
    #[must_use]
    pub fn current(&self) -> Arc<Material> {
        self.shared.current.load_full()
    }

    /// `f` with the material in use now, without taking a reference count on it: for a look
    /// made on every request.
    pub fn with_current<T>(&self, f: impl FnOnce(&Material) -> T) -> T {
        f(&self.shared.current.load())
    }

    /// Our identity, from the current material.
    #[must_use]
    pub fn identity(&self) -> Identity {
        self.shared.current.load().identity().clone()
    }

    /// Replaces the material for every handshake from now on. Live connections are untouched.
    pub fn store(&self, material: Material) {
        self.shared.current.store(Arc::new(material));
        self.shared.warned.store(false, Ordering::Relaxed);
        self.shared
            .warned_stale_list
            .store(false, Ordering::Relaxed);
        self.record_expiry(wall_clock());
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// How many times the material has been replaced.
    #[must_use]
    pub fn generation(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// A receiver that sees [`generation`](Self::generation) change each time the material is
    /// replaced: a readiness signal for tests and for code that must react to rotation.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Sets the expiry gauges for `now`: of the certificate, and of each revocation list's
    /// next update. Logs a warning (once per material) when less than 20 % of the
    /// certificate's lifetime remains, and when a revocation list is past its next update: it
    /// still applies, but revocations since are unknown. The rotation task calls this at each
    /// poll.
    pub fn record_expiry(&self, now: SystemTime) {
        let material = self.shared.current.load();
        metrics::cert_expiry(&material, now);
        for list in material.revocation_lists() {
            metrics::crl_next_update(list, now);
            if list.is_stale(now) && !self.shared.warned_stale_list.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    issuer = list.issuer(),
                    "a certificate revocation list is past its next update: it still applies, \
                     but revocations since are unknown; fetch a newer one",
                );
            }
        }
        if material.lifetime_left(now) < 0.2 && !self.shared.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                identity = %material.identity(),
                expires_in_secs = material.expires_in(now).as_secs(),
                "certificate is close to expiry: less than 20% of its lifetime remains",
            );
        }
    }

    pub(crate) fn load_key(&self) -> Arc<CertifiedKey> {
        self.shared.current.load().certified_key().clone()
    }
}

/// Answers every TLS ClientHello with the current certificate.
#[derive(Debug)]
pub(crate) struct ServerCertResolver(pub(crate) Credentials);

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_key())
    }
}

/// Presents the current certificate to every server that asks for one.
#[derive(Debug)]
pub(crate) struct ClientCertResolver(pub(crate) Credentials);

impl ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the current trust bundle; a client certificate is
/// always required.
#[derive(Debug)]
pub(crate) struct ClientVerifier(pub(crate) Credentials);

impl ClientVerifier {
    /// `f` with the trust bundle's verifier: a signature's check does not depend on the CAs.
    fn with<T>(&self, f: impl FnOnce(&dyn ClientCertVerifier) -> T) -> T {
        self.0
            .with_current(|material| f(material.trust().bundle().client_verifier.as_ref()))
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The trust bundle may change under us, so no hints: clients send their certificate
        // regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.with_current(|material| {
            material
                .trust()
                .for_peer(end_entity)?
                .client_verifier
                .verify_client_cert(end_entity, intermediates, now)
        })?;
        // A certificate without an identity cannot be authorized: refuse it here, with a
        // reason, rather than later with a 403.
        Identity::from_certificate(end_entity).map_err(|err| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(err),
            )))
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.with(|v| v.supported_verify_schemes())
    }
}
