//! The ejection cap: at most its share of a set of breakers open at once; at the cap, the
//! breaker failing least stays closed.

use resilience_breaker::{
    BreakerHandle, CircuitBreakerLayer, EjectionCap, Policy, SlidingWindow, State,
};
use std::sync::Arc;
use std::time::Duration;
use tower::{BoxError, Layer, ServiceExt, service_fn, util::BoxCloneService};

/// Judged over the last 4 calls, at 50 % failures; open a minute, so nothing closes by itself.
fn layer(cap: &Arc<EjectionCap>) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        Policy::default()
            .failure_rate(0.5)
            .window(SlidingWindow::Count(4))
            .minimum_calls(4)
            .open_for(Duration::from_secs(60))
            .jitter(0.0),
    )
    .unwrap()
    .ejection_cap(cap.clone())
}

/// An endpoint behind a breaker under `cap`.
struct Endpoint {
    service: BoxCloneService<bool, (), BoxError>,
    breaker: BreakerHandle,
}

impl Endpoint {
    fn new(cap: &Arc<EjectionCap>) -> Self {
        let service = layer(cap).layer(service_fn(|ok: bool| async move {
            if ok {
                Ok(())
            } else {
                Err(BoxError::from("down"))
            }
        }));
        let breaker = service.handle().clone();
        Self {
            service: BoxCloneService::new(service),
            breaker,
        }
    }

    /// Sends calls that succeed or fail, in order; the breaker's state after them.
    async fn feed(&self, outcomes: &[bool]) -> State {
        for &ok in outcomes {
            let _ = self.service.clone().oneshot(ok).await;
        }
        self.breaker.state()
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_endpoint_failing_least_stays_in() {
    let cap = EjectionCap::new(50.0).unwrap();
    let [a, b, c, d] = [(); 4].map(|()| Endpoint::new(&cap));
    assert_eq!(cap.max_open(), 2);
    let half = [true, true, false, false];
    let all = [false, false, false, false];

    assert_eq!(
        c.feed(&half).await,
        State::Open,
        "50 % failing: room for it"
    );
    assert_eq!(
        a.feed(&all).await,
        State::Open,
        "100 % failing: room for it"
    );
    assert_eq!(
        d.feed(&half).await,
        State::Closed,
        "at the cap, and failing no more than the least-failing open one: stays in"
    );
    assert_eq!(
        b.feed(&all).await,
        State::Open,
        "failing more than c: takes its place"
    );
    assert_eq!(
        c.feed(&[]).await,
        State::Closed,
        "c is back in the balancer"
    );
    assert_eq!(a.feed(&[]).await, State::Open);
    // d was judged afresh: four more calls at 50 % and it would trip, but the cap is full of
    // endpoints that fail more.
    assert_eq!(d.feed(&half).await, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_breaker_may_always_open() {
    let cap = EjectionCap::new(10.0).unwrap();
    let [a, b] = [(); 2].map(|()| Endpoint::new(&cap));
    assert_eq!(cap.max_open(), 1, "10 % of 2, floored, but at least one");
    assert_eq!(a.feed(&[false; 4]).await, State::Open);
    assert_eq!(b.feed(&[false; 4]).await, State::Closed);
}

#[test]
fn the_share_is_a_percentage() {
    assert!(EjectionCap::new(101.0).is_err());
    assert!(EjectionCap::new(-1.0).is_err());
}
