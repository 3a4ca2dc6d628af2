//! [`Coalesced`]: a socket whose small vectored writes go out as one plain `send`.
//!
//! hyper hands each message to the socket as several buffers (the head, then each body
//! chunk) in one vectored write, and rustls its records the same way. For the small messages
//! that most proxied calls are, the kernel's `writev` costs more than copying the few pieces
//! together and calling `send` once (the README's load section has the figures;
//! `benches/load/syscalls.py` shows which call a proxy makes). A large write stays vectored:
//! copying it would cost more than the cheaper call saves. Both sides of the proxy wrap their
//! TCP sockets in it, under TLS when there is TLS: a record rustls hands over alone goes with
//! `send` as it is (the mTLS pair measured the same either way).

use hyper_util::client::legacy::connect::{Connected, Connection};
use std::{
    cell::RefCell,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest vectored write copied into one buffer; larger ones go to `writev` as they
/// are. Far above a typical proxied head and small body, and small enough that the copy
/// stays cheaper than the system call it saves.
const COALESCE_MAX: usize = 8 * 1024;

thread_local! {
    /// Where a small vectored write is put together: one per worker thread (never more than
    /// [`COALESCE_MAX`] bytes), rather than one per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connection whose vectored writes of at most [`COALESCE_MAX`] bytes are sent with one
/// plain write; everything else passes through.
#[derive(Debug)]
pub(crate) struct Coalesced<IO> {
    io: IO,
}

impl<IO> Coalesced<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self { io }
    }
}

impl<IO: Connection> Connection for Coalesced<IO> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = &mut self.get_mut().io;
        let total = bufs
            .iter()
            .try_fold(0usize, |total, buf| total.checked_add(buf.len()))
            .filter(|&total| total <= COALESCE_MAX);
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        match (total, filled.next(), filled.next()) {
            // Nothing to write, or too much to copy: as asked.
            (None, ..) | (_, None, _) => Pin::new(io).poll_write_vectored(cx, bufs),
            (Some(_), Some(only), None) => Pin::new(io).poll_write(cx, only),
            (Some(total), Some(_), Some(_)) => {
                // A short write reports how many bytes went, as `writev` would: the caller
                // advances its buffers by that much and offers the rest again.
                let coalesced = SCRATCH.try_with(|scratch| {
                    let mut scratch = scratch.try_borrow_mut().ok()?;
                    scratch.clear();
                    scratch.reserve(total);
                    for buf in bufs {
                        scratch.extend_from_slice(buf);
                    }
                    Some(Pin::new(&mut *io).poll_write(cx, &scratch))
                });
                // Without the thread's buffer (a thread being torn down): as asked.
                match coalesced {
                    Ok(Some(written)) => written,
                    Ok(None) | Err(_) => Pin::new(io).poll_write_vectored(cx, bufs),
                }
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// Records each write: whether it came vectored, and its bytes; accepts at most `accept`
    /// bytes a call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(bool, Vec<u8>)>,
        accept: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = this
                .accept
                .map_or(buf.len(), |accept| accept.min(buf.len()));
            this.writes.push((false, buf[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let n = bytes.len();
            self.get_mut().writes.push((true, bytes));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write(coalesced: &mut Coalesced<Recorder>, bufs: &[&[u8]]) -> usize {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|buf| IoSlice::new(buf)).collect();
        poll_fn(|cx| Pin::new(&mut *coalesced).poll_write_vectored(cx, &slices))
            .await
            .expect("the recorder accepts every write")
    }

    #[tokio::test]
    async fn a_small_message_in_pieces_goes_out_as_one_plain_write() {
        let mut coalesced = Coalesced::new(Recorder::default());
        let written = write(&mut coalesced, &[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"ok"]).await;
        assert_eq!(written, 21);
        assert_eq!(
            coalesced.io.writes,
            [(false, b"HTTP/1.1 200 OK\r\n\r\nok".to_vec())]
        );
    }

    #[tokio::test]
    async fn one_piece_goes_out_as_a_plain_write_of_itself() {
        let mut coalesced = Coalesced::new(Recorder::default());
        assert_eq!(write(&mut coalesced, &[b"", b"record"]).await, 6);
        assert_eq!(coalesced.io.writes, [(false, b"record".to_vec())]);
    }

    #[tokio::test]
    async fn a_large_message_stays_vectored() {
        let mut coalesced = Coalesced::new(Recorder::default());
        let body = vec![b'x'; COALESCE_MAX];
        assert_eq!(
            write(&mut coalesced, &[b"head", &body]).await,
            COALESCE_MAX + 4
        );
        let writes = &coalesced.io.writes;
        assert_eq!(writes.len(), 1);
        assert!(writes[0].0, "a write over the cap is passed on vectored");
        assert_eq!(writes[0].1.len(), COALESCE_MAX + 4);
    }

    #[tokio::test]
    async fn a_short_write_reports_how_much_went_so_the_rest_is_offered_again() {
        let mut coalesced = Coalesced::new(Recorder {
            accept: Some(5),
            ..Recorder::default()
        });
        assert_eq!(write(&mut coalesced, &[b"abc", b"defg"]).await, 5);
        assert_eq!(write(&mut coalesced, &[b"fg"]).await, 2);
        assert_eq!(
            coalesced.io.writes,
            [(false, b"abcde".to_vec()), (false, b"fg".to_vec())]
        );
    }

    #[test]
    fn without_the_threads_buffer_a_write_goes_out_vectored() {
        let mut coalesced = Coalesced::new(Recorder::default());
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The buffer already borrowed: a write from inside a write, which never happens, or
        // a thread whose buffer is gone.
        let written = SCRATCH
            .with_borrow_mut(|_| Pin::new(&mut coalesced).poll_write_vectored(&mut cx, &slices));
        assert!(matches!(written, Poll::Ready(Ok(4))));
        assert_eq!(coalesced.io.writes, [(true, b"abcd".to_vec())]);
    }

    #[tokio::test]
    async fn nothing_to_write_is_passed_on_as_asked() {
        let mut coalesced = Coalesced::new(Recorder::default());
        assert_eq!(write(&mut coalesced, &[]).await, 0);
        assert_eq!(coalesced.io.writes, [(true, Vec::new())]);
    }
}
