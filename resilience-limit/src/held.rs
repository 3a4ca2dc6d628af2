//! [`AtBodyEnd`]: a call's place under a concurrency limit held until its response's body
//! ends, so that a stream (a download, server-sent events, a gRPC stream) counts for as long
//! as it lasts, as Envoy counts a request until its stream ends.

use crate::{AdaptiveConcurrencyLayer, FixedConcurrencyLayer, Place, future::Release};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

/// Holds a call's place until its response's body ends (its last frame, an error, or the
/// body dropped unfinished), rather than until the service answers. A body that is over from
/// the start (a `204`, a `101` whose tunnel is no longer HTTP) gives it back at once.
///
/// An adaptive limit still reads each call's latency to the answer (the response's head),
/// not to the body's end: a stream's length, or a slow reader's pace, says nothing of the
/// service's capacity. (Envoy's adaptive concurrency filter and Netflix's gRPC interceptor
/// time the whole stream, which suits unary calls only.) A reader that stops reading holds
/// its place until its body is dropped: bound it with a timeout on the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtBodyEnd;

impl<B: Body> Release<Response<B>> for AtBodyEnd {
    type Response = Response<HeldBody<B>>;

    fn release(response: Response<B>, place: Place) -> Self::Response {
        response.map(|body| HeldBody::new(body, place))
    }
}

pin_project! {
    /// A response body that holds its call's [`Place`] until it ends.
    #[derive(Debug)]
    pub struct HeldBody<B> {
        #[pin]
        body: B,
        place: Option<Place>,
    }
}

impl<B: Body> HeldBody<B> {
    /// `body`, holding `place` until it ends: not at all if it is over already.
    pub fn new(body: B, place: Place) -> Self {
        let place = (!body.is_end_stream()).then_some(place);
        Self { body, place }
    }
}

impl<B: Body> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        let over = match &frame {
            // The last frame: trailers, or data after which the body says it is over (a
            // reader may stop there, and keep the body).
            Some(Ok(frame)) => frame.is_trailers() || this.body.is_end_stream(),
            // The end, or an error that ends it.
            _ => true,
        };
        if over {
            // The place is free for the next call.
            *this.place = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl FixedConcurrencyLayer {
    /// This limit, holding each call's place until its response's body ends ([`AtBodyEnd`]).
    #[must_use]
    pub fn until_body_end(self) -> FixedConcurrencyLayer<AtBodyEnd> {
        self.release()
    }
}

impl AdaptiveConcurrencyLayer {
    /// This limit, holding each call's place until its response's body ends ([`AtBodyEnd`]);
    /// the latency the algorithm reads is still the answer's (to the response's head).
    pub fn until_body_end(self) -> AdaptiveConcurrencyLayer<AtBodyEnd> {
        self.release()
    }
}
