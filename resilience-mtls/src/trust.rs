//! [`Trust`]: which CAs may vouch for which peers. The trust bundle, and each federated SPIFFE
//! trust domain's own bundle, which vouches for that domain alone.

use crate::{
    Identity, MaterialError, SpiffeId,
    revocation::{Revocation, RevocationList},
};
use rustls::{
    CertificateError, OtherError, RootCertStore,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The CAs of one bundle: as roots for checking a server, and as a verifier of clients; with
/// the revocation lists its chains may meet.
#[derive(Clone)]
pub(crate) struct Anchors {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    revocation: Revocation,
}

/// Who may vouch for whom.
///
/// Without federated trust domains, every CA of the trust bundle vouches for every peer. With
/// them, each bundle is scoped to its trust domain, as SPIFFE federation requires (SPIFFE Trust
/// Domain and Bundle, section 4): a peer's SPIFFE ID is checked against the bundle of its trust
/// domain only, a federated domain's own bundle or, for our own domain, the trust bundle. A
/// SPIFFE ID of any other domain is refused. DNS identities are checked against the trust
/// bundle, as is our own domain without being listed (Envoy's SPIFFE validator would need
/// both listed).
#[derive(Clone)]
pub(crate) struct Trust {
    bundle: Anchors,
    /// Every revocation list in force, over all bundles.
    revocation: Revocation,
    /// Our own trust domain, when our identity is a SPIFFE ID; none for a DNS identity.
    ours: Option<String>,
    federated: BTreeMap<String, Anchors>,
}

/// The certificates of one bundle, and the file they were read from.
pub(crate) struct Bundle<'a> {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) path: &'a Path,
}

/// Why a peer's certificate found no bundle: its trust domain is neither ours nor federated.
#[derive(Debug)]
pub struct UnknownTrustDomain {
    domain: String,
}

impl fmt::Display for UnknownTrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trust domain `{}` is neither ours nor one of the federated trust domains",
            self.domain
        )
    }
}

impl std::error::Error for UnknownTrustDomain {}

impl Trust {
    /// The trust bundle `bundle`, and the bundle of each federated trust domain, for a
    /// workload whose own identity is `ours`.
    pub(crate) fn new(
        bundle: Bundle<'_>,
        ours: &Identity,
        federated: Vec<(&str, Bundle<'_>)>,
        revocation: Revocation,
    ) -> Result<Self, MaterialError> {
        let ours = match ours {
            Identity::Spiffe(id) => Some(id.trust_domain().to_owned()),
            Identity::Dns(_) => None,
        };
        let mut seen = Vec::new();
        let default = (roots(&bundle, 0, &mut seen)?, bundle.path);
        let mut domains = Vec::new();
        for (i, (domain, bundle)) in federated.into_iter().enumerate() {
            let refuse = |detail: String| MaterialError::Trust {
                path: bundle.path.to_owned(),
                detail,
            };
            if let Err(e) = SpiffeId::check_trust_domain(domain) {
                return Err(refuse(format!(
                    "`{domain}` is not a SPIFFE trust domain: {e}"
                )));
            }
            // Listed, our own domain would take its peers from the trust bundle: say so rather
            // than leave the trust bundle vouching for DNS names alone.
            if ours.as_deref() == Some(domain) {
                return Err(refuse(format!(
                    "`{domain}` is our own trust domain, whose CAs are the trust bundle's; \
                     list only the domains we federate with"
                )));
            }
            domains.push((domain, roots(&bundle, i + 1, &mut seen)?, bundle.path));
        }
        // Each bundle's revocation lists, once every bundle's anchors are known.
        let every: Vec<(&[u8], &[u8])> = std::iter::once(&default.0)
            .chain(domains.iter().map(|(_, roots, _)| roots))
            .flat_map(|roots| &roots.roots)
            .map(|a| (a.subject.as_ref(), a.subject_public_key_info.as_ref()))
            .collect();
        let default_lists = revocation.for_roots(&default.0, &every)?;
        let lists = domains
            .iter()
            .map(|(_, roots, _)| revocation.for_roots(roots, &every))
            .collect::<Result<Vec<_>, _>>()?;
        let federated = domains
            .into_iter()
            .zip(lists)
            .map(|((domain, roots, path), lists)| {
                Ok((domain.to_owned(), Anchors::new(roots, lists, path)?))
            })
            .collect::<Result<_, MaterialError>>()?;
        let bundle = Anchors::new(default.0, default_lists, default.1)?;
        Ok(Self {
            bundle,
            revocation,
            ours,
            federated,
        })
    }

    /// The trust bundle.
    pub(crate) fn bundle(&self) -> &Anchors {
        &self.bundle
    }

    /// The federated trust domains and their bundles.
    pub(crate) fn federated(&self) -> impl Iterator<Item = (&str, &Anchors)> {
        self.federated.iter().map(|(d, a)| (d.as_str(), a))
    }

    /// The bundle that may vouch for a peer that claims `identity`.
    fn for_identity(&self, identity: &Identity) -> Result<&Anchors, rustls::Error> {
        let Identity::Spiffe(id) = identity else {
            return Ok(&self.bundle);
        };
        if self.federated.is_empty() {
            return Ok(&self.bundle);
        }
        let domain = id.trust_domain();
        if let Some(anchors) = self.federated.get(domain) {
            Ok(anchors)
        } else if self.ours.as_deref() == Some(domain) {
            Ok(&self.bundle)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(UnknownTrustDomain {
                    domain: domain.to_owned(),
                })),
            )))
        }
    }

    /// Verifies a server's chain against the bundle that may vouch for it, and against the
    /// revocation lists.
    pub(crate) fn verify_server(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> Result<(), rustls::Error> {
        let anchors = self.for_peer(end_entity)?;
        anchors
            .revocation
            .verify_server(&anchors.roots, end_entity, intermediates, now, algorithms)
    }

    /// Every revocation list in force.
    pub(crate) fn revocation_lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.revocation.lists()
    }

    /// The bundle that may vouch for the peer whose leaf certificate is `end_entity`, by the
    /// identity it claims. One without an identity is checked against the trust bundle, and
    /// refused for its missing identity after that check.
    pub(crate) fn for_peer(
        &self,
        end_entity: &CertificateDer<'_>,
    ) -> Result<&Anchors, rustls::Error> {
        if self.federated.is_empty() {
            return Ok(&self.bundle);
        }
        match Identity::from_certificate(end_entity) {
            Ok(identity) => self.for_identity(&identity),
            Err(_) => Ok(&self.bundle),
        }
    }
}

/// A CA already taken into a bundle: its key, and the bundle's number and file.
struct Seen {
    key: Vec<u8>,
    bundle: usize,
    path: PathBuf,
}

/// The anchors of `bundle`, the `number`th. A CA in two bundles would vouch for both bundles'
/// peers, which is what federation is there to prevent: refused, naming both files. A CA is
/// its key: webpki finds an issuer's anchor by the subject's bytes, so the holder of the key
/// signs as any subject it is listed under (a root renewed with a new name, say).
fn roots(
    bundle: &Bundle<'_>,
    number: usize,
    seen: &mut Vec<Seen>,
) -> Result<RootCertStore, MaterialError> {
    let error = |detail: String| MaterialError::Trust {
        path: bundle.path.to_owned(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in bundle.certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            error(format!(
                "certificate {} is not a usable trust anchor: {e}",
                i + 1
            ))
        })?;
        let key = roots.roots[roots.roots.len() - 1]
            .subject_public_key_info
            .as_ref();
        if let Some(other) = seen.iter().find(|s| s.bundle != number && s.key == key) {
            return Err(error(format!(
                "certificate {} has the key of a CA in `{}`: a CA in two bundles vouches for \
                 the peers of both, so each trust domain's CAs go in its own bundle alone",
                i + 1,
                other.path.display()
            )));
        }
        seen.push(Seen {
            key: key.to_vec(),
            bundle: number,
            path: bundle.path.to_owned(),
        });
    }
    Ok(roots)
}

impl Anchors {
    /// The anchors `roots` of the bundle at `path`, checked against `revocation`.
    fn new(
        roots: RootCertStore,
        revocation: Revocation,
        path: &Path,
    ) -> Result<Self, MaterialError> {
        let roots = Arc::new(roots);
        // The same policy as `Revocation::verify_server`'s: the whole chain, an issuer
        // without a list passes, a list past its next update applies.
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::provider())
                .with_crls(revocation.ders())
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| MaterialError::Trust {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })?;
        Ok(Self {
            roots,
            client_verifier,
            revocation,
        })
    }
}
