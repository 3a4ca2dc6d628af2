//! The floor of the load harness (`benches/load/run.py`): an HTTP/1.1 reverse proxy of hyper 1
//! and nothing else, on sidecar-lite's runtime model (one current-thread tokio runtime per
//! worker thread, each with its own `SO_REUSEPORT` socket), so a hop through sidecar-lite can
//! be split into what hyper and tokio cost and what sidecar-lite adds.
//!
//! ```sh
//! cargo build --release -p benches --bin bare-proxy
//! target/release/bare-proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081 --threads 1
//! ```
//!
//! Each client connection gets one upstream connection, dialled at its first request and kept
//! while the client's is open: HTTP/1.1 serves one request at a time on each, so the two pair
//! off with no pool. The request and the response go through as they are: no timeout, retry,
//! header rule, metric or log.

use std::{net::SocketAddr, rc::Rc};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::http1::{self as client, SendRequest},
    server::conn::http1 as server,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    runtime::Runtime,
    sync::Mutex,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut threads) = (None, None, 1);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr()?),
            "--upstream" => upstream = Some(addr()?),
            "--threads" => {
                threads = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--threads {value}: not a whole number above 0"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen ADDR is required")?,
        upstream: upstream.ok_or("--upstream ADDR is required")?,
        threads,
    })
}

async fn dial(upstream: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = client::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn forward(
    upstream: SocketAddr,
    sender: Rc<Mutex<Option<SendRequest<Incoming>>>>,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, BoxError> {
    let mut slot = sender.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        *slot = Some(dial(upstream).await?);
    }
    let sender = slot.as_mut().expect("dialled above");
    sender.ready().await?;
    Ok(sender.send_request(request).await?)
}

/// One worker's runtime, and a socket of its own on `listen` registered with it: the kernel
/// spreads connections over the workers' sockets.
fn worker(listen: SocketAddr) -> std::io::Result<(Runtime, TcpListener)> {
    let socket = match listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        socket.listen(1024)?
    };
    Ok((runtime, listener))
}

async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        // Out of descriptors, say: the connections open go on; accepting is tried again.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let sender = Rc::new(Mutex::new(None));
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| forward(upstream, sender.clone(), request));
            let _ = server::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let Args {
        listen,
        upstream,
        threads,
    } = parse_args().unwrap_or_else(|problem| {
        eprintln!("bare-proxy: {problem}");
        std::process::exit(2);
    });
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            worker(listen).unwrap_or_else(|e| {
                eprintln!("bare-proxy: {listen}: {e}");
                std::process::exit(1);
            })
        })
        .collect();
    let threads: Vec<_> = workers
        .into_iter()
        .map(|(runtime, listener)| {
            std::thread::spawn(move || {
                tokio::task::LocalSet::new().block_on(&runtime, serve(listener, upstream));
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
