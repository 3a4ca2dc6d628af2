//! Deadline propagation over HTTP: `grpc-timeout` parsing and formatting, honouring incoming
//! deadlines, failing at once when they have passed, and the time remaining across hops.
#![cfg(feature = "http")]

use http::{HeaderValue, Request};
use resilience_timeout::{
    BoxError, Deadline, Elapsed, HttpDeadline, REQUEST_TIMEOUT_MS, TimeoutLayer,
    grpc_timeout::{self, GRPC_TIMEOUT},
};
use std::{future::Future, time::Duration};
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Req = Request<()>;

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap()
}

#[test]
fn grpc_timeout_parses_every_unit() {
    let cases = [
        ("3H", Duration::from_secs(3 * 3600)),
        ("7M", Duration::from_secs(7 * 60)),
        ("12S", Duration::from_secs(12)),
        ("250m", Duration::from_millis(250)),
        ("1500u", Duration::from_micros(1500)),
        ("99999999n", Duration::from_nanos(99_999_999)),
        ("0m", Duration::ZERO),
    ];
    for (text, expected) in cases {
        let parsed = grpc_timeout::parse(&header(text));
        assert_eq!(parsed, Some(expected), "{text}");
        // Whatever unit the formatter picks, it reads back as the same duration.
        let formatted = grpc_timeout::format(expected);
        assert_eq!(
            grpc_timeout::parse(&formatted),
            Some(expected),
            "{text} -> {formatted:?}"
        );
    }
}

#[test]
fn grpc_timeout_formats_in_the_finest_unit_that_fits_eight_digits() {
    let cases = [
        (Duration::from_nanos(99_999_999), "99999999n"),
        (Duration::from_millis(100), "100000u"),
        (Duration::from_secs(2), "2000000u"),
        (Duration::from_secs(100), "100000m"),
        (Duration::from_secs(200_000), "200000S"),
        (Duration::from_secs(3_000_000_000), "50000000M"),
        (Duration::from_secs(6_000_000_000), "1666666H"),
        (Duration::MAX, "99999999H"),
        // Rounding is down, never up: the next hop must not think it has more time than it has.
        (Duration::from_nanos(123_456_789), "123456u"),
    ];
    for (timeout, expected) in cases {
        assert_eq!(grpc_timeout::format(timeout), expected, "{timeout:?}");
    }
}

#[test]
fn malformed_grpc_timeouts_are_ignored() {
    for bad in [
        "",
        "S",
        "123",
        "123456789S",
        "12s",
        "12x",
        "-5S",
        "+5S",
        " 5S",
        "5S ",
        "1.5S",
    ] {
        assert_eq!(grpc_timeout::parse(&header(bad)), None, "{bad:?}");
    }
    let non_ascii = HeaderValue::from_bytes(b"1\xb5S").unwrap();
    assert_eq!(grpc_timeout::parse(&non_ascii), None);
    let non_ascii_unit = HeaderValue::from_bytes(b"15\xb5").unwrap();
    assert_eq!(grpc_timeout::parse(&non_ascii_unit), None);
}

fn grpc_request(timeout: Option<&str>) -> Req {
    let mut builder = Request::builder().header("content-type", "application/grpc");
    if let Some(timeout) = timeout {
        builder = builder.header(GRPC_TIMEOUT, timeout);
    }
    builder.body(()).unwrap()
}

fn layer(timeout: Duration) -> TimeoutLayer<HttpDeadline> {
    TimeoutLayer::new(timeout).with_policy(HttpDeadline::new().margin(Duration::from_millis(10)))
}

#[tokio::test(start_paused = true)]
async fn an_incoming_deadline_shorter_than_ours_wins_and_is_sent_on() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_secs(2)));
    assert_ready_ok!(svc.poll_ready());
    let start = Instant::now();
    let mut response = task::spawn(svc.call(grpc_request(Some("500m"))));

    let (sent, _send) = handle.next_request().await.unwrap();
    // 500 ms remain; the next hop is told 490 ms, after our 10 ms margin.
    assert_eq!(sent.headers()[GRPC_TIMEOUT], "490000u");
    assert_eq!(
        Deadline::of(&sent),
        Some(start + Duration::from_millis(500))
    );

    times_out_after(&mut response, Duration::from_millis(500)).await;
}

/// `response`, started now, is still pending just before `after` and fails at `after`,
/// saying so.
async fn times_out_after<F>(response: &mut task::Spawn<F>, after: Duration)
where
    F: Future<Output = Result<(), BoxError>>,
{
    let tick = Duration::from_millis(1);
    time::advance(after - tick).await;
    assert_pending!(response.poll());
    time::advance(tick).await;
    let err = assert_ready!(response.poll()).unwrap_err();
    assert_eq!(err.downcast_ref::<Elapsed>().unwrap().after(), after);
}

#[tokio::test(start_paused = true)]
async fn our_timeout_wins_when_it_is_shorter() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_millis(300)));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(grpc_request(Some("5S"))));
    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[GRPC_TIMEOUT], "290000u");
    time::advance(Duration::from_millis(300)).await;
    assert!(assert_ready!(response.poll()).unwrap_err().is::<Elapsed>());
}

#[tokio::test(start_paused = true)]
async fn a_grpc_request_without_a_deadline_gets_one() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_secs(1)));
    assert_ready_ok!(svc.poll_ready());
    let _response = svc.call(grpc_request(None));
    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[GRPC_TIMEOUT], "990000u");
}

#[tokio::test(start_paused = true)]
async fn plain_http_uses_the_millisecond_header_and_is_left_alone_without_it() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_secs(1)));
    assert_ready_ok!(svc.poll_ready());
    let with = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "400")
        .body(())
        .unwrap();
    let _response = svc.call(with);
    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[REQUEST_TIMEOUT_MS], "390");

    assert_ready_ok!(svc.poll_ready());
    let _response = svc.call(Request::new(()));
    let (sent, _send) = handle.next_request().await.unwrap();
    assert!(
        sent.headers().is_empty(),
        "no header invented for plain HTTP: {:?}",
        sent.headers()
    );
    assert!(
        Deadline::of(&sent).is_some(),
        "the deadline is still recorded for inner layers"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_has_passed_fails_without_calling_the_inner_service() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_secs(1)));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(grpc_request(Some("0n"))));
    let err = assert_ready!(response.poll()).unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().after(),
        Duration::ZERO
    );
    assert_pending!(task::spawn(handle.next_request()).poll());

    // The same for a deadline recorded by an outer layer that has since passed.
    let mut expired = Request::new(());
    expired
        .extensions_mut()
        .insert(Deadline::new(Instant::now()));
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(expired));
    assert!(assert_ready!(response.poll()).unwrap_err().is::<Elapsed>());
    assert_pending!(task::spawn(handle.next_request()).poll());
}

#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_are_ignored_not_errors() {
    for bad in ["", "123456789S", "5x", "-1S"] {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(layer(Duration::from_secs(1)));
        assert_ready_ok!(svc.poll_ready());
        let mut response = task::spawn(svc.call(grpc_request(Some(bad))));
        let (sent, send) = handle.next_request().await.expect("the request is sent");
        // Our own timeout applies, and the bad header is replaced by a good one.
        assert_eq!(sent.headers()[GRPC_TIMEOUT], "990000u", "{bad:?}");
        send.send_response(());
        assert_ready_ok!(response.poll());
    }
}

#[tokio::test(start_paused = true)]
async fn the_remaining_time_shrinks_across_two_hops() {
    // Hop A: 2 s configured, the caller allows 1 s. Hop B: 5 s configured. Each keeps 10 ms.
    let (hop_b, mut upstream) = mock::pair::<Req, ()>();
    let hop_b = layer(Duration::from_secs(5)).layer(hop_b);
    let hop_a = layer(Duration::from_secs(2)).layer(tower::service_fn(move |req: Req| {
        let hop_b = hop_b.clone();
        async move {
            // 200 ms on the wire between the hops; only the headers travel.
            time::sleep(Duration::from_millis(200)).await;
            let (parts, body) = req.into_parts();
            let mut forwarded = Request::new(body);
            *forwarded.headers_mut() = parts.headers;
            hop_b.oneshot(forwarded).await
        }
    }));

    let call = tokio::spawn(hop_a.oneshot(grpc_request(Some("1S"))));
    let (at_upstream, send) = upstream.next_request().await.unwrap();
    // A sent 990 ms; B received it 200 ms later and sent on 980 ms.
    assert_eq!(at_upstream.headers()[GRPC_TIMEOUT], "980000u");
    send.send_response(());
    call.await.unwrap().expect("the call completes in time");
}

#[tokio::test(start_paused = true)]
async fn an_inner_timeout_never_outlives_the_outer_deadline() {
    let (svc, mut handle) = mock::pair::<Req, ()>();
    // Outer: 300 ms total. Inner: 1 s per try. The inner must give up at 300 ms too.
    let svc = layer(Duration::from_millis(300))
        .layer(layer(Duration::from_secs(1)).named("per-try").layer(svc));
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(Request::new(())));
    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(
        Deadline::of(&sent),
        Some(start + Duration::from_millis(300))
    );
    let err = call.await.unwrap().unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
    // Both fired at 300 ms: the outer deadline is the one that bound, and it says so.
    assert_eq!(elapsed.layer(), "timeout");
    assert_eq!(elapsed.after(), Duration::from_millis(300));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

/// Which timeout fired is in the error: the per-try one when it fires first, the total one
/// when its deadline is the one reached.
#[tokio::test(start_paused = true)]
async fn the_timeout_that_fired_names_itself() {
    for (per_try, layer, after) in [(300, "per-try", 300), (2000, "total", 1000)] {
        let (svc, _handle) = mock::pair::<Req, ()>();
        let svc = layer_named(Duration::from_secs(1), "total")
            .layer(layer_named(Duration::from_millis(per_try), "per-try").layer(svc));
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
        assert_eq!(elapsed.layer(), layer);
        assert_eq!(elapsed.after(), Duration::from_millis(after));
        assert_eq!(
            err.to_string(),
            format!(
                "timed out: no answer within {:?} (layer `{layer}`)",
                Duration::from_millis(after)
            )
        );
    }
}

fn layer_named(timeout: Duration, name: &'static str) -> TimeoutLayer<HttpDeadline> {
    layer(timeout).named(name)
}

/// A total and a per-try timeout on one request: the margin is taken once, not once per
/// layer, and the outer one's settings hold for the inner one (which was built with the
/// defaults): with `propagate(false)` the header goes on as it came.
#[tokio::test(start_paused = true)]
async fn nested_timeouts_take_the_margin_once_and_follow_the_outer_settings() {
    let margin = Duration::from_millis(20);
    for (outer, expected) in [
        (HttpDeadline::new().margin(margin), "280"),
        (HttpDeadline::new().margin(margin).propagate(false), "300"),
    ] {
        let (svc, mut handle) = mock::pair::<Req, ()>();
        let per_try = TimeoutLayer::new(Duration::from_secs(1)).with_policy(HttpDeadline::new());
        let svc = TimeoutLayer::new(Duration::from_secs(5))
            .with_policy(outer)
            .layer(per_try.layer(svc));
        let req = Request::builder()
            .header(REQUEST_TIMEOUT_MS, "300")
            .body(())
            .unwrap();
        let _call = tokio::spawn(svc.oneshot(req));
        let (sent, _send) = handle.next_request().await.unwrap();
        assert_eq!(sent.headers()[REQUEST_TIMEOUT_MS], expected, "{outer:?}");
        assert_eq!(HttpDeadline::of(&sent), Some(outer));
    }
}

/// A per-try timeout shorter than the total shortens the deadline the total set, in the same
/// extension: the next hop is told the per-try time less the outer margin, and the request
/// carries one extension, not one per layer (a retry clones and drops them all per request).
#[tokio::test(start_paused = true)]
async fn a_shorter_per_try_timeout_updates_the_deadline_in_place() {
    let outer = HttpDeadline::new()
        .margin(Duration::from_millis(20))
        .originate(true);
    let (svc, mut handle) = mock::pair::<Req, ()>();
    let per_try = TimeoutLayer::new(Duration::from_secs(1)).with_policy(HttpDeadline::new());
    let svc = TimeoutLayer::new(Duration::from_secs(5))
        .with_policy(outer)
        .layer(per_try.layer(svc));
    let start = Instant::now();
    let _call = tokio::spawn(svc.oneshot(Request::new(())));
    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[REQUEST_TIMEOUT_MS], "980");
    assert_eq!(Deadline::of(&sent), Some(start + Duration::from_secs(1)));
    assert_eq!(HttpDeadline::of(&sent), Some(outer));
    assert_eq!(sent.extensions().len(), 1);
}

/// `originate`: a plain request that came without a deadline header gets one, so a request
/// the service starts itself tells the next hop its deadline; `TimeoutConfig::layer` turns it
/// on with `propagate_deadline`.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_request_this_service_starts_tells_the_next_hop_its_deadline() {
    for (propagate, expected) in [(true, Some("1995")), (false, None)] {
        let mut config = resilience_timeout::TimeoutConfig::new(Duration::from_secs(2));
        config.propagate_deadline = propagate;
        let (svc, mut handle) = mock::pair::<Req, ()>();
        let svc = config.layer().unwrap().layer(svc);
        let _call = tokio::spawn(svc.oneshot(Request::new(())));
        let (sent, _send) = handle.next_request().await.unwrap();
        assert_eq!(
            sent.headers()
                .get(REQUEST_TIMEOUT_MS)
                .map(|v| v.to_str().unwrap()),
            expected
        );
    }
}

/// `propagate_deadline = false` turns off telling the next hop, not honouring the caller: an
/// incoming deadline still shortens ours, and the caller's header goes on as it came.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn without_propagation_an_incoming_deadline_still_shortens_ours() {
    let mut config = resilience_timeout::TimeoutConfig::new(Duration::from_secs(2));
    config.propagate_deadline = false;
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(config.layer().unwrap());
    assert_ready_ok!(svc.poll_ready());
    let req = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "300")
        .body(())
        .unwrap();
    let mut response = task::spawn(svc.call(req));

    let (sent, _send) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[REQUEST_TIMEOUT_MS], "300");
    times_out_after(&mut response, Duration::from_millis(300)).await;
}

/// `told_further_in`: a total timeout that leaves the header to the per-try timeout inside it
/// writes none itself (a caller's goes on as it came) yet sets the deadline; with the per-try
/// timeout inside, the request leaves with the one value it would have had if both wrote.
#[tokio::test(start_paused = true)]
async fn a_timeout_told_further_in_leaves_the_header_to_the_layer_inside() {
    let outer = HttpDeadline::new()
        .margin(Duration::from_millis(20))
        .originate(true)
        .told_further_in(true);
    for (caller, expected, left) in [(None, None, 5000), (Some("300"), Some("300"), 300)] {
        let (svc, mut handle) = mock::pair::<Req, ()>();
        let svc = TimeoutLayer::new(Duration::from_secs(5))
            .with_policy(outer)
            .layer(svc);
        let mut req = Request::new(());
        if let Some(caller) = caller {
            req.headers_mut().insert(REQUEST_TIMEOUT_MS, header(caller));
        }
        let start = Instant::now();
        let _call = tokio::spawn(svc.oneshot(req));
        let (sent, _send) = handle.next_request().await.unwrap();
        let value = sent.headers().get(REQUEST_TIMEOUT_MS);
        assert_eq!(value.map(|v| v.to_str().unwrap()), expected);
        assert_eq!(
            Deadline::of(&sent),
            Some(start + Duration::from_millis(left))
        );
        assert_eq!(HttpDeadline::of(&sent), Some(outer));
    }
    for outer in [outer, outer.told_further_in(false)] {
        let (svc, mut handle) = mock::pair::<Req, ()>();
        let per_try = TimeoutLayer::new(Duration::from_secs(1)).with_policy(HttpDeadline::new());
        let svc = TimeoutLayer::new(Duration::from_secs(5))
            .with_policy(outer)
            .layer(per_try.layer(svc));
        let _call = tokio::spawn(svc.oneshot(Request::new(())));
        let (sent, _send) = handle.next_request().await.unwrap();
        let values: Vec<_> = sent.headers().get_all(REQUEST_TIMEOUT_MS).iter().collect();
        assert_eq!(values, ["980"], "{outer:?}");
    }
}
