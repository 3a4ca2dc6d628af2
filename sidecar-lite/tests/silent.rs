//! Connections that say nothing cannot hold a listener: a silent TCP connection, one that
//! finished its TLS handshake and went quiet, one that sent only the HTTP/2 preface, and one
//! that keeps HTTP/2 alive with SETTINGS and PINGs but opens no stream are all closed within
//! the header read timeout; at the connection limit a new connection takes the place of a
//! silent one; the admin server answers its probes while a thousand silent connections wait.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use resilience_mtls::{Credentials, Identity, MaterialPaths, MtlsConnector};
use rustls_pki_types::ServerName;
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout},
};

/// The header read timeout of these tests' listeners.
const FIRST_REQUEST: Duration = Duration::from_millis(300);
/// How long a connection asked to close may take before the sidecar drops it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Room for a shared, loaded CI machine.
const SLACK: Duration = Duration::from_secs(2);

const LIMITS: &str = "[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"500ms\"\n";

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// A PING frame with 8 bytes of opaque data.
const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

/// Reads until the sidecar closes the connection; how long that took from `since`. Fails the
/// test if it stays open past the header read timeout and the close grace (with slack).
async fn closed_by_the_sidecar(mut io: impl AsyncRead + Unpin, since: Instant, what: &str) {
    let bound = FIRST_REQUEST + CLOSE_GRACE + SLACK;
    let mut sink = Vec::new();
    let read = timeout(bound, io.read_to_end(&mut sink)).await;
    let after = since.elapsed();
    assert!(read.is_ok(), "{what}: still open after {after:?}");
    assert!(
        after >= FIRST_REQUEST,
        "{what}: closed after {after:?}, before its time"
    );
    println!("{what}: closed after {after:?}");
}

async fn plaintext_route() -> (sidecar_lite::Sidecar, SocketAddr) {
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "{LIMITS}[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    (sidecar, addr)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (sidecar, addr) = plaintext_route().await;
    for listener in [addr, sidecar.bound.admin.unwrap()] {
        let start = Instant::now();
        let tcp = TcpStream::connect(listener).await.unwrap();
        closed_by_the_sidecar(tcp, start, "silent TCP").await;
    }
    others_are_served(addr).await;
}

#[tokio::test]
async fn a_connection_that_sends_only_the_http2_preface_is_closed() {
    let (_sidecar, addr) = plaintext_route().await;
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    closed_by_the_sidecar(tcp, start, "preface only").await;
}

#[tokio::test]
async fn an_http2_connection_kept_alive_with_pings_but_no_stream_is_closed() {
    let (_sidecar, addr) = plaintext_route().await;
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = tcp.into_split();
    let pinger = tokio::spawn(async move {
        write.write_all(PREFACE).await?;
        write.write_all(&SETTINGS).await?;
        // Bounded: at most what fits in the test's bound, then the task ends.
        for _ in 0..100 {
            write.write_all(&PING).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, std::io::Error>(())
    });
    closed_by_the_sidecar(read, start, "HTTP/2 SETTINGS and PINGs").await;
    pinger.abort();
}

#[tokio::test]
async fn a_connection_that_finishes_its_tls_handshake_and_goes_quiet_is_closed() {
    let (app, _) = echo_app().await;
    let certs = Certs::new("silent-tls");
    let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe("frontend")], LIMITS).await;
    certs.identity("frontend");
    let credentials = Credentials::load(&MaterialPaths::new(
        certs.dir.join("frontend.pem"),
        certs.dir.join("frontend-key.pem"),
        certs.dir.join("ca.pem"),
    ))
    .unwrap();
    let connector = MtlsConnector::new(&credentials, Identity::parse(&spiffe("orders")).unwrap());
    let start = Instant::now();
    let tcp = TcpStream::connect(inbound.bound.inbound.unwrap())
        .await
        .unwrap();
    let tls = connector
        .handshake(ServerName::try_from("orders.shop").unwrap(), tcp)
        .await
        .expect("a trusted, allowed peer completes the handshake");
    closed_by_the_sidecar(tls, start, "TLS handshake, then silence").await;
}

#[tokio::test]
async fn a_kept_alive_connection_idle_after_its_request_is_closed() {
    let (_sidecar, addr) = plaintext_route().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: orders.shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = timeout(STEP, tcp.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let start = Instant::now();
    closed_by_the_sidecar(tcp, start, "idle keep-alive").await;
}

/// Waits until the sidecar's only listener counts `open` connections. Each worker accepts
/// from a socket of its own, so connections made one after the other may be accepted in
/// another order unless each is counted before the next.
async fn counted(sidecar: &sidecar_lite::Sidecar, open: u64) {
    let admin = sidecar.bound.admin.unwrap();
    assert!(
        eventually(async || {
            let status = text(get(format!("http://{admin}/status.json")).await).await;
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            status["listeners"][0]["connections_open"] == open
        })
        .await,
        "{open} connections open"
    );
}

#[tokio::test]
async fn at_the_connection_limit_a_real_request_takes_the_place_of_a_silent_one() {
    let (app, hits) = echo_app().await;
    // A header read timeout far beyond the test: only eviction can make room.
    let sidecar = sidecar(&format!(
        "[limits]\nmax_connections = 4\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let mut silent = Vec::new();
    for n in 1..=4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        // Admitted in this order, whichever worker accepts each.
        counted(&sidecar, n).await;
    }
    let response = timeout(STEP, get(format!("http://{addr}/real")))
        .await
        .expect("served at once, not after the silent ones time out");
    assert_eq!(response.status(), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The oldest silent connection gave its place.
    let mut oldest = silent.remove(0);
    let mut sink = Vec::new();
    timeout(STEP, oldest.read_to_end(&mut sink))
        .await
        .expect("the oldest silent connection is closed")
        .ok();
}

#[tokio::test]
async fn connections_beyond_the_per_source_cap_are_closed_at_once() {
    let (app, hits) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[limits]\nmax_connections_per_source = 2\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // Each worker accepts from a socket of its own: wait until both are counted, so the
    // third is the one over the cap.
    counted(&sidecar, 2).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: orders.shop\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let ended = timeout(STEP, third.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "the third connection is closed at once");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    drop(held);
}

#[tokio::test]
async fn the_admin_server_answers_probes_while_a_thousand_silent_connections_wait() {
    let (sidecar, _) = plaintext_route().await;
    let admin = sidecar.bound.admin.unwrap();
    let mut silent = Vec::with_capacity(1000);
    for _ in 0..1000 {
        match TcpStream::connect(admin).await {
            Ok(tcp) => silent.push(tcp),
            Err(error) => panic!("connection {}: {error}", silent.len()),
        }
    }
    for probe in ["/live", "/ready"] {
        let response = timeout(STEP, get(format!("http://{admin}{probe}")))
            .await
            .unwrap_or_else(|_| panic!("{probe} answered while 1000 silent connections wait"));
        assert_eq!(response.status(), 200, "{probe}");
    }
    drop(silent);
}

/// A request on a new connection is served.
async fn others_are_served(addr: SocketAddr) {
    let response = timeout(STEP, get(format!("http://{addr}/after")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The admin server's 64 places held by connections kept alive between requests (a `GET /live`
/// each, answered, and the connection kept) do not turn a probe away: the one idle the longest
/// makes room, as a silent one would.
#[tokio::test]
async fn the_admin_server_answers_probes_while_its_places_are_held_by_kept_alive_connections() {
    let (sidecar, _) = plaintext_route().await;
    let admin = sidecar.bound.admin.unwrap();
    let mut kept = Vec::with_capacity(64);
    for _ in 0..64 {
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        tcp.write_all(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0; 512];
        let n = timeout(STEP, tcp.read(&mut head)).await.unwrap().unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
        kept.push(tcp);
    }
    for probe in ["/live", "/ready"] {
        let response = timeout(STEP, get(format!("http://{admin}{probe}")))
            .await
            .unwrap_or_else(|_| panic!("{probe} answered while 64 connections are kept alive"));
        assert_eq!(response.status(), 200, "{probe}");
    }
    drop(kept);
}

/// A caller that asks for a large answer and stops reading it holds its upstream connection
/// (or an HTTP/2 stream's window) for as long as its connection lives: once no byte has moved
/// either way for the idle limit, the connection is closed, as Envoy's stream idle timeout
/// closes such a stream.
#[tokio::test]
async fn a_caller_that_stops_reading_its_answer_is_closed_once_nothing_moves() {
    let big = bytes::Bytes::from(vec![7u8; 64 << 20]);
    let (app, _) = app(move |_req| {
        let big = big.clone();
        async move { http::Response::new(full(big)) }
    })
    .await;
    let sidecar = sidecar(&format!(
        "{LIMITS}[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nHost: orders.shop\r\n\r\n")
        .await
        .unwrap();
    counted(&sidecar, 1).await;
    // Never read: the sidecar's writes stop once the socket buffers are full.
    counted(&sidecar, 0).await;
    drop(tcp);
    others_are_served(addr).await;
}

/// An answer that comes slowly, but whose bytes keep moving, is not cut however long it takes.
#[tokio::test]
async fn a_slow_answer_whose_bytes_keep_moving_is_served_whole() {
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    let (app, _) = app(|_req| async {
        // Six pieces 200 ms apart: longer in all than the 500 ms idle limit.
        let pieces = futures::stream::iter(0..6).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                bytes::Bytes::from(format!("piece {i};")),
            ))
        });
        http::Response::new(StreamBody::new(pieces).boxed_unsync())
    })
    .await;
    let sidecar = sidecar(&format!(
        "{LIMITS}[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let response = get(format!("http://{}/slow", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = text(response).await;
    assert_eq!(
        body, "piece 0;piece 1;piece 2;piece 3;piece 4;piece 5;",
        "served whole"
    );
}
