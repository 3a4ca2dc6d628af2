//! [`Material`]: our certificate chain, private key and the trust bundle for peers, loaded from
//! PEM files and checked before use.

use crate::{
    Identity, MaterialError,
    clock::wall_clock,
    provider,
    revocation::{Revocation, RevocationList},
    trust::{Bundle, Trust},
};
use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use x509_parser::{certificate::X509Certificate, prelude::FromDer, time::ASN1Time, x509::X509Name};

/// Where the certificate chain, its private key and the trust bundle live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaterialPaths {
    /// Our certificate chain in PEM, leaf first, then any intermediate CAs.
    pub cert: PathBuf,
    /// The leaf certificate's private key in PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// The CA certificates that peers' certificates must chain to, in PEM.
    pub trust: PathBuf,
    /// Federated SPIFFE trust domains, each with its own bundle of CAs in PEM: a peer of one
    /// of these domains must chain to its domain's bundle, and no other. With any listed,
    /// `trust` vouches only for DNS identities and SPIFFE IDs of our own trust domain.
    pub trust_domains: BTreeMap<String, PathBuf>,
    /// Certificate revocation lists in PEM, of any of the CAs above or of intermediate CAs under
    /// them: a peer whose certificate, or an intermediate CA of whose chain, one of them revokes
    /// is refused (a trust anchor is distrusted by taking it out of its bundle).
    pub crls: Vec<PathBuf>,
}

impl MaterialPaths {
    /// The three paths.
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        trust: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            trust: trust.into(),
            trust_domains: BTreeMap::new(),
            crls: Vec::new(),
        }
    }

    /// These paths, with a file of certificate revocation lists at `crl`.
    #[must_use]
    pub fn crl(mut self, crl: impl Into<PathBuf>) -> Self {
        self.crls.push(crl.into());
        self
    }

    /// These paths, with the bundle of the federated trust domain `domain` at `bundle`.
    #[must_use]
    pub fn trust_domain(mut self, domain: impl Into<String>, bundle: impl Into<PathBuf>) -> Self {
        self.trust_domains.insert(domain.into(), bundle.into());
        self
    }

    /// Every file: ours, the bundles, the revocation lists.
    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.cert, &self.key, &self.trust]
            .into_iter()
            .chain(self.trust_domains.values())
            .chain(&self.crls)
            .map(PathBuf::as_path)
    }
}

/// A checked set of certificate material: a chain whose leaf carries an [`Identity`], a private
/// key that matches it, and a trust bundle.
///
/// Loading checks, and names the file at fault when it fails: that each file exists and holds
/// PEM of the right kind, that the key is supported (RSA, ECDSA P-256/P-384, Ed25519) and belongs
/// to the certificate, that the leaf names an identity, and that it is valid now.
#[derive(Clone)]
pub struct Material {
    certified_key: Arc<CertifiedKey>,
    trust: Trust,
    identity: Identity,
    not_before: SystemTime,
    not_after: SystemTime,
    /// A fingerprint of the bytes it was made from (see [`MaterialFiles::fingerprint`]).
    source: u64,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("identity", &self.identity)
            .field("chain_len", &self.certified_key.cert.len())
            .field("trust_anchors", &self.roots().len())
            .field("crls", &self.trust.revocation_lists().count())
            .field(
                "trust_domains",
                &self.trust.federated().map(|(d, _)| d).collect::<Vec<_>>(),
            )
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Loads and checks the material in `paths`, valid now.
    pub fn load(paths: &MaterialPaths) -> Result<Self, MaterialError> {
        Self::load_at(paths, wall_clock())
    }

    /// Loads and checks the material in `paths`, valid at `now`.
    pub fn load_at(paths: &MaterialPaths, now: SystemTime) -> Result<Self, MaterialError> {
        let files = MaterialFiles::read(paths)?;
        Self::from_files(&files, paths, now)
    }

    /// Checks material given as PEM text rather than files, valid at `now`. Errors name the
    /// inputs `<cert>`, `<key>` and `<trust>`.
    pub fn from_pem(
        cert: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        trust: impl AsRef<[u8]>,
        now: SystemTime,
    ) -> Result<Self, MaterialError> {
        let files = MaterialFiles {
            cert: cert.as_ref().to_vec(),
            key: key.as_ref().to_vec(),
            trust: trust.as_ref().to_vec(),
            trust_domains: BTreeMap::new(),
            crls: Vec::new(),
        };
        let paths = MaterialPaths::new("<cert>", "<key>", "<trust>");
        Self::from_files(&files, &paths, now)
    }

    pub(crate) fn from_files(
        files: &MaterialFiles,
        paths: &MaterialPaths,
        now: SystemTime,
    ) -> Result<Self, MaterialError> {
        let chain = certificates(&files.cert, &paths.cert)?;
        let leaf = leaf(&chain, &paths.cert)?;
        let (not_before, not_after) = leaf_validity(&leaf, &paths.cert, now)?;
        let identity = Identity::from_x509(&leaf).map_err(|source| MaterialError::Identity {
            path: paths.cert.clone(),
            source,
        })?;
        let certified_key = certified_key(chain, &files.key, &paths.cert, &paths.key)?;
        let trust = certificates(&files.trust, &paths.trust)?;

        let federated = files
            .trust_domains
            .iter()
            .map(|(domain, (path, pem))| {
                let certs = certificates(pem, path)?;
                Ok((domain.as_str(), Bundle { certs, path }))
            })
            .collect::<Result<_, MaterialError>>()?;
        let bundle = Bundle {
            certs: trust,
            path: &paths.trust,
        };
        let revocation = Revocation::new(
            files
                .crls
                .iter()
                .map(|(path, pem)| (path.as_path(), pem.as_slice())),
        )?;
        let trust = Trust::new(bundle, &identity, federated, revocation)?;

        Ok(Self {
            certified_key: Arc::new(certified_key),
            trust,
            identity,
            not_before,
            not_after,
            source: files.fingerprint(),
        })
    }

    /// Whether this material was made from exactly `files`.
    pub(crate) fn made_from(&self, files: &MaterialFiles) -> bool {
        self.source == files.fingerprint()
    }

    /// The identity that our leaf certificate carries.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Our certificate chain, leaf first.
    #[must_use]
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// The chain and signing key, as rustls takes them.
    #[must_use]
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The trust bundle's anchors: those that peers' certificates chain to, but for peers of
    /// a federated trust domain. A verifier made from these alone would not know the
    /// federated domains: with any, it would let the trust bundle vouch for their peers.
    #[must_use]
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.trust.bundle().roots
    }

    /// The subjects of the trust bundle's anchors, as distinguished names (`CN=..., O=...`); an
    /// anchor whose subject does not parse is shown as `(unreadable subject)`.
    #[must_use]
    pub fn trust_subjects(&self) -> Vec<String> {
        subjects(self.roots())
    }

    /// Each federated trust domain, with the subjects of its bundle's anchors.
    #[must_use]
    pub fn trust_domain_subjects(&self) -> BTreeMap<String, Vec<String>> {
        self.trust
            .federated()
            .map(|(domain, anchors)| (domain.to_owned(), subjects(&anchors.roots)))
            .collect()
    }

    /// The certificate revocation lists in force: each one's issuer and next update. A list
    /// past its next update still applies.
    pub fn revocation_lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.trust.revocation_lists()
    }

    /// Who may vouch for whom.
    pub(crate) fn trust(&self) -> &Trust {
        &self.trust
    }

    /// When our leaf certificate becomes valid.
    #[must_use]
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When our leaf certificate expires.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// How long until our leaf certificate expires, seen at `now` (zero once it has).
    #[must_use]
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// The share of the leaf certificate's lifetime that is left at `now`, from 1.0 (just
    /// issued) to 0.0 (expired).
    #[must_use]
    pub fn lifetime_left(&self, now: SystemTime) -> f64 {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        if total.is_zero() {
            return 0.0;
        }
        (self.expires_in(now).as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// The raw contents of the files, compared by the rotation task to see what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaterialFiles {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) trust: Vec<u8>,
    /// The federated trust domains' bundles, by domain, each with its file.
    pub(crate) trust_domains: BTreeMap<String, (PathBuf, Vec<u8>)>,
    /// The revocation lists, each with its file.
    pub(crate) crls: Vec<(PathBuf, Vec<u8>)>,
}

impl MaterialFiles {
    /// A hash of the files' bytes, to tell whether material was made from them without
    /// keeping a copy of the private key.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &self.cert,
            &self.key,
            &self.trust,
            &self.trust_domains,
            &self.crls,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    pub(crate) fn read(paths: &MaterialPaths) -> Result<Self, MaterialError> {
        Ok(Self {
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
            trust: read(&paths.trust)?,
            trust_domains: paths
                .trust_domains
                .iter()
                .map(|(domain, path)| Ok((domain.clone(), (path.clone(), read(path)?))))
                .collect::<Result<_, MaterialError>>()?,
            crls: paths
                .crls
                .iter()
                .map(|path| Ok((path.clone(), read(path)?)))
                .collect::<Result<_, MaterialError>>()?,
        })
    }
}

/// The first certificate of `chain` (read from `path`, and not empty), parsed.
pub(crate) fn leaf<'a>(
    chain: &'a [CertificateDer<'static>],
    path: &Path,
) -> Result<X509Certificate<'a>, MaterialError> {
    x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map(|(_, leaf)| leaf)
        .map_err(|e| MaterialError::BadPem {
            path: path.to_owned(),
            detail: format!("the first certificate cannot be parsed: {e}"),
        })
}

/// When `leaf` (read from `path`) is valid, checked to hold at `now`.
pub(crate) fn leaf_validity(
    leaf: &X509Certificate<'_>,
    path: &Path,
    now: SystemTime,
) -> Result<(SystemTime, SystemTime), MaterialError> {
    let validity = leaf.validity();
    let not_before = system_time(validity.not_before);
    let not_after = system_time(validity.not_after);
    if now > not_after {
        return Err(MaterialError::Expired {
            path: path.to_owned(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < not_before {
        return Err(MaterialError::NotYetValid {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
            valid_from: not_before,
        });
    }
    Ok((not_before, not_after))
}

/// `chain` with the private key in `key_pem` (read from `key_path`), checked to be a key the
/// provider supports and the one of the leaf (read from `cert_path`).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, MaterialError> {
    let key = private_key(key_pem, key_path)?;
    let signing_key = provider().key_provider.load_private_key(key).map_err(|e| {
        MaterialError::UnsupportedKey {
            path: key_path.to_owned(),
            detail: e.to_string(),
        }
    })?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified_key)
        }
        Err(_) => Err(MaterialError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|source| MaterialError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn certificates(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::BadPem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| MaterialError::BadPem {
            path: path.to_owned(),
            detail: format!("certificate {} is not valid DER: {e}", i + 1),
        })?;
    }
    Ok(certs)
}

fn private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, MaterialError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => MaterialError::NoKey {
            path: path.to_owned(),
        },
        other => MaterialError::BadPem {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// The subjects of `roots`, as distinguished names.
fn subjects(roots: &RootCertStore) -> Vec<String> {
    roots
        .roots
        .iter()
        .map(|anchor| {
            // A trust anchor keeps the contents of the subject's SEQUENCE, not the whole.
            let der = der_sequence(anchor.subject.as_ref());
            X509Name::from_der(&der).map_or_else(
                |_| "(unreadable subject)".to_owned(),
                |(_, name)| name.to_string(),
            )
        })
        .collect()
}

pub(crate) fn system_time(time: ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `contents` as a DER SEQUENCE: the tag, the length, then the bytes.
fn der_sequence(contents: &[u8]) -> Vec<u8> {
    let mut der = vec![0x30];
    let len = contents.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend_from_slice(contents);
    der
}
