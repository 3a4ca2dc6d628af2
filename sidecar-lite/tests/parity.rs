//! Library mode and sidecar mode decide alike: each scenario is a route section, a script of
//! what the upstream does call by call, and a sequence of requests, run twice, through
//! `sidecar_lite::outbound` in this process (library mode, over a real socket to the scripted
//! upstream) and through the `sidecar-lite` binary with the same section and a fresh copy of
//! the same upstream. For each request it compares what the upstream saw (attempts, the
//! `x-retry-attempt` and deadline headers, the body), what the caller got (status,
//! `x-sidecar-error`, gRPC status) and the endpoint's breaker state after it (from the
//! `resilience_breaker_state` gauge in library mode, `/breakers` in sidecar mode). Deadline
//! headers may differ by [`DEADLINE_TOLERANCE_MS`]: the sidecar's hop takes time.
//!
//! The outcome of every scenario in both modes is the matrix in `tests/parity/matrix.md`,
//! which this suite writes with `PARITY_UPDATE=1` and otherwise checks, and which the
//! workspace README shows.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use bytes::Bytes;
use common::{process::SidecarProcess, recorder};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use sidecar_lite::{Config, local_reply};
use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{net::TcpListener, time::timeout};
use tower::ServiceExt;

/// How far apart the deadline headers the upstream sees in the two modes may be.
const DEADLINE_TOLERANCE_MS: i64 = 150;

/// What the upstream does with one call.
#[derive(Debug, Clone, Copy)]
enum Step {
    Status(u16),
    /// A status with one header (`Retry-After`, say).
    With(u16, &'static str, &'static str),
    /// A gRPC answer: HTTP 200 and this `grpc-status`, in the head (trailers-only) or in
    /// trailers (after one message when it is OK; at once otherwise, as servers fail a call).
    Grpc(u16, Where),
    /// Never answers.
    Hang,
    /// Closes the connection without an answer.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Head,
    Trailers,
}

/// One request of a scenario.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    grpc: bool,
    body: usize,
    headers: &'static [(&'static str, &'static str)],
    /// Wait this long before sending it (to let a breaker's open time run out).
    after_ms: u64,
}

fn get() -> Call {
    Call {
        method: Method::GET,
        grpc: false,
        body: 0,
        headers: &[],
        after_ms: 0,
    }
}

fn gets(n: usize) -> Vec<Call> {
    vec![get(); n]
}

struct Scenario {
    name: &'static str,
    /// Keys of the `[[outbound]]` route (and its sub-tables), after `endpoints`.
    route: &'static str,
    /// What the upstream does, call by call; the last step repeats. Empty: nothing listens.
    script: &'static [Step],
    /// Upstreams, each with the script: more than one puts the balancer in front.
    endpoints: usize,
    calls: Vec<Call>,
}

/// What the upstream saw of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    retry_attempt: Option<String>,
    deadline: Option<(String, i64)>,
    body: usize,
}

/// What one request came to, in one mode.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    flag: Option<String>,
    grpc_status: Option<String>,
    upstream: Vec<Seen>,
    breaker: String,
}

impl Outcome {
    fn summary(&self) -> String {
        let mut text = self.status.to_string();
        if let Some(grpc) = &self.grpc_status {
            let _ = write!(text, " grpc {grpc}");
        }
        if let Some(flag) = &self.flag {
            let _ = write!(text, " {flag}");
        }
        let _ = write!(text, ", {} sent", self.upstream.len());
        if self.breaker.split(" and ").any(|state| state != "closed") {
            let _ = write!(text, ", breaker {}", self.breaker);
        }
        text
    }

    /// The differences from `other`, if any.
    fn differences(&self, other: &Self) -> Vec<String> {
        let mut found = Vec::new();
        if (self.status, &self.flag, &self.grpc_status)
            != (other.status, &other.flag, &other.grpc_status)
        {
            found.push(format!("answer {} vs {}", self.summary(), other.summary()));
        }
        if self.upstream.len() != other.upstream.len() {
            found.push(format!(
                "attempts {} vs {}",
                self.upstream.len(),
                other.upstream.len()
            ));
        }
        for (a, b) in self.upstream.iter().zip(&other.upstream) {
            if a.retry_attempt != b.retry_attempt || a.body != b.body {
                found.push(format!("upstream saw {a:?} vs {b:?}"));
            }
            match (&a.deadline, &b.deadline) {
                (None, None) => {}
                (Some((x, ms_a)), Some((y, ms_b)))
                    if x == y && (ms_a - ms_b).abs() <= DEADLINE_TOLERANCE_MS => {}
                _ => found.push(format!("deadline {:?} vs {:?}", a.deadline, b.deadline)),
            }
        }
        if self.breaker != other.breaker {
            found.push(format!("breaker {} vs {}", self.breaker, other.breaker));
        }
        found
    }
}

fn scenarios() -> Vec<Scenario> {
    use Step::*;
    let post = Call {
        method: Method::POST,
        ..get()
    };
    let put = |body| Call {
        method: Method::PUT,
        body,
        ..get()
    };
    let grpc = Call {
        method: Method::POST,
        grpc: true,
        ..get()
    };
    vec![
        Scenario {
            name: "a 200 goes through once",
            route: "",
            script: &[Status(200)],
            endpoints: 1,
            calls: gets(2),
        },
        Scenario {
            name: "a 500 is not retried by default",
            route: "",
            script: &[Status(500)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "gateway-error: a 503 is retried",
            route: "",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "5xx: two 500s are retried",
            route: "[outbound.retry]\non = [\"5xx\"]\n",
            script: &[Status(500), Status(500), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "retriable-status-codes: a 409 is retried",
            route: "[outbound.retry]\non = [\"retriable-status-codes\"]\nretriable_status_codes = [409]\n",
            script: &[Status(409), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "attempts cap the retries",
            route: "[outbound.retry]\nattempts = 3\n",
            script: &[Status(503)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "reset: a closed connection is retried",
            route: "",
            script: &[Reset, Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "connect-failure: nothing listens",
            route: "",
            script: &[],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "a POST is not retried",
            route: "",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![post.clone()],
        },
        Scenario {
            name: "a POST with an Idempotency-Key is retried",
            route: "",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![Call {
                headers: &[("idempotency-key", "k1")],
                ..post.clone()
            }],
        },
        Scenario {
            name: "retry_any_method retries a POST",
            route: "[outbound.retry]\nretry_any_method = true\n",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![post.clone()],
        },
        Scenario {
            name: "Retry-After: 0 is waited out",
            route: "",
            script: &[With(503, "retry-after", "0"), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "a Retry-After past max_retry_after returns at once",
            route: "[outbound.retry]\nmax_retry_after = \"100ms\"\n",
            script: &[With(503, "retry-after", "5"), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "the budget runs out",
            route: "[outbound.retry]\nbudget = { ratio = 0.0, min_per_second = 1, ttl = \"1s\" }\n",
            script: &[Status(503)],
            endpoints: 1,
            calls: gets(2),
        },
        Scenario {
            name: "per-try timeout: a hung attempt is retried",
            route: "[outbound.retry]\nper_try_timeout = \"100ms\"\n",
            script: &[Hang, Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "total timeout: a hung upstream gets 504",
            route: "timeout = \"200ms\"\n",
            script: &[Hang],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "the total timeout cuts the retries short",
            route: "timeout = \"250ms\"\n[outbound.retry]\nper_try_timeout = \"100ms\"\nbackoff = { base = \"1ms\", max = \"1ms\" }\n",
            script: &[Hang],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "a request the app starts is told its deadline",
            route: "timeout = \"2s\"\n",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: gets(1),
        },
        Scenario {
            name: "the caller's shorter deadline goes on",
            route: "timeout = \"2s\"\n",
            script: &[Status(200)],
            endpoints: 1,
            calls: vec![Call {
                headers: &[("x-request-timeout-ms", "500")],
                ..get()
            }],
        },
        Scenario {
            name: "propagate_deadline = false passes the caller's header on",
            route: "[outbound.timeout]\ntimeout = \"2s\"\npropagate_deadline = false\n",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![Call {
                headers: &[("x-request-timeout-ms", "500")],
                ..get()
            }],
        },
        Scenario {
            name: "a body within the replay cap is sent again",
            route: "",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![put(1024)],
        },
        Scenario {
            name: "a body over the replay cap goes once",
            route: "[outbound.retry]\nmax_replay_body = \"1KiB\"\n",
            script: &[Status(503), Status(200)],
            endpoints: 1,
            calls: vec![put(4096)],
        },
        Scenario {
            name: "the breaker opens and fails fast",
            route: "[outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"60s\"\n",
            script: &[Status(500)],
            endpoints: 1,
            calls: gets(4),
        },
        Scenario {
            name: "a half-open probe that succeeds closes the breaker",
            route: "[outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"200ms\"\njitter = 0.0\nhalf_open_probes = 1\n",
            script: &[Status(500), Status(500), Status(200)],
            endpoints: 1,
            calls: vec![
                get(),
                get(),
                get(),
                Call {
                    after_ms: 300,
                    ..get()
                },
                get(),
            ],
        },
        Scenario {
            name: "a half-open probe that fails opens it again",
            route: "[outbound.breaker]\nconsecutive_failures = 2\nopen_for = \"200ms\"\njitter = 0.0\nhalf_open_probes = 1\n",
            script: &[Status(500)],
            endpoints: 1,
            calls: vec![
                get(),
                get(),
                Call {
                    after_ms: 300,
                    ..get()
                },
                get(),
            ],
        },
        Scenario {
            name: "every endpoint's breaker open: fail fast",
            route: "[outbound.breaker]\nconsecutive_failures = 1\nopen_for = \"60s\"\n\
                    max_ejection_percent = 100.0\n",
            script: &[Status(500)],
            endpoints: 2,
            calls: gets(3),
        },
        Scenario {
            name: "the ejection cap keeps one of two failing endpoints in",
            route: "[outbound.breaker]\nconsecutive_failures = 1\nopen_for = \"60s\"\n",
            script: &[Status(500)],
            endpoints: 2,
            calls: gets(3),
        },
        Scenario {
            name: "gRPC: UNAVAILABLE in the head is retried under unavailable",
            route: "[outbound.retry]\non = [\"unavailable\"]\n",
            script: &[Grpc(14, Where::Head), Grpc(0, Where::Head)],
            endpoints: 1,
            calls: vec![grpc.clone()],
        },
        Scenario {
            name: "gRPC: UNAVAILABLE in the trailers is retried under unavailable",
            route: "[outbound.retry]\non = [\"unavailable\"]\n",
            script: &[Grpc(14, Where::Trailers), Grpc(0, Where::Trailers)],
            endpoints: 1,
            calls: vec![grpc.clone()],
        },
        Scenario {
            name: "gRPC: a timeout is DEADLINE_EXCEEDED, and grpc-timeout goes on",
            route: "timeout = \"200ms\"\n",
            script: &[Hang],
            endpoints: 1,
            calls: vec![Call {
                headers: &[("grpc-timeout", "150m")],
                ..grpc.clone()
            }],
        },
    ]
}

/// The scripted upstream: serves `script` on 127.0.0.1 (HTTP/1.1 and h2c), recording what
/// each call carried.
async fn upstream(script: &'static [Step]) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let headers = req.headers().clone();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map_or(0, |b| b.to_bytes().len());
                        let step = {
                            let mut log = log.lock().unwrap();
                            log.push(seen_of(&headers, body));
                            script[(log.len() - 1).min(script.len() - 1)]
                        };
                        answer(step).await
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn seen_of(headers: &HeaderMap, body: usize) -> Seen {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let deadline = text("grpc-timeout")
        .map(|v| {
            let ms = v[..v.len() - 1].parse::<i64>().unwrap();
            let ms = match v.as_bytes()[v.len() - 1] {
                b'm' => ms,
                b'u' => ms / 1000,
                b'n' => ms / 1_000_000,
                b'S' => ms * 1000,
                b'M' => ms * 60_000,
                _ => ms * 3_600_000,
            };
            ("grpc-timeout".to_owned(), ms)
        })
        .or_else(|| {
            text("x-request-timeout-ms")
                .map(|v| ("x-request-timeout-ms".to_owned(), v.parse().unwrap()))
        });
    Seen {
        retry_attempt: text("x-retry-attempt"),
        deadline,
        body,
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

async fn answer(step: Step) -> Result<Response<Body>, &'static str> {
    let plain = |status: u16| {
        let mut response = Response::new(Full::new(Bytes::from_static(b"answer")).boxed_unsync());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    Ok(match step {
        Step::Status(status) => plain(status),
        Step::With(status, name, value) => {
            let mut response = plain(status);
            response.headers_mut().insert(name, value.parse().unwrap());
            response
        }
        Step::Grpc(code, Where::Head) => {
            let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response.headers_mut().insert("grpc-status", code.into());
            response
        }
        Step::Grpc(code, Where::Trailers) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", code.into());
            let mut frames = vec![Ok(Frame::trailers(trailers))];
            if code == 0 {
                frames.insert(0, Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))));
            }
            let mut response =
                Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync());
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
        }
        Step::Hang => std::future::pending().await,
        Step::Reset => return Err("closed without an answer"),
    })
}

fn request(uri: String, call: &Call) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(call.method.clone()).uri(uri);
    if call.grpc {
        builder = builder
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    for (name, value) in call.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(vec![b'x'; call.body])))
        .unwrap()
}

/// What a response came to: status, flag, and gRPC status from the head or the trailers.
async fn settle<B>(response: Response<B>) -> (u16, Option<String>, Option<String>)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let flag = header("x-sidecar-error");
    let head = header("grpc-status");
    let body = timeout(common::STEP, response.into_body().collect())
        .await
        .expect("the body within STEP")
        .expect("a body");
    let trailers = body
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    (status, flag, head.or(trailers))
}

fn route_config(
    route: &str,
    name: &str,
    listen: SocketAddr,
    endpoints: &[(SocketAddr, Arc<Mutex<Vec<Seen>>>)],
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|(a, _)| format!("\"{a}\"")).collect();
    format!(
        "[[outbound]]\nname = \"{name}\"\nlisten = \"{listen}\"\nendpoints = [{}]\n{route}",
        endpoints.join(", ")
    )
}

fn state_name(value: &str) -> String {
    match value {
        "0" => "closed",
        "1" => "open",
        "2" => "half-open",
        "3" => "forced-open",
        _ => "other",
    }
    .to_owned()
}

/// The upstreams of `scenario`, each with its record of what it saw.
async fn endpoints_of(scenario: &Scenario) -> Vec<(SocketAddr, Arc<Mutex<Vec<Seen>>>)> {
    let mut endpoints = Vec::new();
    for _ in 0..scenario.endpoints {
        endpoints.push(if scenario.script.is_empty() {
            // Bound, then released: nothing listens there.
            (common::process::free_addr(), Arc::default())
        } else {
            upstream(scenario.script).await
        });
    }
    endpoints
}

/// What the upstreams have seen so far, each.
fn seen_so_far(endpoints: &[(SocketAddr, Arc<Mutex<Vec<Seen>>>)]) -> Vec<usize> {
    endpoints
        .iter()
        .map(|(_, seen)| seen.lock().unwrap().len())
        .collect()
}

/// What the upstreams saw since `before`, all of them.
fn seen_since(endpoints: &[(SocketAddr, Arc<Mutex<Vec<Seen>>>)], before: &[usize]) -> Vec<Seen> {
    endpoints
        .iter()
        .zip(before)
        .flat_map(|((_, seen), &n)| seen.lock().unwrap()[n..].to_vec())
        .collect()
}

/// The breaker states of the endpoints, sorted: which endpoint the balancer chose is not
/// the same in two runs, what became of them is.
fn states(mut states: Vec<String>) -> String {
    states.sort();
    states.join(" and ")
}

/// Sends each call of `scenario` with `send` (its answer's status, flag and gRPC status), and
/// reads the endpoints' breaker states after it with `breakers`: what the two modes share.
async fn run_calls(
    scenario: &Scenario,
    endpoints: &[(SocketAddr, Arc<Mutex<Vec<Seen>>>)],
    mut send: impl AsyncFnMut(&Call) -> (u16, Option<String>, Option<String>),
    mut breakers: impl AsyncFnMut() -> Vec<String>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for call in &scenario.calls {
        tokio::time::sleep(Duration::from_millis(call.after_ms)).await;
        let before = seen_so_far(endpoints);
        let (status, flag, grpc_status) = send(call).await;
        outcomes.push(Outcome {
            status,
            flag,
            grpc_status,
            upstream: seen_since(endpoints, &before),
            breaker: states(breakers().await),
        });
    }
    outcomes
}

async fn run_library(index: usize, scenario: &Scenario) -> Vec<Outcome> {
    run_in_process(&format!("library-{index}"), scenario, "").await
}

/// Runs `scenario` through `sidecar_lite::outbound` in this process, its route named `name`,
/// with `extra` sections after the scenario's own.
async fn run_in_process(name: &str, scenario: &Scenario, extra: &str) -> Vec<Outcome> {
    let recorder = recorder();
    let endpoints = endpoints_of(scenario).await;
    let text = route_config(
        &format!("{}{extra}", scenario.route),
        name,
        "127.0.0.1:0".parse().unwrap(),
        &endpoints,
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let route = config.outbound_route(name).unwrap();
    let stack = sidecar_lite::outbound::<Full<Bytes>>(&config, route, None).unwrap();
    let send = async |call: &Call| {
        let req = request(format!("http://{}/parity", endpoints[0].0), call);
        let response = match timeout(common::STEP, stack.clone().oneshot(req))
            .await
            .expect("an answer within STEP")
        {
            Ok(response) => response,
            Err(error) => local_reply(&error, call.grpc),
        };
        settle(response).await
    };
    let breakers = async || {
        let rendered = recorder.render();
        endpoints
            .iter()
            .map(|(endpoint, _)| {
                let gauge = format!("resilience_breaker_state{{name=\"{name}/{endpoint}\"}} ");
                rendered
                    .lines()
                    .find_map(|line| line.strip_prefix(gauge.as_str()).map(state_name))
                    .unwrap_or_else(|| "closed".to_owned())
            })
            .collect()
    };
    run_calls(scenario, &endpoints, send, breakers).await
}

async fn run_sidecar(index: usize, scenario: &Scenario) -> Vec<Outcome> {
    let endpoints = endpoints_of(scenario).await;
    let listen = common::process::free_addr();
    let name = format!("sidecar-{index}");
    let sidecar = SidecarProcess::start(
        &format!("parity-{index}"),
        &route_config(scenario.route, &name, listen, &endpoints),
    )
    .await;
    let http1: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // gRPC needs HTTP/2 for its trailers, from the app to the sidecar too.
    let http2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let send = async |call: &Call| {
        let req = request(format!("http://{listen}/parity"), call);
        let client = if call.grpc { &http2 } else { &http1 };
        let response = timeout(common::STEP, client.request(req))
            .await
            .expect("an answer within STEP")
            .expect("a response from the sidecar");
        settle(response).await
    };
    let breakers = async || {
        let (_, breakers) = sidecar.get("/breakers").await;
        let breakers: serde_json::Value = serde_json::from_str(&breakers).unwrap();
        endpoints
            .iter()
            .map(|(endpoint, _)| {
                breakers
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["endpoint"] == endpoint.to_string())
                    .map_or("closed", |b| b["state"].as_str().unwrap())
                    .to_owned()
            })
            .collect()
    };
    run_calls(scenario, &endpoints, send, breakers).await
}

/// How two runs of one scenario differ, call by call (and in how many calls they made).
fn call_by_call(a: &[Outcome], b: &[Outcome]) -> Vec<String> {
    let mut found = Vec::new();
    if a.len() != b.len() {
        found.push(format!("{} calls vs {}", a.len(), b.len()));
    }
    for (n, (a, b)) in a.iter().zip(b).enumerate() {
        for difference in a.differences(b) {
            found.push(format!("request {}: {difference}", n + 1));
        }
    }
    found
}

/// A rate limit that never refuses any scenario's few calls: an optional layer that decides
/// nothing.
const RATE_LIMIT_THAT_NEVER_BITES: &str = "[outbound.rate_limit]\nrate = 100000\n";

/// A route of the usual shape (one endpoint, none of the optional layers) is built as a stack
/// of its own, without the levels that pass requests by absent layers; any optional layer
/// sends it to the general stack. Each scenario, in library mode, with and without a rate
/// limit that never bites: the two stacks must decide alike, call by call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_stack_and_the_general_stack_decide_alike() {
    let mut failures = Vec::new();
    for (index, scenario) in scenarios().iter().enumerate() {
        let plain = run_in_process(&format!("plain-{index}"), scenario, "").await;
        let general = run_in_process(
            &format!("general-{index}"),
            scenario,
            RATE_LIMIT_THAT_NEVER_BITES,
        )
        .await;
        assert_eq!(plain.len(), general.len(), "{}", scenario.name);
        for difference in call_by_call(&plain, &general) {
            failures.push(format!("{}, {difference}", scenario.name));
        }
    }
    assert!(
        failures.is_empty(),
        "the stacks differ:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_and_sidecar_mode_decide_alike() {
    let scenarios = scenarios();
    assert!(scenarios.len() >= 25, "{} scenarios", scenarios.len());
    let mut matrix = String::from(
        "| # | scenario | requests: library mode | requests: sidecar mode | same |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    let mut failures = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let library = run_library(index, scenario).await;
        let sidecar = run_sidecar(index, scenario).await;
        let differences = call_by_call(&library, &sidecar);
        let describe = |outcomes: &[Outcome]| {
            outcomes
                .iter()
                .map(Outcome::summary)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(
            matrix,
            "| {} | {} | {} | {} | {} |",
            index + 1,
            scenario.name,
            describe(&library),
            describe(&sidecar),
            if differences.is_empty() {
                "yes"
            } else {
                "**no**"
            }
        );
        if !differences.is_empty() {
            failures.push(format!("{}: {}", scenario.name, differences.join("; ")));
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity/matrix.md");
    if std::env::var_os("PARITY_UPDATE").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &matrix).unwrap();
    }
    assert!(
        failures.is_empty(),
        "the modes differ:\n{}\n\n{matrix}",
        failures.join("\n")
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        committed, matrix,
        "tests/parity/matrix.md is not what the suite finds; rerun with PARITY_UPDATE=1"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "<!-- parity matrix -->\n{matrix}<!-- end of parity matrix -->"
        )),
        "the README's \"Library or sidecar?\" section shows the matrix of tests/parity/matrix.md"
    );
}
