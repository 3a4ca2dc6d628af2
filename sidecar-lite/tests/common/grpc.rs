//! A gRPC app for the tests that need one: any method answers one message and `OK` (in the
//! trailers), except `.../Fail`, which answers `UNAVAILABLE` trailers-only, and `.../Hang`,
//! which never answers.

use super::{BoxBody, app, full};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicUsize},
};

pub const OK: u16 = 0;
pub const UNAVAILABLE: u16 = 14;

/// The one message `OK` calls answer, framed as gRPC frames it (no compression, 2 bytes).
pub const MESSAGE: &[u8] = b"\0\0\0\0\x02hi";

/// A unary call of `method` (`/package.Service/Method`) to `addr`, over HTTP/2, with one
/// 4-byte message.
pub fn grpc_request(addr: SocketAddr, method: &str) -> Request<BoxBody> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{method}"))
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(&b"\0\0\0\0\x04ping"[..]))
        .unwrap()
}

pub async fn grpc_app() -> (SocketAddr, Arc<AtomicUsize>) {
    app(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let _ = req.into_body().collect().await;
        let mut response: Response<BoxBody> = if path.ends_with("/Hang") {
            std::future::pending().await
        } else if path.ends_with("/Fail") {
            let mut response = Response::new(full(""));
            response
                .headers_mut()
                .insert("grpc-status", UNAVAILABLE.into());
            response
        } else {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", OK.into());
            let frames = [
                Ok(Frame::data(Bytes::from_static(MESSAGE))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync())
        };
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
    })
    .await
}
