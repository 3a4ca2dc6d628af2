//! Concurrency limits that hold a call's place until its response's body ends
//! (`until_body_end`, feature `http`), with mocks: a stream counts for as long as it lasts,
//! and its place is free once its body ends, fails or is dropped.

use http::Response;
use http_body::{Body, Frame};
use resilience_limit::{
    AdaptiveConcurrencyLayer, Aimd, Algorithm, FixedConcurrencyLayer, HeldBody, Overloaded,
};
use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// A body of so many chunks, one per poll.
#[derive(Debug)]
struct Chunks(VecDeque<&'static [u8]>);

impl Chunks {
    fn of(n: usize) -> Self {
        Self(std::iter::repeat_n(&b"chunk"[..], n).collect())
    }
}

impl Body for Chunks {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// The next frame of `body`, if any.
async fn frame(body: &mut HeldBody<Chunks>) -> Option<&'static [u8]> {
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.unwrap().into_data().unwrap())
}

/// A service answering each call with a body of `n` chunks, `n` the request.
fn streams() -> impl Service<usize, Response = Response<Chunks>, Error = BoxError> + Clone {
    service_fn(|n: usize| async move { Ok::<_, BoxError>(Response::new(Chunks::of(n))) })
}

fn refused(error: &BoxError) -> bool {
    error.is::<Overloaded>()
}

#[tokio::test]
async fn a_fixed_limit_counts_a_response_until_its_body_ends() {
    let mut service = FixedConcurrencyLayer::new(1)
        .until_body_end()
        .layer(streams());
    let mut call = async |n| service.ready().await.unwrap().call(n).await;

    // Answered, its body still streaming: the call holds the one place.
    let mut body = call(2).await.unwrap().into_body();
    let error = call(1).await.unwrap_err();
    assert!(refused(&error), "{error}");
    assert_eq!(frame(&mut body).await, Some(&b"chunk"[..]));
    assert!(call(1).await.is_err());
    // Its last frame, after which the body says it is over, gives the place back (a reader
    // may stop there and keep the body).
    assert_eq!(frame(&mut body).await, Some(&b"chunk"[..]));
    let mut next = call(3).await.unwrap().into_body();
    assert_eq!(frame(&mut body).await, None);

    // A body dropped unfinished gives it back too.
    assert!(call(1).await.is_err());
    assert_eq!(frame(&mut next).await, Some(&b"chunk"[..]));
    drop(next);
    let empty = call(0).await.unwrap();

    // A body over from the start holds nothing.
    assert!(empty.body().is_end_stream());
    call(0).await.unwrap();
}

#[tokio::test]
async fn by_default_a_place_is_given_back_at_the_answer() {
    let mut service = FixedConcurrencyLayer::new(1).layer(streams());
    let _streaming = service.ready().await.unwrap().call(2).await.unwrap();
    let _second = service.ready().await.unwrap().call(2).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_counts_a_response_until_its_body_ends() {
    let algorithm = Algorithm::Aimd(Aimd::default());
    let layer = AdaptiveConcurrencyLayer::new(algorithm)
        .limits(1, 1, 10)
        .unwrap()
        .until_body_end();
    let handle = layer.handle();
    let mut service = layer.layer(streams());
    let mut call = async |n| service.ready().await.unwrap().call(n).await;

    let mut body = call(2).await.unwrap().into_body();
    assert_eq!(handle.in_flight(), 1);
    let error = call(1).await.unwrap_err();
    assert!(refused(&error), "{error}");
    assert_eq!(frame(&mut body).await, Some(&b"chunk"[..]));
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(frame(&mut body).await, Some(&b"chunk"[..]));
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(frame(&mut body).await, None);
    drop(body);
    call(0).await.unwrap();
    assert_eq!(handle.in_flight(), 0);
}
