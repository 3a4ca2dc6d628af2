//! Tracing export, on 127.0.0.1: spans of proxied requests received by a local OTLP/HTTP
//! collector, parented by `traceparent`; a dead collector that costs requests nothing; and the
//! `[tracing]` config checks.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatus},
};
use prost::Message;
use sidecar_lite::{Config, Sidecar};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::timeout;

/// A span as the collector received it, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local OTLP/HTTP collector: decodes each `ExportTraceServiceRequest` posted to
/// `/v1/traces` and keeps its spans.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let (addr, _) = app(move |req: Request<Incoming>| {
            let sink = sink.clone();
            async move {
                assert_eq!(req.uri().path(), "/v1/traces");
                assert_eq!(req.headers()[CONTENT_TYPE], "application/x-protobuf");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let export = ExportTraceServiceRequest::decode(body).unwrap();
                let mut sink = sink.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            sink.push(Received {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                let mut response = Response::new(full(Bytes::from(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, "application/x-protobuf".parse().unwrap());
                response
            }
        })
        .await;
        Self { addr, spans }
    }

    fn section(&self, service: &str, extra: &str) -> String {
        format!(
            "\n[tracing]\notlp_endpoint = \"http://{}/v1/traces\"\nservice_name = \"{service}\"\n{extra}\n",
            self.addr
        )
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect()
    }
}

/// The trace id and span id of a `traceparent` line echoed by the app.
fn echoed_traceparent(text: &str) -> (String, String, String) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent reached the app: {text}"));
    let parts: Vec<&str> = line.split('-').collect();
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

async fn send(addr: SocketAddr, path: &str, traceparent: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "orders.shop");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let response = timeout(STEP, http1().request(req.body(full("")).unwrap()))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    (status, text(response).await)
}

/// The sum of a counter's series in Prometheus text, those whose labels contain `labels`.
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn two_sidecars_make_one_trace_parented_by_the_callers_traceparent() {
    let metrics = recorder();
    let collector = Collector::start().await;
    let (app, _) = echo_app().await;
    let certs = Certs::new("tracing-two");
    // Spans wait for a full batch or an hour: only the flush at stop sends them.
    let hold = "export_interval = \"1h\"";
    let inbound = inbound_sidecar(
        &certs,
        "orders",
        app,
        &[spiffe("frontend")],
        &collector.section("orders", hold),
    )
    .await;
    let outbound = outbound_sidecar(
        &certs,
        "frontend",
        &[inbound.bound.inbound.unwrap()],
        "orders",
        &collector.section("frontend", hold),
    )
    .await;
    let addr = outbound_addr(&outbound);

    // A caller's sampled traceparent: the outbound span is its child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, text) = send(
        addr,
        "/orders/7?page=2",
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (app_trace, app_parent, app_flags) = echoed_traceparent(&text);
    assert_eq!(app_trace, caller_trace);
    assert_eq!(app_flags, "01");

    // No traceparent: the outbound sidecar starts the trace.
    let (status, text) = send(addr, "/health", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (new_trace, new_parent, _) = echoed_traceparent(&text);
    assert_ne!(new_trace, caller_trace);

    outbound.stop().await;
    inbound.stop().await;
    assert!(
        eventually(async || collector.trace(caller_trace).len() == 2
            && collector.trace(&new_trace).len() == 2)
        .await,
        "spans flushed at stop: {:#?}",
        collector.spans.lock().unwrap()
    );

    let spans = collector.trace(caller_trace);
    let client = spans.iter().find(|s| s.service == "frontend").unwrap();
    let server = spans.iter().find(|s| s.service == "orders").unwrap();
    assert_eq!(client.span.kind, SpanKind::Client as i32);
    assert_eq!(server.span.kind, SpanKind::Server as i32);
    assert_eq!(
        client.parent_id(),
        caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(
        server.parent_id(),
        client.span_id(),
        "the client span is the parent"
    );
    assert_eq!(
        app_parent,
        server.span_id(),
        "the app's traceparent names the server span"
    );
    for span in [client, server] {
        assert_eq!(span.span.name, "GET");
        assert_eq!(span.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(span.attr("url.path").as_deref(), Some("/orders/7"));
        assert_eq!(
            span.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(span.attr("server.address").as_deref(), Some("orders.shop"));
        assert_eq!(span.attr("error.type"), None);
        assert_ne!(
            span.span.status.as_ref().map(|s| s.code),
            Some(SpanStatus::Error as i32)
        );
    }
    assert_eq!(
        client.attr("sidecar.peer.identity"),
        Some(spiffe("orders")),
        "the identity the route requires of its peers"
    );
    assert_eq!(
        client.attr("sidecar.listener").as_deref(),
        Some("outbound/peer")
    );
    assert_eq!(
        server.attr("sidecar.peer.identity"),
        Some(spiffe("frontend")),
        "the identity the caller presented"
    );
    assert_eq!(server.attr("sidecar.listener").as_deref(), Some("inbound"));
    assert_eq!(server.attr("url.scheme").as_deref(), Some("https"));
    assert_eq!(server.attr("client.address").as_deref(), Some("127.0.0.1"));

    let spans = collector.trace(&new_trace);
    let client = spans.iter().find(|s| s.service == "frontend").unwrap();
    let server = spans.iter().find(|s| s.service == "orders").unwrap();
    assert_eq!(
        client.parent_id(),
        "",
        "a new trace: the client span is its root"
    );
    assert_eq!(server.parent_id(), client.span_id());
    assert_eq!(new_parent, server.span_id());

    let text = metrics.render();
    assert!(
        counter(&text, "sidecar_spans_exported_total", "") >= 4,
        "{text}"
    );
}

#[tokio::test]
async fn retries_and_proxy_errors_are_recorded_on_the_client_span() {
    let _ = recorder();
    let collector = Collector::start().await;
    let (failing, hits) = status_app(503).await;
    let (_held, dead) = refusing_address();
    let retry = "retry = { attempts = 3, backoff = { base = \"1ms\", max = \"2ms\" } }";
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"flaky\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{failing}\"]\n{retry}\n\
         [[outbound]]\nname = \"dead\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{dead}\"]\n{retry}\n{}",
        collector.section("client", "export_interval = \"10ms\"")
    ))
    .await;
    let trace = |n: u8| format!("{n:032x}");
    let (status, _) = send(
        sidecar.bound.outbound[0].1,
        "/pay",
        Some(&format!("00-{}-00f067aa0ba902b7-01", trace(1))),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    let (status, _) = send(
        sidecar.bound.outbound[1].1,
        "/pay",
        Some(&format!("00-{}-00f067aa0ba902b7-01", trace(2))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    assert!(
        eventually(
            async || collector.trace(&trace(1)).len() == 1 && collector.trace(&trace(2)).len() == 1
        )
        .await
    );
    let flaky = &collector.trace(&trace(1))[0];
    assert_eq!(
        flaky.attr("sidecar.listener").as_deref(),
        Some("outbound/flaky")
    );
    assert_eq!(
        flaky.attr("http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        flaky.attr("http.request.resend_count").as_deref(),
        Some("2")
    );
    assert_eq!(flaky.attr("error.type").as_deref(), Some("503"));
    assert_eq!(flaky.attr("sidecar.error"), None, "the upstream answered");
    assert_eq!(
        flaky.span.status.as_ref().map(|s| s.code),
        Some(SpanStatus::Error as i32)
    );

    let dead = &collector.trace(&trace(2))[0];
    assert_eq!(
        dead.attr("http.response.status_code").as_deref(),
        Some("502")
    );
    assert_eq!(dead.attr("error.type").as_deref(), Some("connect"));
    assert_eq!(dead.attr("sidecar.error").as_deref(), Some("connect"));
    assert_eq!(dead.attr("http.request.resend_count").as_deref(), Some("2"));
    sidecar.stop().await;
}

#[tokio::test]
async fn sampling_follows_the_callers_flag_and_the_ratio() {
    let _ = recorder();
    let collector = Collector::start().await;
    let (app, _) = echo_app().await;
    let sidecar = sidecar(&format!(
        "[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n{}",
        collector.section("client", "sampling_ratio = 0.0\nexport_interval = \"10ms\"")
    ))
    .await;
    let addr = outbound_addr(&sidecar);

    // A new trace at ratio 0: not sampled, and the app is told so.
    let (_, text) = send(addr, "/", None).await;
    let (unsampled_root, _, flags) = echoed_traceparent(&text);
    assert_eq!(flags, "00");
    // A caller's unsampled trace stays unsampled.
    let unsampled = format!("{:032x}", 3);
    let (_, text) = send(
        addr,
        "/",
        Some(&format!("00-{unsampled}-00f067aa0ba902b7-00")),
    )
    .await;
    assert_eq!(echoed_traceparent(&text).2, "00");
    // A caller's sampled trace is sampled whatever the ratio.
    let sampled = format!("{:032x}", 4);
    let (_, text) = send(
        addr,
        "/",
        Some(&format!("00-{sampled}-00f067aa0ba902b7-01")),
    )
    .await;
    assert_eq!(echoed_traceparent(&text).2, "01");

    assert!(eventually(async || collector.trace(&sampled).len() == 1).await);
    // Spans are exported in the order they end: the unsampled ones would be here by now.
    assert!(collector.trace(&unsampled).is_empty());
    assert!(collector.trace(&unsampled_root).is_empty());

    // [tracing] is read at start only: a reload that changes it is refused, and changes nothing.
    let mut sidecar = sidecar;
    let config: Config = Config::parse(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[outbound]]\nname = \"app\"\nlisten = \"{addr}\"\nendpoints = [\"{app}\"]\n{}",
        collector.section("client", "sampling_ratio = 1.0\nexport_interval = \"10ms\"")
    ))
    .unwrap();
    let error = sidecar.reload(&config).await.unwrap_err();
    assert!(error.to_string().contains("[tracing]"), "{error}");
    let (_, text) = send(addr, "/", None).await;
    assert_eq!(echoed_traceparent(&text).2, "00", "still at ratio 0");
    sidecar.stop().await;
}

/// A caller whose `Connection` names `traceparent` (so that its own goes no further) does not
/// take away the one the span gives the next hop.
#[tokio::test]
async fn a_connection_header_naming_traceparent_leaves_the_spans_traceparent() {
    let (app, _) = echo_app().await;
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
         [tracing]\notlp_endpoint = \"http://{nobody}\"\n"
    );
    let sidecar = Sidecar::start(&Config::parse(&config).unwrap(), None)
        .await
        .unwrap();
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = Request::builder()
        .uri(format!("http://{}/", outbound_addr(&sidecar)))
        .header("traceparent", caller)
        .header("connection", "traceparent")
        .body(full(""))
        .unwrap();
    let echoed = text(timeout(STEP, http1().request(req)).await.unwrap().unwrap()).await;
    let (trace, _, _) = echoed_traceparent(&echoed);
    assert_ne!(
        trace, "0af7651916cd43dd8448eb211c80319c",
        "the caller's was hop-by-hop"
    );
    sidecar.stop().await;
}

/// An address on 127.0.0.1 that refuses connections for as long as the socket lives: bound
/// and never listening, so no other test's server can take the port either (a listener bound
/// and dropped let one take it, and answer 503, once in CI).
fn refusing_address() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// A collector that is down (nothing listens), or one that takes connections and never
/// answers: requests are served as if tracing were off, and the lost spans are counted.
#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_drops_are_counted() {
    let metrics = recorder();
    let (app, hits) = echo_app().await;
    let (_held, refused) = refusing_address();
    // Accepts, holds every connection open, never reads or answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = black_hole.accept().await {
            held.push(tcp);
        }
    });
    const REQUESTS: u64 = 20;
    const QUEUE: u64 = 4;
    const BATCH: u64 = 2;
    for (collector, lost_as) in [(refused, "export-failed"), (silent, "queue-full")] {
        let config = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
             [tracing]\notlp_endpoint = \"http://{collector}\"\nqueue_size = {QUEUE}\n\
             batch_size = {BATCH}\nexport_interval = \"10ms\"\nexport_timeout = \"60s\"\n"
        );
        let sidecar = Sidecar::start(&Config::parse(&config).unwrap(), Some(metrics.clone()))
            .await
            .unwrap();
        let admin = sidecar.bound.admin.unwrap();
        let scrape = async || {
            let req = Request::builder()
                .uri(format!("http://{admin}/metrics"))
                .body(full(""))
                .unwrap();
            text(timeout(STEP, http1().request(req)).await.unwrap().unwrap()).await
        };
        // Counters are shared by the sidecars of this test process: count from here.
        let dropped =
            async |reason: &str| counter(&scrape().await, "sidecar_spans_dropped_total", reason);
        let (before_all, before) = (dropped("").await, dropped(lost_as).await);
        let served = hits.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..REQUESTS {
            // An export that blocked a request would hold it for the export timeout (60 s).
            let (status, _) = timeout(
                Duration::from_secs(5),
                send(outbound_addr(&sidecar), "/", None),
            )
            .await
            .expect("a request is not held up by the collector");
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst) - served,
            REQUESTS as usize
        );
        // Refused: every span is lost, to failed exports (at least one) or to the queue
        // filling while they fail. Silent: the exporter waits on its first batch, the queue
        // fills, and the rest are dropped at once.
        let (lost, by_reason) = match lost_as {
            "export-failed" => (REQUESTS, 1),
            _ => (REQUESTS - QUEUE - BATCH, REQUESTS - QUEUE - BATCH),
        };
        assert!(
            eventually(async || {
                dropped("").await - before_all >= lost
                    && dropped(lost_as).await - before >= by_reason
            })
            .await,
            "{lost_as}: {}",
            scrape().await
        );
        drop(sidecar);
    }
}

#[test]
fn tracing_config_errors_name_the_field_and_line() {
    let text =
        "[tracing]\notlp_endpoint = \"127.0.0.1:4318\"\nsampling_ratio = 1.5\nqueue_size = 0\n";
    let errors = Config::parse(text).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = errors
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [
            ("tracing.otlp_endpoint", Some(2)),
            ("tracing.sampling_ratio", Some(3)),
            ("tracing.queue_size", Some(4)),
        ],
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .contains("1.5 is not a ratio from 0 to 1"),
        "{errors}"
    );

    for (endpoint, message) in [
        ("https://collector:4318/v1/traces", "https is not supported"),
        ("http:///v1/traces", "not a URL"),
        ("not a url", "not a URL"),
        ("ftp://collector/v1/traces", "not an http:// URL"),
    ] {
        let text = format!("[tracing]\notlp_endpoint = \"{endpoint}\"\n");
        let errors = Config::parse(&text).unwrap_err();
        assert_eq!(errors.errors[0].field, "tracing.otlp_endpoint", "{errors}");
        assert!(errors.to_string().contains(message), "{endpoint}: {errors}");
    }
    let errors = Config::parse("[tracing]\nsampling_ratio = 0.5\n").unwrap_err();
    assert!(errors.to_string().contains("otlp_endpoint"), "{errors}");
    let errors = Config::parse("[tracing]\notlp_endpoint = \"http://c\"\nratio = 1\n").unwrap_err();
    assert!(
        errors.to_string().contains("unknown field `ratio`"),
        "{errors}"
    );
}
