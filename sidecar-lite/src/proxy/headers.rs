//! Request and response header rules of a forwarding proxy (RFC 9110 section 7.6, W3C Trace
//! Context): hop-by-hop headers stripped, `x-forwarded-for` appended, `traceparent` kept or
//! created; inbound, the identity headers a caller could forge replaced by what its
//! certificate proves.

use super::per_thread;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request,
    header::{CONNECTION, CONTENT_LENGTH, COOKIE, Entry, TE, TRANSFER_ENCODING, UPGRADE},
};
use resilience_mtls::{Credentials, Identity};
use std::{cell::RefCell, net::IpAddr};

/// `x-forwarded-for`: the chain of client addresses.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// W3C Trace Context.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Hop-by-hop headers that are never forwarded, besides those named in `Connection`.
/// `Trailer` is not one (RFC 9110 section 6.6.2): it names the trailer fields to come, and an
/// HTTP/1.1 hop sends only those it names.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("http2-settings"),
];

/// Joins the `cookie` fields of an HTTP/2 request into one, with `"; "` between them: HTTP/2
/// lets a client split its cookies into fields of their own (browsers do), and they must be
/// one field again before an HTTP/1.1 hop (RFC 9113 section 8.2.3), where many servers read
/// only the first.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    // A field sent twice shows as more values than names; most requests have none.
    if headers.len() == headers.keys_len() {
        return;
    }
    let mut cookies = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, joined);
    }
}

/// Removes the headers that belong to one connection only. `te: trailers` is kept: gRPC needs
/// it end to end. A message framed by `Transfer-Encoding` loses its `Content-Length` too: it is
/// not the message's length, and RFC 9112 section 6.3 has a proxy remove it (kept, it would
/// frame the next hop's message, cut short). Returns whether the message named a transfer
/// coding other than `chunked`: one a proxy cannot pass on, since the coding goes with the
/// header and the body would stay coded.
#[must_use = "a message with a transfer coding other than chunked cannot be forwarded"]
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most messages have none of them: one pass over the names they have, rather than a
    // lookup of each name they might have.
    if !headers
        .keys()
        .any(|name| name == TE || HOP_BY_HOP.contains(name))
    {
        return false;
    }
    let foreign_coding = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked"));
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != TE {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let trailers_only = headers
        .get(TE)
        .is_none_or(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    foreign_coding
}

/// `ip` as an `x-forwarded-for` element, to be made once per connection.
pub(crate) fn forwarded_element(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client's address (from [`forwarded_element`]) to `x-forwarded-for`, folding
/// any earlier lines into one. Without earlier lines, the common case, the value is the
/// client's, shared: nothing is formatted or allocated.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: HeaderValue) {
    // One lookup of the name: the entry is either filled or folded in place.
    let mut earlier = match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(vacant) => {
            vacant.insert(client);
            return;
        }
        Entry::Occupied(occupied) => occupied,
    };
    let mut folded = String::with_capacity(48);
    for value in earlier
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        folded.push_str(value);
        folded.push_str(", ");
    }
    folded.push_str(client.to_str().unwrap_or_default());
    if let Ok(value) = HeaderValue::try_from(folded) {
        earlier.insert(value);
    }
}

/// Keeps a valid `traceparent`, or replaces a missing or malformed one with a new trace,
/// sampled.
pub(crate) fn ensure_traceparent(headers: &mut HeaderMap) {
    // One lookup of the name: the entry is kept, or filled or replaced in place.
    let entry = headers.entry(TRACEPARENT);
    if let Entry::Occupied(kept) = &entry
        && let Ok(value) = kept.get().to_str()
        && valid_traceparent(value).is_some()
    {
        return;
    }
    let value = traceparent_value(
        rand::random::<u128>().max(1),
        rand::random::<u64>().max(1),
        SAMPLED,
    );
    match entry {
        Entry::Occupied(mut bad) => {
            bad.insert(value);
        }
        Entry::Vacant(none) => {
            none.insert(value);
        }
    }
}

/// The trace flags of a sampled trace.
const SAMPLED: u8 = 1;

/// The `traceparent` value "00-" trace-id "-" parent-id "-" flags, written digit by digit: the
/// formatting machinery cost a hop more than the rest of this header's work together.
pub(crate) fn traceparent_value(trace_id: u128, parent_id: u64, flags: u8) -> HeaderValue {
    let mut value = [0_u8; 55];
    value[..3].copy_from_slice(b"00-");
    write_hex(&mut value[3..35], trace_id);
    value[35] = b'-';
    write_hex(&mut value[36..52], u128::from(parent_id));
    value[52] = b'-';
    write_hex(&mut value[53..], u128::from(flags));
    // In a counted buffer that its clones share: copied from a slice, the value would allocate
    // again at its first clone, when the retry layer copies the request.
    HeaderValue::from_maybe_shared(Bytes::from_owner(value))
        .expect("hex digits and dashes are a valid header value")
}

/// Fills `out` with the lowest `out.len()` hex digits of `n`, lowercase, most significant
/// first.
fn write_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for digit in out.iter_mut().rev() {
        *digit = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The parts of a well-formed `traceparent` (W3C Trace Context, version 00 or a later version
/// read as 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent<'a> {
    /// 32 lowercase hex digits, not all zero.
    pub(crate) trace_id: &'a str,
    /// The caller's span: 16 lowercase hex digits, not all zero.
    pub(crate) parent_id: &'a str,
    /// The trace flags; bit 0 is "sampled".
    pub(crate) flags: u8,
}

/// The request's `traceparent`, if it has one that is well formed.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<TraceParent<'_>> {
    parse_traceparent(headers.get(TRACEPARENT)?.to_str().ok()?)
}

/// Parses a `traceparent` value: `version-traceid-parentid-flags`, each part of a fixed length
/// (2, 32, 16 and 2 lowercase hex digits), so read at fixed places rather than split; a version
/// after 00 may add parts after a further dash.
fn parse_traceparent(value: &str) -> Option<TraceParent<'_>> {
    let value = value.trim();
    let bytes = value.as_bytes();
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (version, trace, span, flags) = (
        value.get(..2)?,
        value.get(3..35)?,
        value.get(36..52)?,
        value.get(53..55)?,
    );
    let rest = value.get(55..)?;
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version)
        && version != "ff"
        && hex(trace)
        && trace.bytes().any(|b| b != b'0')
        && hex(span)
        && span.bytes().any(|b| b != b'0')
        && hex(flags)
        && (rest.is_empty() || (version != "00" && rest.starts_with('-')));
    valid.then(|| TraceParent {
        trace_id: trace,
        parent_id: span,
        flags: u8::from_str_radix(flags, 16).unwrap_or(0),
    })
}

/// The trace id of a well-formed `traceparent`.
fn valid_traceparent(value: &str) -> Option<&str> {
    parse_traceparent(value).map(|t| t.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_and_te_trailers_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, x-secret".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(UPGRADE, "websocket".parse().unwrap());
        headers.insert("proxy-authorization", "basic x".parse().unwrap());
        headers.insert(TE, "trailers".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        headers.insert("trailer", "x-checksum".parse().unwrap());
        assert!(!strip_hop_by_hop(&mut headers), "chunked is passed on");
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["te", "trailer", "x-kept"]);
    }

    #[test]
    fn transfer_encoding_takes_content_length_with_it_and_other_codings_are_told() {
        let mut headers = HeaderMap::new();
        headers.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(CONTENT_LENGTH, "5".parse().unwrap());
        assert!(!strip_hop_by_hop(&mut headers));
        assert!(headers.is_empty(), "{headers:?}");

        for coding in ["gzip, chunked", "GZIP", " chunked , br", "x-custom"] {
            let mut headers = HeaderMap::new();
            headers.insert(TRANSFER_ENCODING, coding.parse().unwrap());
            assert!(strip_hop_by_hop(&mut headers), "{coding}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(TRANSFER_ENCODING, "Chunked".parse().unwrap());
        assert!(!strip_hop_by_hop(&mut headers));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, "5".parse().unwrap());
        headers.insert(CONNECTION, "close".parse().unwrap());
        assert!(!strip_hop_by_hop(&mut headers));
        assert_eq!(
            headers[CONTENT_LENGTH], "5",
            "kept without Transfer-Encoding"
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        let client = |ip: &str| forwarded_element(ip.parse().unwrap());
        append_forwarded_for(&mut headers, client("10.1.2.3"));
        assert_eq!(headers[X_FORWARDED_FOR], "10.1.2.3");
        append_forwarded_for(&mut headers, client("::1"));
        assert_eq!(headers[X_FORWARDED_FOR], "10.1.2.3, ::1");
        // Several lines are folded into one, in order.
        headers.append(X_FORWARDED_FOR, "192.0.2.9".parse().unwrap());
        append_forwarded_for(&mut headers, client("127.0.0.1"));
        assert_eq!(
            headers[X_FORWARDED_FOR],
            "10.1.2.3, ::1, 192.0.2.9, 127.0.0.1"
        );
        assert_eq!(headers.get_all(X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_a_bad_one_replaced() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, good.parse().unwrap());
        ensure_traceparent(&mut headers);
        assert_eq!(headers[TRACEPARENT], good);

        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, bad.parse().unwrap());
            ensure_traceparent(&mut headers);
            let value = headers[TRACEPARENT].to_str().unwrap().to_owned();
            assert!(valid_traceparent(&value).is_some(), "{bad:?} -> {value}");
            assert_ne!(value, bad, "a bad traceparent is replaced");
        }
        let mut headers = HeaderMap::new();
        ensure_traceparent(&mut headers);
        assert!(valid_traceparent(headers[TRACEPARENT].to_str().unwrap()).is_some());
    }

    #[test]
    fn each_new_trace_has_ids_of_its_own() {
        use std::collections::HashSet;
        let made: HashSet<String> = (0..1000)
            .map(|_| {
                let mut headers = HeaderMap::new();
                ensure_traceparent(&mut headers);
                headers[TRACEPARENT].to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(made.len(), 1000, "no two traces share a traceparent");
        let trace_ids: HashSet<&str> = made
            .iter()
            .map(|value| {
                // Well formed: ids of hex digits, not all zero, and sampled.
                let parts = parse_traceparent(value).expect("well formed");
                assert_eq!(parts.flags, 1, "sampled");
                parts.trace_id
            })
            .collect();
        assert_eq!(trace_ids.len(), 1000, "trace ids are not reused");
    }

    #[test]
    fn hex_is_written_lowercase_with_leading_zeros() {
        let mut out = [0_u8; 32];
        write_hex(&mut out, 0xab);
        assert_eq!(&out, b"000000000000000000000000000000ab");
        write_hex(&mut out, u128::MAX);
        assert_eq!(&out, b"ffffffffffffffffffffffffffffffff");
        let mut short = [0_u8; 16];
        write_hex(&mut short, 0x0123_4567_89ab_cdef_u128 | (1 << 100));
        assert_eq!(&short, b"0123456789abcdef", "only the lowest digits");
    }

    #[test]
    fn a_traceparent_value_names_its_trace_span_and_flags() {
        // The example of the W3C Trace Context recommendation.
        let value = traceparent_value(
            0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            0xb7ad_6b71_6920_3331,
            SAMPLED,
        );
        assert_eq!(
            value,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(
            traceparent_value(1, 2, 0),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }

    #[test]
    fn traceparent_parts_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(traceparent(&headers), None);
        headers.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            traceparent(&headers),
            Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                parent_id: "00f067aa0ba902b7",
                flags: 0,
            })
        );
        // A later version may add fields after the flags.
        headers.insert(
            TRACEPARENT,
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more"
                .parse()
                .unwrap(),
        );
        assert_eq!(traceparent(&headers).map(|t| t.flags), Some(3));
    }

    #[test]
    fn the_client_cert_header_is_made_once_per_peer_and_names_our_certificate_of_now() {
        let id = |text: &str| Identity::parse(text).unwrap();
        let ca = resilience_mtls::dev_ca::DevCa::new("example.org").unwrap();
        let material = |path: &str| ca.workload(path).unwrap().material(ca.trust_pem()).unwrap();
        let ours = Credentials::new(material("ns/a/sa/app"));
        let rules = InboundRules::new(Some(ours.clone()));
        let (client, other) = (
            id("spiffe://example.org/ns/a/sa/client"),
            id("db.example.org"),
        );
        let forwarded = |rules: &InboundRules, peer: &Identity| {
            let mut req = Request::new(());
            req.headers_mut()
                .insert(X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("forged"));
            req.extensions_mut().insert(peer.clone());
            rules.prepare_request(&mut req);
            req.headers()[X_FORWARDED_CLIENT_CERT].clone()
        };
        let first = forwarded(&rules, &client);
        assert_eq!(
            first,
            "By=spiffe://example.org/ns/a/sa/app;URI=spiffe://example.org/ns/a/sa/client"
        );
        let again = forwarded(&rules, &client);
        assert_eq!(again.as_bytes().as_ptr(), first.as_bytes().as_ptr(), "kept");
        assert_eq!(
            forwarded(&rules, &other),
            "By=spiffe://example.org/ns/a/sa/app;DNS=db.example.org"
        );
        // A rotation to a certificate that names another identity: the same rules say so.
        ours.store(material("ns/b/sa/app"));
        assert_eq!(
            forwarded(&rules, &other),
            "By=spiffe://example.org/ns/b/sa/app;DNS=db.example.org"
        );
        assert_eq!(
            forwarded(&InboundRules::new(None), &other),
            "DNS=db.example.org"
        );
    }

    #[test]
    fn a_traceparent_is_read_at_its_fixed_places_and_nothing_else_passes() {
        const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        const SPAN: &str = "00f067aa0ba902b7";
        let parsed =
            |value: String| parse_traceparent(&value).map(|t| (t.trace_id.to_owned(), t.flags));
        let expected = Some((TRACE.to_owned(), 1));
        assert_eq!(parsed(format!(" 00-{TRACE}-{SPAN}-01\t")), expected);
        assert_eq!(parsed(format!("cc-{TRACE}-{SPAN}-01-what-ever")), expected);
        for bad in [
            format!("00-{TRACE}-{SPAN}-01-"),
            format!("00-{TRACE}-{SPAN}-01-more"),
            format!("01-{TRACE}-{SPAN}-01more"),
            format!("00-{TRACE}-{SPAN}-0x"),
            format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
            format!("00-{TRACE}0-{SPAN}-01"),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("0-0{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-1"),
            // Multi-byte characters where the parts are cut: refused, not a panic.
            format!("0é-{}-{SPAN}-01", &TRACE[1..]),
            format!("00-{}é-{SPAN}-01", &TRACE[..30]),
        ] {
            assert_eq!(parse_traceparent(&bad), None, "{bad:?}");
        }
    }
}

/// `x-forwarded-client-cert`: the verified peer, in Envoy's format.
pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");
/// Linkerd's name for the verified peer identity: an app behind Linkerd may trust it.
const L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");

/// What the inbound listener tells the app of its callers: identity headers that a caller
/// could forge are removed, and `x-forwarded-client-cert` says who the verified certificate
/// names, as Envoy says it (`By=<our identity>;URI=<peer>`, `DNS=` for a DNS identity).
#[derive(Debug, Clone, Default)]
pub(crate) struct InboundRules {
    /// Our certificate material, read for each request: `By=` names the identity of the
    /// certificate we hold now, which a rotation may change.
    ours: Option<Credentials>,
}

impl InboundRules {
    /// The rules of a sidecar whose own certificate material is `ours`.
    pub(crate) fn new(ours: Option<Credentials>) -> Self {
        Self { ours }
    }

    /// Removes `x-forwarded-client-cert`, `l5d-client-id` and every `x-sidecar-*` header
    /// the caller sent, then names the peer of the request's verified certificate (its
    /// [`Identity`] extension), if any.
    pub(crate) fn prepare_request<B>(&self, req: &mut Request<B>) {
        let headers = req.headers_mut();
        headers.remove(X_FORWARDED_CLIENT_CERT);
        headers.remove(L5D_CLIENT_ID);
        let sidecar: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("x-sidecar-"))
            .cloned()
            .collect();
        for name in sidecar {
            headers.remove(name);
        }
        let Some(peer) = req.extensions().get::<Identity>() else {
            return;
        };
        if let Some(value) = self.forwarded_client_cert(peer) {
            req.headers_mut().insert(X_FORWARDED_CLIENT_CERT, value);
        }
    }

    /// `x-forwarded-client-cert` for `peer`. The last one made on the thread is kept: a
    /// worker's requests come from few peers, over long-lived connections, and then share one
    /// value instead of each formatting and allocating its own.
    fn forwarded_client_cert(&self, peer: &Identity) -> Option<HeaderValue> {
        type Made = ((Option<Identity>, Identity), HeaderValue);
        thread_local! {
            static LAST: RefCell<Option<Made>> = const { RefCell::new(None) };
        }
        let made = |ours: Option<&Identity>| {
            per_thread::kept_or_made(
                &LAST,
                |(by, kept), _| by.as_ref() == ours && kept == peer,
                || {
                    let by = ours.map_or_else(String::new, |id| format!("By={};", id.as_str()));
                    let text = format!("{by}{}", xfcc_element(peer));
                    let value = HeaderValue::from_maybe_shared(Bytes::from(text)).ok()?;
                    Some(((ours.cloned(), peer.clone()), value))
                },
            )
        };
        match &self.ours {
            Some(credentials) => {
                credentials.with_current(|material| made(Some(material.identity())))
            }
            None => made(None),
        }
    }
}

/// One identity as an element of `x-forwarded-client-cert`: `URI=` for a SPIFFE ID, `DNS=`
/// for a DNS name.
fn xfcc_element(identity: &Identity) -> String {
    match identity {
        Identity::Spiffe(_) => format!("URI={}", identity.as_str()),
        Identity::Dns(_) => format!("DNS={}", identity.as_str()),
    }
}
