//! The HTTP policy: conditions by name, idempotency, Retry-After, deadlines, attempt header,
//! and the amplification bound against an upstream that always fails.
#![cfg(feature = "http")]

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use resilience_retry::{
    Backoff, Budget, Condition, HttpPolicy, Jitter, RETRY_ATTEMPT, RetryLayer, RetryOn,
};
use resilience_timeout::Deadline;
use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// What the upstream answers, in order; the last answer repeats.
#[derive(Clone)]
enum Answer {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    Refused,
    Reset,
    /// An HTTP/2 error, in the source chain of the error as hyper returns it.
    H2(h2::Reason),
}

/// Stands in for `hyper::Error`, which cannot be built outside hyper: an error whose source is
/// the `h2::Error`, as hyper's is.
#[derive(Debug)]
struct Http2Error(h2::Error);

impl std::fmt::Display for Http2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http2 error")
    }
}

impl std::error::Error for Http2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What the upstream saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: Method,
    attempt: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn upstream(
    answers: Vec<Answer>,
) -> (
    impl Service<
        Request<resilience_retry::ReplayBody<Empty<Bytes>>>,
        Response = Response<String>,
        Error = BoxError,
        Future: Send,
    > + Clone,
    Log,
) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let svc = service_fn(move |req: Request<_>| {
        seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: req.method().clone(),
            attempt: req
                .headers()
                .get(RETRY_ATTEMPT)
                .map(|v| v.to_str().unwrap().to_owned()),
        });
        let mut answers = answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers[0].clone()
        };
        async move {
            match answer {
                Answer::Status(code) => Ok(status(code)),
                Answer::WithHeader(code, name, value) => {
                    let mut res = status(code);
                    res.headers_mut().insert(name, value.parse().unwrap());
                    Ok(res)
                }
                Answer::Refused => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Answer::Reset => Err(io::Error::from(io::ErrorKind::ConnectionReset).into()),
                Answer::H2(reason) => Err(Http2Error(h2::Error::from(reason)).into()),
            }
        }
    });
    (svc, log)
}

fn status(code: u16) -> Response<String> {
    let mut res = Response::new(String::new());
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    res
}

fn request(method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("http://orders/")
        .body(Empty::new())
        .unwrap()
}

fn layer(policy: HttpPolicy) -> RetryLayer<HttpPolicy> {
    RetryLayer::new(policy)
        .backoff(
            Backoff::new(10 * MS, 100 * MS)
                .unwrap()
                .jitter(Jitter::None),
        )
        .budget(Arc::new(
            Budget::new(0.2, 100, Duration::from_secs(10)).unwrap(),
        ))
}

async fn run(
    policy: HttpPolicy,
    answers: Vec<Answer>,
    req: Request<Empty<Bytes>>,
) -> (u16, Vec<Seen>) {
    let (inner, log) = upstream(answers);
    let response = layer(policy).layer(inner).oneshot(req).await;
    let code = match response {
        Ok(res) => res.status().as_u16(),
        Err(_) => 0,
    };
    let seen = log.lock().unwrap().clone();
    (code, seen)
}

#[tokio::test(start_paused = true)]
async fn a_gateway_error_on_get_is_retried_with_the_attempt_header() {
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![
            Answer::Status(503),
            Answer::Status(502),
            Answer::Status(200),
        ],
        request(Method::GET),
    )
    .await;
    assert_eq!(code, 200);
    let attempts: Vec<_> = seen.iter().map(|s| s.attempt.clone()).collect();
    assert_eq!(attempts, [None, Some("2".into()), Some("3".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_post_without_idempotency_key_that_gets_503_reaches_the_upstream_once() {
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Status(503)],
        request(Method::POST),
    )
    .await;
    assert_eq!(code, 503);
    assert_eq!(seen.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_retried() {
    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("idempotency-key", "order-42".parse().unwrap());
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Status(503), Answer::Status(201)],
        req,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.method == Method::POST));
}

#[tokio::test(start_paused = true)]
async fn any_method_is_retried_after_a_connect_failure_but_not_after_a_reset() {
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Refused, Answer::Status(201)],
        request(Method::POST),
    )
    .await;
    assert_eq!(
        (code, seen.len()),
        (201, 2),
        "never reached the server: safe to resend"
    );

    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Reset, Answer::Status(201)],
        request(Method::POST),
    )
    .await;
    assert_eq!(
        (code, seen.len()),
        (0, 1),
        "a reset POST may have been processed"
    );

    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Reset, Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn conditions_by_name() {
    // Default: 500 is not a gateway error.
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::Status(500), Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (500, 1));

    let five_xx = HttpPolicy::new(RetryOn::none().with(Condition::ServerError));
    let (code, seen) = run(
        five_xx,
        vec![Answer::Status(500), Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (200, 2));

    let conflicts = HttpPolicy::new(RetryOn::none().status_codes([StatusCode::CONFLICT]));
    let (code, seen) = run(
        conflicts.clone(),
        vec![Answer::Status(409), Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (200, 2));
    let (code, seen) = run(
        conflicts,
        vec![Answer::Status(503), Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (503, 1), "only the listed statuses");

    let none = HttpPolicy::new(RetryOn::none());
    let (code, seen) = run(
        none,
        vec![Answer::Refused, Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (0, 1));

    assert_eq!(
        RetryOn::from_names(&["5xx", "bogus"])
            .unwrap_err()
            .to_string()
            .split(':')
            .next(),
        Some("invalid `on` = \"bogus\"")
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_status_in_headers_is_classified_by_code() {
    let grpc = |code: &'static str| Answer::WithHeader(200, "grpc-status", code);
    let policy =
        HttpPolicy::new(RetryOn::from_names(&["unavailable", "resource-exhausted"]).unwrap());
    let grpc_request = || {
        let mut req = request(Method::POST);
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        // No Idempotency-Key: a gRPC call is a POST, retried on a listed gRPC status.
        req
    };
    // The upstream answers as a gRPC server: content-type application/grpc.
    let (inner, log) = upstream(vec![grpc("14"), grpc("0")]);
    let inner = inner.map_response(|mut res: Response<String>| {
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        res
    });
    let res = layer(policy.clone())
        .layer(inner)
        .oneshot(grpc_request())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(log.lock().unwrap().len(), 2, "unavailable (14) is retried");

    let (inner, log) = upstream(vec![grpc("3"), grpc("0")]);
    let inner = inner.map_response(|mut res: Response<String>| {
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        res
    });
    let res = layer(policy)
        .layer(inner)
        .oneshot(grpc_request())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    assert_eq!(log.lock().unwrap().len(), 1, "invalid-argument (3) is not");
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
        .insert(Deadline(Instant::now() + 5 * MS));
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
        .insert(Deadline(Instant::now() + 50 * MS));
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
        .insert(Deadline(Instant::now() + Duration::from_secs(1)));
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

#[tokio::test(start_paused = true)]
async fn bodies_of_every_kind_are_replayed_intact() {
    use futures::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    type Chunks = Vec<Result<Frame<Bytes>, io::Error>>;

    async fn replayed<B>(body: B, cap: usize) -> (Vec<(Bytes, Option<http::HeaderMap>)>, u16)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let inner = service_fn(move |req: Request<resilience_retry::ReplayBody<B>>| {
            let log = log.clone();
            async move {
                let collected = req.into_body().collect().await?;
                let trailers = collected.trailers().cloned();
                let mut log = log.lock().unwrap();
                log.push((collected.to_bytes(), trailers));
                let code = if log.len() == 1 { 503 } else { 200 };
                Ok::<_, BoxError>(status(code))
            }
        });
        let policy = HttpPolicy::default().max_replay_body(cap);
        let req = Request::builder()
            .method(Method::PUT)
            .uri("http://orders/")
            .body(body)
            .unwrap();
        let res = layer(policy).layer(inner).oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (seen, res.status().as_u16())
    }

    let chunked = |chunks: &[&'static str], trailers: Option<http::HeaderMap>| {
        let mut frames: Chunks = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(stream::iter(frames))
    };

    // Chunked, unknown length, under the cap.
    let (seen, code) = replayed(chunked(&["ab", "cd", "ef"], None), 1024).await;
    assert_eq!(code, 200);
    assert_eq!(
        seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        ["abcdef", "abcdef"]
    );

    // Sized.
    let (seen, code) = replayed(Full::new(Bytes::from_static(b"sized body")), 1024).await;
    assert_eq!(code, 200);
    assert_eq!(
        seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        ["sized body", "sized body"]
    );

    // Empty.
    let (seen, code) = replayed(Empty::<Bytes>::new(), 1024).await;
    assert_eq!((code, seen.len()), (200, 2));
    assert!(seen.iter().all(|s| s.0.is_empty()));

    // With trailers.
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let (seen, code) = replayed(chunked(&["ab", "cd"], Some(trailers.clone())), 1024).await;
    assert_eq!(code, 200);
    for (body, got) in &seen {
        assert_eq!(body, "abcd");
        assert_eq!(got.as_ref(), Some(&trailers));
    }

    // Chunked over the cap: streams once, intact, and is not retried.
    let (seen, code) = replayed(chunked(&["0123456789", "0123456789", "tail"], None), 16).await;
    assert_eq!((code, seen.len()), (503, 1));
    assert_eq!(seen[0].0, "01234567890123456789tail");

    // Known length over the cap: never kept, not retried.
    let (seen, code) = replayed(Full::new(Bytes::from(vec![b'x'; 100])), 16).await;
    assert_eq!((code, seen.len()), (503, 1));
    assert_eq!(seen[0].0.len(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_retry_replays_what_was_read_and_then_streams_the_rest() {
    use futures::{SinkExt, channel::mpsc};
    use http_body::Frame;
    use http_body_util::StreamBody;

    // The caller's body arrives in three chunks; the first attempt reads one chunk and answers
    // 503 at once, as a server that rejects early does.
    let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = service_fn(
        move |req: Request<resilience_retry::ReplayBody<StreamBody<mpsc::Receiver<_>>>>| {
            let log = log.clone();
            async move {
                let first_attempt = req.headers().get(RETRY_ATTEMPT).is_none();
                let mut body = req.into_body();
                if first_attempt {
                    let chunk = body.frame().await.unwrap()?.into_data().unwrap();
                    log.lock().unwrap().push(chunk);
                    return Ok::<_, BoxError>(status(503));
                }
                let all = body.collect().await?.to_bytes();
                log.lock().unwrap().push(all);
                Ok(status(200))
            }
        },
    );
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://orders/")
        .body(StreamBody::new(rx))
        .unwrap();
    let call = tokio::spawn(layer(HttpPolicy::default()).layer(inner).oneshot(req));
    for chunk in ["one,", "two,", "three"] {
        tx.send(Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .await
            .unwrap();
    }
    drop(tx);
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*seen.lock().unwrap(), ["one,", "one,two,three"]);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_status_in_trailers_right_behind_the_head_is_retried() {
    use futures::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use resilience_retry::PeekGrpcTrailersLayer;
    use tower::ServiceBuilder;

    type Frames = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, io::Error>>>;

    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let grpc_server = service_fn(move |_req: Request<_>| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        // First call: unavailable (14), then ok (0); each in trailers after the head.
        let code = if *n == 1 { "14" } else { "0" };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, io::Error>> = vec![Ok(Frame::trailers(trailers))];
        let mut res = Response::new(StreamBody::new(stream::iter(frames)));
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        async move { Ok::<Response<StreamBody<Frames>>, BoxError>(res) }
    });
    let policy = HttpPolicy::new(RetryOn::from_names(&["unavailable"]).unwrap());
    let svc = ServiceBuilder::new()
        .layer(layer(policy))
        .layer(PeekGrpcTrailersLayer::new())
        .service(grpc_server);

    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        2,
        "unavailable in trailers is retried"
    );
    // The caller still gets the trailers of the final attempt.
    let trailers = res
        .into_body()
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_grpc_response_is_not_held_back_by_the_peek() {
    use futures::channel::mpsc;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use resilience_retry::PeekGrpcTrailersLayer;

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(1);
    let mut rx = Some(rx);
    let svc = PeekGrpcTrailersLayer::new().layer(service_fn(move |_: ()| {
        let mut res = Response::new(StreamBody::new(rx.take().unwrap()));
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        async move { Ok::<_, BoxError>(res) }
    }));
    // No frame is ready: the response comes back at once, with nothing peeked.
    let res = svc.oneshot(()).await.unwrap();
    assert!(
        res.extensions()
            .get::<resilience_retry::TrailersGrpcStatus>()
            .is_none()
    );
    drop(tx);
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .trailers()
            .is_none()
    );
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
async fn an_http2_refused_stream_is_retried_for_any_method() {
    // hyper reports REFUSED_STREAM as a `hyper::Error` whose source is the `h2::Error`.
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::H2(h2::Reason::REFUSED_STREAM), Answer::Status(201)],
        request(Method::POST),
    )
    .await;
    assert_eq!(
        (code, seen.len()),
        (201, 2),
        "a refused stream was never processed: safe to resend a POST"
    );

    // Another HTTP/2 error of the same shape is no proof of anything.
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::H2(h2::Reason::INTERNAL_ERROR), Answer::Status(201)],
        request(Method::POST),
    )
    .await;
    assert_eq!((code, seen.len()), (0, 1));

    // Under `connect-failure`: a policy without it does not retry a refused stream.
    let (code, seen) = run(
        HttpPolicy::new(RetryOn::none().with(Condition::Reset)),
        vec![Answer::H2(h2::Reason::REFUSED_STREAM), Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (0, 1));
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
        .insert(Deadline(Instant::now() + Duration::from_secs(1)));
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
        .insert(Deadline(Instant::now() + Duration::from_secs(1)));
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
async fn a_grpc_call_is_retried_on_a_listed_grpc_status_without_an_idempotency_key() {
    let policy = HttpPolicy::new(RetryOn::from_names(&["unavailable", "reset"]).unwrap());
    let grpc_upstream = |answers| {
        let (inner, log) = upstream(answers);
        let inner = inner.map_response(|mut res: Response<String>| {
            res.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            res
        });
        (inner, log)
    };
    let call = |content_type: &'static str| {
        let mut req = request(Method::POST);
        req.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        req
    };
    let unavailable = || Answer::WithHeader(200, "grpc-status", "14");
    let ok = || Answer::WithHeader(200, "grpc-status", "0");

    // A gRPC call (any `application/grpc*` content type): unavailable is retried.
    for content_type in ["application/grpc", "application/grpc+proto"] {
        let (inner, log) = grpc_upstream(vec![unavailable(), ok()]);
        let res = layer(policy.clone())
            .layer(inner)
            .oneshot(call(content_type))
            .await
            .unwrap();
        assert_eq!(res.headers()["grpc-status"], "0", "{content_type}");
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 2, "{content_type}");
        assert!(seen.iter().all(|s| s.method == Method::POST));
    }

    // Only the gRPC conditions are waived: a reset gRPC call may have been processed.
    let (inner, log) = grpc_upstream(vec![Answer::Reset, ok()]);
    let res = layer(policy.clone())
        .layer(inner)
        .oneshot(call("application/grpc"))
        .await;
    assert!(res.is_err());
    assert_eq!(log.lock().unwrap().len(), 1);

    // A POST that is not a gRPC call gets no such pass, whatever the response says.
    let (inner, log) = grpc_upstream(vec![unavailable(), ok()]);
    let res = layer(policy)
        .layer(inner)
        .oneshot(call("application/json"))
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn cloning_retry_on_shares_its_status_codes() {
    // `tower_http::classify` takes the classifier by value, so the policy clones it for
    // every response; the clone must not copy the list.
    let on = RetryOn::none().status_codes([StatusCode::CONFLICT, StatusCode::TOO_MANY_REQUESTS]);
    let clone = on.clone();
    assert_eq!(clone, on);
    assert!(std::ptr::eq(
        on.retriable_status_codes(),
        clone.retriable_status_codes()
    ));
}

#[tokio::test(start_paused = true)]
async fn a_replay_retires_the_previous_attempts_body() {
    use futures::channel::mpsc;
    use http_body::{Body, Frame};
    use http_body_util::StreamBody;
    use resilience_retry::{NotReplayable, ReplayBody};
    use tokio_test::{assert_pending, assert_ready, task};

    let data = |s: &'static str| Ok(Frame::data(Bytes::from_static(s.as_bytes())));
    let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
    // A cap that "one," fills exactly: one more byte read spoils the replay.
    let (mut first, kept) = ReplayBody::new(StreamBody::new(rx), 4);
    let kept = kept.expect("a chunked body under the cap is kept");

    // The first attempt reads a chunk and waits for more; the server has answered early.
    tx.try_send(data("one,")).unwrap();
    let chunk = first.frame().await.unwrap().unwrap();
    assert_eq!(chunk.into_data().unwrap(), "one,");
    let mut old = task::spawn(first.frame());
    assert_pending!(old.poll());

    // The retry starts. The client may still be writing the old request.
    let mut retry = kept.replay().expect("still under the cap");
    assert!(old.is_woken(), "the retired copy learns at once");
    let err = assert_ready!(old.poll()).unwrap().unwrap_err();
    assert!(err.is::<NotReplayable>(), "{err}");
    drop(old);

    // Polled again with more data there, the old copy still fails and reads nothing, so it
    // neither takes the retry's frames nor spoils the kept bytes.
    tx.try_send(data("two,")).unwrap();
    let err = first.frame().await.unwrap().unwrap_err();
    assert!(err.is::<NotReplayable>(), "{err}");
    assert!(
        !first.is_end_stream(),
        "a retired copy never ends as if complete"
    );

    // The retry replays what was kept and streams the rest, intact.
    tx.try_send(data("three")).unwrap();
    drop(tx);
    let all = (&mut retry).collect().await.unwrap().to_bytes();
    assert_eq!(all, "one,two,three");
    assert!(retry.is_end_stream());
}

#[tokio::test(start_paused = true)]
async fn a_response_returned_without_a_retry_leaves_its_request_body_streaming() {
    use futures::channel::mpsc;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use resilience_retry::ReplayBody;

    type Streamed = ReplayBody<StreamBody<mpsc::Receiver<Result<Frame<Bytes>, io::Error>>>>;

    // The upstream answers 503 at once and keeps the request body, as a client still writing
    // it does. With no budget left the 503 is returned, and the body must still stream.
    let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
    let bodies: Arc<Mutex<Vec<Streamed>>> = Arc::default();
    let kept = bodies.clone();
    let inner = service_fn(move |req: Request<Streamed>| {
        kept.lock().unwrap().push(req.into_body());
        async { Ok::<_, BoxError>(status(503)) }
    });
    let svc = RetryLayer::new(HttpPolicy::default())
        .budget(Arc::new(
            Budget::new(0.0, 0, Duration::from_secs(10)).unwrap(),
        ))
        .layer(inner);
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://orders/")
        .body(StreamBody::new(rx))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);

    let body = bodies.lock().unwrap().pop().expect("one attempt");
    for chunk in ["still ", "streaming"] {
        tx.try_send(Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .unwrap();
    }
    drop(tx);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "still streaming");
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_as_not_replayable_costs_no_budget() {
    use futures::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    // A chunked body over the cap: spoiled by the first attempt, so it cannot be replayed.
    let frames: Vec<Result<Frame<Bytes>, io::Error>> = ["0123456789", "0123456789"]
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    let inner = service_fn(|req: Request<resilience_retry::ReplayBody<_>>| async move {
        req.into_body().collect().await?;
        Ok::<_, BoxError>(status(503))
    });
    let layer = RetryLayer::new(HttpPolicy::default().max_replay_body(16)).budget(Arc::new(
        Budget::new(0.0, 1, Duration::from_secs(1)).unwrap(),
    ));
    let budget = layer.get_budget().clone();
    assert_eq!(budget.available(), 1);
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://orders/")
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        budget.available(),
        1,
        "the retry that was not made was not paid for"
    );
}

/// What an in-memory HTTP/2 server does to the one call it gets.
#[derive(Clone, Copy)]
enum Http2Server {
    /// Resets the stream with this reason.
    ResetStream(h2::Reason),
    /// Sends GOAWAY at once and closes, before the call is made.
    GoAway,
}

/// The real `h2::Error` a client gets from `server`, over an in-memory connection.
async fn real_h2_error(server: Http2Server) -> h2::Error {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(server_io).await.unwrap();
        match server {
            Http2Server::ResetStream(reason) => {
                let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
                respond.send_reset(reason);
            }
            Http2Server::GoAway => conn.abrupt_shutdown(h2::Reason::NO_ERROR),
        }
        // Drive the connection until the client is done with it.
        while let Some(Ok(_)) = conn.accept().await {}
    });
    let (client, conn) = h2::client::handshake(client_io).await.unwrap();
    let conn = tokio::spawn(conn);
    let call = || {
        Request::post("http://orders/")
            .body(())
            .expect("a valid request")
    };
    match server {
        Http2Server::ResetStream(_) => {
            let mut client = client.ready().await.unwrap();
            let (response, _) = client.send_request(call(), true).unwrap();
            response.await.unwrap_err()
        }
        Http2Server::GoAway => {
            // The connection ends once the GOAWAY has been read and the server has closed
            // (writing to the closed pipe may fail too; the GOAWAY has been read by then).
            let _ = conn.await.unwrap();
            match client.ready().await {
                Err(err) => err,
                Ok(mut client) => client.send_request(call(), true).unwrap_err(),
            }
        }
    }
}

#[tokio::test]
async fn real_http2_errors_are_classified() {
    use resilience_retry::{Action, Policy};

    fn classify(method: Method, err: h2::Error) -> Action {
        let err: BoxError = Http2Error(err).into();
        Policy::<_, Response<String>, BoxError>::classify(
            &HttpPolicy::default(),
            &request(method),
            &Err(err),
        )
    }
    let retried = |action: Action| match action {
        Action::Retry(reason) => Some(reason.name),
        Action::Return => None,
    };

    let refused = real_h2_error(Http2Server::ResetStream(h2::Reason::REFUSED_STREAM)).await;
    assert!(refused.is_reset() && refused.is_remote(), "{refused}");
    assert_eq!(
        retried(classify(Method::POST, refused)),
        Some("connect-failure")
    );

    let go_away = real_h2_error(Http2Server::GoAway).await;
    assert!(go_away.is_go_away() && go_away.is_remote(), "{go_away}");
    assert_eq!(
        retried(classify(Method::POST, go_away)),
        Some("connect-failure"),
        "a stream the server never took is safe to resend"
    );

    let reset = || real_h2_error(Http2Server::ResetStream(h2::Reason::INTERNAL_ERROR));
    assert_eq!(retried(classify(Method::GET, reset().await)), Some("reset"));
    assert_eq!(
        retried(classify(Method::POST, reset().await)),
        None,
        "a reset POST may have been processed"
    );
}

/// An upstream that answers with bytes that are not HTTP: hyper's parse error comes before any
/// response, so it is a `reset` (retried for idempotent methods, never for a POST).
#[tokio::test]
async fn a_response_that_is_not_http_is_a_reset() {
    use resilience_retry::{Action, Policy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = [0; 1024];
            let _ = tcp.read(&mut head).await;
            let _ = tcp
                .write_all(b"FLAKY/0.0 not-http\r\n\x00garbage\r\n\r\n")
                .await;
        }
    });
    let not_http = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        let error = sender
            .send_request(Request::get("/").body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap_err();
        assert!(error.is_parse(), "{error:?}");
        BoxError::from(error)
    };
    let classify =
        |method: Method, error: BoxError| match Policy::<_, Response<String>, BoxError>::classify(
            &HttpPolicy::default(),
            &request(method),
            &Err(error),
        ) {
            Action::Retry(reason) => Some(reason.name),
            Action::Return => None,
        };
    assert_eq!(classify(Method::GET, not_http().await), Some("reset"));
    assert_eq!(
        classify(Method::POST, not_http().await),
        None,
        "a POST may have been processed before the bad answer"
    );
}

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
                        Err::<Response<String>, BoxError>(Box::new(RefusedHere))
                    }
                }
            },
        );
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
