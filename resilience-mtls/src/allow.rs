//! [`AllowList`]: which peer identities may call.

use crate::{Identity, IdentityError, IdentityPattern};
use std::{collections::HashSet, fmt};

/// The identities that may call: exact identities and [`IdentityPattern`]s with `*` segments,
/// and whether anonymous peers (plaintext in permissive mode) may.
///
/// ```
/// use resilience_mtls::{AllowList, Identity};
///
/// let allow = AllowList::parse([
///     "spiffe://example.org/ns/shop/sa/frontend",
///     "spiffe://example.org/ns/ops/sa/*",
/// ]).unwrap();
/// let id = |s: &str| s.parse::<Identity>().unwrap();
/// assert!(allow.is_allowed(Some(&id("spiffe://example.org/ns/ops/sa/deployer"))));
/// assert!(!allow.is_allowed(Some(&id("spiffe://example.org/ns/shop/sa/orders"))));
/// assert!(!allow.is_allowed(None));
/// assert!(allow.allow_anonymous(true).is_allowed(None));
/// ```
///
/// With the `serde` feature it reads from (and writes to) a list of strings, such as the
/// `allow` key of a config file; whether anonymous peers are admitted is a separate setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(try_from = "Vec<String>", into = "Vec<String>")
)]
#[must_use]
pub struct AllowList {
    exact: HashSet<Identity>,
    patterns: Vec<IdentityPattern>,
    anonymous: bool,
}

impl AllowList {
    /// An empty list: denies everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a list of identities and patterns, naming the first bad one.
    pub fn parse<I>(patterns: I) -> Result<Self, IdentityError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        patterns.into_iter().try_fold(Self::new(), |list, text| {
            Ok(list.allow(IdentityPattern::parse(text.as_ref())?))
        })
    }

    /// Admits identities that match `pattern`.
    pub fn allow(mut self, pattern: IdentityPattern) -> Self {
        if pattern.is_exact()
            && let Ok(identity) = Identity::parse(pattern.as_str())
        {
            self.exact.insert(identity);
            return self;
        }
        self.patterns.push(pattern);
        self
    }

    /// Whether peers without an identity may call; default `false`.
    pub fn allow_anonymous(mut self, allowed: bool) -> Self {
        self.anonymous = allowed;
        self
    }

    /// Whether a peer with `identity` (`None`: anonymous) may call.
    #[must_use]
    pub fn is_allowed(&self, identity: Option<&Identity>) -> bool {
        match identity {
            None => self.anonymous,
            Some(identity) => {
                self.exact.contains(identity) || self.patterns.iter().any(|p| p.matches(identity))
            }
        }
    }

    /// The number of identities and patterns in the list.
    #[must_use]
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// Whether the list admits no identity (it may still admit anonymous peers).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identities and patterns as text, exact ones sorted first.
    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        let mut exact: Vec<String> = self.exact.iter().map(ToString::to_string).collect();
        exact.sort();
        exact.extend(self.patterns.iter().map(ToString::to_string));
        exact
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.to_strings().join(", "))?;
        if self.anonymous {
            f.write_str(" + anonymous")?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl TryFrom<Vec<String>> for AllowList {
    type Error = IdentityError;

    fn try_from(patterns: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(patterns)
    }
}

#[cfg(feature = "serde")]
impl From<AllowList> for Vec<String> {
    fn from(list: AllowList) -> Self {
        list.to_strings()
    }
}
