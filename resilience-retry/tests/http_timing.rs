//! When the HTTP policy retries: `Retry-After`, the deadline, and the time left that each
//! attempt tells the upstream.
#![cfg(feature = "http")]

mod http_support;

use http_support::*;

/// gRPC A6: a gRPC status the policy retries, with `grpc-retry-pushback-ms`, is retried that
/// many milliseconds later instead of after the backoff; a negative or malformed pushback
/// says not to retry; one over the `Retry-After` cap is returned at once.
#[tokio::test(start_paused = true)]
async fn grpc_retry_pushback_sets_the_delay_and_a_negative_one_stops_retries() {
    let policy = HttpPolicy::new(RetryOn::from_names(&["unavailable"]).unwrap());
    let call = || {
        let mut req = request(Method::POST);
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        req
    };
    let unavailable = |pushback: &'static str| -> Answer {
        let headers: &'static [(&'static str, &'static str)] = match pushback {
            "2000" => &[
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", "2000"),
            ],
            "-1" => &[
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", "-1"),
            ],
            "soon" => &[
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", "soon"),
            ],
            _ => &[
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", "60000"),
            ],
        };
        Answer::WithHeaders(200, headers)
    };
    let ok = || {
        Answer::WithHeaders(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "0")],
        )
    };

    let start = Instant::now();
    let (code, seen) = run(policy.clone(), vec![unavailable("2000"), ok()], call()).await;
    assert_eq!((code, seen.len()), (200, 2));
    assert_eq!(seen[1].at - start, Duration::from_secs(2));

    for refusing in ["-1", "soon", "60000"] {
        let (_, seen) = run(policy.clone(), vec![unavailable(refusing), ok()], call()).await;
        assert_eq!(seen.len(), 1, "pushback {refusing}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_delay_and_a_long_one_returns_at_once() {
    let start = Instant::now();
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![
            Answer::WithHeader(503, "retry-after", "2"),
            Answer::Status(200),
        ],
        request(Method::GET),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(seen[1].at - start, Duration::from_secs(2));

    let (code, seen) = run(
        HttpPolicy::default().max_retry_after(Duration::from_secs(5)),
        vec![
            Answer::WithHeader(503, "retry-after", "60"),
            Answer::Status(200),
        ],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (503, 1));

    // An HTTP date, against an injected wall clock.
    fn clock() -> SystemTime {
        httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
    }
    let start = Instant::now();
    let (code, seen) = run(
        HttpPolicy::default().wall_clock(clock),
        vec![
            Answer::WithHeader(503, "retry-after", "Sun, 06 Nov 1994 08:49:40 GMT"),
            Answer::Status(200),
        ],
        request(Method::GET),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(seen[1].at - start, Duration::from_secs(3));

    // Malformed: ignored, the backoff applies (10 ms, no jitter).
    let start = Instant::now();
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![
            Answer::WithHeader(503, "retry-after", "soon"),
            Answer::Status(200),
        ],
        request(Method::GET),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(seen[1].at - start, 10 * MS);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_that_would_end_after_the_deadline() {
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(Deadline::new(Instant::now() + 5 * MS));
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Status(503), Answer::Status(200)],
        req,
    )
    .await;
    assert_eq!(
        (code, seen.len()),
        (503, 1),
        "a 10 ms backoff cannot fit in 5 ms"
    );

    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(Deadline::new(Instant::now() + 50 * MS));
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Status(503), Answer::Status(200)],
        req,
    )
    .await;
    assert_eq!((code, seen.len()), (200, 2));

    // Retry-After beyond the deadline: returned at once.
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(Deadline::new(Instant::now() + Duration::from_secs(1)));
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![
            Answer::WithHeader(503, "retry-after", "3"),
            Answer::Status(200),
        ],
        req,
    )
    .await;
    assert_eq!((code, seen.len()), (503, 1));
}

/// Every attempt carries the request's extensions, a deadline alone or among others.
#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_deadline_and_the_other_extensions() {
    #[derive(Clone)]
    struct Marker;
    let at = Instant::now() + Duration::from_secs(1);
    for marked in [false, true] {
        let mut req = request(Method::GET);
        req.extensions_mut().insert(Deadline::new(at));
        if marked {
            req.extensions_mut().insert(Marker);
        }
        let (code, seen) = run(
            HttpPolicy::default(),
            vec![
                Answer::Status(503),
                Answer::Status(503),
                Answer::Status(200),
            ],
            req,
        )
        .await;
        assert_eq!((code, seen.len()), (200, 3));
        for attempt in &seen {
            assert_eq!(attempt.deadline, Some(at), "marked: {marked}");
            assert_eq!(attempt.extensions, 1 + usize::from(marked));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_total_timeout_outside_retrying_stops_when_the_backoff_would_pass_the_deadline() {
    use resilience_timeout::{HttpDeadline, TimeoutLayer};
    use tower::ServiceBuilder;

    let (inner, log) = upstream(vec![Answer::Status(503)]);
    let svc = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(100 * MS)
                .with_policy(HttpDeadline::new())
                .named("total"),
        )
        .layer(
            RetryLayer::new(HttpPolicy::default())
                .attempts(10)
                .unwrap()
                .backoff(Backoff::new(40 * MS, 40 * MS).unwrap().jitter(Jitter::None)),
        )
        .service(inner);
    let start = Instant::now();
    let res = svc.oneshot(request(Method::GET)).await;
    // Attempts at 0, 40 and 80 ms; a fourth would start at 120 ms, past the 100 ms deadline,
    // so the third 503 is returned at 80 ms rather than a timeout at 100 ms.
    let res = res.expect("the last response, not a timeout");
    assert_eq!(res.status(), 503);
    assert_eq!(start.elapsed(), 80 * MS);
    let offsets: Vec<_> = log.lock().unwrap().iter().map(|s| s.at - start).collect();
    assert_eq!(offsets, [Duration::ZERO, 40 * MS, 80 * MS]);
}

#[tokio::test(start_paused = true)]
async fn a_huge_delay_gives_up_at_the_deadline_instead_of_overflowing() {
    // A backoff whose cap is `Duration::MAX`: the first retry waits 1 ms, the second the
    // cap. `Instant::now() + Duration::MAX` would panic.
    let (inner, log) = upstream(vec![Answer::Status(503)]);
    let svc = RetryLayer::new(HttpPolicy::default())
        .attempts(5)
        .unwrap()
        .backoff(
            Backoff::new(MS, Duration::MAX)
                .unwrap()
                .multiplier(1e30)
                .unwrap()
                .jitter(Jitter::None),
        )
        .layer(inner);
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(Deadline::new(Instant::now() + Duration::from_secs(1)));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        log.lock().unwrap().len(),
        2,
        "the second retry is past any deadline"
    );

    // The same through `Retry-After`, with no cap on it.
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(Deadline::new(Instant::now() + Duration::from_secs(1)));
    let (code, seen) = run(
        HttpPolicy::default().max_retry_after(Duration::MAX),
        vec![
            Answer::WithHeader(503, "retry-after", "18446744073709551615"),
            Answer::Status(200),
        ],
        req,
    )
    .await;
    assert_eq!((code, seen.len()), (503, 1));
}

#[tokio::test(start_paused = true)]
async fn each_retry_tells_the_upstream_the_time_left_then() {
    use resilience_timeout::{HttpDeadline, TimeoutLayer};
    use tower::ServiceBuilder;

    let told = Arc::new(Mutex::new(Vec::new()));
    let log = told.clone();
    let upstream = service_fn(
        move |req: Request<resilience_retry::ReplayBody<Empty<Bytes>>>| {
            log.lock().unwrap().push(
                req.headers()["x-request-timeout-ms"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            async move {
                // Each attempt takes 100 ms and fails.
                tokio::time::sleep(100 * MS).await;
                Ok::<_, BoxError>(status(503))
            }
        },
    );
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)).with_policy(HttpDeadline::new()))
        .layer(
            RetryLayer::new(HttpPolicy::default())
                .backoff(Backoff::new(10 * MS, 10 * MS).unwrap().jitter(Jitter::None)),
        )
        .service(upstream);
    let mut req = request(Method::GET);
    req.headers_mut()
        .insert("x-request-timeout-ms", "1000".parse().unwrap());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    // 1000 ms less the 5 ms margin; then 110 ms and 220 ms later (attempt + backoff).
    assert_eq!(*told.lock().unwrap(), ["995", "885", "775"]);
}

/// A total timeout from config, retries and a per-try timeout from config, as a library user
/// stacks them: every attempt follows the total's settings. With a 50 ms margin, the upstream
/// is told the per-try time less 50 ms (the margin taken once, not the default 5 ms again);
/// with `propagate_deadline = false` the caller's header goes on as it came, on every retry.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn retries_and_per_try_timeouts_follow_the_total_timeouts_settings() {
    use resilience_retry::RetryConfig;
    use resilience_timeout::TimeoutConfig;
    use tower::ServiceBuilder;

    for (propagate, expected) in [
        (true, ["450", "450", "450"]),
        (false, ["1000", "1000", "1000"]),
    ] {
        let told = Arc::new(Mutex::new(Vec::new()));
        let log = told.clone();
        let upstream = service_fn(
            move |req: Request<resilience_retry::ReplayBody<Empty<Bytes>>>| {
                let header = req.headers()["x-request-timeout-ms"].to_str().unwrap();
                log.lock().unwrap().push(header.to_owned());
                async move { Ok::<_, BoxError>(status(503)) }
            },
        );
        let mut total = TimeoutConfig::new(Duration::from_secs(2));
        total.deadline_margin = 50 * MS;
        total.propagate_deadline = propagate;
        let retry = RetryConfig {
            per_try_timeout: Some(500 * MS),
            ..RetryConfig::default()
        };
        let svc = ServiceBuilder::new()
            .layer(total.layer().unwrap())
            .layer(retry.layer().unwrap())
            .option_layer(retry.per_try_timeout_layer())
            .service(upstream);
        let mut req = request(Method::GET);
        req.headers_mut()
            .insert("x-request-timeout-ms", "1000".parse().unwrap());
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(*told.lock().unwrap(), expected, "propagate {propagate}");
    }
}
