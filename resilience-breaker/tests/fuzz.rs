//! Fuzzing the breaker's response classification: [`Classify`] for `tower_http::classify`
//! classifiers, on its own and inside a [`CircuitBreaker`].
//!
//! cargo-fuzz needs a nightly toolchain, so this is a proptest harness that runs on stable:
//!
//! 1. every response in `tests/corpus/classify/` (the format is described at the top of
//!    `responses.txt`; each line states the expected verdicts) runs through the checks below;
//! 2. then proptest generates responses: any status from 100 to 999, any headers, with a
//!    `grpc-status` of any bytes.
//!
//! The checks: nothing panics; with `ServerErrorsAsFailures` a response is a failure exactly
//! when it is a 5xx, so a 2xx never is; with `GrpcErrorsAsFailures` a response without a
//! `grpc-status` in its head is a success (the crate's documented rule: what can only be
//! judged at the end of the body counts as a success), `grpc-status: 0` is a success, and any
//! other status of ASCII digits is a failure; and a breaker counts exactly the responses its
//! classifier calls failures.
//!
//! Case counts: a short run by default (CI); set `FUZZ_CASES=N` for N cases per property (the
//! long mode): `FUZZ_CASES=20000 cargo test -p resilience-breaker --all-features --test fuzz`.
//! A failing input that proptest finds belongs in the corpus, with the fix.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use proptest::prelude::*;
use resilience_breaker::{BreakerHandle, CircuitBreakerLayer, Classify, Policy, State};
use std::convert::Infallible;
use tower::{Layer, ServiceExt, service_fn};
use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures};

/// Cases per property: `FUZZ_CASES` when set, else `short`.
fn cases(short: u32) -> u32 {
    match std::env::var("FUZZ_CASES") {
        Ok(n) => n.parse().expect("FUZZ_CASES must be a whole number"),
        Err(_) => short,
    }
}

fn config(short: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(short),
        ..ProptestConfig::default()
    }
}

/// The lines of every file in `tests/corpus/classify/`, comments skipped.
fn corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/classify");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let lines: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(lines.len() > 10, "too few seeds");
    lines
}

fn response(status: u16, headers: &HeaderMap) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    *res.headers_mut() = headers.clone();
    res
}

/// Checks both classifiers on one response; returns their verdicts (`true`: failure).
fn check(status: u16, headers: &HeaderMap) -> (bool, bool) {
    let res = response(status, headers);
    let http = ServerErrorsAsFailures::new().is_failure(&res);
    let grpc = GrpcErrorsAsFailures::new().is_failure(&res);
    assert_eq!(http, (500..600).contains(&status), "{status} {headers:?}");
    if (200..300).contains(&status) {
        assert!(!http, "a 2xx is a success: {headers:?}");
    }
    match headers.get("grpc-status").map(HeaderValue::as_bytes) {
        // Judged at the end of the body: a success for the breaker.
        None => assert!(!grpc, "{status} {headers:?}"),
        Some(b"0") => assert!(!grpc, "{status} {headers:?}"),
        Some(code) if !code.is_empty() && code.iter().all(u8::is_ascii_digit) => {
            let fits = std::str::from_utf8(code).unwrap().parse::<i32>().is_ok();
            let zero = code.iter().all(|&b| b == b'0');
            assert_eq!(grpc, fits && !zero, "{status} {headers:?}");
        }
        // Anything else is tower-http's to judge; it must only not panic.
        Some(_) => {}
    }
    (http, grpc)
}

/// Sends `responses` through a breaker that opens only after `u32::MAX` consecutive failures,
/// and checks that it counted the ones its classifier calls failures.
fn check_breaker(responses: &[(u16, HeaderMap)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let handle = BreakerHandle::new("fuzz", Policy::consecutive_failures(u32::MAX)).unwrap();
        let layer =
            CircuitBreakerLayer::shared(handle.clone()).classify(ServerErrorsAsFailures::new());
        let mut trailing = 0;
        for (status, headers) in responses {
            let (status, headers) = (*status, headers.clone());
            let svc = layer.layer(service_fn(move |()| {
                let res = response(status, &headers);
                async move { Ok::<_, Infallible>(res) }
            }));
            svc.oneshot(()).await.unwrap();
            trailing = if (500..600).contains(&status) {
                trailing + 1
            } else {
                0
            };
            assert_eq!(handle.consecutive_failures(), trailing, "{responses:?}");
            assert_eq!(handle.state(), State::Closed);
        }
    });
}

/// Parses one corpus line: the response, and the expected verdicts.
fn parse_line(line: &str) -> (u16, HeaderMap, bool, bool) {
    let (fields, expected) = line
        .rsplit_once(" => ")
        .unwrap_or_else(|| panic!("no `=>` in {line:?}"));
    let mut fields = fields.split(" | ");
    let status = fields.next().unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for field in fields {
        let (name, value) = field
            .split_once(": ")
            .unwrap_or_else(|| panic!("{field:?}"));
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let verdict = |name: &str| match expected
        .split(", ")
        .find_map(|part| part.strip_prefix(name))
    {
        Some(" failure") => true,
        Some(" success") => false,
        other => panic!("{name}: {other:?} in {line:?}"),
    };
    (status, headers, verdict("http"), verdict("grpc"))
}

#[test]
fn classification_corpus() {
    let mut all = Vec::new();
    for line in corpus() {
        let (status, headers, http, grpc) = parse_line(&line);
        assert_eq!(check(status, &headers), (http, grpc), "{line}");
        all.push((status, headers));
    }
    check_breaker(&all);
}

/// Any byte a header value may hold: visible ASCII, space, tab, and every non-ASCII byte.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff]
}

/// Header values: mostly near what servers send, sometimes any bytes.
fn any_value(typical: Vec<&'static str>) -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        3 => proptest::sample::select(typical).prop_map(HeaderValue::from_static),
        2 => (0u64..100, proptest::option::of(proptest::sample::select(vec![" ", "+", "-", "0", "x", "\t"])))
            .prop_map(|(n, noise)| {
                HeaderValue::from_str(&format!("{}{n}", noise.unwrap_or(""))).unwrap()
            }),
        1 => "[0-9]{1,12}".prop_map(|s| HeaderValue::from_str(&s).unwrap()),
        1 => proptest::collection::vec(header_byte(), 0..12)
            .prop_map(|b| HeaderValue::from_bytes(&b).unwrap()),
    ]
}

fn any_headers() -> impl Strategy<Value = HeaderMap> {
    (
        proptest::option::of(any_value(vec![
            "application/grpc",
            "application/grpc+proto",
            "text/plain",
        ])),
        proptest::option::weighted(
            0.7,
            any_value(vec![
                "0", "1", "2", "4", "13", "14", "16", "+14", " 14", "-1",
            ]),
        ),
        proptest::option::of(any_value(vec!["oops", "%20"])),
    )
        .prop_map(|(content_type, grpc_status, grpc_message)| {
            let mut headers = HeaderMap::new();
            if let Some(v) = content_type {
                headers.insert("content-type", v);
            }
            if let Some(v) = grpc_status {
                headers.insert("grpc-status", v);
            }
            if let Some(v) = grpc_message {
                headers.insert("grpc-message", v);
            }
            headers
        })
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn classifiers_follow_the_documented_rules(status in 100u16..=999, headers in any_headers()) {
        check(status, &headers);
    }
}

proptest! {
    // Each case builds a runtime and sends a few requests: fewer of them.
    #![proptest_config(config(200))]

    #[test]
    fn a_breaker_counts_what_its_classifier_calls_failures(
        responses in proptest::collection::vec((100u16..=999, any_headers()), 1..20),
    ) {
        check_breaker(&responses);
    }
}
