//! [`ServerVerifier`]: checks a server's certificate chain against our trust bundle, then that it
//! names the identity we expect, whatever host was dialled.

use crate::{Credentials, Identity, IdentityMismatch};
use rustls::{
    CertificateError, DigitallySignedStruct, OtherError, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_name,
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct ServerVerifier {
    credentials: Credentials,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    pub(crate) fn new(
        credentials: Credentials,
        expected: Identity,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            credentials,
            expected,
            provider,
        }
    }

    fn mismatch(&self, end_entity: &CertificateDer<'_>) -> rustls::Error {
        let presented = Identity::from_certificate(end_entity)
            .ok()
            .map(|id| id.to_string());
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            IdentityMismatch {
                expected: self.expected.to_string(),
                presented,
            },
        ))))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let material = self.credentials.current();
        // Against the bundle of the identity the certificate claims, not of the one we expect:
        // a certificate we expect by a DNS name may also claim a federated domain's SPIFFE ID,
        // which only that domain's bundle may vouch for (and which `TlsInfo` reports).
        material.trust().verify_server(
            end_entity,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match &self.expected {
            Identity::Spiffe(_) => {
                if Identity::from_certificate(end_entity).ok().as_ref() != Some(&self.expected) {
                    return Err(self.mismatch(end_entity));
                }
            }
            Identity::Dns(name) => {
                // webpki's name check, so that wildcard DNS SANs work as browsers read them.
                let name =
                    ServerName::try_from(name.as_str()).map_err(|_| self.mismatch(end_entity))?;
                verify_server_name(&cert, &name).map_err(|_| self.mismatch(end_entity))?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
