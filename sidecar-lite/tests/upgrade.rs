//! WebSocket through the sidecar, over real sockets: a handshake the app accepts becomes a
//! tunnel that carries bytes both ways, through one sidecar and through an mTLS pair (whose
//! sidecars speak HTTP/2 to each other), with the bytes sent right behind the handshake; other
//! upgrades (`h2c`) are not passed on; a handshake the app refuses leaves the connection HTTP,
//! and its upstream connection joins the pool; a `101` nobody asked for, or that does not
//! accept this handshake, is a `502`; a tunnel
//! counts against the connection limit, is closed once silent for `idle_timeout` and is cut at
//! the end of a drain; in library mode the stack's `101` hands over the connection.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{Instant, timeout},
};

const HANDSHAKE: &str = "GET /chat HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// How the test app answers a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `101`, then every byte echoed until the client closes.
    Accept,
    /// `426`, and the connection stays HTTP.
    Refuse,
    /// `101` to every request, whatever it asked for.
    SwitchAlways,
    /// `101` naming `websocket`, with an accept for some other key.
    WrongAccept,
    /// As `Accept`, once [`Seen::release`] is notified.
    AcceptWhenReleased,
}

/// The request heads a test app got, in order, and the connections it accepted.
#[derive(Debug, Default)]
struct Seen {
    heads: Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// Lets an `AcceptWhenReleased` app answer.
    release: tokio::sync::Notify,
}

impl Seen {
    fn last_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .to_ascii_lowercase()
    }
}

/// A WebSocket app on 127.0.0.1 that speaks HTTP/1.1 by hand, so that the test sees every
/// header the sidecar sends.
async fn websocket_app(mode: Mode) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let app = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            app.connections.fetch_add(1, Ordering::SeqCst);
            let seen = app.clone();
            tokio::spawn(async move { serve(tcp, mode, seen).await });
        }
    });
    (addr, seen)
}

async fn serve(mut tcp: TcpStream, mode: Mode, seen: Arc<Seen>) {
    loop {
        let Some(head) = read_head(&mut tcp).await else {
            return;
        };
        seen.heads.lock().unwrap().push(head.clone());
        let lower = head.to_ascii_lowercase();
        let handshake = lower.contains("\r\nupgrade: websocket\r\n");
        let switch = match mode {
            Mode::Accept => handshake,
            Mode::AcceptWhenReleased => {
                seen.release.notified().await;
                handshake
            }
            Mode::Refuse => false,
            Mode::SwitchAlways | Mode::WrongAccept => true,
        };
        if switch {
            // The accept of HANDSHAKE's key (RFC 6455's example), or of another.
            let accept = if mode == Mode::WrongAccept {
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
            } else {
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            };
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            tcp.write_all(answer.as_bytes()).await.unwrap();
            let (mut read, mut write) = tcp.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
            let _ = write.shutdown().await;
            return;
        }
        let (status, body) = if handshake {
            ("426 Upgrade Required", "no websocket here")
        } else {
            ("200 OK", "plain")
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if tcp.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 head, read a byte at a time so that nothing after it is taken; `None` at the
/// end of the stream.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        if io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8(head).unwrap())
}

/// Sends `request` on `io` and reads the head of its answer, within [`STEP`].
async fn ask(io: &mut (impl AsyncRead + AsyncWrite + Unpin), request: &str) -> String {
    io.write_all(request.as_bytes()).await.unwrap();
    timeout(STEP, read_head(io))
        .await
        .expect("an answer within STEP")
        .expect("an answer, not the end of the connection")
}

/// Reads a response body of `content-length` bytes after `head`.
async fn body_after(io: &mut (impl AsyncRead + Unpin), head: &str) -> String {
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    timeout(STEP, io.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(body).unwrap()
}

/// Carries `message` through the tunnel and back.
async fn echoes(io: &mut (impl AsyncRead + AsyncWrite + Unpin), message: &[u8]) {
    io.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    timeout(STEP, io.read_exact(&mut back))
        .await
        .expect("the echo within STEP")
        .unwrap();
    assert!(back == message, "the echo differs from what was sent");
}

/// Checks a tunnel end to end: the `101` with its headers, bytes both ways (a megabyte too),
/// and a close from the client that reaches the app and comes back.
async fn tunnel_through(addr: SocketAddr, seen: &Seen) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = ask(&mut client, HANDSHAKE).await;
    println!("{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101 "), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        lower.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    echoes(&mut client, b"hello through the tunnel").await;
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(&big).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let receive = timeout(STEP, read.read_to_end(&mut back));
    let ((), received) = tokio::join!(send, receive);
    received
        .expect("the echo and the close within STEP")
        .unwrap();
    assert!(back == big, "{} bytes back of {}", back.len(), big.len());
    // The app saw the handshake with its upgrade, and the sidecar's forwarding headers.
    let got = seen.last_head();
    assert!(got.contains("\r\nupgrade: websocket\r\n"), "{got}");
    assert!(got.contains("\r\nconnection: upgrade\r\n"), "{got}");
    assert!(got.contains("\r\nsec-websocket-key: "), "{got}");
    assert!(got.contains("\r\nx-forwarded-for: "), "{got}");
}

/// A sidecar in front of a `mode` app (the route `extra` sections before it), and a
/// client's connection to it.
async fn connected(mode: Mode, extra: &str) -> (Arc<Seen>, sidecar_lite::Sidecar, TcpStream) {
    let (app, seen) = websocket_app(mode).await;
    let sidecar = sidecar(&route_to(app, extra)).await;
    let client = TcpStream::connect(outbound_addr(&sidecar)).await.unwrap();
    (seen, sidecar, client)
}

fn route_to(app: SocketAddr, extra: &str) -> String {
    named_route("chat", app, extra)
}

/// A route named `name`: metrics are the process's, and each test that reads them needs a
/// route of its own.
fn named_route(name: &str, app: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}[[outbound]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    )
}

/// The value of `sidecar_tunnels_open` for `route`, from the admin listener's `/metrics`.
async fn tunnels_open(sidecar: &sidecar_lite::Sidecar, route: &str) -> Option<f64> {
    let metrics = text(get(format!("http://{}/metrics", sidecar.bound.admin.unwrap())).await).await;
    let series = format!("sidecar_tunnels_open{{listener=\"outbound/{route}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn a_websocket_handshake_the_app_accepts_becomes_a_tunnel_through_one_sidecar() {
    let certs = Certs::new("upgrade-one-sidecar");
    let (section, log) = access_log_in(&certs);
    let (app, seen) = websocket_app(Mode::Accept).await;
    let sidecar = sidecar(&route_to(app, &section)).await;
    tunnel_through(outbound_addr(&sidecar), &seen).await;
    // The handshake's line is written when the tunnel ends, with what it carried: the
    // message and the megabyte, each way.
    let text = logged(&log).await;
    assert!(text.contains("\"GET chat/chat HTTP/1.1\" 101 "), "{text}");
    assert!(text.contains(" in=1048600 out=1048600 "), "{text}");
}

/// An `[access_log]` section writing to a file in `certs`' directory, and that file.
fn access_log_in(certs: &Certs) -> (String, std::path::PathBuf) {
    let log = certs.dir.join("access.log");
    (format!("[access_log]\npath = \"{}\"\n", log.display()), log)
}

/// The text of the access log at `path` once it has a line (bounded by [`STEP`]).
async fn logged(path: &std::path::Path) -> String {
    let mut text = String::new();
    assert!(
        eventually(async || {
            text = std::fs::read_to_string(path).unwrap_or_default();
            !text.is_empty()
        })
        .await,
        "no access-log line"
    );
    text
}

#[tokio::test]
async fn a_websocket_tunnel_crosses_an_mtls_pair_that_speaks_http2_between_its_sidecars() {
    let (app, seen) = websocket_app(Mode::Accept).await;
    let path = path_to(app, "upgrade-pair").await;
    let addr = outbound_addr(&path.outbound);
    // The pair speaks HTTP/2 to each other for plain requests...
    let plain = get(format!("http://{addr}/plain")).await;
    assert_eq!(plain.status(), 200);
    // ...and the handshake crosses on an HTTP/1.1 connection of its own.
    tunnel_through(addr, &seen).await;
    let got = seen.last_head();
    assert!(got.contains("\r\nx-forwarded-client-cert: "), "{got}");
}

#[tokio::test]
async fn an_upgrade_to_anything_but_websocket_is_not_passed_on() {
    let (seen, _sidecar, mut client) = connected(Mode::SwitchAlways, "").await;
    // h2c past the proxy would let a client talk HTTP/2 to the app unchecked.
    let head = ask(
        &mut client,
        "GET / HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let got = seen.last_head();
    assert!(!got.contains("upgrade"), "{got}");
    assert!(!got.contains("http2-settings"), "{got}");
    // This app switches whatever it is asked: a 101 to a request that asked for nothing.
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nx-sidecar-error: upstream\r\n"),
        "{head}"
    );
    let body = body_after(&mut client, &head).await;
    assert!(body.contains("switched protocols"), "{body}");
}

#[tokio::test]
async fn a_handshake_the_app_refuses_leaves_the_connection_http() {
    let (seen, _sidecar, mut client) = connected(Mode::Refuse, "").await;
    let head = ask(&mut client, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert_eq!(body_after(&mut client, &head).await, "no websocket here");
    // The same connection carries the next request as HTTP.
    let head = ask(&mut client, "GET /next HTTP/1.1\r\nHost: chat\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body_after(&mut client, &head).await, "plain");
    assert_eq!(seen.heads.lock().unwrap().len(), 2);
    // The refused handshake's connection joined the pool, and carried the next request.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_101_that_does_not_accept_this_handshake_is_a_502() {
    let (_seen, _sidecar, mut client) = connected(Mode::WrongAccept, "").await;
    let head = ask(&mut client, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    let body = body_after(&mut client, &head).await;
    assert!(
        body.contains("did not accept this WebSocket handshake"),
        "{body}"
    );
}

#[tokio::test]
async fn bytes_sent_with_the_handshake_reach_the_app_through_the_tunnel() {
    let (_seen, _sidecar, mut client) = connected(Mode::Accept, "").await;
    // One write: the handshake and a first frame's bytes right behind it.
    let head = ask(&mut client, &format!("{HANDSHAKE}early bytes")).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut back = [0; 11];
    timeout(STEP, client.read_exact(&mut back))
        .await
        .expect("the echo within STEP")
        .unwrap();
    assert_eq!(&back, b"early bytes");
}

#[tokio::test]
async fn a_post_asking_for_websocket_is_a_plain_request() {
    let (seen, _sidecar, mut client) = connected(Mode::Accept, "").await;
    let head = ask(
        &mut client,
        "POST /chat HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let got = seen.last_head();
    assert!(!got.contains("upgrade"), "{got}");
}

#[tokio::test]
async fn a_tunnel_holds_its_place_under_the_connection_limit() {
    let (app, seen) = websocket_app(Mode::Accept).await;
    let sidecar = sidecar(&route_to(app, "[limits]\nmax_connections = 1\n")).await;
    let addr = outbound_addr(&sidecar);
    let mut tunnel = TcpStream::connect(addr).await.unwrap();
    let head = ask(&mut tunnel, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echoes(&mut tunnel, b"first").await;
    // No place for another connection while the tunnel is open: it is closed unanswered.
    let mut other = TcpStream::connect(addr).await.unwrap();
    let _ = other
        .write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    timeout(STEP, other.read_to_end(&mut answer))
        .await
        .expect("closed within STEP")
        .ok();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The tunnel was not evicted for it.
    echoes(&mut tunnel, b"second").await;
    drop(tunnel);
    // Once it has closed, its place is free.
    assert!(
        eventually(async || {
            let Ok(response) = timeout(
                STEP,
                http1().get(format!("http://{addr}/").parse().unwrap()),
            )
            .await
            else {
                return false;
            };
            response.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "a new connection is served once the tunnel has closed"
    );
    assert_eq!(seen.heads.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn open_tunnels_are_a_gauge() {
    let (app, _) = websocket_app(Mode::Accept).await;
    let text = named_route("gauged", app, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let config = sidecar_lite::Config::parse(&text).unwrap();
    let sidecar = sidecar_lite::Sidecar::start(&config, Some(recorder()))
        .await
        .unwrap();
    let mut tunnel = TcpStream::connect(outbound_addr(&sidecar)).await.unwrap();
    let head = ask(&mut tunnel, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echoes(&mut tunnel, b"counted").await;
    assert_eq!(tunnels_open(&sidecar, "gauged").await, Some(1.0));
    drop(tunnel);
    assert!(
        eventually(async || tunnels_open(&sidecar, "gauged").await == Some(0.0)).await,
        "the gauge falls back to 0"
    );
}

#[tokio::test]
async fn a_tunnel_silent_for_the_idle_timeout_is_closed() {
    const IDLE: Duration = Duration::from_secs(1);
    let certs = Certs::new("upgrade-idle");
    let (section, log) = access_log_in(&certs);
    let (_seen, _sidecar, mut tunnel) = connected(
        Mode::Accept,
        &format!("{section}[limits]\nidle_timeout = \"1s\"\n"),
    )
    .await;
    let head = ask(&mut tunnel, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echoes(&mut tunnel, b"then nothing").await;
    let since = Instant::now();
    let mut rest = Vec::new();
    timeout(STEP, tunnel.read_to_end(&mut rest))
        .await
        .expect("closed within STEP")
        .ok();
    let after = since.elapsed();
    assert!(
        after >= IDLE,
        "closed after {after:?}, before the idle timeout"
    );
    // Silence is looked for at most an idle timeout late; and room for a loaded machine.
    assert!(
        after <= IDLE * 2 + Duration::from_secs(2),
        "closed after {after:?}"
    );
    assert!(rest.is_empty());
    // Closed for silence, its line still says what it carried.
    let text = logged(&log).await;
    assert!(text.contains(" 101 "), "{text}");
    assert!(text.contains(" in=12 out=12 "), "{text}");
}

#[tokio::test]
async fn a_drain_cuts_an_open_tunnel_at_its_grace() {
    const GRACE: Duration = Duration::from_secs(1);
    let (_seen, sidecar, mut tunnel) =
        connected(Mode::Accept, "[runtime]\ndrain_grace = \"1s\"\n").await;
    let head = ask(&mut tunnel, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let since = Instant::now();
    let stopped = tokio::spawn(sidecar.stop());
    // The tunnel carries on while the drain waits...
    echoes(&mut tunnel, b"still open while draining").await;
    // ...and is cut at its end, which ends the drain.
    let mut rest = Vec::new();
    timeout(STEP, tunnel.read_to_end(&mut rest))
        .await
        .expect("cut within STEP")
        .ok();
    timeout(STEP, stopped)
        .await
        .expect("the drain ends")
        .unwrap();
    let after = since.elapsed();
    assert!(after >= GRACE, "cut after {after:?}, before the grace");
}

/// A handshake answered once the drain has begun gets its `101`, and no tunnel: the drain
/// would only cut it, and holding it would keep the drain waiting its whole grace.
#[tokio::test]
async fn a_handshake_answered_during_a_drain_starts_no_tunnel() {
    let (app, seen) = websocket_app(Mode::AcceptWhenReleased).await;
    // A grace far beyond the test: only a connection that ends by itself ends the drain. One
    // worker: with two, one worker's socket may close (and refuse a connection) before the
    // other's drain has begun.
    let sidecar = sidecar(&route_to(
        app,
        "[runtime]\ndrain_grace = \"60s\"\nworker_threads = 1\n",
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(HANDSHAKE.as_bytes()).await.unwrap();
    assert!(
        eventually(async || !seen.heads.lock().unwrap().is_empty()).await,
        "the app got the handshake"
    );
    let stopped = tokio::spawn(sidecar.stop());
    // The drain has begun once the listener takes no new connection.
    assert!(
        eventually(async || TcpStream::connect(addr).await.is_err()).await,
        "the listener closed"
    );
    seen.release.notify_one();
    let head = timeout(STEP, read_head(&mut client))
        .await
        .expect("the answer within STEP")
        .expect("the 101");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut rest = Vec::new();
    timeout(STEP, client.read_to_end(&mut rest))
        .await
        .expect("closed within STEP, not at the end of the grace")
        .ok();
    timeout(STEP, stopped)
        .await
        .expect("the drain ends within STEP")
        .unwrap();
}

/// Library mode: the route's stack answers a handshake with the app's `101`, whose `OnUpgrade`
/// hands over the connection the handshake dialled.
#[tokio::test]
async fn in_library_mode_the_101_carries_the_connection_to_upgrade() {
    use tower::ServiceExt;
    let (app, seen) = websocket_app(Mode::Accept).await;
    let config = sidecar_lite::Config::parse(&route_to(app, "")).unwrap();
    let route = config.outbound_route("chat").unwrap();
    let stack = sidecar_lite::outbound::<http_body_util::Empty<bytes::Bytes>>(&config, route, None)
        .unwrap();
    let req = http::Request::get(format!("http://{app}/chat"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = timeout(STEP, stack.oneshot(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), 101);
    let upgraded = timeout(STEP, hyper::upgrade::on(response))
        .await
        .unwrap()
        .unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    echoes(&mut io, b"library mode").await;
    let got = seen.last_head();
    assert!(got.contains("\r\nupgrade: websocket\r\n"), "{got}");
}
