//! The fixed limit with mocks: one limit over a service and its clones, excess refused at once,
//! and a refusal leaves nothing waiting for the next free place.

use resilience_limit::{FixedConcurrencyLayer, Overloaded};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

#[tokio::test]
async fn the_place_a_call_frees_goes_to_the_next_call_even_on_a_clone_that_shed() {
    let (service, mut upstream) = mock::pair::<u32, u32>();
    let mut first = FixedConcurrencyLayer::new(1).layer(service);
    let mut second = first.clone();
    upstream.allow(10);

    let mut held = task::spawn(first.ready().await.unwrap().call(1));
    assert_pending!(held.poll());
    let refused = second.ready().await.unwrap().call(2).await.unwrap_err();
    let overloaded = refused.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(overloaded.limit(), 1);

    let (request, respond) = upstream.next_request().await.unwrap();
    assert_eq!(request, 1, "the refused call never reached the service");
    respond.send_response(10);
    assert_eq!(assert_ready_ok!(held.poll()), 10);

    // The clone that shed kept nothing: the first clone is admitted at once.
    let mut next = task::spawn(first.ready().await.unwrap().call(3));
    assert_pending!(next.poll());
    let (request, respond) = upstream.next_request().await.unwrap();
    assert_eq!(request, 3);
    respond.send_response(30);
    assert_eq!(assert_ready_ok!(next.poll()), 30);
}

#[tokio::test]
async fn a_dropped_call_frees_its_place() {
    let (service, mut upstream) = mock::pair::<u32, u32>();
    let mut service = FixedConcurrencyLayer::new(1).layer(service);
    upstream.allow(10);

    let dropped = service.ready().await.unwrap().call(1);
    drop(dropped);
    let mut next = task::spawn(service.ready().await.unwrap().call(2));
    assert_pending!(next.poll());
    let (first, _) = upstream.next_request().await.unwrap();
    assert_eq!(first, 1);
    let (request, respond) = upstream.next_request().await.unwrap();
    assert_eq!(request, 2, "admitted: the dropped call's place was free");
    respond.send_response(20);
    assert_eq!(assert_ready_ok!(next.poll()), 20);
}
