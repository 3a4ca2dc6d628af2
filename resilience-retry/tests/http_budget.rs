//! The retry budget under HTTP: the amplification bound against an upstream that always
//! fails, and retries refused inside the process that give their budget back.
#![cfg(feature = "http")]

mod http_support;

use http_support::*;

#[tokio::test(start_paused = true)]
async fn a_thousand_requests_against_a_failing_upstream_stay_within_the_budget() {
    let (inner, log) = upstream(vec![Answer::Status(503)]);
    let budget = Arc::new(Budget::new(0.2, 0, Duration::from_secs(10)).unwrap());
    let svc = RetryLayer::new(HttpPolicy::default())
        .budget(budget)
        .layer(inner);
    for _ in 0..1000 {
        let res = svc.clone().oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    let calls = log.lock().unwrap().len();
    println!("1000 requests, budget ratio 0.2, min 0/s: {calls} calls reached the upstream");
    assert!(calls <= 1200, "{calls}");
    assert_eq!(calls, 1200, "the budget is spent exactly");
}

/// An upstream that answers 503 to its first call and fails every later one with `refusal`
/// (what a layer below the retry returns when it refuses a call), and its count of calls.
fn a_503_then(refusal: fn() -> BoxError) -> (Upstream, Arc<Mutex<u32>>) {
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let inner = service_fn(
        move |_: Request<resilience_retry::ReplayBody<Empty<Bytes>>>| {
            let n = {
                let mut n = counter.lock().unwrap();
                *n += 1;
                *n
            };
            async move {
                if n == 1 {
                    Ok(status(503))
                } else {
                    Err::<Response<String>, BoxError>(refusal())
                }
            }
        },
    );
    (Upstream::new(inner), calls)
}

/// What [`a_503_then`] returns.
type Upstream = tower::util::BoxCloneService<
    Request<resilience_retry::ReplayBody<Empty<Bytes>>>,
    Response<String>,
    BoxError,
>;

/// An error a layer below the retry (a circuit breaker, say) returns when it refuses a call.
#[derive(Debug)]
struct RefusedHere;

impl std::fmt::Display for RefusedHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused before sending")
    }
}

impl std::error::Error for RefusedHere {}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_inside_the_process_gives_its_budget_back() {
    for (recognised, left) in [(true, 1), (false, 0)] {
        // A reserve of exactly one retry, no ratio.
        let budget = Arc::new(Budget::new(0.0, 1, Duration::from_secs(1)).unwrap());
        let (inner, calls) = a_503_then(|| Box::new(RefusedHere));
        let mut policy = HttpPolicy::default();
        if recognised {
            policy = policy.refused_locally(|e| e.is::<RefusedHere>());
        }
        let svc = layer(policy).budget(budget.clone()).layer(inner);
        let err = svc.oneshot(request(Method::GET)).await.unwrap_err();
        assert!(err.is::<RefusedHere>());
        assert_eq!(*calls.lock().unwrap(), 2, "one retry was made");
        assert_eq!(budget.available(), left, "recognised refusal: {recognised}");
    }
}

/// The default policy, as `RetryConfig::layer()` builds it, recognises a refusal marked
/// `RefusedLocally` without any setting: a library user's breaker below the retries does not
/// spend the budget.
#[tokio::test(start_paused = true)]
async fn a_refusal_marked_refused_locally_gives_the_budget_back_by_default() {
    let budget = Arc::new(Budget::new(0.0, 1, Duration::from_secs(1)).unwrap());
    let (inner, calls) = a_503_then(|| Box::new(OpenBreaker));
    let svc = layer(HttpPolicy::default())
        .budget(budget.clone())
        .layer(inner);
    let err = svc.oneshot(request(Method::GET)).await.unwrap_err();
    assert!(err.is::<OpenBreaker>());
    assert_eq!(*calls.lock().unwrap(), 2, "one retry was made");
    assert_eq!(budget.available(), 1, "and it gave its budget back");
}
