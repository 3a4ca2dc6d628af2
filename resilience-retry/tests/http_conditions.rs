//! What the HTTP policy retries: conditions by name, idempotency, connect failures and resets,
//! HTTP/2 errors, and gRPC statuses in the head and in the trailers.
#![cfg(feature = "http")]

mod http_support;

use http_support::*;

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

/// A caller's body that broke off would break off again: never resent, even for a GET whose
/// error below it (an unexpected end) alone reads as a reset.
#[tokio::test(start_paused = true)]
async fn the_callers_broken_body_is_not_retried() {
    let (code, seen) = run(
        HttpPolicy::default(),
        vec![Answer::CallerBodyFailed, Answer::Status(200)],
        request(Method::GET),
    )
    .await;
    assert_eq!((code, seen.len()), (0, 1));
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

/// Envoy's `5xx` and `gateway-error` cover an upstream that did not answer at all: a connect
/// failure (any method) and a reset (idempotent methods), without listing them.
#[tokio::test(start_paused = true)]
async fn five_xx_and_gateway_error_cover_connect_failures_and_resets() {
    for name in ["5xx", "gateway-error"] {
        let policy = || HttpPolicy::new(RetryOn::from_names(&[name]).unwrap());
        for (what, failure, method, expected) in [
            ("refused", Answer::Refused, Method::GET, (200, 2)),
            ("refused", Answer::Refused, Method::POST, (200, 2)),
            ("reset", Answer::Reset, Method::GET, (200, 2)),
            ("reset", Answer::Reset, Method::POST, (0, 1)),
        ] {
            let what = format!("{name}: {what} on {method}");
            let (code, seen) = run(
                policy(),
                vec![failure, Answer::Status(200)],
                request(method),
            )
            .await;
            assert_eq!((code, seen.len()), expected, "{what}");
        }
    }
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
