//! The `Retry-After` header: delay-seconds or an HTTP date (RFC 9110, section 10.2.3).

use http::HeaderValue;
use std::time::{Duration, SystemTime};

/// The delay a `Retry-After` value asks for, measured from `now` for a date. `None` for a
/// malformed value; a date in the past asks for no delay.
#[must_use]
pub fn parse(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Some(seconds) = digits(text) {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `text` as a number when it is digits only: `None` for a sign, a space, or more than a
/// `u64` holds (such a value is malformed, not "forever").
pub(crate) fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse(&value("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(parse(&value("0"), now), Some(Duration::ZERO));
        assert_eq!(
            parse(&value("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse(&value("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn malformed_values_are_none() {
        let now = SystemTime::UNIX_EPOCH;
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "99999999999999999999999",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(parse(&value(bad), now), None, "{bad:?}");
        }
        let non_ascii = HeaderValue::from_bytes(b"12\xff").unwrap();
        assert_eq!(parse(&non_ascii, now), None);
    }
}
