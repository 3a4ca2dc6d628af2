//! Response-body timeouts: the idle and the total limit, each surfacing a typed error in the
//! body stream.
#![cfg(feature = "http")]

use bytes::Bytes;
use futures::{SinkExt, channel::mpsc};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use resilience_timeout::{BodyTimeout, ResponseBodyTimeoutLayer};
use std::{convert::Infallible, pin::Pin, time::Duration};
use tokio::time;
use tower::{BoxError, Layer, ServiceExt, service_fn};

type Chunk = Result<Frame<Bytes>, Infallible>;

/// A service whose response body is fed by the returned sender.
async fn respond_with_channel(
    layer: ResponseBodyTimeoutLayer,
) -> (
    mpsc::Sender<Chunk>,
    Pin<Box<resilience_timeout::TimeoutBody<StreamBody<mpsc::Receiver<Chunk>>>>>,
) {
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let mut rx = Some(rx);
    let svc = layer.layer(service_fn(move |_: Request<()>| {
        let body = StreamBody::new(rx.take().expect("one call"));
        async move { Ok::<_, BoxError>(Response::new(body)) }
    }));
    let response = svc.oneshot(Request::new(())).await.unwrap();
    (tx, Box::pin(response.into_body()))
}

fn data(s: &'static str) -> Chunk {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

#[tokio::test(start_paused = true)]
async fn frames_within_the_idle_limit_pass_and_a_late_one_fails() {
    let layer = ResponseBodyTimeoutLayer::new().idle(Duration::from_millis(100));
    let (mut tx, mut body) = respond_with_channel(layer).await;

    for chunk in ["a", "b", "c"] {
        time::advance(Duration::from_millis(99)).await;
        tx.send(data(chunk)).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }

    let err = tokio::spawn(async move { body.frame().await.unwrap().unwrap_err() });
    time::advance(Duration::from_millis(100)).await;
    let err = err.await.unwrap();
    let timeout = err
        .downcast_ref::<BodyTimeout>()
        .expect("a typed BodyTimeout");
    assert!(timeout.is_idle());
    assert_eq!(err.to_string(), "response body idle for 100ms");
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_keeps_trickling_still_meets_the_total_limit() {
    let layer = ResponseBodyTimeoutLayer::new()
        .idle(Duration::from_millis(100))
        .total(Duration::from_millis(250));
    let (mut tx, mut body) = respond_with_channel(layer).await;

    let mut received = 0;
    let mut outcome = None;
    for _ in 0..10 {
        time::advance(Duration::from_millis(50)).await;
        tx.try_send(data("x")).unwrap();
        match body.frame().await.unwrap() {
            Ok(_) => received += 1,
            Err(err) => {
                outcome = Some(err);
                break;
            }
        }
    }
    let err = outcome.expect("the total limit ends the body");
    let timeout = err
        .downcast_ref::<BodyTimeout>()
        .expect("a typed BodyTimeout");
    assert!(!timeout.is_idle());
    assert_eq!(timeout.after(), Duration::from_millis(250));
    // Frames at 50, 100, 150 and 200 ms arrived; at 250 ms the total limit had run out.
    assert_eq!(received, 4);
}

#[tokio::test(start_paused = true)]
async fn a_complete_body_ends_normally() {
    let layer = ResponseBodyTimeoutLayer::new()
        .idle(Duration::from_millis(100))
        .total(Duration::from_millis(250));
    let (mut tx, body) = respond_with_channel(layer).await;
    tx.send(data("all")).await.unwrap();
    drop(tx);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "all");
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_does_not_make_the_upstream_look_idle() {
    use tokio_test::{assert_pending, assert_ready, task};

    let idle = Duration::from_millis(100);
    let layer = ResponseBodyTimeoutLayer::new().idle(idle);
    let (mut tx, mut body) = respond_with_channel(layer).await;

    tx.try_send(data("a")).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");

    // The reader is busy (back-pressure) for twice the idle limit before it asks again, and
    // the next frame is not there yet when it does.
    time::advance(2 * idle).await;
    let mut next = task::spawn(body.frame());
    assert_pending!(
        next.poll(),
        "the upstream gets its full idle limit from now"
    );

    // The frame comes within the idle limit of that poll: no timeout.
    time::advance(idle / 2).await;
    tx.try_send(data("b")).unwrap();
    assert!(next.is_woken());
    let frame = assert_ready!(next.poll()).unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "b");
    drop(next);

    // A slow reader does not switch the idle limit off: an upstream that then stays silent
    // for the limit still fails.
    time::advance(2 * idle).await;
    let mut next = task::spawn(body.frame());
    assert_pending!(next.poll());
    time::advance(idle - Duration::from_millis(1)).await;
    assert_pending!(next.poll());
    time::advance(Duration::from_millis(1)).await;
    let err = assert_ready!(next.poll()).unwrap().unwrap_err();
    let timeout = err
        .downcast_ref::<BodyTimeout>()
        .expect("a typed BodyTimeout");
    assert!(timeout.is_idle());
    drop(tx);
}
