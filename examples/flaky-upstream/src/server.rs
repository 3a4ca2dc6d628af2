//! The server: accepts connections, serves HTTP/1.1 and h2c on each, and carries out the fate
//! of each request, down to the socket when the fault is below HTTP (resets, invalid bytes,
//! idle closes).

use crate::{
    counters::{Counters, Snapshot},
    faults::{Fate, Faults},
};
use bytes::Bytes;
use futures::stream;
use http::{HeaderValue, Request, Response};
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

/// What an injected invalid response looks like: not a status line at all.
pub const INVALID_HTTP: &[u8] = b"FLAKY/0.0 not-http\r\n\x00\x01garbage\r\n\r\n";

/// A running upstream. Dropping it stops it: the listener and every connection close.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
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
            ok_body: ok_body(faults.body_bytes),
            faults,
            counters: counters.clone(),
            stopped: stopped.clone(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared, stopped));
        Ok(Self {
            addr,
            counters,
            stop,
            accept,
        })
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
    faults: Faults,
    ok_body: Bytes,
    counters: Arc<Counters>,
    stopped: watch::Receiver<bool>,
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
    let idle_limit = shared.faults.close_idle_after;
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
    let faults = &shared.faults;
    let n = Counters::bump(&counters.requests);
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
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
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
                shared.ok_body.clone(),
                faults.slow_byte_interval,
                in_flight,
            ))
        }
        _ => {
            Counters::bump(&counters.ok);
            Response::new(whole(shared.ok_body.clone()))
        }
    };
    response
        .headers_mut()
        .insert(REQUEST_NUMBER, HeaderValue::from(n));
    Ok(response)
}

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
