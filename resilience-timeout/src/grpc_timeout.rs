//! The `grpc-timeout` header, in the format of the gRPC over HTTP/2 specification: at most eight
//! ASCII digits followed by one unit, `H` (hours), `M` (minutes), `S` (seconds), `m`
//! (milliseconds), `u` (microseconds) or `n` (nanoseconds).

use http::HeaderValue;
use std::time::Duration;

/// The name of the gRPC deadline header.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

const MAX_DIGITS: usize = 8;
const MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value. Returns `None` for anything the specification does not
/// allow: an empty value, more than eight digits, a sign, an unknown unit, non-ASCII bytes.
#[must_use]
pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats `timeout` in the finest unit whose amount fits in eight digits, rounding down so the
/// next hop never believes it has more time than it does. Timeouts beyond 99,999,999 hours are
/// capped there.
#[must_use]
pub fn format(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let (amount, unit) = [
        (nanos, b'n'),
        (nanos / 1_000, b'u'),
        (nanos / 1_000_000, b'm'),
        (nanos / 1_000_000_000, b'S'),
        (nanos / 60_000_000_000, b'M'),
    ]
    .into_iter()
    .find(|&(amount, _)| amount <= u128::from(MAX_VALUE))
    .unwrap_or(((nanos / 3_600_000_000_000).min(u128::from(MAX_VALUE)), b'H'));
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(amount).as_bytes();
    // At most eight digits and the unit, on the stack: the value is allocated once.
    let mut value = [0; 9];
    value[..digits.len()].copy_from_slice(digits);
    value[digits.len()] = unit;
    HeaderValue::from_bytes(&value[..=digits.len()])
        .expect("digits and an ASCII unit form a valid header value")
}
