//! Each fault, over real loopback connections: what a client sees, and what the counters say.
//! Every wait is bounded by `STEP`.

use bytes::Bytes;
use example_flaky_upstream::{Faults, INVALID_HTTP, REQUEST_NUMBER, Rate, Snapshot, Upstream};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout},
};

mod common;

use common::{STEP, raw_get};

fn http1() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn error_rate_fails_exactly_the_scheduled_requests() {
    let upstream = Upstream::start(Faults {
        error_rate: Rate::new(0.25),
        error_status: StatusCode::BAD_GATEWAY,
        ..Faults::default()
    })
    .await
    .unwrap();
    let client = http1();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = timeout(STEP, client.request(get(upstream.addr())))
            .await
            .unwrap()
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let failed: Vec<usize> = (1..=20).filter(|&n| statuses[n - 1] == 502).collect();
    assert_eq!(failed, [4, 8, 12, 16, 20]);
    assert!(statuses.iter().all(|&s| s == 200 || s == 502));
    let counters = upstream.counters();
    assert_eq!(
        (counters.requests, counters.errors, counters.ok),
        (20, 5, 15)
    );
}

#[tokio::test]
async fn success_carries_the_body_size_and_request_number_over_h2c_too() {
    let upstream = Upstream::start(Faults {
        body_bytes: 100,
        ..Faults::default()
    })
    .await
    .unwrap();
    let h2: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for n in 1..=3u64 {
        let response = timeout(STEP, h2.request(get(upstream.addr())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()[REQUEST_NUMBER], n.to_string().as_str());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 100);
        assert_eq!(body.last(), Some(&b'\n'));
    }
    assert_eq!(upstream.counters().connections, 1, "h2 multiplexes on one");
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let latency = Duration::from_millis(60);
    let upstream = Upstream::start(Faults {
        latency,
        error_rate: Rate::every(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let client = http1();
    for expected in [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE] {
        let start = Instant::now();
        let response = timeout(STEP, client.request(get(upstream.addr())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), expected);
        assert!(start.elapsed() >= latency, "{:?}", start.elapsed());
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_share_waits_longer_and_the_rest_does_not() {
    let slow = Duration::from_secs(30);
    let upstream = Upstream::start(Faults {
        slow_rate: Rate::every(2),
        slow_latency: slow,
        ..Faults::default()
    })
    .await
    .unwrap();
    let client = http1();
    // Requests 1 and 3 are fast, request 2 waits 30 s more (on paused time, at once).
    for (n, waits) in [(1, false), (2, true), (3, false)] {
        let start = tokio::time::Instant::now();
        let response = client.request(get(upstream.addr())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(start.elapsed() >= slow, waits, "request {n}");
    }
}

#[tokio::test]
async fn resets_close_the_connection_with_a_tcp_reset() {
    let upstream = Upstream::start(Faults {
        reset_rate: Rate::ALWAYS,
        ..Faults::default()
    })
    .await
    .unwrap();
    let error = raw_get(upstream.addr()).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(upstream.counters().resets, 1);

    // Through a client: an error, never a response.
    let result = timeout(STEP, http1().request(get(upstream.addr())))
        .await
        .unwrap();
    assert!(result.is_err());
    assert_eq!(upstream.counters().resets, 2);
}

#[tokio::test]
async fn invalid_http_is_sent_then_the_connection_closes() {
    let upstream = Upstream::start(Faults {
        invalid_http_rate: Rate::ALWAYS,
        ..Faults::default()
    })
    .await
    .unwrap();
    let bytes = raw_get(upstream.addr()).await.unwrap();
    assert_eq!(bytes, INVALID_HTTP);
    let result = timeout(STEP, http1().request(get(upstream.addr())))
        .await
        .unwrap();
    assert!(result.is_err(), "a client cannot parse it");
    assert_eq!(upstream.counters().invalid_http, 2);
}

#[tokio::test]
async fn hung_requests_get_no_answer_until_their_time_is_up() {
    let hang_for = Duration::from_millis(300);
    let upstream = Upstream::start(Faults {
        hang_rate: Rate::every(2),
        hang_for,
        ..Faults::default()
    })
    .await
    .unwrap();
    let client = http1();
    let first = timeout(STEP, client.request(get(upstream.addr())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    let start = Instant::now();
    let second = timeout(STEP, client.request(get(upstream.addr())))
        .await
        .unwrap();
    assert!(second.is_err(), "closed without an answer");
    assert!(start.elapsed() >= hang_for);
    assert_eq!(upstream.counters().hangs, 1);
}

#[tokio::test]
async fn slow_bodies_arrive_one_byte_per_frame() {
    let upstream = Upstream::start(Faults {
        slow_body_rate: Rate::ALWAYS,
        slow_byte_interval: Duration::from_millis(5),
        body_bytes: 8,
        ..Faults::default()
    })
    .await
    .unwrap();
    let response = timeout(STEP, http1().request(get(upstream.addr())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = timeout(STEP, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(data);
        }
    }
    assert_eq!(frames.len(), 8);
    assert!(frames.iter().all(|f| f.len() == 1));
    assert_eq!(frames.concat(), b"okkkkkk\n");
    assert_eq!(upstream.counters().slow_bodies, 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = Upstream::start(Faults {
        close_idle_after: Some(Duration::from_millis(100)),
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut tcp = TcpStream::connect(upstream.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: flaky\r\n\r\n")
        .await
        .unwrap();
    // The answer, then (keep-alive, nothing more sent) the server's close: EOF.
    let mut bytes = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("ok\n"), "{text}");
    assert_eq!(upstream.counters().idle_closes, 1);
}

#[tokio::test]
async fn dropping_the_upstream_closes_its_connections() {
    let upstream = Upstream::start(Faults {
        hang_rate: Rate::ALWAYS,
        ..Faults::default()
    })
    .await
    .unwrap();
    let addr = upstream.addr();
    let client = http1();
    let pending = tokio::spawn(async move { client.request(get(addr)).await });
    // Wait (bounded) until the request has arrived, then stop.
    let arrived = async {
        while upstream.counters().hangs == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(STEP, arrived).await.unwrap();
    let counters: Snapshot = upstream.counters();
    assert_eq!(counters.requests, 1);
    upstream.stop();
    let result = timeout(STEP, pending).await.unwrap().unwrap();
    assert!(result.is_err());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_reset_mid_body_sends_the_head_and_half_the_body_then_resets() {
    let upstream = Upstream::start(Faults {
        reset_mid_body_rate: Rate::ALWAYS,
        body_bytes: 100,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut tcp = TcpStream::connect(upstream.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: flaky\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    let ended = loop {
        match timeout(STEP, tcp.read(&mut chunk)).await.unwrap() {
            Ok(0) => break "closed",
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ended, "reset", "a TCP reset, not a clean close");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 100"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), 50, "half the promised body: {body:?}");
    assert_eq!(upstream.counters().mid_body_resets, 1);
}

#[tokio::test]
async fn bursts_of_errors_and_faults_changed_while_running() {
    let upstream = Upstream::start(Faults {
        error_rate: Rate::bursts(2, 4),
        ..Faults::default()
    })
    .await
    .unwrap();
    let client = http1();
    let mut statuses = Vec::new();
    for n in 0..10 {
        if n == 8 {
            upstream.set_faults(Faults::default());
        }
        let response = timeout(STEP, client.request(get(upstream.addr())))
            .await
            .unwrap()
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200, 503, 503, 200, 200, 200, 200]);
}

#[tokio::test]
async fn posts_and_request_ids_seen_twice_are_counted() {
    let upstream = Upstream::start(Faults::default()).await.unwrap();
    let client = http1();
    for (method, id) in [("POST", "a"), ("POST", "b"), ("GET", "a"), ("PUT", "c")] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}/", upstream.addr()))
            .header(example_flaky_upstream::REQUEST_ID, id)
            .body(Empty::new())
            .unwrap();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let counters = upstream.counters();
    assert_eq!((counters.posts, counters.duplicate_ids), (2, 1));
}
