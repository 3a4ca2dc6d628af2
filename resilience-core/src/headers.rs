//! [`header_value`]: a header looked up the way that costs least for the few headers most
//! messages carry.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Up to this many values, [`header_value`] reads the names a map has rather than looking the
/// name up.
const SCAN_AT_MOST: usize = 8;

/// The first value of `name` in `headers`, as [`HeaderMap::get`] gives it. A lookup hashes
/// `name` byte by byte (most of its cost, for the names that are not standard ones); a map of
/// a few values is cheaper to read through, comparing names, which differ at their length or
/// their first bytes. Larger maps are looked up.
#[must_use]
pub fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() > SCAN_AT_MOST {
        return headers.get(name);
    }
    headers
        .iter()
        .find_map(|(found, value)| (found == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HOST;

    #[test]
    fn finds_the_first_value_as_get_does_in_small_and_large_maps() {
        let wanted = HeaderName::from_static("x-wanted");
        for others in [0, 3, SCAN_AT_MOST - 2, SCAN_AT_MOST, SCAN_AT_MOST + 5] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_static("app"));
            for n in 0..others {
                headers.insert(
                    HeaderName::try_from(format!("x-other-{n}")).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            assert_eq!(header_value(&headers, &wanted), None, "{others} others");
            headers.append(&wanted, HeaderValue::from_static("first"));
            headers.append(&wanted, HeaderValue::from_static("second"));
            assert_eq!(
                header_value(&headers, &wanted),
                headers.get(&wanted),
                "{others} others"
            );
            assert_eq!(header_value(&headers, &wanted).unwrap(), "first");
            assert_eq!(header_value(&headers, &HOST).unwrap(), "app");
        }
    }
}
