//! The one response body type the proxy serves, and the local replies it writes itself.

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use resilience_core::{BoxError, LocalReply};
use resilience_limit::{HeldBody, Place, Release};

/// Every response the proxy sends: streamed from upstream or written here.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`ProxyBody`], streaming as it was.
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The concurrency limits' release policy in the stacks: a request holds its place in its
/// response's body until the body ends (as `resilience_limit::AtBodyEnd`), the body boxed
/// into a [`ProxyBody`] there and then, so that the response leaves the limit boxed rather
/// than moved whole once more to a box above it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldUntilBodyEnd;

impl<B> Release<Response<B>> for HeldUntilBodyEnd
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;

    fn release(response: Response<B>, place: Place) -> Response<ProxyBody> {
        response.map(|body| boxed(HeldBody::new(body, place)))
    }
}

/// A request body the stacks accept: hyper's, or any body of bytes in library mode.
pub(crate) trait StackBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}
impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static> StackBody for B {}

/// A response made by the proxy itself, from its [`LocalReply`]: the reason's status, its
/// `x-sidecar-error` flag, `Retry-After` when known, and a one-line plain-text body.
pub(crate) fn local_response(reply: LocalReply) -> Response<ProxyBody> {
    reply.into_response().map(boxed)
}
