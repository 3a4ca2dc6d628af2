//! [`Revocation`]: the certificate revocation lists that peers' chains are checked against,
//! on both sides of a handshake.

use crate::MaterialError;
use rustls::{CertificateError, OtherError, RootCertStore};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, UnixTime,
    pem::PemObject,
};
use std::{path::Path, sync::Arc};
use webpki::{
    CertRevocationList, EndEntityCert, OwnedCertRevocationList, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

/// The CRLs in force, as rustls's client verifier takes them and as parsed for ours.
///
/// Every certificate of a peer's chain is looked up in the CRL of its issuer. One whose issuer
/// has no CRL here passes, so that CRLs for some CAs leave the peers of the others alone (as
/// rustls's `allow_unknown_revocation_status`; webpki's default refuses them). A CRL past its
/// next update still applies: an old list of revoked certificates is still a list of revoked
/// certificates, and a stale one is for the rotation to replace.
#[derive(Clone, Default)]
pub(crate) struct Revocation {
    ders: Vec<CertificateRevocationListDer<'static>>,
    parsed: Arc<[CertRevocationList<'static>]>,
}

impl Revocation {
    /// The CRLs of each file, in PEM (`X509 CRL` blocks); errors name the file.
    pub(crate) fn new<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    ) -> Result<Self, MaterialError> {
        let mut ders = Vec::new();
        let mut parsed = Vec::new();
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
                let crl = OwnedCertRevocationList::from_der(der.as_ref())
                    .map_err(|e| error(format!("CRL {} cannot be read: {e}", i + 1)))?;
                parsed.push(CertRevocationList::from(crl));
                ders.push(der);
            }
        }
        Ok(Self {
            ders,
            parsed: parsed.into(),
        })
    }

    /// The CRLs as rustls's client verifier takes them.
    pub(crate) fn ders(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.ders
    }

    /// Verifies a server's chain, `end_entity` and `intermediates`, to `roots` at `now`, and
    /// that none of it is revoked: rustls's `verify_server_cert_signed_by_trust_anchor` with
    /// revocation, which it offers only inside its own verifier, with its name check.
    pub(crate) fn verify_server(
        &self,
        roots: &RootCertStore,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> Result<(), rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let crls: Vec<&CertRevocationList<'_>> = self.parsed.iter().collect();
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

/// webpki's error as rustls reports it, for the reasons a handshake failure is counted by;
/// any other is kept whole.
fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let reason = match error {
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(reason)
}
