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
