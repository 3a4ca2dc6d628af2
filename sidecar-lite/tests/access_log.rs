//! `[access_log]`: one line per request with what an operator needs (listener, method, path,
//! status, gRPC status, bytes, upstream, attempts, the `x-sidecar-error` flag, peer identity,
//! trace id, client), reopened on reload for logrotate, and written off the request path: a
//! log file nobody drains never holds up a request.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::{
    Certs, echo_app, frontend_to_orders, full, get,
    grpc::{grpc_app, grpc_request},
    http1, http2, inbound_sidecar, outbound_addr, sidecar, spiffe, text,
};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sidecar_lite::Config;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tokio::{net::TcpListener, time::timeout};

/// The JSON lines of `path`, once it has at least `n` of them (bounded by [`common::STEP`]).
async fn lines(path: &Path, n: usize) -> Vec<Value> {
    let mut read = Vec::new();
    let complete = common::eventually(async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        read = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        read.len() >= n
    })
    .await;
    assert!(
        complete,
        "{} lines of {n} in {}",
        read.len(),
        path.display()
    );
    read
}

/// The JSON lines `path` holds now, and its text.
fn written(path: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

fn access_log(dir: &Path, format: &str) -> (PathBuf, String) {
    let path = dir.join("access.log");
    let section = format!(
        "[access_log]\npath = \"{}\"\nformat = \"{format}\"\n",
        path.display()
    );
    (path, section)
}

/// A response whose head went out and whose body then broke off (the upstream closed half-way)
/// is not logged as a plain success: its line keeps the status sent and says `upstream`.
#[tokio::test]
async fn a_response_body_that_breaks_off_is_flagged_in_its_line() {
    let certs = Certs::new("access-log-broken-body");
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = upstream.accept().await.unwrap();
        let mut head = [0; 4096];
        let _ = tcp.read(&mut head).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            .await;
        // Closed with five of its ten bytes sent.
    });
    let (log, section) = access_log(&certs.dir, "json");
    let sidecar = sidecar(&format!(
        "{section}[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{addr}\"]\n"
    ))
    .await;
    let response = get(format!("http://{}/", sidecar.bound.outbound[0].1)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await.is_err(), "cut short");
    let lines = lines(&log, 1).await;
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["sidecar_error"], "upstream");
    assert_eq!(lines[0]["bytes_out"], 5);
}

#[tokio::test]
async fn every_request_gets_a_json_line_with_what_happened() {
    let certs = Certs::new("access-log-json");
    let (app, _) = echo_app().await;
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (log, section) = access_log(&certs.dir, "json");
    let sidecar = sidecar(&format!(
        "{section}[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
         [[outbound]]\nname = \"nowhere\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{nowhere}\"]\n"
    ))
    .await;
    let to_app = sidecar.bound.outbound[0].1;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{to_app}/orders?id=7"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(full("12345"))
        .unwrap();
    let response = timeout(common::STEP, http1().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answered = text(response).await.len();
    let refused = get(format!("http://{}/", sidecar.bound.outbound[1].1)).await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let _ = text(refused).await;

    let lines = lines(&log, 2).await;
    let ok = lines
        .iter()
        .find(|l| l["listener"] == "outbound/app")
        .unwrap();
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/orders");
    assert_eq!(ok["authority"], to_app.to_string());
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["grpc_status"], Value::Null);
    assert_eq!(ok["sidecar_error"], Value::Null);
    assert_eq!(ok["bytes_in"], 5);
    assert_eq!(ok["bytes_out"], answered);
    assert_eq!(ok["upstream"], app.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["start_time"].as_str().unwrap().ends_with('Z'));

    let failed = lines
        .iter()
        .find(|l| l["listener"] == "outbound/nowhere")
        .unwrap();
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["sidecar_error"], "connect");
    // The default retry policy retries connect failures: three attempts, each to the one
    // endpoint.
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["upstream"], nowhere.to_string());
    // A trace id was made for a request that came without one.
    assert_eq!(failed["trace_id"].as_str().unwrap().len(), 32);
}

/// Through two sidecars: the inbound line names the caller's verified identity, and a gRPC
/// status that comes in the trailers is logged on both sides.
#[tokio::test]
async fn the_inbound_line_names_the_peer_and_grpc_status_comes_from_the_trailers() {
    let certs = Certs::new("access-log-peer");
    let (app, _) = grpc_app().await;
    let (outbound_log, outbound_section) = access_log(&certs.dir, "json");
    let inbound_log = certs.dir.join("inbound.log");
    let inbound = inbound_sidecar(
        &certs,
        "orders",
        app,
        &[spiffe("frontend")],
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
            inbound_log.display()
        ),
    )
    .await;
    let outbound = frontend_to_orders(&certs, &inbound, &outbound_section).await;
    let req = grpc_request(outbound_addr(&outbound), "/shop.Orders/Get");
    let response = timeout(common::STEP, http2().request(req))
        .await
        .unwrap()
        .unwrap();
    let body = response.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");

    let out = &lines(&outbound_log, 1).await[0];
    let inn = &lines(&inbound_log, 1).await[0];
    for line in [out, inn] {
        assert_eq!(line["path"], "/shop.Orders/Get");
        assert_eq!(line["grpc_status"], 0, "{line}");
        assert_eq!(line["bytes_in"], 9);
        assert_eq!(line["bytes_out"], 7);
        assert_eq!(line["protocol"], "HTTP/2");
    }
    assert_eq!(out["listener"], "outbound/peer");
    assert_eq!(out["upstream"], inbound.bound.inbound.unwrap().to_string());
    assert_eq!(out["peer_identity"], Value::Null);
    assert_eq!(inn["listener"], "inbound");
    assert_eq!(inn["upstream"], app.to_string());
    assert_eq!(inn["peer_identity"], spiffe("frontend"));
    assert_eq!(inn["trace_id"], out["trace_id"], "one trace through both");
}

/// logrotate moves the file away and sends SIGHUP, which reloads: the next lines go to a new
/// file at the configured path, none to the old one.
#[tokio::test]
async fn a_reload_reopens_the_file_for_logrotate() {
    let certs = Certs::new("access-log-rotate");
    let (app, _) = echo_app().await;
    let (log, section) = access_log(&certs.dir, "text");
    let text_config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{section}[[outbound]]\nname = \"app\"\n\
         listen = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n"
    );
    let config = Config::parse(&text_config).unwrap();
    let mut sidecar = sidecar_lite::Sidecar::start(&config, None).await.unwrap();
    let url = format!("http://{}/first", outbound_addr(&sidecar));
    let _ = text(get(url).await).await;
    let rotated = certs.dir.join("access.log.1");
    assert!(
        common::eventually(async || std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()))
            .await
    );
    std::fs::rename(&log, &rotated).unwrap();

    sidecar.reload(&config).await.unwrap();
    let url = format!("http://{}/second", outbound_addr(&sidecar));
    let _ = text(get(url).await).await;
    assert!(
        common::eventually(async || std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()))
            .await
    );

    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(
        old.contains("\"GET 127.0.0.1:") && old.contains("/first HTTP/1.1\" 200 "),
        "{old}"
    );
    assert!(new.contains("/second HTTP/1.1\" 200 "), "{new}");
    assert!(
        new.contains(&format!(" upstream={app} attempts=1 ")),
        "{new}"
    );
}

/// The log is a FIFO whose reader never reads, so the writer blocks once the pipe is full, as
/// on a full disk: requests are answered all the same, their lines dropped and counted.
#[cfg(unix)]
#[tokio::test]
async fn a_log_that_cannot_be_written_never_delays_a_request() {
    use tokio::net::unix::pipe;

    let certs = Certs::new("access-log-blocked");
    let fifo = certs.dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Read and write: opening a FIFO so never waits, and it counts as a reader that never
    // reads (and a writer, so that it never sees the end). Non-blocking, as the probe below:
    // nothing in this test can wait on the pipe.
    let reader = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .unwrap();
    let probe = pipe::OpenOptions::new().open_sender(&fifo).unwrap();
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[access_log]\npath = \"{}\"\nqueue = 16\n[[outbound]]\nname = \"app\"\n\
         listen = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n",
        fifo.display()
    ))
    .await;
    let addr: SocketAddr = outbound_addr(&sidecar);
    let client = http1();
    let call = async |i: usize| {
        let req = Request::builder()
            .uri(format!("http://{addr}/request/{i}"))
            .body(full(""))
            .unwrap();
        let response = timeout(common::STEP, client.request(req))
            .await
            .unwrap_or_else(|_| panic!("request {i} was held up"))
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await.unwrap();
    };
    // Requests until the pipe is full, which is when the writer blocks. About 300 bytes a
    // line fill a pipe (64 KiB) in a few hundred; a writer that falls behind drops lines on
    // its full queue, so it may take more, and a bound says when it never happens.
    let mut sent = 0;
    let full = loop {
        call(sent).await;
        sent += 1;
        // A byte that does not fit says the pipe is full (one that fits goes into the log,
        // between two of its lines or inside one).
        if sent % 50 == 0
            && let Err(error) = probe.try_write(b"\n")
        {
            assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
            break true;
        }
        if sent == 20_000 {
            break false;
        }
    };
    assert!(full, "{sent} requests' lines never filled the pipe");
    // The writer is blocked now: requests are answered all the same.
    for i in sent..sent + 200 {
        call(i).await;
    }
    let mut chunk = vec![0; 4096];
    let read = reader
        .try_read(&mut chunk)
        .expect("a full pipe has bytes to read");
    let chunk = String::from_utf8_lossy(&chunk[..read]);
    assert!(
        chunk.contains("/request/"),
        "the pipe holds log lines: {chunk}"
    );
}

#[test]
fn access_log_config_errors_name_the_field_and_line() {
    let text = "[access_log]\npath = \"/no/such/dir/access.log\"\nformat = \"json\"\nqueue = 0\n";
    let errors = Config::parse(text).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = errors
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [("access_log.path", Some(2)), ("access_log.queue", Some(4))],
        "{errors}"
    );
    let message = errors.to_string();
    assert!(
        message.contains("/no/such/dir: no such directory"),
        "{message}"
    );
    assert!(message.contains("0 is not from 1 to 1048576"), "{message}");

    let errors = Config::parse("[access_log]\npath = \"stdout\"\nformat = \"xml\"\n").unwrap_err();
    assert_eq!(errors.errors[0].line, Some(3), "{errors}");
    assert!(Config::parse("[access_log]\npath = \"stdout\"\n").is_ok());
}

/// A stop writes out the last lines, and a caller that goes away before the answer's head
/// still gets its line, with status 0.
#[tokio::test]
async fn the_last_lines_are_written_at_stop_and_a_caller_gone_early_is_logged() {
    let certs = Certs::new("access-log-stop");
    let (app, _) = echo_app().await;
    let (hang, _) = common::app(|_| std::future::pending()).await;
    let (log, section) = access_log(&certs.dir, "json");
    let sidecar = sidecar(&format!(
        "{section}[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
         [[outbound]]\nname = \"hang\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{hang}\"]\n"
    ))
    .await;
    let gone = tokio::spawn(get(format!("http://{}/gone", sidecar.bound.outbound[1].1)));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    gone.abort();
    let _ = text(get(format!("http://{}/last", sidecar.bound.outbound[0].1)).await).await;
    // No waiting for the writer's tick: the stop writes it out.
    sidecar.stop().await;
    let (_, lines) = written(&log);
    let by_path = |path: &str| lines.iter().find(|l| l["path"] == path).cloned();
    assert_eq!(by_path("/last").expect("the last request")["status"], 200);
    assert_eq!(
        by_path("/gone").expect("the request whose caller left")["status"],
        0
    );
}

/// Requests still waiting for their upstream when the drain's grace runs out are cut, and
/// each gets its line, over HTTP/1.1 and over HTTP/2 (whose streams hyper serves in tasks of
/// their own, outside the connection's).
#[tokio::test]
async fn requests_cut_at_the_end_of_the_drain_get_their_lines() {
    let certs = Certs::new("access-log-cut");
    let (hang, arrived) = common::app(|_| std::future::pending()).await;
    let (log, section) = access_log(&certs.dir, "json");
    let sidecar = sidecar(&format!(
        "{section}[runtime]\ndrain_grace = \"100ms\"\n\
         [[outbound]]\nname = \"hang\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{hang}\"]\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let send = |path: &str, client: hyper_util::client::legacy::Client<_, _>| {
        let request = Request::get(format!("http://{addr}{path}"))
            .body(full(""))
            .unwrap();
        tokio::spawn(async move { client.request(request).await })
    };
    let callers = [send("/one", http1()), send("/two", http2())];
    let both_arrived = async || arrived.load(std::sync::atomic::Ordering::SeqCst) == 2;
    assert!(common::eventually(both_arrived).await);

    sidecar.stop().await;
    let (text, lines) = written(&log);
    for (path, protocol) in [("/one", "HTTP/1.1"), ("/two", "HTTP/2.0")] {
        let line = lines
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for the {protocol} request in {text}"));
        assert_eq!(line["status"], 0, "{line}");
    }
    for caller in callers {
        caller.abort();
    }
}
