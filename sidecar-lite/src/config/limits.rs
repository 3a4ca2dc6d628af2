//! `max_concurrent_requests`: a fixed number, or an adaptive limit.

use resilience_limit::AdaptiveConfig;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor, value::MapAccessDeserializer},
};
use std::fmt;

/// Requests in flight at once on a route (or inbound); beyond the limit, 503 `overloaded` at
/// once. A number (default 1024), `"adaptive"` (an adaptive limit with every key at its
/// default), or a table of `resilience_limit::AdaptiveConfig` keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConcurrencyLimit {
    /// At most this many.
    Fixed(usize),
    /// As many as the adaptive limit finds the upstream can take.
    Adaptive(AdaptiveConfig),
}

impl Default for ConcurrencyLimit {
    fn default() -> Self {
        Self::Fixed(1024)
    }
}

impl ConcurrencyLimit {
    /// The fixed limit, if it is one.
    pub(crate) fn fixed(&self) -> Option<usize> {
        match self {
            Self::Fixed(n) => Some(*n),
            Self::Adaptive(_) => None,
        }
    }
}

impl Serialize for ConcurrencyLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(n) => serializer.serialize_u64(*n as u64),
            Self::Adaptive(config) => config.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ConcurrencyLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Limit;

        impl<'de> Visitor<'de> for Limit {
            type Value = ConcurrencyLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of requests, \"adaptive\", or a table of adaptive-limit keys")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                usize::try_from(n)
                    .map(ConcurrencyLimit::Fixed)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative: must be at least 1")))
                    .and_then(|n| self.visit_u64(n))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                match text {
                    "adaptive" => Ok(ConcurrencyLimit::Adaptive(AdaptiveConfig::default())),
                    other => Err(E::custom(format!(
                        "\"{other}\" is not a limit: a number, \"adaptive\", or a table"
                    ))),
                }
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                AdaptiveConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(ConcurrencyLimit::Adaptive)
            }
        }

        deserializer.deserialize_any(Limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Section {
        limit: ConcurrencyLimit,
    }

    fn parse(text: &str) -> Result<ConcurrencyLimit, String> {
        toml::from_str::<Section>(text)
            .map(|s| s.limit)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_number_the_word_adaptive_or_a_table() {
        assert_eq!(parse("limit = 64"), Ok(ConcurrencyLimit::Fixed(64)));
        assert_eq!(
            parse("limit = \"adaptive\""),
            Ok(ConcurrencyLimit::Adaptive(AdaptiveConfig::default()))
        );
        let ConcurrencyLimit::Adaptive(table) =
            parse("limit = { algorithm = \"aimd\", max_limit = 64 }").unwrap()
        else {
            panic!("a table is adaptive");
        };
        assert_eq!(table.max_limit, 64);
        let text = toml::to_string(&Section {
            limit: ConcurrencyLimit::Adaptive(table.clone()),
        })
        .unwrap();
        assert_eq!(
            parse(&text),
            Ok(ConcurrencyLimit::Adaptive(table)),
            "{text}"
        );
    }

    #[test]
    fn anything_else_says_what_is_expected() {
        for (text, expected) in [
            ("limit = -1", "negative"),
            ("limit = \"lots\"", "\"lots\" is not a limit"),
            (
                "limit = { algoritm = \"aimd\" }",
                "unknown field `algoritm`",
            ),
            ("limit = 1.5", "a number of requests"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
