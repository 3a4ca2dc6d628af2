//! [`Http2Connections`]: an endpoint's HTTP/2 connections on one worker, each carrying as many
//! streams at once as its peer allows (`SETTINGS_MAX_CONCURRENT_STREAMS`), and another one
//! opened when every one is full.
//!
//! hyper's `SendRequest` is ready whenever its connection is open: a request past the peer's
//! limit waits in hyper's queue until a stream ends, however long that takes (a long gRPC
//! stream, a slow answer). A peer sidecar allows 256 streams and a route 1024 requests at once,
//! so one connection would hold the rest back until their timeouts.

use super::StackBody;
use hyper::client::conn::http2;
use std::{
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// HTTP/2 connections per endpoint and worker. With every one at its peer's limit, a request
/// waits in the least loaded one's queue rather than opening more.
pub(crate) const MAX_HTTP2: usize = 8;

/// What h2 assumes a peer allows until its `SETTINGS` say otherwise (RFC 9113 recommends
/// allowing at least 100).
const ASSUMED_STREAMS: usize = 100;

/// The streams of one HTTP/2 connection: in flight, and the most its peer allows now.
#[derive(Debug)]
pub(crate) struct Streams {
    in_flight: AtomicUsize,
    allowed: AtomicUsize,
}

impl Streams {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            allowed: AtomicUsize::new(ASSUMED_STREAMS),
        })
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.in_flight() < self.allowed.load(Ordering::Relaxed).max(1)
    }

    fn take(self: &Arc<Self>) -> StreamSlot {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        StreamSlot(self.clone())
    }
}

/// One stream taken on an HTTP/2 connection, given back when dropped: when its response body
/// ends or is dropped, or its request fails.
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<Streams>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Http2Connections::take`] found.
pub(crate) enum Taken<B> {
    /// A stream on a connection.
    Stream(http2::SendRequest<B>, StreamSlot),
    /// Every connection is full, and there is room for another: open it.
    Full,
    /// No HTTP/2 connection.
    None,
}

/// One worker's HTTP/2 connections to an endpoint.
pub(crate) struct Http2Connections<B>(Vec<(http2::SendRequest<B>, Arc<Streams>)>);

impl<B> Http2Connections<B> {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    /// A stream on the first open connection with room for one; with none, another
    /// connection if there may be one more, else the least loaded connection (its request
    /// waits in hyper's queue for a stream).
    pub(crate) fn take(&mut self) -> Taken<B> {
        self.0.retain(|(sender, _)| !sender.is_closed());
        if let Some((sender, streams)) = self.0.iter().find(|(_, streams)| streams.has_room()) {
            return Taken::Stream(sender.clone(), streams.take());
        }
        if self.0.is_empty() {
            return Taken::None;
        }
        if self.0.len() < MAX_HTTP2 {
            return Taken::Full;
        }
        match self.0.iter().min_by_key(|(_, streams)| streams.in_flight()) {
            Some((sender, streams)) => Taken::Stream(sender.clone(), streams.take()),
            None => Taken::None,
        }
    }

    /// Adds a connection just made, and takes a stream on it.
    pub(crate) fn add(
        &mut self,
        sender: http2::SendRequest<B>,
        streams: Arc<Streams>,
    ) -> StreamSlot {
        let slot = streams.take();
        self.0.push((sender, streams));
        slot
    }
}

/// Drives an HTTP/2 connection to its end, publishing its peer's stream limit into `streams`
/// each time it is polled (a `SETTINGS` frame may change it at any time).
pub(crate) async fn drive<T, B, E>(
    connection: http2::Connection<T, B, E>,
    streams: Arc<Streams>,
) -> hyper::Result<()>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: StackBody,
    E: hyper::rt::bounds::Http2ClientConnExec<B, T> + Unpin,
{
    let mut connection = pin!(connection);
    std::future::poll_fn(|cx| {
        let polled = connection.as_mut().poll(cx);
        streams
            .allowed
            .store(connection.current_max_send_streams(), Ordering::Relaxed);
        polled
    })
    .await
}
