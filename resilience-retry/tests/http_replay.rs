//! Request bodies across retries: replayed intact, streamed past what was read, retired
//! with their attempt, and never buffered for a retry that cannot happen.
#![cfg(feature = "http")]

mod http_support;

use http_support::*;

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
