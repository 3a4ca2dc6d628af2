//! The one response body type the proxy serves, and the short bodies it writes itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header::CONTENT_TYPE};
use http_body::Body;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use resilience_timeout::{BoxError, SIDECAR_ERROR};

/// Every response the proxy sends: streamed from upstream or written here.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`ProxyBody`], streaming as it was.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A response made by the proxy itself: a status, `x-sidecar-error: <flag>` naming why, and a
/// one-line plain-text body.
pub fn sidecar_response(status: StatusCode, flag: &'static str, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(format!("{text}\n")))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(SIDECAR_ERROR, HeaderValue::from_static(flag));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
