//! Error types: bad identities, bad certificate material, failed handshakes.

use std::{
    error::Error,
    fmt, io,
    path::PathBuf,
    time::{Duration, SystemTime},
};

/// A string that is not a valid identity or identity pattern, or a certificate without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The text is not a valid SPIFFE ID, DNS name or pattern.
    Invalid {
        /// The text as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The certificate carries neither a SPIFFE ID (URI SAN) nor a DNS name (DNS SAN).
    NoIdentity,
    /// The certificate could not be parsed.
    BadCertificate(String),
}

impl IdentityError {
    pub(crate) fn invalid(value: &str, reason: &'static str) -> Self {
        Self::Invalid {
            value: value.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { value, reason } => write!(f, "invalid identity `{value}`: {reason}"),
            Self::NoIdentity => f.write_str(
                "the certificate carries no identity: expected a spiffe:// URI SAN or a DNS SAN",
            ),
            Self::BadCertificate(detail) => write!(f, "cannot parse the certificate: {detail}"),
        }
    }
}

impl Error for IdentityError {}

/// Certificate material that cannot be used. Every variant names the file at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaterialError {
    /// The file cannot be read (missing, unreadable).
    Read {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// The file holds no PEM `CERTIFICATE` block.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM, or a certificate in it is not valid DER.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is of a kind that is not supported.
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What the crypto provider said.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate has already expired.
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
    },
    /// The certificate is not valid yet.
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// When it becomes valid.
        not_before: String,
        /// The same, as a time: when a rotation looks at the file again.
        valid_from: SystemTime,
    },
    /// The certificate carries no usable identity.
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        source: IdentityError,
    },
    /// The trust bundle cannot be used to verify peers.
    Trust {
        /// The trust bundle file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A file of certificate revocation lists cannot be used.
    Crl {
        /// The CRL file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl MaterialError {
    /// The file at fault (the certificate file for a key that does not match it).
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Read { path, .. }
            | Self::NoCertificate { path }
            | Self::NoKey { path }
            | Self::BadPem { path, .. }
            | Self::UnsupportedKey { path, .. }
            | Self::KeyMismatch { cert: path, .. }
            | Self::Expired { path, .. }
            | Self::NotYetValid { path, .. }
            | Self::Identity { path, .. }
            | Self::Trust { path, .. }
            | Self::Crl { path, .. } => path,
        }
    }
}

impl fmt::Display for MaterialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => {
                write!(f, "cannot read `{}`: {source}", path.display())
            }
            Self::NoCertificate { path } => write!(
                f,
                "no certificate in `{}`: expected a PEM `CERTIFICATE` block",
                path.display()
            ),
            Self::NoKey { path } => write!(
                f,
                "no private key in `{}`: expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
                path.display()
            ),
            Self::BadPem { path, detail } => {
                write!(f, "invalid PEM in `{}`: {detail}", path.display())
            }
            Self::UnsupportedKey { path, detail } => {
                write!(
                    f,
                    "unsupported private key in `{}`: {detail}",
                    path.display()
                )
            }
            Self::KeyMismatch { cert, key } => write!(
                f,
                "the private key in `{}` does not match the certificate in `{}`",
                key.display(),
                cert.display()
            ),
            Self::Expired { path, not_after } => write!(
                f,
                "the certificate in `{}` expired on {not_after}",
                path.display()
            ),
            Self::NotYetValid {
                path, not_before, ..
            } => write!(
                f,
                "the certificate in `{}` is not valid before {not_before}",
                path.display()
            ),
            Self::Identity { path, source } => write!(f, "`{}`: {source}", path.display()),
            Self::Trust { path, detail } => {
                write!(f, "unusable trust bundle `{}`: {detail}", path.display())
            }
            Self::Crl { path, detail } => {
                write!(
                    f,
                    "unusable certificate revocation list `{}`: {detail}",
                    path.display()
                )
            }
        }
    }
}

impl Error for MaterialError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Identity { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a TLS handshake failed: the `reason` label of the handshake metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The client presented no certificate, and one is required.
    NoClientCertificate,
    /// The peer's certificate does not chain to our trust bundle (or, for a federated trust
    /// domain, to that domain's bundle): its issuer is unknown, a CA of the same name but
    /// another key signed it, or no bundle of ours is for its trust domain.
    UnknownCa,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate, or an intermediate CA of its chain, is revoked by one of our
    /// certificate revocation lists.
    Revoked,
    /// A revocation list of ours that the peer's chain meets cannot be used: its signature
    /// does not verify against the CA whose name it bears, or that CA may not sign lists.
    BadRevocationList,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is valid but names another identity than the expected one.
    IdentityMismatch,
    /// The peer's certificate carries no SPIFFE ID or DNS name.
    NoIdentity,
    /// The peer's certificate is invalid in another way (bad encoding, wrong usage, ...).
    BadCertificate,
    /// The peer rejected the handshake with an alert (for example, it did not trust us).
    PeerRejected,
    /// The peer supports no protocol version, cipher suite or ALPN protocol that we do.
    Incompatible,
    /// The peer did not speak TLS (plaintext on a strict port).
    NotTls,
    /// The peer broke the TLS protocol.
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
    /// The connection failed or closed during the handshake.
    Io,
}

impl FailureReason {
    /// The reason as a metric label: `no-client-certificate`, `unknown-ca`, `expired`, ...
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoClientCertificate => "no-client-certificate",
            Self::UnknownCa => "unknown-ca",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::BadRevocationList => "bad-revocation-list",
            Self::NotYetValid => "not-yet-valid",
            Self::IdentityMismatch => "identity-mismatch",
            Self::NoIdentity => "no-identity",
            Self::BadCertificate => "bad-certificate",
            Self::PeerRejected => "peer-rejected",
            Self::Incompatible => "incompatible",
            Self::NotTls => "not-tls",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Io => "io",
        }
    }

    /// Classifies an error from a rustls handshake.
    #[must_use]
    pub fn of_io(err: &io::Error) -> Self {
        if err.kind() == io::ErrorKind::TimedOut {
            return Self::Timeout;
        }
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::of_tls(tls),
            None => Self::Io,
        }
    }

    /// Classifies a rustls error.
    #[must_use]
    pub fn of_tls(err: &rustls::Error) -> Self {
        use rustls::{CertificateError as C, Error as E};
        match err {
            E::NoCertificatesPresented => Self::NoClientCertificate,
            E::InvalidCertificate(cert) => match cert {
                C::UnknownIssuer | C::BadSignature => Self::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => Self::Expired,
                C::Revoked => Self::Revoked,
                C::NotValidYet | C::NotValidYetContext { .. } => Self::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => Self::IdentityMismatch,
                C::Other(other) if other.0.downcast_ref::<IdentityMismatch>().is_some() => {
                    Self::IdentityMismatch
                }
                C::Other(other) if other.0.downcast_ref::<IdentityError>().is_some() => {
                    Self::NoIdentity
                }
                C::Other(other)
                    if other
                        .0
                        .downcast_ref::<crate::UnknownTrustDomain>()
                        .is_some() =>
                {
                    Self::UnknownCa
                }
                _ => Self::BadCertificate,
            },
            E::InvalidCertRevocationList(_) => Self::BadRevocationList,
            E::AlertReceived(_) => Self::PeerRejected,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Self::Incompatible,
            _ => Self::Protocol,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS handshake failed; [`reason`](Self::reason) says why.
#[derive(Debug)]
pub struct HandshakeError {
    reason: FailureReason,
    source: io::Error,
}

/// How long a handshake may take by default, on either side.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl HandshakeError {
    pub(crate) fn new(reason: FailureReason, source: io::Error) -> Self {
        Self { reason, source }
    }

    pub(crate) fn from_io(source: io::Error) -> Self {
        Self::new(FailureReason::of_io(&source), source)
    }

    /// `handshake`, failing as [`FailureReason::Timeout`] once it has taken `limit`.
    pub(crate) async fn within<T>(
        limit: Duration,
        handshake: impl Future<Output = Result<T, Self>>,
    ) -> Result<T, Self> {
        tokio::time::timeout(limit, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(Self::new(
                    FailureReason::Timeout,
                    io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"),
                ))
            })
    }

    /// Why the handshake failed.
    #[must_use]
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// The underlying I/O or TLS error.
    #[must_use]
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls handshake failed ({}): {}", self.reason, self.source)
    }
}

impl Error for HandshakeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

impl From<HandshakeError> for io::Error {
    fn from(err: HandshakeError) -> Self {
        io::Error::other(err)
    }
}

/// The server presented a valid certificate for another identity than the one expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityMismatch {
    pub(crate) expected: String,
    pub(crate) presented: Option<String>,
}

impl IdentityMismatch {
    /// The identity that was expected.
    #[must_use]
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// The identity that the certificate carries, if any.
    #[must_use]
    pub fn presented(&self) -> Option<&str> {
        self.presented.as_deref()
    }
}

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presented {
            Some(presented) => write!(
                f,
                "peer identity mismatch: expected `{}`, presented `{presented}`",
                self.expected
            ),
            None => write!(
                f,
                "peer identity mismatch: expected `{}`, the certificate names no identity",
                self.expected
            ),
        }
    }
}

impl Error for IdentityMismatch {}
