//! Hostile requests get clear errors, and the listener keeps serving others.

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
    sidecar_lite::run::Sidecar,
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

    // Other clients are still served.
    let req = Request::builder()
        .uri(format!("http://{}/fine", outbound_addr(&sidecar)))
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_request_line_gets_400() {
    let (sidecar, _) = route().await;
    let status = raw(outbound_addr(&sidecar), b"GARBAGE\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

#[tokio::test]
async fn a_client_sending_its_head_slowly_is_disconnected_and_others_are_served() {
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[limits]\nheader_read_timeout = \"300ms\"\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    // The head never completes: the sidecar closes the connection (with or without a 408).
    let mut rest = Vec::new();
    let closed = timeout(STEP, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client is disconnected");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[limits]\nmax_connections = 2\n[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    // Two idle connections take the two places.
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // The listener accepts in arrival order, so the third is over the limit whenever it is
    // accepted.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = timeout(STEP, third.read_to_end(&mut buf)).await.unwrap();
    assert!(
        read.is_err() || buf.is_empty(),
        "the third connection is closed unanswered"
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
    let req = Request::builder()
        .uri(format!("http://{addr}/third"))
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
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
