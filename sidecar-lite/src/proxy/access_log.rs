//! The access log (`[access_log]`): one line per request, as Envoy's and Linkerd's give, in
//! text or JSON.
//!
//! Written off the request path: the edge puts each finished request on a bounded queue and a
//! thread of its own formats and writes them, so a slow or full disk never holds up a request,
//! nor a runtime worker; it wakes at most once a [`TICK`] under load, and writes what came
//! meanwhile in one go; a stop writes out what is queued. When the queue is full, the line is dropped and counted
//! (`sidecar_access_log_dropped_total`). A line is finished when the response body ends (or
//! the caller goes away), so it has the bytes sent and a gRPC status from the trailers.

use super::{headers::traceparent, local_reply::sources};
use crate::{
    config::{AccessLogConfig, LogFormat},
    stack::Attempts,
    transport::ProxyBody,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version, header::HOST};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use resilience_core::{BoxError, CallerBodyFailed, GRPC_STATUS, SIDECAR_ERROR};
use resilience_mtls::Identity;
use serde::Serialize;
use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError},
    },
    task::{Context, Poll, ready},
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

/// How long the writer lets lines gather before it writes them: one wake-up and one write per
/// tick under load, not one per request.
const TICK: Duration = Duration::from_millis(20);

/// The longest path or authority a line keeps, in bytes: past it, cut at a character
/// boundary, so that no caller can make a line, or the queue, hold much of what it sends.
const MAX_FIELD: usize = 256;

/// What the writer thread is sent.
#[derive(Debug)]
enum Message {
    /// A finished request.
    Line(Box<Entry>),
    /// Write out everything sent before, then answer.
    Flush(SyncSender<()>),
}

/// Opens the log's writer, at start and again on [`AccessLog::reopen`].
type Opener = Box<dyn FnMut() -> io::Result<Box<dyn Write + Send>> + Send>;

/// Where finished requests go: a handle on the queue of the writer thread. Clones share it;
/// the thread flushes and ends when the last one is dropped.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    queue: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the log that `config` names and starts its writer thread.
    pub(crate) fn open(config: &AccessLogConfig) -> io::Result<Self> {
        let opener: Opener = if config.is_stdout() {
            Box::new(|| Ok(Box::new(BufWriter::new(io::stdout())) as Box<dyn Write + Send>))
        } else {
            let path = config.path.clone();
            Box::new(move || open_file(&path))
        };
        Self::spawn(opener, config.format, config.queue)
    }

    /// A log written by what `open` opens, in `format`, with room for `queue` waiting lines.
    fn spawn(mut open: Opener, format: LogFormat, queue: usize) -> io::Result<Self> {
        let writer = open()?;
        let (sender, receiver) = mpsc::sync_channel(queue);
        let reopen = Arc::new(AtomicBool::new(false));
        let writing = Writer {
            open,
            writer,
            format,
            reopen: reopen.clone(),
            failing: false,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writing.run(&receiver))?;
        Ok(Self {
            queue: sender,
            reopen,
            dropped: Arc::default(),
        })
    }

    /// Opens the file again before the next line (after logrotate has moved it away).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Lines dropped because the queue was full.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes out every line sent so far, waiting at most `wait` (a writer stuck on a full
    /// disk is left behind): at shutdown, so that the last requests are not lost.
    pub(crate) async fn flush(&self, wait: Duration) {
        let queue = self.queue.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let (done, ack) = mpsc::sync_channel(1);
            queue.send(Message::Flush(done)).is_ok() && ack.recv().is_ok()
        });
        if !matches!(tokio::time::timeout(wait, flushed).await, Ok(Ok(true))) {
            tracing::warn!("the access log was not written out in time at shutdown");
        }
    }

    /// Queues `entry`, or drops and counts it when the queue is full: never waits.
    fn send(&self, entry: Box<Entry>) {
        match self.queue.try_send(Message::Line(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sidecar_access_log_dropped_total").increment(1);
            }
        }
    }

    /// Begins the line of `req` on `listener`: what the request says, read before the edge
    /// rewrites it. Counts its attempts (see [`Attempts`]) and the bytes of its body.
    pub(crate) fn begin<B>(
        &self,
        listener: &Arc<str>,
        req: &mut Request<B>,
        client: SocketAddr,
    ) -> PendingLine {
        let attempts = req.extensions().get::<Attempts>().cloned();
        let attempts = attempts.unwrap_or_else(|| {
            let attempts = Attempts::default();
            req.extensions_mut().insert(attempts.clone());
            attempts
        });
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
            .map(bounded);
        #[allow(
            clippy::disallowed_methods,
            reason = "a log line's timestamp is wall-clock time; durations come from tokio"
        )]
        let start = SystemTime::now();
        PendingLine {
            log: self.clone(),
            started: Instant::now(),
            attempts,
            bytes_in: Arc::default(),
            entry: Some(Box::new(Entry {
                start,
                duration: Duration::ZERO,
                listener: listener.clone(),
                method: bounded_method(req.method()),
                authority,
                path: bounded(req.uri().path()),
                protocol: req.version(),
                status: 0,
                grpc_status: None,
                flag: None,
                bytes_in: 0,
                bytes_out: 0,
                upstream: None,
                attempts: 0,
                peer: req
                    .extensions()
                    .get::<Identity>()
                    .map(|id| bounded(id.as_str())),
                trace_id: None,
                client,
            })),
        }
    }
}

/// `method`, cut to [`MAX_FIELD`] bytes as the other fields are: hyper takes a method token
/// as long as the head allows, and a queued line would hold all of it.
fn bounded_method(method: &Method) -> Method {
    let text = method.as_str();
    if text.len() <= MAX_FIELD {
        return method.clone();
    }
    // A method is a token of ASCII characters: any non-empty prefix is one too.
    Method::from_bytes(&text.as_bytes()[..MAX_FIELD]).unwrap_or(Method::GET)
}

/// `text`, cut to at most [`MAX_FIELD`] bytes at a character boundary, with spaces, quotes,
/// backslashes and control characters percent-encoded: a caller's `Host` cannot add fields to
/// a text line.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end);
    for c in text[..end].chars() {
        if c == ' ' || c == '"' || c == '\\' || c.is_control() {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn open_file(path: &PathBuf) -> io::Result<Box<dyn Write + Send>> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(Box::new(BufWriter::new(file)))
}

/// The line of a request in flight; [`PendingLine::finish`] hands it to the response body,
/// which sends it when it ends. Dropped before that (the caller went away before the answer's
/// head), it is sent with status 0.
#[derive(Debug)]
pub(crate) struct PendingLine {
    log: AccessLog,
    started: Instant,
    attempts: Attempts,
    bytes_in: Arc<AtomicU64>,
    /// Until sent.
    entry: Option<Box<Entry>>,
}

impl PendingLine {
    /// Reads the trace id once the edge has made sure the request has one.
    pub(crate) fn trace(&mut self, headers: &HeaderMap) {
        if let Some(entry) = &mut self.entry {
            entry.trace_id = traceparent(headers).map(|tp| tp.trace_id.to_owned());
        }
    }

    /// The request body, counted for the line.
    pub(crate) fn count_body<B>(&self, body: B) -> CountedBody<B> {
        CountedBody {
            inner: body,
            counted: Some(self.bytes_in.clone()),
        }
    }

    /// Takes the response head into the line; the line is sent when the returned response's
    /// body ends or is dropped.
    pub(crate) fn finish(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        self.head(&response);
        response.map(|body| {
            LoggedBody {
                inner: body,
                line: Some(self),
            }
            .boxed_unsync()
        })
    }

    /// Takes the response head into the line.
    pub(crate) fn head<B>(&mut self, response: &Response<B>) {
        let headers = response.headers();
        if let Some(entry) = &mut self.entry {
            entry.status = response.status().as_u16();
            entry.grpc_status = grpc_status(headers);
            entry.flag = headers
                .get(SIDECAR_ERROR)
                .and_then(|v| v.to_str().ok())
                .map(bounded);
        }
    }

    /// Sends the line of a WebSocket handshake whose tunnel has ended, having carried
    /// `from_client` and `to_client` bytes; its duration is the tunnel's too, as in Envoy's
    /// log of an upgraded stream.
    pub(crate) fn tunnelled(mut self, from_client: u64, to_client: u64) {
        self.bytes_in.fetch_add(from_client, Ordering::Relaxed);
        if let Some(entry) = &mut self.entry {
            entry.bytes_out += to_client;
        }
    }

    /// Sends the line, once: the request is over.
    fn send(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.duration = self.started.elapsed();
            entry.bytes_in = self.bytes_in.load(Ordering::Relaxed);
            entry.attempts = self.attempts.count();
            entry.upstream = self.attempts.endpoint();
            self.log.send(entry);
        }
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        self.send();
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

pin_project! {
    /// A request body whose data bytes are counted, when an access log wants them.
    #[derive(Debug)]
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        counted: Option<Arc<AtomicU64>>,
    }
}

impl<B> CountedBody<B> {
    /// `body`, not counted.
    pub(crate) fn uncounted(body: B) -> Self {
        Self {
            inner: body,
            counted: None,
        }
    }
}

/// A caller's body that fails fails as [`CallerBodyFailed`]: the layers below tell it from an
/// upstream's failure by that (a breaker leaves it out, a retry does not resend, the edge
/// answers 400).
impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = CallerBodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(counted), Some(Ok(frame))) = (this.counted, &frame)
            && let Some(data) = frame.data_ref()
        {
            counted.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame.map(|frame| frame.map_err(CallerBodyFailed::new)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body that sends its request's line when it ends, or when it is dropped
    /// before (the caller went away): the line sends itself when dropped.
    struct LoggedBody {
        #[pin]
        inner: ProxyBody,
        line: Option<PendingLine>,
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(Some(entry)) = this.line.as_mut().map(|line| &mut line.entry) {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        entry.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        entry.grpc_status = grpc_status(trailers).or(entry.grpc_status);
                    }
                }
                // The head said it went well; the body broke off: the line says so.
                Some(Err(error)) => entry.flag = Some(body_failure(error).to_owned()),
                None => {}
            }
        }
        if frame.is_none() || this.inner.is_end_stream() {
            // The end: dropping the line sends it.
            this.line.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The flag of a response body that failed part-way: `timeout` (its idle timeout), else
/// `upstream` (the upstream's connection failed during the call, as the reply would say).
fn body_failure(error: &BoxError) -> &'static str {
    if sources(error).any(|e| e.is::<resilience_timeout::Elapsed>()) {
        "timeout"
    } else {
        "upstream"
    }
}

/// One request, as logged.
#[derive(Debug)]
struct Entry {
    start: SystemTime,
    duration: Duration,
    listener: Arc<str>,
    method: Method,
    authority: Option<String>,
    path: String,
    protocol: Version,
    status: u16,
    grpc_status: Option<u16>,
    flag: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    upstream: Option<SocketAddr>,
    attempts: u32,
    peer: Option<String>,
    trace_id: Option<String>,
    /// The address of the connection the request came on.
    client: SocketAddr,
}

/// An [`Entry`] as a JSON object.
#[derive(Serialize)]
struct JsonLine<'a> {
    start_time: String,
    duration_ms: f64,
    listener: &'a str,
    method: &'a str,
    authority: Option<&'a str>,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    grpc_status: Option<u16>,
    sidecar_error: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    upstream: Option<SocketAddr>,
    attempts: u32,
    peer_identity: Option<&'a str>,
    trace_id: Option<&'a str>,
    client: SocketAddr,
}

impl Entry {
    fn write(&self, format: LogFormat, out: &mut Vec<u8>) {
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        // Microsecond resolution is plenty for a log line.
        let duration_ms = (self.duration.as_secs_f64() * 1e6).round() / 1e3;
        match format {
            LogFormat::Json => {
                let line = JsonLine {
                    start_time: start,
                    duration_ms,
                    listener: &self.listener,
                    method: self.method.as_str(),
                    authority: self.authority.as_deref(),
                    path: &self.path,
                    protocol: protocol(self.protocol),
                    status: self.status,
                    grpc_status: self.grpc_status,
                    sidecar_error: self.flag.as_deref(),
                    bytes_in: self.bytes_in,
                    bytes_out: self.bytes_out,
                    upstream: self.upstream,
                    attempts: self.attempts,
                    peer_identity: self.peer.as_deref(),
                    trace_id: self.trace_id.as_deref(),
                    client: self.client,
                };
                // Only strings, numbers and addresses: it cannot fail.
                let _ = serde_json::to_writer(&mut *out, &line);
            }
            LogFormat::Text => {
                let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
                let _ = write!(
                    out,
                    "{start} {} \"{} {}{} {}\" {} grpc={} flag={} in={} out={} {duration_ms}ms \
                     upstream={} attempts={} peer={} trace={} client={}",
                    self.listener,
                    self.method,
                    self.authority.as_deref().unwrap_or(""),
                    self.path,
                    protocol(self.protocol),
                    self.status,
                    self.grpc_status
                        .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    or_dash(self.flag.as_deref()),
                    self.bytes_in,
                    self.bytes_out,
                    self.upstream
                        .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    self.attempts,
                    or_dash(self.peer.as_deref()),
                    or_dash(self.trace_id.as_deref()),
                    self.client,
                );
            }
        }
        out.push(b'\n');
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The writer thread's state.
struct Writer {
    open: Opener,
    writer: Box<dyn Write + Send>,
    format: LogFormat,
    reopen: Arc<AtomicBool>,
    /// Whether the last write failed: a failure is logged when it starts, not on every line.
    failing: bool,
}

impl Writer {
    /// Waits for a line, lets more gather for a [`TICK`], writes them all and flushes; until
    /// every handle on the queue is gone. An idle log waits without waking.
    fn run(mut self, queue: &Receiver<Message>) {
        let mut line = Vec::with_capacity(512);
        while let Ok(first) = queue.recv() {
            self.write(first, &mut line);
            #[allow(
                clippy::disallowed_methods,
                reason = "a thread of its own, outside any runtime: nothing to yield to"
            )]
            std::thread::sleep(TICK);
            loop {
                match queue.try_recv() {
                    Ok(entry) => self.write(entry, &mut line),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }

    fn write(&mut self, message: Message, line: &mut Vec<u8>) {
        let entry = match message {
            Message::Line(entry) => entry,
            Message::Flush(done) => {
                self.flush();
                let _ = done.send(());
                return;
            }
        };
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.flush();
            match (self.open)() {
                Ok(writer) => self.writer = writer,
                Err(error) => {
                    tracing::warn!(%error, "cannot reopen the access log; still writing to the old file");
                }
            }
        }
        line.clear();
        entry.write(self.format, line);
        let written = self.writer.write_all(line);
        self.note(written);
    }

    fn flush(&mut self) {
        let flushed = self.writer.flush();
        self.note(flushed);
    }

    fn note(&mut self, outcome: io::Result<()>) {
        match outcome {
            Ok(()) => self.failing = false,
            Err(error) => {
                metrics::counter!("sidecar_access_log_write_errors_total").increment(1);
                if !self.failing {
                    tracing::warn!(%error, "cannot write the access log");
                }
                self.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer whose every write waits until the test lets it go, as a full disk would.
    #[derive(Clone)]
    struct Blocked {
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Blocked {
        fn new() -> Self {
            Self {
                gate: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
                written: Arc::default(),
            }
        }

        fn release(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }

        fn lines(&self) -> usize {
            self.written.lock().unwrap().split(|b| *b == b'\n').count() - 1
        }
    }

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn request() -> Request<()> {
        Request::builder()
            .uri("http://orders.shop:8080/api/orders?id=7")
            .body(())
            .unwrap()
    }

    /// A writer stuck on a full disk holds up nothing: every request's line is queued or
    /// dropped at once, and the dropped ones are counted.
    #[tokio::test]
    async fn a_blocked_writer_never_holds_up_a_request() {
        let blocked = Blocked::new();
        let writer = blocked.clone();
        let opener: Opener =
            Box::new(move || Ok(Box::new(writer.clone()) as Box<dyn Write + Send>));
        let log = AccessLog::spawn(opener, LogFormat::Text, 4).unwrap();
        let listener: Arc<str> = Arc::from("outbound/orders");
        for _ in 0..100 {
            let line = log.begin(&listener, &mut request(), ([127, 0, 0, 1], 40000).into());
            drop(line.finish(Response::new(crate::transport::boxed(
                http_body_util::Empty::<Bytes>::new(),
            ))));
        }
        // The thread took at most one line before it blocked, and the queue holds 4.
        let dropped = log.dropped();
        assert!((95..=96).contains(&dropped), "dropped {dropped}");
        blocked.release();
        drop(log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while blocked.lines() + usize::try_from(dropped).unwrap() < 100 {
            assert!(
                Instant::now() < deadline,
                "{} lines written",
                blocked.lines()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(blocked.lines() + usize::try_from(dropped).unwrap(), 100);
    }

    #[test]
    fn a_line_has_every_field_in_json_and_in_text() {
        let entry = Entry {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_micros(3214),
            listener: Arc::from("outbound/orders"),
            method: Method::POST,
            authority: Some("orders.shop:8080".into()),
            path: "/shop.Orders/Get".into(),
            protocol: Version::HTTP_2,
            status: 200,
            grpc_status: Some(14),
            flag: Some("breaker-open".into()),
            bytes_in: 12,
            bytes_out: 0,
            upstream: Some(SocketAddr::from(([10, 0, 0, 7], 15006))),
            attempts: 2,
            peer: Some("spiffe://example.org/ns/shop/sa/frontend".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            client: SocketAddr::from(([127, 0, 0, 1], 50000)),
        };
        let mut json = Vec::new();
        entry.write(LogFormat::Json, &mut json);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "start_time": "2023-11-14T22:13:20.123Z",
                "duration_ms": 3.214,
                "listener": "outbound/orders",
                "method": "POST",
                "authority": "orders.shop:8080",
                "path": "/shop.Orders/Get",
                "protocol": "HTTP/2",
                "status": 200,
                "grpc_status": 14,
                "sidecar_error": "breaker-open",
                "bytes_in": 12,
                "bytes_out": 0,
                "upstream": "10.0.0.7:15006",
                "attempts": 2,
                "peer_identity": "spiffe://example.org/ns/shop/sa/frontend",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "client": "127.0.0.1:50000",
            })
        );
        let mut text = Vec::new();
        entry.write(LogFormat::Text, &mut text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2023-11-14T22:13:20.123Z outbound/orders \"POST orders.shop:8080/shop.Orders/Get \
             HTTP/2\" 200 grpc=14 flag=breaker-open in=12 out=0 3.214ms upstream=10.0.0.7:15006 \
             attempts=2 peer=spiffe://example.org/ns/shop/sa/frontend \
             trace=4bf92f3577b34da6a3ce929d0e0e4736 client=127.0.0.1:50000\n"
        );
    }

    #[test]
    fn a_field_cannot_add_fields_to_a_text_line() {
        assert_eq!(
            bounded("x/ HTTP/1.1\" 200 flag=-"),
            "x/%20HTTP/1.1%22%20200%20flag=-"
        );
        assert_eq!(bounded("a\tb\\c"), "a%09b%5Cc");
    }

    #[test]
    fn long_methods_are_cut_as_long_paths_are() {
        let long = Method::from_bytes(&[b'X'; 60_000]).unwrap();
        let cut = bounded_method(&long);
        assert_eq!(cut.as_str().len(), MAX_FIELD);
        assert!(long.as_str().starts_with(cut.as_str()));
        assert_eq!(bounded_method(&Method::POST), Method::POST);
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        let path = format!("/{}", "é".repeat(300));
        let cut = bounded(&path);
        assert!(cut.len() <= MAX_FIELD && cut.len() >= MAX_FIELD - 1);
        assert!(path.starts_with(&cut));
    }
}
