//! The rate limit on paused time: a burst then one call per period, callers held to their own
//! limit without spending the service's, a bounded set of callers, shadow mode, and the
//! limits as HTTP and gRPC answers.

use resilience_core::SIDECAR_ERROR;
use resilience_limit::{
    Enforcement, LimitReplyLayer, Rate, RateLimitConfig, RateLimitLayer, RateLimited, Scope,
};
use std::time::Duration;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn echo()
-> impl Service<&'static str, Response = &'static str, Error = BoxError, Future: Send> + Clone {
    service_fn(|caller: &'static str| async move { Ok::<_, BoxError>(caller) })
}

/// A service limited per caller alone, each to 1 a second with `burst`, for a set of at most two
/// callers.
fn two_callers_at_most(
    burst: u32,
) -> impl Service<&'static str, Response = &'static str, Error = BoxError> + Clone {
    RateLimitLayer::unlimited()
        .per_caller(
            Rate::new(1.0, burst).unwrap(),
            2,
            |caller: &&'static str| Some(*caller),
        )
        .layer(echo())
}

async fn refused<S>(service: &S, caller: &'static str) -> Option<RateLimited>
where
    S: Service<&'static str, Response = &'static str, Error = BoxError> + Clone,
{
    match service.clone().oneshot(caller).await {
        Ok(_) => None,
        Err(error) => Some(*error.downcast_ref::<RateLimited>().expect("a RateLimited")),
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_then_one_call_per_period() {
    let service = RateLimitLayer::new(Rate::new(10.0, 3).unwrap()).layer(echo());
    for _ in 0..3 {
        assert_eq!(refused(&service, "a").await, None);
    }
    let limited = refused(&service, "a").await.expect("over the burst");
    assert_eq!(limited.retry_after(), Duration::from_millis(100));
    assert_eq!(limited.scope(), Scope::Service);
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(refused(&service, "a").await.is_some(), "not yet");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(refused(&service, "a").await, None, "one period on");
    assert!(refused(&service, "a").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_caller_over_its_limit_spends_nothing_of_the_services() {
    let layer = RateLimitLayer::new(Rate::new(1.0, 3).unwrap()).per_caller(
        Rate::new(1.0, 1).unwrap(),
        16,
        |caller: &&'static str| Some(*caller),
    );
    let service = layer.layer(echo());
    assert_eq!(refused(&service, "noisy").await, None);
    for _ in 0..5 {
        let limited = refused(&service, "noisy").await.expect("its own limit");
        assert_eq!(limited.scope(), Scope::Caller);
    }
    // The service's burst of 3 has 2 left: the noisy caller's refusals took none of it.
    assert_eq!(refused(&service, "quiet").await, None);
    assert_eq!(refused(&service, "other").await, None);
    let limited = refused(&service, "third")
        .await
        .expect("the service's limit");
    assert_eq!(limited.scope(), Scope::Service);
}

#[tokio::test(start_paused = true)]
async fn beyond_max_callers_newcomers_share_one_limit_until_the_idle_are_forgotten() {
    let service = two_callers_at_most(1);
    assert_eq!(refused(&service, "a").await, None);
    assert_eq!(refused(&service, "b").await, None);
    // Full: "c" and "d" share the one overflow limiter.
    assert_eq!(refused(&service, "c").await, None);
    assert!(refused(&service, "d").await.is_some(), "sharing c's limit");
    // Two periods on, every limiter has refilled (governor forgets a key one period after
    // that): a sweep forgets "a" and "b", and "d" gets a limiter of its own.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(refused(&service, "d").await, None);
    assert_eq!(refused(&service, "e").await, None, "room again");
}

/// A full set does not throttle the callers already in it: only newcomers share.
#[tokio::test(start_paused = true)]
async fn beyond_max_callers_the_callers_in_the_set_keep_their_own_limits() {
    let service = two_callers_at_most(2);
    assert_eq!(refused(&service, "a").await, None);
    assert_eq!(refused(&service, "b").await, None);
    // Newcomers to the full set spend the shared burst of 2.
    assert_eq!(refused(&service, "c").await, None);
    assert_eq!(refused(&service, "d").await, None);
    assert!(
        refused(&service, "e").await.is_some(),
        "the shared limit is spent"
    );
    // "a" and "b" have one call left each, of their own.
    assert_eq!(refused(&service, "a").await, None);
    assert_eq!(refused(&service, "b").await, None);
    assert_eq!(
        refused(&service, "a").await.map(|limited| limited.scope()),
        Some(Scope::Caller)
    );
}

#[tokio::test(start_paused = true)]
async fn in_shadow_mode_nothing_is_refused_and_each_refusal_is_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let service = RateLimitLayer::new(Rate::new(1.0, 1).unwrap())
        .named("orders")
        .enforcement(Enforcement::Shadow)
        .layer(echo());
    for _ in 0..4 {
        assert_eq!(refused(&service, "a").await, None);
    }
    let counted: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_rate_limited_total")
        .collect();
    assert_eq!(counted.len(), 1);
    let (key, _, _, value) = &counted[0];
    let labels: Vec<_> = key
        .key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    assert!(
        labels.contains(&("mode".into(), "shadow".into())),
        "{labels:?}"
    );
    assert!(
        labels.contains(&("name".into(), "orders".into())),
        "{labels:?}"
    );
    assert_eq!(
        value,
        &DebugValue::Counter(3),
        "three would have been refused"
    );
}

#[tokio::test(start_paused = true)]
async fn at_an_http_edge_429_with_retry_after_and_to_grpc_resource_exhausted() {
    let config: RateLimitConfig = toml::from_str("rate = 0.5\nburst = 1").unwrap();
    let service = ServiceBuilder::new()
        .layer(LimitReplyLayer::new())
        .layer(config.layer().unwrap())
        .service(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(String::new()))
        }));
    let ok = service
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = service
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()[SIDECAR_ERROR], "rate-limited");
    assert_eq!(refused.headers()["retry-after"], "2");
    let grpc = http::Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let refused = service.oneshot(grpc).await.unwrap();
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.headers()["grpc-status"], "8");
}

#[test]
fn bad_config_names_the_field() {
    let cases = [
        ("", "`rate` = none"),
        ("rate = 0", "`rate` = 0"),
        ("rate = 10\nburst = 0", "`burst` = 0"),
        // Rates too slow for the limiter's clock, and bursts it cannot refill, are refused
        // by name rather than panicking here or when the limiter is built.
        ("rate = 1e-20", "`rate` = 0.00000000000000000001"),
        ("rate = 1e-11", "`rate` = 0.00000000001"),
        ("rate = 0.1\nburst = 4294967295", "`burst` = 4294967295"),
        ("burst = 3\nper_caller = { rate = 1 }", "`burst` = set"),
        ("per_caller = { rate = -1 }", "`per_caller.rate` = -1"),
        (
            "per_caller = { rate = 1, max_callers = 0 }",
            "`per_caller.max_callers` = 0",
        ),
    ];
    for (text, expected) in cases {
        let config: RateLimitConfig = toml::from_str(text).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let per_caller: RateLimitConfig = toml::from_str("per_caller = { rate = 1 }").unwrap();
    assert!(
        per_caller
            .layer()
            .unwrap_err()
            .to_string()
            .contains("per_caller"),
        "a per-caller limit needs a caller"
    );
    assert!(toml::from_str::<RateLimitConfig>("rate = 1\nmode = \"loud\"").is_err());
}
