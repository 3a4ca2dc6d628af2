//! [`ReplayBody`]: a request body that can be sent again, kept while it streams.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    error::Error,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

/// The default cap on the body kept for replay: 64 KiB, as Linkerd.
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

pin_project! {
    /// A request body that can be replayed by a retry.
    ///
    /// The first attempt streams the original body; every data frame (and the trailers) is also
    /// kept, up to a cap. A retry replays what was kept and then goes on streaming the rest of
    /// the original, so a body is never collected whole before it is sent. Once the kept bytes
    /// pass the cap they are dropped and the body can no longer be replayed: it goes once,
    /// streaming. A body whose declared length is over the cap is never kept at all, and an
    /// empty body costs nothing.
    ///
    /// While the original is being read, only the newest copy reads: [`replay`](Self::replay)
    /// retires every copy handed out before it, and a retired copy fails with
    /// [`NotReplayable`] when polled. An HTTP client may go on writing the previous attempt's
    /// body after an early response; if that copy kept reading the original it would steal
    /// frames and wakeups from the retry, and could push the kept bytes over the cap halfway
    /// through the retry. Once the original has been read whole, copies only replay what was
    /// kept, and go side by side (hedged copies).
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Empty,
        Once { #[pin] body: B },
        Shared {
            shared: Arc<Mutex<Shared<B>>>,
            // The copy's generation: it may be polled only while this is the shared one.
            generation: u64,
            position: usize,
            sent_trailers: bool,
            hint: SizeHint,
        },
    }
}

struct Shared<B> {
    /// The rest of the original body; `None` once it has ended.
    body: Option<Pin<Box<B>>>,
    /// Data frames read so far, while under the cap.
    kept: Vec<Bytes>,
    /// Data frames read from the original body so far.
    read: usize,
    kept_bytes: usize,
    cap: usize,
    /// The kept frames were dropped (over the cap, or the body failed): no more replays.
    spoiled: bool,
    trailers: Option<HeaderMap>,
    /// The generation of the newest copy, the only one allowed to read; bumped by each replay.
    generation: u64,
    /// The waker of the copy that last found the original pending. Only the current generation
    /// polls the original, so one slot is enough; a replay wakes it so that the retired copy
    /// learns at once that it failed instead of waiting forever on a body it may not read.
    waiting: Option<Waker>,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes for replay. Returns the body for the first
    /// attempt and, when the body may be replayed, a copy for retries.
    pub fn new(body: B, cap: usize) -> (Self, Option<Self>) {
        if body.is_end_stream() {
            return (Self::empty(), Some(Self::empty()));
        }
        let hint = body.size_hint();
        if hint.lower() > cap as u64 {
            return (
                Self {
                    kind: Kind::Once { body },
                },
                None,
            );
        }
        let shared = Arc::new(Mutex::new(Shared {
            body: Some(Box::pin(body)),
            kept: Vec::new(),
            read: 0,
            kept_bytes: 0,
            cap,
            spoiled: false,
            trailers: None,
            generation: 0,
            waiting: None,
        }));
        // Both start at generation 0: the kept copy is never polled, only replayed.
        let copy = Self::shared(shared.clone(), 0, hint);
        (Self::shared(shared, 0, hint), Some(copy))
    }
}

impl<B> ReplayBody<B> {
    fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    fn shared(shared: Arc<Mutex<Shared<B>>>, generation: u64, hint: SizeHint) -> Self {
        Self {
            kind: Kind::Shared {
                shared,
                generation,
                position: 0,
                sent_trailers: false,
                hint,
            },
        }
    }

    /// Whether the whole body has been read and kept: a copy replayed now can no longer
    /// disturb one still being sent, so copies may go side by side (hedging).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once { .. } => false,
            Kind::Shared { shared, .. } => {
                let state = lock(shared);
                state.body.is_none() && !state.spoiled
            }
        }
    }

    /// A copy that replays the body from the start, or `None` when it can no longer be
    /// replayed (over the cap, or the original failed).
    ///
    /// While the original is still being read, the new copy becomes the only one that reads:
    /// every copy made before it (the previous attempt's included) fails with
    /// [`NotReplayable`] from then on. Once it has been read whole, copies only replay what
    /// was kept, and go side by side (hedging). Any copy may be replayed, retired or not; the
    /// retry layer replays the copy it keeps and never polls.
    #[must_use]
    pub fn replay(&self) -> Option<Self> {
        match &self.kind {
            Kind::Empty => Some(Self::empty()),
            Kind::Once { .. } => None,
            Kind::Shared { shared, hint, .. } => {
                let mut state = lock(shared);
                if state.spoiled {
                    return None;
                }
                if state.body.is_none() {
                    // Read whole: no copy touches the original again, none need be retired.
                    return Some(Self::shared(shared.clone(), state.generation, *hint));
                }
                state.generation += 1;
                let generation = state.generation;
                let retired = state.waiting.take();
                drop(state);
                if let Some(waker) = retired {
                    waker.wake();
                }
                Some(Self::shared(shared.clone(), generation, *hint))
            }
        }
    }
}

fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    // Only plain bookkeeping happens under the lock; a panic elsewhere leaves it consistent.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Once { body } => body.poll_frame(cx).map(|frame| {
                frame.map(|f| {
                    f.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                })
            }),
            KindProj::Shared {
                shared,
                generation,
                position,
                sent_trailers,
                ..
            } => {
                let mut state = lock(shared);
                if *generation != state.generation {
                    // A later attempt owns the original now; this attempt was given up.
                    return Poll::Ready(Some(Err(NotReplayable.into())));
                }
                if *position < state.read {
                    // Replaying: this copy is behind the original.
                    let Some(data) = state.kept.get(*position).cloned() else {
                        return Poll::Ready(Some(Err(NotReplayable.into())));
                    };
                    *position += 1;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(trailers) = &state.trailers {
                    if *sent_trailers {
                        return Poll::Ready(None);
                    }
                    *sent_trailers = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                }
                let state = &mut *state;
                let Some(body) = state.body.as_mut() else {
                    return Poll::Ready(None);
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => {
                        match &mut state.waiting {
                            Some(waker) => waker.clone_from(cx.waker()),
                            None => state.waiting = Some(cx.waker().clone()),
                        }
                        Poll::Pending
                    }
                    Poll::Ready(None) => {
                        state.body = None;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(err))) => {
                        state.spoil();
                        Poll::Ready(Some(Err(err.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let data = data.copy_to_bytes(data.remaining());
                            state.keep(data.clone());
                            *position += 1;
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => {
                                state.trailers = Some(trailers.clone());
                                *sent_trailers = true;
                                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                            }
                            // A frame that is neither data nor trailers: nothing to keep.
                            Err(_) => Poll::Ready(None),
                        },
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once { body } => body.is_end_stream(),
            Kind::Shared {
                shared,
                generation,
                position,
                sent_trailers,
                ..
            } => {
                let state = lock(shared);
                // A retired copy is never at its end: ending it cleanly would send a
                // truncated body as if it were whole. Polling it yields the error.
                *generation == state.generation
                    && *position >= state.read
                    && state.body.is_none()
                    && (state.trailers.is_none() || *sent_trailers)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Once { body } => body.size_hint(),
            // Every replay carries the whole body again, so the original's hint holds.
            Kind::Shared { hint, .. } => *hint,
        }
    }
}

impl<B> Shared<B> {
    fn keep(&mut self, data: Bytes) {
        self.read += 1;
        if self.spoiled {
            return;
        }
        self.kept_bytes += data.len();
        if self.kept_bytes > self.cap {
            self.spoil();
        } else {
            self.kept.push(data);
        }
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.kept = Vec::new();
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Once { .. } => "once",
            Kind::Shared { .. } => "replayable",
        };
        f.debug_struct("ReplayBody").field("kind", &kind).finish()
    }
}

/// A copy of a [`ReplayBody`] cannot go on: a later [`replay`](ReplayBody::replay) retired it
/// (the attempt it belonged to was given up), or it reached data that was not kept because
/// the original was spoiled.
#[derive(Debug, Clone, Copy)]
pub struct NotReplayable;

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body can no longer be replayed")
    }
}

impl Error for NotReplayable {}
