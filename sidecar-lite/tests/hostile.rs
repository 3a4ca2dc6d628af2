//! Hostile requests get clear errors, and the listener keeps serving others.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use http::{Request, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Sends raw bytes and returns the response head's status line.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = timeout(STEP, tcp.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn route() -> (
    sidecar_lite::Sidecar,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let (app, hits) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    (sidecar, hits)
}

/// A request carrying both framing headers is how request smuggling starts (RFC 9112
/// section 6.3): it is answered 400 and never forwarded, in either header order, also after
/// earlier requests with sized and chunked bodies on the same kept-alive connection.
#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_and_is_never_forwarded() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    for smuggled in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut stream = b"POST /sized HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        stream.extend_from_slice(b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        stream.extend_from_slice(smuggled);
        // A request hidden behind the smuggled one: it must never be read as a request.
        stream.extend_from_slice(b"GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n");
        tcp.write_all(&stream).await.unwrap();
        let mut response = Vec::new();
        timeout(STEP, tcp.read_to_end(&mut response))
            .await
            .expect("the connection is closed after the 400")
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        let statuses: Vec<_> = response
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &response[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "400"], "{response}");
        assert!(response.contains("x-sidecar-error: bad-request"), "{response}");
        assert!(response.contains("Transfer-Encoding"), "says why: {response}");
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "only the two well-framed requests of each connection reached the app"
    );
}

#[tokio::test]
async fn a_huge_header_and_too_many_headers_get_431() {
    let (sidecar, _) = route().await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let status = raw(outbound_addr(&sidecar), huge.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let status = raw(outbound_addr(&sidecar), many.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    others_are_served(outbound_addr(&sidecar)).await;
}

#[tokio::test]
async fn a_bad_request_line_gets_400() {
    let (sidecar, _) = route().await;
    let status = raw(outbound_addr(&sidecar), b"GARBAGE\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

#[tokio::test]
async fn a_client_sending_its_head_slowly_is_disconnected_and_others_are_served() {
    let (_sidecar, addr) = route_with_head_timeout().await;
    let slow = TcpStream::connect(addr).await.unwrap();
    sends_half_a_head_and_is_cut_off(slow).await;
    others_are_served(addr).await;
}

/// The same on a kept-alive connection: after a response, the next head must come whole within
/// the header read timeout, or the connection is closed.
#[tokio::test]
async fn a_client_sending_its_next_head_slowly_is_disconnected() {
    let (_sidecar, addr) = route_with_head_timeout().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = timeout(STEP, read_response(&mut slow)).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"), "{first:?}");
    sends_half_a_head_and_is_cut_off(slow).await;
    others_are_served(addr).await;
}

/// A route whose clients must send each request head whole within 300 ms.
async fn route_with_head_timeout() -> (sidecar_lite::Sidecar, std::net::SocketAddr) {
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[limits]\nheader_read_timeout = \"300ms\"\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    (sidecar, addr)
}

/// Sends a head that never completes: the sidecar closes the connection (with or without a
/// 408).
async fn sends_half_a_head_and_is_cut_off(mut slow: TcpStream) {
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = timeout(STEP, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client is disconnected");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// Reads one response with a `content-length` from `tcp`, and no further.
async fn read_response(tcp: &mut TcpStream) -> Vec<u8> {
    let mut response = Vec::new();
    let mut byte = [0; 1];
    while !response.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.unwrap();
    response.extend_from_slice(&body);
    response
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[limits]\nmax_connections = 2\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    // Two kept-alive connections that have each been served a request take the two places
    // (a connection that never sent a request would give its place to the third; see
    // silent.rs).
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0; 1024];
        let n = timeout(STEP, tcp.read(&mut head)).await.unwrap().unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    // The listener accepts in arrival order, so the third is over the limit whenever it is
    // accepted.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // Closed unanswered: the read ends (by a reset, or by end of stream if the close came
    // before the request did; either way the connection is gone) with not one byte of a
    // response.
    let mut buf = Vec::new();
    let ended = timeout(STEP, third.read_to_end(&mut buf)).await;
    assert!(ended.is_ok(), "the third connection is closed at once");
    assert!(
        buf.is_empty(),
        "the third connection is closed unanswered, but got: {}",
        String::from_utf8_lossy(&buf)
    );
    drop(held);
}

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_get_503_at_once() {
    let (app, hits) = common::app(|_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        hyper::Response::new(full("slow"))
    })
    .await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\nmax_concurrent_requests = 2\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let slow: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(async move {
                let req = Request::builder()
                    .uri(format!("http://{addr}/{i}"))
                    .body(full(""))
                    .unwrap();
                timeout(STEP, http1().request(req))
                    .await
                    .unwrap()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    // Both slow requests hold their places once the app has them (bounded wait).
    eventually(async || hits.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    let response = get(format!("http://{addr}/third")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-sidecar-error"], "overloaded");
    for call in slow {
        assert_eq!(
            call.await.unwrap(),
            StatusCode::OK,
            "the admitted requests finish"
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the third never reached the app"
    );
}

/// A well-behaved client is served, over HTTP/1.1 and over HTTP/2.
async fn others_are_served(addr: std::net::SocketAddr) {
    for client in [http1(), http2()] {
        let req = Request::builder()
            .uri(format!("http://{addr}/fine"))
            .body(full(""))
            .unwrap();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// A request the listener must refuse, and a well-behaved client served right after.
async fn refused_then_others_served(addr: std::net::SocketAddr, request: &[u8], expected: &str) {
    let status = raw(addr, request).await;
    assert!(
        status.starts_with(expected),
        "{}: {status}",
        String::from_utf8_lossy(request)
    );
    others_are_served(addr).await;
}

#[tokio::test]
async fn invalid_header_bytes_and_conflicting_lengths_get_400() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    let requests = [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x00b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX Bad: space in the name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\x01X: control byte in the name\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    for request in requests {
        refused_then_others_served(addr, request, "HTTP/1.1 400").await;
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2 * requests.len(),
        "only the well-behaved requests (two after each refusal) reached the app"
    );
}

/// A request body that breaks off part-way (a malformed chunk after a good one, which hyper
/// finds only as the body is sent on) is the caller's fault: 400, not 502, and it says nothing
/// about the upstream, so its breaker (opened by 20 failures in a window of 100, at 50 %)
/// stays closed after 25 of them, and nothing is retried.
#[tokio::test]
async fn a_request_body_that_breaks_off_gets_400_and_leaves_the_upstream_alone() {
    let (sidecar, _hits) = route().await;
    let addr = outbound_addr(&sidecar);
    for _ in 0..25 {
        let status = raw(
            addr,
            b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    }
    others_are_served(addr).await;
}

/// An upstream that answers each request head it reads with `response`, on each connection,
/// and counts the requests; its address.
async fn raw_upstream(
    response: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let hits = counted.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if tcp.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, hits)
}

async fn route_to(upstream: std::net::SocketAddr) -> sidecar_lite::Sidecar {
    sidecar(&format!(
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{upstream}\"]\n"
    ))
    .await
}

/// An upstream that answers before it has read a request's body (as nginx and Go's servers
/// may) leaves its connection busy sending that body for as long as the caller takes: a slow
/// upload must not hold up the next request, which gets another connection.
#[tokio::test]
async fn a_slow_upload_answered_early_does_not_hold_up_the_next_request() {
    let (upstream, hits) = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    // One worker: both requests draw on the same worker's connections.
    let sidecar = sidecar(&format!(
        "[runtime]\nworker_threads = 1\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"{upstream}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let mut uploading = TcpStream::connect(addr).await.unwrap();
    uploading
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let n = timeout(STEP, uploading.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The upload stalls, its connection to the upstream still sending it.
    let response = timeout(
        STEP,
        http1().request(
            Request::builder()
                .uri(format!("http://{addr}/next"))
                .body(full(""))
                .unwrap(),
        ),
    )
    .await
    .expect("the next request waited behind the upload")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(uploading);
}

/// An upstream's response framed by both Content-Length and chunked encoding is read as
/// chunked (RFC 9112 section 6.3), and its Content-Length does not go on to frame the
/// client's copy: the whole body arrives, not its first five bytes.
#[tokio::test]
async fn an_upstream_response_with_both_framings_arrives_whole() {
    let (upstream, _) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
    )
    .await;
    let sidecar = route_to(upstream).await;
    let response = get(format!("http://{}/", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("content-length"), None);
    assert_eq!(text(response).await, "0123456789");
}

/// A transfer coding other than chunked cannot go through a proxy that strips the header
/// naming it: a request with one is refused (as hyper refuses `gzip` alone) and never
/// forwarded, and an upstream's response with one is answered 502.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused_both_ways() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    refused_then_others_served(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "only the two after it"
    );

    let (upstream, _) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let sidecar = route_to(upstream).await;
    let response = get(format!("http://{}/", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-sidecar-error"], "upstream");
}

/// RFC 9112 section 3.2: a request whose Host is missing (and whose target names no
/// authority) or is not a host and port is answered 400, and never forwarded.
#[tokio::test]
async fn a_missing_or_invalid_host_gets_400_and_is_never_forwarded() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    for (request, expected) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 400"),
        (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 400"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400"),
        (b"GET / HTTP/1.1\r\nHost: a:port\r\n\r\n", "HTTP/1.1 400"),
        // The same rule for an authority in the target, which wins over Host.
        (
            b"GET http://admin:pw@internal.test/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"GET http://a:port/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ] {
        refused_then_others_served(addr, request, expected).await;
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        12,
        "only the well-behaved"
    );
    // An absolute target needs no Host: its authority becomes the Host forwarded.
    let status = raw(addr, b"GET http://orders.test/ HTTP/1.1\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// Two identical lengths are one length (RFC 9110 section 8.6): served, once.
#[tokio::test]
async fn a_repeated_identical_content_length_is_one_length() {
    let (sidecar, hits) = route().await;
    let status = raw(
        outbound_addr(&sidecar),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(h2_frame(0x4, 0, 0, &[]));
    start
}

/// The error code of the GOAWAY frame among the frames the server sent, if any.
fn h2_goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let payload = bytes.get(9..9 + length)?;
        if bytes[3] == 0x7 {
            return Some(u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?));
        }
        bytes = &bytes[9 + length..];
    }
    None
}

/// Writes `frame` up to `max` times, until the server stops reading; then reads what the
/// server sent until it closes. Returns the frames written and the bytes read.
async fn h2_flood(tcp: &mut TcpStream, frame: &[u8], max: usize) -> (usize, Vec<u8>) {
    let mut sent = 0;
    while sent < max {
        match timeout(STEP, tcp.write_all(frame)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("the server neither reads nor closes"),
        }
    }
    let mut answer = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut answer)).await;
    (sent, answer)
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and resets them at once
/// gets a GOAWAY (ENHANCE_YOUR_CALM), and costs the app nothing.
#[tokio::test]
async fn http2_rapid_reset_gets_goaway_and_others_are_served() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&h2_preface()).await.unwrap();
    // HEADERS (GET http / , authority "a"; END_STREAM | END_HEADERS), then RST_STREAM
    // (CANCEL), on streams 1, 3, 5...
    const STREAMS: u32 = 20_000;
    let mut flood = Vec::new();
    for stream in (1..2 * STREAMS).step_by(2) {
        flood.extend(h2_frame(
            0x1,
            0x5,
            stream,
            &[0x82, 0x86, 0x84, 0x01, 0x01, b'a'],
        ));
        flood.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let (sent, answer) = h2_flood(&mut tcp, &flood, 1).await;
    let reached = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        h2_goaway_code(&answer),
        Some(ENHANCE_YOUR_CALM),
        "{sent} floods; answer {answer:?}"
    );
    assert!(
        reached < 100,
        "{reached} of {STREAMS} reset streams reached the app"
    );

    others_are_served(addr).await;
}

/// HTTP/2 CONTINUATION flood (CVE-2024-27316 and kin): a header block that never ends is cut
/// off at the header list limit with a GOAWAY, and never reaches the app.
#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut start = h2_preface();
    // HEADERS without END_HEADERS (GET http /), then literal headers in CONTINUATIONs.
    start.extend(h2_frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84]));
    tcp.write_all(&start).await.unwrap();
    // Each CONTINUATION adds a literal header "x-flood: aaa..." (never indexed).
    let mut block = vec![0x00, 7];
    block.extend_from_slice(b"x-flood");
    block.push(100);
    block.extend_from_slice(&[b'a'; 100]);
    // 100 000 frames would be 11 MB of headers; the limit is 64 KiB.
    const FRAMES: usize = 100_000;
    let (sent, answer) = h2_flood(&mut tcp, &h2_frame(0x9, 0, 1, &block), FRAMES).await;
    assert!(
        h2_goaway_code(&answer).is_some(),
        "a GOAWAY after {sent} CONTINUATION frames: {answer:?}"
    );
    assert!(
        sent < FRAMES,
        "the connection was cut off, after {sent} frames"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    others_are_served(addr).await;
}

#[tokio::test]
async fn a_request_with_two_host_headers_is_refused_and_never_forwarded() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: orders.shop\r\nHost: admin.internal\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-sidecar-error: bad-request"), "{answer}");
    assert!(answer.contains("more than one Host header"), "{answer}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    others_are_served(addr).await;
}

/// Sends `stream`, two requests, on one connection: the first is served, the second, whose
/// framing is ambiguous, is answered 400 and never reaches the app.
async fn first_served_second_refused(stream: &[u8]) {
    let (sidecar, hits) = route().await;
    let mut tcp = TcpStream::connect(outbound_addr(&sidecar)).await.unwrap();
    tcp.write_all(stream).await.unwrap();
    let mut answers = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut answers))
        .await
        .unwrap()
        .unwrap();
    let answers = String::from_utf8_lossy(&answers);
    let statuses: Vec<_> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answers[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answers}");
    assert!(
        answers.contains("x-sidecar-error: bad-request"),
        "{answers}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the first reached the app"
    );
}

/// A chunk size the framing guard cannot read but hyper takes (seventeen digits, zeros first)
/// must not switch the guard off for the rest of the connection: the next request is refused,
/// so an ambiguous one after it cannot slip through.
#[tokio::test]
async fn ambiguous_framing_after_an_unreadable_chunk_size_still_gets_400() {
    first_served_second_refused(
        b"POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          00000000000000005\r\nhello\r\n0\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn ambiguous_framing_after_a_request_asking_for_an_upgrade_still_gets_400() {
    first_served_second_refused(
        b"GET /first HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_with_huge_paths_and_a_sampled_trace_cannot_fill_the_memory() {
    let (app, hits) = echo_app().await;
    // Plaintext callers are anonymous, and not let in; every span would be sampled, and the
    // collector is down, so whatever is recorded waits in the export queue.
    let inbound = common::process::free_addr();
    let sidecar = common::process::SidecarProcess::start(
        "span-flood",
        &format!(
            "[inbound]\nlisten = \"{inbound}\"\napp = \"{app}\"\nmtls = \"disabled\"\n\
             [tracing]\notlp_endpoint = \"http://127.0.0.1:9\"\nexport_timeout = \"50ms\"\n"
        ),
    )
    .await;
    let rss = async || sidecar.metric("process_resident_memory_bytes").await;
    let before = rss().await.expect("the sidecar reports its RSS");

    const REQUESTS: usize = 10_000;
    const CLIENTS: usize = 8;
    let path = format!("/{}", "a".repeat(60 * 1024));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let path = path.clone();
        clients.push(tokio::spawn(async move {
            let client = http1();
            let mut refused = 0;
            for _ in 0..REQUESTS / CLIENTS {
                let req = Request::builder()
                    .uri(format!("http://{inbound}{path}"))
                    .header(
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    )
                    .body(full(""))
                    .unwrap();
                let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
                refused += usize::from(response.status() == StatusCode::FORBIDDEN);
            }
            refused
        }));
    }
    let mut refused = 0;
    for client in clients {
        refused += client.await.unwrap();
    }
    assert_eq!(refused, REQUESTS);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let after = rss().await.unwrap();
    let grown = (after - before) / f64::from(1 << 20);
    println!(
        "RSS {:.1} MiB -> {:.1} MiB after {REQUESTS} refused 60 KiB requests",
        before / f64::from(1 << 20),
        after / f64::from(1 << 20)
    );
    // Nothing of theirs was recorded: no span queued, none dropped for a full queue.
    assert_eq!(
        sidecar
            .metric("sidecar_spans_dropped_total{reason=\"queue-full\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );
    // Recorded whole, 2048 queued spans of 60 KiB paths alone would be 120 MiB.
    assert!(grown < 32.0, "RSS grew by {grown:.1} MiB");
}

/// CONNECT asks for a tunnel, which the proxy does not make: 400, and nothing reaches the app
/// (it was forwarded as `CONNECT /`, a target form no server expects).
#[tokio::test]
async fn a_connect_request_gets_400_and_is_never_forwarded() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    refused_then_others_served(
        addr,
        b"CONNECT internal.test:443 HTTP/1.1\r\nHost: internal.test:443\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// `[limits] max_headers` holds on HTTP/2 too (hyper counts them only on HTTP/1.1): 431, and
/// nothing reaches the app.
#[tokio::test]
async fn too_many_headers_over_http2_get_431() {
    let (sidecar, hits) = route().await;
    let addr = outbound_addr(&sidecar);
    let mut req = Request::builder().uri(format!("http://{addr}/many"));
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let response = timeout(STEP, http2().request(req.body(full("")).unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(response.headers()["x-sidecar-error"], "headers-too-large");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    others_are_served(addr).await;
    // A browser's cookies, split into fields of their own, count as the one field an
    // HTTP/1.1 client would send.
    let mut req = Request::builder().uri(format!("http://{addr}/cookies"));
    for i in 0..150 {
        req = req.header("cookie", format!("c{i}=v"));
    }
    let response = timeout(STEP, http2().request(req.body(full("")).unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// An HTTP/2 client may send its cookies as fields of their own (browsers do); the HTTP/1.1
/// app gets them joined in one (RFC 9113 section 8.2.3).
#[tokio::test]
async fn http2_cookies_reach_an_http1_app_in_one_field() {
    let (sidecar, _) = route().await;
    let req = Request::builder()
        .uri(format!("http://{}/", outbound_addr(&sidecar)))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http2().request(req)).await.unwrap().unwrap();
    let echoed = text(response).await;
    assert!(echoed.contains("cookie: a=1; b=2\n"), "{echoed}");
}
