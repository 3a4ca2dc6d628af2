//! Fuzzing the deadline headers: `grpc-timeout` ([`grpc_timeout::parse`] and
//! [`grpc_timeout::format`]) and `x-request-timeout-ms` (read by [`HttpDeadline`]).
//!
//! cargo-fuzz needs a nightly toolchain, so this is a proptest harness that runs on stable:
//!
//! 1. every seed in `tests/corpus/grpc_timeout/` and `tests/corpus/request_timeout_ms/` (one
//!    value per line, raw bytes; lines starting with `# ` are comments) runs through the same
//!    checks as the generated inputs;
//! 2. then proptest generates inputs: arbitrary bytes that make a valid `HeaderValue`, and
//!    near-misses of valid values (too many digits, unknown units, signs, spaces).
//!
//! The checks: nothing panics; `grpc_timeout::parse` agrees with a model written from the gRPC
//! specification (one to eight ASCII digits, then one of `H M S m u n`), so every accepted
//! value is at most 99,999,999 hours and longer values or other units are rejected; `format`
//! always writes a value the model accepts, and it reads back as the duration rounded down to
//! the unit it chose (never more time than there is); `x-request-timeout-ms` is honoured
//! exactly when it is one to twelve ASCII digits.
//!
//! Case counts: a short run by default (CI); set `FUZZ_CASES=N` for N cases per property (the
//! long mode): `FUZZ_CASES=20000 cargo test -p resilience-timeout --all-features --test fuzz`.
//! A failing input that proptest finds belongs in the corpus, with the fix.
#![cfg(feature = "http")]

use http::{HeaderValue, Request};
use proptest::prelude::*;
use resilience_timeout::{
    HttpDeadline, REQUEST_TIMEOUT_MS, TimeoutPolicy, Verdict,
    grpc_timeout::{self, GRPC_TIMEOUT},
};
use std::time::Duration;

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

/// The values in one corpus directory: each file, split into lines, comments skipped.
fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let values: Vec<Vec<u8>> = files
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
        .filter(|line| !line.starts_with(b"# "))
        .collect();
    assert!(values.len() > 10, "{}: too few seeds", dir.display());
    values
}

const MAX_HOURS: u64 = 99_999_999;

/// The gRPC specification's `TimeoutValue TimeoutUnit`, written independently of the crate.
fn grpc_model(bytes: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(bytes).ok()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if !(1..=8).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let nanos_per_unit: u128 = match unit {
        'H' => 3_600_000_000_000,
        'M' => 60_000_000_000,
        'S' => 1_000_000_000,
        'm' => 1_000_000,
        'u' => 1_000,
        'n' => 1,
        _ => return None,
    };
    let nanos = u128::from(n) * nanos_per_unit;
    Some(Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap(),
        u32::try_from(nanos % 1_000_000_000).unwrap(),
    ))
}

fn check_grpc_parse(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let parsed = grpc_timeout::parse(&value);
    assert_eq!(parsed, grpc_model(bytes), "{value:?}");
    if let Some(timeout) = parsed {
        assert!(
            timeout <= Duration::from_secs(MAX_HOURS * 3600),
            "{value:?}"
        );
        // What we read, we can write again, rounded down.
        let again = grpc_timeout::parse(&grpc_timeout::format(timeout)).unwrap();
        assert!(again <= timeout, "{value:?}");
    }
}

/// The unit `format` chose, in nanoseconds.
fn unit_nanos(formatted: &HeaderValue) -> u128 {
    match formatted.as_bytes().last() {
        Some(b'H') => 3_600_000_000_000,
        Some(b'M') => 60_000_000_000,
        Some(b'S') => 1_000_000_000,
        Some(b'm') => 1_000_000,
        Some(b'u') => 1_000,
        Some(b'n') => 1,
        other => panic!("unknown unit {other:?} in {formatted:?}"),
    }
}

fn check_grpc_format(timeout: Duration) {
    let formatted = grpc_timeout::format(timeout);
    let model = grpc_model(formatted.as_bytes());
    let parsed = grpc_timeout::parse(&formatted);
    assert_eq!(parsed, model, "{timeout:?} -> {formatted:?}");
    let parsed = parsed.unwrap_or_else(|| panic!("{timeout:?} -> {formatted:?} is malformed"));
    let max = Duration::from_secs(MAX_HOURS * 3600);
    if timeout >= max {
        assert_eq!(parsed, max, "{timeout:?} is capped");
        return;
    }
    // Rounded down, and by less than one unit.
    assert!(parsed <= timeout, "{timeout:?} -> {formatted:?}");
    let lost = (timeout - parsed).as_nanos();
    assert!(
        lost < unit_nanos(&formatted),
        "{timeout:?} -> {formatted:?} loses {lost} ns"
    );
    // The finest unit that fits: one unit finer would need more than eight digits.
    let finer = match formatted.as_bytes().last() {
        Some(b'n') => None,
        Some(b'u') => Some(1),
        Some(b'm') => Some(1_000),
        Some(b'S') => Some(1_000_000),
        Some(b'M') => Some(1_000_000_000),
        _ => Some(60_000_000_000),
    };
    if let Some(finer) = finer {
        assert!(
            timeout.as_nanos() / finer > u128::from(MAX_HOURS),
            "{timeout:?} -> {formatted:?}: a finer unit fits"
        );
    }
}

/// The `x-request-timeout-ms` rule: one to twelve ASCII digits, whole milliseconds.
fn millis_model(bytes: &[u8]) -> Option<Duration> {
    if !(1..=12).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// Longer than any value the headers can carry (about 31.7 years of milliseconds), so the
/// configured timeout never hides what a header asked for.
const LONG: Duration = Duration::from_secs(40 * 365 * 24 * 3600);

/// Runs [`HttpDeadline`] on a request carrying `headers`, at a frozen instant, and returns
/// the time it gave the request (`None`: expired) and the request as it would be sent on.
fn deadline_of(headers: &[(&http::HeaderName, &HeaderValue)]) -> (Option<Duration>, Request<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _clock = runtime.enter();
    let mut req = Request::new(());
    for (name, value) in headers {
        req.headers_mut().insert(*name, (*value).clone());
    }
    let margin = HttpDeadline::DEFAULT_MARGIN;
    match HttpDeadline::new().margin(margin).verdict(LONG, &mut req) {
        Verdict::Until { budget, .. } => (Some(budget), req),
        Verdict::Expired => (None, req),
    }
}

fn check_request_timeout_ms(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let (budget, sent) = deadline_of(&[(&REQUEST_TIMEOUT_MS, &value)]);
    match millis_model(bytes) {
        Some(Duration::ZERO) => assert_eq!(budget, None, "{value:?} has expired"),
        Some(asked) => {
            assert_eq!(budget, Some(asked), "{value:?}");
            // The next hop is told what is left, less the margin, in the same header.
            let told = asked
                .saturating_sub(HttpDeadline::DEFAULT_MARGIN)
                .as_millis();
            assert_eq!(
                sent.headers()[REQUEST_TIMEOUT_MS].to_str().unwrap(),
                told.to_string(),
                "{value:?}"
            );
        }
        // Malformed: ignored, the configured timeout applies.
        None => assert_eq!(budget, Some(LONG), "{value:?}"),
    }
}

/// Both headers at once: a valid `grpc-timeout` wins over `x-request-timeout-ms`.
fn check_both(grpc: &[u8], millis: &[u8]) {
    let (Ok(g), Ok(m)) = (
        HeaderValue::from_bytes(grpc),
        HeaderValue::from_bytes(millis),
    ) else {
        return;
    };
    let (budget, _) = deadline_of(&[(&GRPC_TIMEOUT, &g), (&REQUEST_TIMEOUT_MS, &m)]);
    let asked = grpc_model(grpc).or_else(|| millis_model(millis));
    let expected = match asked {
        Some(Duration::ZERO) => None,
        Some(asked) => Some(asked.min(LONG)),
        None => Some(LONG),
    };
    assert_eq!(budget, expected, "{g:?} {m:?}");
}

#[test]
fn grpc_timeout_corpus() {
    let seeds = corpus("grpc_timeout");
    for seed in &seeds {
        check_grpc_parse(seed);
    }
    // The corpus holds both kinds, or it tests little.
    let accepted = seeds
        .iter()
        .filter(|s| HeaderValue::from_bytes(s).is_ok_and(|v| grpc_timeout::parse(&v).is_some()))
        .count();
    assert!(accepted >= 10 && accepted < seeds.len() - 10, "{accepted}");
}

#[test]
fn request_timeout_ms_corpus() {
    for seed in corpus("request_timeout_ms") {
        check_request_timeout_ms(&seed);
    }
}

const UNITS: &[u8] = b"HMSmun";

/// Near-misses of a valid value: digits (sometimes too many), a unit (sometimes not gRPC's),
/// and now and then a sign, a space or a dot.
fn near_grpc() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(b'0'..=b'9', 0..12),
        prop_oneof![
            4 => proptest::sample::select(UNITS.to_vec()),
            1 => any::<u8>(),
        ],
        proptest::option::of(proptest::sample::select(b"+- .\t".to_vec())),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut digits, unit, noise, at)| {
            if let Some(noise) = noise {
                let at = at.index(digits.len() + 1);
                digits.insert(at, noise);
            }
            digits.push(unit);
            digits
        })
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..400_000_000_000_000_000).prop_map(Duration::from_nanos),
        (0u64..1_000_000).prop_map(Duration::from_millis),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ]
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn grpc_timeout_parse_agrees_with_the_spec(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        check_grpc_parse(&bytes);
    }

    #[test]
    fn grpc_timeout_near_misses(bytes in near_grpc()) {
        check_grpc_parse(&bytes);
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let (digits, unit) = bytes.split_at(bytes.len() - 1);
            if digits.len() > 8 || !UNITS.contains(&unit[0]) {
                prop_assert_eq!(grpc_timeout::parse(&value), None);
            }
        }
    }

    #[test]
    fn grpc_timeout_format_round_trips(timeout in any_duration()) {
        check_grpc_format(timeout);
    }

    #[test]
    fn request_timeout_ms_is_whole_millis(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..16),
        proptest::collection::vec(b'0'..=b'9', 0..15),
    ]) {
        check_request_timeout_ms(&bytes);
    }
}

proptest! {
    // Each case builds a runtime: fewer of them.
    #![proptest_config(config(300))]

    #[test]
    fn a_valid_grpc_timeout_wins(grpc in near_grpc(), millis in proptest::collection::vec(b'0'..=b'9', 0..14)) {
        check_both(&grpc, &millis);
    }
}
