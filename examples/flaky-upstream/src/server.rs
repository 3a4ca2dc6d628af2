//! The server: accepts connections, serves HTTP/1.1 and h2c on each, and carries out the fate
//! of each request, down to the socket when the fault is below HTTP (resets, invalid bytes,
//! idle closes).

use crate::{
    counters::{Counters, Snapshot},
    faults::{Fate, Faults},
};
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{HeaderValue, Method, Request, Response, header::CONTENT_LENGTH};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    io::{self, Write},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

/// The response body: whole, or trickled one byte at a time.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The header that numbers each answered request (from 1), in the order received.
pub const REQUEST_NUMBER: &str = "x-flaky-request";

/// The header a client may set to a unique id per request: the upstream counts an id it sees
/// twice ([`Snapshot::duplicate_ids`]), so a test can prove that no request was sent twice.
pub const REQUEST_ID: &str = "x-request-id";

/// What an injected invalid response looks like: not a status line at all.
pub const INVALID_HTTP: &[u8] = b"FLAKY/0.0 not-http\r\n\x00\x01garbage\r\n\r\n";

/// A running upstream. Dropping it stops it: the listener and every connection close.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream on 127.0.0.1 on a free port.
    pub async fn start(faults: Faults) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), faults).await
    }

    /// Starts an upstream on `addr` (port 0 for a free one).
    pub async fn start_on(addr: SocketAddr, faults: Faults) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            behaviour: ArcSwap::from_pointee(Behaviour::new(faults)),
            counters: counters.clone(),
            stopped: stopped.clone(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(Self {
            addr,
            shared,
            counters,
            stop,
            accept,
        })
    }

    /// Changes what the upstream does wrong from the next request on (the schedule keeps
    /// counting): an upstream that starts failing, or recovers. A new `close_idle_after`
    /// applies to new connections.
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .behaviour
            .store(Arc::new(Behaviour::new(faults)));
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters now.
    #[must_use]
    pub fn counters(&self) -> Snapshot {
        self.counters.snapshot()
    }

    /// Stops accepting and closes every connection (as dropping it does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

struct Shared {
    behaviour: ArcSwap<Behaviour>,
    counters: Arc<Counters>,
    stopped: watch::Receiver<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("faults", &self.behaviour.load().faults)
            .finish_non_exhaustive()
    }
}

/// The faults, and the body they make for a good answer.
struct Behaviour {
    faults: Faults,
    ok_body: Bytes,
}

impl Behaviour {
    fn new(faults: Faults) -> Self {
        Self {
            ok_body: ok_body(faults.body_bytes),
            faults,
        }
    }
}

fn ok_body(bytes: usize) -> Bytes {
    match bytes {
        0 => Bytes::new(),
        n => {
            // "ok\n" at the default size; "okkk...k\n" when larger.
            let mut body = vec![b'k'; n];
            body[0] = b'o';
            body[n - 1] = b'\n';
            Bytes::from(body)
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: back off briefly, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => return,
        };
        Counters::bump(&shared.counters.connections);
        tokio::spawn(connection(tcp, shared.clone()));
    }
}

/// What a request asks its connection to do with the socket.
#[derive(Debug, Clone, Copy)]
enum SocketAction {
    /// Close with a TCP RST.
    Reset,
    /// Write bytes that are not HTTP, then close.
    Invalid,
    /// Close (a hung request's time is up).
    Close,
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Held while a request is in flight (for a slow body, until its last byte).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    // A second handle on the socket, kept outside hyper, for what happens below HTTP: a reset
    // (SO_LINGER 0 takes effect when the last handle closes) or bytes that are not HTTP.
    let Ok(std) = tcp.into_std() else { return };
    let Ok(control) = std.try_clone() else { return };
    let Ok(tcp) = TcpStream::from_std(std) else {
        return;
    };

    let (actions, mut requested) = mpsc::unbounded_channel();
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |req| {
            respond(
                req,
                shared.clone(),
                actions.clone(),
                InFlight::enter(&activity),
            )
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut stopped = shared.stopped.clone();
    let idle_limit = shared.behaviour.load().faults.close_idle_after;
    loop {
        let idle_deadline = idle_limit.map(|limit| {
            if activity.in_flight.load(Ordering::SeqCst) > 0 {
                Instant::now() + limit
            } else {
                *activity
                    .idle_since
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    + limit
            }
        });
        tokio::select! {
            _ = &mut conn => return,
            action = requested.recv() => match action {
                Some(SocketAction::Reset) => {
                    let _ = socket2::SockRef::from(&control).set_linger(Some(Duration::ZERO));
                    return;
                }
                Some(SocketAction::Invalid) => {
                    let _ = (&control).write_all(INVALID_HTTP);
                    return;
                }
                Some(SocketAction::Close) | None => return,
            },
            () = sleep_until(idle_deadline) => {
                let idle = activity.in_flight.load(Ordering::SeqCst) == 0
                    && idle_deadline.is_some_and(|deadline| deadline <= Instant::now());
                if idle {
                    Counters::bump(&shared.counters.idle_closes);
                    return;
                }
            }
            () = stop_requested(&mut stopped) => return,
        }
    }
}

/// Completes once a stop is asked for (or the upstream is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn respond(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    actions: mpsc::UnboundedSender<SocketAction>,
    in_flight: InFlight,
) -> Result<Response<Body>, Infallible> {
    let counters = &shared.counters;
    let behaviour = shared.behaviour.load_full();
    let faults = &behaviour.faults;
    let n = Counters::bump(&counters.requests);
    if req.method() == Method::POST {
        Counters::bump(&counters.posts);
    }
    if let Some(id) = req.headers().get(REQUEST_ID) {
        counters.see_id(id.as_bytes());
    }
    let fate = faults.fate(n);
    let below_http = match fate {
        Fate::Reset => Some((&counters.resets, SocketAction::Reset)),
        Fate::InvalidHttp => Some((&counters.invalid_http, SocketAction::Invalid)),
        _ => None,
    };
    if let Some((counter, action)) = below_http {
        Counters::bump(counter);
        let _ = actions.send(action);
        // The connection goes away and takes this future with it.
        return std::future::pending().await;
    }
    if fate == Fate::Hang {
        Counters::bump(&counters.hangs);
        tokio::time::sleep(faults.hang_for).await;
        let _ = actions.send(SocketAction::Close);
        return std::future::pending().await;
    }

    // Read the request body whole, as a real server would before answering.
    let _ = req.into_body().collect().await;
    let slow = faults.slow_rate.picks(n).then_some(faults.slow_latency);
    let wait = faults.latency + slow.unwrap_or_default();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut response = match fate {
        Fate::Error => {
            Counters::bump(&counters.errors);
            let mut response = Response::new(whole(Bytes::from_static(b"injected error\n")));
            *response.status_mut() = faults.error_status;
            response
        }
        Fate::SlowBody => {
            Counters::bump(&counters.slow_bodies);
            Response::new(trickle(
                behaviour.ok_body.clone(),
                faults.slow_byte_interval,
                in_flight,
            ))
        }
        Fate::ResetMidBody => {
            Counters::bump(&counters.mid_body_resets);
            let mut response =
                Response::new(cut_short(behaviour.ok_body.clone(), actions, in_flight));
            // The length promised is the whole body's, so the cut is visible to the client.
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(behaviour.ok_body.len()));
            response
        }
        _ => {
            Counters::bump(&counters.ok);
            Response::new(whole(behaviour.ok_body.clone()))
        }
    };
    response
        .headers_mut()
        .insert(REQUEST_NUMBER, HeaderValue::from(n));
    Ok(response)
}

/// The first half of `bytes`, then a reset of the connection.
fn cut_short(
    bytes: Bytes,
    actions: mpsc::UnboundedSender<SocketAction>,
    in_flight: InFlight,
) -> Body {
    let half = bytes.slice(..bytes.len() / 2);
    let first = stream::once(async move { Ok::<_, Infallible>(Frame::data(half)) });
    let then_reset = stream::once(async move {
        let _in_flight = in_flight;
        // hyper writes out what it has while the body is pending: give it that moment, so
        // the head and the half body are on the wire before the reset.
        tokio::time::sleep(MID_BODY_PAUSE).await;
        let _ = actions.send(SocketAction::Reset);
        std::future::pending::<Result<Frame<Bytes>, Infallible>>().await
    });
    StreamBody::new(first.chain(then_reset)).boxed_unsync()
}

/// How long a response cut short waits between its half body and the reset.
const MID_BODY_PAUSE: Duration = Duration::from_millis(50);

fn whole(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// A body sent one byte at a time, `interval` apart; the request stays in flight (for the
/// idle-close rule) until the last byte is out.
fn trickle(bytes: Bytes, interval: Duration, in_flight: InFlight) -> Body {
    let bytes_left = stream::unfold(
        (bytes, in_flight),
        move |(mut rest, in_flight)| async move {
            if rest.is_empty() {
                return None;
            }
            tokio::time::sleep(interval).await;
            let byte = rest.split_to(1);
            Some((Ok::<_, Infallible>(Frame::data(byte)), (rest, in_flight)))
        },
    );
    StreamBody::new(bytes_left).boxed_unsync()
}
