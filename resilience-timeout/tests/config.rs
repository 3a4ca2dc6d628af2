//! `TimeoutConfig`: parsed from TOML with defaults filled in; bad values named with their field.
#![cfg(feature = "serde")]

use resilience_timeout::{HttpDeadline, TimeoutConfig};
use std::time::Duration;

fn parse(text: &str) -> Result<TimeoutConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[test]
fn defaults_fill_everything_but_the_timeout() {
    let config = parse(r#"timeout = "2s""#).unwrap();
    assert_eq!(config, TimeoutConfig::new(Duration::from_secs(2)));
    assert_eq!(config.deadline_margin, HttpDeadline::DEFAULT_MARGIN);
    assert!(config.propagate_deadline);
    config.validate().unwrap();
    assert_eq!(config.layer().unwrap().timeout(), Duration::from_secs(2));
    assert!(config.body_layer().unwrap().is_none());
}

#[test]
fn every_key_is_read() {
    let config = parse(
        r#"
        timeout = "1m 30s"
        deadline_margin = "20ms"
        propagate_deadline = false
        body_idle_timeout = "10s"
        body_timeout = "2m"
        "#,
    )
    .unwrap();
    assert_eq!(config.timeout, Duration::from_secs(90));
    assert_eq!(config.deadline_margin, Duration::from_millis(20));
    assert!(!config.propagate_deadline);
    assert_eq!(config.body_idle_timeout, Some(Duration::from_secs(10)));
    assert_eq!(config.body_timeout, Some(Duration::from_secs(120)));
    assert!(config.body_layer().unwrap().is_some());
}

#[test]
fn bad_durations_are_rejected_naming_the_field_and_the_value() {
    for (text, field, value) in [
        (r#"timeout = "0s""#, "timeout", "0s"),
        (r#"timeout = "-1s""#, "timeout", "-1s"),
        (r#"timeout = "soon""#, "timeout", "soon"),
        (
            "timeout = \"2s\"\nbody_idle_timeout = \"0ms\"",
            "body_idle_timeout",
            "0ms",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(field), "{err}");
        assert!(err.contains(&format!("`{value}`")), "{err}");
    }
}

#[test]
fn unknown_keys_and_missing_timeout_are_errors() {
    let err = parse("timeout = \"2s\"\ntimout = \"3s\"").unwrap_err();
    assert!(err.contains("unknown field `timout`"), "{err}");
    let err = parse("").unwrap_err();
    assert!(err.contains("missing field `timeout`"), "{err}");
}

#[test]
fn validate_names_the_field_when_built_in_code() {
    let mut config = TimeoutConfig::new(Duration::ZERO);
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert_eq!(
        err.to_string(),
        "invalid `timeout` = \"0s\": must be greater than zero"
    );

    config.timeout = Duration::from_millis(5);
    config.deadline_margin = Duration::from_millis(5);
    let err = config.layer().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `deadline_margin` = \"5ms\": must be less than `timeout`"
    );
}

#[test]
fn serializes_back_to_the_same_config() {
    let config = parse("timeout = \"250ms\"\nbody_timeout = \"1s\"").unwrap();
    let text = toml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config);
}
