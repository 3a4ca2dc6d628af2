//! [`Trust`]: which CAs may vouch for which peers. The trust bundle, and each federated SPIFFE
//! trust domain's own bundle, which vouches for that domain alone.

use crate::{Identity, MaterialError, SpiffeId};
use rustls::{
    CertificateError, OtherError, RootCertStore,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::CertificateDer;
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The CAs of one bundle: as roots for checking a server, and as a verifier of clients.
#[derive(Clone)]
pub(crate) struct Anchors {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

/// Who may vouch for whom.
///
/// Without federated trust domains, every CA of the trust bundle vouches for every peer, as
/// before SPIFFE federation. With them (SPIFFE Trust Domain and Bundle, section 4; Envoy's
/// SPIFFE validator), a peer's SPIFFE ID is checked against the bundle of its trust domain
/// only: a federated domain's own bundle, or the trust bundle for our own domain. A SPIFFE ID
/// of any other domain is refused, and DNS identities are checked against the trust bundle.
#[derive(Clone)]
pub(crate) struct Trust {
    bundle: Anchors,
    /// Our own trust domain, when our identity is a SPIFFE ID.
    ours: Option<String>,
    federated: BTreeMap<String, Anchors>,
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
    /// The trust bundle `bundle` (read from `path`), and a bundle for each federated trust
    /// domain (with the file each was read from); `ours` is our own identity.
    pub(crate) fn new(
        bundle: Vec<CertificateDer<'static>>,
        path: &Path,
        ours: &Identity,
        federated: Vec<(&str, Vec<CertificateDer<'static>>, &Path)>,
    ) -> Result<Self, MaterialError> {
        let mut seen = Vec::new();
        let default = anchors(bundle, path, 0, &mut seen)?;
        let mut domains = BTreeMap::new();
        for (i, (domain, certs, path)) in federated.into_iter().enumerate() {
            if let Err(e) = SpiffeId::check_trust_domain(domain) {
                return Err(MaterialError::Trust {
                    path: path.to_owned(),
                    detail: format!("`{domain}` is not a SPIFFE trust domain: {e}"),
                });
            }
            domains.insert(domain.to_owned(), anchors(certs, path, i + 1, &mut seen)?);
        }
        Ok(Self {
            bundle: default,
            ours: match ours {
                Identity::Spiffe(id) => Some(id.trust_domain().to_owned()),
                Identity::Dns(_) => None,
            },
            federated: domains,
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
    pub(crate) fn for_identity(&self, identity: &Identity) -> Result<&Anchors, rustls::Error> {
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

/// A CA already taken into a bundle: its subject and key, and the bundle's number and file.
struct Seen {
    subject: Vec<u8>,
    key: Vec<u8>,
    bundle: usize,
    path: PathBuf,
}

/// One bundle's anchors, the `bundle`th. A CA in two bundles would vouch for both bundles'
/// peers, which is what federation is there to prevent: refused, naming both files.
fn anchors(
    certs: Vec<CertificateDer<'static>>,
    path: &Path,
    bundle: usize,
    seen: &mut Vec<Seen>,
) -> Result<Anchors, MaterialError> {
    let error = |detail: String| MaterialError::Trust {
        path: path.to_owned(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            error(format!(
                "certificate {} is not a usable trust anchor: {e}",
                i + 1
            ))
        })?;
        let Some(anchor) = roots.roots.last() else {
            continue;
        };
        let (subject, key) = (
            anchor.subject.as_ref(),
            anchor.subject_public_key_info.as_ref(),
        );
        if let Some(other) = seen
            .iter()
            .find(|s| s.bundle != bundle && s.subject == subject && s.key == key)
        {
            return Err(error(format!(
                "certificate {} is also in `{}`: a CA in two bundles vouches for the peers of \
                 both, so each trust domain's CAs go in its own bundle alone",
                i + 1,
                other.path.display()
            )));
        }
        seen.push(Seen {
            subject: subject.to_vec(),
            key: key.to_vec(),
            bundle,
            path: path.to_owned(),
        });
    }
    let roots = Arc::new(roots);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::provider())
            .build()
            .map_err(|e| error(e.to_string()))?;
    Ok(Anchors {
        roots,
        client_verifier,
    })
}
