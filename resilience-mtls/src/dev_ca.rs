//! A development certificate authority: creates a CA and workload certificates that carry
//! SPIFFE IDs, for tests, examples, benchmarks and `sidecar-lite certs`. Not for production:
//! keys are generated in memory and written unencrypted.
//!
//! ```
//! use resilience_mtls::dev_ca::DevCa;
//! use resilience_mtls::Credentials;
//!
//! let ca = DevCa::new("example.org").unwrap();
//! let orders = ca.workload("ns/shop/sa/orders").unwrap();
//! assert_eq!(orders.identity.to_string(), "spiffe://example.org/ns/shop/sa/orders");
//! let credentials = Credentials::new(orders.material(ca.trust_pem()).unwrap());
//! # let _ = credentials;
//! ```

use crate::{Identity, IdentityError, Material, MaterialError, MaterialPaths, clock::wall_clock};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm, string::Ia5String,
};
use rustls_pki_types::pem::PemObject;
use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The key algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A certificate could not be created.
#[derive(Debug)]
pub enum DevCaError {
    /// rcgen could not create the key or certificate.
    Rcgen(rcgen::Error),
    /// The workload path does not make a valid SPIFFE ID.
    Identity(IdentityError),
    /// A certificate to revoke cannot be read.
    BadRevokedCert(String),
}

impl fmt::Display for DevCaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rcgen(err) => write!(f, "cannot create the certificate: {err}"),
            Self::Identity(err) => write!(f, "cannot create the certificate: {err}"),
            Self::BadRevokedCert(err) => write!(f, "cannot read a certificate to revoke: {err}"),
        }
    }
}

impl std::error::Error for DevCaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rcgen(err) => Some(err),
            Self::Identity(err) => Some(err),
            Self::BadRevokedCert(_) => None,
        }
    }
}

impl From<rcgen::Error> for DevCaError {
    fn from(err: rcgen::Error) -> Self {
        Self::Rcgen(err)
    }
}

/// Options for a workload certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct IssueOptions {
    /// The key algorithm; default ECDSA P-256.
    pub algorithm: KeyAlgorithm,
    /// Valid from; default one hour ago (for clock skew).
    pub not_before: SystemTime,
    /// Valid until; default in 24 hours.
    pub not_after: SystemTime,
    /// DNS SANs to add besides the identity.
    pub dns_names: Vec<String>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        let now = wall_clock();
        Self {
            algorithm: KeyAlgorithm::default(),
            not_before: now - HOUR,
            not_after: now + DAY,
            dns_names: Vec::new(),
        }
    }
}

impl IssueOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key algorithm.
    pub fn algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the validity period.
    pub fn valid(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Adds a DNS SAN.
    pub fn dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }
}

/// A certificate issued by a [`DevCa`], with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The identity the certificate carries.
    pub identity: Identity,
    /// The certificate chain in PEM: the leaf, then any intermediate CAs (not the root).
    pub cert_pem: String,
    /// The private key in PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Checked [`Material`] from this certificate and the trust bundle `trust_pem`.
    pub fn material(&self, trust_pem: &str) -> Result<Material, MaterialError> {
        Material::from_pem(&self.cert_pem, &self.key_pem, trust_pem, wall_clock())
    }

    /// Writes the chain and key to `paths.cert` and `paths.key`, and `trust_pem` to
    /// `paths.trust`, each by writing a temporary file and renaming it over the old one, so a
    /// watcher never sees half a file.
    pub fn write(&self, paths: &MaterialPaths, trust_pem: &str) -> io::Result<()> {
        write_atomic(&paths.cert, self.cert_pem.as_bytes())?;
        write_private(&paths.key, self.key_pem.as_bytes())?;
        write_atomic(&paths.trust, trust_pem.as_bytes())
    }
}

/// Writes `contents` to a temporary file beside `path`, then renames it to `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Like [`write_atomic`], for a private key: the file is readable by its owner only (mode
/// 0600 on Unix) from the moment it exists. A temporary file left over from an earlier run is
/// removed first rather than reused, so its mode never carries over to the key.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    match std::fs::remove_file(&tmp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Creates a CA for `trust_domain` and one certificate per workload path (such as
/// `ns/shop/sa/orders`), writing `ca.pem`, `<name>.pem` and `<name>-key.pem` into `out`, where
/// `<name>` is the path's last segment: what `sidecar-lite certs` does. Returns the files
/// written.
pub fn write_workloads(
    out: &Path,
    trust_domain: &str,
    workloads: &[String],
) -> Result<Vec<PathBuf>, crate::BoxError> {
    // Every file name first, so that a clash writes nothing: `orders`' key and a workload
    // named `orders-key`'s certificate would both be orders-key.pem.
    let mut names: Vec<(&str, &String)> = Vec::with_capacity(workloads.len());
    let mut files: Vec<(String, &String)> = Vec::with_capacity(2 * workloads.len());
    for workload in workloads {
        let name = workload
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("workload `{workload}` has no name"))?;
        for file in [format!("{name}.pem"), format!("{name}-key.pem")] {
            if file == "ca.pem" {
                return Err(format!(
                    "workload `{workload}` would be written as ca.pem, over the CA; rename it"
                )
                .into());
            }
            if let Some((_, other)) = files.iter().find(|(f, _)| *f == file) {
                return Err(format!(
                    "workloads `{other}` and `{workload}` would both write {file}; their files \
                     are named by the last segment (<name>.pem, <name>-key.pem), so give them \
                     names that do not meet"
                )
                .into());
            }
            files.push((file, workload));
        }
        names.push((name, workload));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let ca = DevCa::new(trust_domain)?;
    let mut written = vec![out.join("ca.pem")];
    for (name, workload) in names {
        let paths = MaterialPaths::new(
            out.join(format!("{name}.pem")),
            out.join(format!("{name}-key.pem")),
            out.join("ca.pem"),
        );
        ca.workload(workload)?
            .write(&paths, ca.trust_pem())
            .map_err(|e| format!("cannot write {}: {e}", paths.cert.display()))?;
        written.push(paths.cert.clone());
        written.push(paths.key.clone());
    }
    Ok(written)
}

/// A certificate authority for one SPIFFE trust domain: a root, or an intermediate under one.
pub struct DevCa {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// This CA's certificate and those above it, up to but not including the root.
    chain_pem: String,
    root_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new root CA for `trust_domain`, with an ECDSA P-256 key, valid for a year.
    pub fn new(trust_domain: &str) -> Result<Self, DevCaError> {
        Self::with_algorithm(trust_domain, KeyAlgorithm::EcdsaP256)
    }

    /// A new root CA for `trust_domain` with a key of `algorithm`, valid for a year.
    pub fn with_algorithm(trust_domain: &str, algorithm: KeyAlgorithm) -> Result<Self, DevCaError> {
        let key = KeyPair::generate_for(algorithm.rcgen())?;
        let params = ca_params(&format!("{trust_domain} dev root CA"), None);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            issuer: Issuer::new(params, key),
            root_pem: cert_pem.clone(),
            chain_pem: String::new(),
            cert_pem,
        })
    }

    /// A new intermediate CA under this one, named `name`. Certificates it issues carry it in
    /// their chain, and chain to this CA's root.
    pub fn intermediate(&self, name: &str) -> Result<Self, DevCaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(name, Some(0));
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        Ok(Self {
            trust_domain: self.trust_domain.clone(),
            issuer: Issuer::new(params, key),
            root_pem: self.root_pem.clone(),
            chain_pem: format!("{cert_pem}{}", self.chain_pem),
            cert_pem,
        })
    }

    /// The trust domain.
    #[must_use]
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// This CA's own certificate in PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate in PEM: the trust bundle for peers of this CA's workloads.
    #[must_use]
    pub fn trust_pem(&self) -> &str {
        &self.root_pem
    }

    /// A certificate revocation list, in PEM, signed by this CA: it revokes `revoked` (each a
    /// certificate this CA issued, in PEM: its leaf is read), and its next update is in a day.
    pub fn crl(&self, revoked: &[&str]) -> Result<String, DevCaError> {
        self.crl_until(revoked, wall_clock() + DAY)
    }

    /// [`crl`](Self::crl), with its next update at `next_update` (in the past, for a list that
    /// is overdue); issued an hour before that, or before now if sooner.
    pub fn crl_until(
        &self,
        revoked: &[&str],
        next_update: SystemTime,
    ) -> Result<String, DevCaError> {
        let now = wall_clock();
        let this_update = (now - HOUR).min(next_update - HOUR);
        let mut certs = Vec::new();
        for pem in revoked {
            let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| DevCaError::BadRevokedCert(e.to_string()))?;
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| DevCaError::BadRevokedCert(e.to_string()))?;
            certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: this_update.into(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: this_update.into(),
            next_update: next_update.into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// A certificate for the workload `spiffe://<trust domain>/<path>`, with the default
    /// options.
    pub fn workload(&self, path: &str) -> Result<IssuedCert, DevCaError> {
        let id = format!(
            "spiffe://{}/{}",
            self.trust_domain,
            path.trim_start_matches('/')
        );
        let identity = Identity::parse(&id).map_err(DevCaError::Identity)?;
        self.issue(&identity, &IssueOptions::default())
    }

    /// A certificate for `identity` (a URI SAN for a SPIFFE ID, a DNS SAN for a DNS name),
    /// usable for both server and client authentication.
    pub fn issue(
        &self,
        identity: &Identity,
        options: &IssueOptions,
    ) -> Result<IssuedCert, DevCaError> {
        let key = KeyPair::generate_for(options.algorithm.rcgen())?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.as_str());
        let san = match identity {
            Identity::Spiffe(id) => SanType::URI(Ia5String::try_from(id.as_str())?),
            Identity::Dns(name) => SanType::DnsName(Ia5String::try_from(name.as_str())?),
        };
        params.subject_alt_names.push(san);
        for name in &options.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(Ia5String::try_from(name.as_str())?));
        }
        params.not_before = options.not_before.into();
        params.not_after = options.not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            identity: identity.clone(),
            cert_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let now = wall_clock();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - HOUR).into();
    params.not_after = (now + 365 * DAY).into();
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}
