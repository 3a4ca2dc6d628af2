//! Serde helpers for durations written the way people write them: `"250ms"`, `"2s"`, `"1m 30s"`.
//!
//! Use with `#[serde(with = "resilience_core::duration")]`, or
//! `resilience_core::duration::option` for an optional field. Zero and negative durations
//! are rejected with an error that quotes the value; every resilience crate's config uses
//! these helpers, so every duration in a config file reads the same way.

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
use std::time::Duration;

const EXPECTED: &str = "a positive duration such as \"250ms\", \"2s\" or \"1m 30s\"";

/// The longest duration a config may give: 365 days. Longer than any timeout, interval or open
/// duration that means anything, and far from the overflow of the clock arithmetic in hyper
/// and tokio that a duration of many thousand years would cause.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parses a positive duration of at most [`MAX`], or says what was wrong with `text`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration `{text}` ({e}); expected {EXPECTED}"))?;
    if duration.is_zero() {
        return Err(format!(
            "invalid duration `{text}`: must be greater than zero"
        ));
    }
    if duration > MAX {
        return Err(format!(
            "invalid duration `{text}`: over the maximum of 365days"
        ));
    }
    Ok(duration)
}

/// Formats a duration the way [`parse`] reads it.
#[must_use]
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Deserializes a positive duration from a string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(D::Error::custom)
}

/// Serializes a duration as a string such as `"2s"`.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// The same, for `Option<Duration>` fields (use with `#[serde(default, with = "...")]`).
pub mod option {
    use super::*;

    /// Deserializes a positive duration from a string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(deserializer).map(Some)
    }

    /// Serializes a duration as a string, or nothing.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn rejects_zero_negative_and_garbage_quoting_the_value() {
        for bad in ["0s", "0ms", "-1s", "soon", "", "5"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn rejects_durations_over_a_year_quoting_the_value() {
        assert_eq!(parse("365days"), Ok(MAX));
        for huge in ["366days", "500000000000y", "2years"] {
            let err = parse(huge).unwrap_err();
            assert!(err.contains(&format!("`{huge}`")), "{err}");
            assert!(err.contains("over the maximum of 365days"), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        let d = Duration::from_millis(1500);
        assert_eq!(parse(&format(d)), Ok(d));
    }
}
