//! [`Activity`]: what one connection is doing, so that a silent, idle or stalled one can be
//! told apart from a busy one and closed, and a connection that never asked for anything can
//! give its place to one that will.

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// One connection's requests: how many are in flight, whether there ever was one, and when
/// the last one ended (or the connection was accepted).
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    requested: AtomicBool,
    /// It has carried an HTTP/2 request (else it speaks HTTP/1).
    http2: AtomicBool,
    last_done: Mutex<Instant>,
    /// The bytes read from the connection and written to it, counted by [`Moving`].
    read: AtomicU64,
    written: AtomicU64,
    /// The bytes moved either way at the last look, and since when it has been that.
    still: Mutex<(u64, Instant)>,
    evicted: AtomicBool,
    draining: AtomicBool,
    /// Wakes the connection's task when it is evicted or drained. Not a `Notify`: the task
    /// polls these signals every time it wakes, twice a request, and a `Notify` is polled
    /// under its mutex; this is an atomic load or two.
    asked: AtomicWaker,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            last_done: Mutex::new(Instant::now()),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            still: Mutex::new((0, Instant::now())),
            evicted: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            asked: AtomicWaker::new(),
        })
    }

    /// A request of HTTP `version` starts; it is in flight until the guard is dropped.
    pub(super) fn start(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn last_done(&self) -> Instant {
        *self
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the connection may go with no request in flight once it has had one: `idle`,
    /// and on HTTP/1.1 no longer than `first_request`, the header read timeout: the next head
    /// must have come whole by then. That is the rule hyper's own header read timeout kept,
    /// which this replaces because it armed a timer for every request (about 7 % of a hop's
    /// user-space instructions); here the connection's one timer does it.
    fn idle_limit(&self, first_request: Duration, idle: Duration) -> Duration {
        if self.http2.load(Ordering::Relaxed) {
            idle
        } else {
            idle.min(first_request)
        }
    }

    /// Since when no byte has moved either way, as far as the last look can tell (a look
    /// that finds bytes moved since the one before starts the count again).
    fn still_since(&self) -> Instant {
        let (read, written) = self.bytes();
        let moved = read.wrapping_add(written);
        let mut still = self.still.lock().unwrap_or_else(PoisonError::into_inner);
        if still.0 != moved {
            *still = (moved, Instant::now());
        }
        still.1
    }

    /// The bytes read from the connection and written to it so far.
    pub(super) fn bytes(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Why the connection should be closed now, if it should: it never sent a request within
    /// `first_request` of being accepted, has had none in flight for its idle limit, or has
    /// had requests in flight while no byte moved either way for `idle` (a caller that stops
    /// reading its answer holds an upstream connection, or an HTTP/2 stream's window, until
    /// then; Envoy's `stream_idle_timeout`, also 5 minutes by default, has the same bound).
    pub(super) fn silent(&self, first_request: Duration, idle: Duration) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (self.still_since().elapsed() >= idle).then_some("stalled");
        }
        let (limit, why) = if self.requested.load(Ordering::Relaxed) {
            (self.idle_limit(first_request, idle), "idle")
        } else {
            (first_request, "no-request")
        };
        (self.last_done().elapsed() >= limit).then_some(why)
    }

    /// When to look again: when the connection would become silent, or, while requests are in
    /// flight, when it would become stalled.
    pub(super) fn next_check(&self, first_request: Duration, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return self.still_since() + idle;
        }
        let limit = if self.requested.load(Ordering::Relaxed) {
            self.idle_limit(first_request, idle)
        } else {
            first_request
        };
        self.last_done() + limit
    }

    /// Since when the connection has had no request in flight, if it has none now (and has
    /// not been asked to leave).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0 && !self.evicted.load(Ordering::Relaxed))
            .then(|| self.last_done())
    }

    /// Whether the connection has not sent a request yet: what the listener may evict.
    pub(super) fn never_requested(&self) -> bool {
        !self.requested.load(Ordering::Relaxed) && !self.evicted.load(Ordering::Relaxed)
    }

    /// Asks the connection to close, for one that has something to say.
    pub(super) fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.asked.wake();
    }

    /// Asks the connection to close gracefully: its listener drains.
    pub(super) fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.asked.wake();
    }

    /// Completes once the connection has been evicted.
    pub(super) fn evicted(&self) -> impl Future<Output = ()> + '_ {
        self.asked_for(&self.evicted)
    }

    /// Whether the connection's listener drains (asked, whether or not its task has seen it).
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Completes once the connection's listener drains.
    pub(super) fn drained(&self) -> impl Future<Output = ()> + '_ {
        self.asked_for(&self.draining)
    }

    fn asked_for<'a>(&'a self, flag: &'a AtomicBool) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if flag.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            // Registered, then looked at again: an ask between the two is not missed.
            self.asked.register(cx.waker());
            if flag.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A connection's bytes, counted as they move each way, so that one with requests in flight
/// and nothing moving can be told apart from a busy one, and a tunnel's line can say what it
/// carried.
pub(super) struct Moving<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Moving<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }

    /// Counted by the connection's task alone: a plain load and store, no atomic increment.
    fn count(counter: &AtomicU64, bytes: usize) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(bytes as u64),
            Ordering::Relaxed,
        );
    }

    /// `written`, a write's outcome, counted.
    fn wrote(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = written {
            Self::count(&self.activity.written, n);
        }
        written
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Moving<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            Self::count(&this.activity.read, buf.filled().len() - before);
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Moving<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request in flight on its connection; dropping it ends the request.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it has been sent or dropped, so
    /// a long stream is never taken for silence.
    pub(super) struct Tracked<B> {
        #[pin]
        inner: B,
        in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, in_flight }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_secs(5);

    /// On HTTP/1.1 the next request head must come whole within the header read timeout of
    /// the last response (the rule of hyper's own header read timeout, which this replaces);
    /// HTTP/2 waits its idle limit.
    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_waits_for_its_next_head_no_longer_than_the_header_read_timeout() {
        let activity = Activity::new();
        drop(activity.start(Version::HTTP_11));
        assert_eq!(activity.next_check(FIRST, IDLE), Instant::now() + FIRST);
        tokio::time::advance(FIRST - Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), Some("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_until_a_first_request_then_idle_after_the_last_one() {
        let activity = Activity::new();
        assert_eq!(activity.silent(FIRST, IDLE), None);
        tokio::time::advance(FIRST).await;
        assert_eq!(activity.silent(FIRST, IDLE), Some("no-request"));

        let request = activity.start(Version::HTTP_2);
        for _ in 0..4 {
            tokio::time::advance(IDLE / 2).await;
            activity.read.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                activity.silent(FIRST, IDLE),
                None,
                "a long request whose bytes move is not silence"
            );
        }
        drop(request);
        assert_eq!(activity.next_check(FIRST, IDLE), Instant::now() + IDLE);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), Some("idle"));
    }

    /// A request in flight while no byte moves either way (a caller that stopped reading its
    /// answer) is closed after the idle limit, counted from the last byte that moved.
    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_with_nothing_moving_is_stalled_after_the_idle_limit() {
        let activity = Activity::new();
        let _request = activity.start(Version::HTTP_11);
        activity.read.fetch_add(1, Ordering::Relaxed);
        assert_eq!(activity.next_check(FIRST, IDLE), Instant::now() + IDLE);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(activity.silent(FIRST, IDLE), Some("stalled"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_that_never_asked_can_be_evicted_and_only_once() {
        let activity = Activity::new();
        assert!(activity.never_requested());
        activity.evict();
        assert!(!activity.never_requested(), "already on its way out");
        activity.evicted().await;

        let busy = Activity::new();
        drop(busy.start(Version::HTTP_11));
        assert!(!busy.never_requested());
    }

    /// The connection's task waits on both asks at once, as its loop does; each wakes it, and
    /// only its own future completes.
    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_drain_and_by_an_eviction() {
        for (ask, answer) in [
            (Activity::drain as fn(&Activity), "drained"),
            (Activity::evict, "evicted"),
        ] {
            let activity = Activity::new();
            let waiting = tokio::spawn({
                let activity = activity.clone();
                async move {
                    tokio::select! {
                        () = activity.drained() => "drained",
                        () = activity.evicted() => "evicted",
                    }
                }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            ask(&activity);
            assert_eq!(waiting.await.unwrap(), answer);
        }
    }
}
