//! [`Identity`]: who a peer is, read from its certificate; [`IdentityPattern`]: whom to admit.

use crate::IdentityError;
use rustls_pki_types::CertificateDer;
use std::{fmt, str::FromStr};
use x509_parser::{extensions::GeneralName, prelude::X509Certificate};

const SPIFFE_SCHEME: &str = "spiffe://";
const MAX_SPIFFE_LEN: usize = 2048;
const MAX_DNS_LEN: usize = 253;

/// A workload identity: a SPIFFE ID from a certificate's URI SAN, or else a DNS name from its
/// DNS SAN.
///
/// ```
/// use resilience_mtls::Identity;
///
/// let id: Identity = "spiffe://example.org/ns/shop/sa/orders".parse().unwrap();
/// assert!(id.is_spiffe());
/// assert_eq!(id.to_string(), "spiffe://example.org/ns/shop/sa/orders");
///
/// let dns: Identity = "Orders.Shop.svc".parse().unwrap();
/// assert_eq!(dns.as_str(), "orders.shop.svc");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A SPIFFE ID, `spiffe://trust-domain/path`.
    Spiffe(SpiffeId),
    /// A DNS name, in lowercase, without a trailing dot.
    Dns(String),
}

impl Identity {
    /// Parses a SPIFFE ID (text starting with `spiffe://`) or else a DNS name.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        if text.starts_with(SPIFFE_SCHEME) {
            SpiffeId::parse(text).map(Self::Spiffe)
        } else if text.contains("://") {
            Err(IdentityError::invalid(
                text,
                "only spiffe:// URIs and DNS names are identities",
            ))
        } else {
            parse_dns(text).map(Self::Dns)
        }
    }

    /// Reads the identity of a certificate: its SPIFFE URI SAN, or else its first DNS SAN that
    /// is not a wildcard. A certificate with a SPIFFE URI SAN and another URI SAN is refused:
    /// an X.509-SVID has exactly one (SPIFFE X509-SVID section 2), and which would it be?
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        Self::from_x509(&cert)
    }

    pub(crate) fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, IdentityError> {
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let names = sans.map(|ext| &ext.value.general_names[..]).unwrap_or(&[]);
        let mut uris = names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let spiffe = uris.clone().find(|uri| uri.starts_with(SPIFFE_SCHEME));
        if let Some(uri) = spiffe {
            if uris.nth(1).is_some() {
                return Err(IdentityError::invalid(
                    uri,
                    "an X.509-SVID has exactly one URI SAN, and this certificate has more",
                ));
            }
            return SpiffeId::parse(uri).map(Self::Spiffe);
        }
        names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(dns) if !dns.starts_with('*') => parse_dns(dns).ok(),
                _ => None,
            })
            .map(Self::Dns)
            .ok_or(IdentityError::NoIdentity)
    }

    /// The identity as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Spiffe(id) => id.as_str(),
            Self::Dns(name) => name,
        }
    }

    /// Whether this is a SPIFFE ID.
    #[must_use]
    pub fn is_spiffe(&self) -> bool {
        matches!(self, Self::Spiffe(_))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<SpiffeId> for Identity {
    fn from(id: SpiffeId) -> Self {
        Self::Spiffe(id)
    }
}

/// A SPIFFE ID: `spiffe://` + trust domain + path, checked against the SPIFFE ID rules
/// (lowercase trust domain; path segments of letters, digits, `.`, `-` and `_`, none empty,
/// `.` or `..`; no query, fragment, port or trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    domain_end: usize,
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let rest = text
            .strip_prefix(SPIFFE_SCHEME)
            .ok_or_else(|| IdentityError::invalid(text, "a SPIFFE ID starts with `spiffe://`"))?;
        if text.len() > MAX_SPIFFE_LEN {
            return Err(IdentityError::invalid(text, "longer than 2048 bytes"));
        }
        let (domain, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        check_trust_domain(text, domain)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                check_path_segment(text, segment)?;
            }
        }
        Ok(Self {
            id: text.to_owned(),
            domain_end: SPIFFE_SCHEME.len() + domain.len(),
        })
    }

    /// Checks that `domain` is a trust domain's name, such as `example.org`: not empty, and
    /// only lowercase letters, digits, `-`, `.` and `_`. The error says what is wrong.
    pub fn check_trust_domain(domain: &str) -> Result<(), &'static str> {
        match check_trust_domain(domain, domain) {
            Err(IdentityError::Invalid { reason, .. }) => Err(reason),
            _ => Ok(()),
        }
    }

    /// The trust domain, for example `example.org`.
    #[must_use]
    pub fn trust_domain(&self) -> &str {
        &self.id[SPIFFE_SCHEME.len()..self.domain_end]
    }

    /// The path, for example `/ns/shop/sa/orders`; empty for the trust domain's own ID.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.id[self.domain_end..]
    }

    /// The whole ID as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

fn check_trust_domain(text: &str, domain: &str) -> Result<(), IdentityError> {
    if domain.is_empty() {
        return Err(IdentityError::invalid(text, "the trust domain is empty"));
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(IdentityError::invalid(
            text,
            "the trust domain may hold only lowercase letters, digits, `-`, `.` and `_`",
        ));
    }
    Ok(())
}

fn check_path_segment(text: &str, segment: &str) -> Result<(), IdentityError> {
    match segment {
        "" => Err(IdentityError::invalid(
            text,
            "the path has an empty segment or a trailing `/`",
        )),
        "." | ".." => Err(IdentityError::invalid(
            text,
            "the path may not hold `.` or `..` segments",
        )),
        _ if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            Err(IdentityError::invalid(
                text,
                "path segments may hold only letters, digits, `-`, `.` and `_`",
            ))
        }
        _ => Ok(()),
    }
}

fn parse_dns(text: &str) -> Result<String, IdentityError> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_DNS_LEN {
        return Err(IdentityError::invalid(
            text,
            "a DNS name has 1 to 253 characters",
        ));
    }
    for label in name.split('.') {
        check_dns_label(text, label)?;
    }
    Ok(name)
}

fn check_dns_label(text: &str, label: &str) -> Result<(), IdentityError> {
    if label.is_empty() || label.len() > 63 {
        return Err(IdentityError::invalid(
            text,
            "each DNS label has 1 to 63 characters",
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || label.starts_with('-')
        || label.ends_with('-')
    {
        return Err(IdentityError::invalid(
            text,
            "DNS labels hold letters, digits and inner `-`",
        ));
    }
    Ok(())
}

/// An identity to admit: exact, or with `*` standing for exactly one path segment of a SPIFFE
/// ID (the trust domain counts as a segment) or one label of a DNS name.
///
/// ```
/// use resilience_mtls::{Identity, IdentityPattern};
///
/// let ops: IdentityPattern = "spiffe://example.org/ns/ops/sa/*".parse().unwrap();
/// let id = |s: &str| s.parse::<Identity>().unwrap();
/// assert!(ops.matches(&id("spiffe://example.org/ns/ops/sa/deployer")));
/// assert!(!ops.matches(&id("spiffe://example.org/ns/ops/sa/deployer/extra")));
/// assert!(!ops.matches(&id("spiffe://example.org/ns/shop/sa/deployer")));
///
/// let dns: IdentityPattern = "*.shop.svc".parse().unwrap();
/// assert!(dns.matches(&id("orders.shop.svc")));
/// assert!(!dns.matches(&id("a.orders.shop.svc")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityPattern {
    text: String,
    spiffe: bool,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Any,
    Exact(String),
}

impl IdentityPattern {
    /// Parses a pattern: an identity in which whole segments may be `*`.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let spiffe = text.starts_with(SPIFFE_SCHEME);
        if !spiffe && text.contains("://") {
            // `SPIFFE://...` would otherwise be read as a DNS name, lower-cased into a valid
            // sample, and match nothing: an allow-list entry that silently allows no one.
            return Err(IdentityError::invalid(
                text,
                "only spiffe:// URIs (the scheme in lower case) and DNS names are identities",
            ));
        }
        let (body, separator) = if spiffe {
            (&text[SPIFFE_SCHEME.len()..], '/')
        } else {
            (text.strip_suffix('.').unwrap_or(text), '.')
        };
        let mut segments = Vec::new();
        let mut sample = String::with_capacity(text.len());
        if spiffe {
            sample.push_str(SPIFFE_SCHEME);
        }
        for (i, part) in body.split(separator).enumerate() {
            if i > 0 {
                sample.push(separator);
            }
            if part == "*" {
                segments.push(Segment::Any);
                sample.push('x');
            } else if part.contains('*') {
                return Err(IdentityError::invalid(
                    text,
                    "`*` must stand for a whole segment",
                ));
            } else {
                let part = if spiffe && i > 0 {
                    part.to_owned()
                } else {
                    part.to_ascii_lowercase()
                };
                sample.push_str(&part);
                segments.push(Segment::Exact(part));
            }
        }
        // Check everything but the wildcards by parsing a sample identity in their place.
        Identity::parse(&sample).map_err(|err| match err {
            IdentityError::Invalid { reason, .. } => IdentityError::invalid(text, reason),
            other => other,
        })?;
        Ok(Self {
            text: text.to_owned(),
            spiffe,
            segments,
        })
    }

    /// Whether `identity` matches the pattern.
    #[must_use]
    pub fn matches(&self, identity: &Identity) -> bool {
        let (text, separator) = match identity {
            Identity::Spiffe(id) if self.spiffe => (&id.as_str()[SPIFFE_SCHEME.len()..], '/'),
            Identity::Dns(name) if !self.spiffe => (name.as_str(), '.'),
            _ => return false,
        };
        let mut parts = text.split(separator);
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(part)) if !part.is_empty() => {}
                (Segment::Exact(want), Some(part)) if want == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    /// Whether the pattern has no `*`: it matches one identity only.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        !self.segments.contains(&Segment::Any)
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for IdentityPattern {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    #[test]
    fn spiffe_ids_parse_and_split() {
        let Identity::Spiffe(spiffe) = id("spiffe://example.org/ns/shop/sa/orders") else {
            panic!("not spiffe")
        };
        assert_eq!(spiffe.trust_domain(), "example.org");
        assert_eq!(spiffe.path(), "/ns/shop/sa/orders");
        let Identity::Spiffe(bare) = id("spiffe://example.org") else {
            panic!("not spiffe")
        };
        assert_eq!(bare.path(), "");
    }

    #[test]
    fn bad_spiffe_ids_are_rejected_with_a_reason() {
        for bad in [
            "spiffe://",
            "spiffe:///path",
            "spiffe://Example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?b=c",
            "spiffe://example.org:443/a",
            "https://example.org/a",
        ] {
            let err = Identity::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn dns_names_are_lowercased_and_checked() {
        assert_eq!(id("Orders.Shop.svc.").as_str(), "orders.shop.svc");
        for bad in ["", "a..b", "-a.b", "a b", "*.b"] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_one_segment_per_star() {
        let p = IdentityPattern::parse("spiffe://example.org/ns/*/sa/*").unwrap();
        assert!(!p.is_exact());
        assert!(p.matches(&id("spiffe://example.org/ns/shop/sa/orders")));
        assert!(!p.matches(&id("spiffe://example.org/ns/shop/sa")));
        assert!(!p.matches(&id("spiffe://example.org/ns/shop/sa/orders/x")));
        assert!(!p.matches(&id("spiffe://other.org/ns/shop/sa/orders")));
        assert!(!p.matches(&id("orders.shop.svc")));

        let domain = IdentityPattern::parse("spiffe://*/ns/shop").unwrap();
        assert!(domain.matches(&id("spiffe://a.org/ns/shop")));

        let exact = IdentityPattern::parse("spiffe://example.org/ns/shop").unwrap();
        assert!(exact.is_exact());
        assert!(exact.matches(&id("spiffe://example.org/ns/shop")));
        assert!(!exact.matches(&id("spiffe://example.org/ns/Shop")));
    }

    #[test]
    fn dns_patterns_match_labels() {
        let p = IdentityPattern::parse("*.Shop.svc").unwrap();
        assert!(p.matches(&id("orders.shop.svc")));
        assert!(!p.matches(&id("shop.svc")));
        assert!(!p.matches(&id("spiffe://shop.svc/x")));
    }

    #[test]
    fn partial_stars_and_bad_patterns_are_rejected() {
        for bad in [
            "spiffe://example.org/ns/ops-*",
            "spiffe://example.org/ns/**",
            "spiffe://example.org/ns/*/",
            "a*.svc",
            "http://x/*",
            // Read as a DNS name before, it matched no one.
            "SPIFFE://example.org/ns/ops/sa/deployer",
        ] {
            let err = IdentityPattern::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[cfg(feature = "dev-ca")]
    #[test]
    fn a_certificate_with_a_spiffe_id_and_another_uri_san_is_refused() {
        let certificate = |uris: &[&str]| {
            let mut params = rcgen::CertificateParams::default();
            params.subject_alt_names = uris
                .iter()
                .map(|uri| rcgen::SanType::URI((*uri).try_into().unwrap()))
                .collect();
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().clone()
        };
        let deployer = "spiffe://example.org/ns/ops/sa/deployer";
        let two = certificate(&[deployer, "spiffe://example.org/ns/shop/sa/web"]);
        let err = Identity::from_certificate(&two).unwrap_err();
        assert!(err.to_string().contains("exactly one URI SAN"), "{err}");
        let other = certificate(&["https://example.org/", deployer]);
        assert!(Identity::from_certificate(&other).is_err());
        let one = certificate(&[deployer]);
        assert_eq!(Identity::from_certificate(&one).unwrap(), id(deployer));
    }
}
