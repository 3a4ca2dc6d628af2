//! [`Workers`]: the threads that serve the listeners, thread per core. Each worker is a
//! current-thread runtime with its own socket of every listener (`SO_REUSEPORT`: the kernel
//! spreads new connections across them) and its own upstream connections; a request is served
//! and sent upstream on the thread that accepted its connection. What must be one (breakers,
//! retry budgets, concurrency limits, connection limits, metrics, reload) is shared by all.

use crate::transport::worker;
use resilience_core::BoxError;
use std::{io, net::SocketAddr, thread};
use tokio::{
    net::{TcpListener, TcpSocket},
    runtime::Handle,
    sync::oneshot,
};

/// The backlog of every listening socket, as `TcpListener::bind` sets it.
const BACKLOG: u32 = 1024;

/// The workers of one sidecar. Worker 0 is the runtime that started it (which also runs the
/// admin server, reloads and discovery); the others are threads of their own, which end when
/// this is dropped.
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Dropping them ends the threads.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Worker 0 on the current runtime, and `count - 1` threads. Must run inside a tokio
    /// runtime.
    pub(crate) fn start(count: usize) -> Result<Self, BoxError> {
        worker::reserve(count);
        let mut handles = vec![Handle::current()];
        let mut stops = Vec::new();
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start worker {index}: {e}"))?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            thread::Builder::new()
                .name(format!("sidecar-worker-{index}"))
                .spawn(move || {
                    worker::enter(index);
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .map_err(|e| format!("cannot start worker {index}: {e}"))?;
        }
        Ok(Self {
            handles,
            _stops: stops,
        })
    }

    /// How many there are.
    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }

    /// Each worker's runtime, worker 0 first.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// One listening socket for each worker on `addr` (a port of 0 picks one port for all).
    /// Fails if anything listens on `addr` already, this process or another.
    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<Vec<std::net::TcpListener>> {
        let count = self.count();
        if count == 1 {
            return Ok(vec![listen(addr, false)?.into_std()?]);
        }
        if addr.port() != 0 {
            // `SO_REUSEPORT` would let another process of this user join a group already
            // listening here, and take half its connections unseen: a plain bind first fails
            // if anything listens on the address.
            drop(socket(addr, false)?);
        }
        let first = listen(addr, cfg!(target_os = "linux"))?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first.into_std()?];
        for _ in 1..count {
            sockets.push(if cfg!(target_os = "linux") {
                listen(addr, true)?.into_std()?
            } else {
                // Elsewhere `SO_REUSEPORT` does not spread connections: the workers share one
                // socket and take turns at accepting.
                sockets[0].try_clone()?
            });
        }
        Ok(sockets)
    }
}

/// A socket bound to `addr`, with `SO_REUSEADDR` as `TcpListener::bind` sets it, and
/// `SO_REUSEPORT` when `shared`.
fn socket(addr: SocketAddr, shared: bool) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(target_os = "linux")]
    socket.set_reuseport(shared)?;
    #[cfg(not(target_os = "linux"))]
    let _ = shared;
    socket.bind(addr)?;
    Ok(socket)
}

fn listen(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    socket(addr, shared)?.listen(BACKLOG)
}
