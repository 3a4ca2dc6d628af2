//! [`Revocation`]: the certificate revocation lists that peers' chains are checked against,
//! on both sides of a handshake.

use crate::MaterialError;
use rustls::{CertRevocationListError, CertificateError, OtherError, RootCertStore};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, UnixTime,
    pem::PemObject,
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};
use webpki::{
    CertRevocationList, EndEntityCert, OwnedCertRevocationList, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

/// One revocation list, as rustls's client verifier takes it and as parsed for ours.
struct Crl {
    der: CertificateRevocationListDer<'static>,
    parsed: CertRevocationList<'static>,
    /// Whose list it is, and when it says the next one comes: for operators.
    about: RevocationList,
    /// The file it came from, and its place there, for errors.
    path: PathBuf,
    number: usize,
}

/// Revocation lists: all those loaded, or the share of them one bundle's chains may meet.
///
/// Every certificate of a peer's chain but the trust anchor is looked up in the list of its
/// issuer (a list with an issuing distribution point that does not cover the certificate is
/// not its list). One whose issuer has no list here passes, so that lists of some CAs leave
/// the peers of the others alone (rustls's `allow_unknown_revocation_status`; webpki's
/// default refuses them). A list past its next update still applies: an old list of revoked
/// certificates is still a list of revoked certificates, and a stale one is for the rotation
/// to replace.
#[derive(Clone, Default)]
pub(crate) struct Revocation {
    crls: Vec<Arc<Crl>>,
}

impl Revocation {
    /// The lists of each file, in PEM (`X509 CRL` blocks); errors name the file. webpki takes
    /// the first list whose issuer has a certificate's issuer's name, so two lists of one name
    /// are refused.
    pub(crate) fn new<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    ) -> Result<Self, MaterialError> {
        let mut crls: Vec<Arc<Crl>> = Vec::new();
        for (path, pem) in files {
            let error = |detail: String| MaterialError::Crl {
                path: path.to_owned(),
                detail,
            };
            let found = CertificateRevocationListDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.to_string()))?;
            if found.is_empty() {
                return Err(error("no `X509 CRL` block in it".to_owned()));
            }
            for (i, der) in found.into_iter().enumerate() {
                let parsed = OwnedCertRevocationList::from_der(der.as_ref())
                    .map_err(|e| error(format!("list {} cannot be read: {e}", i + 1)))?;
                let parsed = CertRevocationList::from(parsed);
                let about = RevocationList::of(&der)
                    .map_err(|e| error(format!("list {} cannot be read: {e}", i + 1)))?;
                if let Some(other) = crls
                    .iter()
                    .find(|crl| crl.parsed.issuer() == parsed.issuer())
                {
                    return Err(error(format!(
                        "list {} has the issuer of list {} of `{}`: give each CA one list",
                        i + 1,
                        other.number,
                        other.path.display()
                    )));
                }
                crls.push(Arc::new(Crl {
                    der,
                    parsed,
                    about,
                    path: path.to_owned(),
                    number: i + 1,
                }));
            }
        }
        Ok(Self { crls })
    }

    /// Each list's issuer and next update.
    pub(crate) fn lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.crls.iter().map(|crl| &crl.about)
    }

    /// The lists a chain to `roots` may meet: those of its anchors, and those of CAs that are no
    /// anchor of any bundle (intermediates), whose names are not in `anchors` (the subjects and
    /// keys of every bundle's anchors). A list whose issuer's name two anchors of different
    /// keys share is refused: webpki would check a chain to either against it, and refuse
    /// every certificate of the other for the list's signature.
    pub(crate) fn for_roots(
        &self,
        roots: &RootCertStore,
        anchors: &[(&[u8], &[u8])],
    ) -> Result<Self, MaterialError> {
        let mut crls = Vec::new();
        for crl in &self.crls {
            let issuer = crl.parsed.issuer();
            let mut keys = anchors.iter().filter(|(subject, _)| *subject == issuer);
            if let Some((_, first)) = keys.next()
                && keys.any(|(_, key)| key != first)
            {
                return Err(MaterialError::Crl {
                    path: crl.path.clone(),
                    detail: format!(
                        "list {} is of a name that two trusted CAs of different keys share: \
                         it could be checked against either; give the CAs names of their own",
                        crl.number
                    ),
                });
            }
            let ours = roots.roots.iter().any(|a| a.subject.as_ref() == issuer);
            let anchorless = !anchors.iter().any(|(subject, _)| *subject == issuer);
            if ours || anchorless {
                crls.push(crl.clone());
            }
        }
        Ok(Self { crls })
    }

    /// The lists as rustls's client verifier takes them.
    pub(crate) fn ders(&self) -> impl Iterator<Item = CertificateRevocationListDer<'static>> {
        self.crls.iter().map(|crl| crl.der.clone())
    }

    /// Verifies a server's chain, `end_entity` and `intermediates`, to `roots` at `now`, and
    /// that none of it is revoked: rustls's `verify_server_cert_signed_by_trust_anchor` with
    /// revocation, which rustls offers only inside its own verifier, with its name check.
    pub(crate) fn verify_server(
        &self,
        roots: &RootCertStore,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> Result<(), rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().map(|crl| &crl.parsed).collect();
        // The same policy as the client verifier's (`Trust`'s bundles): the whole chain, an
        // issuer without a list passes, a list past its next update applies.
        let revocation = RevocationOptionsBuilder::new(&crls).ok().map(|options| {
            options
                .with_status_policy(UnknownStatusPolicy::Allow)
                .build()
        });
        cert.verify_for_usage(
            algorithms,
            &roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            revocation,
            None,
        )
        .map(|_| ())
        .map_err(pki_error)
    }
}

/// What an operator needs to know of a revocation list in force: whose it is, and whether a
/// newer one is due. A list past its next update still applies (see [`Material`]'s
/// `revocation_lists`), but whoever fetches lists has stopped: revocations since are unknown.
///
/// [`Material`]: crate::Material
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    issuer: String,
    next_update: Option<SystemTime>,
}

impl RevocationList {
    fn of(der: &CertificateRevocationListDer<'_>) -> Result<Self, String> {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| e.to_string())?;
        Ok(Self {
            issuer: crl.issuer().to_string(),
            next_update: crl.next_update().map(crate::material::system_time),
        })
    }

    /// The issuer's name, as a distinguished name (`CN=..., O=...`).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// When the issuer says its next list comes, if it says.
    #[must_use]
    pub fn next_update(&self) -> Option<SystemTime> {
        self.next_update
    }

    /// Whether the next list was due before `now`.
    #[must_use]
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.next_update.is_some_and(|next| next < now)
    }
}

/// webpki's error as rustls's own verifier reports it (its mapping is private), for the
/// reasons a handshake failure is counted by; any other is kept whole.
fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let reason = match error {
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::InvalidCertValidity => CertificateError::Expired,
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::InvalidCrlSignatureForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            return CertRevocationListError::BadSignature.into();
        }
        E::IssuerNotCrlSigner => return CertRevocationListError::IssuerInvalidForCrl.into(),
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(reason)
}
