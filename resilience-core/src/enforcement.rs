//! [`Enforcement`]: whether a policy refuses calls, or only says it would.

use std::fmt;

/// Whether a policy (a breaker, a rate limit, an authorization rule) acts on its decisions.
/// In [`Shadow`](Self::Shadow) mode every decision is made, counted and logged as if it were
/// enforced, and nothing is refused: a policy can be rolled out and watched before it bites.
///
/// ```
/// use resilience_core::Enforcement;
///
/// assert!(Enforcement::default().refuses());
/// assert!(!Enforcement::Shadow.refuses());
/// assert_eq!(Enforcement::Shadow.to_string(), "shadow");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Enforcement {
    /// Decisions are acted on: a refused call is refused.
    #[default]
    Enforce,
    /// Decisions are counted and logged; every call goes through.
    Shadow,
}

impl Enforcement {
    /// Whether a refusal is acted on.
    #[must_use]
    pub const fn refuses(self) -> bool {
        matches!(self, Self::Enforce)
    }

    /// `enforce` or `shadow`, as a metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
