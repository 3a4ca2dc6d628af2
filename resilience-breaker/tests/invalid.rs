//! Bad input is an error that names what is wrong, never a panic: every constructor that takes a
//! policy rejects an invalid one, and extreme but valid settings run.

use resilience_breaker::{
    BreakerHandle, BreakerMap, BreakerOpen, CircuitBreaker, CircuitBreakerLayer, ConfigError,
    KeyedCircuitBreakerLayer, Policy, RandomSource, SlidingWindow, State, StateMachine,
};
use std::time::Duration;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// Invalid policies, with the field and the value the error must name.
fn invalid() -> Vec<(Policy, &'static str, &'static str)> {
    vec![
        (Policy::default().failure_rate(1.5), "failure_rate", "1.5"),
        (
            Policy::default().failure_rate(f64::NAN),
            "failure_rate",
            "NaN",
        ),
        (
            Policy::default().window(SlidingWindow::Count(0)),
            "window.calls",
            "0",
        ),
        (
            Policy::default().open_for(Duration::ZERO),
            "open_for",
            "0ns",
        ),
        (
            Policy::default().open_for_multiplier(-2.0),
            "open_for_multiplier",
            "-2",
        ),
        (Policy::default().jitter(2.0), "jitter", "2"),
        (
            Policy::default().half_open_probes(0),
            "half_open_probes",
            "0",
        ),
    ]
}

/// A public constructor that takes a policy, reduced to its error.
type Construct = fn(Policy) -> Result<(), ConfigError>;

/// Each public constructor that takes a policy.
fn constructors() -> Vec<(&'static str, Construct)> {
    vec![
        ("StateMachine::new", |p| {
            StateMachine::new(p, Instant::now()).map(drop)
        }),
        ("BreakerHandle::new", |p| {
            BreakerHandle::new("payments", p).map(drop)
        }),
        ("CircuitBreakerLayer::new", |p| {
            CircuitBreakerLayer::new(p).map(drop)
        }),
        ("CircuitBreaker::layer", |p| {
            CircuitBreaker::<()>::layer(p).map(drop)
        }),
        ("KeyedCircuitBreakerLayer::new", |p| {
            KeyedCircuitBreakerLayer::new(p).map(drop)
        }),
        ("BreakerMap::new", |p| {
            BreakerMap::<String>::new("payments", p, 16, Duration::from_secs(60)).map(drop)
        }),
    ]
}

#[tokio::test]
async fn every_constructor_rejects_an_invalid_policy_naming_the_field_and_value() {
    for (name, construct) in constructors() {
        for (policy, field, value) in invalid() {
            let err = construct(policy).expect_err(name);
            assert_eq!(err.field(), field, "{name}");
            assert_eq!(err.value(), value, "{name}");
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{field}` = {value}")),
                "{name}: {message}"
            );
        }
        construct(Policy::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn the_error_says_what_is_wrong() {
    let err = CircuitBreakerLayer::new(Policy::default().failure_rate(1.5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `failure_rate` = 1.5: must be in (0, 1]"
    );
    let err =
        BreakerHandle::new("payments", Policy::default().open_for_max(Duration::ZERO)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `open_for_max` = 0ns: must not be less than `open_for`"
    );
}

#[cfg(feature = "serde")]
#[test]
fn breaker_config_layer_rejects_an_invalid_policy() {
    let config = resilience_breaker::BreakerConfig {
        failure_rate: Some(1.5),
        ..Default::default()
    };
    let err = config.layer().unwrap_err();
    assert_eq!((err.field(), err.value()), ("failure_rate", "1.5"));
}

#[test]
fn open_duration_of_an_invalid_policy_does_not_panic() {
    // A negative multiplier fails `validate`; the public arithmetic still gives a duration.
    let policy = Policy::default().open_for_multiplier(-3.0);
    assert!(policy.validate().is_err());
    for reopens in 0..4 {
        assert!(policy.open_duration(reopens) <= Policy::DEFAULT_OPEN_FOR_MAX);
    }
}

#[derive(Debug)]
struct Zero;

impl RandomSource for Zero {
    fn next_f64(&self) -> f64 {
        0.0
    }
}

#[test]
fn an_endless_open_duration_opens_for_thirty_years() {
    let t0 = Instant::now();
    // Valid, and far beyond what the clock can add: capped rather than overflowing.
    let policy = Policy::consecutive_failures(1)
        .open_for(Duration::MAX)
        .open_for_max(Duration::MAX)
        .random_source(Zero);
    let m = StateMachine::new(policy, t0).unwrap();
    let permit = m.acquire(t0).0.unwrap();
    let t = m
        .record(
            permit,
            resilience_breaker::Outcome::failure(Duration::ZERO),
            t0,
        )
        .expect("tripped");
    assert_eq!(t.to, State::Open);
    let thirty_years = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    assert_eq!(t.open_until, Some(t0 + thirty_years));
    let open = m.acquire(t0).0.unwrap_err();
    assert_eq!(open.retry_after(), Some(thirty_years));
    assert_eq!(open.retry_after_secs(), Some(thirty_years.as_secs()));
}

#[tokio::test(start_paused = true)]
async fn back_pressure_call_without_poll_ready_asks_the_breaker() {
    let layer = CircuitBreakerLayer::new(Policy::default())
        .unwrap()
        .back_pressure();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
    // `call` without `poll_ready` breaks the `Service` contract, but is not a panic.
    assert_eq!(svc.call(()).await.unwrap(), "ok");
    svc.handle().force_open();
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().map(BreakerOpen::state),
        Some(State::ForcedOpen)
    );
    svc.handle().reset();
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "ok");
}
