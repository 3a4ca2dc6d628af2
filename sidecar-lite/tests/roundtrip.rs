//! Round trips on 127.0.0.1: client -> outbound sidecar -> mTLS -> inbound sidecar -> app.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use bytes::Bytes;
use common::{grpc::grpc_request, *};
use futures::stream;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use sidecar_lite::Config;
use std::{sync::atomic::Ordering, time::Duration};
use tokio::time::timeout;

fn request_to(path: &Path, uri: &str) -> Request<BoxBody> {
    Request::builder()
        .uri(format!("http://{}{uri}", outbound_addr(&path.outbound)))
        .header("host", "orders.shop")
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn get_goes_through_both_sidecars_with_the_forwarding_headers() {
    let (app, hits) = echo_app().await;
    let path = path_to(app, "get").await;
    let response = timeout(STEP, http1().request(request_to(&path, "/orders/7")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = text(response).await;
    assert!(text.starts_with("GET /orders/7 HTTP/1.1\n"), "{text}");
    assert!(
        text.contains("host: orders.shop\n"),
        "the Host is preserved: {text}"
    );
    assert!(
        text.contains("x-forwarded-for: 127.0.0.1, 127.0.0.1\n"),
        "{text}"
    );
    assert!(
        text.contains("traceparent: 00-"),
        "a trace is started: {text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    path.outbound.stop().await;
    path.inbound.stop().await;
}

#[tokio::test]
async fn a_traceparent_from_the_app_is_passed_on() {
    let (app, _) = echo_app().await;
    let path = path_to(app, "trace").await;
    let mut req = request_to(&path, "/");
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    req.headers_mut()
        .insert("traceparent", trace.parse().unwrap());
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert!(
        text(response)
            .await
            .contains(&format!("traceparent: {trace}\n"))
    );
}

#[tokio::test]
async fn post_with_a_body_and_a_chunked_streaming_body() {
    let (app, _) = echo_app().await;
    let path = path_to(app, "post").await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/orders", outbound_addr(&path.outbound)))
        .body(full("{\"item\":42}"))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    let text_body = text(response).await;
    assert!(text_body.starts_with("POST /orders"), "{text_body}");
    assert!(text_body.ends_with("body: {\"item\":42}"), "{text_body}");

    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = ["one,", "two,", "three"]
        .into_iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    let body = StreamBody::new(stream::iter(chunks))
        .map_err(Into::into)
        .boxed_unsync();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/stream", outbound_addr(&path.outbound)))
        .body(body)
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert!(text(response).await.ends_with("body: one,two,three"));
}

/// HTTP/1.1 trailers (RFC 9112 section 7.1.2), which the client asked for with `TE: trailers`,
/// cross both sidecars, HTTP/2 between them: `Trailer` is an end-to-end header, and hyper sends
/// only the trailer fields it declares.
#[tokio::test]
async fn http1_trailers_the_client_asks_for_cross_both_sidecars() {
    let (app, _) = app(|req: Request<hyper::body::Incoming>| async move {
        let asked = req.headers().get("te").cloned();
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"payload"))),
            Ok(Frame::trailers(
                [(
                    http::HeaderName::from_static("x-checksum"),
                    http::HeaderValue::from_static("abc123"),
                )]
                .into_iter()
                .collect(),
            )),
        ];
        let mut response = Response::new(
            StreamBody::new(stream::iter(frames))
                .map_err(Into::into)
                .boxed_unsync(),
        );
        response
            .headers_mut()
            .insert("trailer", "x-checksum".parse().unwrap());
        if let Some(te) = asked {
            response.headers_mut().insert("x-te-seen", te);
        }
        response
    })
    .await;
    let path = path_to(app, "trailers").await;
    let req = Request::builder()
        .uri(format!("http://{}/report", outbound_addr(&path.outbound)))
        .header("te", "trailers")
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(response.headers()["x-te-seen"], "trailers");
    assert_eq!(response.headers()["trailer"], "x-checksum");
    let body = timeout(STEP, response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = body.trailers().cloned().expect("the trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(body.to_bytes(), "payload");
}

#[tokio::test]
async fn http2_from_the_app_with_prior_knowledge() {
    let (app, _) = echo_app().await;
    let path = path_to(app, "h2").await;
    let req = Request::builder()
        .uri(format!("http://{}/h2", outbound_addr(&path.outbound)))
        .version(http::Version::HTTP_2)
        .body(full("over h2c"))
        .unwrap();
    let response = timeout(STEP, http2().request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let text = text(response).await;
    assert!(text.starts_with("GET /h2"), "{text}");
    assert!(text.ends_with("body: over h2c"), "{text}");
}

/// A gRPC-like app: replies with `messages` data frames, then trailers with grpc-status 0.
async fn grpc_app(messages: usize) -> std::net::SocketAddr {
    app(
        move |req: hyper::Request<hyper::body::Incoming>| async move {
            assert_eq!(
                req.version(),
                http::Version::HTTP_2,
                "gRPC reaches the app over h2c"
            );
            let _ = req.into_body().collect().await;
            let mut frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
                (0..messages)
                    .map(|i| Ok(Frame::data(Bytes::from(format!("message {i};")))))
                    .collect();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            frames.push(Ok(Frame::trailers(trailers)));
            let mut response = Response::new(StreamBody::new(stream::iter(frames)).boxed_unsync());
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
        },
    )
    .await
    .0
}

async fn grpc_call(path: &Path) -> (String, Option<http::HeaderMap>) {
    let req = grpc_request(outbound_addr(&path.outbound), "/shop.Orders/List");
    let response = timeout(STEP, http2().request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (
        String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    )
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_keep_their_trailers() {
    for (messages, expected) in [(1, "message 0;"), (3, "message 0;message 1;message 2;")] {
        let app = grpc_app(messages).await;
        let path = path_to(app, "grpc").await;
        let (body, trailers) = grpc_call(&path).await;
        assert_eq!(body, expected);
        assert_eq!(trailers.expect("trailers arrive")["grpc-status"], "0");
    }
}

#[tokio::test]
async fn a_slow_app_gives_504_from_the_outbound_sidecar() {
    let (app, _) = common::app(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        hyper::Response::new(full("too late"))
    })
    .await;
    let certs = Certs::new("slow");
    let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe("frontend")], "").await;
    let outbound = outbound_sidecar(
        &certs,
        "frontend",
        &[inbound.bound.inbound.unwrap()],
        "orders",
        "timeout = \"300ms\"",
    )
    .await;
    let response = get(format!("http://{}/slow", outbound_addr(&outbound))).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()["x-sidecar-error"], "timeout");
    assert_eq!(
        text(response).await,
        "gateway timeout: the upstream did not answer in time\n"
    );
}

#[tokio::test]
async fn a_peer_not_on_the_allow_list_gets_403() {
    let (app, hits) = echo_app().await;
    let certs = Certs::new("authz");
    let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe("admin")], "").await;
    let outbound = outbound_sidecar(
        &certs,
        "frontend",
        &[inbound.bound.inbound.unwrap()],
        "orders",
        "",
    )
    .await;
    let response = get(format!("http://{}/orders", outbound_addr(&outbound))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["x-sidecar-error"], "unauthorized");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the app never sees the request"
    );
}

#[tokio::test]
async fn the_client_rejects_a_server_with_the_wrong_identity() {
    let (app, hits) = echo_app().await;
    let certs = Certs::new("wrong-server");
    let inbound = inbound_sidecar(&certs, "orders", app, &[spiffe("frontend")], "").await;
    // The route expects "payments", but "orders" answers.
    let outbound = outbound_sidecar(
        &certs,
        "frontend",
        &[inbound.bound.inbound.unwrap()],
        "payments",
        "",
    )
    .await;
    let response = get(format!("http://{}/orders", outbound_addr(&outbound))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-sidecar-error"], "connect");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// With `[identity]`, a route to a service outside the mesh speaks plaintext only when it says
/// so.
#[tokio::test]
async fn a_route_outside_the_mesh_speaks_plaintext_when_it_says_so() {
    let (app, hits) = echo_app().await;
    let certs = Certs::new("plaintext-route");
    let route = |plaintext: &str| {
        format!(
            "{}\n[[outbound]]\nname = \"legacy\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n{plaintext}\n",
            certs.identity("frontend")
        )
    };
    let refused = Config::parse(&route("")).unwrap_err().to_string();
    assert!(
        refused.contains("`outbound[0].server_identity`")
            && refused.contains("set `plaintext = true`"),
        "{refused}"
    );
    // Nor does a config that skipped `Config::parse`'s checks go out in plaintext unasked.
    let unchecked: Config =
        toml::from_str(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{}", route(""))).unwrap();
    let Err(error) = sidecar_lite::Sidecar::start(&unchecked, None).await else {
        panic!("a mesh route without server_identity started");
    };
    assert!(
        error.to_string().contains("or set `plaintext = true`"),
        "{error}"
    );

    let sidecar = sidecar(&route("plaintext = true")).await;
    let response = get(format!("http://{}/legacy", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.starts_with("GET /legacy HTTP/1.1"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn plaintext_callers_are_served_only_when_anonymous_callers_are_allowed() {
    let (app, hits) = echo_app().await;
    let inbound = |anonymous: bool| {
        format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nmtls = \"disabled\"\nallow_anonymous = {anonymous}\n"
        )
    };
    for (anonymous, expected) in [(false, StatusCode::FORBIDDEN), (true, StatusCode::OK)] {
        let sidecar = sidecar(&inbound(anonymous)).await;
        let response = get(format!("http://{}/plain", sidecar.bound.inbound.unwrap())).await;
        assert_eq!(response.status(), expected, "allow_anonymous = {anonymous}");
        sidecar.stop().await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_app_learns_the_verified_caller_and_nothing_a_caller_forged() {
    // Echoes every identity header it is given, and claims to be the sidecar.
    let (app, _) = app(|req: Request<hyper::body::Incoming>| async move {
        let mut seen = String::new();
        for (name, value) in req.headers() {
            let name = name.as_str();
            if name == "x-forwarded-client-cert"
                || name == "l5d-client-id"
                || name.starts_with("x-sidecar-")
            {
                seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
            }
        }
        let mut response = Response::new(full(seen));
        response
            .headers_mut()
            .insert("x-sidecar-error", "breaker-open".parse().unwrap());
        response
    })
    .await;
    let path = path_to(app, "identity-headers").await;
    let mut request = request_to(&path, "/whoami");
    for (name, value) in [
        (
            "x-forwarded-client-cert",
            "By=spiffe://example.org/ns/shop/sa/orders;URI=spiffe://example.org/ns/ops/sa/admin",
        ),
        (
            "l5d-client-id",
            "admin.ops.serviceaccount.identity.linkerd.cluster.local",
        ),
        ("x-sidecar-admin", "drain"),
        ("x-sidecar-peer", "spiffe://example.org/ns/ops/sa/admin"),
    ] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let response = timeout(STEP, http1().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("x-sidecar-error").is_none(),
        "the app's own flag does not pass for the sidecar's"
    );
    assert_eq!(
        text(response).await,
        format!(
            "x-forwarded-client-cert: By={};URI={}\n",
            spiffe("orders"),
            spiffe("frontend")
        ),
        "only what the certificate proves"
    );
}

#[tokio::test]
async fn the_tls_server_name_comes_from_the_route_never_from_the_callers_host() {
    let (app, hits) = echo_app().await;
    let path = path_to(app, "server-name").await;
    // Not a DNS name (an underscore), and in clear on the wire if it were sent as SNI: it
    // used to decide the handshake's server name, and failed it with a 502.
    let mut request = request_to(&path, "/orders/7");
    request
        .headers_mut()
        .insert("host", "orders_v2.shop".parse().unwrap());
    let response = timeout(STEP, http1().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("host: orders_v2.shop\n"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Between the sidecars the route's `endpoint_protocol` is spoken: HTTP/2 by default (offered
/// first by ALPN, and taken by the peer), HTTP/1.1 or HTTP/2 alone when set. The inbound
/// sidecar's access log says what came in; the app is spoken to as before.
#[tokio::test]
async fn the_protocol_between_the_sidecars_is_the_routes_endpoint_protocol() {
    for (setting, between) in [
        ("", "HTTP/2"),
        ("endpoint_protocol = \"http1\"", "HTTP/1.1"),
        ("endpoint_protocol = \"http2\"", "HTTP/2"),
    ] {
        let certs = Certs::new("endpoint-protocol");
        let (app, hits) = echo_app().await;
        let log = certs.dir.join("inbound.log");
        let access_log = format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
            log.display()
        );
        let inbound =
            inbound_sidecar(&certs, "orders", app, &[spiffe("frontend")], &access_log).await;
        let outbound = frontend_to_orders(&certs, &inbound, setting).await;
        let response = get(format!("http://{}/orders", outbound_addr(&outbound))).await;
        assert_eq!(response.status(), StatusCode::OK, "{setting}");
        assert!(
            text(response).await.starts_with("GET /orders HTTP/1.1\n"),
            "{setting}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{setting}");
        let mut line = serde_json::Value::Null;
        let logged = eventually(async || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match text.lines().next() {
                Some(first) => {
                    line = serde_json::from_str(first).unwrap();
                    true
                }
                None => false,
            }
        })
        .await;
        assert!(logged, "{setting}: no line in {}", log.display());
        assert_eq!(line["protocol"], between, "{setting}");
    }
}

/// A plaintext route speaks HTTP/1.1 to its endpoint, but for gRPC, unless told to speak
/// HTTP/2 (with prior knowledge) to everything.
#[tokio::test]
async fn a_plaintext_route_speaks_http2_to_its_endpoint_when_told_to() {
    let (app, _) = echo_app().await;
    for (setting, spoken) in [
        ("", "HTTP/1.1"),
        ("endpoint_protocol = \"http1\"", "HTTP/1.1"),
        ("endpoint_protocol = \"http2\"", "HTTP/2.0"),
    ] {
        let sidecar = sidecar(&format!(
            "[[outbound]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n{setting}\n"
        ))
        .await;
        let response = get(format!("http://{}/orders", outbound_addr(&sidecar))).await;
        assert_eq!(response.status(), StatusCode::OK, "{setting}");
        let echoed = text(response).await;
        assert!(
            echoed.starts_with(&format!("GET /orders {spoken}\n")),
            "{setting}: {echoed}"
        );
    }
}

/// An HTTP/2 upstream that allows one stream at a time, with one request held on it: the next
/// request gets a connection of its own instead of waiting in the first one's queue (hyper
/// holds a request past the peer's limit until a stream ends, however long that is).
#[tokio::test]
async fn an_http2_upstream_at_its_stream_limit_gets_another_connection() {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let holding = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (counted, held, entered) = (connections.clone(), release.clone(), holding.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (held, entered) = (held.clone(), entered.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (held, entered) = (held.clone(), entered.clone());
                        async move {
                            if req.uri().path() == "/hold" {
                                entered.fetch_add(1, Ordering::SeqCst);
                                held.notified().await;
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(full("done")))
                        }
                    });
                let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                builder.http2().max_concurrent_streams(1);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    let sidecar = sidecar(&format!(
        "[runtime]\nworker_threads = 1\n[[outbound]]\nname = \"h2\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"{upstream}\"]\nendpoint_protocol = \"http2\"\n"
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    // A first answer: the connection has read the peer's SETTINGS (they come before it).
    assert_eq!(
        get(format!("http://{addr}/first")).await.status(),
        StatusCode::OK
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let hold = Request::builder()
        .uri(format!("http://{addr}/hold"))
        .body(full(""))
        .unwrap();
    let held = tokio::spawn(http1().request(hold));
    assert!(
        eventually(async || holding.load(Ordering::SeqCst) == 1).await,
        "the held request reached the upstream"
    );
    let quick = get(format!("http://{addr}/quick")).await;
    assert_eq!(quick.status(), StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    release.notify_one();
    let held = timeout(STEP, held).await.unwrap().unwrap().unwrap();
    assert_eq!(held.status(), StatusCode::OK);
}
