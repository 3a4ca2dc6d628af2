//! Serde for values that are written as text and parsed once, here: identities and identity
//! patterns, by their `FromStr` and `Display`.

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
use std::{fmt::Display, str::FromStr};

/// An optional value written as text (`#[serde(default, with = "text::option")]`).
pub(super) mod option {
    use super::*;

    pub(crate) fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr<Err: Display>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map(Some)
            .map_err(|e| D::Error::custom(format!("\"{text}\": {e}")))
    }

    pub(crate) fn serialize<S: Serializer, T: Display>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }
}

/// A list of values written as text (`#[serde(default, with = "text::list")]`).
pub(super) mod list {
    use super::*;

    pub(crate) fn deserialize<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr<Err: Display>,
    {
        Vec::<String>::deserialize(deserializer)?
            .into_iter()
            .map(|text| {
                text.parse()
                    .map_err(|e| D::Error::custom(format!("\"{text}\": {e}")))
            })
            .collect()
    }

    pub(crate) fn serialize<S: Serializer, T: Display>(
        values: &[T],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(ToString::to_string))
    }
}
