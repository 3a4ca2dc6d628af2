//! Fuzzing the `Retry-After` parser ([`retry_after::parse`]) and the HTTP retry policy's
//! response classification ([`HttpPolicy`] with [`RetryOn`]).
//!
//! cargo-fuzz needs a nightly toolchain, so this is a proptest harness that runs on stable:
//!
//! 1. every seed in `tests/corpus/retry_after/` (one value per line, raw bytes; lines starting
//!    with `# ` are comments) and every outcome in `tests/corpus/classify/` (the format is
//!    described at the top of `cases.txt`; each line also states the expected decision) runs
//!    through the same checks as the generated inputs;
//! 2. then proptest generates inputs.
//!
//! `Retry-After`: nothing panics, for any bytes and any `now` (the epoch, before it, far in the
//! future); delay-seconds read back exactly; an HTTP date (IMF-fixdate, RFC 850 or asctime)
//! gives the delay from `now` to it, to the second, and zero when it has passed.
//!
//! Classification, for any status from 100 to 999, any method, any headers (`grpc-status`
//! with any bytes), with or without `Idempotency-Key`, and any set of conditions: nothing
//! panics; a request that is not idempotent is retried after a response only when it is a gRPC
//! call that got a listed gRPC status, and after an error only when it never reached the
//! server (`connect-failure`); a 2xx (or any status not listed) of a plain HTTP response is
//! never retried; a `grpc-status` counts only when it is ASCII digits; the decision agrees with
//! a model written from [`HttpPolicy`]'s and [`RetryOn`]'s documentation.
//!
//! Case counts: a short run by default (CI); set `FUZZ_CASES=N` for N cases per property (the
//! long mode): `FUZZ_CASES=20000 cargo test -p resilience-retry --all-features --test fuzz`.
//! A failing input that proptest finds belongs in the corpus, with the fix.
#![cfg(feature = "http")]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use proptest::prelude::*;
use resilience_retry::{
    Action, Condition, DEFAULT_MAX_RETRY_AFTER, HttpPolicy, IDEMPOTENCY_KEY, Policy, RetryOn,
    retry_after,
};
use std::{
    io,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tower::BoxError;

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

/// The lines of every file in one corpus directory, comments skipped.
fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let lines: Vec<Vec<u8>> = files
        .iter()
        .flat_map(|file| {
            let bytes = std::fs::read(file).unwrap();
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            if lines.last().is_some_and(Vec::is_empty) {
                lines.pop();
            }
            lines
        })
        .filter(|line| !line.starts_with(b"# ") && line != b"#")
        .collect();
    assert!(lines.len() > 10, "{}: too few seeds", dir.display());
    lines
}

// ---------------------------------------------------------------------------------------------
// Retry-After

/// The range of dates httpdate reads and writes: 1970 to the end of 9999.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// A fixed wall clock: Tue, 14 Nov 2023 22:13:20 GMT.
const NOW_SECS: u64 = 1_700_000_000;

fn check_retry_after(bytes: &[u8], now: SystemTime) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let parsed = retry_after::parse(&value, now);
    let Ok(text) = std::str::from_utf8(bytes) else {
        assert_eq!(parsed, None, "{value:?} is not text");
        return;
    };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds, whatever `now` is; too big for a u64 is malformed.
        let expected = text.parse::<u64>().ok().map(Duration::from_secs);
        assert_eq!(parsed, expected, "{value:?}");
    } else if let Some(delay) = parsed {
        // A date: never beyond the last date there is.
        let latest = UNIX_EPOCH + Duration::from_secs(LAST_HTTP_DATE);
        let most = latest.duration_since(now).unwrap_or(Duration::ZERO);
        assert!(delay <= most, "{value:?} at {now:?} gives {delay:?}");
    }
}

/// `secs` after the epoch, or `secs` before it, or a far-future instant.
fn any_now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        Just(UNIX_EPOCH),
        Just(UNIX_EPOCH + Duration::from_secs(NOW_SECS)),
        // The last second a SystemTime holds here (seconds in an i64).
        Just(UNIX_EPOCH + Duration::from_secs(i64::MAX.unsigned_abs())),
        (0..=LAST_HTTP_DATE, 0u32..1_000_000_000)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        (0u64..1 << 40).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        (0u64..1 << 36).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
    ]
}

/// An HTTP date in each of the three formats RFC 9110 makes recipients read.
fn formats(at: SystemTime) -> Vec<String> {
    let imf = httpdate::fmt_http_date(at);
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = imf.split(' ').collect();
    let (weekday, day, month, year, time) = (
        parts[0].trim_end_matches(','),
        parts[1],
        parts[2],
        parts[3],
        parts[4],
    );
    let day_num: u32 = day.parse().unwrap();
    let asctime = format!("{weekday} {month} {day_num:>2} {time} {year}");
    let mut out = vec![imf.clone(), asctime];
    // RFC 850 has a two-digit year, read as 1970 to 2069.
    let year_num: u32 = year.parse().unwrap();
    if (1970..2070).contains(&year_num) {
        let long_weekday = match weekday {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            _ => "Sunday",
        };
        out.push(format!(
            "{long_weekday}, {day}-{month}-{:02} {time} GMT",
            year_num % 100
        ));
    }
    out
}

fn check_date(at_secs: u64, now: SystemTime) {
    let at = UNIX_EPOCH + Duration::from_secs(at_secs);
    let expected = at.duration_since(now).unwrap_or(Duration::ZERO);
    for text in formats(at) {
        let value = HeaderValue::from_str(&text).unwrap();
        assert_eq!(
            retry_after::parse(&value, now),
            Some(expected),
            "{text} at {now:?}"
        );
    }
}

#[test]
fn retry_after_corpus() {
    let seeds = corpus("retry_after");
    let nows = [
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_secs(NOW_SECS),
        UNIX_EPOCH + Duration::new(NOW_SECS, 999_999_999),
        UNIX_EPOCH + Duration::from_secs(LAST_HTTP_DATE),
        UNIX_EPOCH + Duration::from_secs(1 << 40),
        UNIX_EPOCH + Duration::from_secs(i64::MAX.unsigned_abs()),
        UNIX_EPOCH - Duration::from_secs(1 << 30),
    ];
    let mut dates = 0;
    for seed in &seeds {
        for now in nows {
            check_retry_after(seed, now);
        }
        let value = HeaderValue::from_bytes(seed);
        if value.is_ok_and(|v| {
            !v.as_bytes().iter().all(u8::is_ascii_digit)
                && retry_after::parse(&v, UNIX_EPOCH).is_some()
        }) {
            dates += 1;
        }
    }
    assert!(dates >= 5, "only {dates} dates parse");
    // The seeds' own expectations, at Tue, 14 Nov 2023 22:13:20 GMT.
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let parse = |s: &str| retry_after::parse(&HeaderValue::from_str(s).unwrap(), now);
    assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    assert_eq!(
        parse("Mon, 01 Jan 2057 00:00:00 GMT"),
        Some(Duration::from_secs(2_745_532_800 - NOW_SECS))
    );
    assert_eq!(
        parse("Fri, 31 Dec 9999 23:59:59 GMT"),
        Some(Duration::from_secs(LAST_HTTP_DATE - NOW_SECS))
    );
    assert_eq!(
        parse("18446744073709551615"),
        Some(Duration::from_secs(u64::MAX))
    );
    assert_eq!(parse("18446744073709551616"), None);
}

/// A valid date with a few bytes changed, dropped or added.
fn mutated_date() -> impl Strategy<Value = Vec<u8>> {
    (
        0..=LAST_HTTP_DATE,
        0usize..3,
        proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4),
    )
        .prop_map(|(secs, format, edits)| {
            let texts = formats(UNIX_EPOCH + Duration::from_secs(secs));
            let mut bytes = texts[format % texts.len()].clone().into_bytes();
            for (at, kind, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn retry_after_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        now in any_now(),
    ) {
        check_retry_after(&bytes, now);
    }

    #[test]
    fn retry_after_mutated_dates(bytes in mutated_date(), now in any_now()) {
        check_retry_after(&bytes, now);
    }

    #[test]
    fn retry_after_delay_seconds_round_trip(
        secs in prop_oneof![any::<u64>(), 0u64..1000],
        zeros in 0usize..4,
        now in any_now(),
    ) {
        let text = format!("{}{secs}", "0".repeat(zeros));
        let value = HeaderValue::from_str(&text).unwrap();
        prop_assert_eq!(retry_after::parse(&value, now), Some(Duration::from_secs(secs)));
    }

    #[test]
    fn retry_after_dates_give_the_delay_to_the_second(
        at in 0..=LAST_HTTP_DATE,
        now in any_now(),
    ) {
        check_date(at, now);
    }

    #[test]
    fn retry_after_dates_near_now(
        now_secs in 0..=LAST_HTTP_DATE - 100_000,
        nanos in 0u32..1_000_000_000,
        ahead in -100_000i64..100_000,
    ) {
        let now = UNIX_EPOCH + Duration::new(now_secs, nanos);
        check_date(now_secs.saturating_add_signed(ahead), now);
    }
}

// ---------------------------------------------------------------------------------------------
// Classification

const ALL_CONDITIONS: [&str; 10] = [
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
    "internal",
    "unavailable",
];

/// The gRPC code of each gRPC condition.
const GRPC_CODES: [(&str, i32); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// A fixed wall clock for `Retry-After` dates.
fn wall_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// One attempt's outcome, as the policy sees it.
#[derive(Debug, Clone)]
struct Outcome {
    method: Method,
    request_headers: HeaderMap,
    result: Result<(u16, HeaderMap), io::ErrorKind>,
}

impl Outcome {
    fn request(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.request_headers.clone();
        req
    }

    fn result(&self) -> Result<Response<()>, BoxError> {
        match &self.result {
            Ok((status, headers)) => {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::from_u16(*status).unwrap();
                *res.headers_mut() = headers.clone();
                Ok(res)
            }
            Err(kind) => Err(Box::new(io::Error::new(*kind, "fuzzed"))),
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

fn is_idempotent(outcome: &Outcome) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(&outcome.method)
        || outcome.request_headers.contains_key(IDEMPOTENCY_KEY)
}

/// The gRPC specification's `grpc-status`: one or more ASCII digits.
fn grpc_code(value: &HeaderValue) -> Option<i32> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The retryable condition `RetryOn` should find in an outcome, before the method rule.
fn model_reason(on: &RetryOn, outcome: &Outcome) -> Option<&'static str> {
    let has = |name: &str| on.contains(name.parse::<Condition>().unwrap());
    match &outcome.result {
        Err(kind) => match kind {
            io::ErrorKind::ConnectionRefused => Some("connect-failure"),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Some("reset"),
            _ => None,
        }
        // No response at all: `5xx` and `gateway-error` include it, as Envoy's do.
        .filter(|name| has(name) || has("5xx") || has("gateway-error")),
        Ok((_, headers)) if is_grpc(headers) => {
            let code = grpc_code(headers.get("grpc-status")?)?;
            GRPC_CODES
                .iter()
                .find(|(name, c)| *c == code && has(name))
                .map(|(name, _)| *name)
        }
        Ok((status, _)) => {
            let status = StatusCode::from_u16(*status).unwrap();
            if (502..=504).contains(&status.as_u16()) && has("gateway-error") {
                Some("gateway-error")
            } else if status.is_server_error() && has("5xx") {
                Some("5xx")
            } else if has("retriable-status-codes") && on.retriable_status_codes().contains(&status)
            {
                Some("retriable-status-codes")
            } else {
                None
            }
        }
    }
}

/// What `HttpPolicy` should decide, from its documentation.
fn model(on: &RetryOn, max_retry_after: Duration, outcome: &Outcome) -> Action {
    let Some(name) = model_reason(on, outcome) else {
        return Action::Return;
    };
    let grpc_reason = GRPC_CODES.iter().any(|(n, _)| *n == name);
    let safe_for_any_method =
        name == "connect-failure" || (grpc_reason && is_grpc(&outcome.request_headers));
    if !safe_for_any_method && !is_idempotent(outcome) {
        return Action::Return;
    }
    let mut reason = resilience_retry::Reason::new(name);
    if let Ok((429 | 503, headers)) = &outcome.result
        && let Some(value) = headers.get("retry-after")
        && let Some(delay) = retry_after::parse(value, wall_clock())
    {
        if delay > max_retry_after {
            return Action::Return;
        }
        reason.retry_after = Some(delay);
    }
    Action::Retry(reason)
}

fn classify(on: &RetryOn, outcome: &Outcome) -> Action {
    let policy = HttpPolicy::new(on.clone()).wall_clock(wall_clock);
    policy.classify(&outcome.request(), &outcome.result())
}

fn check_outcome(on: &RetryOn, outcome: &Outcome) -> Action {
    let action = classify(on, outcome);
    assert_eq!(
        action,
        model(on, DEFAULT_MAX_RETRY_AFTER, outcome),
        "{on:?} {outcome:?}"
    );
    if let Action::Retry(reason) = action {
        // Only a configured condition retries; no response at all also under `5xx` and
        // `gateway-error`.
        let condition: Condition = reason.name.parse().unwrap();
        let umbrella = outcome.result.is_err()
            && (on.contains(Condition::ServerError) || on.contains(Condition::GatewayError));
        assert!(
            on.contains(condition) || umbrella,
            "{reason:?} under {on:?}"
        );
        if !is_idempotent(outcome) {
            match &outcome.result {
                // A response came: the server may have acted on it. Only a gRPC call that
                // the server declined with a listed status may go again.
                Ok(_) => assert!(
                    is_grpc(&outcome.request_headers)
                        && GRPC_CODES.iter().any(|(n, _)| *n == reason.name),
                    "{outcome:?} retried for {reason:?}"
                ),
                Err(_) => assert_eq!(reason.name, "connect-failure", "{outcome:?}"),
            }
        }
    }
    if let Ok((status, headers)) = &outcome.result {
        let listed = on
            .retriable_status_codes()
            .iter()
            .any(|s| s.as_u16() == *status);
        if !is_grpc(headers) && (200..300).contains(status) && !listed {
            assert_eq!(action, Action::Return, "a 2xx is a success: {outcome:?}");
        }
        if is_grpc(headers) {
            let code = headers.get("grpc-status").and_then(grpc_code);
            if code.is_none() || code == Some(0) {
                assert_eq!(action, Action::Return, "{outcome:?}");
            }
        }
    }
    // Allowing any method only ever adds retries.
    let any = HttpPolicy::new(on.clone())
        .wall_clock(wall_clock)
        .retry_any_method(true)
        .classify(&outcome.request(), &outcome.result());
    if matches!(action, Action::Retry(_)) {
        assert_eq!(any, action, "{outcome:?}");
    }
    action
}

/// Parses one line of `tests/corpus/classify/`: the outcome and the expected decision.
fn parse_case(line: &str) -> (Outcome, String) {
    let (fields, expected) = line
        .rsplit_once(" => ")
        .unwrap_or_else(|| panic!("no `=>` in {line:?}"));
    let mut fields = fields.split(" | ");
    let method = Method::from_bytes(fields.next().unwrap().as_bytes()).unwrap();
    let outcome = fields.next().unwrap();
    let mut request_headers = HeaderMap::new();
    let mut response_headers = HeaderMap::new();
    for field in fields {
        let (name, value) = field
            .split_once(": ")
            .unwrap_or_else(|| panic!("{field:?}"));
        let (map, name) = match name.strip_prefix("req ") {
            Some(name) => (&mut request_headers, name),
            None => (&mut response_headers, name),
        };
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let result = match outcome.strip_prefix("error ") {
        Some(kind) => Err(io_kind(kind)),
        None => Ok((outcome.parse().unwrap(), response_headers)),
    };
    let outcome = Outcome {
        method,
        request_headers,
        result,
    };
    (outcome, expected.to_owned())
}

const IO_KINDS: [(&str, io::ErrorKind); 8] = [
    ("connection_refused", io::ErrorKind::ConnectionRefused),
    ("connection_reset", io::ErrorKind::ConnectionReset),
    ("connection_aborted", io::ErrorKind::ConnectionAborted),
    ("broken_pipe", io::ErrorKind::BrokenPipe),
    ("unexpected_eof", io::ErrorKind::UnexpectedEof),
    ("timed_out", io::ErrorKind::TimedOut),
    ("not_connected", io::ErrorKind::NotConnected),
    ("other", io::ErrorKind::Other),
];

fn io_kind(name: &str) -> io::ErrorKind {
    IO_KINDS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("unknown error kind {name:?}"))
        .1
}

fn everything() -> RetryOn {
    RetryOn::from_names(&ALL_CONDITIONS)
        .unwrap()
        .status_codes([StatusCode::CONFLICT, StatusCode::TOO_MANY_REQUESTS])
}

fn describe(action: Action) -> String {
    match action {
        Action::Return => "return".to_owned(),
        Action::Retry(reason) => match reason.retry_after {
            Some(delay) => format!("retry {} {}s", reason.name, delay.as_secs()),
            None => format!("retry {}", reason.name),
        },
    }
}

#[test]
fn classification_corpus() {
    let lines = corpus("classify");
    let subsets = [
        everything(),
        RetryOn::default(),
        RetryOn::none(),
        RetryOn::from_names(&["5xx", "unavailable"]).unwrap(),
    ];
    for line in lines {
        let line = String::from_utf8(line).unwrap();
        let (outcome, expected) = parse_case(&line);
        assert_eq!(
            describe(check_outcome(&everything(), &outcome)),
            expected,
            "{line}"
        );
        for on in &subsets {
            check_outcome(on, &outcome);
        }
    }
}

fn any_retry_on() -> impl Strategy<Value = RetryOn> {
    (
        proptest::collection::vec(proptest::sample::select(ALL_CONDITIONS.to_vec()), 0..6),
        proptest::collection::vec(100u16..=999, 0..4),
    )
        .prop_map(|(names, codes)| {
            let on = RetryOn::from_names(&names).unwrap();
            if codes.is_empty() {
                on
            } else {
                on.status_codes(codes.into_iter().map(|c| StatusCode::from_u16(c).unwrap()))
            }
        })
}

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        proptest::sample::select(vec![
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
            Method::POST,
            Method::PATCH,
            Method::CONNECT,
        ]),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Any byte a header value may hold: visible ASCII, space, tab, and every non-ASCII byte.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff]
}

/// Header values: mostly near what servers send, sometimes any bytes.
fn any_value(typical: Vec<&'static str>) -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        3 => proptest::sample::select(typical).prop_map(HeaderValue::from_static),
        2 => (0u32..20, proptest::option::of(proptest::sample::select(vec![" ", "+", "-", "0", "x", "\t"])), any::<bool>())
            .prop_map(|(n, noise, before)| {
                let text = match (noise, before) {
                    (Some(noise), true) => format!("{noise}{n}"),
                    (Some(noise), false) => format!("{n}{noise}"),
                    (None, _) => n.to_string(),
                };
                HeaderValue::from_str(&text).unwrap()
            }),
        1 => proptest::collection::vec(header_byte(), 0..12)
            .prop_map(|b| HeaderValue::from_bytes(&b).unwrap()),
    ]
}

fn any_headers() -> impl Strategy<Value = HeaderMap> {
    let content_type = proptest::option::weighted(
        0.7,
        any_value(vec![
            "application/grpc",
            "application/grpc+proto",
            "application/json",
            "application/grp",
        ]),
    );
    let grpc_status = proptest::option::weighted(
        0.7,
        any_value(vec![
            "0", "1", "4", "8", "13", "14", "2", "16", "+14", " 14",
        ]),
    );
    let retry_after = proptest::option::of(any_value(vec![
        "0",
        "3",
        "10",
        "11",
        "Tue, 14 Nov 2023 22:13:25 GMT",
        "Tue, 14 Nov 2023 22:13:00 GMT",
        "Tue, 14 Nov 2023 22:14:00 GMT",
    ]));
    let key = proptest::option::of(any_value(vec!["k"]));
    (content_type, grpc_status, retry_after, key).prop_map(
        |(content_type, grpc_status, retry_after, key)| {
            let mut headers = HeaderMap::new();
            if let Some(v) = content_type {
                headers.insert("content-type", v);
            }
            if let Some(v) = grpc_status {
                headers.insert("grpc-status", v);
            }
            if let Some(v) = retry_after {
                headers.insert("retry-after", v);
            }
            // An idempotency key on the request; on a response it must change nothing.
            if let Some(v) = key {
                headers.insert(IDEMPOTENCY_KEY, v);
            }
            headers
        },
    )
}

fn any_outcome() -> impl Strategy<Value = Outcome> {
    (
        any_method(),
        any_headers(),
        prop_oneof![
            4 => (100u16..=999, any_headers()).prop_map(Ok),
            1 => proptest::sample::select(IO_KINDS.to_vec()).prop_map(|(_, kind)| Err(kind)),
        ],
    )
        .prop_map(|(method, request_headers, result)| Outcome {
            method,
            request_headers,
            result,
        })
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn classification_follows_the_documented_rules(on in any_retry_on(), outcome in any_outcome()) {
        check_outcome(&on, &outcome);
    }

    #[test]
    fn a_post_without_a_key_is_retried_only_when_safe(on in any_retry_on(), outcome in any_outcome()) {
        let mut outcome = outcome;
        outcome.method = Method::POST;
        outcome.request_headers.remove(IDEMPOTENCY_KEY);
        check_outcome(&on, &outcome);
    }
}
