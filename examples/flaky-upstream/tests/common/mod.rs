//! What the tests of the flaky upstream share.

use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// The bound of every wait.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// One GET on a fresh connection, by hand: the raw bytes the server sent until it closed.
pub(crate) async fn raw_get(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: flaky\r\nconnection: close\r\n\r\n")
        .await?;
    let mut bytes = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut bytes)).await??;
    Ok(bytes)
}
