//! What is wrong with a config file: each problem with its field and line.

use std::fmt;

/// A problem in the config file: where (the field's path and, when found, its line) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigProblem {
    /// The field, as a path: `outbound[0].retry.attempts`.
    pub field: String,
    /// The line in the file, 1-based, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for ConfigProblem {}

/// Everything wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when read from one.
    pub file: Option<String>,
    /// The problems, in file order as far as known.
    pub errors: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{file}: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A middleware crate's config error (from `TimeoutConfig::layer`, `RetryConfig::layer`,
/// `BreakerConfig::layer`, ...), as a problem naming its field; so one `?` chain in library
/// mode can carry every config error as [`ConfigErrors`].
impl From<resilience_core::ConfigError> for ConfigProblem {
    fn from(error: resilience_core::ConfigError) -> Self {
        Self {
            field: error.field().to_owned(),
            line: None,
            message: error.to_string(),
        }
    }
}

/// The identity files' error (from `IdentityConfig::load`), as a problem of `identity`.
impl From<resilience_mtls::MaterialError> for ConfigProblem {
    fn from(error: resilience_mtls::MaterialError) -> Self {
        Self {
            field: "identity".to_owned(),
            line: None,
            message: error.to_string(),
        }
    }
}

/// One problem (from [`outbound`](crate::outbound) or [`inbound`](crate::inbound)) as the
/// errors of a config.
impl From<ConfigProblem> for ConfigErrors {
    fn from(problem: ConfigProblem) -> Self {
        Self {
            file: None,
            errors: vec![problem],
        }
    }
}

impl From<resilience_core::ConfigError> for ConfigErrors {
    fn from(error: resilience_core::ConfigError) -> Self {
        ConfigProblem::from(error).into()
    }
}

impl From<resilience_mtls::MaterialError> for ConfigErrors {
    fn from(error: resilience_mtls::MaterialError) -> Self {
        ConfigProblem::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every config error a library user meets goes through one `?` into `ConfigErrors`.
    #[test]
    fn config_errors_of_every_kind_convert_into_one_type() {
        fn layers() -> Result<(), ConfigErrors> {
            let retry = resilience_retry::RetryConfig {
                attempts: 0,
                ..Default::default()
            };
            let _layer = retry.layer()?;
            Ok(())
        }
        let errors = layers().unwrap_err();
        assert_eq!(errors.errors[0].field, "attempts");
        assert_eq!(
            errors.to_string(),
            "config: `attempts`: invalid `attempts` = 0: must be at least 1"
        );
        let timeout = resilience_timeout::TimeoutConfig::new(Duration::ZERO).layer();
        let problem = ConfigProblem::from(timeout.unwrap_err());
        assert_eq!(problem.field, "timeout");
        let errors = ConfigErrors::from(problem);
        assert_eq!(errors.errors.len(), 1);
    }
}
