//! Request framing, followed beside hyper to catch request smuggling.
//!
//! A request carrying both `Content-Length` and `Transfer-Encoding` is how request smuggling
//! starts (RFC 9112 section 6.3): two hops that frame it differently disagree on where the next
//! request begins. hyper frames it by `Transfer-Encoding`, closes the connection after it and
//! drops the `Content-Length` before the service sees the request, so the service cannot tell.
//! [`FramingGuard`] wraps a connection and follows the framing of its HTTP/1 requests as hyper
//! reads them (heads, sized and chunked bodies), and marks the first request that carries both;
//! the server answers that one with 400 instead of forwarding it.
//!
//! Whatever the guard cannot follow (HTTP/2, CONNECT, a head hyper will reject anyway) ends its
//! watch: hyper's own checks still apply, the guard only ever adds a rejection. A head split
//! across reads is kept and parsed again only when a read brings the end of a line that could
//! end it, so a head sent a byte at a time costs work in proportion to its length.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's guard and its service share: which request, counted from 1, carries
/// ambiguous framing, and how many requests the service has taken so far.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    ambiguous: AtomicU64,
    served: AtomicU64,
}

impl Framing {
    /// Counts a request the service takes, and tells whether it is the ambiguous one. HTTP/1
    /// requests reach the service in the order their heads arrived, and the guard has read a
    /// head before hyper parses it, so the two counts line up.
    pub(crate) fn next_is_ambiguous(&self) -> bool {
        let position = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        position == self.ambiguous.load(Ordering::Relaxed)
    }
}

/// A connection whose request framing is followed as hyper reads it.
#[derive(Debug)]
pub(crate) struct FramingGuard<IO> {
    io: IO,
    scanner: Scanner,
    framing: Arc<Framing>,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`; heads larger than `max_head_bytes` or with more than `max_headers` headers
    /// are left to hyper, which rejects them.
    pub(crate) fn new(
        io: IO,
        framing: Arc<Framing>,
        max_head_bytes: usize,
        max_headers: usize,
    ) -> Self {
        Self {
            io,
            scanner: Scanner::new(max_head_bytes, max_headers),
            framing,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if !this.scanner.is_done()
            && let Some(position) = this.scanner.feed(&buf.filled()[before..])
        {
            this.framing.ambiguous.store(position, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
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
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
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

/// Where the scanner is in the byte stream of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// Reading a chunk-size line.
    ChunkSize,
    /// Reading the trailer section after the last chunk.
    Trailers,
    /// Passing over `left` bytes of body, then reading `then`.
    Skip { left: u64, then: Line },
    /// No longer following: hyper handles the rest on its own.
    Done,
}

/// The line-oriented states a skip returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Head,
    ChunkSize,
}

/// The outcome of reading one head, chunk-size line or trailer section.
enum Step {
    /// Consumed this many bytes, and moved on.
    Consumed(usize),
    /// Needs more bytes.
    Partial,
}

/// Follows the framing of HTTP/1 requests through the bytes read from a connection.
#[derive(Debug)]
struct Scanner {
    state: State,
    /// The start of a head, chunk-size line or trailer section split across reads.
    pending: Vec<u8>,
    /// Request heads seen so far.
    heads: u64,
    max_head_bytes: usize,
    max_headers: usize,
    /// Bytes copied or parsed so far.
    #[cfg(test)]
    work: u64,
}

impl Scanner {
    fn new(max_head_bytes: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            pending: Vec::new(),
            heads: 0,
            max_head_bytes,
            max_headers,
            #[cfg(test)]
            work: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `input`, the next bytes of the connection. Returns the position of a request
    /// that carries both framing headers, when this input completes its head.
    fn feed(&mut self, mut input: &[u8]) -> Option<u64> {
        while !input.is_empty() {
            match self.state {
                State::Done => return None,
                State::Skip { left, then } => {
                    let take = left.min(input.len() as u64);
                    input = &input[take as usize..];
                    self.state = match left - take {
                        0 => then.into(),
                        left => State::Skip { left, then },
                    };
                }
                State::Head | State::ChunkSize | State::Trailers if self.pending.is_empty() => {
                    match self.step(input) {
                        Ok(Step::Consumed(n)) => input = &input[n..],
                        Ok(Step::Partial) => return self.keep(input),
                        Err(found) => return found,
                    }
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    // Grow the pending bytes in place, and parse them again only if these
                    // bytes may have ended what is pending: each byte is copied once, and a
                    // head is parsed once per line that could end it, not once per read.
                    let seen = self.pending.len().saturating_sub(2);
                    self.spend(input.len());
                    self.pending.extend_from_slice(input);
                    if self.pending.len() > self.max_head_bytes {
                        self.stop();
                        return None;
                    }
                    if !may_end(self.state, &self.pending[seen..]) {
                        return None;
                    }
                    let joined = std::mem::take(&mut self.pending);
                    return match self.step(&joined) {
                        // The pending bytes are gone now, so this recurses at most once.
                        Ok(Step::Consumed(n)) => self.feed(&joined[n..]),
                        Ok(Step::Partial) => {
                            self.pending = joined;
                            None
                        }
                        Err(found) => found,
                    };
                }
            }
        }
        None
    }

    /// Keeps the start of an unfinished head or line, up to the head limit.
    fn keep(&mut self, partial: &[u8]) -> Option<u64> {
        if partial.len() > self.max_head_bytes {
            self.stop();
        } else {
            self.spend(partial.len());
            self.pending.clear();
            self.pending.extend_from_slice(partial);
        }
        None
    }

    /// Counts bytes copied or parsed, for the test that work grows with input, not faster.
    fn spend(&mut self, bytes: usize) {
        #[cfg(test)]
        {
            self.work += bytes as u64;
        }
        let _ = bytes;
    }

    fn stop(&mut self) {
        self.state = State::Done;
        self.pending = Vec::new();
    }

    /// Reads one head, chunk-size line or trailer section at the start of `bytes`. `Err`
    /// means the watch is over, with the position of an ambiguous request if that ended it.
    fn step(&mut self, bytes: &[u8]) -> Result<Step, Option<u64>> {
        self.spend(bytes.len());
        match self.state {
            State::Head => {
                if let Some(n) = head_without_body(bytes, self.max_head_bytes, self.max_headers) {
                    self.heads += 1;
                    return Ok(Step::Consumed(n));
                }
                let parsed = with_headers(self.max_headers, MaybeUninit::uninit(), |headers| {
                    let mut request = httparse::Request::new(&mut []);
                    match request.parse_with_uninit_headers(bytes, headers) {
                        Ok(httparse::Status::Complete(n)) => {
                            Ok(httparse::Status::Complete((n, body_of(&request))))
                        }
                        Ok(httparse::Status::Partial) => Ok(httparse::Status::Partial),
                        Err(e) => Err(e),
                    }
                });
                match parsed {
                    Ok(httparse::Status::Complete((n, body))) => {
                        self.heads += 1;
                        self.enter(body)?;
                        Ok(Step::Consumed(n))
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::Partial),
                    // HTTP/2's preface, too many headers, bad bytes: hyper's to handle.
                    Err(_) => {
                        self.stop();
                        Err(None)
                    }
                }
            }
            // hyper's chunked decoder wants CRLF where httparse also takes a bare LF: where
            // the two could disagree on where the body ends, stop watching.
            State::ChunkSize | State::Trailers if ends_a_line_with_bare_lf(bytes, self.state) => {
                self.stop();
                Err(None)
            }
            State::ChunkSize => match httparse::parse_chunk_size(bytes) {
                Ok(httparse::Status::Complete((n, 0))) => {
                    self.state = State::Trailers;
                    Ok(Step::Consumed(n))
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    // The chunk, then the CRLF that ends it.
                    self.state = State::Skip {
                        left: size.saturating_add(2),
                        then: Line::ChunkSize,
                    };
                    Ok(Step::Consumed(n))
                }
                Ok(httparse::Status::Partial) => Ok(Step::Partial),
                // A size the guard cannot read, which hyper may still take (seventeen digits,
                // zeros first): past it the guard cannot follow where requests begin, so the
                // next request on the connection is refused rather than let through unwatched.
                Err(_) => {
                    self.stop();
                    Err(Some(self.heads + 1))
                }
            },
            State::Trailers => {
                if bytes.starts_with(b"\r\n") {
                    self.state = State::Head;
                    return Ok(Step::Consumed(2));
                }
                let parsed = with_headers(self.max_headers, httparse::EMPTY_HEADER, |headers| {
                    match httparse::parse_headers(bytes, headers) {
                        Ok(httparse::Status::Complete((n, _))) => Ok(Some(n)),
                        Ok(httparse::Status::Partial) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                match parsed {
                    Ok(Some(n)) => {
                        self.state = State::Head;
                        Ok(Step::Consumed(n))
                    }
                    Ok(None) => Ok(Step::Partial),
                    Err(_) => {
                        self.stop();
                        Err(None)
                    }
                }
            }
            // `feed` never asks for these; stopping is the safe answer if it ever did.
            State::Skip { .. } | State::Done => {
                self.stop();
                Err(None)
            }
        }
    }

    /// Moves past a head whose body is `body`.
    fn enter(&mut self, body: Body) -> Result<(), Option<u64>> {
        self.state = match body {
            Body::None => State::Head,
            Body::Sized(0) => State::Head,
            Body::Sized(left) => State::Skip {
                left,
                then: Line::Head,
            },
            Body::Chunked => State::ChunkSize,
            Body::Ambiguous => {
                self.stop();
                return Err(Some(self.heads));
            }
            Body::Unknown => {
                self.stop();
                return Err(None);
            }
        };
        Ok(())
    }
}

/// The length of the request head at the start of `bytes` when it plainly announces no body,
/// without parsing it whole (hyper parses it anyway): an HTTP/1.0 or 1.1 request line that is
/// not CONNECT, then lines each ended by CRLF, none of them naming `Content-Length` or
/// `Transfer-Encoding` in any case, up to the empty line, within the limits. The usual GET.
/// `None` for anything else (a body, a bare LF, a head not whole yet, HTTP/2's preface): the
/// full parse decides.
fn head_without_body(bytes: &[u8], max_head_bytes: usize, max_headers: usize) -> Option<usize> {
    let names = |line: &[u8], name: &[u8]| {
        line.get(..name.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(name))
    };
    let mut start = 0;
    let mut headers = 0;
    loop {
        let end = start + bytes.get(start..)?.iter().position(|&b| b == b'\n')?;
        if end == start || bytes[end - 1] != b'\r' || end + 1 > max_head_bytes {
            return None;
        }
        let line = &bytes[start..end - 1];
        if start == 0 {
            let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
            if !http1 || names(line, b"CONNECT ") {
                return None;
            }
        } else if line.is_empty() {
            return Some(end + 1);
        } else if headers == max_headers
            || names(line, b"content-length")
            || names(line, b"transfer-encoding")
        {
            return None;
        } else {
            headers += 1;
        }
        start = end + 1;
    }
}

/// Whether `tail` (the new bytes, after the last two pending ones) may end what `state` is
/// reading: a head or trailer section ends with an empty line, a chunk-size line with its line
/// feed.
fn may_end(state: State, tail: &[u8]) -> bool {
    match state {
        State::ChunkSize => tail.contains(&b'\n'),
        _ => tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n"),
    }
}

impl From<Line> for State {
    fn from(line: Line) -> Self {
        match line {
            Line::Head => State::Head,
            Line::ChunkSize => State::ChunkSize,
        }
    }
}

/// How a request's body is framed, as hyper frames it.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    None,
    Sized(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// Past this request the bytes may not be HTTP/1 requests (CONNECT), or hyper rejects the
    /// head (a bad length, a final encoding other than chunked).
    Unknown,
}

fn body_of(request: &httparse::Request<'_, '_>) -> Body {
    let named = |name: &str| {
        request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    // Before anything else: whatever the values or other headers, hyper never reads such a
    // request as its Content-Length says.
    if named("content-length") && named("transfer-encoding") {
        return Body::Ambiguous;
    }
    let mut length = None;
    let mut chunked = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            match (parse_length(header.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Body::Unknown,
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // As hyper reads it: the last encoding of the last line must be chunked.
            chunked = Some(
                header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
            );
        }
        // `Upgrade` alone changes nothing: unless the app answers a WebSocket handshake with
        // `101`, the connection goes on with HTTP/1 requests to follow. After a `101` the
        // bytes are the tunnel's: the guard may still read them as heads, which ends its watch
        // (at most `max_head_bytes` later), and no request follows to be refused.
    }
    if request
        .method
        .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
    {
        return Body::Unknown;
    }
    match (length, chunked) {
        (_, Some(true)) => Body::Chunked,
        (_, Some(false)) => Body::Unknown,
        (Some(n), None) => Body::Sized(n),
        (None, None) => Body::None,
    }
}

/// Heads with up to this many headers are parsed with the header array on the stack.
const STACK_HEADERS: usize = 128;

/// Runs `parse` over room for `max` headers, each `empty`: on the stack for the usual limits,
/// so that following a request's head costs no allocation. A head's are left uninitialized
/// (`MaybeUninit`): writing 128 empty headers is 4 KiB of stores for every request.
fn with_headers<H: Copy, R>(max: usize, empty: H, parse: impl FnOnce(&mut [H]) -> R) -> R {
    if max <= STACK_HEADERS {
        let mut headers = [empty; STACK_HEADERS];
        parse(&mut headers[..max])
    } else {
        parse(&mut vec![empty; max])
    }
}

/// Whether the chunk-size line (in `ChunkSize`), or a line of the trailer section up to its
/// empty line (in `Trailers`), at the start of `bytes` ends in a bare LF. Only those lines:
/// chunk data and what follows may hold any byte.
fn ends_a_line_with_bare_lf(bytes: &[u8], state: State) -> bool {
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        if end == 0 || rest[end - 1] != b'\r' {
            return true;
        }
        // The chunk-size line, or the empty line that ends the trailers: done.
        if state == State::ChunkSize || end == 1 {
            return false;
        }
        rest = &rest[end + 1..];
    }
    false
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner::new(64 * 1024, 100)
    }

    /// Feeds `bytes` in pieces of `piece` bytes; returns the first ambiguous position.
    fn feed_in_pieces(scanner: &mut Scanner, bytes: &[u8], piece: usize) -> Option<u64> {
        bytes
            .chunks(piece)
            .fold(None, |found, chunk| found.or(scanner.feed(chunk)))
    }

    const KEEP_ALIVE: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n";

    const SMUGGLED: &[u8] =
        b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";

    #[test]
    fn follows_sized_and_chunked_bodies_to_the_ambiguous_request_at_any_split() {
        let stream = [KEEP_ALIVE, SMUGGLED].concat();
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut scanner = scanner();
            assert_eq!(
                feed_in_pieces(&mut scanner, &stream, piece),
                Some(4),
                "pieces of {piece}"
            );
            assert!(scanner.is_done());
        }
    }

    #[test]
    fn a_body_that_looks_like_a_smuggled_request_is_not_one() {
        let body = SMUGGLED;
        let mut stream = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut scanner = scanner();
        assert_eq!(scanner.feed(&stream), None);
        assert_eq!(scanner.heads, 2);
        assert_eq!(scanner.state, State::Head);
    }

    #[test]
    fn either_header_order_and_any_case_is_ambiguous() {
        for head in [
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTRANSFER-ENCODING: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(scanner().feed(head.as_bytes()), Some(1), "{head}");
        }
    }

    #[test]
    fn both_headers_are_ambiguous_whatever_else_the_head_says() {
        for head in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: nonsense\r\n\r\n",
            "POST / HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(scanner().feed(head.as_bytes()), Some(1), "{head}");
        }
    }

    #[test]
    fn a_bare_lf_in_a_chunked_body_ends_the_watch() {
        // hyper ends trailers only at CRLF CRLF: the GET below is inside its trailer section,
        // so the scanner must not count it as a request.
        let mut scanner = scanner();
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scanner.feed(stream), None);
        assert!(scanner.is_done());
        assert_eq!(scanner.heads, 1);
    }

    #[test]
    fn line_feeds_in_chunk_data_are_data() {
        let mut scanner = scanner();
        let stream =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na\nb\n\r\n0\r\n\r\n";
        assert_eq!(scanner.feed(stream), None);
        assert_eq!((scanner.heads, scanner.state), (1, State::Head));
        assert_eq!(scanner.feed(SMUGGLED), Some(2), "still watching");
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_parsed_once_its_lines_end() {
        let mut scanner = scanner();
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n";
        for byte in head.chunks(1) {
            assert_eq!(scanner.feed(byte), None);
        }
        assert_eq!((scanner.heads, scanner.state), (1, State::Head));
        assert!(scanner.pending.is_empty());
    }

    #[test]
    fn hands_over_to_hyper_for_what_it_does_not_follow() {
        for stream in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ] {
            let mut scanner = scanner();
            assert_eq!(scanner.feed(stream), None);
            assert!(scanner.is_done(), "{}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn a_request_asking_for_an_upgrade_does_not_end_the_watch() {
        // The proxy never switches protocols: what follows is the next request.
        let stream = [
            &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            SMUGGLED,
        ]
        .concat();
        for piece in [1, 5, stream.len()] {
            let mut scanner = scanner();
            assert_eq!(
                feed_in_pieces(&mut scanner, &stream, piece),
                Some(2),
                "{piece}"
            );
        }
    }

    #[test]
    fn a_long_head_sent_a_byte_at_a_time_costs_work_in_proportion_to_its_length() {
        // Just under the limit, in 1000 header lines, one byte per read.
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        while head.len() < 60 * 1024 {
            head.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789012345\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let mut scanner = Scanner::new(64 * 1024, 2000);
        for byte in head.chunks(1) {
            assert_eq!(scanner.feed(byte), None);
        }
        assert_eq!((scanner.heads, scanner.state), (1, State::Head));
        let per_byte = scanner.work as f64 / head.len() as f64;
        println!(
            "{} bytes a byte at a time: {} bytes of work, {per_byte:.2} per byte",
            head.len(),
            scanner.work
        );
        // Copying each byte once into the pending head and parsing the head once at its end:
        // about 2 per byte. Copying the whole pending head again on every read, as the guard
        // once did, is half the head per byte: some 30 000 here.
        assert!(per_byte < 4.0, "{per_byte:.1} bytes of work per byte");
    }

    #[test]
    fn a_head_over_the_limit_is_left_to_hyper() {
        let mut scanner = Scanner::new(32, 100);
        assert_eq!(
            scanner.feed(b"GET / HTTP/1.1\r\nX-Long: 0123456789012345678901234567890\r\n"),
            None
        );
        assert!(scanner.is_done());
        assert!(scanner.pending.is_empty(), "nothing kept after the watch");
    }

    /// A head's length and body as the full parse reads them; `None` when httparse refuses
    /// the head (hyper refuses it too) or has not got all of it.
    fn parsed_whole(bytes: &[u8]) -> Option<(usize, Body)> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => Some((n, body_of(&request))),
            _ => None,
        }
    }

    #[test]
    fn a_head_without_framing_headers_is_read_without_the_full_parse() {
        let get = b"GET /a?b=c HTTP/1.1\r\nHost: app\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(head_without_body(get, 1024, 100), Some(get.len() - 16));
        for (head, why) in [
            (
                &b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
                "a length",
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-LENGTH: 2\r\n\r\nhi",
                "a length in any case",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "chunked",
            ),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "a bare LF"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", "not whole yet"),
            (b"CONNECT a:443 HTTP/1.1\r\n\r\n", "CONNECT"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2's preface"),
            (b"GARBAGE\r\n\r\n", "no request line"),
        ] {
            assert_eq!(head_without_body(head, 1024, 100), None, "{why}");
        }
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            head_without_body(three, 1024, 2),
            None,
            "over the header limit"
        );
        assert_eq!(
            head_without_body(three, 16, 100),
            None,
            "over the size limit"
        );
    }

    proptest::proptest! {
        /// Wherever the quick read takes a head as one without a body, the full parse agrees
        /// on its length and finds no body, or refuses the head (as hyper does).
        #[test]
        fn the_quick_read_agrees_with_the_full_parse(
            method in proptest::sample::select(vec!["GET", "HEAD", "POST", "CONNECT", "connect", "DELETE", "", "G T"]),
            target in proptest::sample::select(vec!["/", "/a?b", "*", "http://a/b", "", "/ /"]),
            version in proptest::sample::select(vec![" HTTP/1.1", " HTTP/1.0", " HTTP/2.0", "HTTP/1.1", " http/1.1"]),
            lines in proptest::collection::vec((
                proptest::sample::select(vec![
                    "Host", "Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding",
                    "transfer-encoding", "Content-Lengthy", "X-Content-Length", " Content-Length",
                    "Content-Length ", "Accept", "", "Bad Name", "Trailer", "Upgrade", "Connection",
                ]),
                proptest::sample::select(vec!["a", "5", "0", "chunked", "gzip, chunked", " 7 ", "", "x\ty"]),
                proptest::sample::select(vec!["\r\n", "\n", "\r"]),
            ), 0..6),
            end in proptest::sample::select(vec!["\r\n", "\n", ""]),
            rest in proptest::sample::select(vec!["", "hello", "GET / HTTP/1.1\r\n\r\n"]),
        ) {
            let mut head = format!("{method} {target}{version}\r\n");
            for (name, value, eol) in &lines {
                head.push_str(&format!("{name}: {value}{eol}"));
            }
            head.push_str(end);
            head.push_str(rest);
            if let Some(n) = head_without_body(head.as_bytes(), 64 * 1024, 100)
                && let Some((whole, body)) = parsed_whole(head.as_bytes())
            {
                proptest::prop_assert_eq!((n, body), (whole, Body::None), "{:?}", head);
            }
        }
    }

    #[test]
    fn the_service_count_matches_the_ambiguous_position() {
        let framing = Framing::default();
        framing.ambiguous.store(3, Ordering::Relaxed);
        let verdicts: Vec<_> = (0..4).map(|_| framing.next_is_ambiguous()).collect();
        assert_eq!(verdicts, [false, false, true, false]);
    }
}
