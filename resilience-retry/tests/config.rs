//! `RetryConfig`: the sidecar's retry section, with defaults, validation naming the field, and
//! the layer it builds.
#![cfg(feature = "serde")]

use resilience_retry::{Condition, Jitter, RetryConfig};
use std::time::Duration;

fn parse(text: &str) -> Result<RetryConfig, String> {
    toml::from_str::<RetryConfig>(text).map_err(|e| e.to_string())
}

#[test]
fn an_empty_section_gives_the_documented_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, RetryConfig::default());
    assert_eq!(config.attempts, 3);
    assert_eq!(
        config.on,
        [
            Condition::GatewayError,
            Condition::ConnectFailure,
            Condition::Reset
        ]
    );
    assert_eq!(config.backoff.base, Duration::from_millis(25));
    assert_eq!(config.backoff.max, Duration::from_millis(250));
    assert_eq!(config.backoff.jitter, Jitter::Full);
    assert_eq!(config.budget.ratio, 0.2);
    assert_eq!(config.budget.min_per_second, 10);
    assert_eq!(config.budget.ttl, Duration::from_secs(10));
    assert_eq!(config.max_replay_body, 64 * 1024);
    assert!(config.layer().is_ok());
    assert!(config.per_try_timeout_layer().is_none());
}

#[test]
fn the_design_example_section_parses() {
    let config = parse(
        r#"
        attempts = 3
        per_try_timeout = "500ms"
        on = ["connect-failure", "reset", "gateway-error", "retriable-status-codes", "unavailable"]
        retriable_status_codes = [409]
        backoff = { base = "25ms", max = "250ms", jitter = "decorrelated" }
        budget = { ratio = 0.2, min_per_second = 10, ttl = "10s" }
        max_replay_body = "64KiB"
        max_retry_after = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(config.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(config.backoff.jitter, Jitter::Decorrelated);
    assert_eq!(config.max_retry_after, Duration::from_secs(3));
    config.validate().unwrap();
    assert_eq!(
        config.per_try_timeout_layer().unwrap().timeout(),
        Duration::from_millis(500)
    );
    // It round-trips through serialization.
    assert_eq!(parse(&toml::to_string(&config).unwrap()).unwrap(), config);
}

#[test]
fn bad_values_name_the_field_and_the_value() {
    let cases = [
        (r#"on = ["5xx", "sometimes"]"#, "\"sometimes\""),
        (r#"backoff = { base = "0s" }"#, "`0s`"),
        (r#"per_try_timeout = "-1s""#, "`-1s`"),
        (r#"max_replay_body = "lots""#, "`lots`"),
        (r#"backoff = { jitter = "wild" }"#, "wild"),
        ("retries = 3", "unknown field `retries`"),
    ];
    for (text, needle) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }

    let validation = [
        ("attempts = 0", "invalid `attempts` = 0: must be at least 1"),
        (
            r#"backoff = { base = "1s", max = "10ms" }"#,
            "invalid `backoff.max` = 10ms: must be at least `backoff.base`",
        ),
        (
            "backoff = { multiplier = 0.5 }",
            "invalid `backoff.multiplier` = 0.5",
        ),
        ("budget = { ratio = -1.0 }", "invalid `budget.ratio` = -1"),
        (
            "retriable_status_codes = [409]",
            "invalid `retriable_status_codes` = [409]: has no effect",
        ),
        (
            r#"on = ["retriable-status-codes"]
retriable_status_codes = [1000]"#,
            "invalid `retriable_status_codes` = 1000: is not an HTTP status",
        ),
    ];
    for (text, message) in validation {
        let err = parse(text).unwrap().validate().unwrap_err().to_string();
        assert!(err.starts_with(message), "{text}: {err}");
    }
}
