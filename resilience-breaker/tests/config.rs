//! `BreakerConfig`: parsed from TOML with defaults filled in; bad values named with their field.
#![cfg(feature = "serde")]

use resilience_breaker::{BreakerConfig, Policy, SlidingWindow, WindowConfig};
use std::time::Duration;

fn parse(text: &str) -> Result<BreakerConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[test]
fn an_empty_section_is_all_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, BreakerConfig::default());
    let policy = config.policy().unwrap();
    assert_eq!(policy.sliding_window(), Policy::DEFAULT_WINDOW);
    assert_eq!(
        policy.effective_minimum_calls(),
        Policy::DEFAULT_MINIMUM_CALLS
    );
    assert_eq!(policy.probes(), 3);
    assert_eq!(policy.open_duration(0), Duration::from_secs(5));
    assert_eq!(policy.open_duration(1), Duration::from_secs(10));
    assert_eq!(policy.open_duration(10), Duration::from_secs(60));
    assert!(!policy.judges_slow_calls());
}

#[test]
fn the_design_sketch_parses() {
    // The [outbound.breaker] section of examples/sidecar.toml.
    let config = parse(
        r#"
        failure_rate = 0.5
        window = { calls = 100 }           # or { duration = "10s" }
        minimum_calls = 20
        open_for = "5s"
        half_open_probes = 3
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.window, WindowConfig::Calls(100));
    assert_eq!(config.layer().unwrap().policy().probes(), 3);
}

#[test]
fn every_key_is_read() {
    let config = parse(
        r#"
        failure_rate = 0.25
        window = { duration = "10s" }
        minimum_calls = 7
        slow_call_rate = 0.8
        slow_call_duration = "1500ms"
        consecutive_failures = 4
        open_for = "2s"
        open_for_max = "30s"
        open_for_multiplier = 3.0
        jitter = 0.0
        half_open_probes = 5
        "#,
    )
    .unwrap();
    assert_eq!(config.failure_rate, Some(0.25));
    assert_eq!(
        config.window,
        WindowConfig::Duration(Duration::from_secs(10))
    );
    assert_eq!(config.minimum_calls, 7);
    assert_eq!(config.slow_call_rate, Some(0.8));
    assert_eq!(config.slow_call_duration, Duration::from_millis(1500));
    assert_eq!(config.consecutive_failures, Some(4));
    assert_eq!(config.open_for_max, Duration::from_secs(30));
    assert_eq!(config.half_open_probes, 5);
    let policy = config.policy().unwrap();
    assert_eq!(
        policy.sliding_window(),
        SlidingWindow::Time(Duration::from_secs(10))
    );
    assert_eq!(policy.open_duration(1), Duration::from_secs(6));
    assert_eq!(policy.open_duration(3), Duration::from_secs(30));
    assert!(policy.judges_slow_calls());
    // Round trip.
    let text = toml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config);
}

#[test]
fn unknown_keys_are_errors() {
    for text in [
        "failure_treshold = 0.5",
        "window = { count = 10 }",
        "window = { calls = 10, duration = \"1s\" }",
    ] {
        assert!(parse(text).is_err(), "{text}");
    }
}

#[test]
fn bad_values_are_rejected_naming_the_field_and_the_value() {
    for (text, field, value) in [
        ("failure_rate = 0.0", "failure_rate", "0"),
        ("failure_rate = 1.01", "failure_rate", "1.01"),
        ("slow_call_rate = -0.5", "slow_call_rate", "-0.5"),
        ("window = { calls = 0 }", "window.calls", "0"),
        ("minimum_calls = 0", "minimum_calls", "0"),
        ("half_open_probes = 0", "half_open_probes", "0"),
        ("consecutive_failures = 0", "consecutive_failures", "0"),
        ("open_for_multiplier = 0.5", "open_for_multiplier", "0.5"),
        ("jitter = 1.0", "jitter", "1"),
        ("open_for = \"2m\"", "open_for_max", "60s"),
    ] {
        let err = parse(text).unwrap().validate().unwrap_err();
        assert_eq!(err.field(), field, "{text}");
        assert_eq!(err.value(), value, "{text}");
        let message = err.to_string();
        assert!(
            message.contains(field) && message.contains(value),
            "{message}"
        );
    }
    // Durations are checked while parsing, by the shared helpers.
    for (text, value) in [
        ("open_for = \"0s\"", "0s"),
        ("window = { duration = \"soon\" }", "soon"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(&format!("`{value}`")), "{err}");
    }
}

#[test]
fn consecutive_failures_alone_judge_no_rate() {
    let config = parse("consecutive_failures = 3\nminimum_calls = 1").unwrap();
    let policy = config.policy().unwrap();
    let now = tokio::time::Instant::now();
    let machine = resilience_breaker::StateMachine::new(policy, now).unwrap();
    // Success, failure: 50 % over 2 calls would trip a rate rule; there is none.
    for failed in [false, true, true] {
        let permit = machine.acquire(now).0.unwrap();
        let outcome = if failed {
            resilience_breaker::Outcome::failure(Duration::ZERO)
        } else {
            resilience_breaker::Outcome::success(Duration::ZERO)
        };
        assert!(machine.record(permit, outcome, now).is_none());
    }
    let permit = machine.acquire(now).0.unwrap();
    let t = machine.record(
        permit,
        resilience_breaker::Outcome::failure(Duration::ZERO),
        now,
    );
    assert_eq!(t.map(|t| t.to), Some(resilience_breaker::State::Open));
}
